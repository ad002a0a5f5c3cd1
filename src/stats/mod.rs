//! The stats server (docs/compatibility.md §10): a TCP listener on `-a`:`-s` served by a thread
//! of its own, and the two renderings of the figures (the C binary's JSON
//! document and the Prometheus text format).
//!
//! Data enters through [`StatsServer::publish`]: the engine hands over a
//! [`Snapshot`] of absolute values (counters and gauges as they are now,
//! metric values in the order of [`POOL_METRICS`] / [`SERVER_METRICS`]) and
//! returns at once; the snapshot only replaces the previous one under a
//! mutex, and the stats thread picks the newest up whenever its loop wakes.
//! Data leaves on stats connections:
//!
//! ```text
//!   accept ──► Reading ──(no HTTP request line: 100 ms of silence, EOF, ──► raw JSON ─┐
//!                 │       other input such as `stats\r\n` or binary)                 │
//!                 └──(request line + headers)──► HTTP 200 / 404 / 405 / 400 ─────────┤
//!                                                                                    ▼
//!   close ◄── Draining (discard input until EOF, at most 1 s) ◄── shutdown(write) ◄ Writing
//! ```
//!
//! The C binary reads nothing and writes the JSON document to every client,
//! so `nc host 22222` and `echo stats | nc host 22222` both work; they keep
//! working here because only a complete `METHOD SP target SP HTTP/1.x` line
//! gets an HTTP answer, and anything else, sent or not, the raw document
//! and EOF. Over HTTP, `/` and `/stats` give the JSON as
//! `application/json`, `/metrics` the Prometheus text, other paths 404.
//! Every socket is non-blocking, at most [`MAX_CONNS`]
//! connections exist at once (more are accepted and closed at once), and
//! each one is closed after [`CONN_DEADLINE`] whatever its state, so a slow
//! or silent client cannot pin memory.
//!
//! Two deliberate differences from the C binary: the stats socket has no
//! SO_REUSEPORT (docs/compatibility.md §13: a second instance fails to bind instead of sharing
//! the port), and pool and server names are JSON-escaped (`"`, `\` and bytes
//! below 0x20), where the C binary writes them raw and can emit invalid JSON.
//!
//! The module splits along those seams: `snapshot.rs` (what the engine
//! hands over), `json.rs` and `prometheus.rs` (the two renderings),
//! `http.rs` (what a connection asked for), `server.rs` (the thread, its
//! loop and its connections). The tests below cover them together.
//!
//! mbuf figures: when [`MbufSnap::chunk_size`] is non-zero, four scalar keys
//! follow `curr_connections` in the JSON header: `mbuf_chunk_size`,
//! `mbuf_allocated`, `mbuf_free` (chunks) and `mbuf_bytes` (allocated x chunk
//! size). They are scalars, not an object, because tools that read the C
//! document treat every object-valued top-level key as a pool; a scalar is
//! skipped by them. With a zero chunk size the document has exactly the C
//! layout.

use crate::log::strerror;
use crate::metrics::{Metric, MetricKind, POOL_METRICS, SERVER_METRICS};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod http;
mod json;
mod prometheus;
mod server;
mod snapshot;

use http::*;
pub use json::render_json;
pub use prometheus::render_prometheus;
pub use server::StatsServer;
pub use snapshot::*;

/// Most stats connections open at once; more are accepted and closed.
pub const MAX_CONNS: usize = 256;
/// How long after its accept a connection that has not sent a complete
/// HTTP request line gets the raw JSON.
pub const QUIET: Duration = Duration::from_millis(100);
/// Whatever its state, a connection is closed this long after its accept.
pub const CONN_DEADLINE: Duration = Duration::from_secs(5);
/// A connection that has not finished its request head this long after
/// its accept is closed: an incomplete request may not hold one of the
/// [`MAX_CONNS`] slots for long. When every slot is taken, a new client
/// takes the slot of the oldest connection still reading its head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(1);
/// After the answer, input is discarded for at most this long, so the close
/// does not turn unread bytes into a reset that would cut the answer short.
const LINGER: Duration = Duration::from_secs(1);
/// Longest HTTP request head (request line and headers) read.
pub const MAX_HEAD: usize = 8192;
const BACKLOG: libc::c_int = 512;
/// Reads per readiness event while draining, so a client streaming input
/// cannot keep the thread in one loop.
const DRAIN_READS: usize = 64;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

