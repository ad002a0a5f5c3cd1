//! The Prometheus text format 0.0.4 of the same figures, named by the
//! exposition conventions (counters `_total`, units in base units).

use super::*;

pub(super) fn prom_type(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        // A timestamp can go back to 0 when a server returns: a gauge.
        MetricKind::Gauge | MetricKind::Timestamp => "gauge",
    }
}

/// The `# HELP` and `# TYPE` lines of one metric family.
pub(super) fn prom_family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// A label value: `\`, `"` and newline escaped, as the format requires.
pub(super) fn push_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One sample line; `labels` are (name, value) pairs.
pub(super) fn prom_sample(out: &mut String, name: &str, labels: &[(&str, &str)], val: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            push_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(val);
    out.push('\n');
}

pub(super) fn prom_scalar(out: &mut String, name: &str, kind: &str, help: &str, val: u64) {
    prom_family(out, name, kind, help);
    prom_sample(out, name, &[], itoa::Buffer::new().format(val));
}

pub(super) fn prom_metric_name(prefix: &str, m: &Metric) -> String {
    let mut name = String::with_capacity(prefix.len() + m.prom.len());
    name.push_str(prefix);
    name.push_str(m.prom);
    name
}

/// A sample value: the JSON's integer, except that a timestamp (usec since
/// the epoch in the JSON) is given in seconds, the format's base unit,
/// written exactly as a decimal fraction.
pub(super) fn prom_value(kind: MetricKind, v: i64) -> String {
    if kind != MetricKind::Timestamp || v == 0 {
        return itoa::Buffer::new().format(v).to_string();
    }
    let sign = if v < 0 { "-" } else { "" };
    let us = v.unsigned_abs();
    format!("{sign}{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// The same figures as [`render_json`] in the Prometheus text format:
/// `nutcracker_pool_<prom>{pool=".."}`, `nutcracker_server_<prom>{pool="..",server=".."}`
/// (names from [`Metric::prom`]), the process-wide figures, and
/// `nutcracker_info{service,source,version} 1`. Scrapers stamp the time
/// themselves, so there is no timestamp sample.
pub fn render_prometheus(snap: &Snapshot, source: &str, version: &str, uptime_s: i64) -> String {
    let servers: usize = snap.pools.iter().map(|p| p.servers.len()).sum();
    let mut out = String::with_capacity(2048 + snap.pools.len() * 400 + servers * 1000);
    prom_family(
        &mut out,
        "nutcracker_info",
        "gauge",
        "service, host name and version; always 1",
    );
    prom_sample(
        &mut out,
        "nutcracker_info",
        &[
            ("service", "nutcracker"),
            ("source", source),
            ("version", version),
        ],
        "1",
    );
    prom_family(
        &mut out,
        "nutcracker_uptime_seconds",
        "gauge",
        "seconds since the stats server started",
    );
    prom_sample(
        &mut out,
        "nutcracker_uptime_seconds",
        &[],
        itoa::Buffer::new().format(uptime_s),
    );
    prom_scalar(
        &mut out,
        "nutcracker_connections_total",
        "counter",
        "connections ever created (listeners, clients and servers)",
        snap.total_connections,
    );
    prom_scalar(
        &mut out,
        "nutcracker_curr_connections",
        "gauge",
        "connections open now (listeners, clients and servers)",
        snap.curr_connections,
    );
    prom_scalar(
        &mut out,
        "nutcracker_reloads_total",
        "counter",
        "configuration reloads (SIGUSR1) that took effect",
        snap.reloads,
    );
    prom_scalar(
        &mut out,
        "nutcracker_reload_failures_total",
        "counter",
        "configuration reloads refused (the old configuration kept serving)",
        snap.reload_failures,
    );
    let m = snap.mbuf;
    if m.chunk_size != 0 {
        prom_scalar(
            &mut out,
            "nutcracker_mbuf_chunk_size_bytes",
            "gauge",
            "bytes in one mbuf chunk (-m)",
            m.chunk_size as u64,
        );
        prom_scalar(
            &mut out,
            "nutcracker_mbuf_allocated",
            "gauge",
            "mbuf chunks allocated (in use and free)",
            m.allocated as u64,
        );
        prom_scalar(
            &mut out,
            "nutcracker_mbuf_free",
            "gauge",
            "mbuf chunks free for reuse",
            m.free as u64,
        );
        prom_scalar(
            &mut out,
            "nutcracker_mbuf_bytes",
            "gauge",
            "bytes held in allocated mbuf chunks",
            mbuf_bytes(&m),
        );
    }
    for (i, metric) in POOL_METRICS.iter().enumerate() {
        let name = prom_metric_name("nutcracker_pool_", metric);
        prom_family(&mut out, &name, prom_type(metric.kind), metric.help);
        for pool in &snap.pools {
            let v = prom_value(metric.kind, value(&pool.values, i));
            prom_sample(&mut out, &name, &[("pool", &pool.name)], &v);
        }
    }
    for (i, metric) in SERVER_METRICS.iter().enumerate() {
        let name = prom_metric_name("nutcracker_server_", metric);
        prom_family(&mut out, &name, prom_type(metric.kind), metric.help);
        for pool in &snap.pools {
            for server in &pool.servers {
                let v = prom_value(metric.kind, value(&server.values, i));
                prom_sample(
                    &mut out,
                    &name,
                    &[("pool", &pool.name), ("server", &server.name)],
                    &v,
                );
            }
        }
    }
    out
}
