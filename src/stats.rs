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

/// Most stats connections open at once; more are accepted and closed.
pub const MAX_CONNS: usize = 256;
/// How long after its accept a connection that has not sent a complete
/// HTTP request line gets the raw JSON.
pub const QUIET: Duration = Duration::from_millis(100);
/// Whatever its state, a connection is closed this long after its accept.
pub const CONN_DEADLINE: Duration = Duration::from_secs(5);
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

/// Counters of one server, values in [`SERVER_METRICS`] order (13 values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSnap {
    pub name: String,
    pub values: Vec<i64>,
}

/// One pool: values in [`POOL_METRICS`] order (6 values), servers in the
/// order given (the engine gives them in the C order, docs/compatibility.md §10.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnap {
    pub name: String,
    pub values: Vec<i64>,
    pub servers: Vec<ServerSnap>,
}

/// mbuf pool figures, to size `-m` (see the module docs for where they go).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MbufSnap {
    pub chunk_size: usize,
    /// Chunks holding memory now (in use plus free; chunks beyond the reuse
    /// pool's bound are given back, see `mbuf.rs`).
    pub allocated: usize,
    /// Chunks on the reuse list.
    pub free: usize,
}

/// Everything the stats documents show, as absolute values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub pools: Vec<PoolSnap>,
    pub total_connections: u64,
    pub curr_connections: u64,
    pub mbuf: MbufSnap,
    /// Configuration reloads that took effect, and those refused.
    pub reloads: u64,
    pub reload_failures: u64,
}

impl ServerSnap {
    /// A server with every metric at 0.
    pub fn zeroed(name: &str) -> ServerSnap {
        ServerSnap {
            name: name.to_string(),
            values: vec![0; SERVER_METRICS.len()],
        }
    }
}

impl PoolSnap {
    /// A pool and its servers with every metric at 0.
    pub fn zeroed(name: &str, servers: &[&str]) -> PoolSnap {
        PoolSnap {
            name: name.to_string(),
            values: vec![0; POOL_METRICS.len()],
            servers: servers.iter().map(|s| ServerSnap::zeroed(s)).collect(),
        }
    }
}

