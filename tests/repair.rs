//! Ejection repair and the rejoin probe end to end (issue 15): real
//! redis-server and memcached backends, one stopped with SIGSTOP (it keeps
//! its data, as after a network partition) and resumed with SIGCONT, or
//! killed and restarted empty on the same port.
//!
//! The scenario of every test: key `k` owned by server A is written `v1`;
//! A stops and is ejected (`server_failure_limit: 1`, short `timeout` and
//! `server_retry_timeout`); `k` is written `v2` and `k2` deleted through the
//! proxy (they land on B); A comes back; after the probe and the repair,
//! `k` reads `v2` (memcached: `v2` or a miss), never `v1`, and `k2` is
//! absent. Which server owns a key is found by writing it through a healthy
//! proxy and looking on the backends, never computed here.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// `-i 100`: stats published every 100 ms.
const STATS_ARGS: [&str; 2] = ["-i", "100"];
/// Pool `timeout` (also the probe's deadline) and `server_retry_timeout`.
const TIMEOUT_MS: u64 = 300;
const RETRY_MS: u64 = 400;

fn signal_pid(pid: u32, sig: i32) {
    let pid = i32::try_from(pid).expect("pid fits in pid_t");
    // SAFETY: kill(2) on a child this test spawned and still owns.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// SIGSTOP, and until the kernel shows the process stopped (the signal is
/// delivered asynchronously: a request sent at once could still be served).
fn stop_pid(pid: u32) {
    signal_pid(pid, libc::SIGSTOP);
    wait_for("the backend stopped", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| {
                st.rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    });
}

fn stat(json: &str, name: &str) -> i64 {
    stat_values(json, name)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no \"{name}\" in stats: {json}"))
}

fn wait_stats(p: &Proxy, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
    let mut json = String::new();
    let ok = wait_until(WAIT, || {
        json = p.stats();
        cond(&json)
    });
    assert!(
        ok,
        "timed out waiting for {what}; stats: {json}\nlog:\n{}",
        p.log_text()
    );
    json
}

/// The options of every pool here, plus `extra`.
fn opts(p: PoolConf, extra: &[(&str, &str)]) -> PoolConf {
    let mut p = p
        .opt("hash", "md5")
        .opt("auto_eject_hosts", "true")
        .opt("server_failure_limit", "1")
        .opt("timeout", &TIMEOUT_MS.to_string())
        .opt("server_retry_timeout", &RETRY_MS.to_string());
    for (k, v) in extra {
        p = p.opt(k, v);
    }
    p
}

/// Until the stats say the repair is over: `repairing` 0 after having
/// repaired at least `n` keys; the document.
fn wait_repaired(p: &Proxy, n: i64) -> String {
    wait_stats(p, "the repair", |j| {
        stat(j, "repaired_keys") >= n && stat(j, "repairing") == 0
    })
}

/// Keys of `candidates` written through `proxy` that land on `on`.
fn keys_landing(proxy: &Proxy, on: &Redis, candidates: &[String]) -> Vec<String> {
    let mut c = proxy.raw();
    let mut found = Vec::new();
    for k in candidates {
        assert_eq!(c.call(&["SET", k, "probe"]), Resp::ok());
        if on.has(k.as_bytes()) {
            found.push(k.clone());
        }
        assert_eq!(c.call(&["DEL", k]), Resp::Int(1));
    }
    found
}

