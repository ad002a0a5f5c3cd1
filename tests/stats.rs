//! The stats port end to end (docs/compatibility.md §13, §10, §11.1): the built `nutcracker`
//! run with `-i 100` in front of real `redis-server` / `memcached`
//! backends, its stats port read the three ways a user can read it (a raw
//! connection, HTTP `GET /`, HTTP `GET /metrics`).
//!
//! The JSON document is checked with a small strict parser of the C
//! binary's layout (docs/compatibility.md §10.3: `"key":value, ` scalars, `"name": {`
//! objects, `},` closes, `}\n` at the end), so a spacing slip fails every
//! test, and with a byte-exact comparison for a document before traffic.
//! Counters are checked against exact figures computed from the bytes the
//! test itself sent and received. Figures lag the traffic by up to a couple
//! of intervals (docs/compatibility.md §10.4), so every check polls the stats port until the
//! expected state shows up (bounded by the harness's `WAIT`) and then
//! asserts the whole state at once.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;

/// Pool metrics in docs/compatibility.md §10.2 order: the 0.5.0 ones, then
/// ours (Redis Sentinel, ejection repair, migration).
const POOL_METRICS: [&str; 14] = [
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
    "migrate_errors",
];

/// Server metrics in docs/compatibility.md §10.2 order.
const SERVER_METRICS: [&str; 13] = [
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
    "out_queue_bytes",
];

/// The Prometheus family of each pool metric, in [`POOL_METRICS`] order.
const POOL_PROM: [&str; 14] = [
    "nutcracker_pool_client_eof_total",
    "nutcracker_pool_client_err_total",
    "nutcracker_pool_client_connections",
    "nutcracker_pool_server_ejects_total",
    "nutcracker_pool_forward_error_total",
    "nutcracker_pool_fragments_total",
    "nutcracker_pool_sentinel_connected",
    "nutcracker_pool_master_switches_total",
    "nutcracker_pool_repairing",
    "nutcracker_pool_repaired_keys_total",
    "nutcracker_pool_migrating",
    "nutcracker_pool_migrate_scanned_total",
    "nutcracker_pool_migrate_moved_total",
    "nutcracker_pool_migrate_errors_total",
];

/// The Prometheus family of each server metric, in [`SERVER_METRICS`]
/// order; `ejected_at` is in seconds there, usec in the JSON.
const SERVER_PROM: [&str; 13] = [
    "nutcracker_server_eof_total",
    "nutcracker_server_err_total",
    "nutcracker_server_timedout_total",
    "nutcracker_server_connections",
    "nutcracker_server_ejected_at_seconds",
    "nutcracker_server_requests_total",
    "nutcracker_server_request_bytes_total",
    "nutcracker_server_responses_total",
    "nutcracker_server_response_bytes_total",
    "nutcracker_server_in_queue",
    "nutcracker_server_in_queue_bytes",
    "nutcracker_server_out_queue",
    "nutcracker_server_out_queue_bytes",
];

/// The header keys of docs/compatibility.md §10.3, then our mbuf scalars.
const HEADER: [&str; 7] = [
    "service",
    "source",
    "version",
    "uptime",
    "timestamp",
    "total_connections",
    "curr_connections",
];
const EXTRA_KEYS: [&str; 6] = [
    "reloads",
    "reload_failures",
    "mbuf_chunk_size",
    "mbuf_allocated",
    "mbuf_free",
    "mbuf_bytes",
];

// ---------------------------------------------------------------------------
// A strict parser of the C stats layout

#[derive(Clone, Debug, PartialEq, Eq)]
enum Val {
    Num(i64),
    Str(String),
    Obj(Vec<(String, Val)>),
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn fail<T>(&self, what: &str) -> Result<T, String> {
        let from = self.at.saturating_sub(40);
        let to = (self.at + 40).min(self.s.len());
        Err(format!(
            "{what} at byte {}: ...{}...",
            self.at,
            String::from_utf8_lossy(&self.s[from..to])
        ))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.at..].starts_with(lit.as_bytes()) {
            self.at += lit.len();
            Ok(())
        } else {
            self.fail(&format!("expected {lit:?}"))
        }
    }

    /// A quoted string without escapes (no test name needs one).
    fn string(&mut self) -> Result<String, String> {
        self.eat("\"")?;
        let start = self.at;
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    let s = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
                    self.at += 1;
                    return Ok(s);
                }
                b'\\' | b'\n' => return self.fail("unexpected escape or newline in a string"),
                _ => self.at += 1,
            }
        }
        self.fail("unterminated string")
    }

    fn number(&mut self) -> Result<i64, String> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        let text = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
        match text.parse() {
            Ok(n) => Ok(n),
            Err(_) => self.fail("expected a number"),
        }
    }

    /// `{` entries `}`: a scalar is `"k":v` and is followed by `, ` unless
    /// it is last; an object is `"k": {...}` and is followed by `,` unless
    /// it is last.
    fn object(&mut self) -> Result<Vec<(String, Val)>, String> {
        self.eat("{")?;
        let mut items = Vec::new();
        loop {
            let key = self.string()?;
            self.eat(":")?;
            let val = match self.peek() {
                Some(b' ') => {
                    self.eat(" ")?;
                    Val::Obj(self.object()?)
                }
                Some(b'"') => Val::Str(self.string()?),
                _ => Val::Num(self.number()?),
            };
            let nested = matches!(val, Val::Obj(_));
            items.push((key, val));
            if self.peek() == Some(b'}') {
                self.at += 1;
                return Ok(items);
            }
            self.eat(if nested { "," } else { ", " })?;
        }
    }
}

/// A parsed stats document.
#[derive(Clone, Debug)]
struct Doc {
    items: Vec<(String, Val)>,
    text: String,
}

