//! Redis Sentinel (issue 16): pools with `sentinels:` follow master
//! changes. Real processes: redis-server masters and replicas, three
//! `redis-server --sentinel` with short timeouts, and the built proxy; plus
//! an in-test fake sentinel that lies, to check that nothing it says can
//! hurt the proxy.
//!
//! These tests are slow by nature (sentinels discover each other and the
//! replicas in a few seconds, a failover takes a few more): each takes 10
//! to 40 s, and they run in parallel with everything else under
//! `cargo test --release` (the README says how to run them alone).

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// Bound on the sentinels' own work: discovery, election, promotion.
const SENTINEL_WAIT: Duration = Duration::from_secs(40);
/// How soon after a switch the proxy must send writes to the new master.
const FOLLOW: Duration = Duration::from_secs(5);

/// Two masters (`m1`, `m2`), a replica of each, three sentinels.
struct Cluster {
    masters: Vec<Redis>,
    replicas: Vec<Redis>,
    sentinels: Vec<Sentinel>,
}

const NAMES: [&str; 2] = ["m1", "m2"];

impl Cluster {
    /// `pw`: the masters' password (replicas get it as `masterauth`);
    /// `sentinel_pw`: the sentinels' own.
    fn start(pw: Option<&str>, sentinel_pw: Option<&str>) -> Cluster {
        let mut extra: Vec<&str> = Vec::new();
        if let Some(pw) = pw {
            // Every node may become a replica after a failover.
            extra.extend(["--requirepass", pw, "--masterauth", pw]);
        }
        let masters: Vec<Redis> = (0..2).map(|_| Redis::start_with(&extra)).collect();
        let replicas: Vec<Redis> = masters
            .iter()
            .map(|m| {
                let port = m.port().to_string();
                let mut args = extra.clone();
                args.extend(["--replicaof", "127.0.0.1", &port]);
                Redis::start_with(&args)
            })
            .collect();
        for r in &replicas {
            assert!(
                wait_until(SENTINEL_WAIT, || info(r, "master_link_status") == "up"),
                "replica in sync"
            );
        }
        let monitored: Vec<(&str, &Redis)> = NAMES.iter().copied().zip(&masters).collect();
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::start(&monitored, 2, pw, sentinel_pw))
            .collect();
        // A forced failover needs a known replica; an elected one needs the
        // other sentinels.
        let ready = wait_until(SENTINEL_WAIT, || {
            sentinels
                .iter()
                .all(|s| NAMES.iter().all(|n| s.known(n) == (1, 2)))
        });
        assert!(
            ready,
            "sentinels did not discover the replicas and each other"
        );
        Cluster {
            masters,
            replicas,
            sentinels,
        }
    }

    /// The pool: `m1` and `m2` at the masters' addresses, every sentinel.
    fn pool(&self) -> PoolConf {
        let mut p = PoolConf::new("alpha", true);
        for (name, m) in NAMES.iter().zip(&self.masters) {
            p = p.server(&format!("{} {name}", m.server_line(1)));
        }
        for s in &self.sentinels {
            p = p.sentinel(&s.line());
        }
        p
    }

    /// Waits until every write so far reached the replicas.
    fn sync_replicas(&self, db: i64) {
        for m in &self.masters {
            let mut c = m.client_db(db);
            let _: () = redis::cmd("SET")
                .arg("__sync")
                .arg("1")
                .query(&mut c)
                .expect("SET on master");
            let n: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(5000)
                .query(&mut c)
                .expect("WAIT");
            assert_eq!(n, 1, "replica acknowledged");
        }
    }

    /// Waits until sentinel `via` reports master `name` at `port`.
    fn wait_master(&self, via: usize, name: &str, port: u16) -> Instant {
        let ok = wait_until(SENTINEL_WAIT, || {
            self.sentinels[via].master_port(name) == Some(port)
        });
        assert!(ok, "sentinel did not promote {name} to port {port}");
        Instant::now()
    }
}

/// A field of `INFO replication` on a server.
fn info(r: &Redis, field: &str) -> String {
    let mut c = r.client();
    let text: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut c)
        .expect("INFO");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn stat(p: &Proxy, name: &str) -> Vec<i64> {
    stat_values(&p.stats(), name)
}