/// A missing value (a short `values` vector) reads as 0, so a caller's
/// mistake cannot break the document's layout.
fn value(values: &[i64], i: usize) -> i64 {
    values.get(i).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------
// JSON (docs/compatibility.md §10.3)

/// The C binary's writer: scalars are `"key":value, `, an object opens with
/// `"name": {` and its end turns the trailing `, ` into `},` (or `},` into
/// `}},` after a nested object); the final `,` becomes `}` and a newline.
struct JsonWriter {
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
fn push_json_escaped(out: &mut String, s: &str) {
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

fn mbuf_bytes(m: &MbufSnap) -> u64 {
    (m.allocated as u64).saturating_mul(m.chunk_size as u64)
}

// ---------------------------------------------------------------------------
// Prometheus text format 0.0.4

fn prom_type(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        // A timestamp can go back to 0 when a server returns: a gauge.
        MetricKind::Gauge | MetricKind::Timestamp => "gauge",
    }
}

/// The `# HELP` and `# TYPE` lines of one metric family.
fn prom_family(out: &mut String, name: &str, kind: &str, help: &str) {
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
fn push_label_value(out: &mut String, v: &str) {
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
fn prom_sample(out: &mut String, name: &str, labels: &[(&str, &str)], val: &str) {
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

fn prom_scalar(out: &mut String, name: &str, kind: &str, help: &str, val: u64) {
    prom_family(out, name, kind, help);
    prom_sample(out, name, &[], itoa::Buffer::new().format(val));
}

fn prom_metric_name(prefix: &str, m: &Metric) -> String {
    let mut name = String::with_capacity(prefix.len() + m.prom.len());
    name.push_str(prefix);
    name.push_str(m.prom);
    name
}

/// A sample value: the JSON's integer, except that a timestamp (usec since
/// the epoch in the JSON) is given in seconds, the format's base unit,
/// written exactly as a decimal fraction.
fn prom_value(kind: MetricKind, v: i64) -> String {
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

// ---------------------------------------------------------------------------
// Requests

/// What a stats connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The bare JSON document: the client sent nothing, or something that
    /// is not an HTTP request line (`stats\r\n`, a bare newline, binary).
    Raw,
    /// HTTP 200: the Prometheus text if `metrics`, else the JSON; no body
    /// for HEAD.
    Ok { metrics: bool, head: bool },
    /// HTTP 404 for a path other than `/`, `/stats` and `/metrics`.
    NotFound { head: bool },
    /// HTTP 405.
    BadMethod,
    /// HTTP 400: a valid request line whose headers never end within
    /// [`MAX_HEAD`].
    BadRequest,
}

/// Decides from the bytes received so far; `None` means wait for more.
/// `eof` says none will follow; `quiet_over` says the [`QUIET`] time since
/// the accept has passed. Only a complete `METHOD SP target SP HTTP/1.x`
/// line earns an HTTP answer: anything else gets the raw document, as the
/// C binary gives every client whatever it sends.
fn classify(buf: &[u8], eof: bool, quiet_over: bool) -> Option<Answer> {
    let full = buf.len() >= MAX_HEAD;
    let (line, rest) = match buf.iter().position(|&b| b == b'\n') {
        Some(nl) => (
            buf.get(..nl).unwrap_or_default(),
            buf.get(nl + 1..).unwrap_or_default(),
        ),
        // At EOF the bytes so far are all the line there will be.
        None if eof => (buf, &[][..]),
        None if buf.is_empty() => return quiet_over.then_some(Answer::Raw),
        // Wait only while the bytes can still become a request line, and
        // not past the quiet time: `printf stats | nc` may never send a
        // newline nor close.
        None => {
            let wait = !full && !quiet_over && request_line_prefix(buf);
            return (!wait).then_some(Answer::Raw);
        }
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some((method, target)) = parse_request_line(line) else {
        return Some(Answer::Raw);
    };
    if !eof && head_end(rest).is_none() {
        return full.then_some(Answer::BadRequest);
    }
    let head = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Some(Answer::BadMethod),
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    Some(match path {
        b"/" | b"/stats" => Answer::Ok {
            metrics: false,
            head,
        },
        b"/metrics" => Answer::Ok {
            metrics: true,
            head,
        },
        _ => Answer::NotFound { head },
    })
}

/// A method token byte (RFC 9110 `tchar`).
fn is_tchar(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b)
}

/// A request-target byte: visible ASCII.
fn is_target_byte(b: &u8) -> bool {
    (0x21..0x7f).contains(b)
}

/// `METHOD SP target SP HTTP/1.x` -> (method, target).
fn parse_request_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    if method.is_empty() || !method.iter().all(is_tchar) {
        return None;
    }
    if target.is_empty() || !target.iter().all(is_target_byte) {
        return None;
    }
    if version != b"HTTP/1.0" && version != b"HTTP/1.1" {
        return None;
    }
    Some((method, target))
}

/// True when `buf` (no newline in it) can still be completed into a
/// request line that [`parse_request_line`] accepts.
fn request_line_prefix(buf: &[u8]) -> bool {
    let buf = match buf.strip_suffix(b"\r") {
        // A CR may only follow a complete version.
        Some(rest) => return parse_request_line(rest).is_some(),
        None => buf,
    };
    let mut parts = buf.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let (target, version) = (parts.next(), parts.next());
    if parts.next().is_some() || !method.iter().all(is_tchar) {
        return false;
    }
    let Some(target) = target else {
        return true;
    };
    if method.is_empty() || !target.iter().all(is_target_byte) {
        return false;
    }
    let Some(version) = version else {
        return true;
    };
    !target.is_empty() && (b"HTTP/1.0".starts_with(version) || b"HTTP/1.1".starts_with(version))
}

/// Offset just past the blank line that ends the headers in `rest` (the
/// bytes after the request line), or `None` if it has not arrived.
fn head_end(rest: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(nl) = rest.get(start..)?.iter().position(|&b| b == b'\n') {
        let line = rest.get(start..start + nl)?;
        if line.is_empty() || line == b"\r" {
            return Some(start + nl + 1);
        }
        start += nl + 1;
    }
    None
}

fn http_response(
    status: &str,
    extra_headers: &str,
    content_type: &str,
    body: &[u8],
    head: bool,
) -> Vec<u8> {
    let top = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(top.len() + body.len());
    out.extend_from_slice(top.as_bytes());
    if !head {
        out.extend_from_slice(body);
    }
    out
}

// ---------------------------------------------------------------------------
// The server

/// What both threads share: the newest published snapshot and the stop flag.
struct Shared {
    latest: Mutex<Option<Snapshot>>,
    stop: AtomicBool,
}

impl Shared {
    /// A panic elsewhere while holding the lock leaves a valid `Option`
    /// behind, so poisoning is ignored.
    fn latest(&self) -> MutexGuard<'_, Option<Snapshot>> {
        self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The engine's handle on the stats thread. Dropping it stops the thread.
pub struct StatsServer {
    shared: Arc<Shared>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl StatsServer {
    /// Binds `addr`:`port` (SO_REUSEADDR only, see the module docs) and
    /// spawns the stats thread. `addr` is resolved with `ToSocketAddrs`
    /// (first result). On a bind failure the error reads
    /// `bind on m <fd> to stats server addr '<addr>:<port>' failed: <strerror>`.
    pub fn start(
        addr: &str,
        port: u16,
        interval_ms: u64,
        initial: Snapshot,
    ) -> Result<StatsServer, String> {
        let mut listener = stats_listen(addr, port)?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| format!("stats server addr '{addr}:{port}': {}", strerror(&e)))?;
        let poll = Poll::new()
            .map_err(|e| format!("stats: creating the event loop failed: {}", strerror(&e)))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("stats: registering the listener failed: {}", strerror(&e)))?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map_err(|e| format!("stats: creating the waker failed: {}", strerror(&e)))?;
        let shared = Arc::new(Shared {
            latest: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let worker = Worker {
            poll,
            listener,
            conns: Slab::with_capacity(MAX_CONNS),
            shared: Arc::clone(&shared),
            interval: Duration::from_millis(interval_ms.max(1)),
            retry_accept: false,
            view: View {
                current: initial,
                source: crate::daemon::hostname(),
                started: Instant::now(),
            },
        };
        let thread = std::thread::Builder::new()
            .name("nc-stats".to_string())
            .spawn(move || worker.run())
            .map_err(|e| format!("stats: spawning the stats thread failed: {}", strerror(&e)))?;
        Ok(StatsServer {
            shared,
            waker,
            thread: Some(thread),
            local_addr,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the published figures; no I/O, only a short lock. The
    /// previous snapshot is dropped after the lock is released.
    pub fn publish(&self, snap: Snapshot) {
        let old = self.shared.latest().replace(snap);
        drop(old);
    }

    /// Stops the thread, closing the listener and every stats connection.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            // The thread still sees the flag at its next timeout.
            crate::log_warn!("stats: waking the stats thread failed: {}", strerror(&e));
        }
        if thread.join().is_err() {
            crate::log_error!("stats: the stats thread panicked");
        }
    }
}

impl Drop for StatsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// socket, SO_REUSEADDR (not SO_REUSEPORT: the port is not shared with
/// another instance), bind, listen, with the C binary's messages.
fn stats_listen(addr: &str, port: u16) -> Result<TcpListener, String> {
    let sa = (addr, port)
        .to_socket_addrs()
        .map_err(|e| {
            format!(
                "resolve of stats server addr '{addr}:{port}' failed: {}",
                strerror(&e)
            )
        })?
        .next()
        .ok_or_else(|| {
            format!("resolve of stats server addr '{addr}:{port}' failed: no address")
        })?;
    crate::net::tcp_listen(sa, BACKLOG as u32, false).map_err(|e| match e.step {
        "bind" | "listen" => format!(
            "{} on m {} to stats server addr '{addr}:{port}' failed: {}",
            e.step,
            e.fd,
            e.text()
        ),
        step => format!("{step} on m {} failed: {}", e.fd, e.text()),
    })
}

/// The figures as the stats thread last saw them, and how to answer.
struct View {
    current: Snapshot,
    source: String,
    started: Instant,
}

impl View {
    fn json(&self) -> String {
        let uptime = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        render_json(
            &self.current,
            &self.source,
            env!("CARGO_PKG_VERSION"),
            uptime,
            now,
        )
    }

    fn respond(&self, answer: Answer) -> Vec<u8> {
        match answer {
            Answer::Raw => self.json().into_bytes(),
            Answer::Ok {
                metrics: false,
                head,
            } => http_response("200 OK", "", JSON_TYPE, self.json().as_bytes(), head),
            Answer::Ok {
                metrics: true,
                head,
            } => {
                let uptime = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
                let text = render_prometheus(
                    &self.current,
                    &self.source,
                    env!("CARGO_PKG_VERSION"),
                    uptime,
                );
                http_response("200 OK", "", PROMETHEUS_TYPE, text.as_bytes(), head)
            }
            Answer::NotFound { head } => {
                http_response("404 Not Found", "", "text/plain", b"not found\n", head)
            }
            Answer::BadMethod => http_response(
                "405 Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "text/plain",
                b"method not allowed\n",
                false,
            ),
            Answer::BadRequest => {
                http_response("400 Bad Request", "", "text/plain", b"bad request\n", false)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    Writing,
    Draining,
}

enum Next {
    Keep,
    Close,
}

struct Conn {
    sock: TcpStream,
    state: State,
    inbuf: Vec<u8>,
    eof: bool,
    out: Vec<u8>,
    sent: usize,
    /// When silence means "send the raw JSON".
    quiet_until: Instant,
    /// When the connection is closed whatever its state.
    deadline: Instant,
}

impl Conn {
    fn new(sock: TcpStream, now: Instant) -> Conn {
        Conn {
            sock,
            state: State::Reading,
            inbuf: Vec::new(),
            eof: false,
            out: Vec::new(),
            sent: 0,
            quiet_until: now + QUIET,
            deadline: now + CONN_DEADLINE,
        }
    }

    /// Waiting on the quiet timer: no line read yet, so silence may still
    /// turn into the raw JSON.
    fn undecided(&self) -> bool {
        self.state == State::Reading && !self.eof && !self.inbuf.contains(&b'\n')
    }

    /// Runs the state machine as far as the socket allows. Each arm either
    /// returns or moves to a later state, so the loop ends.
    fn advance(&mut self, now: Instant, view: &View) -> Next {
        loop {
            match self.state {
                State::Reading => {
                    if self.fill().is_err() {
                        return Next::Close;
                    }
                    let quiet_over = now >= self.quiet_until;
                    let Some(answer) = classify(&self.inbuf, self.eof, quiet_over) else {
                        return Next::Keep;
                    };
                    self.out = view.respond(answer);
                    self.state = State::Writing;
                }
                State::Writing => match self.flush() {
                    Ok(true) => {
                        // The peer sees EOF now, before the lingering close.
                        let _ = self.sock.shutdown(Shutdown::Write);
                        self.out = Vec::new();
                        self.inbuf = Vec::new();
                        self.deadline = self.deadline.min(now + LINGER);
                        self.state = State::Draining;
                    }
                    Ok(false) => return Next::Keep,
                    Err(_) => return Next::Close,
                },
                State::Draining => {
                    return match self.discard() {
                        Ok(false) => Next::Keep,
                        Ok(true) | Err(_) => Next::Close,
                    }
                }
            }
        }
    }

    /// Reads until WouldBlock, EOF, or [`MAX_HEAD`] bytes.
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 2048];
        while !self.eof && self.inbuf.len() < MAX_HEAD {
            let want = (MAX_HEAD - self.inbuf.len()).min(chunk.len());
            let Some(dst) = chunk.get_mut(..want) else {
                break;
            };
            match self.sock.read(dst) {
                Ok(0) => self.eof = true,
                Ok(n) => self
                    .inbuf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes until done (`true`) or WouldBlock (`false`).
    fn flush(&mut self) -> io::Result<bool> {
        while let Some(rest) = self.out.get(self.sent..).filter(|r| !r.is_empty()) {
            match self.sock.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads and drops input; `true` at EOF.
    fn discard(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 2048];
        for _ in 0..DRAIN_READS {
            match self.sock.read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

/// The stats thread: its own poll, the listener, the connections.
struct Worker {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    shared: Arc<Shared>,
    interval: Duration,
    /// The last accept failed (e.g. EMFILE) with connections maybe still
    /// queued; edge-triggered readiness will not repeat, so retry each turn.
    retry_accept: bool,
    view: View,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.next_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    crate::log_error!("stats: event loop failed: {}", strerror(&e));
                    return;
                }
            }
            if self.shared.stop.load(Ordering::Acquire) {
                return;
            }
            // After the poll, so a snapshot published before a client
            // connected is the one that client sees.
            if let Some(snap) = self.shared.latest().take() {
                self.view.current = snap;
            }
            let now = Instant::now();
            let mut accept = self.retry_accept;
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => accept = true,
                    WAKER => {}
                    Token(key) => self.drive(key, now),
                }
            }
            if accept {
                self.accept(now);
            }
            self.expire(now);
        }
    }

    fn next_timeout(&self, now: Instant) -> Duration {
        let mut next = now + self.interval;
        for (_, c) in self.conns.iter() {
            next = next.min(c.deadline);
            if c.undecided() {
                next = next.min(c.quiet_until);
            }
        }
        next.saturating_duration_since(now)
    }

    fn drive(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Next::Close = conn.advance(now, &self.view) {
            self.close(key);
        }
    }

    fn accept(&mut self, now: Instant) {
        self.retry_accept = false;
        loop {
            match self.listener.accept() {
                Ok((mut sock, _)) => {
                    if self.conns.len() >= MAX_CONNS {
                        continue;
                    }
                    let entry = self.conns.vacant_entry();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut sock, Token(entry.key()), interest)
                    {
                        crate::log_warn!(
                            "stats: registering a connection failed: {}",
                            strerror(&e)
                        );
                        continue;
                    }
                    entry.insert(Conn::new(sock, now));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    crate::log_warn!("stats: accept failed: {}", strerror(&e));
                    self.retry_accept = true;
                    return;
                }
            }
        }
    }

    /// Closes connections past their deadline and answers undecided ones
    /// whose quiet time is over.
    fn expire(&mut self, now: Instant) {
        let mut closing = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if now >= conn.deadline {
                closing.push(key);
            } else if conn.undecided() && now >= conn.quiet_until {
                if let Next::Close = conn.advance(now, &self.view) {
                    closing.push(key);
                }
            }
        }
        for key in closing {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.sock);
        }
    }
}

#[cfg(test)]
mod tests {
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
            + "\"forward_error\":5, \"fragments\":6, "
            + "\"migrating\":0, \"migrate_scanned\":0, \"migrate_moved\":0, \"migrate_errors\":0, "
            + &server_json("127.0.0.1:6379", 100)
            + ","
            + &server_json("127.0.0.1:6380", 200)
            + "},"
            + "\"beta\": {\"client_eof\":7, \"client_err\":8, \"client_connections\":9, \"server_ejects\":10, "
            + "\"forward_error\":11, \"fragments\":-12, "
            + "\"migrating\":0, \"migrate_scanned\":0, \"migrate_moved\":0, \"migrate_errors\":0, "
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
        assert_eq!(text.matches("# TYPE ").count(), 4 + 2 + 4 + 10 + 13);
        assert_eq!(text.matches("# HELP ").count(), 4 + 2 + 4 + 10 + 13);
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, 4 + 2 + 4 + 10 * 2 + 13 * 4);
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
        assert_eq!(families, 4 + 2 + 4 + 10 + 13);
        assert_eq!(text.matches(" counter\n").count(), 1 + 2 + 8 + 7);
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