const JSON_TYPE: &str = "application/json";
const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4";

#[cfg(test)]
mod tests {
    use super::json::*;
    use super::prometheus::*;
    use super::server::*;
    use super::*;

    fn server(name: &str, base: i64) -> ServerSnap {
        ServerSnap {
            name: name.to_string(),
            values: (0..13).map(|i| base + i).collect(),
        }
    }

    fn two_by_two() -> Snapshot {
        Snapshot {
            pools: vec![
                PoolSnap {
                    name: "alpha".to_string(),
                    values: vec![1, 2, 3, 4, 5, 6],
                    servers: vec![server("127.0.0.1:6379", 100), server("127.0.0.1:6380", 200)],
                },
                PoolSnap {
                    name: "beta".to_string(),
                    values: vec![7, 8, 9, 10, 11, -12],
                    servers: vec![server("cache1", 300), server("cache2", 400)],
                },
            ],
            total_connections: 17,
            curr_connections: 5,
            mbuf: MbufSnap::default(),
            ..Snapshot::default()
        }
    }

    /// Our pool scalars after the 0.5.0 six, at 0 (the test pools give
    /// six values: a short vector reads as zeros).
    fn extras_json() -> String {
        POOL_METRICS[6..]
            .iter()
            .map(|m| format!("\"{}\":0, ", m.name))
            .collect()
    }

    fn server_json(name: &str, b: i64) -> String {
        // Hand-written from docs/compatibility.md §10.3 / §10.2, not from the metric table.
        format!(
            "\"{name}\": {{\"server_eof\":{}, \"server_err\":{}, \"server_timedout\":{}, \
             \"server_connections\":{}, \"server_ejected_at\":{}, \"requests\":{}, \
             \"request_bytes\":{}, \"responses\":{}, \"response_bytes\":{}, \"in_queue\":{}, \
             \"in_queue_bytes\":{}, \"out_queue\":{}, \"out_queue_bytes\":{}}}",
            b,
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7,
            b + 8,
            b + 9,
            b + 10,
            b + 11,
            b + 12
        )
    }

    #[test]
    fn json_is_byte_exact() {
        let got = render_json(&two_by_two(), "host-1", "0.5.0", 42, 1700000000);
        let want = String::new()
            + "{\"service\":\"nutcracker\", \"source\":\"host-1\", \"version\":\"0.5.0\", \"uptime\":42, "
            + "\"timestamp\":1700000000, \"total_connections\":17, \"curr_connections\":5, "
            + "\"alpha\": {\"client_eof\":1, \"client_err\":2, \"client_connections\":3, \"server_ejects\":4, "
            + "\"forward_error\":5, \"fragments\":6, " + &extras_json()
            + &server_json("127.0.0.1:6379", 100)
            + ","
            + &server_json("127.0.0.1:6380", 200)
            + "},"
            + "\"beta\": {\"client_eof\":7, \"client_err\":8, \"client_connections\":9, \"server_ejects\":10, "
            + "\"forward_error\":11, \"fragments\":-12, " + &extras_json()
            + &server_json("cache1", 300)
            + ","
            + &server_json("cache2", 400)
            + "}}\n";
        assert_eq!(got, want);
        // The literal shape docs/compatibility.md §10.3 names.
        assert!(got.contains("\"out_queue_bytes\":112},\"127.0.0.1:6380\": {\"server_eof\":200, "));
        assert!(got.contains("\"out_queue_bytes\":212}},\"beta\": {\"client_eof\":7, "));
        assert!(got.ends_with("\"out_queue_bytes\":412}}}\n"));
    }

    #[test]
    fn json_mbuf_scalars_follow_curr_connections() {
        let mut snap = two_by_two();
        snap.mbuf = MbufSnap {
            chunk_size: 16384,
            allocated: 3,
            free: 1,
        };
        let got = render_json(&snap, "h", "v", 0, 0);
        assert!(got.contains(
            "\"curr_connections\":5, \"reloads\":0, \"reload_failures\":0, \"mbuf_chunk_size\":16384, \"mbuf_allocated\":3, \"mbuf_free\":1, \
             \"mbuf_bytes\":49152, \"alpha\": {\"client_eof\":1, "
        ));
    }

