//! Memcached proxying end to end: the built `nutcracker` in front of real
//! `memcached` backends (docs/compatibility.md §13, §8, §9 and §11.2).
//!
//! Each test starts its own backends and proxy on free loopback ports (see
//! `support`) and talks ASCII protocol over raw sockets, comparing whole
//! replies byte for byte. Expected bytes are memcached's own answers,
//! except where docs/compatibility.md §13 says we do better than nutcracker 0.5.0: a
//! protocol error gets memcached's `ERROR` / `CLIENT_ERROR ...` before the
//! close (after the replies owed to earlier pipelined requests), multi-get
//! values come back in request order even with misses, and a failed
//! multi-get fragment fails only that command. Where a key landed is
//! checked with direct connections to the backends.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::Write as _;
use std::time::Duration;
use support::*;

// ---------------------------------------------------------------------------
// Fixtures and small helpers

/// Backends plus a proxy over them. Fields drop in order: the proxy stops
/// before its backends.
struct Cluster {
    proxy: Proxy,
    backends: Vec<Memcached>,
}

impl Cluster {
    /// `n` backends (started with `mc_args`) behind one memcache pool with
    /// directives `opts`; `args` go to nutcracker.
    fn start(n: usize, opts: &[(&str, &str)], args: &[&str], mc_args: &[&str]) -> Cluster {
        let backends = start_memcached(n, mc_args);
        let refs: Vec<&Memcached> = backends.iter().collect();
        let mut pool = PoolConf::memcache(&refs);
        for (k, v) in opts {
            pool = pool.opt(k, v);
        }
        let proxy = Proxy::start_pools(&[pool], args);
        Cluster { proxy, backends }
    }

    /// Four backends with the default hash (fnv1a_64, ketama).
    fn four() -> Cluster {
        Cluster::start(4, &[], &[], &[])
    }

    /// Four backends with `hash: md5`, for tests that need keys spread over
    /// several servers: the default fnv1a_64 puts short keys that differ
    /// only in their last bytes mostly on one ketama arc (as 0.5.0 does),
    /// while md5 spreads any key set whatever the ports.
    fn spread(opts: &[(&str, &str)]) -> Cluster {
        let mut all = vec![("hash", "md5")];
        all.extend_from_slice(opts);
        Cluster::start(4, &all, &[], &[])
    }

    fn raw(&self) -> RawConn {
        self.proxy.raw()
    }

    /// For each key, the indexes of the backends holding it (one multi-get
    /// per backend).
    fn locate(&self, keys: &[Vec<u8>]) -> Vec<Vec<usize>> {
        let mut at = vec![Vec::new(); keys.len()];
        let pos: HashMap<&[u8], usize> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_slice(), i))
            .collect();
        for (b, backend) in self.backends.iter().enumerate() {
            let mut c = backend.raw();
            // Chunks keep each direct request line well under memcached's
            // own limits.
            for chunk in keys.chunks(100) {
                c.send(&get_line("get", chunk));
                for item in read_get_reply(&mut c).1 {
                    let i = pos.get(item.key.as_slice()).unwrap_or_else(|| {
                        panic!("backend returned unasked key {}", show(&item.key))
                    });
                    at[*i].push(b);
                }
            }
        }
        at
    }

    /// The one backend holding `key`; panics if none or several do.
    fn home(&self, key: &[u8]) -> usize {
        let at = self.locate(&[key.to_vec()]).remove(0);
        assert_eq!(at.len(), 1, "key {} is on backends {at:?}", show(key));
        at[0]
    }
}

/// Starts `n` memcached processes in parallel.
fn start_memcached(n: usize, extra: &[&str]) -> Vec<Memcached> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| Memcached::start_with(extra)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("memcached start thread"))
            .collect()
    })
}

/// One VALUE block of a get/gets reply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    key: Vec<u8>,
    flags: u32,
    data: Vec<u8>,
    cas: Option<u64>,
}

/// Reads one get/gets reply: VALUE blocks up to `END\r\n`. Returns the raw
/// bytes and the parsed blocks; panics on any other line.
fn read_get_reply(c: &mut RawConn) -> (Vec<u8>, Vec<Item>) {
    let mut raw = Vec::new();
    let mut items = Vec::new();
    loop {
        let line = c.recv_line();
        raw.extend_from_slice(&line);
        if line == b"END\r\n" {
            return (raw, items);
        }
        let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        let f: Vec<&str> = text.split(' ').collect();
        let parsed = match f.as_slice() {
            ["VALUE", key, flags, len] => Some((key, flags, len, None)),
            ["VALUE", key, flags, len, cas] => Some((key, flags, len, Some(cas))),
            _ => None,
        };
        let Some((key, flags, len, cas)) = parsed else {
            panic!(
                "bad get reply line {}; reply so far {}",
                show(&line),
                show(&raw)
            );
        };
        let num = |s: &str| -> u64 {
            s.parse()
                .unwrap_or_else(|_| panic!("bad number in {}", show(&line)))
        };
        let len = usize::try_from(num(len)).expect("length fits usize");
        let block = c.recv_exact(len + 2);
        assert_eq!(&block[len..], b"\r\n", "data block not ended by CRLF");
        raw.extend_from_slice(&block);
        items.push(Item {
            key: key.as_bytes().to_vec(),
            flags: u32::try_from(num(flags)).expect("flags fit u32"),
            data: block[..len].to_vec(),
            cas: cas.map(|s| num(s)),
        });
    }
}