fn wait_stat(p: &Proxy, name: &str, want: i64) {
    let ok = wait_until(WAIT, || stat(p, name) == [want]);
    assert!(ok, "{name} never became {want}: {:?}", stat(p, name));
}

/// Writes `keys` through the proxy; true if every one got `+OK`.
fn write_all(p: &Proxy, keys: &[String]) -> bool {
    let mut c = p.raw();
    keys.iter()
        .all(|k| c.call(&["SET", k.as_str(), k.as_str()]) == Resp::ok())
}

/// Every key reads back through the proxy with its own name as value.
fn assert_read_back(p: &Proxy, keys: &[String]) {
    let mut c = p.raw();
    for k in keys {
        assert_eq!(c.call(&["GET", k.as_str()]), Resp::bulk(k), "key {k}");
    }
}

/// Writes batches of fresh keys until, within [`FOLLOW`], a whole batch
/// succeeds, every key of it is on `new_master` or on one of `others`, and
/// some are on `new_master`. Returns how long that took.
fn writes_follow(p: &Proxy, db: i64, new_master: &Redis, others: &[&Redis], tag: &str) -> Duration {
    let start = Instant::now();
    let mut round = 0;
    let ok = wait_until(FOLLOW, || {
        round += 1;
        let keys: Vec<String> = (0..20).map(|i| format!("{i}:{round}:{tag}")).collect();
        if !write_all(p, &keys) {
            return false;
        }
        let on_new = keys
            .iter()
            .filter(|k| new_master.get_db(db, k.as_bytes()).is_some())
            .count();
        let elsewhere = keys
            .iter()
            .filter(|k| others.iter().any(|o| o.get_db(db, k.as_bytes()).is_some()))
            .count();
        on_new > 0 && on_new + elsewhere == keys.len()
    });
    assert!(ok, "writes did not reach the new master within {FOLLOW:?}");
    start.elapsed()
}

/// The keys written before a failover, split by the master that holds them.
/// (Keys vary in their first bytes: with fnv1a_64, keys that differ only at
/// the end hash close together and can all land on one server.)
fn write_and_locate(p: &Proxy, c: &Cluster, db: i64) -> (Vec<String>, [Vec<String>; 2]) {
    let keys: Vec<String> = (0..100).map(|i| format!("{i}:before")).collect();
    assert!(write_all(p, &keys), "writes before the failover");
    let mut by_master: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for k in &keys {
        let at: Vec<usize> = (0..2)
            .filter(|&i| c.masters[i].get_db(db, k.as_bytes()).is_some())
            .collect();
        assert_eq!(at.len(), 1, "key {k} on exactly one master");
        by_master[at[0]].push(k.clone());
    }
    assert!(
        by_master.iter().all(|v| !v.is_empty()),
        "keys on both masters: {by_master:?}"
    );
    (keys, by_master)
}

fn role(r: &Redis) -> String {
    info(r, "role")
}

#[test]
fn forced_failover_moves_writes_to_the_new_master() {
    let c = Cluster::start(None, None);
    let pool = c.pool().opt("redis_db", "1");
    let p = Proxy::start_pools(&[pool], &["-i", "100"]);
    wait_stat(&p, "sentinel_connected", 1);
    let (keys, by_master) = write_and_locate(&p, &c, 1);
    c.sync_replicas(1);
    let m2_keys = c.masters[1].dbsize_db(1);

    c.sentinels[0].failover("m1");
    let switched = c.wait_master(0, "m1", c.replicas[0].port());
    let took = writes_follow(&p, 1, &c.replicas[0], &[&c.masters[1]], "after");
    eprintln!(
        "forced failover: writes on the new master {:?} after the sentinel reported it ({:?} since)",
        took,
        switched.elapsed()
    );
    assert_read_back(&p, &keys);
    assert!(by_master[0]
        .iter()
        .all(|k| c.replicas[0].get_db(1, k.as_bytes()).is_some()));
    // The other master is untouched: still a master, never switched, and
    // it holds its keys plus the new ones routed to it.
    assert_eq!(role(&c.masters[1]), "master");
    assert!(c.masters[1].dbsize_db(1) >= m2_keys);
    wait_stat(&p, "master_switches", 1);
    let log = p.log_text();
    assert!(log.contains("master 'm1' moved from"), "{log}");
    assert!(!log.contains("master 'm2' moved"), "{log}");
}

