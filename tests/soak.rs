//! Soak: mixed redis and memcached traffic through one proxy while a chaos
//! thread keeps killing and restarting backends, then checks that nothing
//! leaked.
//!
//! Two pools (3 redis-server, 3 memcached; auto_eject_hosts, failure limit
//! 1, retry 1000 ms, timeout 500 ms) take traffic from client threads doing
//! SET/GET/MGET/DEL and set/get/multi-get/delete with values of random size
//! up to 64 KiB. Every value is self-describing (`<key>#<seed>#<n>#` and
//! `n` filler bytes derived from the seed), so a reply carrying another
//! key's value, a cut value or a corrupted one is caught without knowing
//! which write won. Every request must get a reply within 5 s: a value (or
//! a miss) that checks out, or an error reply; anything else (silence, a
//! closed connection, garbage) is a failure. Once a second the test prints
//! ops, errors, RSS, open descriptors and mbufs in use.
//!
//! After the load stops and the backends are all up again it checks that
//! the proxy is alive and serving, that no client connection, queued
//! request, descriptor or mbuf chunk is left over, and that RSS stayed
//! near the level it reached early on (see [`rss_limit`]).
//!
//! `soak_short` runs for 30 s in the ordinary test run; `soak_long` is
//! ignored there and run by `make soak` (`scripts/soak.sh`) for
//! `NC_SOAK_SECONDS` (default 600).

mod support;

use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const MIB: u64 = 1024 * 1024;
/// A request without its reply after this long is a hang.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const REDIS_THREADS: usize = 3;
const MEMCACHE_THREADS: usize = 3;
/// Keys per protocol, shared by the threads.
const KEYS: u64 = 512;
const MAX_VALUE: usize = 64 * 1024;
/// A client reconnects after this many requests (connection churn).
const OPS_PER_CONN: u64 = 1000;
/// Time between two kills, and how long a killed backend stays down.
const CHAOS_EVERY: Duration = Duration::from_secs(3);
const CHAOS_DOWN: Duration = Duration::from_secs(1);
/// How long the proxy may take to come back to rest after the load.
const SETTLE: Duration = Duration::from_secs(20);
/// Failures quoted when the test fails.
const SHOW_FAILURES: usize = 10;

#[test]
fn soak_short() {
    soak(Duration::from_secs(30));
}

#[test]
#[ignore = "long: run by `make soak` (NC_SOAK_SECONDS, default 600)"]
fn soak_long() {
    let secs = std::env::var("NC_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(600);
    soak(Duration::from_secs(secs.max(10)));
}

/// The checker itself: it must refuse what a confused proxy could send.
#[test]
fn values_check_themselves() {
    let v = make_value(b"soak:r:1", 42, 100);
    assert_eq!(check_value(b"soak:r:1", &v), Ok(()));
    assert!(check_value(b"soak:r:2", &v).is_err(), "another key's value");
    assert!(
        check_value(b"soak:r:1", &v[..v.len() - 1]).is_err(),
        "cut short"
    );
    let mut bad = v.clone();
    if let Some(last) = bad.last_mut() {
        *last ^= 1;
    }
    assert!(check_value(b"soak:r:1", &bad).is_err(), "corrupted");
    assert_eq!(check_value(b"k", &make_value(b"k", 0, 0)), Ok(()));
}

// ---------------------------------------------------------------------------
// Backends that can be killed and brought back on the same port

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Redis,
    Memcached,
}

struct Backend {
    kind: Kind,
    port: u16,
    child: Option<ChildGuard>,
    dir: TempDir,
}