    #[test]
    fn json_edge_shapes() {
        // No pools: valid JSON rather than the C binary's `,}`.
        let empty = render_json(&Snapshot::default(), "h", "v", 1, 2);
        assert_eq!(
            empty,
            "{\"service\":\"nutcracker\", \"source\":\"h\", \"version\":\"v\", \"uptime\":1, \"timestamp\":2, \
             \"total_connections\":0, \"curr_connections\":0}\n"
        );
        // A pool without servers closes like the C code: `0},` then `}`.
        let snap = Snapshot {
            pools: vec![PoolSnap::zeroed("p", &[])],
            ..Snapshot::default()
        };
        assert!(render_json(&snap, "h", "v", 0, 0).ends_with("\"migrate_errors\":0}}\n"));
        // Short value vectors read as zeros instead of breaking the layout.
        let snap = Snapshot {
            pools: vec![PoolSnap {
                name: "p".into(),
                values: vec![9],
                servers: vec![ServerSnap {
                    name: "s".into(),
                    values: vec![],
                }],
            }],
            ..Snapshot::default()
        };
        let got = render_json(&snap, "h", "v", 0, 0);
        assert!(got.contains("\"p\": {\"client_eof\":9, \"client_err\":0, "));
        assert!(got.ends_with("\"out_queue_bytes\":0}}}\n"));
    }

    #[test]
    fn json_escapes_names() {
        let snap = Snapshot {
            pools: vec![PoolSnap::zeroed("a\"b\\c\x01", &["s\n"])],
            ..Snapshot::default()
        };
        let got = render_json(&snap, "h\"", "v", 0, 0);
        assert!(got.contains("\"source\":\"h\\\"\", "));
        assert!(got.contains("\"a\\\"b\\\\c\\u0001\": {\"client_eof\":0, "));
        assert!(got.contains("\"s\\u000a\": {\"server_eof\":0, "));
    }

    #[test]
    fn prometheus_rendering() {
        let mut snap = two_by_two();
        snap.pools[1].name = "we\"ird\\".to_string();
        snap.mbuf = MbufSnap {
            chunk_size: 512,
            allocated: 4,
            free: 2,
        };
        let text = render_prometheus(&snap, "host-1", "9.9.9", 42);
        let want_fragments = [
            "# HELP nutcracker_info service, host name and version; always 1\n\
             # TYPE nutcracker_info gauge\n\
             nutcracker_info{service=\"nutcracker\",source=\"host-1\",version=\"9.9.9\"} 1\n",
            "# TYPE nutcracker_uptime_seconds gauge\nnutcracker_uptime_seconds 42\n",
            "# TYPE nutcracker_connections_total counter\nnutcracker_connections_total 17\n",
            "# TYPE nutcracker_curr_connections gauge\nnutcracker_curr_connections 5\n",
            "nutcracker_mbuf_chunk_size_bytes 512\n",
            "nutcracker_mbuf_allocated 4\n",
            "nutcracker_mbuf_free 2\n",
            "nutcracker_mbuf_bytes 2048\n",
            "# HELP nutcracker_pool_client_eof_total client connections closed by the client (EOF)\n\
             # TYPE nutcracker_pool_client_eof_total counter\n\
             nutcracker_pool_client_eof_total{pool=\"alpha\"} 1\n\
             nutcracker_pool_client_eof_total{pool=\"we\\\"ird\\\\\"} 7\n",
            "# TYPE nutcracker_pool_client_connections gauge\n",
            "nutcracker_pool_fragments_total{pool=\"we\\\"ird\\\\\"} -12\n",
            "# HELP nutcracker_server_ejected_at_seconds when the server was last ejected, in seconds since the epoch (0: never)\n\
             # TYPE nutcracker_server_ejected_at_seconds gauge\n\
             nutcracker_server_ejected_at_seconds{pool=\"alpha\",server=\"127.0.0.1:6379\"} 0.000104\n\
             nutcracker_server_ejected_at_seconds{pool=\"alpha\",server=\"127.0.0.1:6380\"} 0.000204\n\
             nutcracker_server_ejected_at_seconds{pool=\"we\\\"ird\\\\\",server=\"cache1\"} 0.000304\n\
             nutcracker_server_ejected_at_seconds{pool=\"we\\\"ird\\\\\",server=\"cache2\"} 0.000404\n",
            "# TYPE nutcracker_server_requests_total counter\n",
            "nutcracker_server_out_queue_bytes{pool=\"we\\\"ird\\\\\",server=\"cache2\"} 412\n",
        ];
        for want in want_fragments {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // HELP and TYPE once per family; one sample per pool / server.
        let pools = POOL_METRICS.len();
        assert_eq!(text.matches("# TYPE ").count(), 4 + 2 + 4 + pools + 13);
        assert_eq!(text.matches("# HELP ").count(), 4 + 2 + 4 + pools + 13);
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, 4 + 2 + 4 + pools * 2 + 13 * 4);
        assert!(text.ends_with('\n'));
        // Without mbuf figures the mbuf families are left out.
        let plain = render_prometheus(&two_by_two(), "h", "v", 0);
        assert!(!plain.contains("nutcracker_mbuf_"));
    }