/// A sentinel named by host name: looked up off the event loop (as server
/// names are), then used like one given by address.
#[test]
fn sentinel_named_by_host_name() {
    let m = Redis::start();
    let s = Sentinel::start(&[("m1", &m)], 1, None, None);
    let pool = PoolConf::new("alpha", true)
        .server(&format!("{} m1", m.server_line(1)))
        .sentinel(&format!("localhost:{}:1", s.port()));
    let p = Proxy::start_pools(&[pool], &["-i", "100"]);
    wait_stat(&p, "sentinel_connected", 1);
    let mut c = p.raw();
    assert_eq!(c.call(&["SET", "sh", "1"]), Resp::ok());
    assert_eq!(m.get(b"sh"), Some(b"1".to_vec()));
    let log = p.log_text();
    assert!(!log.contains("address resolution failed"), "{log}");
}

#[test]
fn sentinels_die_one_by_one_and_traffic_goes_on() {
    let c = Cluster::start(None, Some("spw"));
    let pool = c.pool().opt("sentinel_auth", "spw");
    let mut p = Proxy::start_pools(&[pool], &["-i", "100"]);
    wait_stat(&p, "sentinel_connected", 1);
    let (keys, _) = write_and_locate(&p, &c, 0);
    c.sync_replicas(0);

    // The sentinel in use dies: the proxy moves to the next one.
    let mut sentinels = c.sentinels;
    let mut first = sentinels.remove(0);
    let first_port = first.port();
    first.kill();
    let next = format!("through sentinel 127.0.0.1:{}", sentinels[0].port());
    let moved = wait_until(WAIT, || {
        let log = p.log_text();
        log.contains(&format!("lost sentinel 127.0.0.1:{first_port}")) && log.contains(&next)
    });
    assert!(moved, "proxy did not move to the next sentinel");
    wait_stat(&p, "sentinel_connected", 1);

    // It follows a failover announced by that one.
    sentinels[0].failover("m2");
    let c_masters = &c.masters;
    let ok = wait_until(SENTINEL_WAIT, || {
        sentinels[0].master_port("m2") == Some(c.replicas[1].port())
    });
    assert!(ok, "m2 not promoted");
    let took = writes_follow(&p, 0, &c.replicas[1], &[&c_masters[0]], "after");
    eprintln!("failover after a sentinel died: writes followed in {took:?}");

    // No sentinel left: the last known masters keep serving.
    for s in &mut sentinels {
        s.kill();
    }
    wait_stat(&p, "sentinel_connected", 0);
    // Retries go on with back-off, logged once.
    std::thread::sleep(Duration::from_millis(1500));
    let log = p.log_text();
    assert_eq!(log.matches("no sentinel reachable").count(), 1, "{log}");
    assert_read_back(&p, &keys);
    let late: Vec<String> = (0..50).map(|i| format!("{i}:late")).collect();
    assert!(write_all(&p, &late));
    assert!(late.iter().all(|k| {
        c.replicas[1].get(k.as_bytes()).is_some() || c.masters[0].get(k.as_bytes()).is_some()
    }));
    assert_read_back(&p, &late);
    p.assert_alive();
}

