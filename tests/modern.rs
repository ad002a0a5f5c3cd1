//! The redis features today's clients rely on, checked on the wire with
//! exact bytes (tests/clients.rs runs the real client libraries; this file
//! needs no package registry): RESP3 after `HELLO 3`, the commands the
//! proxy answers itself, transactions on one server (applied once, or not
//! at all), scripts on every server, SCAN across the pool, and the refusal
//! of unsplittable commands whose keys sit on two servers
//! (docs/compatibility.md §13.8).

mod support;

use std::collections::HashSet;
use support::*;

/// Four redis servers behind one pool with `{}` hash tags and md5, so that
/// short keys spread.
fn four() -> (Vec<Redis>, Proxy) {
    let r = Redis::start_many(4);
    let refs: Vec<&Redis> = r.iter().collect();
    let pool = PoolConf::redis(&refs).opt("hash", "md5").hash_tag("{}");
    let p = Proxy::start_pools(&[pool], &["-i", "100"]);
    (r, p)
}

/// Two keys (by prefix) that the pool puts on different servers.
fn keys_on_two_servers(r: &[Redis], prefix: &str) -> (String, String) {
    let refs: Vec<&Redis> = r.iter().collect();
    let p = Proxy::start_pools(
        &[PoolConf::redis(&refs).opt("hash", "md5").hash_tag("{}")],
        &[],
    );
    let mut c = p.raw();
    let first = format!("{prefix}0");
    assert_eq!(c.call(&["SET", &first, "x"]), Resp::ok());
    let home = locate(&refs, first.as_bytes());
    for i in 1..200 {
        let k = format!("{prefix}{i}");
        assert_eq!(c.call(&["SET", &k, "x"]), Resp::ok());
        if locate(&refs, k.as_bytes()) != home {
            assert_eq!(c.call(&["DEL", &first, &k]), Resp::Int(2));
            return (first, k);
        }
    }
    panic!("no two servers for {prefix}");
}

/// Reads until the bytes end with `suffix`.
fn until(c: &mut RawConn, suffix: &[u8]) -> Vec<u8> {
    c.recv_until(Until::Suffix(suffix))
}

#[test]
fn resp3_after_hello_3() {
    let (_r, p) = four();
    let mut c = p.raw();
    c.send(&cmd(&["HELLO", "3"]));
    let hello = until(&mut c, b"*0\r\n");
    assert!(hello.starts_with(b"%7\r\n"), "{}", show(&hello));
    assert!(show(&hello).contains("proto"), "{}", show(&hello));
    c.send(&cmd(&["GET", "missing"]));
    c.expect(b"_\r\n");
    c.send(&cmd(&["HSET", "h", "f", "v"]));
    c.expect(b":1\r\n");
    c.send(&cmd(&["HGETALL", "h"]));
    c.expect(b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
    // A merged MGET over several servers carries the backends' RESP3 nulls.
    c.send(&cmd(&["SET", "a", "1"]));
    c.expect(b"+OK\r\n");
    c.send(&cmd(&["MGET", "a", "nope1", "nope2", "nope3"]));
    c.expect(b"*4\r\n$1\r\n1\r\n_\r\n_\r\n_\r\n");
    c.send(&cmd(&["CLIENT", "GETNAME"]));
    c.expect(b"_\r\n");
    // Back to RESP2.
    c.send(&cmd(&["HELLO", "2"]));
    let r = until(&mut c, b"*0\r\n");
    assert!(r.starts_with(b"*14\r\n"), "{}", show(&r));
    c.send(&cmd(&["GET", "missing"]));
    c.expect(b"$-1\r\n");
}

#[test]
fn answered_by_the_proxy() {
    let (_r, p) = four();
    let mut c = p.raw();
    assert_eq!(c.call(&["CLIENT", "SETINFO", "lib-name", "x"]), Resp::ok());
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), Resp::nil());
    assert_eq!(c.call(&["CLIENT", "SETNAME", "me"]), Resp::ok());
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), Resp::bulk("me"));
    assert!(matches!(c.call(&["CLIENT", "ID"]), Resp::Int(n) if n > 0));
    assert_eq!(c.call(&["SELECT", "0"]), Resp::ok());
    assert!(c.call(&["SELECT", "3"]).is_error());
    assert_eq!(c.call(&["ECHO", "hi"]), Resp::bulk("hi"));
    let Resp::Bulk(Some(info)) = c.call(&["INFO"]) else {
        panic!("INFO is a bulk string");
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    for line in [
        "# Server",
        "redis_version:",
        "redis_mode:proxy",
        "loading:0",
        "# Clients",
    ] {
        assert!(info.contains(line), "{line} in {info}");
    }
    // Inline commands and skipped empty requests.
    c.send(b"\r\nSET \"in line\" 'v 1'\r\n*0\r\nGET \"in line\"\r\n");
    c.expect(b"+OK\r\n$3\r\nv 1\r\n");
}