    #[test]
    fn prometheus_follows_the_exposition_conventions() {
        let mut snap = two_by_two();
        snap.mbuf = MbufSnap {
            chunk_size: 512,
            allocated: 4,
            free: 2,
        };
        let text = render_prometheus(&snap, "h", "v", 1);
        let mut families = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families += 1;
                let (name, kind) = rest.split_once(' ').expect("name and type");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (_, help) = rest.split_once(' ').expect("name and help");
                assert!(!help.is_empty() && !help.starts_with('#'), "{line}");
            } else {
                assert!(!line.starts_with('#'), "{line}");
            }
        }
        assert_eq!(families, 4 + 2 + 4 + POOL_METRICS.len() + 13);
        let pool_counters = POOL_METRICS
            .iter()
            .filter(|m| m.kind == MetricKind::Counter)
            .count();
        assert_eq!(
            text.matches(" counter\n").count(),
            1 + 2 + pool_counters + 7
        );
    }

    #[test]
    fn prometheus_timestamps_are_seconds() {
        assert_eq!(prom_value(MetricKind::Timestamp, 0), "0");
        assert_eq!(
            prom_value(MetricKind::Timestamp, 1_700_000_000_123_456),
            "1700000000.123456"
        );
        assert_eq!(prom_value(MetricKind::Timestamp, 5), "0.000005");
        assert_eq!(prom_value(MetricKind::Timestamp, -1_500_000), "-1.500000");
        assert_eq!(
            prom_value(MetricKind::Timestamp, i64::MIN),
            "-9223372036854.775808"
        );
        assert_eq!(prom_value(MetricKind::Counter, 1_500_000), "1500000");
    }

    #[test]
    fn classify_requests() {
        let ok = Some(Answer::Ok {
            metrics: false,
            head: false,
        });
        let metrics = Some(Answer::Ok {
            metrics: true,
            head: false,
        });
        let raw = Some(Answer::Raw);
        // Nothing yet: the quiet timer decides; EOF answers at once.
        assert_eq!(classify(b"", false, false), None);
        assert_eq!(classify(b"", false, true), raw);
        assert_eq!(classify(b"", true, false), raw);
        // A request line on its way: wait, but not past the quiet time.
        for part in [
            &b"G"[..],
            b"GET",
            b"GET ",
            b"GET /",
            b"GET / HT",
            b"GET / HTTP/1.1\r",
        ] {
            assert_eq!(
                classify(part, false, false),
                None,
                "{}",
                String::from_utf8_lossy(part)
            );
            assert_eq!(classify(part, false, true), raw);
        }
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: x\r\n", false, true),
            None
        );
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, false),
            ok
        );
        assert_eq!(classify(b"GET /stats HTTP/1.0\n\n", false, false), ok);
        assert_eq!(classify(b"GET /?x=1 HTTP/1.0\n\n", false, false), ok);
        // Half-closed after the request line, or even without its newline.
        assert_eq!(classify(b"GET / HTTP/1.0\r\n", true, false), ok);
        assert_eq!(classify(b"GET / HTTP/1.0", true, false), ok);
        assert_eq!(
            classify(b"GET /metrics HTTP/1.1\r\n\r\n", false, false),
            metrics
        );
        assert_eq!(
            classify(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", false, false),
            metrics
        );
        assert_eq!(
            classify(b"HEAD /metrics HTTP/1.1\r\n\r\n", false, false),
            Some(Answer::Ok {
                metrics: true,
                head: true
            })
        );
        assert_eq!(
            classify(b"GET /anything HTTP/1.1\r\n\r\n", false, false),
            Some(Answer::NotFound { head: false })
        );
        assert_eq!(
            classify(b"HEAD /metricsx HTTP/1.1\r\n\r\n", false, false),
            Some(Answer::NotFound { head: true })
        );
        assert_eq!(
            classify(b"POST / HTTP/1.1\r\n\r\n", false, false),
            Some(Answer::BadMethod)
        );
        assert_eq!(
            classify(b"DELETE /metrics HTTP/1.1\r\n\r\n", false, false),
            Some(Answer::BadMethod)
        );
        // Not HTTP: the raw document, as soon as that is certain.
        for junk in [
            &b"stats\r\n"[..],
            b"stats\n",
            b"\n",
            b"\r\n",
            b"hello there\r\n",
            b"\x16\x03\x01",
            b"\x00",
            b" GET / HTTP/1.1\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.2",
            b"GET / HTTP/1.1\rx",
        ] {
            assert_eq!(
                classify(junk, false, false),
                raw,
                "{}",
                String::from_utf8_lossy(junk)
            );
        }
        assert_eq!(classify(b"stats", true, false), raw);
        assert_eq!(classify(b"GET /", true, false), raw);
        // Bounded: a line that never ends is not HTTP; headers that never
        // end after a real request line are a 400.
        let mut long = b"GET /".to_vec();
        long.resize(MAX_HEAD, b'a');
        assert_eq!(classify(&long, false, false), raw);
        let mut long = b"GET / HTTP/1.1\r\n".to_vec();
        long.resize(MAX_HEAD, b'a');
        assert_eq!(classify(&long, false, false), Some(Answer::BadRequest));
    }

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(head_end(b"\r\n"), Some(2));
        assert_eq!(head_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(head_end(b"A: b\n\n"), Some(6));
        assert_eq!(head_end(b"A: b\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    // --- the thread ----------------------------------------------------------

    /// Connects, optionally sends `req`, reads to EOF (bounded by a read
    /// timeout, so a bug fails the test instead of hanging it).
    fn exchange(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
        let mut s = std::net::TcpStream::connect(addr).expect("connect to the stats server");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        if !req.is_empty() {
            s.write_all(req).expect("send request");
        }
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read to EOF");
        out
    }

    fn split_http(resp: &[u8]) -> (String, Vec<u8>) {
        let at = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        (
            String::from_utf8(resp[..at].to_vec()).expect("utf8 head"),
            resp[at + 4..].to_vec(),
        )
    }

    /// The JSON with its two clock-dependent fields cut out.
    fn without_clock(json: &str) -> (String, String) {
        let up = json.find("\"uptime\":").expect("uptime");
        let tail = json
            .find("\"total_connections\":")
            .expect("total_connections");
        (json[..up].to_string(), json[tail..].to_string())
    }

    fn check_json(body: &[u8], snap: &Snapshot) {
        let body = std::str::from_utf8(body).expect("utf8 body");
        let want = render_json(
            snap,
            &crate::daemon::hostname(),
            env!("CARGO_PKG_VERSION"),
            0,
            0,
        );
        assert_eq!(without_clock(body), without_clock(&want), "body: {body}");
        let at = body.find("\"timestamp\":").expect("timestamp") + "\"timestamp\":".len();
        let digits: String = body[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let stamp: u64 = digits.parse().expect("timestamp value");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(stamp.abs_diff(now) <= 5, "timestamp {stamp} vs now {now}");
    }

    #[test]
    fn server_thread_end_to_end() {
        let initial = Snapshot {
            pools: vec![PoolSnap::zeroed("alpha", &["s1", "s2"])],
            total_connections: 1,
            curr_connections: 1,
            mbuf: MbufSnap::default(),
            ..Snapshot::default()
        };
        let stats = StatsServer::start("127.0.0.1", 0, 50, initial.clone()).expect("start");
        let addr = stats.local_addr();
        assert_ne!(addr.port(), 0);

        // Before any publish: the initial figures.
        check_json(&exchange(addr, b""), &initial);

        let mut snap = two_by_two();
        snap.mbuf = MbufSnap {
            chunk_size: 16384,
            allocated: 2,
            free: 1,
        };
        stats.publish(snap.clone());

        // (1) nc-style: send nothing, get the raw document, then EOF.
        let raw = exchange(addr, b"");
        assert!(raw.starts_with(b"{\"service\":\"nutcracker\", \"source\":\""));
        assert!(raw.ends_with(b"}}}\n"));
        check_json(&raw, &snap);

        // (2) HTTP GET of `/`: the same JSON with exact framing.
        let resp = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, body) = split_http(&resp);
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 200 OK");
        assert!(lines.contains(&"Content-Type: application/json"), "{head}");
        assert!(lines.contains(&"Connection: close"), "{head}");
        assert!(
            lines.contains(&format!("Content-Length: {}", body.len()).as_str()),
            "{head}"
        );
        check_json(&body, &snap);

        // (3) /metrics: Prometheus text with the same figures.
        let resp = exchange(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
        );
        let (head, body) = split_http(&resp);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{head}"
        );
        let text = String::from_utf8(body).expect("utf8");
        assert!(
            text.contains("nutcracker_pool_client_eof_total{pool=\"alpha\"} 1\n"),
            "{text}"
        );
        assert!(text
            .contains("nutcracker_server_requests_total{pool=\"beta\",server=\"cache2\"} 405\n"));
        assert!(text.contains("nutcracker_mbuf_bytes 32768\n"));

        // 405 for other methods.
        let resp = exchange(addr, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        let (head, body) = split_http(&resp);
        assert!(
            head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nAllow: GET, HEAD\r\n"));
        assert_eq!(body, b"method not allowed\n");
        // Anything that is not an HTTP request line: the raw document.
        for junk in [
            &b"hello there\r\n"[..],
            b"stats\r\n",
            b"\n",
            b"\x16\x03\x01\x00",
        ] {
            check_json(&exchange(addr, junk), &snap);
        }
        // Unknown paths: 404, and HEAD of one without a body.
        let resp = exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n");
        let (head, body) = split_http(&resp);
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert_eq!(body, b"not found\n");
        let resp = exchange(addr, b"HEAD /nope HTTP/1.1\r\n\r\n");
        let (head, body) = split_http(&resp);
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(body.is_empty());
        // `/stats` is the JSON too.
        let (_, body) = split_http(&exchange(addr, b"GET /stats HTTP/1.0\r\n\r\n"));
        check_json(&body, &snap);

        // HEAD: headers only, Content-Length of the would-be body.
        let resp = exchange(addr, b"HEAD / HTTP/1.0\r\n\r\n");
        let (head, body) = split_http(&resp);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(body.is_empty());

        // (4) A second instance cannot share the port (docs/compatibility.md §13).
        let port = addr.port();
        let err = StatsServer::start("127.0.0.1", port, 50, Snapshot::default())
            .err()
            .expect("second bind must fail");
        assert!(err.starts_with("bind on m "), "{err}");
        assert!(
            err.ends_with(&format!(
                " to stats server addr '127.0.0.1:{port}' failed: Address already in use"
            )),
            "{err}"
        );

        // (5) stop() joins the thread and closes the listener.
        stats.stop();
        let refused = std::net::TcpStream::connect(addr);
        assert!(refused.is_err(), "listener still open after stop");
    }

    #[test]
    fn many_silent_clients_are_all_answered() {
        let stats = StatsServer::start("127.0.0.1", 0, 1000, two_by_two()).expect("start");
        let addr = stats.local_addr();
        let mut socks: Vec<std::net::TcpStream> = (0..20)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        for s in &mut socks {
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut out = Vec::new();
            s.read_to_end(&mut out).expect("read");
            assert!(out.ends_with(b"}}}\n"));
        }
        drop(stats);
    }

    #[test]
    fn resolve_and_bind_errors() {
        let err = StatsServer::start("10.255.255.1", 31912, 50, Snapshot::default())
            .err()
            .expect("non-local address");
        assert!(err.starts_with("bind on m "), "{err}");
        assert!(
            err.ends_with(" to stats server addr '10.255.255.1:31912' failed: Cannot assign requested address"),
            "{err}"
        );
        let err = StatsServer::start("no such host.invalid", 1, 50, Snapshot::default())
            .err()
            .expect("unresolvable");
        assert!(
            err.starts_with("resolve of stats server addr 'no such host.invalid:1' failed"),
            "{err}"
        );
    }
}