fn candidates(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

/// Stops A (SIGSTOP) and has a request for its key `k` time out, which
/// ejects it (limit 1); waits for the ejection in the stats.
fn stop_and_eject(proxy: &Proxy, a_pid: u32, k: &str) {
    stop_pid(a_pid);
    let mut c = proxy.raw();
    let r = c.call(&["GET", k]);
    assert_eq!(r, Resp::Error(b"ERR Connection timed out".to_vec()));
    wait_stats(proxy, "the ejection", |j| stat(j, "server_ejects") >= 1);
}

/// The whole redis scenario, with the probe checks: while A is stopped its
/// probes fail (logged), it stays ejected and gets no client request; once
/// resumed it passes, `k` is moved back (never read as `v1` on the way),
/// `k2` deleted on it, B keeps neither; other keys are served without error
/// throughout.
#[test]
fn redis_keys_written_during_the_outage_are_moved_back() {
    let mut backends = Redis::start_many(2);
    let b = backends.pop().expect("two");
    let a = backends.pop().expect("two");
    let proxy = Proxy::start_pools(&[opts(PoolConf::redis(&[&a, &b]), &[])], &STATS_ARGS);
    let cand = candidates("rk", 64);
    let on_a = keys_landing(&proxy, &a, &cand);
    let on_b: Vec<String> = cand.iter().filter(|k| !on_a.contains(k)).cloned().collect();
    assert!(on_a.len() >= 3 && !on_b.is_empty(), "{on_a:?}");
    let (k, k2, k3) = (&on_a[0], &on_a[1], &on_a[2]);
    let other = &on_b[0];
    let mut c = proxy.raw();
    for key in [k, k2, k3] {
        assert_eq!(c.call(&["SET", key, "v1"]), Resp::ok());
    }
    assert_eq!(c.call(&["SET", other, "o"]), Resp::ok());
    let a_name = a.addr();

    stop_and_eject(&proxy, a.pid(), k);
    let json = proxy.stats();
    let a_requests = server_stat(&json, &a_name, "requests");
    assert_eq!(c.call(&["SET", k, "v2"]), Resp::ok());
    assert_eq!(c.call(&["DEL", k2]), Resp::Int(0), "k2 is not on B");
    // A hash of its own: a non-string value moves too.
    assert_eq!(c.call(&["HSET", k3, "f", "h2"]), Resp::Int(1));
    assert_eq!(c.call(&["GET", k]), Resp::bulk("v2"));
    assert_eq!(b.get(k.as_bytes()), Some(b"v2".to_vec()));

    // A is still stopped at its retry time: the probe times out, it stays
    // out, and its keys keep going to B.
    let log_has = |n: usize| proxy.log_text().matches("failed its probe").count() >= n;
    wait_for("two failed probes", || log_has(2));
    assert_eq!(c.call(&["GET", k]), Resp::bulk("v2"));
    let json = proxy.stats();
    assert_eq!(
        server_stat(&json, &a_name, "requests"),
        a_requests,
        "a client request went to the stopped server: {json}"
    );
    assert_eq!(stat(&json, "server_ejects"), 1, "{json}");

    signal_pid(a.pid(), libc::SIGCONT);
    // From now on: k is v2 at every read, until well after the repair.
    let deadline = Instant::now() + WAIT;
    let mut done_at: Option<Instant> = None;
    let mut reads = 0;
    loop {
        assert_eq!(c.call(&["GET", k]), Resp::bulk("v2"), "read {reads}");
        assert_eq!(c.call(&["GET", k2]), Resp::nil(), "read {reads}");
        assert_eq!(c.call(&["GET", other]), Resp::bulk("o"), "read {reads}");
        reads += 1;
        let json = proxy.stats();
        if done_at.is_none() && stat(&json, "repaired_keys") >= 3 && stat(&json, "repairing") == 0 {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|t| t.elapsed() > Duration::from_millis(300)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no repair; stats {json}\nlog:\n{}",
            proxy.log_text()
        );
    }
    // A holds the new values, B none of them.
    assert_eq!(a.get(k.as_bytes()), Some(b"v2".to_vec()));
    assert!(!a.has(k2.as_bytes()), "k2 still on A");
    assert!(!b.has(k.as_bytes()), "k still on B");
    assert!(!b.has(k3.as_bytes()), "k3 still on B");
    let mut direct = a.raw();
    assert_eq!(direct.call(&["HGET", k3, "f"]), Resp::bulk("h2"));
    assert_eq!(direct.call(&["TYPE", k3]), Resp::Status(b"hash".to_vec()));
    assert_eq!(c.call(&["HGET", k3, "f"]), Resp::bulk("h2"));
    // Served by A again.
    let json = proxy.stats();
    assert!(
        server_stat(&json, &a_name, "requests") > a_requests,
        "{json}"
    );
    assert_eq!(
        stat(&json, "forward_error"),
        1,
        "only the timed-out GET: {json}"
    );
    let log = proxy.log_text();
    assert!(
        log.contains("passed its probe and rejoins, 3 keys"),
        "{log}"
    );
    assert!(
        log.contains("repaired after its ejection: 2 keys moved back, 1 deleted"),
        "{log}"
    );
}

/// A redis-server on `port` (to restart a killed backend empty at the same
/// address), killed on drop.
struct PortRedis {
    _child: ChildGuard,
    _dir: TempDir,
}

fn redis_on_port(port: u16) -> PortRedis {
    let dir = TempDir::new("repair-redis");
    let port_s = port.to_string();
    let dir_s = dir.path().to_string_lossy().into_owned();
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
            "--dir",
            &dir_s,
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
    assert!(up && child.exited().is_none(), "redis-server on :{port}");
    PortRedis {
        _child: child,
        _dir: dir,
    }
}

/// A killed server restarted empty on the same port passes the probe and
/// rejoins; the key written during its outage is moved to it.
#[test]
fn redis_restarted_empty_rejoins_with_the_outage_writes() {
    let mut backends = Redis::start_many(2);
    let b = backends.pop().expect("two");
    let mut a = backends.pop().expect("two");
    let proxy = Proxy::start_pools(&[opts(PoolConf::redis(&[&a, &b]), &[])], &STATS_ARGS);
    let on_a = keys_landing(&proxy, &a, &candidates("re", 32));
    let k = on_a.first().expect("a key on A").clone();
    let a_port = a.port();
    let mut c = proxy.raw();
    assert_eq!(c.call(&["SET", &k, "v1"]), Resp::ok());
    a.kill();
    // The proxy sees its connection to A end (EOF, or a refused connect on
    // the next request): ejected.
    wait_until(WAIT, || {
        let _ = c.call(&["GET", &k]);
        stat(&proxy.stats(), "server_ejects") >= 1
    });
    assert_eq!(c.call(&["SET", &k, "v2"]), Resp::ok(), "rerouted to B");
    wait_for("a failed probe", || {
        proxy.log_text().contains("failed its probe")
    });
    let _back = redis_on_port(a_port);
    wait_repaired(&proxy, 1);
    let mut direct = RawConn::connect(a_port);
    assert_eq!(direct.call(&["GET", &k]), Resp::bulk("v2"));
    assert!(!b.has(k.as_bytes()));
    assert_eq!(c.call(&["GET", &k]), Resp::bulk("v2"));
}

/// More keys written during the outage than `eject_repair_keys`: before
/// rejoining, the proxy scans B for A's keys and moves every one back; the
/// delete it could not record is logged.
#[test]
fn redis_overflow_scans_the_fallbacks() {
    let mut backends = Redis::start_many(2);
    let b = backends.pop().expect("two");
    let a = backends.pop().expect("two");
    let pool = opts(PoolConf::redis(&[&a, &b]), &[("eject_repair_keys", "2")]);
    let proxy = Proxy::start_pools(&[pool], &STATS_ARGS);
    let on_a = keys_landing(&proxy, &a, &candidates("ov", 64));
    assert!(on_a.len() >= 7, "{on_a:?}");
    let mut c = proxy.raw();
    for k in &on_a {
        assert_eq!(c.call(&["SET", k, "v1"]), Resp::ok());
    }
    stop_and_eject(&proxy, a.pid(), &on_a[0]);
    let written = &on_a[..6];
    for k in written {
        assert_eq!(c.call(&["SET", k, "v2"]), Resp::ok());
    }
    // Over the limit: not recorded (its old value may come back; the log
    // says so).
    assert_eq!(c.call(&["DEL", &on_a[6]]), Resp::Int(0));
    signal_pid(a.pid(), libc::SIGCONT);
    wait_repaired(&proxy, 6);
    for k in written {
        assert_eq!(c.call(&["GET", k]), Resp::bulk("v2"), "{k}");
        assert_eq!(a.get(k.as_bytes()), Some(b"v2".to_vec()), "{k} on A");
        assert!(!b.has(k.as_bytes()), "{k} still on B");
    }
    let log = proxy.log_text();
    assert!(log.contains("scanning the other servers"), "{log}");
    assert!(
        log.contains("5 writes (1 deletes) over eject_repair_keys were not recorded"),
        "{log}"
    );
}

/// `set key 0 0 <len>` through `c`.
fn mc_set(c: &mut RawConn, key: &str, value: &str) {
    c.send(format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes());
    assert_eq!(c.recv_line(), b"STORED\r\n", "set {key}");
}

fn mc_delete(c: &mut RawConn, key: &str) -> Vec<u8> {
    c.send(format!("delete {key}\r\n").as_bytes());
    c.recv_line()
}

/// Keys of `cand` that land on `on` when set through the proxy.
fn mc_keys_landing(proxy: &Proxy, on: &Memcached, cand: &[String]) -> Vec<String> {
    let mut c = proxy.raw();
    let mut found = Vec::new();
    for k in cand {
        mc_set(&mut c, k, "probe");
        if on.get(k.as_bytes()).is_some() {
            found.push(k.clone());
        }
        assert_eq!(mc_delete(&mut c, k), b"DELETED\r\n");
    }
    found
}

fn mc_stop_and_eject(proxy: &Proxy, pid: u32, k: &str) {
    stop_pid(pid);
    let mut c = proxy.raw();
    c.send(format!("get {k}\r\n").as_bytes());
    assert_eq!(c.recv_line(), b"SERVER_ERROR Connection timed out\r\n");
    wait_stats(proxy, "the ejection", |j| stat(j, "server_ejects") >= 1);
}

/// memcached: a key written during the outage reads `v2` or misses, never
/// `v1`; one deleted misses; after the repair neither A nor B holds them.
#[test]
fn memcached_keys_written_during_the_outage_never_read_old() {
    let b = Memcached::start();
    let a = Memcached::start();
    let proxy = Proxy::start_pools(&[opts(PoolConf::memcache(&[&a, &b]), &[])], &STATS_ARGS);
    let on_a = mc_keys_landing(&proxy, &a, &candidates("mk", 64));
    assert!(on_a.len() >= 2, "{on_a:?}");
    let (k, k2) = (&on_a[0], &on_a[1]);
    let mut c = proxy.raw();
    mc_set(&mut c, k, "v1");
    mc_set(&mut c, k2, "v1");
    mc_stop_and_eject(&proxy, a.pid(), k);
    mc_set(&mut c, k, "v2");
    assert_eq!(mc_delete(&mut c, k2), b"NOT_FOUND\r\n");
    wait_for("a failed probe", || {
        proxy.log_text().contains("failed its probe")
    });
    signal_pid(a.pid(), libc::SIGCONT);
    let deadline = Instant::now() + WAIT;
    loop {
        let got = mc_get(&mut c, k.as_bytes());
        assert!(
            got.is_none() || got.as_deref() == Some(b"v2".as_slice()),
            "{k} read {got:?}"
        );
        assert_eq!(mc_get(&mut c, k2.as_bytes()), None);
        let json = proxy.stats();
        if stat(&json, "repaired_keys") >= 2 && stat(&json, "repairing") == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no repair: {json}");
    }
    assert_eq!(a.get(k.as_bytes()), None, "{k} on A");
    assert_eq!(a.get(k2.as_bytes()), None, "{k2} on A");
    assert_eq!(b.get(k.as_bytes()), None, "{k} on B");
    assert_eq!(mc_get(&mut c, k.as_bytes()), None);
    // A serves again.
    mc_set(&mut c, k, "v3");
    assert_eq!(a.get(k.as_bytes()), Some(b"v3".to_vec()));
}

/// memcached overflow: flush_all on the returning server before it
/// rejoins (logged), so none of its old values can be read.
#[test]
fn memcached_overflow_flushes_the_returning_server() {
    let b = Memcached::start();
    let a = Memcached::start();
    let pool = opts(PoolConf::memcache(&[&a, &b]), &[("eject_repair_keys", "1")]);
    let proxy = Proxy::start_pools(&[pool], &STATS_ARGS);
    let on_a = mc_keys_landing(&proxy, &a, &candidates("mo", 64));
    assert!(on_a.len() >= 4, "{on_a:?}");
    let mut c = proxy.raw();
    for k in &on_a {
        mc_set(&mut c, k, "v1");
    }
    mc_stop_and_eject(&proxy, a.pid(), &on_a[0]);
    for k in &on_a[..3] {
        mc_set(&mut c, k, "v2");
    }
    signal_pid(a.pid(), libc::SIGCONT);
    wait_repaired(&proxy, 1);
    for k in &on_a {
        assert_eq!(a.get(k.as_bytes()), None, "{k} survived the flush");
        let got = mc_get(&mut c, k.as_bytes());
        assert_ne!(got.as_deref(), Some(b"v1".as_slice()), "{k}");
    }
    let log = proxy.log_text();
    assert!(log.contains("flush_all on it before it rejoins"), "{log}");
}

/// Without the new keys a pool behaves as before but for the probe:
/// `eject_repair: false` records nothing, so the stale value comes back
/// (the 0.5.0 behaviour the repair exists to prevent).
#[test]
fn without_repair_the_old_value_returns() {
    let mut backends = Redis::start_many(2);
    let b = backends.pop().expect("two");
    let a = backends.pop().expect("two");
    let pool = opts(PoolConf::redis(&[&a, &b]), &[("eject_repair", "false")]);
    let proxy = Proxy::start_pools(&[pool], &STATS_ARGS);
    let on_a = keys_landing(&proxy, &a, &candidates("nr", 32));
    let k = on_a.first().expect("a key on A").clone();
    let mut c = proxy.raw();
    assert_eq!(c.call(&["SET", &k, "v1"]), Resp::ok());
    stop_and_eject(&proxy, a.pid(), &k);
    assert_eq!(c.call(&["SET", &k, "v2"]), Resp::ok());
    signal_pid(a.pid(), libc::SIGCONT);
    wait_for("the rejoin", || {
        proxy.log_text().contains("passed its probe and rejoins")
    });
    assert_eq!(c.call(&["GET", &k]), Resp::bulk("v1"));
    let json = proxy.stats();
    assert_eq!(stat(&json, "repaired_keys"), 0, "{json}");
}

/// A fallback that refuses MIGRATE (renamed away): the key goes back by
/// DUMP/PTTL and RESTORE REPLACE instead, its expiry with it.
#[test]
fn redis_dump_restore_when_migrate_is_refused() {
    let a = Redis::start();
    let b = Redis::start_with(&["--rename-command", "MIGRATE", ""]);
    let proxy = Proxy::start_pools(&[opts(PoolConf::redis(&[&a, &b]), &[])], &STATS_ARGS);
    let on_a = keys_landing(&proxy, &a, &candidates("dr", 64));
    assert!(on_a.len() >= 2, "{on_a:?}");
    let (k, k2) = (&on_a[0], &on_a[1]);
    let mut c = proxy.raw();
    assert_eq!(c.call(&["SET", k, "v1"]), Resp::ok());
    assert_eq!(c.call(&["SET", k2, "v1"]), Resp::ok());
    stop_and_eject(&proxy, a.pid(), k);
    assert_eq!(c.call(&["SET", k, "v2", "PX", "600000"]), Resp::ok());
    assert_eq!(c.call(&["SET", k2, "w2"]), Resp::ok());
    signal_pid(a.pid(), libc::SIGCONT);
    wait_repaired(&proxy, 2);
    assert_eq!(c.call(&["GET", k]), Resp::bulk("v2"));
    let mut direct = a.raw();
    assert_eq!(direct.call(&["GET", k]), Resp::bulk("v2"));
    assert_eq!(direct.call(&["GET", k2]), Resp::bulk("w2"));
    match direct.call(&["PTTL", k]) {
        Resp::Int(ms) => assert!(ms > 500_000 && ms <= 600_000, "PTTL {ms}"),
        other => panic!("PTTL {other:?}"),
    }
    assert_eq!(direct.call(&["PTTL", k2]), Resp::Int(-1));
    assert!(!b.has(k.as_bytes()) && !b.has(k2.as_bytes()));
    let log = proxy.log_text();
    assert!(log.contains("DUMP and RESTORE instead"), "{log}");
}
