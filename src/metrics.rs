//! The one table of stats metrics (docs/compatibility.md §10.2): every pool metric, then every
//! server metric, each with its name, kind and description, in the order the
//! C binary prints them.
//!
//! Everything that names a metric is generated from these two tables: the
//! `-D` text ([`describe`]), the structs the engine counts in
//! ([`PoolStats`], [`ServerStats`], one field per metric), and the stats
//! JSON and Prometheus text, which index the tables by position. Changing the order here changes the JSON
//! layout, which dashboards parse, so the order is the C order and is pinned
//! by the tests below; our own metrics (Redis Sentinel, ejection repair)
//! come after the C ones, so a parser of the 0.5.0 layout still finds
//! every field where it was.

/// How a metric is aggregated and printed (docs/compatibility.md §10.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Accumulates; never goes down.
    Counter,
    /// Current value: the sum of +1/-1 deltas.
    Gauge,
    /// The latest non-zero value wins (usec since the epoch).
    Timestamp,
}

/// One metric: its JSON key, kind, and the description `-D` prints, and
/// its name and help text in the Prometheus rendering, which follow that
/// format's conventions instead of the C names: counters end in `_total`,
/// units are spelled out in base units (`_bytes`, `_seconds`), and the
/// help says what is counted rather than copying the `# ` ("number of")
/// shorthand of `-D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub desc: &'static str,
    /// The family name after `nutcracker_pool_` / `nutcracker_server_`.
    pub prom: &'static str,
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: MetricKind,
    desc: &'static str,
    prom: &'static str,
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        desc,
        prom,
        help,
    }
}

use MetricKind::{Counter, Gauge, Timestamp};