impl Doc {
    fn parse(text: &str) -> Result<Doc, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            at: 0,
        };
        let items = p.object()?;
        p.eat("\n")?;
        if p.at != text.len() {
            return p.fail("bytes after the document");
        }
        Ok(Doc {
            items,
            text: text.to_string(),
        })
    }

    fn get(&self, key: &str) -> &Val {
        self.items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no top-level key {key:?} in {}", self.text))
    }

    fn num(&self, key: &str) -> i64 {
        match self.get(key) {
            Val::Num(n) => *n,
            v => panic!("{key} is not a number: {v:?}"),
        }
    }

    fn str(&self, key: &str) -> &str {
        match self.get(key) {
            Val::Str(s) => s,
            v => panic!("{key} is not a string: {v:?}"),
        }
    }

    /// Pools in document order with their entries.
    fn pools(&self) -> Vec<(&str, &[(String, Val)])> {
        self.items
            .iter()
            .filter_map(|(k, v)| match v {
                Val::Obj(o) => Some((k.as_str(), o.as_slice())),
                _ => None,
            })
            .collect()
    }

    fn pool(&self, name: &str) -> &[(String, Val)] {
        match self.get(name) {
            Val::Obj(o) => o,
            v => panic!("pool {name} is not an object: {v:?}"),
        }
    }

    /// Pool metric `m` of `pool`.
    fn pm(&self, pool: &str, m: &str) -> i64 {
        obj_num(self.pool(pool), m)
    }

    /// Server metric `m` of `server` in `pool`.
    fn sm(&self, pool: &str, server: &str, m: &str) -> i64 {
        let entries = self.pool(pool);
        match entries.iter().find(|(k, _)| k == server) {
            Some((_, Val::Obj(o))) => obj_num(o, m),
            _ => panic!("no server {server} in pool {pool}: {}", self.text),
        }
    }

    /// Chunks in use (allocated less free).
    fn mbuf_in_use(&self) -> i64 {
        self.num("mbuf_allocated") - self.num("mbuf_free")
    }

    /// The document without the two clock fields, for comparing two reads.
    fn without_clock(&self) -> Vec<(String, Val)> {
        self.items
            .iter()
            .filter(|(k, _)| k != "uptime" && k != "timestamp")
            .cloned()
            .collect()
    }
}

fn obj_num(entries: &[(String, Val)], m: &str) -> i64 {
    match entries.iter().find(|(k, _)| k == m) {
        Some((_, Val::Num(n))) => *n,
        other => panic!("metric {m}: {other:?} in {entries:?}"),
    }
}