#[test]
fn transaction_on_one_server_runs_once() {
    let (r, p) = four();
    let mut c = p.raw();
    c.send(b"MULTI\r\nSET {u}:a 1\r\nINCR {u}:a\r\nSET {u}:b x\r\nEXEC\r\n");
    c.expect(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n:2\r\n+OK\r\n");
    assert_eq!(c.call(&["GET", "{u}:a"]), Resp::bulk("2"));
    let refs: Vec<&Redis> = r.iter().collect();
    assert_eq!(locate(&refs, b"{u}:a").len(), 1);
    // DISCARD: nothing runs.
    c.send(b"MULTI\r\nINCR {u}:a\r\nDISCARD\r\nGET {u}:a\r\n");
    c.expect(b"+OK\r\n+QUEUED\r\n+OK\r\n$1\r\n2\r\n");
    assert!(c.call(&["EXEC"]).is_error());
    assert!(c.call(&["WATCH", "{u}:a"]).is_error());
}

#[test]
fn transaction_across_servers_runs_nothing() {
    let (r, p) = four();
    let (a, b) = keys_on_two_servers(&r, "tx");
    let mut c = p.raw();
    let block = [
        cmd(&["MULTI"]),
        cmd(&["SET", &a, "1"]),
        cmd(&["SET", &b, "2"]),
        cmd(&["EXEC"]),
    ]
    .concat();
    c.send(&block);
    c.expect(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n");
    let reply = c.recv_reply();
    assert!(
        matches!(&reply, Resp::Error(t) if t.starts_with(b"EXECABORT")),
        "{reply:?}"
    );
    let refs: Vec<&Redis> = r.iter().collect();
    assert!(locate(&refs, a.as_bytes()).is_empty(), "{a} was written");
    assert!(locate(&refs, b.as_bytes()).is_empty(), "{b} was written");
    // A command refused while queueing aborts the transaction too.
    c.send(b"MULTI\r\nSET {v} 1\r\nSELECT 0\r\nEXEC\r\n");
    c.expect(b"+OK\r\n+QUEUED\r\n");
    assert!(c.recv_reply().is_error());
    assert!(matches!(c.recv_reply(), Resp::Error(t) if t.starts_with(b"EXECABORT")));
    assert_eq!(c.call(&["EXISTS", "{v}"]), Resp::Int(0));
}

#[test]
fn unsplittable_commands_across_servers_are_refused() {
    let (r, p) = four();
    let (a, b) = keys_on_two_servers(&r, "cp");
    let mut c = p.raw();
    assert_eq!(c.call(&["SET", &a, "v"]), Resp::ok());
    for args in [
        vec!["COPY", &a, &b],
        vec!["RENAME", &a, &b],
        vec!["SMOVE", &a, &b, "m"],
        vec!["RPOPLPUSH", &a, &b],
        vec!["EVAL", "return 1", "2", &a, &b],
    ] {
        let reply = c.call(&args);
        assert!(
            matches!(&reply, Resp::Error(t) if t.starts_with(b"CROSSSLOT")),
            "{args:?}: {reply:?}"
        );
    }
    let refs: Vec<&Redis> = r.iter().collect();
    assert!(locate(&refs, b.as_bytes()).is_empty(), "{b} was written");
    assert_eq!(c.call(&["GET", &a]), Resp::bulk("v"));
    // Keys under one hash tag: forwarded.
    assert_eq!(c.call(&["SET", "{t}src", "v"]), Resp::ok());
    assert_eq!(c.call(&["COPY", "{t}src", "{t}dst"]), Resp::Int(1));
    assert_eq!(c.call(&["GET", "{t}dst"]), Resp::bulk("v"));
}

#[test]
fn scripts_reach_every_server() {
    let (r, p) = four();
    let mut c = p.raw();
    let Resp::Bulk(Some(sha)) = c.call(&["SCRIPT", "LOAD", "return 7"]) else {
        panic!("SCRIPT LOAD gives the sha");
    };
    let sha = String::from_utf8_lossy(&sha).into_owned();
    for b in &r {
        let mut d = b.raw();
        assert_eq!(
            d.call(&["SCRIPT", "EXISTS", &sha]),
            Resp::array(vec![Resp::Int(1)])
        );
    }
    assert_eq!(
        c.call(&["SCRIPT", "EXISTS", &sha, "0000"]),
        Resp::array(vec![Resp::Int(1), Resp::Int(0)])
    );
    // A server that lost it: EXISTS says 0 for the pool.
    assert_eq!(r[2].raw().call(&["SCRIPT", "FLUSH"]), Resp::ok());
    assert_eq!(
        c.call(&["SCRIPT", "EXISTS", &sha]),
        Resp::array(vec![Resp::Int(0)])
    );
    assert_eq!(c.call(&["SCRIPT", "FLUSH"]), Resp::ok());
    assert!(c.call(&["EVALSHA", &sha, "1", "k"]).is_error());
}

#[test]
fn scan_visits_every_key_of_the_pool_once() {
    let (r, p) = four();
    let mut c = p.raw();
    let n = 1000;
    for i in 0..n {
        assert_eq!(c.call(&["SET", &format!("sc{i}:k"), "v"]), Resp::ok());
    }
    for b in &r {
        assert!(b.dbsize() > 0, "keys spread over every server");
    }
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    for _ in 0..10_000 {
        let reply = c.call(&["SCAN", &cursor, "COUNT", "37", "MATCH", "sc*"]);
        let Resp::Array(Some(items)) = reply else {
            panic!("SCAN reply {reply:?}");
        };
        let (Some(Resp::Bulk(Some(next))), Some(Resp::Array(Some(keys)))) =
            (items.first(), items.get(1))
        else {
            panic!("SCAN reply {items:?}");
        };
        for k in keys {
            if let Resp::Bulk(Some(k)) = k {
                seen.push(k.clone());
            }
        }
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0", "the iteration ended");
    let distinct: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(distinct.len(), n, "every key");
    assert_eq!(seen.len(), n, "each key once");
}

/// A backend without RESP3 (redis < 6 answers HELLO with an unknown
/// command error): the client gets `-NOPROTO` and stays in RESP2. The
/// backend is a thread here that answers every command with that error.
#[test]
fn hello_3_without_resp3_backends_gets_noproto() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(8) {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut parsed = Vec::new();
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    parsed.extend_from_slice(&buf[..n]);
                    // One error per complete request (each ends its last
                    // argument with CRLF; count requests by their `*`).
                    while let Some(at) = parsed.iter().position(|&b| b == b'*') {
                        let Ok(Some((_, used))) = parse_resp(&parsed[at..]) else {
                            break;
                        };
                        parsed.drain(..at + used);
                        if conn.write_all(b"-ERR unknown command 'HELLO'\r\n").is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let pool = PoolConf::new("alpha", true).server(&format!("127.0.0.1:{port}:1"));
    let p = Proxy::start_pools(&[pool], &[]);
    let mut c = p.raw();
    c.send(&cmd(&["HELLO", "3"]));
    c.expect(b"-NOPROTO unsupported protocol version\r\n");
    // Still RESP2: a local reply that differs between the two protocols.
    c.send(&cmd(&["CLIENT", "GETNAME"]));
    c.expect(b"$-1\r\n");
}