/// Declares a metric table and the struct the engine counts it in, from one
/// list: the struct's fields are the metrics, in table order, so a metric
/// cannot be named without being counted, or counted without a name. Each
/// line: field (the JSON name), kind, `-D` description, Prometheus family
/// name, Prometheus help.
macro_rules! metric_table {
    ($(#[$doc:meta])* $table:ident, $(#[$sdoc:meta])* $stats:ident {
        $($field:ident: $kind:ident, $desc:expr, $prom:expr, $help:expr;)*
    }) => {
        $(#[$doc])*
        pub static $table: &[Metric] = &[$(metric(stringify!($field), $kind, $desc, $prom, $help)),*];

        $(#[$sdoc])*
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct $stats {
            $(pub $field: i64,)*
        }

        impl $stats {
            /// Values in table order: the table decides the JSON order.
            pub fn values(&self) -> Vec<i64> {
                vec![$(self.$field),*]
            }
        }
    };
}

metric_table! {
    /// Per-pool metrics, in JSON and `-D` order.
    POOL_METRICS,
    /// A pool's counters, one field per entry of [`POOL_METRICS`].
    PoolStats {
        client_eof: Counter, "# eof on client connections", "client_eof_total", "client connections closed by the client (EOF)";
        client_err: Counter, "# errors on client connections", "client_err_total", "client connections closed on an error";
        client_connections: Gauge, "# active client connections", "client_connections", "client connections open now";
        server_ejects: Counter, "# times backend server was ejected", "server_ejects_total", "times a server of the pool was ejected";
        forward_error: Counter, "# times we encountered a forwarding error", "forward_error_total", "requests answered with an error reply made by the proxy";
        fragments: Counter, "# fragments created from a multi-vector request", "fragments_total", "sub-requests created by splitting multi-key requests";
        // Ours, after the 0.5.0 ones (dashboards index the C layout).
        sentinel_connected: Gauge, "1 when connected to a redis sentinel, else 0", "sentinel_connected", "1 while a sentinel of the pool is followed, else 0";
        master_switches: Counter, "# master address changes learnt from sentinels", "master_switches_total", "master address changes learnt from sentinels";
        repairing: Gauge, "# servers being repaired after an ejection", "repairing", "servers of the pool whose keys written during their ejection are being moved back now";
        repaired_keys: Counter, "# keys repaired after ejections", "repaired_keys_total", "keys moved back to (or deleted on) a server that returned from an ejection";
        migrating: Gauge, "1 while a migration of the pool (migrate_from) runs", "migrating", "1 while keys are being moved off the pool's previous servers (migrate_from), else 0";
        migrate_scanned: Counter, "# keys examined on previous owners", "migrate_scanned_total", "keys the migration examined on the pool's previous servers";
        migrate_moved: Counter, "# keys moved to their new owner", "migrate_moved_total", "keys the migration moved to their new owner";
        migrate_errors: Counter, "# failed key moves or scans", "migrate_errors_total", "key moves and scans of the migration that failed";
    }
}

metric_table! {
    /// Per-server metrics, in JSON and `-D` order. Their Prometheus names
    /// drop the C names' `server_` prefix, which `nutcracker_server_`
    /// already says.
    SERVER_METRICS,
    /// A server's counters, one field per entry of [`SERVER_METRICS`].
    ServerStats {
        server_eof: Counter, "# eof on server connections", "eof_total", "server connections closed by the server (EOF)";
        server_err: Counter, "# errors on server connections", "err_total", "server connections closed on an error";
        server_timedout: Counter, "# timeouts on server connections", "timedout_total", "server connections closed because a request timed out";
        server_connections: Gauge, "# active server connections", "connections", "server connections open now";
        server_ejected_at: Timestamp, "timestamp when server was ejected in usec since epoch", "ejected_at_seconds", "when the server was last ejected, in seconds since the epoch (0: never)";
        requests: Counter, "# requests", "requests_total", "requests sent to the server";
        request_bytes: Counter, "total request bytes", "request_bytes_total", "bytes of requests sent to the server";
        responses: Counter, "# responses", "responses_total", "replies received from the server";
        response_bytes: Counter, "total response bytes", "response_bytes_total", "bytes of replies received from the server";
        in_queue: Gauge, "# requests in incoming queue", "in_queue", "requests waiting to be written to the server";
        in_queue_bytes: Gauge, "current request bytes in incoming queue", "in_queue_bytes", "bytes of requests waiting to be written to the server";
        out_queue: Gauge, "# requests in outgoing queue", "out_queue", "requests written to the server and awaiting its reply";
        out_queue_bytes: Gauge, "current request bytes in outgoing queue", "out_queue_bytes", "bytes of requests written to the server and awaiting its reply";
    }
}

/// Position of a pool metric in [`POOL_METRICS`], for engine code that wants
/// a named index rather than a magic number.
pub fn pool_index(name: &str) -> Option<usize> {
    POOL_METRICS.iter().position(|m| m.name == name)
}

/// Position of a server metric in [`SERVER_METRICS`].
pub fn server_index(name: &str) -> Option<usize> {
    SERVER_METRICS.iter().position(|m| m.name == name)
}

/// The `-D` text after the version block (docs/compatibility.md §2.5): `pool stats:`, one line
/// per pool metric, a blank line, `server stats:`, one line per server
/// metric. Each line is two spaces, the name left-justified in 20 columns,
/// then the description in double quotes (C: `"  %-20s\"%s\""`).
pub fn describe() -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("pool stats:\n");
    for m in POOL_METRICS {
        push_line(&mut out, m);
    }
    out.push('\n');
    out.push_str("server stats:\n");
    for m in SERVER_METRICS {
        push_line(&mut out, m);
    }
    out
}

fn push_line(out: &mut String, m: &Metric) {
    out.push_str(&format!("  {:<20}\"{}\"\n", m.name, m.desc));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_counts_match_the_c_tables() {
        let pool: Vec<&str> = POOL_METRICS.iter().map(|m| m.name).collect();
        assert_eq!(
            pool,
            [
                "client_eof",
                "client_err",
                "client_connections",
                "server_ejects",
                "forward_error",
                "fragments",
                "sentinel_connected",
                "master_switches",
                "repairing",
                "repaired_keys",
                "migrating",
                "migrate_scanned",
                "migrate_moved",
                "migrate_errors"
            ]
        );
        let server: Vec<&str> = SERVER_METRICS.iter().map(|m| m.name).collect();
        assert_eq!(
            server,
            [
                "server_eof",
                "server_err",
                "server_timedout",
                "server_connections",
                "server_ejected_at",
                "requests",
                "request_bytes",
                "responses",
                "response_bytes",
                "in_queue",
                "in_queue_bytes",
                "out_queue",
                "out_queue_bytes"
            ]
        );
    }

    #[test]
    fn kinds() {
        let gauges: Vec<&str> = POOL_METRICS
            .iter()
            .chain(SERVER_METRICS)
            .filter(|m| m.kind == Gauge)
            .map(|m| m.name)
            .collect();
        assert_eq!(
            gauges,
            [
                "client_connections",
                "sentinel_connected",
                "repairing",
                "migrating",
                "server_connections",
                "in_queue",
                "in_queue_bytes",
                "out_queue",
                "out_queue_bytes"
            ]
        );
        assert_eq!(SERVER_METRICS[4].kind, Timestamp);
        assert_eq!(
            POOL_METRICS
                .iter()
                .chain(SERVER_METRICS)
                .filter(|m| m.kind == Timestamp)
                .count(),
            1
        );
    }

    #[test]
    fn describe_text_is_byte_exact() {
        let text = describe();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "pool stats:");
        assert_eq!(
            lines[1],
            "  client_eof          \"# eof on client connections\""
        );
        assert_eq!(
            lines[3],
            "  client_connections  \"# active client connections\""
        );
        assert_eq!(
            lines[7],
            "  sentinel_connected  \"1 when connected to a redis sentinel, else 0\""
        );
        let blank = 1 + POOL_METRICS.len();
        assert_eq!(lines[blank], "");
        assert_eq!(lines[blank + 1], "server stats:");
        assert_eq!(
            lines[blank + 6],
            "  server_ejected_at   \"timestamp when server was ejected in usec since epoch\""
        );
        assert_eq!(
            lines[blank + 14],
            "  out_queue_bytes     \"current request bytes in outgoing queue\""
        );
        // Ends with the last entry's newline, no trailing blank line.
        assert_eq!(lines.len(), POOL_METRICS.len() + SERVER_METRICS.len() + 4);
        assert_eq!(lines.last(), Some(&""));
    }

    #[test]
    fn structs_follow_the_tables() {
        let pool = PoolStats {
            fragments: 6,
            client_eof: 1,
            ..PoolStats::default()
        };
        assert_eq!(pool.values().len(), POOL_METRICS.len());
        assert_eq!(pool.values()[0], 1);
        assert_eq!(pool.values()[pool_index("fragments").unwrap_or(99)], 6);
        let server = ServerStats {
            out_queue_bytes: 13,
            ..ServerStats::default()
        };
        assert_eq!(server.values().len(), SERVER_METRICS.len());
        assert_eq!(server.values()[12], 13);
    }

    #[test]
    fn prometheus_names_follow_the_conventions() {
        for m in POOL_METRICS.iter().chain(SERVER_METRICS) {
            assert_eq!(
                m.kind == Counter,
                m.prom.ends_with("_total"),
                "counters and only counters end in _total: {}",
                m.prom
            );
            assert!(
                m.prom.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                m.prom
            );
            if m.name.contains("bytes") {
                assert!(m.prom.contains("_bytes"), "{}", m.prom);
            }
            assert!(!m.help.starts_with('#'), "{}: {:?}", m.name, m.help);
            assert!(!m.help.is_empty());
        }
        assert_eq!(SERVER_METRICS[4].prom, "ejected_at_seconds");
    }

    #[test]
    fn indices() {
        assert_eq!(pool_index("fragments"), Some(5));
        assert_eq!(server_index("requests"), Some(5));
        assert_eq!(server_index("nope"), None);
    }
}