/// Asserts the key order and value kinds of docs/compatibility.md §10.3 (plus the mbuf
/// scalars): `pools` lists each pool's name and its servers' names in the
/// order they must appear.
fn assert_layout(doc: &Doc, pools: &[(&str, &[&str])]) {
    let mut want: Vec<&str> = HEADER.to_vec();
    want.extend(EXTRA_KEYS);
    want.extend(pools.iter().map(|(p, _)| *p));
    let got: Vec<&str> = doc.items.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(got, want, "top-level keys of {}", doc.text);
    for (k, v) in &doc.items {
        let is_str = matches!(v, Val::Str(_));
        let is_obj = matches!(v, Val::Obj(_));
        assert_eq!(
            is_str,
            ["service", "source", "version"].contains(&k.as_str()),
            "{k}"
        );
        assert_eq!(is_obj, pools.iter().any(|(p, _)| p == k), "{k}");
    }
    let names: Vec<&str> = doc.pools().iter().map(|(n, _)| *n).collect();
    let want: Vec<&str> = pools.iter().map(|(p, _)| *p).collect();
    assert_eq!(names, want, "pools of {}", doc.text);
    for (pool, servers) in pools {
        let entries = doc.pool(pool);
        let mut want: Vec<&str> = POOL_METRICS.to_vec();
        want.extend(servers.iter());
        let got: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(got, want, "keys of pool {pool}");
        for (k, v) in entries {
            match v {
                Val::Num(_) => assert!(POOL_METRICS.contains(&k.as_str()), "{k}"),
                Val::Obj(o) => {
                    let got: Vec<&str> = o.iter().map(|(k, _)| k.as_str()).collect();
                    assert_eq!(got, SERVER_METRICS, "keys of server {k} in {pool}");
                    assert!(o.iter().all(|(_, v)| matches!(v, Val::Num(_))), "{k}");
                }
                Val::Str(_) => panic!("string {k} in pool {pool}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Reading the stats port

/// The JSON document, fetched by connecting and half-closing at once
/// (EOF with nothing sent gets the document without the 100 ms wait).
fn fetch(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect stats");
    s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    s.shutdown(Shutdown::Write).expect("shutdown");
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read stats");
    String::from_utf8(v).expect("stats are UTF-8")
}

fn doc(p: &Proxy) -> Doc {
    let text = fetch(p.stats_port());
    Doc::parse(&text).unwrap_or_else(|e| panic!("bad stats document: {e}\n{text}"))
}

/// Polls the stats port until `cond` holds and returns that document.
fn wait_doc(p: &Proxy, what: &str, mut cond: impl FnMut(&Doc) -> bool) -> Doc {
    let mut last = None;
    let ok = wait_until(WAIT, || {
        let d = doc(p);
        let hit = cond(&d);
        last = Some(d);
        hit
    });
    match last {
        Some(d) if ok => d,
        Some(d) => panic!("timed out waiting for {what}; last stats:\n{}", d.text),
        None => panic!("timed out waiting for {what}; no stats read"),
    }
}

/// One HTTP exchange: (status line, headers lower-cased, body).
fn http(port: u16, request: &str) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect stats");
    s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    s.write_all(request.as_bytes()).expect("write request");
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read response");
    let split = v
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {}", show(&v)));
    let head = String::from_utf8_lossy(&v[..split]).into_owned();
    let body = v[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The value of the one Prometheus sample written `series value`.
fn prom_value(text: &str, series: &str) -> i64 {
    let prefix = format!("{series} ");
    let hits: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("bad value in {series} {v}"))
        })
        .collect();
    assert_eq!(hits.len(), 1, "samples of {series} in:\n{text}");
    hits[0]
}

// ---------------------------------------------------------------------------
// Fixtures

/// A proxy over `pools` publishing every 100 ms.
fn start(pools: &[PoolConf], extra: &[&str]) -> Proxy {
    let mut args = vec!["-i", "100"];
    args.extend_from_slice(extra);
    Proxy::start_pools(pools, &args)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read hostname")
        .trim_end()
        .to_string()
}

/// A loopback port that refuses connections and that no other process can
/// take meanwhile: it is the local port of a connected client socket
/// (bound without SO_REUSEADDR), and nothing listens on it.
struct RefusingPort {
    port: u16,
    _listener: TcpListener,
    _conn: TcpStream,
}

impl RefusingPort {
    fn new() -> RefusingPort {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let conn = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let port = conn.local_addr().expect("local addr").port();
        RefusingPort {
            port,
            _listener: listener,
            _conn: conn,
        }
    }
}

/// Asserts every queue gauge of every server of `pool` is back to 0.
fn assert_queues_idle(d: &Doc, pool: &str, servers: &[&str]) {
    for s in servers {
        for m in ["in_queue", "in_queue_bytes", "out_queue", "out_queue_bytes"] {
            assert_eq!(d.sm(pool, s, m), 0, "{m} of {s}: {}", d.text);
        }
    }
}

/// The n-th test key. Keys differ in their first bytes: the default hash
/// (fnv1a_64, docs/compatibility.md §6.6) multiplies by a tiny prime, so keys that differ
/// only at the end (`key:1`, `key:2`, ...) hash close together and all
/// land on one server.
fn spread_key(n: u32) -> String {
    format!("{:08x}:stats", n.wrapping_mul(2_654_435_761))
}

/// Keys split by which of two backends they land on, found by
/// storing them through a throwaway proxy with the same server lines (so
/// the same placement); the backends are flushed afterwards.
fn keys_by_server(
    a: &Redis,
    b: &Redis,
    want_a: usize,
    want_b: usize,
) -> (Vec<String>, Vec<String>) {
    let probe = Proxy::redis(&[a, b], &[], &[]);
    let mut c = probe.raw();
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    for n in 0..200 {
        if on_a.len() >= want_a && on_b.len() >= want_b {
            break;
        }
        let key = spread_key(n);
        assert_eq!(c.call(&["SET", key.as_str(), "x"]), Resp::ok());
        match locate(&[a, b], key.as_bytes()).as_slice() {
            [0] => on_a.push(key),
            [1] => on_b.push(key),
            other => panic!("{key} found on {other:?}"),
        }
    }
    drop(c);
    drop(probe);
    for r in [a, b] {
        let _: () = redis::cmd("FLUSHALL")
            .query(&mut r.client())
            .expect("FLUSHALL");
    }
    on_a.truncate(want_a);
    on_b.truncate(want_b);
    assert!(
        on_a.len() == want_a && on_b.len() == want_b,
        "too few keys per server ({} / {}): {on_a:?} {on_b:?}",
        a.addr(),
        b.addr()
    );
    (on_a, on_b)
}

// ---------------------------------------------------------------------------
// Tests

/// Before any traffic the document is all zeros, the only connections are
/// the listeners, and the layout is byte-exact: pools and servers sorted by
/// name, length first (docs/compatibility.md §4.5), metrics in table order.
#[test]
fn layout_before_traffic_is_exact() {
    // Nothing listens on these servers: without traffic (and without
    // preconnect) they are never dialled.
    let pools = [
        PoolConf::new("zz", true)
            .server("127.0.0.1:100:1")
            .server("127.0.0.1:9:1")
            .server("127.0.0.1:10:1"),
        PoolConf::new("aaa", false)
            .server("127.0.0.1:6:1")
            .server("127.0.0.1:11211:1"),
        PoolConf::new("b", true)
            .server("127.0.0.1:7:1 bb")
            .server("127.0.0.1:8:1 a"),
    ];
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let p = start(&pools, &["-m", "1024"]);
    // The listeners show up within an interval (their being there at once
    // is `connections_are_counted_from_the_start`).
    let d = wait_doc(&p, "the listeners counted", |d| {
        d.num("total_connections") == 3
    });
    let expected_order: [(&str, &[&str]); 3] = [
        ("b", &["a", "bb"]),
        ("zz", &["127.0.0.1:9", "127.0.0.1:10", "127.0.0.1:100"]),
        // Port 11211 drops out of the name (docs/compatibility.md §4.4), so it sorts first.
        ("aaa", &["127.0.0.1", "127.0.0.1:6"]),
    ];
    assert_layout(&d, &expected_order);

    let uptime = d.num("uptime");
    assert!((0..=10).contains(&uptime), "uptime {uptime}");
    let ts = u64::try_from(d.num("timestamp")).expect("timestamp >= 0");
    assert!(
        ts + 1 >= before && ts <= before + 10,
        "timestamp {ts}, started at {before}"
    );

    // The whole document, written from the docs/compatibility.md §10.3 rules.
    let zeros = |names: &[&str]| -> String {
        names
            .iter()
            .map(|m| format!("\"{m}\":0"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pools_text: Vec<String> = expected_order
        .iter()
        .map(|(pool, servers)| {
            let servers: Vec<String> = servers
                .iter()
                .map(|s| format!("\"{s}\": {{{}}}", zeros(&SERVER_METRICS)))
                .collect();
            format!(
                "\"{pool}\": {{{}, {}}}",
                zeros(&POOL_METRICS),
                servers.join(",")
            )
        })
        .collect();
    let want = format!(
        "{{\"service\":\"nutcracker\", \"source\":\"{}\", \"version\":\"{}\", \"uptime\":{uptime}, \
         \"timestamp\":{ts}, \"total_connections\":3, \"curr_connections\":3, \
         \"reloads\":0, \"reload_failures\":0, \"mbuf_chunk_size\":1024, \"mbuf_allocated\":0, \"mbuf_free\":0, \"mbuf_bytes\":0, {}}}\n",
        hostname(),
        env!("CARGO_PKG_VERSION"),
        pools_text.join(",")
    );
    assert_eq!(d.text, want);
    assert!(d.text.ends_with("}}}\n"));
}

/// The listeners are in the figures as soon as the proxy listens, not
/// only after the first interval: with the default `-i 30000` a dashboard
/// would otherwise read 0 connections for the first 30 s (the C binary
/// reads these two figures live).
#[test]
fn connections_are_counted_from_the_start() {
    let pools = [
        PoolConf::new("one", true).server("127.0.0.1:9:1"),
        PoolConf::new("two", true).server("127.0.0.1:9:1"),
    ];
    let p = Proxy::start_pools(&pools, &["-i", "30000"]);
    let d = doc(&p);
    assert_eq!(d.num("total_connections"), 2, "{}", d.text);
    assert_eq!(d.num("curr_connections"), 2, "{}", d.text);
}

/// A connection that sends nothing gets the document after about 100 ms
/// of silence and then EOF, as `nc host port` expects.
#[test]
fn silent_connection_gets_json_then_eof() {
    let p = start(&[PoolConf::new("alpha", true).server("127.0.0.1:9:1")], &[]);
    let t0 = Instant::now();
    let text = p.stats();
    let took = t0.elapsed();
    let d = Doc::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_layout(&d, &[("alpha", &["127.0.0.1:9"])]);
    assert_eq!(d.str("service"), "nutcracker");
    assert_eq!(d.str("source"), hostname());
    assert_eq!(d.str("version"), env!("CARGO_PKG_VERSION"));
    assert!(
        took >= Duration::from_millis(80) && took < Duration::from_secs(3),
        "document and EOF after {took:?}"
    );
    // A document with one pool and servers ends with three braces.
    assert!(text.ends_with("\"out_queue_bytes\":0}}}\n"), "{text}");
}

/// Whatever a client sends that is not an HTTP request line, it gets the
/// raw document and EOF, as from the C binary, which reads nothing:
/// `echo stats | nc host 22222` works (docs/compatibility.md §10.1).
#[test]
fn non_http_input_gets_the_raw_document() {
    let p = start(&[PoolConf::new("alpha", true).server("127.0.0.1:9:1")], &[]);
    let cases: [(&str, &[u8], bool); 6] = [
        ("echo stats | nc", b"stats\n", false),
        ("stats with CRLF", b"stats\r\n", false),
        ("a bare newline", b"\n", false),
        ("binary junk", b"\x16\x03\x01\x02\x00\xff\xfe", false),
        // No newline and no half-close: answered after the quiet time.
        ("stats, connection left open", b"stats", true),
        ("a TLS hello, connection left open", b"\x16\x03\x01", true),
    ];
    for (what, bytes, keep_open) in cases {
        let mut s = TcpStream::connect(("127.0.0.1", p.stats_port())).expect("connect stats");
        s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
        s.write_all(bytes).expect("send");
        if !keep_open {
            s.shutdown(Shutdown::Write).expect("shutdown");
        }
        let mut v = Vec::new();
        s.read_to_end(&mut v)
            .unwrap_or_else(|e| panic!("{what}: reading to EOF: {e}"));
        let text = String::from_utf8(v).unwrap_or_else(|e| panic!("{what}: {e}"));
        let d = Doc::parse(&text).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"));
        assert_layout(&d, &[("alpha", &["127.0.0.1:9"])]);
    }
    // Over HTTP an unknown path is a 404; `/stats` is the JSON.
    let (status, _, body) = http(p.stats_port(), "GET /favicon.ico HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, b"not found\n");
    let (status, headers, body) = http(p.stats_port(), "GET /stats HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let body = String::from_utf8(body).expect("UTF-8 body");
    Doc::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
}

/// The rule of docs/compatibility.md for fields 0.5.0 did not have: they
/// are scalars, and at each level they come only after the 0.5.0 fields,
/// which keep their 0.5.0 order (top level: after `curr_connections`; in a
/// pool: after the pool counters, before the server objects; in a server:
/// after `out_queue_bytes`). Checked on the key order of a live dump with
/// traffic on two pools, without assuming which extras exist.
#[test]
fn extra_fields_only_follow_the_0_5_0_fields() {
    let r = Redis::start();
    let m = Memcached::start();
    let mut mc = PoolConf::memcache(&[&m]);
    mc.name = "beta".to_string();
    let p = start(&[PoolConf::redis(&[&r]), mc], &[]);
    let mut c = p.raw();
    assert_eq!(c.call(&["SET", "k", "v"]), Resp::ok());
    let d = wait_doc(&p, "the SET", |d| {
        d.sm("alpha", &r.addr(), "responses") == 1
    });

    /// Checks one level: `c_fields` first, in order, then scalars only, then
    /// (if `objects_allowed`) objects only. Returns the objects.
    fn level<'a>(
        what: &str,
        entries: &'a [(String, Val)],
        c_fields: &[&str],
        objects_allowed: bool,
    ) -> Vec<(&'a str, &'a [(String, Val)])> {
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            keys.len() >= c_fields.len() && keys[..c_fields.len()] == *c_fields,
            "{what}: the 0.5.0 fields do not come first, in order: {keys:?}"
        );
        let mut objects = Vec::new();
        for (k, v) in &entries[c_fields.len()..] {
            match v {
                Val::Obj(o) => {
                    assert!(objects_allowed, "{what}: object {k} where none belongs");
                    objects.push((k.as_str(), o.as_slice()));
                }
                _ => assert!(
                    objects.is_empty(),
                    "{what}: extra scalar {k} after an object: {keys:?}"
                ),
            }
        }
        objects
    }

    let pools = level("top level", &d.items, &HEADER, true);
    let names: Vec<&str> = pools.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["beta", "alpha"],
        "pools sorted by name, length first"
    );
    for (pool, entries) in pools {
        let servers = level(pool, entries, &POOL_METRICS, true);
        assert_eq!(servers.len(), 1, "{pool}");
        for (server, entries) in servers {
            level(&format!("{pool}/{server}"), entries, &SERVER_METRICS, false);
        }
    }
    // The extras this build has are where the rule puts them.
    let top: Vec<&str> = d.items.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        top[HEADER.len()..HEADER.len() + EXTRA_KEYS.len()],
        EXTRA_KEYS
    );
}

/// Known traffic on a two-server redis pool gives exact counters, gauges
/// follow the connections, and an MGET over both servers counts two
/// fragments.
#[test]
fn redis_traffic_counts_exactly() {
    let backends = Redis::start_many(2);
    let (a, b) = (&backends[0], &backends[1]);
    let (keys_a, keys_b) = keys_by_server(a, b, 10, 5);
    let (sa, sb) = (a.addr(), b.addr());
    let (sa, sb) = (sa.as_str(), sb.as_str());
    // Values on B are stored directly, so its GETs return known bulks.
    {
        let mut direct = b.client();
        for (i, k) in keys_b.iter().enumerate() {
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg(format!("value-{i}-{}", "v".repeat(i * 7)))
                .query(&mut direct)
                .expect("SET on B");
        }
    }
    let p = start(&[PoolConf::redis(&[a, b])], &[]);
    let servers = [sa, sb];

    let mut c1 = p.raw();
    let (mut req_a, mut resp_a, mut req_b, mut resp_b) = (0, 0, 0, 0);
    for (i, k) in keys_a.iter().enumerate() {
        let req = cmd(&["SET", k.as_str(), &format!("val-{i}")]);
        req_a += req.len();
        c1.send(&req);
        let (r, raw) = c1.recv_reply_raw();
        assert_eq!(r, Resp::ok());
        resp_a += raw.len();
    }
    for k in &keys_b {
        let req = cmd(&["GET", k.as_str()]);
        req_b += req.len();
        c1.send(&req);
        let (r, raw) = c1.recv_reply_raw();
        assert!(matches!(r, Resp::Bulk(Some(_))), "{r:?}");
        resp_b += raw.len();
    }

    let d = wait_doc(&p, "15 requests", |d| {
        d.sm("alpha", sa, "responses") == 10 && d.sm("alpha", sb, "responses") == 5
    });
    for (s, n, req, resp) in [(sa, 10, req_a, resp_a), (sb, 5, req_b, resp_b)] {
        assert_eq!(d.sm("alpha", s, "requests"), n, "{s}");
        assert_eq!(d.sm("alpha", s, "responses"), n, "{s}");
        assert_eq!(d.sm("alpha", s, "request_bytes"), req as i64, "{s}");
        assert_eq!(d.sm("alpha", s, "response_bytes"), resp as i64, "{s}");
        assert_eq!(d.sm("alpha", s, "server_connections"), 1, "{s}");
        for m in [
            "server_eof",
            "server_err",
            "server_timedout",
            "server_ejected_at",
        ] {
            assert_eq!(d.sm("alpha", s, m), 0, "{m} of {s}");
        }
    }
    assert_queues_idle(&d, "alpha", &servers);
    assert_eq!(d.pm("alpha", "client_connections"), 1);
    for m in [
        "client_eof",
        "client_err",
        "server_ejects",
        "forward_error",
        "fragments",
    ] {
        assert_eq!(d.pm("alpha", m), 0, "{m}");
    }
    // Listener, one client, two server connections.
    assert_eq!(d.num("curr_connections"), 4);
    assert_eq!(d.num("total_connections"), 4);

    // MGET over one key of each server: two fragments, one request each.
    let (ka, kb) = (keys_a[0].as_str(), keys_b[0].as_str());
    let r = c1.call(&["MGET", ka, kb]);
    let Resp::Array(Some(items)) = &r else {
        panic!("MGET reply {r:?}");
    };
    assert_eq!(
        items,
        &[Resp::bulk("val-0"), Resp::bulk("value-0-")],
        "{r:?}"
    );
    req_a += cmd(&["mget", ka]).len();
    req_b += cmd(&["mget", kb]).len();
    resp_a += Resp::array(vec![items[0].clone()]).encode().len();
    resp_b += Resp::array(vec![items[1].clone()]).encode().len();
    let d = wait_doc(&p, "MGET fragments", |d| {
        d.sm("alpha", sa, "responses") == 11 && d.sm("alpha", sb, "responses") == 6
    });
    assert_eq!(d.pm("alpha", "fragments"), 2, "{}", d.text);
    for (s, n, req, resp) in [(sa, 11, req_a, resp_a), (sb, 6, req_b, resp_b)] {
        assert_eq!(d.sm("alpha", s, "requests"), n, "{s}");
        assert_eq!(d.sm("alpha", s, "request_bytes"), req as i64, "{s}");
        assert_eq!(d.sm("alpha", s, "response_bytes"), resp as i64, "{s}");
    }
    assert_queues_idle(&d, "alpha", &servers);

    // Three clients open, then a fourth closed by the proxy for a
    // protocol error.
    let c2 = p.raw();
    let c3 = p.raw();
    let d = wait_doc(&p, "3 clients", |d| {
        d.pm("alpha", "client_connections") == 3
    });
    assert_eq!(d.num("curr_connections"), 6);
    assert_eq!(d.num("total_connections"), 6);
    let mut bad = p.raw();
    // Broken framing: an error reply, then the proxy closes (docs/compatibility.md §13).
    bad.send(b"*1\r\n!oops\r\n");
    assert!(bad.recv_reply().is_error());
    bad.expect_eof();
    let d = wait_doc(&p, "client_err", |d| d.pm("alpha", "client_err") == 1);
    assert_eq!(d.pm("alpha", "client_connections"), 3);
    assert_eq!(d.pm("alpha", "client_eof"), 0);

    drop((c1, c2, c3, bad));
    let d = wait_doc(&p, "clients closed", |d| {
        d.pm("alpha", "client_connections") == 0
    });
    assert_eq!(d.pm("alpha", "client_eof"), 3, "{}", d.text);
    assert_eq!(d.pm("alpha", "client_err"), 1, "{}", d.text);
    assert_eq!(d.num("curr_connections"), 3);
    assert_eq!(d.num("total_connections"), 7);
    for s in servers {
        assert_eq!(d.sm("alpha", s, "server_connections"), 1, "{s}");
    }
    assert_queues_idle(&d, "alpha", &servers);

    // QUIT is the client's end, not an error (0.5.0 counts it in
    // client_eof), whether the client reads the +OK or hangs up at once.
    let mut q = p.raw();
    q.send(&cmd(&["QUIT"]));
    assert_eq!(q.recv_reply(), Resp::ok());
    q.expect_eof();
    let mut q2 = p.raw();
    q2.send(&cmd(&["QUIT"]));
    drop(q2);
    let d = wait_doc(&p, "QUIT clients closed", |d| {
        d.pm("alpha", "client_eof") == 5 && d.pm("alpha", "client_connections") == 0
    });
    assert_eq!(d.pm("alpha", "client_err"), 1, "{}", d.text);
}

/// Proxy-made error replies count as forward errors; a server that cannot
/// be reached never counts a connection and leaves no queued request.
#[test]
fn forward_error_on_dead_server() {
    let dead = RefusingPort::new();
    let server = format!("127.0.0.1:{}", dead.port);
    let p = start(
        &[PoolConf::new("alpha", true).server(&format!("{server}:1"))],
        &[],
    );
    let mut c = p.raw();
    for k in ["a", "b", "c"] {
        assert_eq!(
            c.call(&["GET", k]),
            Resp::Error(b"ERR Connection refused".to_vec())
        );
    }
    let d = wait_doc(&p, "3 forward errors", |d| {
        d.pm("alpha", "forward_error") == 3
    });
    // Counted when queued, as 0.5.0 counts them: the refusal comes later.
    assert_eq!(d.sm("alpha", &server, "requests"), 3);
    assert_eq!(d.pm("alpha", "server_ejects"), 0);
    assert_eq!(d.sm("alpha", &server, "server_ejected_at"), 0);
    assert_eq!(d.sm("alpha", &server, "server_connections"), 0);
    assert_eq!(d.sm("alpha", &server, "responses"), 0);
    assert_queues_idle(&d, "alpha", &[&server]);
}

/// A client that leaves with requests in flight (0.5.0's counting): its
/// replies are dropped uncounted, since `responses` counts what goes on to
/// a client, and a client that closed its side first is an eof even when
/// the proxy finds out by failing to write to it.
#[test]
fn clients_that_leave_with_requests_in_flight() {
    let (a, b) = (Redis::start(), Redis::start());
    let p = start(&[PoolConf::redis(&[&a, &b])], &[]);
    let mut c = p.raw();
    // The varying part first: fnv1a_64 (the default) spreads a changed
    // first byte well, a changed last one hardly at all.
    let keys: Vec<String> = (0..64).map(|i| format!("{i}:gone")).collect();
    for k in &keys {
        assert_eq!(c.call(&["SET", k, "v"]), Resp::ok());
    }
    let on = |r: &Redis| {
        keys.iter()
            .find(|k| r.has(k.as_bytes()))
            .unwrap_or_else(|| panic!("no key of {keys:?} on {}", r.addr()))
            .clone()
    };
    let (ka, kb) = (on(&a), on(&b));
    let mut pipeline = cmd(&["GET", &ka]);
    pipeline.extend(cmd(&["GET", &kb]));
    let total =
        |d: &Doc, what: &str| d.sm("alpha", &a.addr(), what) + d.sm("alpha", &b.addr(), what);
    let signal = |r: &Redis, sig: i32| {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(r.pid() as i32, sig) };
    };
    signal(&a, libc::SIGSTOP);
    signal(&b, libc::SIGSTOP);

    // Reset at once (SO_LINGER 0): the proxy reads ECONNRESET, an error,
    // and the two replies, when they come, go to no one.
    let mut reset = p.raw();
    reset.set_linger_zero();
    reset.send(&pipeline);
    wait_doc(&p, "2 requests queued", |d| total(d, "requests") == 66);
    drop(reset);
    wait_doc(&p, "the reset client closed", |d| {
        d.pm("alpha", "client_err") == 1
    });

    // Closed first, politely: the proxy sees the end of its input and keeps
    // it for its replies; the first one written draws a reset from the
    // closed socket, so the proxy fails on the second.
    let mut fin = p.raw();
    fin.send(&pipeline);
    wait_doc(&p, "4 requests queued", |d| total(d, "requests") == 68);
    fin.shutdown_write();
    drop(fin);
    signal(&a, libc::SIGCONT);
    wait_doc(&p, "the first replies came", |d| {
        d.sm("alpha", &a.addr(), "out_queue") == 0
    });
    signal(&b, libc::SIGCONT);
    let d = wait_doc(&p, "the replies came and both clients left", |d| {
        total(d, "out_queue") == 0 && d.pm("alpha", "client_connections") == 1
    });
    assert_eq!(d.pm("alpha", "client_err"), 1, "{}", d.text);
    assert_eq!(d.pm("alpha", "client_eof"), 1, "{}", d.text);
    // The 64 SETs and the polite client's replies (its second one only if
    // the proxy had not yet seen the reset its first drew); never the
    // reset client's two.
    let responses = total(&d, "responses");
    assert!((65..=66).contains(&responses), "{}", d.text);
    assert_eq!(total(&d, "requests"), 68);
}

/// With auto_eject_hosts and a failure limit of 1, the first refused
/// request ejects the server: `server_ejects` + 1 and `server_ejected_at`
/// is the time of the ejection in microseconds since the epoch.
#[test]
fn ejection_is_counted_and_timestamped() {
    let live = Redis::start();
    let dead = RefusingPort::new();
    let dead_name = format!("127.0.0.1:{}", dead.port);
    let pool = PoolConf::redis(&[&live])
        .server(&format!("{dead_name}:1"))
        .opt("auto_eject_hosts", "true")
        .opt("server_failure_limit", "1")
        .opt("server_retry_timeout", "60000");
    let p = start(&[pool], &[]);
    let live_name = live.addr();
    let mut c = p.raw();
    let mut window = None;
    let mut on_live = 0;
    for n in 0..100 {
        let key = spread_key(n);
        let t0 = now_us();
        let r = c.call(&["GET", key.as_str()]);
        let t1 = now_us();
        if r.is_error() {
            assert_eq!(r, Resp::Error(b"ERR Connection refused".to_vec()));
            window = Some((t0, t1));
            break;
        }
        assert_eq!(r, Resp::nil());
        on_live += 1;
    }
    let (t0, t1) = window.expect("some key maps to the dead server");
    // Ejected: everything now goes to the live server.
    for n in 0..20 {
        assert_eq!(c.call(&["GET", &spread_key(1000 + n)]), Resp::nil());
    }
    on_live += 20;
    let d = wait_doc(&p, "an ejection and every reply", |d| {
        d.pm("alpha", "server_ejects") == 1 && d.sm("alpha", &live_name, "responses") == on_live
    });
    assert_eq!(d.pm("alpha", "forward_error"), 1, "{}", d.text);
    let at = d.sm("alpha", &dead_name, "server_ejected_at");
    assert!(
        at >= t0 - 1_000_000 && at <= t1 + 1_000_000,
        "server_ejected_at {at} not within the request [{t0}, {t1}] (usec)"
    );
    assert_eq!(d.sm("alpha", &live_name, "server_ejected_at"), 0);
    assert_eq!(d.sm("alpha", &live_name, "server_connections"), 1);
    assert_eq!(d.sm("alpha", &dead_name, "server_connections"), 0);
    assert_queues_idle(&d, "alpha", &[&live_name, &dead_name]);
}

/// A request that outlives `timeout:` counts `server_timedout` and a
/// forward error; the closed connection leaves the gauges at 0.
#[test]
fn timeout_counts_server_timedout() {
    // Accepts connections (kernel backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let name = format!("127.0.0.1:{port}");
    let pool = PoolConf::new("alpha", true)
        .server(&format!("{name}:1"))
        .opt("timeout", "1500");
    let p = start(&[pool], &[]);
    let mut c = p.raw();
    let req = cmd(&["GET", "k"]);
    c.send(&req);
    // While the request waits for its reply it sits in the out queue.
    let d = wait_doc(&p, "the request in flight", |d| {
        d.sm("alpha", &name, "out_queue") == 1
    });
    assert_eq!(d.sm("alpha", &name, "out_queue_bytes"), req.len() as i64);
    assert_eq!(d.sm("alpha", &name, "in_queue"), 0);
    assert_eq!(d.sm("alpha", &name, "server_connections"), 1);
    assert_eq!(d.sm("alpha", &name, "requests"), 1);
    assert_eq!(
        c.recv_reply(),
        Resp::Error(b"ERR Connection timed out".to_vec())
    );
    let d = wait_doc(&p, "a timeout", |d| {
        d.sm("alpha", &name, "server_timedout") == 1
    });
    assert_eq!(d.pm("alpha", "forward_error"), 1);
    assert_eq!(d.sm("alpha", &name, "requests"), 1);
    assert_eq!(d.sm("alpha", &name, "request_bytes"), req.len() as i64);
    assert_eq!(d.sm("alpha", &name, "responses"), 0);
    assert_eq!(d.sm("alpha", &name, "server_connections"), 0);
    assert_eq!(d.sm("alpha", &name, "server_eof"), 0);
    assert_queues_idle(&d, "alpha", &[&name]);
    drop(silent);
}

/// A backend that goes away closes its connection: `server_eof` + 1 and
/// the connection gauge back to 0.
#[test]
fn backend_exit_counts_server_eof() {
    let mut r = Redis::start();
    let name = r.addr();
    let p = start(&[PoolConf::redis(&[&r])], &[]);
    let mut c = p.raw();
    assert_eq!(c.call(&["SET", "k", "v"]), Resp::ok());
    wait_doc(&p, "a server connection", |d| {
        d.sm("alpha", &name, "server_connections") == 1
    });
    r.kill();
    let d = wait_doc(&p, "server_eof", |d| {
        d.sm("alpha", &name, "server_eof") == 1
    });
    assert_eq!(d.sm("alpha", &name, "server_connections"), 0, "{}", d.text);
    assert_eq!(d.sm("alpha", &name, "server_err"), 0, "{}", d.text);
    assert_queues_idle(&d, "alpha", &[&name]);
}

/// HTTP on the stats port: `GET /` gives the JSON document, `GET /metrics`
/// the Prometheus text with the same figures.
#[test]
fn http_json_and_prometheus() {
    let r = Redis::start();
    let name = r.addr();
    let p = start(&[PoolConf::redis(&[&r])], &[]);
    let mut c = p.raw();
    for i in 0..3 {
        assert_eq!(c.call(&["SET", &format!("k{i}"), "v"]), Resp::ok());
    }
    let raw = wait_doc(&p, "3 requests", |d| d.sm("alpha", &name, "responses") == 3);

    let (status, headers, body) = http(
        p.stats_port(),
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: stats-test\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(
        header(&headers, "content-length"),
        Some(body.len().to_string().as_str())
    );
    let body = String::from_utf8(body).expect("UTF-8 body");
    let over_http = Doc::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_layout(&over_http, &[("alpha", &[name.as_str()])]);
    // At rest the figures do not move: only the clock fields may differ.
    assert_eq!(over_http.without_clock(), raw.without_clock());

    match Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{}/", p.stats_port()))
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "curl: {out:?}");
            let text = String::from_utf8(out.stdout).expect("UTF-8");
            let d = Doc::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(d.without_clock(), raw.without_clock());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("curl not installed: skipping the curl check");
        }
        Err(e) => panic!("running curl: {e}"),
    }

    let (status, headers, body) = http(
        p.stats_port(),
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    let ctype = header(&headers, "content-type").unwrap_or_default();
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let text = String::from_utf8(body).expect("UTF-8 metrics");
    for (m, family) in SERVER_METRICS.iter().zip(SERVER_PROM) {
        let series = format!("{family}{{pool=\"alpha\",server=\"{name}\"}}");
        // No ejection here, so `ejected_at` is 0 in either unit.
        assert_eq!(
            prom_value(&text, &series),
            raw.sm("alpha", &name, m),
            "{series}"
        );
    }
    let requests =
        format!("nutcracker_server_requests_total{{pool=\"alpha\",server=\"{name}\"}} 3\n");
    assert!(text.contains(&requests), "no {requests:?} in:\n{text}");
    for (m, family) in POOL_METRICS.iter().zip(POOL_PROM) {
        let series = format!("{family}{{pool=\"alpha\"}}");
        assert_eq!(prom_value(&text, &series), raw.pm("alpha", m), "{series}");
    }
    assert_eq!(
        prom_value(&text, "nutcracker_curr_connections"),
        raw.num("curr_connections")
    );
    assert_eq!(
        prom_value(&text, "nutcracker_connections_total"),
        raw.num("total_connections")
    );
    assert_eq!(
        prom_value(&text, "nutcracker_mbuf_chunk_size_bytes"),
        raw.num("mbuf_chunk_size")
    );
}

/// The live `/metrics` text from a proxy that has served some traffic and
/// seen an ejection (so every family has a non-trivial sample).
fn live_metrics() -> (String, Proxy, Redis) {
    let r = Redis::start();
    let dead = RefusingPort::new();
    let p = start(
        &[PoolConf::redis(&[&r])
            .server(&format!("127.0.0.1:{}:1 dead", dead.port))
            .opt("auto_eject_hosts", "true")
            .opt("server_failure_limit", "1")
            .opt("server_retry_timeout", "60000")],
        &[],
    );
    let mut c = p.raw();
    // Until one lands on the dead server and ejects it.
    for n in 0..200 {
        if c.call(&["SET", &spread_key(n), "v"]).is_error() {
            break;
        }
    }
    wait_doc(&p, "the ejection", |d| d.pm("alpha", "server_ejects") >= 1);
    let (status, _, body) = http(p.stats_port(), "GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    drop(dead);
    (String::from_utf8(body).expect("UTF-8 metrics"), p, r)
}

/// The exposition conventions, checked without promtool: every counter's
/// name ends in `_total` (and only a counter's), units in base units, and
/// HELP texts are prose, not the `# ` shorthand of `-D`.
#[test]
fn metrics_follow_prometheus_conventions() {
    let (text, _p, _r) = live_metrics();
    let mut counters = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("name and type");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            counters += usize::from(kind == "counter");
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (_, help) = rest.split_once(' ').expect("name and help");
            assert!(!help.trim().is_empty(), "{line}");
            assert!(!help.starts_with('#'), "HELP copied from -D: {line}");
        }
    }
    // process (connections, reloads, reload failures), pool, server counters
    assert_eq!(counters, 1 + 2 + 10 + 7, "{text}");
    let stamp = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("nutcracker_server_ejected_at_seconds{pool=\"alpha\",server=\"dead\"} ")
        })
        .unwrap_or_else(|| panic!("no ejected_at sample for dead in:\n{text}"));
    let secs: f64 = stamp.parse().expect("seconds");
    let now = now_us() as f64 / 1e6;
    assert!((now - secs).abs() < 60.0, "ejected at {secs}, now {now}");
}