/// `<cmd> k1 k2 ...\r\n`
fn get_line<K: AsRef<[u8]>>(cmd: &str, keys: &[K]) -> Vec<u8> {
    let mut out = cmd.as_bytes().to_vec();
    for k in keys {
        out.push(b' ');
        out.extend_from_slice(k.as_ref());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A storage request: `<cmd> <key> <flags> 0 <len>[ noreply]\r\n<data>\r\n`.
fn store(cmd: &str, key: &[u8], flags: u32, data: &[u8], noreply: bool) -> Vec<u8> {
    let mut out = format!("{cmd} ").into_bytes();
    out.extend_from_slice(key);
    out.extend_from_slice(format!(" {flags} 0 {}", data.len()).as_bytes());
    if noreply {
        out.extend_from_slice(b" noreply");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// `VALUE <key> <flags> <len>\r\n<data>\r\n`
fn value_block(key: &[u8], flags: u32, data: &[u8]) -> Vec<u8> {
    let mut out = b"VALUE ".to_vec();
    out.extend_from_slice(key);
    out.extend_from_slice(format!(" {flags} {}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The reply to a single-key get: the block (on a hit) and `END`.
fn get_reply(key: &[u8], hit: Option<(u32, &[u8])>) -> Vec<u8> {
    let mut out = match hit {
        Some((flags, data)) => value_block(key, flags, data),
        None => Vec::new(),
    };
    out.extend_from_slice(b"END\r\n");
    out
}

/// Sends `req` in one write and asserts the reply is exactly `want`.
fn conv(c: &mut RawConn, req: &[u8], want: &[u8]) {
    c.send(req);
    let got = c.recv_exact(want.len());
    assert!(
        got == want,
        "request {}\nexpected {}\n     got {}",
        show(req),
        show(want),
        show(&got)
    );
}

/// Writes `req` from a second thread while this one reads `want.len()`
/// bytes, so big pipelines cannot deadlock on full socket buffers; asserts
/// the reply is exactly `want`.
fn pipeline(c: &mut RawConn, req: &[u8], want: &[u8]) {
    let mut w = c.writer();
    let got = std::thread::scope(|s| {
        let writer = s.spawn(move || w.write_all(req));
        let got = c.recv_exact(want.len());
        writer
            .join()
            .expect("writer thread")
            .expect("write pipeline");
        got
    });
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
        let from = at.saturating_sub(60);
        panic!(
            "pipeline reply differs at byte {at} of {}:\nexpected ...{}\n     got ...{}",
            want.len(),
            show(&want[from..]),
            show(&got[from..])
        );
    }
}

/// The cas unique of `key` according to `gets` over `c`.
fn cas_of(c: &mut RawConn, key: &[u8]) -> u64 {
    c.send(&get_line("gets", &[key]));
    let (raw, items) = read_get_reply(c);
    assert_eq!(items.len(), 1, "gets {} -> {}", show(key), show(&raw));
    items[0].cas.expect("gets reply carries a cas")
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn keys(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}{i:04}").into_bytes())
        .collect()
}

// ---------------------------------------------------------------------------
// Every command (docs/compatibility.md §8.1)

#[test]
fn storage_commands() {
    let cl = Cluster::four();
    let mut c = cl.raw();

    conv(
        &mut c,
        &store("set", b"st:a", 5, b"abc", false),
        b"STORED\r\n",
    );
    conv(
        &mut c,
        b"get st:a\r\n",
        &get_reply(b"st:a", Some((5, b"abc"))),
    );
    conv(
        &mut c,
        &store("set", b"st:a", 0, b"xy", false),
        b"STORED\r\n",
    );
    conv(
        &mut c,
        b"get st:a\r\n",
        &get_reply(b"st:a", Some((0, b"xy"))),
    );

    conv(
        &mut c,
        &store("add", b"st:a", 0, b"no", false),
        b"NOT_STORED\r\n",
    );
    conv(
        &mut c,
        &store("add", b"st:b", 7, b"new", false),
        b"STORED\r\n",
    );
    conv(
        &mut c,
        b"get st:b\r\n",
        &get_reply(b"st:b", Some((7, b"new"))),
    );

    conv(
        &mut c,
        &store("replace", b"st:none", 0, b"r", false),
        b"NOT_STORED\r\n",
    );
    conv(
        &mut c,
        &store("replace", b"st:b", 8, b"repl", false),
        b"STORED\r\n",
    );
    conv(
        &mut c,
        b"get st:b\r\n",
        &get_reply(b"st:b", Some((8, b"repl"))),
    );

    conv(
        &mut c,
        &store("append", b"st:none", 0, b"x", false),
        b"NOT_STORED\r\n",
    );
    conv(
        &mut c,
        &store("prepend", b"st:none", 0, b"x", false),
        b"NOT_STORED\r\n",
    );
    conv(
        &mut c,
        &store("append", b"st:b", 0, b">>", false),
        b"STORED\r\n",
    );
    conv(
        &mut c,
        &store("prepend", b"st:b", 0, b"<<", false),
        b"STORED\r\n",
    );
    // append/prepend keep the item's flags.
    conv(
        &mut c,
        b"get st:b\r\n",
        &get_reply(b"st:b", Some((8, b"<<repl>>"))),
    );
    conv(&mut c, b"get st:none\r\n", b"END\r\n");

    // An empty value and a value holding CRLF and "END" are just bytes.
    conv(&mut c, &store("set", b"st:e", 0, b"", false), b"STORED\r\n");
    conv(&mut c, b"get st:e\r\n", &get_reply(b"st:e", Some((0, b""))));
    let tricky = b"END\r\nVALUE x 0 1\r\n\r\n";
    conv(
        &mut c,
        &store("set", b"st:t", 1, tricky, false),
        b"STORED\r\n",
    );
    conv(
        &mut c,
        b"get st:t\r\n",
        &get_reply(b"st:t", Some((1, tricky))),
    );

    // The same with noreply: nothing comes back, the next get sees the
    // effect of each.
    let cases: [(&str, &[u8], &[u8]); 6] = [
        ("set", b"N1", b"N1"),
        ("add", b"zz", b"N1"),
        ("add", b"", b"N1"),
        ("replace", b"R", b"R"),
        ("append", b"+a", b"R+a"),
        ("prepend", b"p-", b"p-R+a"),
    ];
    for (cmd, data, after) in cases {
        // `add ""` targets a fresh key so it stores; the others `st:n`.
        let key: &[u8] = if data.is_empty() { b"st:n2" } else { b"st:n" };
        let mut req = store(cmd, key, 3, data, true);
        req.extend_from_slice(b"get st:n\r\n");
        conv(&mut c, &req, &get_reply(b"st:n", Some((3, after))));
    }
    conv(
        &mut c,
        b"get st:n2\r\n",
        &get_reply(b"st:n2", Some((3, b""))),
    );
    // noreply on a command that fails (NOT_STORED) sends nothing either.
    let mut req = store("replace", b"st:none", 0, b"x", true);
    req.extend_from_slice(&store("append", b"st:none", 0, b"x", true));
    req.extend_from_slice(b"get st:none\r\n");
    conv(&mut c, &req, b"END\r\n");
}

#[test]
fn gets_and_cas() {
    let cl = Cluster::spread(&[]);
    let mut c = cl.raw();
    conv(
        &mut c,
        &store("set", b"cas:a", 4, b"one", false),
        b"STORED\r\n",
    );
    let cas = cas_of(&mut c, b"cas:a");
    // The proxy passes the backend's cas through unchanged.
    let home = cl.home(b"cas:a");
    assert_eq!(cas_of(&mut cl.backends[home].raw(), b"cas:a"), cas);
    conv(
        &mut c,
        b"gets cas:a\r\n",
        format!("VALUE cas:a 4 3 {cas}\r\none\r\nEND\r\n").as_bytes(),
    );

    // EXISTS: a stale cas.
    let stale = format!("cas cas:a 0 0 3 {}\r\ntwo\r\n", cas + 1000);
    conv(&mut c, stale.as_bytes(), b"EXISTS\r\n");
    conv(
        &mut c,
        b"get cas:a\r\n",
        &get_reply(b"cas:a", Some((4, b"one"))),
    );
    // STORED: the current cas.
    let good = format!("cas cas:a 9 0 3 {cas}\r\ntwo\r\n");
    conv(&mut c, good.as_bytes(), b"STORED\r\n");
    conv(
        &mut c,
        b"get cas:a\r\n",
        &get_reply(b"cas:a", Some((9, b"two"))),
    );
    // The old cas is now stale.
    conv(&mut c, good.as_bytes(), b"EXISTS\r\n");
    // NOT_FOUND: no such item.
    conv(&mut c, b"cas cas:none 0 0 1 1\r\nx\r\n", b"NOT_FOUND\r\n");

    // noreply: STORED and EXISTS both silent.
    let cas2 = cas_of(&mut c, b"cas:a");
    assert_ne!(cas2, cas, "cas unique changes on every store");
    let mut req = format!("cas cas:a 0 0 5 {} noreply\r\nstale\r\n", cas).into_bytes();
    req.extend_from_slice(format!("cas cas:a 0 0 5 {cas2} noreply\r\nthree\r\n").as_bytes());
    req.extend_from_slice(b"cas cas:none 0 0 1 1 noreply\r\nx\r\n");
    req.extend_from_slice(b"get cas:a cas:none\r\n");
    conv(&mut c, &req, &get_reply(b"cas:a", Some((0, b"three"))));

    // Multi-key gets across backends: each block carries its own cas, in
    // request order.
    let ks = keys("cas:m", 12);
    for (i, k) in ks.iter().enumerate() {
        conv(&mut c, &store("set", k, i as u32, k, false), b"STORED\r\n");
    }
    let homes: BTreeSet<usize> = ks.iter().map(|k| cl.home(k)).collect();
    assert!(homes.len() >= 2, "keys all on one backend: {homes:?}");
    c.send(&get_line("gets", &ks));
    let (raw, items) = read_get_reply(&mut c);
    assert_eq!(items.len(), ks.len(), "gets reply {}", show(&raw));
    for (i, (item, k)) in items.iter().zip(&ks).enumerate() {
        assert_eq!(&item.key, k, "block {i} out of order in {}", show(&raw));
        assert_eq!(item.flags, i as u32);
        assert_eq!(&item.data, k);
        let direct = cas_of(&mut cl.backends[cl.home(k)].raw(), k);
        assert_eq!(item.cas, Some(direct), "cas of {}", show(k));
    }
}

#[test]
fn incr_decr_touch_delete_version() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    conv(
        &mut c,
        &store("set", b"n:a", 0, b"10", false),
        b"STORED\r\n",
    );
    conv(&mut c, b"incr n:a 5\r\n", b"15\r\n");
    conv(&mut c, b"decr n:a 3\r\n", b"12\r\n");
    // decr stops at 0; incr wraps at 2^64.
    conv(&mut c, b"decr n:a 100\r\n", b"0\r\n");
    conv(
        &mut c,
        b"incr n:a 18446744073709551615\r\n",
        b"18446744073709551615\r\n",
    );
    conv(&mut c, b"incr n:a 2\r\n", b"1\r\n");
    conv(&mut c, b"incr n:none 1\r\n", b"NOT_FOUND\r\n");
    conv(&mut c, b"decr n:none 1\r\n", b"NOT_FOUND\r\n");
    conv(
        &mut c,
        &store("set", b"n:s", 0, b"abc", false),
        b"STORED\r\n",
    );
    conv(
        &mut c,
        b"incr n:s 1\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    // noreply: silent, yet applied. (memcached rewrites a shorter number
    // in place, padded with spaces to the old length: 20 digits above.)
    let forty = format!("{:<20}", 40).into_bytes();
    conv(
        &mut c,
        b"incr n:a 41 noreply\r\ndecr n:a 2 noreply\r\nincr n:none 1 noreply\r\nget n:a\r\n",
        &get_reply(b"n:a", Some((0, &forty))),
    );

    conv(&mut c, b"touch n:a 1000\r\n", b"TOUCHED\r\n");
    conv(&mut c, b"touch n:none 1000\r\n", b"NOT_FOUND\r\n");
    conv(
        &mut c,
        b"touch n:a 0 noreply\r\ntouch n:none 0 noreply\r\nget n:a\r\n",
        &get_reply(b"n:a", Some((0, &forty))),
    );

    conv(&mut c, b"delete n:a\r\n", b"DELETED\r\n");
    conv(&mut c, b"delete n:a\r\n", b"NOT_FOUND\r\n");
    conv(&mut c, b"get n:a\r\n", b"END\r\n");
    conv(
        &mut c,
        b"delete n:s noreply\r\ndelete n:none noreply\r\nget n:s\r\n",
        b"END\r\n",
    );

    // version: passed through from a backend.
    let mut direct = cl.backends[0].raw();
    direct.send(b"version\r\n");
    let want = direct.recv_line();
    assert!(want.starts_with(b"VERSION "), "{}", show(&want));
    conv(&mut c, b"version\r\n", &want);
    conv(
        &mut c,
        b"version\r\nversion\r\n",
        &[want.clone(), want].concat(),
    );
}

#[test]
fn quit_closes_after_earlier_replies() {
    let cl = Cluster::spread(&[]);
    let mut c = cl.raw();
    c.send(b"quit\r\n");
    c.expect_eof();

    // Replies owed to earlier requests (one a multi-get over several
    // backends) come first; nothing after quit is answered.
    let ks = keys("q:", 8);
    let mut req = Vec::new();
    let mut want = Vec::new();
    for k in &ks {
        req.extend_from_slice(&store("set", k, 1, k, false));
        want.extend_from_slice(b"STORED\r\n");
    }
    req.extend_from_slice(&get_line("get", &ks));
    for k in &ks {
        want.extend_from_slice(&value_block(k, 1, k));
    }
    want.extend_from_slice(b"END\r\n");
    req.extend_from_slice(b"set q:late 0 0 1 noreply\r\nx\r\nquit\r\nget q:0000\r\n");
    let mut c = cl.raw();
    c.send(&req);
    let got = c.recv_until(Until::Eof);
    assert!(
        got == want,
        "expected {}\n     got {}",
        show(&want),
        show(&got)
    );
    let homes: BTreeSet<usize> = ks.iter().map(|k| cl.home(k)).collect();
    assert!(homes.len() >= 2, "keys all on one backend: {homes:?}");
}

#[test]
fn noreply_does_not_stall_pipeline() {
    let cl = Cluster::spread(&[]);
    let mut c = cl.raw();
    conv(
        &mut c,
        b"set a 0 0 1 noreply\r\n1\r\nget a\r\n",
        b"VALUE a 0 1\r\n1\r\nEND\r\n",
    );
    // Many noreply requests to several backends between replied ones.
    let ks = keys("nr:", 40);
    let mut req = Vec::new();
    let mut want = Vec::new();
    for (i, k) in ks.iter().enumerate() {
        req.extend_from_slice(&store("set", k, 0, k, true));
        req.extend_from_slice(format!("incr nr:none {i} noreply\r\n").as_bytes());
        if i % 10 == 9 {
            req.extend_from_slice(&get_line("get", &[k]));
            want.extend_from_slice(&get_reply(k, Some((0, k))));
        }
    }
    req.extend_from_slice(&get_line("get", &ks));
    for k in &ks {
        want.extend_from_slice(&value_block(k, 0, k));
    }
    want.extend_from_slice(b"END\r\n");
    pipeline(&mut c, &req, &want);
    c.expect_silence(Duration::from_millis(100));
}

// ---------------------------------------------------------------------------
// Values near memcached's 1 MiB item limit (docs/compatibility.md §11.1: not limited by -m)

fn large_values(args: &[&str]) {
    let cl = Cluster::start(4, &[], args, &[]);
    let mut c = cl.raw();
    let big = pattern(1_000_000, 7);
    let big2 = pattern(1_000_000 - 1, 8);
    conv(
        &mut c,
        &store("set", b"big:1", 3, &big, false),
        b"STORED\r\n",
    );
    conv(
        &mut c,
        b"get big:1\r\n",
        &get_reply(b"big:1", Some((3, &big))),
    );
    let home = cl.home(b"big:1");
    assert_eq!(cl.backends[home].get(b"big:1").as_deref(), Some(&big[..]));

    // Pipelined: two big sets, a multi-get of both, a small get after.
    let mut req = store("set", b"big:2", 0, &big2, false);
    req.extend_from_slice(&store("set", b"big:1", 1, &big2, false));
    req.extend_from_slice(b"get big:1 big:none big:2\r\nget big:0\r\n");
    let mut want = b"STORED\r\nSTORED\r\n".to_vec();
    want.extend_from_slice(&value_block(b"big:1", 1, &big2));
    want.extend_from_slice(&value_block(b"big:2", 0, &big2));
    want.extend_from_slice(b"END\r\nEND\r\n");
    pipeline(&mut c, &req, &want);

    // Over the item limit: memcached's own error, and the connection stays
    // usable.
    let huge = pattern(1_100_000, 9);
    conv(
        &mut c,
        &store("set", b"big:huge", 0, &huge, false),
        b"SERVER_ERROR object too large for cache\r\n",
    );
    conv(&mut c, b"get big:huge\r\n", b"END\r\n");
    conv(
        &mut c,
        &store("append", b"big:1", 0, b"!", false),
        b"STORED\r\n",
    );
    let mut grown = big2.clone();
    grown.push(b'!');
    conv(
        &mut c,
        b"get big:1\r\n",
        &get_reply(b"big:1", Some((1, &grown))),
    );
}

#[test]
fn large_values_small_mbufs() {
    large_values(&["-m", "512"]);
}

#[test]
fn large_values_default_mbufs() {
    large_values(&[]);
}

// ---------------------------------------------------------------------------
// Multi-get (docs/compatibility.md §8.2, with §13's request order)

/// Keys of 240 bytes through 512-byte chunks: many keys of the get line
/// lie across two chunks, so a fragment's request has keys in two pieces,
/// which the check of the reply's VALUE keys against the keys asked must
/// put together (src/server.rs, `values_asked`).
#[test]
fn multiget_of_keys_cut_by_chunk_boundaries() {
    let cl = Cluster::start(4, &[("hash", "md5")], &["-m", "512"], &[]);
    let mut c = cl.raw();
    let ks: Vec<Vec<u8>> = (0..60)
        .map(|i| format!("{i:03}-{}", "k".repeat(236)).into_bytes())
        .collect();
    let mut req = Vec::new();
    for (i, k) in ks.iter().enumerate() {
        req.extend_from_slice(&store(
            "set",
            k,
            i as u32,
            format!("v{i}").as_bytes(),
            false,
        ));
    }
    pipeline(&mut c, &req, &b"STORED\r\n".repeat(ks.len()));
    let mut want = Vec::new();
    for (i, k) in ks.iter().enumerate() {
        want.extend_from_slice(&value_block(k, i as u32, format!("v{i}").as_bytes()));
    }
    want.extend_from_slice(b"END\r\n");
    // A refused reply would be a SERVER_ERROR here, not the values.
    for _ in 0..3 {
        pipeline(&mut c, &get_line("get", &ks), &want);
    }
}

#[test]
fn multiget_1000_keys_in_request_order() {
    let cl = Cluster::spread(&[]);
    let mut c = cl.raw();
    let ks = keys("mg:", 1000);
    let val = |i: usize| format!("v{i}-").repeat(i % 7 + 1).into_bytes();

    let mut req = Vec::new();
    for (i, k) in ks.iter().enumerate() {
        req.extend_from_slice(&store("set", k, i as u32, &val(i), false));
    }
    pipeline(&mut c, &req, &b"STORED\r\n".repeat(ks.len()));

    let at = cl.locate(&ks);
    let mut per_backend = [0usize; 4];
    for (k, a) in ks.iter().zip(&at) {
        assert_eq!(a.len(), 1, "key {} is on backends {a:?}", show(k));
        per_backend[a[0]] += 1;
    }
    assert!(
        per_backend.iter().all(|&n| n > 0),
        "keys not spread over all 4 backends: {per_backend:?}"
    );

    // All hits: every block in request order, one END.
    let mut want = Vec::new();
    for (i, k) in ks.iter().enumerate() {
        want.extend_from_slice(&value_block(k, i as u32, &val(i)));
    }
    want.extend_from_slice(b"END\r\n");
    pipeline(&mut c, &get_line("get", &ks), &want);

    // Every third key missing: the hits in request order, misses omitted.
    let mut asked = Vec::new();
    let mut want = Vec::new();
    for (i, k) in ks.iter().enumerate() {
        if i % 3 == 2 {
            asked.push(format!("mg:miss{i}").into_bytes());
        } else {
            asked.push(k.clone());
            want.extend_from_slice(&value_block(k, i as u32, &val(i)));
        }
    }
    want.extend_from_slice(b"END\r\n");
    pipeline(&mut c, &get_line("get", &asked), &want);

    // Nothing but misses.
    let misses = keys("mg:nope", 50);
    conv(&mut c, &get_line("get", &misses), b"END\r\n");
    c.expect_silence(Duration::from_millis(50));
}

#[test]
fn multiget_duplicated_keys() {
    let cl = Cluster::spread(&[]);
    let mut c = cl.raw();
    let ks = keys("dup:", 6);
    for k in &ks {
        conv(&mut c, &store("set", k, 2, k, false), b"STORED\r\n");
    }
    let homes: BTreeSet<usize> = ks.iter().map(|k| cl.home(k)).collect();
    assert!(homes.len() >= 2, "keys all on one backend: {homes:?}");
    let order = [0, 1, 0, 0, 5, 1, 3, 5, 5];
    let asked: Vec<&[u8]> = order.iter().map(|&i| ks[i].as_slice()).collect();
    let mut want = Vec::new();
    for k in &asked {
        want.extend_from_slice(&value_block(k, 2, k));
    }
    want.extend_from_slice(b"END\r\n");
    conv(&mut c, &get_line("get", &asked), &want);

    // Duplicated misses mixed in.
    let mixed: Vec<&[u8]> = vec![b"dup:x", &ks[2], b"dup:x", &ks[2], &ks[4]];
    let mut want = value_block(&ks[2], 2, &ks[2]);
    want.extend_from_slice(&value_block(&ks[2], 2, &ks[2]));
    want.extend_from_slice(&value_block(&ks[4], 2, &ks[4]));
    want.extend_from_slice(b"END\r\n");
    conv(&mut c, &get_line("get", &mixed), &want);

    // gets: duplicated blocks carry the same cas.
    c.send(&get_line("gets", &[&ks[3], &ks[3]]));
    let (raw, items) = read_get_reply(&mut c);
    assert_eq!(items.len(), 2, "{}", show(&raw));
    assert_eq!(items[0], items[1]);
}

/// A CR inside a key is a key byte to memcached (only CR LF ends a line),
/// so the proxy relays such keys and reads memcached's `VALUE` lines for
/// them, alone and in a split multi-get; the connection stays in step.
#[test]
fn keys_holding_a_cr_byte() {
    let cl = Cluster::spread(&[]);
    let mut c = cl.raw();
    let mut ks: Vec<Vec<u8>> = (0..8).map(|i| format!("{i}\rcr").into_bytes()).collect();
    ks.push(b"ends-in-cr\r".to_vec());
    for k in &ks {
        conv(&mut c, &store("set", k, 3, b"v", false), b"STORED\r\n");
    }
    let homes: BTreeSet<usize> = ks.iter().map(|k| cl.home(k)).collect();
    assert!(homes.len() >= 2, "keys all on one backend: {homes:?}");
    let one: Vec<&[u8]> = vec![&ks[0]];
    let mut req = get_line("get", &one);
    req.extend_from_slice(b"version\r\n");
    c.send(&req);
    c.expect(&value_block(&ks[0], 3, b"v"));
    c.expect(b"END\r\n");
    let version = c.recv_line();
    assert!(version.starts_with(b"VERSION "), "{}", show(&version));
    // Split over the servers, a miss and a key ending in CR among them.
    let asked: Vec<&[u8]> = vec![&ks[1], b"7\rmiss", &ks[8], &ks[2], &ks[5]];
    let mut want = Vec::new();
    for k in [&ks[1], &ks[8], &ks[2], &ks[5]] {
        want.extend_from_slice(&value_block(k, 3, b"v"));
    }
    want.extend_from_slice(b"END\r\n");
    conv(&mut c, &get_line("get", &asked), &want);
    c.send(b"version\r\n");
    let version = c.recv_line();
    assert!(version.starts_with(b"VERSION "), "{}", show(&version));
}

/// A get line longer than a mebibyte (600,000 keys, memcached and 0.5.0
/// take it) is served, in order, and the connection stays in step.
#[test]
fn multiget_line_over_a_mebibyte() {
    let cl = Cluster::spread(&[]);
    let mut c = cl.raw();
    conv(&mut c, &store("set", b"hit", 1, b"h", false), b"STORED\r\n");
    let mut req = b"get".to_vec();
    for _ in 0..600_000 {
        req.extend_from_slice(b" a");
    }
    req.extend_from_slice(b" hit\r\nversion\r\n");
    assert!(req.len() > 1024 * 1024);
    let mut w = c.writer();
    let writer = std::thread::spawn(move || w.write_all(&req).map(|_| ()));
    c.expect(&value_block(b"hit", 1, b"h"));
    c.expect(b"END\r\n");
    let version = c.recv_line();
    assert!(version.starts_with(b"VERSION "), "{}", show(&version));
    writer.join().expect("writer").expect("write the get line");
}

#[test]
fn pipelined_get_set_delete_mix() {
    let cl = Cluster::spread(&[]);
    let mut c = cl.raw();
    let key = |j: usize| format!("px:{j}").into_bytes();
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..600 {
        match i % 4 {
            0 => {
                let k = key(i % 20);
                let v = format!("val{i}").into_bytes();
                req.extend_from_slice(&store("set", &k, 0, &v, false));
                want.extend_from_slice(b"STORED\r\n");
                model.insert(k, v);
            }
            1 => {
                let k = key(i * 7 % 20);
                req.extend_from_slice(&get_line("get", &[&k]));
                want.extend_from_slice(&get_reply(&k, model.get(&k).map(|v| (0, v.as_slice()))));
            }
            2 => {
                let k = key(i * 11 % 20);
                req.extend_from_slice(&get_line("delete", &[&k]));
                let r: &[u8] = if model.remove(&k).is_some() {
                    b"DELETED\r\n"
                } else {
                    b"NOT_FOUND\r\n"
                };
                want.extend_from_slice(r);
            }
            _ => {
                let ks: Vec<Vec<u8>> = (0..5).map(|n| key((i + n * 3) % 20)).collect();
                req.extend_from_slice(&get_line("get", &ks));
                for k in &ks {
                    if let Some(v) = model.get(k) {
                        want.extend_from_slice(&value_block(k, 0, v));
                    }
                }
                want.extend_from_slice(b"END\r\n");
            }
        }
    }
    pipeline(&mut c, &req, &want);
    c.expect_silence(Duration::from_millis(50));
    // The final state on the backends matches the model.
    let all: Vec<Vec<u8>> = (0..20).map(key).collect();
    for (k, at) in all.iter().zip(cl.locate(&all)) {
        assert_eq!(
            at.len(),
            usize::from(model.contains_key(k)),
            "key {}",
            show(k)
        );
    }
}

// ---------------------------------------------------------------------------
// Malformed requests (docs/compatibility.md §8.1 and §13: reply, then close)

#[test]
fn refused_requests_answer_like_memcached_and_stay_open() {
    // Differential: each line goes to a real memcached and through the
    // proxy, followed by a probe `get`, and both must answer byte for byte
    // the same (the error as memcached words it, then the probe's END:
    // the connection stayed open and in step).
    let cl = Cluster::start(1, &[], &[], &[]);
    let port = cl.proxy.port();
    let k251 = vec![b'k'; 251];
    let k250 = vec![b'k'; 250];
    let mut cases: Vec<Vec<u8>> = [
        &b"GET a\r\n"[..],
        b"foo bar\r\n",
        b"get\r\n",
        b"get \r\n",
        b"delete a 1\r\n",
        b"delete a 0\r\n",
        b"set a 0 0 x\r\nx\r\n",
        b"set a x 0 1\r\nx\r\n",
        b"set a 0 0 1\r\nxyz\r\n",
        b"set a 0 0 1 bogus more\r\nx\r\n",
        b"incr a\r\n",
        b"gat 0 a\r\n",
        b"set a 0 -1 1\r\nx\r\n",
        b"get a\n",
    ]
    .iter()
    .map(|c| c.to_vec())
    .collect();
    cases.push(get_line("get", &[&k251]));
    cases.push(get_line("get", &[&k250[..], &k251[..]]));
    cases.push(store("set", &k251, 0, b"x", false));
    cl.backends[0].set(b"zz", b"PROBE");
    for req in cases {
        let probe = b"get zz\r\n";
        let ask = |port: u16| {
            let mut c = RawConn::connect(port);
            c.send(&[&req[..], probe].concat());
            c.recv_until(Until::Suffix(b"PROBE\r\nEND\r\n"))
        };
        let want = ask(cl.backends[0].port());
        let got = ask(port);
        assert_eq!(show(&got), show(&want), "request {}", show(&req));
    }
    // A 250-byte key is fine.
    let mut c = cl.raw();
    conv(&mut c, &store("set", &k250, 0, b"x", false), b"STORED\r\n");
    conv(
        &mut c,
        &get_line("get", &[&k250]),
        &get_reply(&k250, Some((0, b"x"))),
    );
    // A line whose framing cannot be recovered (the binary protocol's
    // magic byte) is still answered and closed.
    let mut c = RawConn::connect(port);
    c.send(b"\x80\x00\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00a");
    let got = c.recv_until(Until::Eof);
    assert!(
        got == b"ERROR\r\n" || got.starts_with(b"CLIENT_ERROR "),
        "binary: {}",
        show(&got)
    );
}

/// `verbosity` reaches every server (memcached's `stats settings` shows
/// the level), answered as memcached answers it; the connection stays
/// open after a bad level.
#[test]
fn verbosity_reaches_every_server() {
    let cl = Cluster::spread(&[]);
    let level = |b: &Memcached| {
        let mut r = b.raw();
        r.send(b"stats settings\r\n");
        let text = String::from_utf8_lossy(&r.recv_until(Until::Suffix(b"END\r\n"))).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("STAT verbosity "))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut c = cl.raw();
    conv(&mut c, b"verbosity 2\r\n", b"OK\r\n");
    for b in &cl.backends {
        assert_eq!(level(b), "2", "verbosity on every server");
    }
    conv(&mut c, b"verbosity 0 noreply\r\nversion\r\n", b"VERSION ");
    c.recv_line();
    for b in &cl.backends {
        assert_eq!(level(b), "0", "verbosity noreply on every server");
    }
    conv(
        &mut c,
        b"verbosity x\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    );
    conv(&mut c, b"verbosity\r\n", b"ERROR\r\n");
    conv(&mut c, b"verbosity 1 x\r\n", b"OK\r\n");
    conv(&mut c, b"verbosity x noreply\r\nverbosity 0\r\n", b"OK\r\n");
}

/// `stats` is answered by the proxy in memcached's format and `flush_all`
/// reaches every server; the connection stays open after both.
#[test]
fn stats_and_flush_all() {
    let cl = Cluster::spread(&[]);
    let ks = keys("fl:", 40);
    let mut c = cl.raw();
    for k in &ks {
        conv(&mut c, &store("set", k, 0, b"v", false), b"STORED\r\n");
    }
    c.send(b"stats\r\n");
    let text = String::from_utf8_lossy(&c.recv_until(Until::Suffix(b"END\r\n"))).into_owned();
    for stat in ["pid", "uptime", "version", "curr_connections", "requests"] {
        assert!(text.contains(&format!("STAT {stat} ")), "{stat} in {text}");
    }
    assert!(
        text.lines().all(|l| l.starts_with("STAT ") || l == "END"),
        "{text}"
    );
    conv(&mut c, b"flush_all\r\n", b"OK\r\n");
    for b in &cl.backends {
        for k in &ks {
            assert_eq!(b.get(k), None, "flushed on every server");
        }
    }
    conv(&mut c, b"flush_all noreply\r\nget fl:0\r\n", b"END\r\n");
    conv(
        &mut c,
        &store("set", b"fl:0", 0, b"w", false),
        b"STORED\r\n",
    );
    conv(
        &mut c,
        &get_line("get", &[b"fl:0"]),
        &get_reply(b"fl:0", Some((0, b"w"))),
    );
}

#[test]
fn request_split_into_single_bytes() {
    let cl = Cluster::spread(&[]);
    let mut c = cl.raw();
    let ks = keys("sb:", 6);
    let mut req = store("set", b"sb:one", 9, b"hello\r\nworld", false);
    req.extend_from_slice(&store("set", b"sb:two", 0, b"x", true));
    req.extend_from_slice(b"  get sb:one sb:two sb:none\r\n");
    for k in &ks {
        req.extend_from_slice(&store("add", k, 1, k, false));
    }
    req.extend_from_slice(&get_line("gets", &ks));
    req.extend_from_slice(b"incr sb:none 1\r\n");
    let mut want = b"STORED\r\n".to_vec();
    want.extend_from_slice(&value_block(b"sb:one", 9, b"hello\r\nworld"));
    want.extend_from_slice(&value_block(b"sb:two", 0, b"x"));
    want.extend_from_slice(b"END\r\n");
    want.extend_from_slice(&b"STORED\r\n".repeat(ks.len()));

    // Nothing may be answered before a request is complete: check that at
    // a few cut points inside the first request (mid word, mid key, mid
    // data, between CR and LF).
    let cuts = [2usize, 7, 17, 27, 31];
    for (i, byte) in req.iter().enumerate() {
        c.send(std::slice::from_ref(byte));
        if cuts.contains(&i) {
            c.expect_silence(Duration::from_millis(30));
        }
    }
    let got = c.recv_exact(want.len());
    assert!(
        got == want,
        "expected {}\n     got {}",
        show(&want),
        show(&got)
    );
    let (raw, items) = read_get_reply(&mut c);
    let got_keys: Vec<&Vec<u8>> = items.iter().map(|it| &it.key).collect();
    assert_eq!(got_keys, ks.iter().collect::<Vec<_>>(), "{}", show(&raw));
    assert!(items.iter().all(|it| it.cas.is_some() && it.flags == 1));
    c.expect(b"NOT_FOUND\r\n");
}

// ---------------------------------------------------------------------------
// Placement (docs/compatibility.md §5)

#[test]
fn each_key_lands_on_exactly_one_backend() {
    for cl in [Cluster::four(), Cluster::spread(&[])] {
        let mut c = cl.raw();
        let ks: Vec<Vec<u8>> = (0..60)
            .map(|i| format!("place-{}-{i}", i * 7919).into_bytes())
            .collect();
        let mut req = Vec::new();
        for k in &ks {
            req.extend_from_slice(&store("set", k, 0, k, false));
        }
        pipeline(&mut c, &req, &b"STORED\r\n".repeat(ks.len()));
        let at = cl.locate(&ks);
        for (k, a) in ks.iter().zip(&at) {
            assert_eq!(a.len(), 1, "key {} is on backends {a:?}", show(k));
        }
        let used: BTreeSet<usize> = at.iter().map(|a| a[0]).collect();
        assert!(used.len() >= 2, "60 keys all on backends {used:?}");
        // A value stored directly on a key's home is what the proxy serves.
        let home = at[0][0];
        cl.backends[home].set(&ks[0], b"direct");
        conv(
            &mut c,
            &get_line("get", &[&ks[0]]),
            &get_reply(&ks[0], Some((0, b"direct"))),
        );
    }
}

// ---------------------------------------------------------------------------
// Failures (docs/compatibility.md §9 and §13: a failed fragment fails only its command)

#[test]
fn failed_multiget_fragment_keeps_connection() {
    let mut cl = Cluster::spread(&[("timeout", "500")]);
    let mut c = cl.raw();
    let ks = keys("ff:", 40);
    let mut req = Vec::new();
    for k in &ks {
        req.extend_from_slice(&store("set", k, 0, k, false));
    }
    pipeline(&mut c, &req, &b"STORED\r\n".repeat(ks.len()));
    let homes: Vec<usize> = cl.locate(&ks).into_iter().map(|a| a[0]).collect();
    let used: BTreeSet<usize> = homes.iter().copied().collect();
    assert_eq!(used.len(), 4, "40 keys not on all 4 backends: {used:?}");

    // `version` goes to the server of the key `placeholder` (docs/compatibility.md §8.1).
    conv(&mut c, b"set placeholder 0 0 1\r\np\r\n", b"STORED\r\n");
    let version_home = cl.home(b"placeholder");
    c.send(b"version\r\n");
    let version = c.recv_line();
    assert!(version.starts_with(b"VERSION "), "{}", show(&version));

    // The dead server is `placeholder`'s, so `version` fails too.
    let dead = version_home;
    cl.backends[dead].kill();
    let dead_key = ks
        .iter()
        .zip(&homes)
        .find(|(_, &h)| h == dead)
        .map(|(k, _)| k.clone())
        .expect("every backend holds some key");
    let live: Vec<&Vec<u8>> = ks
        .iter()
        .zip(&homes)
        .filter(|(_, &h)| h != dead)
        .map(|(k, _)| k)
        .collect();
    let mut live_reply = Vec::new();
    for k in &live {
        live_reply.extend_from_slice(&value_block(k, 0, k));
    }
    live_reply.extend_from_slice(b"END\r\n");

    for round in 0..2 {
        // The multi-get touching the dead backend fails as one command.
        c.send(&get_line("get", &ks));
        let line = c.recv_line();
        assert!(
            line.starts_with(b"SERVER_ERROR "),
            "round {round}: multi-get over a dead backend got {}",
            show(&line)
        );
        // The connection stays usable for keys on live servers.
        conv(&mut c, &get_line("get", &live), &live_reply);
        // A single-key request to the dead one fails alone too.
        c.send(&get_line("get", &[&dead_key]));
        let line = c.recv_line();
        assert!(line.starts_with(b"SERVER_ERROR "), "{}", show(&line));
        c.send(b"version\r\n");
        let line = c.recv_line();
        assert!(
            line.starts_with(b"SERVER_ERROR "),
            "version via a dead server: {}",
            show(&line)
        );
    }

    // noreply requests to the dead server fail silently.
    let mut req = store("set", &dead_key, 0, b"lost", true);
    req.extend_from_slice(b"delete ");
    req.extend_from_slice(&dead_key);
    req.extend_from_slice(b" noreply\r\n");
    req.extend_from_slice(&get_line("get", &live));
    conv(&mut c, &req, &live_reply);
    c.expect_silence(Duration::from_millis(100));

    // Pipelined: a failing multi-get between two good ones; each reply in
    // its place, then the connection still works.
    let mut req = get_line("get", &live);
    req.extend_from_slice(&get_line("get", &ks));
    req.extend_from_slice(&get_line("get", &live));
    c.send(&req);
    c.expect(&live_reply);
    let line = c.recv_line();
    assert!(line.starts_with(b"SERVER_ERROR "), "{}", show(&line));
    c.expect(&live_reply);
    conv(
        &mut c,
        &store("set", live[0], 5, b"after", false),
        b"STORED\r\n",
    );
    conv(
        &mut c,
        &get_line("get", &[live[0]]),
        &get_reply(live[0], Some((5, b"after"))),
    );
    cl.proxy.assert_alive();
}
