//! Issue 17: one client or one backend must not stall everyone. Each test
//! reproduces one adversarial input of the issue and asserts the bound the
//! proxy keeps. Latency figures are measured by `make bench`, section
//! "adversarial", where a loaded machine cannot make CI flaky; the one
//! wall-clock bound here is a generous one on correctness: a 300 ms
//! timeout must fire within 3 s while another pool streams 80 MB.
//!
//! Fake backends are threads in this file: a memcached that answers with a
//! key nobody asked, a redis that announces an array no request could
//! produce and streams it at full speed, and one that streams a large but
//! legal array while other clients are served.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// The sum of a metric over every pool or server that has it.
fn stat_of(json: &str, name: &str) -> i64 {
    let pat = format!("\"{name}\":");
    json.split(&pat)
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| c != '-' && !c.is_ascii_digit())
                .next()
                .and_then(|v| v.parse::<i64>().ok())
        })
        .sum()
}

/// A fake backend: each accepted connection is handed to `serve` on its
/// own thread. Returns the `host:port:1` server line.
fn fake_backend(serve: fn(TcpStream)) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind fake backend");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    format!("127.0.0.1:{port}:1")
}

fn err_text(r: &Resp) -> String {
    match r {
        Resp::Error(_) => r.line().unwrap_or_default(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// A memcached backend answering a key that was not asked

fn wrong_key_memcached(s: TcpStream) {
    let mut w = s.try_clone().expect("clone");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while r.read_line(&mut line).is_ok_and(|n| n > 0) {
        let reply: &[u8] = if line.starts_with("get a b") {
            // Both asked, but out of order: not a reply to this request.
            b"VALUE b 0 1\r\nx\r\nVALUE a 0 1\r\ny\r\nEND\r\n"
        } else if line.starts_with("get ") {
            b"VALUE zzz 0 1\r\nx\r\nEND\r\n"
        } else {
            b"ERROR\r\n"
        };
        if w.write_all(reply).is_err() {
            return;
        }
        line.clear();
    }
}

#[test]
fn memcached_value_for_a_key_not_asked_is_a_server_error() {
    let line = fake_backend(wrong_key_memcached);
    let pool = PoolConf::new("mc", false).server(&line);
    let proxy = Proxy::start_pools(&[pool], &["-i", "100"]);
    for (req, n) in [("get mk300\r\n", 1), ("get a b\r\n", 2)] {
        let mut c = proxy.raw();
        c.send(req.as_bytes());
        let got = c.recv_line();
        assert!(
            got.starts_with(b"SERVER_ERROR"),
            "{req:?} answered {:?}",
            String::from_utf8_lossy(&got)
        );
        wait_for("server_err counted", || {
            stat_of(&proxy.stats(), "server_err") == n
        });
    }
}

// ---------------------------------------------------------------------------
// Redis backends that flood

/// Answers anything with an array announcing 2^31-1 elements, then streams
/// `:1` elements until the proxy hangs up.
fn flooding_redis(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    if s.read(&mut buf).unwrap_or(0) == 0 {
        return;
    }
    let chunk = b":1\r\n".repeat(16 * 1024);
    if s.write_all(b"*2147483647\r\n").is_err() {
        return;
    }
    while s.write_all(&chunk).is_ok() {}
}

/// Elements of the large but legal array [`big_array_redis`] sends.
const BIG_ARRAY: usize = 20_000_000;

/// Answers the first request with an array of [`BIG_ARRAY`] `:1`, written
/// at full speed: 80 MB that the proxy must read in bounded turns.
fn big_array_redis(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    if s.read(&mut buf).unwrap_or(0) == 0 {
        return;
    }
    let chunk = b":1\r\n".repeat(16 * 1024);
    let _ = s.write_all(format!("*{BIG_ARRAY}\r\n").as_bytes());
    let mut left = BIG_ARRAY;
    while left > 0 {
        let n = left.min(16 * 1024);
        if s.write_all(&chunk[..n * 4]).is_err() {
            return;
        }
        left -= n;
    }
    // Keep the connection open: the proxy must not wait for a close.
    let _ = s.read(&mut buf);
}

#[test]
fn an_array_no_request_could_produce_is_a_server_error() {
    let line = fake_backend(flooding_redis);
    let r = Redis::start();
    let flood = PoolConf::new("flood", true).server(&line);
    let good = PoolConf::redis(&[&r]);
    let mut proxy = Proxy::start_pools(&[flood, good], &["-i", "100"]);
    let mut victim = RawConn::connect(proxy.port_of(0));
    let reply = victim.call(&["GET", "k"]);
    assert!(
        err_text(&reply).starts_with("ERR "),
        "the flooded request fails: {reply:?}"
    );
    wait_for("server_err counted", || {
        stat_of(&proxy.stats(), "server_err") >= 1
    });
    let mut other = RawConn::connect(proxy.port_of(1));
    assert_eq!(other.call(&["PING"]), Resp::Status(b"PONG".to_vec()));
    // Refused at the header: nothing of the stream was kept.
    let rss = rss(proxy.pid());
    assert!(rss < 64 << 20, "RSS {rss} bytes after the flood");
    proxy.assert_alive();
}

#[test]
fn other_clients_are_served_while_a_backend_streams_a_huge_reply() {
    let line = fake_backend(big_array_redis);
    let r = Redis::start();
    let big = PoolConf::new("big", true).server(&line);
    let good = PoolConf::redis(&[&r]);
    let proxy = Proxy::start_pools(&[big, good], &["-i", "100"]);
    let done = Arc::new(AtomicBool::new(false));
    let pongs = Arc::new(AtomicUsize::new(0));
    let pinger = {
        let (done, pongs) = (done.clone(), pongs.clone());
        let port = proxy.port_of(1);
        std::thread::spawn(move || {
            let mut c = RawConn::connect(port);
            while !done.load(Ordering::Acquire) {
                assert_eq!(c.call(&["PING"]), Resp::Status(b"PONG".to_vec()));
                pongs.fetch_add(1, Ordering::AcqRel);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut victim = RawConn::connect(proxy.port_of(0));
    let before = pongs.load(Ordering::Acquire);
    victim.send(&cmd(&["GET", "k"]));
    // Read the whole reply as bytes: header, then 4 bytes per element.
    let header = victim.recv_line();
    assert_eq!(header, format!("*{BIG_ARRAY}\r\n").into_bytes());
    let mut left = BIG_ARRAY * 4;
    let mut during = 0;
    while left > 0 {
        let n = left.min(1 << 20);
        let got = victim.recv_exact(n);
        assert!(got.chunks(4).all(|e| e == b":1\r\n"));
        left -= n;
        if left < BIG_ARRAY * 2 && during == 0 {
            // Half-way through the reply: the other pool was served meanwhile.
            during = pongs.load(Ordering::Acquire) - before;
        }
    }
    done.store(true, Ordering::Release);
    pinger.join().expect("pinger");
    assert!(
        during > 0,
        "no PING answered during the first half of an 80 MB reply"
    );
}

/// Reads requests and never answers: every request to it times out.
fn silent_redis(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

/// Timeouts fire on time under load: while one pool's backend streams a
/// huge reply (bounded turns keep the loop going round), a request to a
/// silent backend in another pool gets `Connection timed out` after its
/// pool's 300 ms, not after the stream ends.
#[test]
fn a_timeout_fires_while_another_pool_streams() {
    let big_line = fake_backend(big_array_redis);
    let silent_line = fake_backend(silent_redis);
    let big = PoolConf::new("big", true).server(&big_line);
    let slow = PoolConf::new("slow", true)
        .server(&silent_line)
        .opt("timeout", "300");
    let proxy = Proxy::start_pools(&[big, slow], &["-i", "100"]);
    let reader = {
        let port = proxy.port_of(0);
        std::thread::spawn(move || {
            let mut c = RawConn::connect(port);
            c.send(&cmd(&["GET", "k"]));
            let header = c.recv_line();
            assert_eq!(header, format!("*{BIG_ARRAY}\r\n").into_bytes());
            // Slowly, so the proxy keeps the stream going for a while.
            let mut left = BIG_ARRAY * 4;
            while left > 0 {
                let n = left.min(1 << 18);
                c.recv_exact(n);
                left -= n;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let mut c = RawConn::connect(proxy.port_of(1));
    let start = std::time::Instant::now();
    let reply = c.call(&["GET", "k"]);
    let waited = start.elapsed();
    assert!(
        matches!(&reply, Resp::Error(t) if t.starts_with(b"ERR Connection timed out")),
        "{reply:?}"
    );
    assert!(
        waited >= Duration::from_millis(300),
        "answered before the timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "a 300 ms timeout fired after {waited:?}"
    );
    reader.join().expect("reader");
}

// ---------------------------------------------------------------------------
// A million keys

#[test]
fn million_key_mget_is_answered_in_request_order() {
    let rs = Redis::start_many(3);
    let backends: Vec<&Redis> = rs.iter().collect();
    let proxy = Proxy::start_pools(&PoolConf::redis_and_tagged(&backends), &["-i", "100"]);
    const N: usize = 1_000_000;
    let mut c = RawConn::connect(proxy.port_of(0));
    let mut mset = vec!["MSET".to_string()];
    for i in (0..N).step_by(1000) {
        mset.push(format!("k{i}"));
        mset.push(format!("v{i}"));
    }
    assert_eq!(c.call(&mset), Resp::Status(b"OK".to_vec()));
    c.set_read_timeout(Duration::from_secs(120));
    let mut mget = vec!["MGET".to_string()];
    mget.extend((0..N).map(|i| format!("k{i}")));
    let Resp::Array(Some(items)) = c.call(&mget) else {
        panic!("MGET of {N} keys: not an array");
    };
    assert_eq!(items.len(), N);
    for (i, item) in items.iter().enumerate() {
        let want = (i % 1000 == 0).then(|| format!("v{i}").into_bytes());
        assert_eq!(*item, Resp::Bulk(want), "element {i}");
    }
    // Every key on one server (one hash tag), each asked twice.
    let mut t = RawConn::connect(proxy.port_of(1));
    t.set_read_timeout(Duration::from_secs(120));
    assert_eq!(
        t.call(&["SET", "{t}k7", "seven"]),
        Resp::Status(b"OK".to_vec())
    );
    let mut mget = vec!["MGET".to_string()];
    mget.extend((0..N).map(|i| format!("{{t}}k{}", i / 2)));
    let Resp::Array(Some(items)) = t.call(&mget) else {
        panic!("MGET of {N} tagged keys: not an array");
    };
    assert_eq!(items.len(), N);
    for (i, item) in items.iter().enumerate() {
        let want = (i / 2 == 7).then(|| b"seven".to_vec());
        assert_eq!(*item, Resp::Bulk(want), "tagged element {i}");
    }
}

// ---------------------------------------------------------------------------
// Incomplete requests: the stats port and the global budget

#[test]
fn stats_are_served_while_256_incomplete_requests_hang() {
    let r = Redis::start();
    let proxy = Proxy::redis(&[&r], &[], &["-i", "100"]);
    let port = proxy.stats_port();
    let hanging: Vec<TcpStream> = (0..256)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect stats");
            s.write_all(b"GET / HTTP/1.1\r\n")
                .expect("send partial head");
            s
        })
        .collect();
    // Every slot is taken by an incomplete head: a new client still gets
    // the document (the oldest incomplete one makes room).
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect stats");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read stats");
    let text = String::from_utf8_lossy(&v);
    assert!(text.starts_with("HTTP/1.1 200"), "got {text:?}");
    assert!(text.contains("\"total_connections\""), "got {text:?}");
    // The incomplete ones are given up on (1 s), without an answer.
    for mut h in hanging {
        h.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        match h.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("an incomplete head was answered: {:?}", &buf[..n]),
        }
    }
}

#[test]
fn incomplete_requests_share_one_memory_budget() {
    let r = Redis::start();
    let budget = 16 * 1024 * 1024;
    let proxy = Proxy::start_pools_env(
        &[PoolConf::redis(&[&r])],
        &["-i", "100"],
        &[("NUTCRACKER_REQUEST_MEMORY", &budget.to_string())],
    );
    let value = 10 * 1024 * 1024;
    let header = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${value}\r\n");
    let mut conns = Vec::new();
    // 6 + 4 MiB held, under the budget; then 7 MiB more passes it.
    for mib in [6, 4, 7] {
        let mut c = RawConn::connect(proxy.port());
        c.send(header.as_bytes());
        // The proxy may close the last one before all of it is written:
        // its unread bytes then reset the connection.
        match c.try_send(&vec![b'x'; mib * 1024 * 1024]) {
            Ok(()) => {}
            Err(e) if mib == 7 && e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) if mib == 7 && e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => panic!("write {mib} MiB: {e}"),
        }
        conns.push((c, mib));
        std::thread::sleep(Duration::from_millis(300));
    }
    // The largest holder gets an error and is closed.
    let (mut largest, _) = conns.pop().expect("largest");
    largest.set_read_timeout(Duration::from_secs(10));
    let got = largest.recv_line();
    assert_eq!(
        got,
        b"-ERR Protocol error: proxy request memory exhausted\r\n".to_vec()
    );
    // The others finish their requests and are answered.
    for (mut c, mib) in conns {
        c.send(&vec![b'x'; value - mib * 1024 * 1024]);
        c.send(b"\r\n");
        assert_eq!(c.recv_reply(), Resp::Status(b"OK".to_vec()));
    }
    assert!(proxy.log_text().contains("exceed the budget of 16777216"));
}