/// `promtool check metrics` (Debian package `prometheus`) finds nothing
/// to complain about in the live text; skipped where it is not installed.
#[test]
fn promtool_accepts_the_metrics() {
    let promtool = || {
        let mut cmd = Command::new("promtool");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    match promtool().arg("--version").output() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED promtool_accepts_the_metrics: promtool is not installed \
                 (Debian: apt-get install prometheus)"
            );
            return;
        }
        Err(e) => panic!("running promtool: {e}"),
    }
    let (text, _p, _r) = live_metrics();
    let mut child = promtool()
        .args(["check", "metrics"])
        .spawn()
        .expect("spawn promtool");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("promtool output");
    writer.join().expect("writer").expect("feed promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {report}");
    assert!(report.trim().is_empty(), "promtool warnings:\n{report}");
}

/// mbuf profiling: a 1 MiB value through `-m 16384` needs at least 64
/// chunks; `mbuf_bytes` is allocated x chunk size, and once the traffic is
/// over the chunks in use drop back to where they were (no leak).
#[test]
fn mbuf_figures_track_a_large_value() {
    let r = Redis::start();
    let name = r.addr();
    let p = start(&[PoolConf::redis(&[&r])], &["-m", "16384"]);
    let mut c = p.raw();
    assert_eq!(c.call(&["SET", "small", "v"]), Resp::ok());
    let base = wait_doc(&p, "the warm-up SET", |d| {
        d.sm("alpha", &name, "responses") == 1
    });
    assert_eq!(base.num("mbuf_chunk_size"), 16384);
    let baseline = base.mbuf_in_use();

    let value: Vec<u8> = (0..1 << 20).map(|i: u32| b'a' + (i % 26) as u8).collect();
    let set = cmd(&[b"SET".as_slice(), b"big", &value]);
    let mut w = c.writer();
    let writer = std::thread::spawn(move || w.write_all(&set));
    assert_eq!(c.recv_reply(), Resp::ok());
    writer.join().expect("writer thread").expect("write SET");
    assert_eq!(c.call(&["GET", "big"]), Resp::bulk(&value));

    let d = wait_doc(&p, "the large SET and GET", |d| {
        d.sm("alpha", &name, "responses") == 3 && d.mbuf_in_use() == baseline
    });
    let allocated = d.num("mbuf_allocated");
    assert!(
        allocated >= (1 << 20) / 16384,
        "only {allocated} chunks allocated for a 1 MiB value"
    );
    assert!(d.num("mbuf_free") <= allocated);
    assert_eq!(d.num("mbuf_bytes"), allocated * 16384);

    // Closing the client can only release chunks.
    drop(c);
    let d = wait_doc(&p, "the client closed", |d| {
        d.pm("alpha", "client_connections") == 0
    });
    assert!(d.mbuf_in_use() <= baseline, "{}", d.text);
    assert_eq!(
        d.num("mbuf_allocated"),
        allocated,
        "chunks are kept for reuse"
    );
    assert_eq!(d.num("mbuf_bytes"), allocated * 16384);
}