#[test]
fn killed_master_is_replaced_by_the_sentinels_own_detection() {
    let c = Cluster::start(Some("mpw"), None);
    // Ejection with a long retry: only the switch can bring m1 back soon.
    let pool = c
        .pool()
        .opt("redis_auth", "mpw")
        .opt("auto_eject_hosts", "true")
        .opt("server_failure_limit", "1")
        .opt("server_retry_timeout", "60000");
    let p = Proxy::start_pools(&[pool], &["-i", "100"]);
    wait_stat(&p, "sentinel_connected", 1);
    // Clients authenticate to the proxy with the masters' password.
    let keys: Vec<String> = (0..100).map(|i| format!("{i}:before")).collect();
    let mut conn = p.raw();
    assert_eq!(conn.call(&["AUTH", "mpw"]), Resp::ok());
    for k in &keys {
        assert_eq!(conn.call(&["SET", k.as_str(), k.as_str()]), Resp::ok());
    }
    let m1_keys: Vec<String> = keys
        .iter()
        .filter(|k| c.masters[0].get(k.as_bytes()).is_some())
        .cloned()
        .collect();
    assert!(!m1_keys.is_empty() && m1_keys.len() < keys.len());
    c.sync_replicas(0);

    let mut masters = c.masters;
    masters[0].kill();
    let killed = Instant::now();
    // The dead master fails a request and is ejected.
    let mut conn = p.raw();
    assert_eq!(conn.call(&["AUTH", "mpw"]), Resp::ok());
    let _ = conn.call(&["GET", m1_keys[0].as_str()]);
    wait_stat(&p, "server_ejects", 1);

    let ok = wait_until(SENTINEL_WAIT, || {
        c.sentinels[0].master_port("m1") == Some(c.replicas[0].port())
    });
    assert!(ok, "sentinels did not promote the replica of m1");
    let promoted = killed.elapsed();
    // Writes land on the promoted replica within FOLLOW.
    let start = Instant::now();
    let mut round = 0;
    let follow = wait_until(FOLLOW, || {
        round += 1;
        let mut conn = p.raw();
        if conn.call(&["AUTH", "mpw"]) != Resp::ok() {
            return false;
        }
        let keys: Vec<String> = (0..20).map(|i| format!("{i}:{round}:after")).collect();
        if !keys
            .iter()
            .all(|k| conn.call(&["SET", k.as_str(), k.as_str()]) == Resp::ok())
        {
            return false;
        }
        keys.iter()
            .any(|k| c.replicas[0].get(k.as_bytes()).is_some())
    });
    assert!(follow, "writes did not reach the promoted replica");
    eprintln!(
        "SIGKILL failover: promoted {promoted:?} after the kill, writes followed {:?} later",
        start.elapsed()
    );
    let mut conn = p.raw();
    assert_eq!(conn.call(&["AUTH", "mpw"]), Resp::ok());
    for k in &keys {
        assert_eq!(conn.call(&["GET", k.as_str()]), Resp::bulk(k), "key {k}");
    }
    let mut client = p.client_auth("mpw");
    let pong: String = redis::cmd("PING").query(&mut client).expect("PING");
    assert_eq!(pong, "PONG");
    // The stats show the switch at the next publication (`-i`), which
    // may not have come yet when the writes already follow.
    let switched = wait_until(WAIT, || stat(&p, "master_switches")[0] >= 1);
    assert!(
        switched,
        "master_switches: {:?}",
        stat(&p, "master_switches")
    );
}

// ---------------------------------------------------------------------------
// A fake sentinel that says what the test wants, lies included.

struct FakeSentinel {
    port: u16,
    /// Reply to `get-master-addr-by-name`, by name (absent: null).
    answers: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    subscribers: Arc<Mutex<Vec<TcpStream>>>,
    subscribed: Arc<AtomicUsize>,
}

impl FakeSentinel {
    fn start() -> FakeSentinel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake sentinel");
        let port = listener.local_addr().expect("addr").port();
        let f = FakeSentinel {
            port,
            answers: Arc::default(),
            subscribers: Arc::default(),
            subscribed: Arc::default(),
        };
        let (answers, subs, n) = (
            f.answers.clone(),
            f.subscribers.clone(),
            f.subscribed.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (answers, subs, n) = (answers.clone(), subs.clone(), n.clone());
                std::thread::spawn(move || serve(conn, &answers, &subs, &n));
            }
        });
        f
    }

    fn line(&self) -> String {
        format!("127.0.0.1:{}:1", self.port)
    }

    fn answer(&self, name: &str, host: &str, port: &str) {
        let r = Resp::array(vec![Resp::bulk(host), Resp::bulk(port)]);
        self.answers
            .lock()
            .expect("lock")
            .insert(name.to_string(), r.encode());
    }

    /// Sends raw bytes to every subscriber.
    fn push_raw(&self, bytes: &[u8]) {
        for s in self.subscribers.lock().expect("lock").iter_mut() {
            let _ = s.write_all(bytes);
        }
    }

    fn push(&self, payload: &str) {
        let msg = Resp::array(vec![
            Resp::bulk("message"),
            Resp::bulk("+switch-master"),
            Resp::bulk(payload),
        ]);
        self.push_raw(&msg.encode());
    }
}

