//! Hot reload on SIGUSR1, end to end: the built `nutcracker` in front of
//! real redis-server and memcached processes, its config file rewritten and
//! the signal sent while clients stay connected (docs/compatibility.md,
//! reload).
//!
//! Covers each kind of change (pool added, removed, moved to a new port,
//! switched between redis and memcached, servers and settings changed in
//! place), the files a reload must refuse (syntax error, missing, empty,
//! a port that cannot be bound), the ports of twemproxy's own
//! `tests/test_system/test_reload.py`, and 100 reloads under continuous
//! load with no client error and nothing leaked.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// Stats interval of every proxy here, so stats follow quickly.
const ARGS: &[&str] = &["-i", "100"];

fn yaml(pools: &[(&PoolConf, u16)]) -> String {
    pools.iter().map(|(p, port)| p.yaml(*port)).collect()
}

fn set(port: u16, k: &str, v: &str) {
    let mut c = RawConn::connect(port);
    assert_eq!(c.call(&["SET", k, v]), Resp::ok());
}

fn get(port: u16, k: &str) -> Resp {
    RawConn::connect(port).call(&["GET", k])
}

fn refused(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// Sockets among the open descriptors of `pid`.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

fn stat(p: &Proxy, name: &str) -> i64 {
    stat_values(&p.stats(), name).first().copied().unwrap_or(-1)
}

/// twemproxy's `test_pool_add_del`, on loopback: a second pool is added,
/// then removed while the first moves to a new port with preconnect; the
/// old ports refuse, the clients connected to them are closed, and the
/// proxy holds exactly the sockets it needs.
#[test]
fn pool_add_then_del_and_move_like_twemproxy() {
    let r = Redis::start_many(2);
    let pool = PoolConf::redis(&[&r[0], &r[1]])
        .opt("hash", "fnv1a_64")
        .opt("distribution", "modula");
    let mut p = Proxy::start_pools(std::slice::from_ref(&pool), ARGS);
    let port0 = p.port();
    set(port0, "k", "v");

    let port1 = free_port();
    let mut second = pool.clone();
    second.name = "beta".into();
    let line = p.reload(&yaml(&[(&pool, port0), (&second, port1)]));
    assert!(line.contains("added: beta"), "{line}");
    let mut c1 = RawConn::connect(port0);
    let mut c2 = RawConn::connect(port1);
    assert_eq!(c1.call(&["GET", "k"]), Resp::bulk("v"));
    assert_eq!(c2.call(&["GET", "k"]), Resp::bulk("v"));

    let port2 = free_port();
    let moved = pool.clone().opt("preconnect", "true");
    let line = p.reload(&yaml(&[(&moved, port2)]));
    assert!(line.contains("removed: beta"), "{line}");
    assert!(line.contains("changed: alpha"), "{line}");
    assert!(refused(port0), "the old port of alpha still accepts");
    assert!(refused(port1), "the removed pool still accepts");
    c1.expect_eof();
    c2.expect_eof();
    let mut c3 = RawConn::connect(port2);
    assert_eq!(c3.call(&["GET", "k"]), Resp::bulk("v"));
    // pool listener + stats listener + 2 preconnected backends + 1 client
    let pid = p.pid();
    assert!(
        wait_until(WAIT, || sockets(pid) == 5),
        "sockets: {} (want 5)",
        sockets(pid)
    );
}

/// twemproxy's `test_new_port`: the only pool moves; a new client on the
/// old port is refused, the new port serves the same data.
#[test]
fn new_port_like_twemproxy() {
    let r = Redis::start_many(2);
    let pool = PoolConf::redis(&[&r[0], &r[1]]).opt("timeout", "400");
    let mut p = Proxy::start_pools(std::slice::from_ref(&pool), ARGS);
    let old = p.port();
    set(old, "k", "v");
    let new = free_port();
    p.reload(&yaml(&[(&pool, new)]));
    assert!(refused(old));
    assert_eq!(get(new, "k"), Resp::bulk("v"));
}

/// A client pipelining on a pool whose servers change gets every reply, in
/// order, across the reload; it is never disconnected.
#[test]
fn pipelining_client_of_a_changed_pool_sees_every_reply() {
    let r = Redis::start_many(3);
    let before = PoolConf::redis(&[&r[0], &r[1]]).opt("hash", "md5");
    let after = PoolConf::redis(&[&r[0], &r[1], &r[2]]).opt("hash", "md5");
    let mut p = Proxy::start_pools(std::slice::from_ref(&before), ARGS);
    let port = p.port();
    let mut c = RawConn::connect(port);
    let mut w = c.writer();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            use std::io::Write;
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < 200_000 {
                let batch: Vec<u8> = (0..50)
                    .flat_map(|i| cmd(&["SET", &format!("k{}", n + i), "v"]))
                    .collect();
                if w.write_all(&batch).is_err() {
                    break;
                }
                n += 50;
                sent.store(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    wait_until(WAIT, || sent.load(Ordering::SeqCst) >= 500);
    p.reload(&yaml(&[(&after, port)]));
    wait_until(WAIT, || sent.load(Ordering::SeqCst) >= 2000);
    p.reload(&yaml(&[(&before, port)]));
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let total = sent.load(Ordering::SeqCst);
    for i in 0..total {
        let reply = c.recv_reply();
        assert_eq!(reply, Resp::ok(), "reply {i} of {total}");
    }
    assert_eq!(stat(&p, "client_err"), 0);
}

/// A server whose line did not change keeps its connections and counters;
/// a server that left has its connections closed once drained; a new one
/// takes its share.
#[test]
fn unchanged_servers_keep_connections_and_counters() {
    let r = Redis::start_many(3);
    let before = PoolConf::redis(&[&r[0], &r[1]]).opt("hash", "md5");
    let mut after = PoolConf::redis(&[&r[0], &r[2]]).opt("hash", "md5");
    after.name = before.name.clone();
    let mut p = Proxy::start_pools(std::slice::from_ref(&before), ARGS);
    let port = p.port();
    for i in 0..200 {
        set(port, &format!("key:{i}"), "x");
    }
    let kept = r[0].addr();
    let gone = r[1].addr();
    // Figures are published every interval (-i 100).
    assert!(wait_until(WAIT, || {
        let j = p.stats();
        server_stat_opt(&j, &kept, "requests").unwrap_or(-1)
            + server_stat_opt(&j, &gone, "requests").unwrap_or(-1)
            >= 200
    }));
    let requests_before = server_stat_opt(&p.stats(), &kept, "requests").unwrap_or(-1);
    let line = p.reload(&yaml(&[(&after, port)]));
    assert!(line.contains("changed: alpha"), "{line}");
    // The departed server's connection closes; the kept one's stays.
    assert!(
        wait_until(WAIT, || r[1].clients() == 0),
        "r1 still has clients"
    );
    assert!(r[0].clients() >= 1);
    for i in 200..400 {
        set(port, &format!("key:{i}"), "y");
    }
    assert!(r[2].dbsize() > 0, "the new server got nothing");
    wait_until(WAIT, || {
        server_stat_opt(&p.stats(), &kept, "requests").unwrap_or(-1) > requests_before
    });
    let json = p.stats();
    assert!(
        server_stat_opt(&json, &kept, "requests").unwrap_or(-1) > requests_before,
        "{json}"
    );
    assert!(!json.contains(&format!("\"{gone}\"")), "{json}");
}

/// A file that fails validation, a missing file, an empty file, a half
/// written file and a port in use: each is refused with the reason, and
/// the old pools keep serving.
#[test]
fn bad_files_change_nothing() {
    let r = Redis::start();
    let pool = PoolConf::redis(&[&r]);
    let mut p = Proxy::start_pools(std::slice::from_ref(&pool), ARGS);
    let port = p.port();
    set(port, "k", "v");
    let mut c = RawConn::connect(port);
    let good = yaml(&[(&pool, port)]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let mut second = pool.clone();
    second.name = "beta".into();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("syntax", Some(format!("{good}  listen: [oops\n"))),
        ("half", Some(good[..good.len() / 2].to_string())),
        ("empty", Some(String::new())),
        ("bad key", Some(good.replace("redis: true", "redis: maybe"))),
        (
            "busy port",
            Some(format!("{good}{}", second.yaml(busy_port))),
        ),
        ("missing", None),
    ];
    let mut failures = 0;
    for (what, text) in cases {
        let line = match text {
            Some(t) => p.reload(&t),
            None => {
                std::fs::remove_file(p.conf_path()).expect("rm");
                p.signal_reload()
            }
        };
        failures += 1;
        assert!(line.contains("reload failed: "), "{what}: {line}");
        assert_eq!(c.call(&["GET", "k"]), Resp::bulk("v"), "{what}");
        assert_eq!(get(port, "k"), Resp::bulk("v"), "{what}");
    }
    assert!(p.log_text().contains("No such file"), "{}", p.log_text());
    wait_until(WAIT, || stat(&p, "reload_failures") == failures);
    assert_eq!(stat(&p, "reload_failures"), failures);
    assert_eq!(stat(&p, "reloads"), 0);
    // And a good file afterwards takes.
    let line = p.reload(&good);
    assert!(line.contains("reloaded configuration"), "{line}");
    drop(busy);
}

/// `redis:` switched: the pool is replaced (a removal plus an addition) on
/// the same port, which never refuses in between.
#[test]
fn switching_protocol_replaces_the_pool_on_the_same_port() {
    let r = Redis::start();
    let m = Memcached::start();
    let rpool = PoolConf::redis(&[&r]);
    let mut mpool = PoolConf::memcache(&[&m]);
    mpool.name = rpool.name.clone();
    let mut p = Proxy::start_pools(std::slice::from_ref(&rpool), ARGS);
    let port = p.port();
    set(port, "k", "v");
    let mut old = RawConn::connect(port);
    assert_eq!(old.call(&["GET", "k"]), Resp::bulk("v"));
    let line = p.reload(&yaml(&[(&mpool, port)]));
    assert!(
        line.contains("added: alpha") && line.contains("removed: alpha"),
        "{line}"
    );
    old.expect_eof();
    let mut c = RawConn::connect(port);
    c.send(b"set mk 0 0 2\r\nhi\r\n");
    c.expect(b"STORED\r\n");
    assert_eq!(mc_get(&mut c, b"mk"), Some(b"hi".to_vec()));
}

/// A removed pool's client that has requests in flight gets every reply
/// it is owed, then the close.
#[test]
fn removed_pool_clients_get_what_they_are_owed() {
    let r = Redis::start();
    let a = PoolConf::redis(&[&r]);
    let mut b = PoolConf::redis(&[&r]);
    b.name = "beta".into();
    let mut p = Proxy::start(
        &format!(
            "{}{}",
            a.yaml(0).replace(":0\n", ":@PORT0@\n"),
            b.yaml(0).replace(":0\n", ":@PORT1@\n")
        ),
        ARGS,
    );
    let (pa, pb) = (p.port_of(0), p.port_of(1));
    let mut c = RawConn::connect(pb);
    assert_eq!(c.call(&["PING"]), Resp::Status(b"PONG".to_vec()));
    // A stopped backend keeps the requests in flight across the reload.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(r.pid() as i32, libc::SIGSTOP) };
    let want = 100;
    let batch: Vec<u8> = (0..want)
        .flat_map(|i| cmd(&["SET", &format!("b{i}"), "1"]))
        .collect();
    c.send(&batch);
    std::thread::sleep(Duration::from_millis(100));
    let line = p.reload(&yaml(&[(&a, pa)]));
    assert!(line.contains("removed: beta"), "{line}");
    assert!(refused(pb));
    // SAFETY: as above.
    unsafe { libc::kill(r.pid() as i32, libc::SIGCONT) };
    for i in 0..want {
        let reply = c.recv_reply();
        assert!(!reply.is_error(), "reply {i}: {reply:?}");
    }
    c.expect_eof();
    assert_eq!(get(pa, "b99"), Resp::bulk("1"));
}

/// 100 reloads alternating two configurations under continuous redis and
/// memcached load: no client sees an error or a close, and descriptors,
/// mbufs and memory come back to their baseline.
#[test]
fn hundred_reloads_under_load() {
    let r = Redis::start_many(3);
    let m = [Memcached::start(), Memcached::start()];
    // The redis pool gains and loses a server: keys move, so readers
    // check only that every reply is a reply (no error, no close). The
    // memcached pool changes settings only: keys stay, so every read must
    // return the write before it.
    let rp_a = PoolConf::redis(&[&r[0], &r[1]]).opt("hash", "md5");
    let mut rp_b = PoolConf::redis(&[&r[0], &r[1], &r[2]])
        .opt("hash", "md5")
        .opt("timeout", "2000");
    rp_b.name = rp_a.name.clone();
    let mut mp_a = PoolConf::memcache(&[&m[0], &m[1]]);
    mp_a.name = "mc".into();
    let mut mp_b = PoolConf::memcache(&[&m[0], &m[1]])
        .opt("server_connections", "2")
        .opt("timeout", "3000")
        .opt("preconnect", "true")
        .opt("auto_eject_hosts", "true");
    mp_b.name = "mc".into();
    let mut p = Proxy::start(
        &format!(
            "{}{}",
            rp_a.yaml(0).replace(":0\n", ":@PORT0@\n"),
            mp_a.yaml(0).replace(":0\n", ":@PORT1@\n")
        ),
        ARGS,
    );
    let (rport, mport) = (p.port_of(0), p.port_of(1));
    let conf_a = yaml(&[(&rp_a, rport), (&mp_a, mport)]);
    let conf_b = yaml(&[(&rp_b, rport), (&mp_b, mport)]);
    let pid = p.pid();
    // Warm up (every key the load uses, so every server of conf_a has its
    // connection), then take the baseline.
    {
        let mut rc = RawConn::connect(rport);
        let mut mc = RawConn::connect(mport);
        for t in 0..4 {
            for i in 0..500 {
                let key = format!("t{t}:{i}");
                assert_eq!(rc.call(&["SET", &key, "0"]), Resp::ok());
                mc.send(format!("set {key} 0 0 1\r\n0\r\n").as_bytes());
                mc.expect(b"STORED\r\n");
            }
        }
    }
    assert!(wait_until(WAIT, || stat(&p, "client_connections") == 0));
    let base_fds = open_fds(pid);
    let base_rss = rss(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for t in 0..4 {
        let (stop, ops) = (Arc::clone(&stop), Arc::clone(&ops));
        load.push(std::thread::spawn(move || -> Result<(), String> {
            let mut c = RawConn::connect(if t % 2 == 0 { rport } else { mport });
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) && i < 1_000_000 {
                let key = format!("t{t}:{}", i % 500);
                if t % 2 == 0 {
                    let v = i.to_string();
                    if c.call(&["SET", &key, &v]) != Resp::ok() {
                        return Err(format!("SET {key} failed"));
                    }
                    match c.call(&["GET", &key]) {
                        Resp::Bulk(_) => {}
                        other => return Err(format!("GET {key}: {other:?}")),
                    }
                } else {
                    let v = i.to_string();
                    c.send(format!("set {key} 0 0 {}\r\n{v}\r\n", v.len()).as_bytes());
                    c.expect(b"STORED\r\n");
                    if mc_get(&mut c, key.as_bytes()) != Some(v.into_bytes()) {
                        return Err(format!("get {key} failed"));
                    }
                }
                i += 1;
                ops.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    for n in 0..100 {
        let line = p.reload(if n % 2 == 0 { &conf_b } else { &conf_a });
        assert!(
            line.contains("reloaded configuration"),
            "reload {n}: {line}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().expect("load thread").expect("load");
    }
    assert!(ops.load(Ordering::Relaxed) > 0);
    let json = p.stats();
    assert_eq!(stat_values(&json, "client_err"), vec![0, 0], "{json}");
    assert_eq!(stat_values(&json, "forward_error"), vec![0, 0], "{json}");
    assert_eq!(stat(&p, "reloads"), 100);
    // Back to conf_a (an even count): the server only conf_b had is let
    // go, and descriptors are as at the start.
    assert!(
        wait_until(WAIT, || r[2].clients() == 0),
        "r2 still connected"
    );
    assert!(
        wait_until(WAIT, || open_fds(pid) <= base_fds + 1),
        "fds {} vs baseline {base_fds}",
        open_fds(pid)
    );
    assert!(
        wait_until(WAIT, || {
            let j = p.stats();
            let alloc = stat_values(&j, "mbuf_allocated")
                .first()
                .copied()
                .unwrap_or(0);
            let free = stat_values(&j, "mbuf_free").first().copied().unwrap_or(0);
            alloc - free <= 2
        }),
        "mbufs in use: {}",
        p.stats()
    );
    let grown = rss(pid).saturating_sub(base_rss);
    assert!(grown < 32 << 20, "RSS grew by {grown} bytes");
}