/// Our stats socket has no SO_REUSEPORT (docs/compatibility.md §13): a second instance on a
/// busy stats port fails to start, exits 1 and says why, and the first
/// keeps serving.
#[test]
fn second_instance_on_same_stats_port_fails() {
    let first = start(&[PoolConf::new("alpha", true).server("127.0.0.1:9:1")], &[]);
    let dir = TempDir::new("stats-second");
    let listen = free_port();
    let conf = dir.write(
        "second.yml",
        &PoolConf::new("beta", true)
            .server("127.0.0.1:9:1")
            .yaml(listen),
    );
    let log = dir.join("second.log");
    let stats_port = first.stats_port().to_string();
    let child = Command::new(nutcracker_bin())
        .arg("-c")
        .arg(&conf)
        .args(["-s", &stats_port, "-a", "127.0.0.1", "-i", "100", "-o"])
        .arg(&log)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn second nutcracker");
    let mut second = ChildGuard::new(child, false);
    let status = second.wait_exit(WAIT).expect("second instance exits");
    assert_eq!(status.code(), Some(1), "{status}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains(&format!(
            "to stats server addr '127.0.0.1:{stats_port}' failed: Address already in use"
        )),
        "log:\n{text}"
    );
    assert!(
        text.trim_end().ends_with("done, rabbit done"),
        "log:\n{text}"
    );
    // The stats socket is bound before the pool listeners: none was opened.
    assert!(!text.contains("listening on"), "log:\n{text}");
    let d = doc(&first);
    assert_layout(&d, &[("alpha", &["127.0.0.1:9"])]);
}

