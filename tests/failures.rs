//! Fault injection end to end: the built `nutcracker` in front of backends
//! that refuse, die, hang, cut replies short, talk nonsense or cannot be
//! resolved (docs/compatibility.md §13, §5.6, §7.6, §9, §10 and §12).
//!
//! Each test starts its own backends and proxy on loopback (see `support`),
//! breaks one backend on purpose (a port nobody listens on, SIGKILL,
//! SIGSTOP, or a fake backend thread in this file speaking just enough RESP
//! to misbehave), and checks three things: the client gets the error reply
//! docs/compatibility.md §9.1 names (never a hang), the proxy keeps serving everything else,
//! and once things settle nothing leaked (open fds of the proxy, mbuf chunks
//! in use, current connections all back to the baseline measured before).
//!
//! Placement of keys is never computed here: keys are sorted into "served"
//! and "failed" by asking a probe proxy with the same server lines (same
//! names, same hash, so the same table), or by looking on the backends.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::*;

/// How long leak checks poll for the proxy to return to its baseline.
const SETTLE: Duration = Duration::from_secs(3);
/// Stats aggregation interval passed to every proxy here (`-i 100`).
const STATS_ARGS: [&str; 2] = ["-i", "100"];

// ---------------------------------------------------------------------------
// Processes