impl Backend {
    /// Starts on a free port (a new one if another process took it first).
    fn start(kind: Kind) -> Backend {
        let mut dir = TempDir::new("soak-backend");
        for _ in 0..5 {
            let mut b = Backend {
                kind,
                port: free_port(),
                child: None,
                dir,
            };
            if b.spawn().is_ok() {
                return b;
            }
            dir = b.dir;
        }
        panic!("{kind:?} did not start on any of 5 ports");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let log = self.dir.join(&format!("{:?}-{port}.log", self.kind));
        let mut cmd = match self.kind {
            Kind::Redis => {
                let mut c = Command::new("redis-server");
                c.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                    .args(["--appendonly", "no", "--daemonize", "no", "--dir"])
                    .arg(self.dir.path())
                    .arg("--logfile")
                    .arg(&log)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                c
            }
            Kind::Memcached => {
                let mut c = Command::new("memcached");
                c.args(["-l", "127.0.0.1", "-p", &port, "-U", "0"]);
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } == 0 {
                    c.args(["-u", "root"]);
                }
                let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
                let err = out.try_clone().map_err(|e| e.to_string())?;
                c.stdout(out).stderr(err);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", self.kind))?;
        let mut child = ChildGuard::new(child, false);
        let pid = child.pid();
        let up = wait_until(WAIT, || {
            child.exited().is_some() || pid_listens_on(pid, self.port)
        });
        if !up || child.exited().is_some() {
            return Err(format!(
                "{:?} on :{} did not start: {}",
                self.kind,
                self.port,
                tail(&log, 5)
            ));
        }
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop();
        }
    }

    /// Starts again on the same port; a moment's retry covers the port
    /// being briefly held by a connection.
    fn restart(&mut self) {
        let mut why = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => why = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("could not restart backend: {why}");
    }

    fn server_line(&self) -> String {
        format!("127.0.0.1:{}:1", self.port)
    }
}

/// Kills one backend every [`CHAOS_EVERY`], brings it back after
/// [`CHAOS_DOWN`]; returns the backends, all running, when told to stop.
fn chaos(mut backends: Vec<Backend>, stop: Arc<AtomicBool>, t0: Instant) -> Vec<Backend> {
    let mut next = 0usize;
    let pause = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    loop {
        pause(CHAOS_EVERY);
        if stop.load(Ordering::SeqCst) {
            return backends;
        }
        let i = next % backends.len();
        next += 1;
        let b = &mut backends[i];
        b.kill();
        // Down for the whole interval even when stopping, so the proxy sees
        // the failure before the backend comes back.
        std::thread::sleep(CHAOS_DOWN);
        b.restart();
        println!(
            "{:>7.1}  chaos: {:?} :{} killed and restarted",
            t0.elapsed().as_secs_f64(),
            b.kind,
            b.port
        );
    }
}

// ---------------------------------------------------------------------------
// Self-describing values

/// A small deterministic generator (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Mostly small values, some large, up to [`MAX_VALUE`].
    fn value_len(&mut self) -> usize {
        let cap = match self.below(20) {
            0 => MAX_VALUE,
            1..=5 => 16 * 1024,
            _ => 1024,
        };
        self.below(cap as u64 + 1) as usize
    }
}

fn filler(seed: u64, n: usize) -> impl Iterator<Item = u8> {
    (0..n as u64).map(move |j| b'a' + ((seed.wrapping_add(j.wrapping_mul(7))) % 26) as u8)
}

fn make_value(key: &[u8], seed: u64, n: usize) -> Vec<u8> {
    let mut v = key.to_vec();
    v.extend_from_slice(format!("#{seed}#{n}#").as_bytes());
    v.extend(filler(seed, n));
    v
}