/// A memcached pool counts requests and bytes like a redis one.
#[test]
fn memcache_pool_counts_requests() {
    let m = Memcached::start();
    let name = m.addr();
    let p = start(&[PoolConf::memcache(&[&m])], &[]);
    let mut c = p.raw();
    let set = b"set greeting 0 0 5\r\nhello\r\n";
    c.send(set);
    c.expect(b"STORED\r\n");
    let get = b"get greeting\r\n";
    c.send(get);
    let value = b"VALUE greeting 0 5\r\nhello\r\nEND\r\n";
    c.expect(value);
    let miss = b"get nothing\r\n";
    c.send(miss);
    c.expect(b"END\r\n");

    let d = wait_doc(&p, "3 memcache requests", |d| {
        d.sm("alpha", &name, "responses") == 3
    });
    assert_layout(&d, &[("alpha", &[name.as_str()])]);
    assert_eq!(d.sm("alpha", &name, "requests"), 3);
    assert_eq!(
        d.sm("alpha", &name, "request_bytes"),
        (set.len() + get.len() + miss.len()) as i64
    );
    assert_eq!(
        d.sm("alpha", &name, "response_bytes"),
        (b"STORED\r\n".len() + value.len() + b"END\r\n".len()) as i64
    );
    assert_eq!(d.sm("alpha", &name, "server_connections"), 1);
    assert_eq!(d.pm("alpha", "client_connections"), 1);
    assert_eq!(d.pm("alpha", "forward_error"), 0);
    assert_queues_idle(&d, "alpha", &[&name]);
    drop(c);
    let d = wait_doc(&p, "the client closed", |d| {
        d.pm("alpha", "client_connections") == 0
    });
    assert_eq!(d.pm("alpha", "client_eof"), 1);
    // `quit` ends the connection as the client's end, as in 0.5.0.
    let mut q = p.raw();
    q.send(b"quit\r\n");
    q.expect_eof();
    let d = wait_doc(&p, "the quit client closed", |d| {
        d.pm("alpha", "client_eof") == 2 && d.pm("alpha", "client_connections") == 0
    });
    assert_eq!(d.pm("alpha", "client_err"), 0, "{}", d.text);
}