/// Sends `sig` to process `pid` (a backend this test spawned).
fn signal_pid(pid: u32, sig: i32) {
    let pid = i32::try_from(pid).expect("pid fits in pid_t");
    // SAFETY: kill(2) on a child of this process that is not yet reaped
    // (its guard still owns it).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// A redis-server on a port chosen by the test (to bring a dead or killed
/// backend back at the same address), killed on drop.
struct PortRedis {
    _child: ChildGuard,
    _dir: TempDir,
}

fn redis_on_port(port: u16) -> PortRedis {
    let dir = TempDir::new("fail-redis");
    let log = dir.join("redis.log");
    let port_s = port.to_string();
    let dir_s = dir.path().to_string_lossy().into_owned();
    let log_s = log.to_string_lossy().into_owned();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir_s,
            "--logfile",
            &log_s,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let mut child = ChildGuard::new(child, false);
    let pid = child.pid();
    let up = wait_until(WAIT, || {
        child.exited().is_some() || pid_listens_on(pid, port)
    });
    assert!(
        up && child.exited().is_none(),
        "redis-server on :{port} did not start; log:\n{}",
        tail(&log, 20)
    );
    PortRedis {
        _child: child,
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------
// Fake backends

/// How a [`FakeBackend`] misbehaves.
#[derive(Clone, Copy, Debug)]
enum Fake {
    /// Reads a request, answers `$10\r\nabc` (7 of 16 bytes) and closes.
    CutReply,
    /// Accepts and closes at once.
    AcceptClose,
    /// Reads a request and closes (FIN) without answering.
    ReadClose,
    /// Answers each request with `hello\r\n` (not RESP).
    Garbage,
    /// Answers each request with `-LOADING Redis is loading\r\n`.
    Loading,
}

/// A loopback listener served by a thread of this test; stopped and joined
/// on drop. Each connection lives at most 20 s, the listener 60 s, so a
/// forgotten one cannot outlive the test run by much.
struct FakeBackend {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeBackend {
    fn start(mode: Fake) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake backend");
        let port = listener.local_addr().expect("fake backend addr").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || fake_accept_loop(&listener, mode, &flag));
        FakeBackend {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn server_line(&self) -> String {
        format!("127.0.0.1:{}:1", self.port)
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fake_accept_loop(listener: &TcpListener, mode: Fake, stop: &Arc<AtomicBool>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conns = Vec::new();
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match listener.accept() {
            Ok((sock, _)) => {
                let flag = Arc::clone(stop);
                conns.push(std::thread::spawn(move || fake_conn(sock, mode, &flag)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

fn fake_conn(mut sock: TcpStream, mode: Fake, stop: &AtomicBool) {
    if matches!(mode, Fake::AcceptClose) {
        return;
    }
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {
                let answer: &[u8] = match mode {
                    Fake::CutReply => b"$10\r\nabc",
                    Fake::Garbage => b"hello\r\n",
                    Fake::Loading => b"-LOADING Redis is loading\r\n",
                    Fake::AcceptClose | Fake::ReadClose => return,
                };
                if sock.write_all(answer).is_err() || matches!(mode, Fake::CutReply) {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

// ---------------------------------------------------------------------------
// Stats, fds, baselines

/// The first value of metric `name` (top-level metrics appear once; pool
/// metrics once per pool, and these tests have one pool or look at the
/// first).
fn stat(json: &str, name: &str) -> i64 {
    stat_values(json, name)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no \"{name}\" in stats: {json}"))
}

/// What must come back to its resting value after a fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Usage {
    fds: usize,
    /// `mbuf_allocated - mbuf_free`.
    mbufs: i64,
    curr_connections: i64,
}

fn usage(p: &Proxy) -> (Usage, String) {
    let json = p.stats();
    let u = Usage {
        fds: p.fds(),
        mbufs: stat(&json, "mbuf_allocated") - stat(&json, "mbuf_free"),
        curr_connections: stat(&json, "curr_connections"),
    };
    (u, json)
}

fn quiet(json: &str) -> bool {
    stat_values(json, "client_connections")
        .iter()
        .all(|&n| n == 0)
        && stat_values(json, "in_queue").iter().all(|&n| n == 0)
        && stat_values(json, "out_queue").iter().all(|&n| n == 0)
}

/// The proxy's usage at rest: no clients, nothing queued, and three
/// readings in a row (more than two stats intervals apart) agree, since the
/// published stats lag the worker.
fn baseline(p: &Proxy) -> Usage {
    let mut last: Option<Usage> = None;
    let mut same = 0;
    let deadline = Instant::now() + SETTLE * 2;
    while Instant::now() < deadline {
        let (u, json) = usage(p);
        if quiet(&json) && last == Some(u) {
            same += 1;
            if same >= 2 {
                return u;
            }
        } else {
            same = 0;
        }
        last = Some(u);
        std::thread::sleep(Duration::from_millis(120));
    }
    panic!("proxy never came to rest; last {last:?}: {}", p.stats());
}

/// Polls until the proxy is back at `base` (see [`Usage`]).
fn assert_back_to(p: &mut Proxy, base: Usage, what: &str) {
    p.assert_alive();
    let mut last = None;
    let back = wait_until(SETTLE, || {
        let (u, json) = usage(p);
        let ok = u == base && quiet(&json);
        last = Some((u, json));
        ok
    });
    if !back {
        let (u, json) = last.unwrap_or_default();
        panic!("{what}: proxy did not return to its baseline {base:?}; now {u:?}\nstats: {json}");
    }
}

/// Polls the stats until `cond` holds (bounded by [`WAIT`]); returns the
/// last document.
fn wait_stats(p: &Proxy, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
    let mut json = String::new();
    let ok = wait_until(WAIT, || {
        json = p.stats();
        cond(&json)
    });
    assert!(ok, "timed out waiting for {what}; stats: {json}");
    json
}

// ---------------------------------------------------------------------------
// Keys and replies

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

fn err(text: &str) -> Resp {
    Resp::Error(text.as_bytes().to_vec())
}

fn ok() -> Resp {
    Resp::ok()
}

/// The text of an error reply; panics on anything else.
fn err_text(r: &Resp) -> String {
    match r {
        Resp::Error(_) => r.line().unwrap_or_default(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// How long a request to a misbehaving backend may take to be answered.
const ANSWER: Duration = Duration::from_secs(3);

/// Waits up to [`ANSWER`] for the next reply on `c`; `None` when nothing
/// arrives (a lost reply), so that tests can fail with a clear message
/// instead of the harness's read-timeout panic.
fn reply_within(c: &mut RawConn) -> Option<Resp> {
    c.set_read_timeout(ANSWER);
    let mut byte = [0u8; 1];
    let ready = matches!(c.stream().peek(&mut byte), Ok(n) if n > 0);
    c.set_read_timeout(READ_TIMEOUT);
    ready.then(|| c.recv_reply())
}

/// Sends one request and returns its reply, panicking with `what` when
/// none comes within [`ANSWER`].
fn call_within<A: AsRef<[u8]>>(c: &mut RawConn, args: &[A], what: &str) -> Resp {
    c.send(&cmd(args));
    reply_within(c).unwrap_or_else(|| panic!("no reply within {ANSWER:?}: {what}"))
}

/// A redis pool `alpha` over these server lines with `hash: md5` (spreads
/// any key set over the servers) plus `opts`.
fn pool(lines: &[String], opts: &[(&str, &str)]) -> PoolConf {
    let mut p = PoolConf::new("alpha", true).opt("hash", "md5");
    for (k, v) in opts {
        p = p.opt(k, v);
    }
    for l in lines {
        p = p.server(l);
    }
    p
}

/// Sorts `candidates` by what `GET` through a probe proxy over `lines`
/// (same names and hash as the proxy under test, no ejection) answers: the
/// keys it serves, and the failed keys with their error text.
fn probe(lines: &[String], candidates: &[String]) -> (Vec<String>, Vec<(String, String)>) {
    let proxy = Proxy::start_pools(&[pool(lines, &[])], &[]);
    let mut c = proxy.raw();
    let mut served = Vec::new();
    let mut failed = Vec::new();
    for k in candidates {
        match call_within(&mut c, &["GET", k], &format!("probe GET {k}")) {
            Resp::Error(e) => failed.push((k.clone(), String::from_utf8_lossy(&e).into_owned())),
            _ => served.push(k.clone()),
        }
    }
    assert!(
        !served.is_empty() && !failed.is_empty(),
        "keys did not spread over both servers: served {served:?}, failed {failed:?}"
    );
    (served, failed)
}

/// Keys of `candidates` that `SET` through `proxy` placed on `backend`.
fn keys_on(proxy: &Proxy, backend: &Redis, candidates: &[String]) -> Vec<String> {
    let mut c = proxy.raw();
    for k in candidates {
        assert_eq!(c.call(&["SET", k, "seed"]), ok(), "seeding {k}");
    }
    let on: Vec<String> = candidates
        .iter()
        .filter(|k| backend.has(k.as_bytes()))
        .cloned()
        .collect();
    assert!(
        !on.is_empty(),
        "no key of {candidates:?} on :{}",
        backend.port()
    );
    on
}

// ---------------------------------------------------------------------------
// Refused connections and ejection (docs/compatibility.md §5.6, §9.1, §9.3)

/// A server whose port has nothing listening: its keys get `-ERR
/// Connection refused`, the other server's keys are served, and once a
/// redis listens there its keys are served too (each request connects
/// afresh; nothing is cached about the failure).
#[test]
fn refused_connect_then_backend_started() {
    let live = Redis::start();
    let dead_port = free_port();
    let lines = [live.server_line(1), format!("127.0.0.1:{dead_port}:1")];
    let mut proxy = Proxy::start_pools(&[pool(&lines, &[])], &STATS_ARGS);
    let mut c = proxy.raw();
    let (mut on_live, mut on_dead) = (Vec::new(), Vec::new());
    for k in keys("rf", 32) {
        match c.call(&["SET", &k, &k]) {
            r if r == ok() => on_live.push(k),
            r => {
                assert_eq!(r, err("ERR Connection refused"), "SET {k}");
                on_dead.push(k);
            }
        }
    }
    assert!(
        !on_live.is_empty() && !on_dead.is_empty(),
        "{on_live:?} {on_dead:?}"
    );
    for k in &on_live {
        assert_eq!(c.call(&["GET", k]), Resp::bulk(k), "GET {k}");
        assert!(live.has(k.as_bytes()));
    }
    assert_eq!(c.call(&["GET", &on_dead[0]]), err("ERR Connection refused"));
    let json = wait_stats(&proxy, "forward_error", |j| {
        stat(j, "forward_error") > on_dead.len() as i64
    });
    assert_eq!(stat(&json, "server_ejects"), 0, "{json}");

    let revived = redis_on_port(dead_port);
    for k in &on_dead {
        assert_eq!(c.call(&["SET", k, "back"]), ok(), "SET {k} after restart");
        assert_eq!(
            c.call(&["GET", k]),
            Resp::bulk("back"),
            "GET {k} after restart"
        );
    }
    let mut direct = RawConn::connect(dead_port);
    assert_eq!(direct.call(&["GET", &on_dead[0]]), Resp::bulk("back"));
    proxy.assert_alive();
    drop(revived);
}

/// docs/compatibility.md §9.3 with `server_failure_limit: 2`, `server_retry_timeout: 1000`:
/// two refused requests eject the dead server, the third is rerouted to
/// the survivor. After the retry time the proxy probes the dead server
/// itself (0.5.0 used the next client request as the probe, which failed):
/// the probe is refused, the server stays out and its keys keep going to
/// the survivor; once a redis listens on its port, the next probe passes
/// and the keys go to it again. Without `auto_eject_hosts` the keys always
/// fail and never move.
#[test]
fn ejection_after_failure_limit_and_retry() {
    let live = Redis::start();
    let dead_port = free_port();
    let dead_name = format!("127.0.0.1:{dead_port}");
    let lines = [live.server_line(1), format!("{dead_name}:1")];

    // auto_eject_hosts false (the default): never ejected, never rerouted.
    let probe_proxy = Proxy::start_pools(&[pool(&lines, &[])], &STATS_ARGS);
    let mut c = probe_proxy.raw();
    let mut dead_keys = Vec::new();
    for k in keys("ej", 32) {
        if c.call(&["SET", &k, "x"]) != ok() {
            dead_keys.push(k);
        }
    }
    assert!(!dead_keys.is_empty(), "no key maps to the dead server");
    let key = dead_keys[0].clone();
    for i in 0..5 {
        assert_eq!(
            c.call(&["SET", &key, "never"]),
            err("ERR Connection refused"),
            "request {i} without auto_eject_hosts"
        );
    }
    assert!(
        !live.has(key.as_bytes()),
        "{key} was rerouted without ejection"
    );
    let json = wait_stats(&probe_proxy, "forward_error", |j| {
        stat(j, "forward_error") >= dead_keys.len() as i64 + 5
    });
    assert_eq!(stat(&json, "server_ejects"), 0, "{json}");
    assert_eq!(server_stat(&json, &dead_name, "server_ejected_at"), 0);
    drop(c);
    drop(probe_proxy);

    let opts = [
        ("auto_eject_hosts", "true"),
        ("server_failure_limit", "2"),
        ("server_retry_timeout", "1000"),
    ];
    let mut proxy = Proxy::start_pools(&[pool(&lines, &opts)], &STATS_ARGS);
    let mut c = proxy.raw();
    for v in ["a", "b"] {
        assert_eq!(c.call(&["SET", &key, v]), err("ERR Connection refused"));
    }
    let ejected = Instant::now();
    assert_eq!(c.call(&["SET", &key, "served-1"]), ok(), "not rerouted");
    assert_eq!(live.get(key.as_bytes()), Some(b"served-1".to_vec()));
    let json = wait_stats(&proxy, "the ejection in stats", |j| {
        stat(j, "server_ejects") == 1
    });
    let at = server_stat(&json, &dead_name, "server_ejected_at");
    assert!(at > 0, "server_ejected_at {at}: {json}");
    assert_eq!(
        server_stat(&json, live.addr().as_str(), "server_ejected_at"),
        0
    );
    // Past the retry time: the probe was refused, so the server is still
    // out and no client request fails for it.
    wait_for("the failed probe in the log", || {
        proxy.log_text().contains("failed its probe")
    });
    assert!(ejected.elapsed() >= Duration::from_millis(1000));
    for i in 0..5 {
        let v = format!("served-2-{i}");
        assert_eq!(c.call(&["SET", &key, &v]), ok(), "after a failed probe");
        assert_eq!(live.get(key.as_bytes()), Some(v.into_bytes()));
    }
    let json = proxy.stats();
    assert_eq!(stat(&json, "server_ejects"), 1, "{json}");
    assert_eq!(stat(&json, "forward_error"), 2, "{json}");

    // A redis on the dead port: the next probe passes and the key goes
    // there (the repair moves the value written meanwhile along).
    let _revived = redis_on_port(dead_port);
    let mut direct = RawConn::connect(dead_port);
    wait_for("the key served by the revived server", || {
        let _ = c.call(&["SET", &key, "back"]);
        direct.call(&["GET", &key]) == Resp::bulk("back")
    });
    assert_eq!(c.call(&["GET", &key]), Resp::bulk("back"));
    proxy.assert_alive();
}

// ---------------------------------------------------------------------------
// Killed and hung backends (docs/compatibility.md §9.2, §12)

/// Two live backends behind one proxy, with keys known to live on each.
struct Pair {
    proxy: Proxy,
    a: Redis,
    b: Redis,
    on_a: Vec<String>,
    on_b: Vec<String>,
}

impl Pair {
    fn start(opts: &[(&str, &str)]) -> Pair {
        let mut backends = Redis::start_many(2);
        let b = backends.pop().expect("two backends");
        let a = backends.pop().expect("two backends");
        let lines = [a.server_line(1), b.server_line(1)];
        let proxy = Proxy::start_pools(&[pool(&lines, opts)], &STATS_ARGS);
        let candidates = keys("pk", 32);
        let on_a = keys_on(&proxy, &a, &candidates);
        let on_b: Vec<String> = candidates
            .iter()
            .filter(|k| !on_a.contains(k))
            .cloned()
            .collect();
        assert!(!on_b.is_empty(), "every key is on one backend");
        Pair {
            proxy,
            a,
            b,
            on_a,
            on_b,
        }
    }

    /// One request to each backend, so both server connections exist, and
    /// a local reply, so the scratch chunk for proxy-made bytes exists.
    fn touch_both(&self) {
        let mut c = self.proxy.raw();
        assert_eq!(c.call(&["PING"]), Resp::Status(b"PONG".to_vec()));
        for k in [&self.on_a[0], &self.on_b[0]] {
            let r = c.call(&["GET", k]);
            assert!(matches!(r, Resp::Bulk(Some(_))), "GET {k}: {r:?}");
        }
    }
}

/// SIGKILL of a backend with a pipeline of 1000 requests in flight: every
/// request gets a reply (the killed server's requests an `-ERR`), in
/// order; a redis restarted on the same port is used again; nothing leaks.
#[test]
fn backend_killed_mid_pipeline() {
    let mut pair = Pair::start(&[]);
    pair.touch_both();
    let base = baseline(&pair.proxy);
    let a_port = pair.a.port();
    let a_name = pair.a.addr();

    // Stop A first so that its requests are certainly in flight (written
    // to it or queued for it) when it dies.
    signal_pid(pair.a.pid(), libc::SIGSTOP);
    let value = "v".repeat(200);
    let mut pipe = Vec::new();
    let mut to_a = Vec::new();
    for i in 0..1000 {
        let on_a = i % 2 == 0;
        let set = if on_a { &pair.on_a } else { &pair.on_b };
        pipe.extend(cmd(&["SET", &set[i % set.len()], &value]));
        to_a.push(on_a);
    }
    let n_a = to_a.iter().filter(|&&x| x).count() as i64;
    let mut c = pair.proxy.raw();
    let mut w = c.writer();
    let writer = std::thread::spawn(move || w.write_all(&pipe).is_ok());
    wait_stats(&pair.proxy, "all requests for A in flight", |j| {
        server_stat(j, &a_name, "in_queue") + server_stat(j, &a_name, "out_queue") == n_a
    });
    pair.a.kill();

    let started = Instant::now();
    let mut errors = 0;
    for (i, &on_a) in to_a.iter().enumerate() {
        let r = c.recv_reply();
        if on_a {
            assert!(err_text(&r).starts_with("ERR "), "request {i}: {r:?}");
            errors += 1;
        } else {
            assert_eq!(r, ok(), "request {i} to the live backend");
        }
    }
    assert!(
        writer.join().expect("writer thread"),
        "pipeline write failed"
    );
    assert_eq!(errors, n_a);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "replies took {:?}",
        started.elapsed()
    );
    assert_eq!(c.call(&["SET", &pair.on_b[0], "b"]), ok());
    assert_eq!(c.call(&["GET", &pair.on_b[0]]), Resp::bulk("b"));
    assert_eq!(
        c.call(&["SET", &pair.on_a[0], "x"]),
        err("ERR Connection refused")
    );

    let _revived = redis_on_port(a_port);
    assert_eq!(
        c.call(&["SET", &pair.on_a[0], "again"]),
        ok(),
        "restart not picked up"
    );
    assert_eq!(c.call(&["GET", &pair.on_a[0]]), Resp::bulk("again"));
    drop(c);
    assert_back_to(&mut pair.proxy, base, "after the killed pipeline");
    let json = pair.proxy.stats();
    assert!(
        server_stat(&json, &a_name, "server_err") + server_stat(&json, &a_name, "server_eof") >= 1,
        "{json}"
    );
}

/// A SIGSTOPped backend with `timeout: 300`: its requests get `-ERR
/// Connection timed out` in well under 3 s while the other backend keeps
/// serving; after SIGCONT it serves again; `server_timedout` counts it and
/// nothing leaks.
#[test]
fn hung_backend_times_out() {
    let mut pair = Pair::start(&[("timeout", "300")]);
    pair.touch_both();
    let base = baseline(&pair.proxy);
    let a_name = pair.a.addr();

    signal_pid(pair.a.pid(), libc::SIGSTOP);
    let mut hung = pair.proxy.raw();
    let sent = Instant::now();
    hung.send(&cmd(&["GET", &pair.on_a[0]]));
    // Meanwhile the other backend answers at once.
    let mut other = pair.proxy.raw();
    for k in &pair.on_b {
        assert_eq!(other.call(&["GET", k]), Resp::bulk("seed"), "GET {k}");
    }
    assert_eq!(hung.recv_reply(), err("ERR Connection timed out"));
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "timed out after {took:?}"
    );
    // Each new request to the hung server times out on its own.
    let again = Instant::now();
    assert_eq!(
        hung.call(&["SET", &pair.on_a[1 % pair.on_a.len()], "z"]),
        err("ERR Connection timed out")
    );
    assert!(
        again.elapsed() < Duration::from_secs(3),
        "{:?}",
        again.elapsed()
    );
    assert_eq!(other.call(&["GET", &pair.on_b[0]]), Resp::bulk("seed"));
    let json = wait_stats(&pair.proxy, "server_timedout", |j| {
        server_stat(j, &a_name, "server_timedout") >= 2
    });
    assert_eq!(
        server_stat(&json, &pair.b.addr(), "server_timedout"),
        0,
        "{json}"
    );

    signal_pid(pair.a.pid(), libc::SIGCONT);
    assert_eq!(
        hung.call(&["SET", &pair.on_a[0], "cont"]),
        ok(),
        "after SIGCONT"
    );
    assert_eq!(hung.call(&["GET", &pair.on_a[0]]), Resp::bulk("cont"));
    drop(hung);
    drop(other);
    pair.touch_both();
    assert_back_to(&mut pair.proxy, base, "after the hung backend");
}

/// A client that disconnects with 1000 requests in flight to a SIGSTOPped
/// backend: after SIGCONT the requests complete on the server, their
/// replies are discarded, and fds, mbufs and connections return to rest.
#[test]
fn client_gone_with_requests_in_flight_to_hung_backend() {
    let mut pair = Pair::start(&[]);
    pair.touch_both();
    let base = baseline(&pair.proxy);
    let a_name = pair.a.addr();

    let value = "w".repeat(1000);
    let targets = keys_on_a(&pair, 1000);
    let n = targets.len() as i64;
    let mut pipe = Vec::new();
    for k in &targets {
        pipe.extend(cmd(&["SET", k, &value]));
    }
    signal_pid(pair.a.pid(), libc::SIGSTOP);
    let c = pair.proxy.raw();
    let mut w = c.writer();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&pipe);
    });
    wait_stats(&pair.proxy, "the pipeline queued for A", |j| {
        server_stat(j, &a_name, "in_queue") + server_stat(j, &a_name, "out_queue") == n
    });
    writer.join().expect("writer thread");
    c.set_linger_zero();
    drop(c);
    // The client's close is noticed while A is still stopped.
    wait_stats(&pair.proxy, "the client close", |j| {
        stat(j, "client_connections") == 0
    });
    signal_pid(pair.a.pid(), libc::SIGCONT);
    let last = targets.last().expect("targets").clone();
    wait_for("the abandoned requests to reach A", || {
        pair.a
            .get(last.as_bytes())
            .is_some_and(|v| v == value.as_bytes())
    });
    pair.touch_both();
    assert_back_to(&mut pair.proxy, base, "after the abandoned pipeline");
}

/// Up to `n` distinct keys that the proxy's placement sends to backend A,
/// found by placing candidates through the proxy and looking on A.
fn keys_on_a(pair: &Pair, n: usize) -> Vec<String> {
    let candidates = keys("ga", 2 * n + 200);
    let mut c = pair.proxy.raw();
    let mut pipe = Vec::new();
    for k in &candidates {
        pipe.extend(cmd(&["SET", k, "probe"]));
    }
    let mut w = c.writer();
    let writer = std::thread::spawn(move || w.write_all(&pipe).is_ok());
    for k in &candidates {
        assert_eq!(c.recv_reply(), ok(), "placing {k}");
    }
    assert!(writer.join().expect("writer thread"));
    let mut direct = pair.a.raw();
    let mut on_a = Vec::new();
    for k in &candidates {
        if direct.call(&["EXISTS", k]) == Resp::Int(1) && on_a.len() < n {
            on_a.push(k.clone());
        }
    }
    assert!(on_a.len() >= n / 2, "only {} keys on A", on_a.len());
    on_a
}

// ---------------------------------------------------------------------------
// Misbehaving backends (docs/compatibility.md §7.6, §9.1)

/// A pool over a fake backend and a real redis, with a key known to route
/// to each (found through a probe proxy, so ejection settings of the
/// proxy under test do not matter).
struct FakePair {
    proxy: Proxy,
    fake: FakeBackend,
    live: Redis,
    fake_key: String,
    live_key: String,
    probe_error: String,
}

impl FakePair {
    fn start(mode: Fake, opts: &[(&str, &str)]) -> FakePair {
        let fake = FakeBackend::start(mode);
        let live = Redis::start();
        let lines = [fake.server_line(), live.server_line(1)];
        let (served, failed) = probe(&lines, &keys("fk", 32));
        let proxy = Proxy::start_pools(&[pool(&lines, opts)], &STATS_ARGS);
        let (fake_key, probe_error) = failed[0].clone();
        FakePair {
            proxy,
            fake,
            live,
            fake_key,
            live_key: served[0].clone(),
            probe_error,
        }
    }

    fn fake_name(&self) -> String {
        format!("127.0.0.1:{}", self.fake.port)
    }

    /// The error a request for the fake's key gets (with a PING pipelined
    /// behind it, whose `+PONG` must come second: a lost error reply would
    /// shift every later reply onto the wrong request); then the same
    /// connection and a new one still serve the live key.
    fn fail_then_healthy(&mut self) -> String {
        let mut c = self.proxy.raw();
        let mut pipe = cmd(&["GET", &self.fake_key]);
        pipe.extend(cmd(&["PING"]));
        c.send(&pipe);
        let first = reply_within(&mut c).unwrap_or_else(|| {
            panic!(
                "no reply within {ANSWER:?} to GET {} (fake backend)",
                self.fake_key
            )
        });
        let text = err_text(&first);
        assert_eq!(
            c.recv_reply(),
            Resp::Status(b"PONG".to_vec()),
            "after {text}"
        );
        assert_eq!(c.call(&["SET", &self.live_key, "fine"]), ok());
        assert_eq!(c.call(&["GET", &self.live_key]), Resp::bulk("fine"));
        let mut fresh = self.proxy.raw();
        assert_eq!(fresh.call(&["GET", &self.live_key]), Resp::bulk("fine"));
        self.proxy.assert_alive();
        text
    }
}

#[test]
fn reply_cut_off_mid_message() {
    let mut fp = FakePair::start(Fake::CutReply, &[]);
    for round in 0..3 {
        let text = fp.fail_then_healthy();
        assert!(text.starts_with("ERR "), "round {round}: {text}");
    }
    assert!(fp.probe_error.starts_with("ERR "), "{}", fp.probe_error);
    let name = fp.fake_name();
    let json = wait_stats(&fp.proxy, "server_eof", |j| {
        server_stat(j, &name, "server_eof") + server_stat(j, &name, "server_err") >= 3
    });
    assert_eq!(stat(&json, "forward_error"), 3, "{json}");
    assert!(fp.live.has(fp.live_key.as_bytes()));
}

#[test]
fn backend_accepts_and_closes() {
    let mut fp = FakePair::start(Fake::AcceptClose, &[]);
    for round in 0..3 {
        let text = fp.fail_then_healthy();
        assert!(text.starts_with("ERR "), "round {round}: {text}");
    }
    assert!(fp.live.has(fp.live_key.as_bytes()));
}

/// A backend that closes after reading a request (EOF, no reset): the
/// request fails with `-ERR unknown` (docs/compatibility.md §9.1, §12).
#[test]
fn backend_closes_without_replying() {
    let mut fp = FakePair::start(Fake::ReadClose, &[]);
    assert_eq!(fp.probe_error, "ERR unknown");
    for _ in 0..3 {
        assert_eq!(fp.fail_then_healthy(), "ERR unknown");
    }
    // Fragments fail the same way, with the same reason (docs/compatibility.md §7.4).
    let mut c = fp.proxy.raw();
    let (fake, live) = (fp.fake_key.as_str(), fp.live_key.as_str());
    for args in [["MGET", live, fake], ["DEL", fake, live]] {
        let r = call_within(&mut c, &args, &format!("{args:?}"));
        assert_eq!(r, err("ERR unknown"), "{args:?}");
        // The live fragment ran (DEL removed the key): the connection
        // still serves it.
        assert_eq!(c.call(&["SET", live, "fine"]), ok(), "after {args:?}");
    }
    let name = fp.fake_name();
    wait_stats(&fp.proxy, "server_eof", |j| {
        server_stat(j, &name, "server_eof") >= 5
    });
}

#[test]
fn backend_sends_garbage() {
    let mut fp = FakePair::start(Fake::Garbage, &[]);
    assert_eq!(fp.probe_error, "ERR Invalid argument");
    for _ in 0..3 {
        assert_eq!(fp.fail_then_healthy(), "ERR Invalid argument");
    }
}

/// `-LOADING` is a transient server failure (docs/compatibility.md §7.6): the request gets
/// `-ERR Invalid argument`, not the backend's text, and with
/// `auto_eject_hosts` it counts a failure (limit 1: ejected at once, so the
/// next request for that key is rerouted to the live server).
#[test]
fn loading_reply_is_a_server_failure() {
    let opts = [
        ("auto_eject_hosts", "true"),
        ("server_failure_limit", "1"),
        ("server_retry_timeout", "30000"),
    ];
    let mut fp = FakePair::start(Fake::Loading, &opts);
    assert_eq!(fp.probe_error, "ERR Invalid argument");
    assert_eq!(fp.fail_then_healthy(), "ERR Invalid argument");
    let mut c = fp.proxy.raw();
    assert_eq!(
        c.call(&["SET", &fp.fake_key, "moved"]),
        ok(),
        "not rerouted after ejection"
    );
    assert_eq!(fp.live.get(fp.fake_key.as_bytes()), Some(b"moved".to_vec()));
    let name = fp.fake_name();
    let json = wait_stats(&fp.proxy, "the ejection", |j| stat(j, "server_ejects") == 1);
    assert!(server_stat(&json, &name, "server_ejected_at") > 0, "{json}");
}

/// A host name that does not resolve: `-ERR Host is down`.
///
/// The name must fail the same way on every machine, whatever its resolver
/// does: a plain `nonexistent.invalid` goes to the DNS server in
/// /etc/resolv.conf, which may answer at once, after seconds, or never
/// (no network). A 64-byte label is longer than DNS allows (63), so glibc's
/// getaddrinfo refuses the name before sending any query (strace shows no
/// socket opened), and /etc/hosts cannot hold it either. The proxy sees
/// exactly what an unknown name gives it, a failed resolution. If no answer
/// comes anyway, the test fails: it never passes without checking.
#[test]
fn unresolvable_host_name() {
    let live = Redis::start();
    let host = format!("{}.nonexistent.invalid", "x".repeat(64));
    let dns = PoolConf::new("alpha", true).server(&format!("{host}:6379:1"));
    let good = PoolConf::new("beta", true).server(&live.server_line(1));
    let mut proxy = Proxy::start_pools(&[dns, good], &STATS_ARGS);
    let mut c = proxy.raw();
    // recv_reply panics after READ_TIMEOUT (10 s) without an answer.
    assert_eq!(c.call(&["GET", "k"]), err("ERR Host is down"));
    assert_eq!(c.call(&["SET", "k2", "v"]), err("ERR Host is down"));
    let log = proxy.log_text();
    assert!(
        log.contains(&format!(
            "address resolution of node '{host}' service '6379' failed"
        )),
        "{log}"
    );
    let mut g = RawConn::connect(proxy.port_of(1));
    assert_eq!(g.call(&["SET", "k", "v"]), ok());
    assert_eq!(live.get(b"k"), Some(b"v".to_vec()));
    // As in 0.5.0, a failed lookup is no server error (it never connected).
    let json = proxy.stats();
    assert_eq!(
        server_stat(&json, &format!("{host}:6379"), "server_err"),
        0,
        "{json}"
    );
    proxy.assert_alive();
}

/// A server named by host name: resolved (off the event loop) at each
/// connect, its requests served once the answer comes, and resolved again
/// when it reconnects. The backend listens on both loopback addresses, so
/// the test holds whichever of them `localhost` names first here.
#[test]
fn host_name_server_resolves_at_each_connect() {
    let live = Redis::start_with(&["--bind", "127.0.0.1", "-::1"]);
    let line = format!("localhost:{}:1", live.port());
    let lazy = PoolConf::new("alpha", true).server(&line);
    let eager = PoolConf::new("beta", true)
        .server(&line)
        .opt("preconnect", "true");
    let mut proxy = Proxy::start_pools(&[lazy, eager], &STATS_ARGS);
    let mut c = proxy.raw();
    assert_eq!(c.call(&["SET", "hn", "v1"]), ok());
    assert_eq!(live.get(b"hn"), Some(b"v1".to_vec()));
    let mut e = RawConn::connect(proxy.port_of(1));
    assert_eq!(e.call(&["GET", "hn"]), Resp::Bulk(Some(b"v1".to_vec())));
    // The backend drops every client: the next request connects (and so
    // resolves) again.
    let mut admin = live.raw();
    let killed = admin.call(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    assert!(matches!(killed, Resp::Int(n) if n >= 2), "{killed:?}");
    wait_for("both pools see their server connection close", || {
        let j = proxy.stats();
        stat_values(&j, "server_connections")
            .iter()
            .all(|&n| n == 0)
    });
    assert_eq!(c.call(&["SET", "hn", "v2"]), ok());
    assert_eq!(e.call(&["GET", "hn"]), Resp::Bulk(Some(b"v2".to_vec())));
    let log = proxy.log_text();
    assert!(!log.contains("address resolution"), "{log}");
    proxy.assert_alive();
}

// ---------------------------------------------------------------------------
// Fragmented commands (docs/compatibility.md §13, §7.4, §8.2)

/// MGET, MSET, DEL, UNLINK, TOUCH and EXISTS over a live and a dead server:
/// one `-ERR Connection refused` for the whole command, the connection
/// stays usable (docs/compatibility.md §13: better than 0.5.0's close after MGET), and
/// nothing leaks.
#[test]
fn fragmented_command_with_dead_server() {
    let live = Redis::start();
    let dead_port = free_port();
    let lines = [live.server_line(1), format!("127.0.0.1:{dead_port}:1")];
    let (served, failed) = probe(&lines, &keys("fr", 32));
    assert!(
        served.len() >= 2,
        "one key only on the live server: {served:?}"
    );
    let (l1, l2) = (&served[0], &served[1]);
    let d1 = &failed[0].0;
    let mut proxy = Proxy::start_pools(&[pool(&lines, &[])], &STATS_ARGS);
    let mut c = proxy.raw();
    assert_eq!(c.call(&["SET", l1, "one"]), ok());
    assert_eq!(c.call(&["GET", d1]), err("ERR Connection refused"));
    drop(c);
    let base = baseline(&proxy);

    let mut c = proxy.raw();
    let commands: Vec<Vec<&str>> = vec![
        vec!["MGET", l1, d1, l2],
        vec!["MGET", d1, l1],
        vec!["MSET", l1, "x", d1, "y"],
        vec!["DEL", d1, l2, l1],
        vec!["UNLINK", l1, d1],
        vec!["TOUCH", l1, d1],
        vec!["EXISTS", l1, d1, l2],
    ];
    for args in &commands {
        assert_eq!(c.call(args), err("ERR Connection refused"), "{args:?}");
        // The live fragments may have run (MSET, DEL): put l1 back.
        assert_eq!(c.call(&["SET", l1, "one"]), ok(), "after {args:?}");
        assert_eq!(c.call(&["GET", l1]), Resp::bulk("one"), "after {args:?}");
    }
    // Pipelined: the failed command's reply keeps its place, and the
    // requests behind it are answered.
    let mut pipe = cmd(&["MGET", l1, d1]);
    pipe.extend(cmd(&["GET", l1]));
    pipe.extend(cmd(&["MGET", l1, l2]));
    pipe.extend(cmd(&["DEL", l2, d1]));
    pipe.extend(cmd(&["GET", l1]));
    c.send(&pipe);
    assert_eq!(c.recv_reply(), err("ERR Connection refused"));
    assert_eq!(c.recv_reply(), Resp::bulk("one"));
    assert_eq!(
        c.recv_reply(),
        Resp::array(vec![Resp::bulk("one"), Resp::nil()])
    );
    assert_eq!(c.recv_reply(), err("ERR Connection refused"));
    assert_eq!(c.recv_reply(), Resp::bulk("one"));
    let json = wait_stats(&proxy, "forward_error", |j| {
        stat(j, "forward_error") >= commands.len() as i64 + 3
    });
    assert_eq!(stat(&json, "server_ejects"), 0, "{json}");
    drop(c);
    assert_back_to(&mut proxy, base, "after failed fragmented commands");
}

/// Memcached multi-get with one fragment's server dead: `SERVER_ERROR
/// ...` for the command; the connection stays usable.
#[test]
fn memcache_multiget_with_dead_server() {
    let live = Memcached::start();
    let dead_port = free_port();
    let lines = [live.server_line(1), format!("127.0.0.1:{dead_port}:1")];
    let mk_pool = || {
        let mut p = PoolConf::new("alpha", false).opt("hash", "md5");
        for l in &lines {
            p = p.server(l);
        }
        p
    };
    let mut proxy = Proxy::start_pools(&[mk_pool()], &STATS_ARGS);
    let mut c = proxy.raw();
    let (mut on_live, mut on_dead) = (Vec::new(), Vec::new());
    for k in keys("mc", 32) {
        c.send(format!("get {k}\r\n").as_bytes());
        let line = c.recv_line();
        if line == b"END\r\n" {
            on_live.push(k);
        } else {
            assert_eq!(line, b"SERVER_ERROR Connection refused\r\n", "get {k}");
            on_dead.push(k);
        }
    }
    assert!(!on_live.is_empty() && !on_dead.is_empty());
    let (l1, d1) = (&on_live[0], &on_dead[0]);
    c.send(format!("set {l1} 0 0 3\r\nabc\r\n").as_bytes());
    c.expect(b"STORED\r\n");
    for req in [
        format!("get {l1} {d1}\r\n"),
        format!("gets {d1} {l1}\r\n"),
        format!("get {l1} {d1} {l1}\r\n"),
    ] {
        c.send(req.as_bytes());
        let line = c.recv_line();
        assert!(
            line.starts_with(b"SERVER_ERROR "),
            "{req:?} -> {}",
            show(&line)
        );
        assert_eq!(
            mc_get(&mut c, l1.as_bytes()),
            Some(b"abc".to_vec()),
            "after {req:?}"
        );
    }
    proxy.assert_alive();
}

// ---------------------------------------------------------------------------
// Misbehaving clients (docs/compatibility.md §12)

/// Half a request and then silence: other clients are served meanwhile,
/// and once the client goes away (EOF or reset) nothing is left behind.
#[test]
fn half_request_then_silence() {
    let mut pair = Pair::start(&[]);
    pair.touch_both();
    let base = baseline(&pair.proxy);
    let half = b"*3\r\n$3\r\nSET\r\n$1\r\nk";

    let mut silent = pair.proxy.raw();
    silent.send(half);
    let mut closer = pair.proxy.raw();
    closer.send(half);
    let mut resetter = pair.proxy.raw();
    resetter.send(half);
    let mut other = pair.proxy.raw();
    for (i, k) in pair.on_a.iter().chain(&pair.on_b).enumerate() {
        assert_eq!(other.call(&["SET", k, &i.to_string()]), ok());
        assert_eq!(other.call(&["GET", k]), Resp::bulk(i.to_string()));
    }
    silent.expect_silence(Duration::from_millis(200));
    wait_stats(&pair.proxy, "four clients", |j| {
        stat(j, "client_connections") == 4
    });

    // Half-close: the incomplete request is dropped and the proxy closes.
    closer.shutdown_write();
    closer.expect_eof();
    resetter.set_linger_zero();
    drop(resetter);
    drop(silent);
    drop(other);
    assert!(
        !pair.a.has(b"k") && !pair.b.has(b"k"),
        "half a SET was executed"
    );
    drop(closer);
    assert_back_to(&mut pair.proxy, base, "after half requests");
}