/// Checks that `value` was made by [`make_value`] for `key`.
fn check_value(key: &[u8], value: &[u8]) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "value for {} is wrong ({why}): {}",
            show(key),
            show(value)
        ))
    };
    let Some(rest) = value.strip_prefix(key) else {
        return bad("does not start with its key");
    };
    let mut parts = rest.splitn(4, |&b| b == b'#');
    let (Some(b""), Some(seed), Some(n), Some(fill)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("no header");
    };
    let num = |b: &[u8]| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    let (Some(seed), Some(n)) = (num(seed), num(n)) else {
        return bad("bad header numbers");
    };
    if fill.len() as u64 != n {
        return bad(&format!("{} filler bytes, header says {n}", fill.len()));
    }
    if !fill.iter().copied().eq(filler(seed, fill.len())) {
        return bad("filler corrupted");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Clients

/// A client connection whose reads give up after [`REPLY_TIMEOUT`].
struct Client {
    sock: std::net::TcpStream,
    buf: Vec<u8>,
    /// How far `buf` has been consumed (compacted lazily).
    at: usize,
}

impl Client {
    fn connect(port: u16) -> Result<Client, String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let sock = std::net::TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)
            .map_err(|e| format!("connect to :{port}: {e}"))?;
        sock.set_read_timeout(Some(REPLY_TIMEOUT))
            .and_then(|()| sock.set_write_timeout(Some(REPLY_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        let _ = sock.set_nodelay(true);
        Ok(Client {
            sock,
            buf: Vec::new(),
            at: 0,
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.sock
            .write_all(bytes)
            .map_err(|e| format!("write failed: {e}"))
    }

    fn fill(&mut self) -> Result<(), String> {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        let mut chunk = [0u8; 65536];
        loop {
            match self.sock.read(&mut chunk) {
                Ok(0) => return Err("the proxy closed the connection".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(format!("no reply within {REPLY_TIMEOUT:?}"))
                }
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    fn resp(&mut self) -> Result<Resp, String> {
        loop {
            match parse_resp(&self.buf[self.at..]) {
                Ok(Some((v, n))) => {
                    self.at += n;
                    return Ok(v);
                }
                Ok(None) => self.fill()?,
                Err(e) => return Err(format!("bad reply: {e}: {}", show(&self.buf[self.at..]))),
            }
        }
    }

    fn line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            let rest = &self.buf[self.at..];
            if let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                let l = rest[..i].to_vec();
                self.at += i + 2;
                return Ok(l);
            }
            self.fill()?;
        }
    }

    fn exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() - self.at < n {
            self.fill()?;
        }
        let v = self.buf[self.at..self.at + n].to_vec();
        self.at += n;
        Ok(v)
    }
}

/// What a request came to: a good answer carrying this many values
/// (checked), or an error reply.
enum Outcome {
    Ok(u64),
    Error,
}

fn redis_key(n: u64) -> Vec<u8> {
    format!("soak:r:{n}").into_bytes()
}

fn mc_key(n: u64) -> Vec<u8> {
    format!("soak:m:{n}").into_bytes()
}

/// One random redis request and the check of its reply.
fn redis_op(c: &mut Client, rng: &mut Rng) -> Result<Outcome, String> {
    let pick = rng.below(100);
    let nkeys = if pick < 70 {
        1
    } else {
        2 + rng.below(7) as usize
    };
    let keys: Vec<Vec<u8>> = (0..nkeys).map(|_| redis_key(rng.below(KEYS))).collect();
    let (what, reply) = if pick < 30 {
        let v = make_value(&keys[0], rng.next(), rng.value_len());
        c.send(&cmd(&[b"SET".as_slice(), &keys[0], &v]))?;
        ("SET", c.resp()?)
    } else if pick < 70 {
        c.send(&cmd(&[b"GET".as_slice(), &keys[0]]))?;
        ("GET", c.resp()?)
    } else if pick < 85 {
        let mut args = vec![b"MGET".to_vec()];
        args.extend(keys.iter().cloned());
        c.send(&cmd(&args))?;
        ("MGET", c.resp()?)
    } else {
        let mut args = vec![b"DEL".to_vec()];
        args.extend(keys.iter().take(3).cloned());
        c.send(&cmd(&args))?;
        ("DEL", c.resp()?)
    };
    let wrong = |r: &Resp| Err(format!("{what} got {}", show(&r.encode())));
    match (what, &reply) {
        (_, Resp::Error(_)) => Ok(Outcome::Error),
        ("SET", Resp::Status(s)) if s == b"OK" => Ok(Outcome::Ok(0)),
        ("GET", Resp::Bulk(None)) => Ok(Outcome::Ok(0)),
        ("GET", Resp::Bulk(Some(v))) => check_value(&keys[0], v).map(|()| Outcome::Ok(1)),
        ("MGET", Resp::Array(Some(items))) if items.len() == keys.len() => {
            let mut n = 0;
            for (k, item) in keys.iter().zip(items) {
                match item {
                    Resp::Bulk(None) => {}
                    Resp::Bulk(Some(v)) => {
                        check_value(k, v)?;
                        n += 1;
                    }
                    other => return wrong(other),
                }
            }
            Ok(Outcome::Ok(n))
        }
        ("DEL", Resp::Int(n)) if (0..=3).contains(n) => Ok(Outcome::Ok(0)),
        _ => wrong(&reply),
    }
}

/// Reads a memcached retrieval reply for `keys` (in order, each at most
/// once, as docs/compatibility.md §13 promises) and checks every value.
fn mc_values(c: &mut Client, keys: &[Vec<u8>]) -> Result<Outcome, String> {
    let mut next = 0usize;
    let mut n = 0;
    loop {
        let line = c.line()?;
        if line == b"END" {
            return Ok(Outcome::Ok(n));
        }
        if line.starts_with(b"SERVER_ERROR") && next == 0 {
            return Ok(Outcome::Error);
        }
        let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let (Some(b"VALUE"), Some(key), Some(len), true) =
            (f.first().copied(), f.get(1), f.get(3), f.len() == 4)
        else {
            return Err(format!("bad retrieval line {}", show(&line)));
        };
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad length in {}", show(&line)))?;
        let Some(pos) = keys[next..].iter().position(|k| k == key) else {
            return Err(format!(
                "VALUE for {} not asked for (or out of order); asked {} keys",
                show(key),
                keys.len()
            ));
        };
        next += pos + 1;
        let data = c.exact(len + 2)?;
        if !data.ends_with(b"\r\n") {
            return Err(format!("value of {} not ended by CRLF", show(key)));
        }
        check_value(key, &data[..len])?;
        n += 1;
    }
}

/// One random memcached request and the check of its reply.
fn mc_op(c: &mut Client, rng: &mut Rng) -> Result<Outcome, String> {
    let pick = rng.below(100);
    let key = mc_key(rng.below(KEYS));
    let outcome = |ok: bool| if ok { Outcome::Ok(0) } else { Outcome::Error };
    if pick < 35 {
        let v = make_value(&key, rng.next(), rng.value_len());
        let mut req = b"set ".to_vec();
        req.extend_from_slice(&key);
        req.extend_from_slice(format!(" 0 0 {}\r\n", v.len()).as_bytes());
        req.extend_from_slice(&v);
        req.extend_from_slice(b"\r\n");
        c.send(&req)?;
        let line = c.line()?;
        match line.as_slice() {
            b"STORED" => Ok(outcome(true)),
            l if l.starts_with(b"SERVER_ERROR") => Ok(outcome(false)),
            _ => Err(format!("set got {}", show(&line))),
        }
    } else if pick < 95 {
        let mut keys = vec![key];
        if pick >= 75 {
            // Distinct keys: a repeated one may be answered once.
            while keys.len() < 2 + (pick as usize % 7) {
                let k = mc_key(rng.below(KEYS));
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        let mut req = b"get".to_vec();
        for k in &keys {
            req.push(b' ');
            req.extend_from_slice(k);
        }
        req.extend_from_slice(b"\r\n");
        c.send(&req)?;
        mc_values(c, &keys)
    } else {
        let mut req = b"delete ".to_vec();
        req.extend_from_slice(&key);
        req.extend_from_slice(b"\r\n");
        c.send(&req)?;
        let line = c.line()?;
        match line.as_slice() {
            b"DELETED" | b"NOT_FOUND" => Ok(outcome(true)),
            l if l.starts_with(b"SERVER_ERROR") => Ok(outcome(false)),
            _ => Err(format!("delete got {}", show(&line))),
        }
    }
}

/// Counters shared by the load threads.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    errors: AtomicU64,
    /// Values (not misses) that came back and were checked.
    values: AtomicU64,
    /// Slowest reply seen, in microseconds.
    slowest_us: AtomicU64,
    failures: Mutex<Vec<String>>,
    nfailures: AtomicU64,
}

fn load_thread(port: u16, redis: bool, id: u64, stop: &AtomicBool, tally: &Tally, t0: Instant) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0x1000_0000_01B3));
    let mut conn: Option<Client> = None;
    let mut on_conn = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() || on_conn >= OPS_PER_CONN {
            on_conn = 0;
            conn = match Client::connect(port) {
                Ok(c) => Some(c),
                Err(e) => {
                    record_failure(tally, t0, &e);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
        }
        let Some(c) = conn.as_mut() else { continue };
        let t = Instant::now();
        let r = if redis {
            redis_op(c, &mut rng)
        } else {
            mc_op(c, &mut rng)
        };
        let us = t.elapsed().as_micros() as u64;
        tally.slowest_us.fetch_max(us, Ordering::Relaxed);
        on_conn += 1;
        match r {
            Ok(Outcome::Ok(values)) => {
                tally.ops.fetch_add(1, Ordering::Relaxed);
                tally.values.fetch_add(values, Ordering::Relaxed);
            }
            Ok(Outcome::Error) => {
                tally.ops.fetch_add(1, Ordering::Relaxed);
                tally.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let proto = if redis { "redis" } else { "memcache" };
                record_failure(tally, t0, &format!("{proto} client {id}: {e}"));
                // The conversation is out of step: start a new one.
                conn = None;
            }
        }
    }
}

fn record_failure(tally: &Tally, t0: Instant, what: &str) {
    tally.nfailures.fetch_add(1, Ordering::Relaxed);
    let mut f = tally.failures.lock().unwrap_or_else(|e| e.into_inner());
    if f.len() < SHOW_FAILURES {
        f.push(format!("at {:.1} s: {what}", t0.elapsed().as_secs_f64()));
    }
}

// ---------------------------------------------------------------------------
// Observing the proxy

fn stat(json: &str, name: &str) -> i64 {
    stat_values(json, name)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no {name} in stats: {json}"))
}

fn stat_sum(json: &str, name: &str) -> i64 {
    stat_values(json, name).iter().sum()
}

/// One reading of the proxy.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    secs: f64,
    ops: u64,
    errors: u64,
    failures: u64,
    rss: u64,
    fds: i64,
    /// Connections to backends (`server_connections`, summed).
    server_conns: i64,
    clients: i64,
    /// `mbuf_allocated - mbuf_free`.
    mbufs: i64,
    /// Requests queued on servers (in and out queues, summed).
    queued: i64,
    /// `curr_connections`: listeners, clients and servers in the proxy.
    conns: i64,
}

impl Sample {
    /// Descriptors not accounted for by backend connections: what must
    /// come back to its baseline.
    fn own_fds(&self) -> i64 {
        self.fds - self.server_conns
    }
}

fn sample(p: &Proxy, tally: &Tally, t0: Instant) -> Sample {
    let json = p.stats();
    Sample {
        secs: t0.elapsed().as_secs_f64(),
        ops: tally.ops.load(Ordering::Relaxed),
        errors: tally.errors.load(Ordering::Relaxed),
        failures: tally.nfailures.load(Ordering::Relaxed),
        rss: rss(p.pid()),
        fds: p.fds() as i64,
        server_conns: stat_sum(&json, "server_connections"),
        clients: stat_sum(&json, "client_connections"),
        mbufs: stat(&json, "mbuf_allocated") - stat(&json, "mbuf_free"),
        queued: stat_sum(&json, "in_queue") + stat_sum(&json, "out_queue"),
        conns: stat(&json, "curr_connections"),
    }
}

/// A sample once the stats (published every 100 ms) have caught up with
/// the process: two readings 200 ms apart agree.
fn steady_sample(p: &Proxy, tally: &Tally, t0: Instant) -> Sample {
    let mut prev = sample(p, tally, t0);
    let mut now = prev;
    let same = |a: &Sample, b: &Sample| {
        (a.fds, a.server_conns, a.mbufs, a.conns, a.clients)
            == (b.fds, b.server_conns, b.mbufs, b.conns, b.clients)
    };
    let ok = wait_until(WAIT, || {
        std::thread::sleep(Duration::from_millis(200));
        now = sample(p, tally, t0);
        let steady = same(&prev, &now) && now.clients == 0;
        prev = now;
        steady
    });
    assert!(ok, "the idle proxy's figures did not settle: {now:?}");
    now
}

fn print_header() {
    println!(
        "{:>7} {:>10} {:>8} {:>6} {:>9} {:>5} {:>6} {:>7} {:>6}",
        "t(s)", "ops", "errors", "fails", "RSS(MiB)", "fds", "mbufs", "clients", "queued"
    );
}

fn print_row(s: &Sample) {
    println!(
        "{:>7.1} {:>10} {:>8} {:>6} {:>9.1} {:>5} {:>6} {:>7} {:>6}",
        s.secs,
        s.ops,
        s.errors,
        s.failures,
        s.rss as f64 / MIB as f64,
        s.fds,
        s.mbufs,
        s.clients,
        s.queued
    );
}

/// The leak criterion. Each client thread has one request in flight, so
/// the proxy's working set is bounded (threads x a multi-key reply of up
/// to 8 x 64 KiB, plus messages) and reached within the first seconds of
/// a stationary load; mbuf chunks are kept for reuse, so RSS then sits at
/// that high-water mark. A leak grows with the traffic instead: the rest
/// of the run carries at least twice the requests of the warm-up window
/// (the first third, at most the first minute), so the final RSS may
/// exceed the warm-up maximum by a quarter plus 8 MiB (allocator and
/// high-water jitter) and no more.
fn rss_limit(warm_max: u64) -> u64 {
    warm_max + warm_max / 4 + 8 * MIB
}

// ---------------------------------------------------------------------------
// The run

fn pool(name: &str, redis: bool, backends: &[&Backend]) -> PoolConf {
    let mut p = PoolConf::new(name, redis)
        .opt("auto_eject_hosts", "true")
        .opt("server_retry_timeout", "1000")
        .opt("server_failure_limit", "1")
        .opt("timeout", "500");
    p.servers = backends.iter().map(|b| b.server_line()).collect();
    p
}

/// Waits until a request of each kind goes through (ejections expire
/// after a second). The PING makes the proxy's chunk for the bytes it
/// writes itself, which stays, so it is part of every baseline.
fn wait_serving(p: &Proxy) {
    let mut r = Rng(7);
    wait_for("the redis pool serving", || {
        Client::connect(p.port_of(0))
            .and_then(|mut c| {
                let k = redis_key(KEYS + 1);
                c.send(&cmd(&[
                    b"SET".as_slice(),
                    &k,
                    &make_value(&k, r.next(), 10),
                ]))?;
                let set = c.resp()?;
                c.send(&cmd(&["PING"]))?;
                Ok((set, c.resp()?))
            })
            .is_ok_and(|v| v == (Resp::ok(), Resp::Status(b"PONG".to_vec())))
    });
    wait_for("the memcache pool serving", || {
        Client::connect(p.port_of(1))
            .and_then(|mut c| {
                c.send(b"get soak:m:probe\r\n")?;
                c.line()
            })
            .is_ok_and(|l| l == b"END")
    });
}

fn soak(duration: Duration) {
    let backends: Vec<Backend> = std::thread::scope(|s| {
        let hs: Vec<_> = [Kind::Redis; 3]
            .into_iter()
            .chain([Kind::Memcached; 3])
            .map(|k| s.spawn(move || Backend::start(k)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("backend start"))
            .collect()
    });
    let (reds, mcs): (Vec<&Backend>, Vec<&Backend>) =
        backends.iter().partition(|b| b.kind == Kind::Redis);
    let p = Proxy::start_pools(
        &[
            pool("soak_redis", true, &reds),
            pool("soak_mc", false, &mcs),
        ],
        &["-i", "100"],
    );
    let log: PathBuf = p.log_path().to_path_buf();
    let tally = Arc::new(Tally::default());
    let t0 = Instant::now();
    wait_serving(&p);
    let base = steady_sample(&p, &tally, t0);

    let stop_load = Arc::new(AtomicBool::new(false));
    let stop_chaos = Arc::new(AtomicBool::new(false));
    let chaos_thread = {
        let stop = stop_chaos.clone();
        std::thread::spawn(move || chaos(backends, stop, t0))
    };
    let loaders: Vec<_> = (0..REDIS_THREADS + MEMCACHE_THREADS)
        .map(|i| {
            let redis = i < REDIS_THREADS;
            let port = p.port_of(usize::from(!redis));
            let (stop, tally) = (stop_load.clone(), tally.clone());
            std::thread::spawn(move || load_thread(port, redis, i as u64, &stop, &tally, t0))
        })
        .collect();

    println!(
        "soak: {} s, {} redis + {} memcache clients, a backend killed every {:?} \
         and restarted {:?} later",
        duration.as_secs(),
        REDIS_THREADS,
        MEMCACHE_THREADS,
        CHAOS_EVERY,
        CHAOS_DOWN
    );
    print_header();
    print_row(&base);
    let warm = (duration / 3).min(Duration::from_secs(60));
    let mut samples = vec![base];
    let start = Instant::now();
    while start.elapsed() < duration {
        let next = Duration::from_secs(samples.len() as u64);
        if let Some(d) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(d);
        }
        let s = sample(&p, &tally, t0);
        print_row(&s);
        samples.push(s);
        let log_len = std::fs::metadata(&log).map_or(0, |m| m.len());
        assert!(
            log_len < 1 << 30,
            "proxy log above 1 GiB: {}",
            log.display()
        );
    }

    stop_chaos.store(true, Ordering::SeqCst);
    let backends = match chaos_thread.join() {
        Ok(b) => b,
        Err(e) => {
            stop_load.store(true, Ordering::SeqCst);
            std::panic::resume_unwind(e)
        }
    };
    stop_load.store(true, Ordering::SeqCst);
    for l in loaders {
        l.join().expect("load thread");
    }
    let load_end = sample(&p, &tally, t0);

    // Settle: every client gone, nothing queued, the same descriptors
    // (less backend connections, which come and go with the chaos) and
    // mbufs in use as before the load.
    let mut last = load_end;
    let settled = wait_until(SETTLE, || {
        last = sample(&p, &tally, t0);
        last.clients == 0
            && last.queued == 0
            && last.mbufs == base.mbufs
            && last.own_fds() == base.own_fds()
            && last.conns == 2 + last.server_conns
    });
    print_row(&last);
    wait_serving(&p);
    let mut p = p;
    p.assert_alive();
    drop(backends);

    let warm_max = samples
        .iter()
        .filter(|s| s.secs - base.secs <= warm.as_secs_f64())
        .map(|s| s.rss)
        .max()
        .unwrap_or(0);
    let max_rss = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let ops_after_warm = last.ops.saturating_sub(
        samples
            .iter()
            .rfind(|s| s.secs - base.secs <= warm.as_secs_f64())
            .map_or(0, |s| s.ops),
    );
    let limit = rss_limit(warm_max);
    let secs = last.secs - base.secs;
    let json = p.stats();
    let ejections = stat_sum(&json, "server_ejects");
    println!(
        "summary: {} ops ({:.0}/s), {} values checked, {} error replies, {} failures, \
         slowest reply {:?}, {} ejections",
        last.ops,
        last.ops as f64 / secs.max(1.0),
        tally.values.load(Ordering::Relaxed),
        last.errors,
        last.failures,
        Duration::from_micros(tally.slowest_us.load(Ordering::Relaxed)),
        ejections
    );
    println!(
        "summary: RSS first {:.1} MiB, warm-up max {:.1}, max {:.1}, final {:.1} (limit {:.1}; \
         a leak of {:.1} bytes per request would fail it); fds first {} final {} (backend \
         connections {} / {}); mbufs in use {} / {}",
        base.rss as f64 / MIB as f64,
        warm_max as f64 / MIB as f64,
        max_rss as f64 / MIB as f64,
        last.rss as f64 / MIB as f64,
        limit as f64 / MIB as f64,
        (limit - warm_max) as f64 / ops_after_warm.max(1) as f64,
        base.fds,
        last.fds,
        base.server_conns,
        last.server_conns,
        base.mbufs,
        last.mbufs
    );

    let failures = tally.failures.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        failures.is_empty(),
        "{} requests failed (no reply, a wrong value, a closed connection); first ones:\n{}",
        last.failures,
        failures.join("\n")
    );
    assert!(
        last.ops > 0 && last.errors < last.ops,
        "no useful traffic: {last:?}"
    );
    assert!(
        ejections > 0 && tally.values.load(Ordering::Relaxed) > 0,
        "the chaos ejected nothing or no value was read back: {json}"
    );
    assert!(
        settled,
        "the proxy did not come back to rest after the load: {last:?}, before it: {base:?}"
    );
    assert!(
        last.rss <= limit,
        "RSS grew from a warm-up maximum of {:.1} MiB to {:.1} MiB (limit {:.1} MiB)",
        warm_max as f64 / MIB as f64,
        last.rss as f64 / MIB as f64,
        limit as f64 / MIB as f64
    );
}