fn serve(
    mut s: TcpStream,
    answers: &Mutex<HashMap<String, Vec<u8>>>,
    subs: &Mutex<Vec<TcpStream>>,
    subscribed: &AtomicUsize,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Ok(Some((req, n))) = parse_resp(&buf) {
            buf.drain(..n);
            let Resp::Array(Some(args)) = req else {
                return;
            };
            let arg = |i: usize| match args.get(i) {
                Some(Resp::Bulk(Some(b))) => String::from_utf8_lossy(b).to_lowercase(),
                _ => String::new(),
            };
            let reply = match (arg(0).as_str(), arg(1).as_str()) {
                ("auth", _) => Resp::ok().encode(),
                ("subscribe", _) => {
                    let r = Resp::array(vec![
                        Resp::bulk("subscribe"),
                        Resp::bulk("+switch-master"),
                        Resp::Int(1),
                    ]);
                    if let Ok(clone) = s.try_clone() {
                        subs.lock().expect("lock").push(clone);
                    }
                    let _ = s.write_all(&r.encode());
                    subscribed.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                ("sentinel", "get-master-addr-by-name") => {
                    let name = match args.get(2) {
                        Some(Resp::Bulk(Some(b))) => String::from_utf8_lossy(b).into_owned(),
                        _ => String::new(),
                    };
                    answers
                        .lock()
                        .expect("lock")
                        .get(&name)
                        .cloned()
                        .unwrap_or_else(|| b"*-1\r\n".to_vec())
                }
                _ => b"-ERR unknown command\r\n".to_vec(),
            };
            if s.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

#[test]
fn lies_are_ignored_and_reloads_add_and_remove_sentinels() {
    let (a, b, m2) = (Redis::start(), Redis::start(), Redis::start());
    let fake = FakeSentinel::start();
    let base = PoolConf::new("alpha", true)
        .server(&format!("{} m1", a.server_line(1)))
        .server(&format!("{} m2", m2.server_line(1)));
    let mut p = Proxy::start_pools(std::slice::from_ref(&base), &["-i", "100"]);
    let keys: Vec<String> = (0..60).map(|i| format!("{i}:k")).collect();
    assert!(write_all(&p, &keys));
    let m1_keys: Vec<String> = keys
        .iter()
        .filter(|k| a.get(k.as_bytes()).is_some())
        .cloned()
        .collect();
    assert!(!m1_keys.is_empty() && m1_keys.len() < keys.len());
    assert_eq!(stat(&p, "sentinel_connected"), [0]);

    // m1 where it is; m2's answer is a lie (port out of range), ignored.
    fake.answer("m1", "127.0.0.1", &a.port().to_string());
    fake.answer("m2", "127.0.0.1", "99999");
    let with = base.clone().sentinel(&fake.line());
    let line = p.reload(&with.yaml(p.port()));
    assert!(line.contains("reloaded configuration"), "{line}");
    wait_stat(&p, "sentinel_connected", 1);
    assert!(wait_until(WAIT, || p
        .log_text()
        .contains("ignored the sentinel's answer for master 'm2'")));

    // Garbage pushes, an unknown name, a bad address: all ignored.
    fake.push("garbage");
    fake.push("zz 127.0.0.1 1 127.0.0.1 2");
    fake.push(&format!("m1 127.0.0.1 {} 127.0.0.1 0", a.port()));
    fake.push(&format!("m1 127.0.0.1 {} 127.0.0.1", a.port()));
    fake.push_raw(&Resp::array(vec![Resp::Int(1), Resp::nil()]).encode());
    fake.push_raw(b"+hello\r\n:7\r\n*-1\r\n");
    assert!(wait_until(WAIT, || p
        .log_text()
        .contains("+switch-master for unknown master 'zz' ignored")));
    assert!(write_all(&p, &keys));
    assert!(m1_keys.iter().all(|k| a.get(k.as_bytes()).is_some()));
    assert_eq!(stat(&p, "master_switches"), [0]);
    p.assert_alive();

    // A true switch: m1's keys go to b from now on; m2 stays where it is.
    fake.answer("m1", "127.0.0.1", &b.port().to_string());
    fake.push(&format!("m1 127.0.0.1 {} 127.0.0.1 {}", a.port(), b.port()));
    wait_stat(&p, "master_switches", 1);
    assert!(write_all(&p, &keys));
    assert!(m1_keys.iter().all(|k| b.get(k.as_bytes()).is_some()));
    assert_eq!(b.dbsize() as usize, m1_keys.len());

    // Bytes that are not RESP: the proxy drops that sentinel and comes
    // back to it after a back-off.
    let before = fake.subscribed.load(Ordering::SeqCst);
    fake.push_raw(b"!not resp\r\n");
    assert!(wait_until(WAIT, || p.log_text().contains("lost sentinel")));
    assert!(wait_until(WAIT, || fake.subscribed.load(Ordering::SeqCst) > before));
    wait_stat(&p, "sentinel_connected", 1);
    // A reload that changes nothing else keeps the learnt address.
    let with_timeout = with.clone().opt("timeout", "2000");
    let line = p.reload(&with_timeout.yaml(p.port()));
    assert!(line.contains("changed: alpha"), "{line}");
    let fresh: Vec<String> = (0..60).map(|i| format!("{i}:fresh")).collect();
    assert!(write_all(&p, &fresh));
    assert_eq!(a.dbsize() as usize, m1_keys.len(), "nothing new on a");

    // Without sentinels again, m1 is back at its configured address.
    let line = p.reload(&base.yaml(p.port()));
    assert!(line.contains("reloaded configuration"), "{line}");
    wait_stat(&p, "sentinel_connected", 0);
    let again: Vec<String> = m1_keys.iter().map(|k| format!("again:{k}")).collect();
    assert!(write_all(&p, &again));
    let on_a = again
        .iter()
        .filter(|k| a.get(k.as_bytes()).is_some())
        .count();
    let on_b = again
        .iter()
        .filter(|k| b.get(k.as_bytes()).is_some())
        .count();
    assert!(on_a > 0 && on_b == 0, "on a {on_a}, on b {on_b}");
    assert_eq!(stat(&p, "master_switches"), [1]);
    p.assert_alive();
}

// ---------------------------------------------------------------------------
// -t

fn test_conf(text: &str) -> (i32, String) {
    let dir = TempDir::new("sentinel-t");
    let path = dir.write("nc.yml", text);
    let out = std::process::Command::new(nutcracker_bin())
        .args(["-t", "-c", path.to_str().expect("path")])
        .output()
        .expect("run nutcracker -t");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn test_conf_checks_sentinels() {
    let good = "alpha:\n  listen: 127.0.0.1:22121\n  redis: true\n  sentinel_auth: pw\n  servers:\n   - 127.0.0.1:6379:1 m1\n  sentinels:\n   - 127.0.0.1:26379:1\n   - localhost:26380:1\n";
    let (code, out) = test_conf(good);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("syntax is ok"), "{out}");
    let cases = [
        (
            good.replace("6379:1 m1", "6379:1"),
            "uses sentinels, so server '127.0.0.1:6379:1' needs a name",
        ),
        (
            good.replace("redis: true", "redis: false")
                .replace("  sentinel_auth: pw\n", ""),
            "directive \"sentinels:\" is only valid for a redis pool",
        ),
        (
            good.replace("localhost:26380", "127.0.0.1:26379"),
            "pool 'alpha' has sentinel '127.0.0.1:26379' twice",
        ),
        (
            good.replace("localhost:26380:1", "localhost:26380"),
            "directive \"sentinels\" has an invalid \"hostname:port:weight\" format string",
        ),
        (
            good.replace(
                "  sentinels:\n   - 127.0.0.1:26379:1\n   - localhost:26380:1\n",
                "",
            ),
            "directive \"sentinel_auth:\" is only valid with \"sentinels:\"",
        ),
    ];
    for (text, want) in cases {
        let (code, out) = test_conf(&text);
        assert_eq!(code, 1, "{text}\n{out}");
        assert!(out.contains(want), "{text}\nwant {want:?} in {out}");
        assert!(out.contains("line "), "{out}");
    }
}
