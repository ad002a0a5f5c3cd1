//! The C binary's JSON document, byte for byte (docs/compatibility.md
//! §10.3), with our extra scalars only after the 0.5.0 fields at each level.

use super::*;

/// The C binary's writer: scalars are `"key":value, `, an object opens with
/// `"name": {` and its end turns the trailing `, ` into `},` (or `},` into
/// `}},` after a nested object); the final `,` becomes `}` and a newline.
pub(super) struct JsonWriter {
    out: String,
}

impl JsonWriter {
    fn key(&mut self, key: &str) {
        self.out.push('"');
        push_json_escaped(&mut self.out, key);
        self.out.push_str("\":");
    }

    fn string(&mut self, key: &str, val: &str) {
        self.key(key);
        self.out.push('"');
        push_json_escaped(&mut self.out, val);
        self.out.push_str("\", ");
    }

    fn num(&mut self, key: &str, val: i64) {
        self.key(key);
        self.out.push_str(itoa::Buffer::new().format(val));
        self.out.push_str(", ");
    }

    fn unsigned(&mut self, key: &str, val: u64) {
        self.key(key);
        self.out.push_str(itoa::Buffer::new().format(val));
        self.out.push_str(", ");
    }

    fn begin(&mut self, key: &str) {
        self.key(key);
        self.out.push_str(" {");
    }

    fn end(&mut self) {
        if self.out.ends_with(", ") {
            self.out.truncate(self.out.len() - 2);
        } else if self.out.ends_with("},") {
            self.out.pop();
        }
        self.out.push_str("},");
    }

    fn finish(mut self) -> String {
        // Without pools the header's `, ` is last; the C binary would leave
        // `,}` there, we close it as valid JSON.
        if self.out.ends_with(", ") {
            self.out.truncate(self.out.len() - 2);
        } else if self.out.ends_with(',') {
            self.out.pop();
        }
        self.out.push_str("}\n");
        self.out
    }
}

/// `"` and `\` escaped, bytes below 0x20 as `\u00XX`; the rest verbatim.
pub(super) fn push_json_escaped(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let b = c as u32 as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xf]));
            }
            c => out.push(c),
        }
    }
}

/// The stats JSON document, byte for byte as the C binary lays it out
/// (docs/compatibility.md §10.3), plus the mbuf scalars when `snap.mbuf.chunk_size` is set.
pub fn render_json(
    snap: &Snapshot,
    source: &str,
    version: &str,
    uptime_s: i64,
    timestamp_s: i64,
) -> String {
    let servers: usize = snap.pools.iter().map(|p| p.servers.len()).sum();
    let mut w = JsonWriter {
        out: String::with_capacity(256 + snap.pools.len() * 160 + servers * 320),
    };
    w.out.push('{');
    w.string("service", "nutcracker");
    w.string("source", source);
    w.string("version", version);
    w.num("uptime", uptime_s);
    w.num("timestamp", timestamp_s);
    w.unsigned("total_connections", snap.total_connections);
    w.unsigned("curr_connections", snap.curr_connections);
    let m = snap.mbuf;
    if m.chunk_size != 0 {
        w.unsigned("reloads", snap.reloads);
        w.unsigned("reload_failures", snap.reload_failures);
        w.unsigned("mbuf_chunk_size", m.chunk_size as u64);
        w.unsigned("mbuf_allocated", m.allocated as u64);
        w.unsigned("mbuf_free", m.free as u64);
        w.unsigned("mbuf_bytes", mbuf_bytes(&m));
    }
    for pool in &snap.pools {
        w.begin(&pool.name);
        for (i, metric) in POOL_METRICS.iter().enumerate() {
            w.num(metric.name, value(&pool.values, i));
        }
        for server in &pool.servers {
            w.begin(&server.name);
            for (i, metric) in SERVER_METRICS.iter().enumerate() {
                w.num(metric.name, value(&server.values, i));
            }
            w.end();
        }
        w.end();
    }
    w.finish()
}
