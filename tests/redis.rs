//! Redis proxying end to end: the built `nutcracker` in front of real
//! `redis-server` backends (docs/compatibility.md §13, §5, §7, §9, §11, §12).
//!
//! Each test starts its own backends and proxy on free loopback ports (see
//! `support`), talks to the proxy with byte-exact raw sockets or the
//! `redis` crate, and checks where keys landed with direct connections to
//! the backends. Expected values are redis's own answers, and the proxy's
//! own replies are the strings docs/compatibility.md §7.3, §7.7 and §13 give.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::io::Write as _;
use std::time::{Duration, Instant};
use support::*;

// ---------------------------------------------------------------------------
// Fixtures and small helpers

/// Backends plus a proxy over them. Fields drop in order: the proxy stops
/// before its backends.
struct Cluster {
    proxy: Proxy,
    backends: Vec<Redis>,
}

impl Cluster {
    /// `n` backends behind one pool with `hash_tag: "{}"` plus `opts`.
    fn start(n: usize, opts: &[(&str, &str)], args: &[&str]) -> Cluster {
        let backends = Redis::start_many(n);
        let refs: Vec<&Redis> = backends.iter().collect();
        let mut pool = PoolConf::redis(&refs).hash_tag("{}");
        for (k, v) in opts {
            pool = pool.opt(k, v);
        }
        let proxy = Proxy::start_pools(&[pool], args);
        Cluster { proxy, backends }
    }

    fn four() -> Cluster {
        Cluster::start(4, &[], &[])
    }

    /// Four backends with `hash: md5`, for tests that assert keys spread
    /// over several servers. The default fnv1a_64 multiplies by 0x1b3 only,
    /// so short keys differing in their last bytes (`k1`, `k2`, ...) mostly
    /// share one ketama arc, exactly as in nutcracker 0.5.0 (golden
    /// `placement-redis-fnv1a_64-ketama-addr.tsv`: k1..k20 all on one
    /// server); md5 spreads any key set evenly whatever the ports.
    fn spread() -> Cluster {
        Cluster::start(4, &[("hash", "md5")], &[])
    }

    fn raw(&self) -> RawConn {
        self.proxy.raw()
    }

    fn refs(&self) -> Vec<&Redis> {
        self.backends.iter().collect()
    }

    /// The one backend holding `key`; panics if none or several do.
    fn home(&self, key: &[u8]) -> usize {
        let at = locate(&self.refs(), key);
        assert_eq!(at.len(), 1, "key {} is on backends {at:?}", show(key));
        at[0]
    }

    /// Asserts every key in `keys` sits on the same single backend.
    fn assert_together(&self, keys: &[&str]) {
        let homes: BTreeSet<usize> = keys.iter().map(|k| self.home(k.as_bytes())).collect();
        assert_eq!(homes.len(), 1, "keys {keys:?} are spread over {homes:?}");
    }
}

fn b(s: impl AsRef<[u8]>) -> Resp {
    Resp::bulk(s)
}

fn int(n: i64) -> Resp {
    Resp::Int(n)
}

fn ok() -> Resp {
    Resp::ok()
}

fn nil() -> Resp {
    Resp::nil()
}

fn arr(items: Vec<Resp>) -> Resp {
    Resp::array(items)
}

fn bulks(items: &[&str]) -> Resp {
    arr(items.iter().map(b).collect())
}

fn status(s: &str) -> Resp {
    Resp::Status(s.as_bytes().to_vec())
}

/// Sends `line` (split at spaces) and asserts the parsed reply.
fn ex(c: &mut RawConn, line: &str, want: Resp) {
    let got = c.call_str(line);
    assert_eq!(got, want, "reply to {line:?}");
}

/// Sends `args` and asserts the parsed reply.
fn exa<A: AsRef<[u8]>>(c: &mut RawConn, args: &[A], want: Resp) {
    let got = c.call(args);
    let shown: Vec<String> = args.iter().map(|a| show(a.as_ref())).collect();
    assert_eq!(got, want, "reply to {shown:?}");
}

/// Sends `line` and returns the reply, which must be an error whose text
/// starts with `prefix`.
fn ex_err(c: &mut RawConn, line: &str, prefix: &str) -> String {
    let got = c.call_str(line);
    match &got {
        Resp::Error(e) if e.starts_with(prefix.as_bytes()) => {
            String::from_utf8_lossy(e).into_owned()
        }
        _ => panic!("reply to {line:?}: expected error {prefix:?}..., got {got:?}"),
    }
}

/// The items of an array reply of bulk strings, sorted.
fn sorted_bulks(r: &Resp) -> Vec<Vec<u8>> {
    let Resp::Array(Some(items)) = r else {
        panic!("expected an array, got {r:?}");
    };
    let mut out: Vec<Vec<u8>> = items
        .iter()
        .map(|i| match i {
            Resp::Bulk(Some(v)) => v.clone(),
            other => panic!("expected bulk items, got {other:?} in {r:?}"),
        })
        .collect();
    out.sort();
    out
}

fn int_of(r: &Resp) -> i64 {
    match r {
        Resp::Int(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn items(r: Resp) -> Vec<Resp> {
    match r {
        Resp::Array(Some(items)) => items,
        other => panic!("expected an array, got {other:?}"),
    }
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

/// Asserts the connection is still usable.
fn assert_open(c: &mut RawConn) {
    ex(c, "PING", status("PONG"));
}

// ---------------------------------------------------------------------------
// Command families (docs/compatibility.md §7.2) through a 4-backend pool

#[test]
fn string_commands() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    ex(&mut c, "SET s:1 hello", ok());
    ex(&mut c, "GET s:1", b("hello"));
    ex(&mut c, "GETSET s:1 world", b("hello"));
    ex(&mut c, "APPEND s:1 !!", int(7));
    ex(&mut c, "STRLEN s:1", int(7));
    ex(&mut c, "GET s:1", b("world!!"));
    ex(&mut c, "SET s:n 10", ok());
    ex(&mut c, "INCR s:n", int(11));
    ex(&mut c, "DECR s:n", int(10));
    ex(&mut c, "INCRBY s:n 5", int(15));
    ex(&mut c, "DECRBY s:n 9", int(6));
    ex(&mut c, "INCRBYFLOAT s:n 1.5", b("7.5"));
    ex(&mut c, "SETEX s:ex 100 v", ok());
    let ttl = int_of(&c.call_str("TTL s:ex"));
    assert!((1..=100).contains(&ttl), "TTL {ttl}");
    ex(&mut c, "PSETEX s:px 100000 v", ok());
    let pttl = int_of(&c.call_str("PTTL s:px"));
    assert!((1..=100_000).contains(&pttl), "PTTL {pttl}");
    ex(&mut c, "SETNX s:nx a", int(1));
    ex(&mut c, "SETNX s:nx b", int(0));
    ex(&mut c, "GET s:nx", b("a"));
    exa(&mut c, &["SET", "s:r", "Hello World"], ok());
    ex(&mut c, "SETRANGE s:r 6 Redis", int(11));
    ex(&mut c, "GETRANGE s:r 0 4", b("Hello"));
    ex(&mut c, "GETRANGE s:r -5 -1", b("Redis"));
    ex(&mut c, "GETDEL s:r", b("Hello Redis"));
    ex(&mut c, "GET s:r", nil());
    ex(&mut c, "GETDEL s:r", nil());
    ex(&mut c, "GETEX s:1 EX 100", b("world!!"));
    let ttl = int_of(&c.call_str("TTL s:1"));
    assert!((1..=100).contains(&ttl), "TTL after GETEX {ttl}");
    ex(&mut c, "GETEX s:1 PERSIST", b("world!!"));
    ex(&mut c, "TTL s:1", int(-1));
    ex(&mut c, "SETBIT s:b 7 1", int(0));
    ex(&mut c, "SETBIT s:b 7 1", int(1));
    ex(&mut c, "GETBIT s:b 7", int(1));
    ex(&mut c, "GETBIT s:b 6", int(0));
    ex(&mut c, "BITCOUNT s:b", int(1));
    ex(&mut c, "SET s:bc foobar", ok());
    ex(&mut c, "BITCOUNT s:bc", int(26));
    ex(&mut c, "BITCOUNT s:bc 1 1", int(6));
    ex(&mut c, "BITPOS s:bc 1", int(1));
    ex(&mut c, "BITPOS s:bc 0", int(0));
    ex(&mut c, "SET s:o v NX EX 100", ok());
    ex(&mut c, "SET s:o w NX", nil());
    ex(&mut c, "SET s:o w XX GET", b("v"));
    ex(&mut c, "GET s:o", b("w"));
    // A redis error reply is passed through verbatim (docs/compatibility.md §7.5).
    c.send(&cmd(&["INCR", "s:1"]));
    c.expect(b"-ERR value is not an integer or out of range\r\n");
    c.send(&cmd(&["SET", "s:x"]));
    c.expect(b"-ERR wrong number of arguments for 'set' command\r\n");
    ex(&mut c, "GET s:missing", nil());
    for k in ["s:1", "s:n", "s:ex", "s:px", "s:nx", "s:b", "s:bc", "s:o"] {
        cl.home(k.as_bytes());
    }
}

#[test]
fn key_commands() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    ex(&mut c, "SET k:a v", ok());
    ex(&mut c, "EXPIRE k:a 100", int(1));
    let ttl = int_of(&c.call_str("TTL k:a"));
    assert!((1..=100).contains(&ttl), "TTL {ttl}");
    let pttl = int_of(&c.call_str("PTTL k:a"));
    assert!((1..=100_000).contains(&pttl), "PTTL {pttl}");
    ex(&mut c, "PERSIST k:a", int(1));
    ex(&mut c, "TTL k:a", int(-1));
    ex(&mut c, "PEXPIRE k:a 100000", int(1));
    ex(&mut c, "EXPIREAT k:a 4000000000", int(1));
    ex(&mut c, "PEXPIREAT k:a 4000000000000", int(1));
    ex(&mut c, "PERSIST k:a", int(1));
    ex(&mut c, "TTL k:none", int(-2));
    ex(&mut c, "TYPE k:a", status("string"));
    ex(&mut c, "TYPE k:none", status("none"));
    ex(&mut c, "EXISTS k:a", int(1));
    ex(&mut c, "EXISTS k:none", int(0));

    // DUMP on one key's server, RESTORE on another key's server.
    let Resp::Bulk(Some(dump)) = c.call_str("DUMP k:a") else {
        panic!("DUMP did not return a bulk");
    };
    exa(&mut c, &[&b"RESTORE"[..], b"k:b", b"0", &dump], ok());
    ex(&mut c, "GET k:b", b("v"));
    // -BUSYKEY is an ordinary error (only "-BUSY " is transient, docs/compatibility.md §7.6).
    let e = ex_err(&mut c, "RESTORE k:b 0 x", "BUSYKEY");
    assert!(e.contains("already exists"), "{e}");
    c.send(&cmd(&[&b"RESTORE"[..], b"k:b", b"0", &dump]));
    let (r, _) = c.recv_reply_raw();
    assert!(
        matches!(r, Resp::Error(ref e) if e.starts_with(b"BUSYKEY")),
        "{r:?}"
    );
    ex(&mut c, "DUMP k:none", nil());

    ex(&mut c, "RPUSH k:l 3 1 2", int(3));
    ex(&mut c, "SORT k:l", bulks(&["1", "2", "3"]));
    ex(&mut c, "SORT k:l DESC LIMIT 0 2", bulks(&["3", "2"]));
    ex(&mut c, "SORT k:l ALPHA", bulks(&["1", "2", "3"]));
    ex(&mut c, "SORT {k}:sorted", arr(vec![]));

    ex(&mut c, "SET {k}:src copied", ok());
    ex(&mut c, "COPY {k}:src {k}:dst", int(1));
    ex(&mut c, "COPY {k}:src {k}:dst", int(0));
    ex(&mut c, "GET {k}:dst", b("copied"));
    cl.assert_together(&["{k}:src", "{k}:dst"]);
    for k in ["k:a", "k:b", "k:l"] {
        cl.home(k.as_bytes());
    }
    assert_open(&mut c);
}

#[test]
fn hash_commands() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    ex(&mut c, "HSET h f1 v1 f2 v2", int(2));
    ex(&mut c, "HGET h f1", b("v1"));
    ex(&mut c, "HGET h nope", nil());
    ex(&mut c, "HMSET h f3 v3", ok());
    ex(
        &mut c,
        "HMGET h f1 nope f3",
        arr(vec![b("v1"), nil(), b("v3")]),
    );
    let all = c.call_str("HGETALL h");
    let pairs: BTreeSet<(Vec<u8>, Vec<u8>)> = items(all)
        .chunks(2)
        .map(|p| match p {
            [Resp::Bulk(Some(k)), Resp::Bulk(Some(v))] => (k.clone(), v.clone()),
            other => panic!("HGETALL pair {other:?}"),
        })
        .collect();
    let want: BTreeSet<(Vec<u8>, Vec<u8>)> = [("f1", "v1"), ("f2", "v2"), ("f3", "v3")]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    assert_eq!(pairs, want);
    assert_eq!(sorted_bulks(&c.call_str("HKEYS h")), [b"f1", b"f2", b"f3"]);
    assert_eq!(sorted_bulks(&c.call_str("HVALS h")), [b"v1", b"v2", b"v3"]);
    ex(&mut c, "HLEN h", int(3));
    ex(&mut c, "HEXISTS h f1", int(1));
    ex(&mut c, "HEXISTS h nope", int(0));
    ex(&mut c, "HDEL h f3 nope", int(1));
    ex(&mut c, "HINCRBY h n 5", int(5));
    ex(&mut c, "HINCRBY h n -2", int(3));
    ex(&mut c, "HINCRBYFLOAT h fl 1.5", b("1.5"));
    ex(&mut c, "HSETNX h f1 x", int(0));
    ex(&mut c, "HSETNX h f9 x", int(1));
    ex(&mut c, "HSTRLEN h f1", int(2));
    let scan = items(c.call_str("HSCAN h 0 COUNT 100"));
    assert_eq!(scan.len(), 2, "HSCAN shape");
    assert_eq!(scan[0], b("0"));
    assert_eq!(items(scan[1].clone()).len(), 10, "HSCAN pairs: {scan:?}");
    let Resp::Bulk(Some(f)) = c.call_str("HRANDFIELD h") else {
        panic!("HRANDFIELD");
    };
    assert!(
        [&b"f1"[..], b"f2", b"n", b"fl", b"f9"].contains(&f.as_slice()),
        "{f:?}"
    );
    assert_eq!(items(c.call_str("HRANDFIELD h -4 WITHVALUES")).len(), 8);
    ex(&mut c, "SET h:str x", ok());
    let e = ex_err(&mut c, "HGET h:str f", "WRONGTYPE");
    assert!(e.contains("wrong kind of value"), "{e}");
    cl.home(b"h");
}

#[test]
fn list_commands() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    ex(&mut c, "RPUSH {l}a a b c", int(3));
    ex(&mut c, "LPUSH {l}a z", int(4));
    ex(&mut c, "LRANGE {l}a 0 -1", bulks(&["z", "a", "b", "c"]));
    ex(&mut c, "LINSERT {l}a BEFORE b x", int(5));
    ex(&mut c, "LINSERT {l}a AFTER nope y", int(-1));
    ex(&mut c, "LINDEX {l}a 2", b("x"));
    ex(&mut c, "LLEN {l}a", int(5));
    ex(&mut c, "LPOS {l}a c", int(4));
    ex(&mut c, "LPOS {l}a nope", nil());
    ex(&mut c, "LSET {l}a 0 y", ok());
    ex(&mut c, "LREM {l}a 1 x", int(1));
    ex(&mut c, "LRANGE {l}a 0 -1", bulks(&["y", "a", "b", "c"]));
    ex(&mut c, "LMOVE {l}a {l}b LEFT RIGHT", b("y"));
    ex(&mut c, "RPOPLPUSH {l}a {l}b", b("c"));
    ex(&mut c, "LRANGE {l}b 0 -1", bulks(&["c", "y"]));
    ex(&mut c, "LPOP {l}a", b("a"));
    ex(&mut c, "RPOP {l}a", b("b"));
    ex(&mut c, "LLEN {l}a", int(0));
    ex(&mut c, "LPOP {l}a", nil());
    ex(&mut c, "LPUSHX {l}a q", int(0));
    ex(&mut c, "RPUSHX {l}b q", int(3));
    ex(&mut c, "RPUSH plain 1 2 3 4 5", int(5));
    ex(&mut c, "LTRIM plain 1 3", ok());
    ex(&mut c, "LRANGE plain 0 -1", bulks(&["2", "3", "4"]));
    ex(&mut c, "LPOP plain 2", bulks(&["2", "3"]));
    ex(&mut c, "LRANGE nolist 0 -1", arr(vec![]));
    ex(&mut c, "RPUSH {l}a again", int(1));
    cl.assert_together(&["{l}a", "{l}b"]);
    cl.home(b"plain");
    assert_open(&mut c);
}

#[test]
fn set_commands() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    ex(&mut c, "SADD s a b c", int(3));
    ex(&mut c, "SADD s a", int(0));
    assert_eq!(sorted_bulks(&c.call_str("SMEMBERS s")), [b"a", b"b", b"c"]);
    ex(&mut c, "SCARD s", int(3));
    ex(&mut c, "SISMEMBER s a", int(1));
    ex(
        &mut c,
        "SMISMEMBER s a zz c",
        arr(vec![int(1), int(0), int(1)]),
    );
    let Resp::Bulk(Some(m)) = c.call_str("SRANDMEMBER s") else {
        panic!("SRANDMEMBER");
    };
    assert!([&b"a"[..], b"b", b"c"].contains(&m.as_slice()), "{m:?}");
    assert_eq!(items(c.call_str("SRANDMEMBER s 2")).len(), 2);
    let scan = items(c.call_str("SSCAN s 0"));
    assert_eq!(scan.len(), 2);
    assert_eq!(scan[0], b("0"));
    assert_eq!(sorted_bulks(&scan[1]), [b"a", b"b", b"c"]);
    ex(&mut c, "SADD {t}x 1 2 3", int(3));
    ex(&mut c, "SADD {t}y 2 3 4", int(3));
    assert_eq!(sorted_bulks(&c.call_str("SINTER {t}x {t}y")), [b"2", b"3"]);
    assert_eq!(
        sorted_bulks(&c.call_str("SUNION {t}x {t}y")),
        [b"1", b"2", b"3", b"4"]
    );
    ex(&mut c, "SDIFF {t}x {t}y", bulks(&["1"]));
    ex(&mut c, "SINTERSTORE {t}z {t}x {t}y", int(2));
    ex(&mut c, "SMOVE {t}x {t}y 1", int(1));
    ex(&mut c, "SCARD {t}y", int(4));
    ex(&mut c, "SREM {t}y 1 4 9", int(2));
    let popped = c.call_str("SPOP {t}z");
    assert!(popped == b("2") || popped == b("3"), "{popped:?}");
    ex(&mut c, "SMEMBERS nope", arr(vec![]));
    cl.assert_together(&["{t}x", "{t}y", "{t}z"]);
    cl.home(b"s");
}

#[test]
fn sorted_set_commands() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    ex(&mut c, "ZADD z 1 a 2 b 3 c", int(3));
    ex(
        &mut c,
        "ZRANGE z 0 -1 WITHSCORES",
        bulks(&["a", "1", "b", "2", "c", "3"]),
    );
    ex(&mut c, "ZRANGEBYSCORE z 2 +inf", bulks(&["b", "c"]));
    ex(&mut c, "ZREVRANGE z 0 0", bulks(&["c"]));
    ex(&mut c, "ZSCORE z b", b("2"));
    ex(&mut c, "ZSCORE z nope", nil());
    ex(&mut c, "ZRANK z c", int(2));
    ex(&mut c, "ZREVRANK z c", int(0));
    ex(&mut c, "ZRANK z nope", nil());
    ex(&mut c, "ZINCRBY z 5 a", b("6"));
    ex(&mut c, "ZCARD z", int(3));
    ex(&mut c, "ZCOUNT z 2 3", int(2));
    ex(&mut c, "ZMSCORE z a nope", arr(vec![b("6"), nil()]));
    ex(&mut c, "ZPOPMIN z", bulks(&["b", "2"]));
    ex(
        &mut c,
        "ZSCAN z 0",
        arr(vec![b("0"), bulks(&["c", "3", "a", "6"])]),
    );
    ex(&mut c, "ZREM z c", int(1));
    ex(&mut c, "ZADD {z}1 1 a 2 b", int(2));
    ex(&mut c, "ZADD {z}2 10 b 20 c", int(2));
    ex(&mut c, "ZUNIONSTORE {z}u 2 {z}1 {z}2", int(3));
    ex(
        &mut c,
        "ZRANGE {z}u 0 -1 WITHSCORES",
        bulks(&["a", "1", "b", "12", "c", "20"]),
    );
    ex(&mut c, "ZINTERSTORE {z}i 2 {z}1 {z}2 WEIGHTS 1 0", int(1));
    ex(&mut c, "ZRANGE {z}i 0 -1", bulks(&["b"]));
    ex(&mut c, "ZRANGEBYLEX {z}1 - +", bulks(&["a", "b"]));
    cl.assert_together(&["{z}1", "{z}2", "{z}u", "{z}i"]);
    cl.home(b"z");
}

#[test]
fn hyperloglog_and_geo_commands() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    ex(&mut c, "PFADD hll a b c d", int(1));
    ex(&mut c, "PFADD hll a", int(0));
    ex(&mut c, "PFCOUNT hll", int(4));
    ex(&mut c, "PFADD {h}x a b", int(1));
    ex(&mut c, "PFADD {h}y b c", int(1));
    ex(&mut c, "PFMERGE {h}m {h}x {h}y", ok());
    ex(&mut c, "PFCOUNT {h}m", int(3));
    ex(&mut c, "PFCOUNT {h}x {h}y", int(3));
    cl.assert_together(&["{h}x", "{h}y", "{h}m"]);

    ex(
        &mut c,
        "GEOADD Sicily 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
        int(2),
    );
    ex(&mut c, "GEODIST Sicily Palermo Catania", b("166274.1516"));
    ex(&mut c, "GEODIST Sicily Palermo Catania km", b("166.2742"));
    // Missing members are null arrays inside the array (docs/compatibility.md §7.5).
    c.send(&cmd(&["GEOPOS", "Sicily", "Palermo", "Nowhere"]));
    let (r, raw) = c.recv_reply_raw();
    assert!(raw.ends_with(b"*-1\r\n"), "{}", show(&raw));
    let pos = items(r);
    assert_eq!(pos.len(), 2);
    assert_eq!(pos[1], Resp::Array(None));
    let lonlat = items(pos[0].clone());
    let lon: f64 = match &lonlat[0] {
        Resp::Bulk(Some(v)) => String::from_utf8_lossy(v).parse().unwrap_or(0.0),
        other => panic!("{other:?}"),
    };
    assert!((lon - 13.361389).abs() < 1e-4, "{lon}");
    ex(
        &mut c,
        "GEOSEARCH Sicily FROMLONLAT 15 37 BYRADIUS 200 km ASC",
        bulks(&["Catania", "Palermo"]),
    );
    ex(&mut c, "GEOHASH Sicily Palermo", bulks(&["sqc8b49rny0"]));
    ex(
        &mut c,
        "GEORADIUS Sicily 15 37 100 km ASC",
        bulks(&["Catania"]),
    );
    cl.home(b"hll");
    cl.home(b"Sicily");
}

#[test]
fn eval_and_evalsha_route_by_first_key() {
    let cl = Cluster::spread();
    let mut c = cl.raw();
    let set_script = "return redis.call('SET', KEYS[1], ARGV[1])";
    for i in 0..24 {
        let key = format!("ev:{i}");
        let val = format!("val{i}");
        exa(&mut c, &["EVAL", set_script, "1", &key, &val], ok());
        // The key is where a GET (routed by the same key) finds it.
        exa(&mut c, &["GET", &key], b(&val));
        cl.home(key.as_bytes());
    }
    let homes: HashSet<usize> = (0..24)
        .map(|i| cl.home(format!("ev:{i}").as_bytes()))
        .collect();
    assert!(homes.len() > 1, "EVAL keys all on one backend: {homes:?}");

    // Nested arrays, integers and a status inside an array pass through.
    let nested = "return {KEYS[1], ARGV[1], {1, 2, {'x'}}, redis.call('SET', KEYS[1], ARGV[1])}";
    c.send(&cmd(&["EVAL", nested, "1", "ev:n", "hello"]));
    c.expect(b"*4\r\n$4\r\nev:n\r\n$5\r\nhello\r\n*3\r\n:1\r\n:2\r\n*1\r\n$1\r\nx\r\n+OK\r\n");
    // A script error is redis's error, passed through.
    let e = ex_err(
        &mut c,
        "EVAL return(redis.call('INCR',KEYS[1])) 1 ev:n",
        "ERR",
    );
    assert!(e.contains("not an integer"), "{e}");

    // EVALSHA: load the script on every backend directly, then run it
    // through the proxy for keys that live on different servers.
    let get_script = "return {KEYS[1], redis.call('GET', KEYS[1])}";
    let mut sha = String::new();
    for r in &cl.backends {
        let mut d = r.client();
        sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(get_script)
            .query(&mut d)
            .expect("SCRIPT LOAD");
    }
    for i in 0..24 {
        let key = format!("ev:{i}");
        exa(
            &mut c,
            &["EVALSHA", &sha, "1", &key],
            arr(vec![b(&key), b(format!("val{i}"))]),
        );
    }
    let e = ex_err(
        &mut c,
        "EVALSHA 0000000000000000000000000000000000000000 1 ev:1",
        "NOSCRIPT",
    );
    assert!(!e.is_empty());
    assert_open(&mut c);
}

#[test]
fn command_reply_is_a_nested_array() {
    for args in [&[][..], &["-m", "512"][..]] {
        let backends = Redis::start_many(2);
        let refs: Vec<&Redis> = backends.iter().collect();
        let proxy = Proxy::redis(&refs, &[], args);
        let mut c = proxy.raw();
        c.send(&cmd(&["COMMAND"]));
        let (reply, raw) = c.recv_reply_raw();
        // Same bytes as redis itself sends. The command table is a hash
        // table whose seed each redis-server picks at random, so the two
        // backends list commands (and subcommands) in different orders, but
        // each lists them the same way every time: the proxy's reply must
        // be exactly the reply of one of them (COMMAND has no key, so which
        // one is the proxy's choice).
        let direct: Vec<Vec<u8>> = backends
            .iter()
            .map(|b| {
                let mut d = b.raw();
                d.send(&cmd(&["COMMAND"]));
                d.recv_reply_raw().1
            })
            .collect();
        assert!(
            direct.contains(&raw),
            "COMMAND through the proxy ({} bytes) is neither backend's reply ({} and {} bytes) {args:?}",
            raw.len(),
            direct[0].len(),
            direct[1].len()
        );
        let entries = items(reply);
        assert!(entries.len() > 100, "only {} commands", entries.len());
        let get = entries
            .iter()
            .map(|e| items(e.clone()))
            .find(|e| e.first() == Some(&b("get")))
            .expect("COMMAND lists get");
        assert_eq!(get[1], int(2), "arity of get");
        assert!(matches!(get[2], Resp::Array(Some(_))), "flags array");
        assert_open(&mut c);
        // A second one on the same connection works too.
        c.send(&cmd(&["COMMAND"]));
        let (_, again) = c.recv_reply_raw();
        assert!(direct.contains(&again), "second COMMAND {args:?}");
    }
}

/// A stock `redis` crate client (which pipelines `CLIENT SETINFO` on
/// connect, unsupported by the proxy) works: the unsupported command gets
/// an error and the connection stays open (docs/compatibility.md §13).
#[test]
fn default_redis_rs_client_works() {
    let cl = Cluster::start(2, &[], &[]);
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{}/", cl.proxy.port())).expect("client");
    let mut con = client
        .get_connection_with_timeout(WAIT)
        .expect("connect through the proxy with a default redis-rs client");
    con.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    let _: () = redis::cmd("SET")
        .arg("rs:k")
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let v: String = redis::cmd("GET").arg("rs:k").query(&mut con).expect("GET");
    assert_eq!(v, "v");
    let vals: Vec<Option<String>> = redis::cmd("MGET")
        .arg("rs:k")
        .arg("rs:missing")
        .arg("rs:k")
        .query(&mut con)
        .expect("MGET");
    assert_eq!(vals, [Some("v".to_string()), None, Some("v".to_string())]);
}

// ---------------------------------------------------------------------------
// Values, keys and mbufs (docs/compatibility.md §7.1, §11)

#[test]
fn binary_and_empty_values_and_keys() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    let all: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    exa(&mut c, &[&b"SET"[..], b"bin", &all], ok());
    exa(&mut c, &[&b"GET"[..], b"bin"], b(&all));
    let tricky = b"\r\n$5\r\n*1\r\n\0\r\n-ERR x\r\n";
    exa(&mut c, &[&b"SET"[..], b"tricky", tricky], ok());
    c.send(&cmd(&[&b"GET"[..], b"tricky"]));
    let mut want = format!("${}\r\n", tricky.len()).into_bytes();
    want.extend_from_slice(tricky);
    want.extend_from_slice(b"\r\n");
    c.expect(&want);
    // Binary key.
    let bkey = b"k\0\r\n\xff\xfe*$";
    exa(&mut c, &[&b"SET"[..], bkey, b"bv"], ok());
    exa(&mut c, &[&b"GET"[..], bkey], b("bv"));
    cl.home(bkey);
    // Empty value.
    exa(&mut c, &["SET", "empty", ""], ok());
    c.send(&cmd(&["GET", "empty"]));
    c.expect(b"$0\r\n\r\n");
    exa(&mut c, &["STRLEN", "empty"], int(0));
    // Empty key (hash value 0, docs/compatibility.md §5.1).
    exa(&mut c, &["SET", "", "for-empty-key"], ok());
    exa(&mut c, &["GET", ""], b("for-empty-key"));
    exa(&mut c, &["EXISTS", ""], int(1));
    let home = cl.home(b"");
    assert_eq!(cl.backends[home].get(b""), Some(b"for-empty-key".to_vec()));
    // Empty key inside a fragmented command.
    exa(
        &mut c,
        &["MGET", "", "empty", "nope"],
        arr(vec![b("for-empty-key"), b(""), nil()]),
    );
    exa(&mut c, &["DEL", "", "empty"], int(2));
    exa(&mut c, &["GET", ""], nil());
}

#[test]
fn eight_mib_value() {
    let cl = Cluster::start(2, &[], &[]);
    let big = pattern(8 << 20, 8);
    let mut con = cl.proxy.client();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut con)
        .expect("SET 8 MiB");
    let got: Vec<u8> = redis::cmd("GET")
        .arg("big")
        .query(&mut con)
        .expect("GET 8 MiB");
    assert!(got == big, "8 MiB value differs (got {} bytes)", got.len());
    let home = cl.home(b"big");
    assert_eq!(
        cl.backends[home].get(b"big").map(|v| v.len()),
        Some(big.len())
    );
    let n: i64 = redis::cmd("STRLEN")
        .arg("big")
        .query(&mut con)
        .expect("STRLEN");
    assert_eq!(n, 8 << 20);
}

/// docs/compatibility.md §13 and §11.2: with `-m 512` a key longer than one mbuf is served.
#[test]
fn keys_longer_than_one_mbuf() {
    let cl = Cluster::start(4, &[], &["-m", "512"]);
    let mut c = cl.raw();
    for len in [463usize, 464, 465, 2000] {
        let key: Vec<u8> = pattern(len, len as u64)
            .into_iter()
            .map(|x| b'a' + x % 26)
            .collect();
        let val = format!("value-of-{len}");
        exa(&mut c, &[&b"SET"[..], &key, val.as_bytes()], ok());
        exa(&mut c, &[&b"GET"[..], &key], b(&val));
        let home = cl.home(&key);
        assert_eq!(cl.backends[home].get(&key), Some(val.into_bytes()));
    }
    // Long keys inside fragmented commands.
    let k1 = "x".repeat(2000);
    let k2 = "y".repeat(2000);
    let k3 = "z".repeat(1500);
    exa(&mut c, &["MSET", &k1, "1", &k2, "2", &k3, "3"], ok());
    exa(
        &mut c,
        &["MGET", &k3, "short", &k1, &k2],
        arr(vec![b("3"), nil(), b("1"), b("2")]),
    );
    exa(&mut c, &["EXISTS", &k1, &k2, &k3, "short"], int(3));
    exa(&mut c, &["DEL", &k1, &k2, &k3], int(3));
    assert_open(&mut c);
}

/// Values of sizes around the mbuf boundaries, single and fragmented.
fn big_values(cl: &Cluster, mbuf: usize) {
    let data = mbuf - 48;
    let mut sizes = vec![0, 1, 100, 1000, 100_000, 1_000_000];
    sizes.extend([
        data - 1,
        data,
        data + 1,
        2 * data,
        3 * data + 7,
        mbuf,
        5 * mbuf,
    ]);
    let mut c = cl.raw();
    let keys: Vec<String> = sizes.iter().map(|s| format!("bv:{mbuf}:{s}")).collect();
    let vals: Vec<Vec<u8>> = sizes.iter().map(|&s| pattern(s, s as u64 + 1)).collect();
    for (k, v) in keys.iter().zip(&vals) {
        exa(&mut c, &[&b"SET"[..], k.as_bytes(), v], ok());
        exa(&mut c, &[&b"GET"[..], k.as_bytes()], b(v));
    }
    // All at once through MGET (fragments from every backend).
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(keys.iter().map(|k| k.as_bytes()));
    mget.push(b"bv:missing");
    let mut want: Vec<Resp> = vals.iter().map(b).collect();
    want.push(nil());
    exa(&mut c, &mget, arr(want));
    // MSET with big values spread over servers, then read back.
    let mut mset: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for (i, v) in vals.iter().enumerate() {
        mset.push(format!("bm:{mbuf}:{i}").into_bytes());
        mset.push(v.iter().rev().copied().collect());
    }
    exa(&mut c, &mset, ok());
    for (i, v) in vals.iter().enumerate() {
        let rev: Vec<u8> = v.iter().rev().copied().collect();
        exa(
            &mut c,
            &["GET".to_string(), format!("bm:{mbuf}:{i}")],
            b(rev),
        );
    }
    // A pipeline of big requests written at once, read after.
    let mut pipe = Vec::new();
    for k in &keys {
        pipe.extend(cmd(&[&b"APPEND"[..], k.as_bytes(), b"!"]));
        pipe.extend(cmd(&[&b"GETRANGE"[..], k.as_bytes(), b"-3", b"-1"]));
    }
    let mut w = c.writer();
    let writer = std::thread::spawn(move || w.write_all(&pipe).map(|_| ()));
    for v in &vals {
        assert_eq!(c.recv_reply(), int(v.len() as i64 + 1));
        let mut tail = v[v.len().saturating_sub(2)..].to_vec();
        tail.push(b'!');
        assert_eq!(c.recv_reply(), b(tail));
    }
    writer.join().expect("writer").expect("write pipeline");
}

/// A bit of everything, pipelined and not: the same checks must hold
/// whatever the mbuf size.
fn mixed_workload(cl: &Cluster) {
    let mut c = cl.raw();
    // List with many elements: a long array reply.
    let mut push: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"mx:list".to_vec()];
    for i in 0..2000 {
        push.push(format!("element-{i:05}").into_bytes());
    }
    exa(&mut c, &push, int(2000));
    let all = items(c.call_str("LRANGE mx:list 0 -1"));
    assert_eq!(all.len(), 2000);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(*e, b(format!("element-{i:05}")));
    }
    // Hash with large field values.
    for i in 0..20 {
        let v = pattern(3000 + i * 100, i as u64);
        exa(
            &mut c,
            &[&b"HSET"[..], b"mx:hash", format!("f{i}").as_bytes(), &v],
            int(1),
        );
    }
    ex(&mut c, "HLEN mx:hash", int(20));
    assert_eq!(items(c.call_str("HGETALL mx:hash")).len(), 40);
    // Pipelined mix of single-key, fragmented and local commands.
    let mut pipe = Vec::new();
    let mut want = Vec::new();
    for i in 0..300 {
        let k = format!("mx:{i}");
        let v = format!("v{i}-{}", "p".repeat(i % 97));
        pipe.extend(cmd(&["SET", &k, &v]));
        want.push(Some(ok()));
        pipe.extend(cmd(&["PING"]));
        want.push(Some(status("PONG")));
        pipe.extend(cmd(&["MGET", &k, "mx:none", &format!("mx:{}", i / 2)]));
        let half = format!("v{}-{}", i / 2, "p".repeat((i / 2) % 97));
        want.push(Some(arr(vec![b(&v), nil(), b(half)])));
        pipe.extend(cmd(&["INCR", "mx:counter"]));
        want.push(Some(int(i as i64 + 1)));
        if i % 50 == 49 {
            // COMMAND: a big nested reply, checked by shape (None).
            pipe.extend(cmd(&["COMMAND"]));
            want.push(None);
        }
    }
    let mut w = c.writer();
    let writer = std::thread::spawn(move || w.write_all(&pipe).map(|_| ()));
    for (n, exp) in want.iter().enumerate() {
        let got = c.recv_reply();
        match exp {
            None => assert!(items(got).len() > 100, "COMMAND reply #{n}"),
            Some(exp) => assert_eq!(got, *exp, "pipelined reply #{n}"),
        }
    }
    writer.join().expect("writer").expect("write pipeline");
    let keys: Vec<String> = (0..300).map(|i| format!("mx:{i}")).collect();
    let mut del: Vec<&str> = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    exa(&mut c, &del, int(300));
}

#[test]
fn values_and_mixed_workload_mbuf_512() {
    let cl = Cluster::start(4, &[], &["-m", "512"]);
    big_values(&cl, 512);
    mixed_workload(&cl);
    assert_open(&mut cl.raw());
}

#[test]
fn values_and_mixed_workload_mbuf_16384() {
    let cl = Cluster::start(4, &[], &["-m", "16384"]);
    big_values(&cl, 16384);
    mixed_workload(&cl);
    assert_open(&mut cl.raw());
}

// ---------------------------------------------------------------------------
// Pipelining and ordering (docs/compatibility.md §7.5, §12)

#[test]
fn ten_thousand_pipelined_commands() {
    let cl = Cluster::spread();
    let n = 10_000;
    let mut pipe = Vec::new();
    for i in 0..n {
        pipe.extend(cmd(&["SET", &format!("p:{i}"), &format!("value-{i}")]));
        pipe.extend(cmd(&["GET", &format!("p:{i}")]));
    }
    let mut c = cl.raw();
    let mut w = c.writer();
    let writer = std::thread::spawn(move || w.write_all(&pipe).map(|_| ()));
    for i in 0..n {
        let r = c.recv_reply();
        assert_eq!(r, ok(), "reply to SET p:{i}");
        let r = c.recv_reply();
        assert_eq!(r, b(format!("value-{i}")), "reply to GET p:{i}");
    }
    writer.join().expect("writer").expect("write pipeline");
    let total: i64 = cl.backends.iter().map(|r| r.dbsize()).sum();
    assert_eq!(total, n as i64);
    assert!(cl.backends.iter().all(|r| r.dbsize() > 0));
}

/// 40 keys `<prefix>:<i>` set to their own names, and those not on the
/// first key's backend (the first key is the slow one of the tests below).
fn slow_and_fast_keys(cl: &Cluster, c: &mut RawConn, prefix: &str) -> (Vec<String>, Vec<String>) {
    let keys: Vec<String> = (0..40).map(|i| format!("{prefix}:{i}")).collect();
    for k in &keys {
        exa(c, &["SET", k, k], ok());
    }
    let slow_home = cl.home(keys[0].as_bytes());
    let fast: Vec<String> = keys
        .iter()
        .filter(|k| cl.home(k.as_bytes()) != slow_home)
        .cloned()
        .collect();
    assert!(!fast.is_empty(), "all keys on one backend");
    (keys, fast)
}

/// A script that busy-waits `micros` on its server, then GETs KEYS[1].
fn busy_get(micros: u64) -> String {
    format!(
        "local t = redis.call('TIME') local s = t[1]*1000000 + t[2] \
        while true do local n = redis.call('TIME') \
        if n[1]*1000000 + n[2] - s > {micros} then break end end \
        return redis.call('GET', KEYS[1])"
    )
}

/// A reply that a slow server produces late still comes back before the
/// replies of later requests that a fast server answered first.
#[test]
fn replies_in_request_order_across_servers() {
    let cl = Cluster::spread();
    let mut c = cl.raw();
    let (keys, fast) = slow_and_fast_keys(&cl, &mut c, "ord");
    let slow = &keys[0];
    // Busy-waits ~150 ms on the slow key's server.
    let script = busy_get(150_000);
    let mut pipe = cmd(&["EVAL", script.as_str(), "1", slow]);
    for k in &fast {
        pipe.extend(cmd(&["GET", k]));
    }
    pipe.extend(cmd(&["PING"]));
    let mut mget: Vec<&str> = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    pipe.extend(cmd(&mget));
    c.send(&pipe);
    assert_eq!(c.recv_reply(), b(slow));
    for k in &fast {
        assert_eq!(c.recv_reply(), b(k), "GET {k} out of order");
    }
    assert_eq!(c.recv_reply(), status("PONG"));
    assert_eq!(c.recv_reply(), arr(keys.iter().map(b).collect()));

    // Many GETs over all servers, pipelined in one write.
    let mut pipe = Vec::new();
    for round in 0..50 {
        for k in keys.iter().skip(round % 7) {
            pipe.extend(cmd(&["GET", k]));
        }
    }
    c.send(&pipe);
    for round in 0..50 {
        for k in keys.iter().skip(round % 7) {
            assert_eq!(c.recv_reply(), b(k), "round {round}");
        }
    }
}

/// Ready replies of a pipeline wait for the rest of it only briefly
/// (docs/compatibility.md §13.6): with the last request stuck for 3 s on a
/// busy server, the replies before it arrive long before it.
#[test]
fn ready_replies_do_not_wait_for_a_slow_one_behind_them() {
    let cl = Cluster::spread();
    let mut c = cl.raw();
    let (keys, fast) = slow_and_fast_keys(&cl, &mut c, "wait");
    let slow = &keys[0];
    let script = busy_get(3_000_000);
    let mut pipe = Vec::new();
    for k in &fast {
        pipe.extend(cmd(&["GET", k]));
    }
    pipe.extend(cmd(&["EVAL", script.as_str(), "1", slow]));
    let sent = Instant::now();
    c.send(&pipe);
    for k in &fast {
        assert_eq!(c.recv_reply(), b(k));
    }
    let fast_in = sent.elapsed();
    assert_eq!(c.recv_reply(), b(slow));
    let slow_in = sent.elapsed();
    assert!(
        slow_in >= Duration::from_millis(2900),
        "the script ran {slow_in:?}"
    );
    // Generous: the ready replies are held 2 ms at most, the script 3 s.
    assert!(
        fast_in < Duration::from_millis(2000),
        "ready replies waited {fast_in:?} for the slow one"
    );
}

/// `threads` clients at once, each doing `ops` operations on its own keys
/// plus a shared counter and cross-server MGETs.
fn many_clients(server_connections: &str, pipelined: bool) {
    let threads = 20;
    let ops = 500;
    let cl = Cluster::start(4, &[("server_connections", server_connections)], &[]);
    let port = cl.proxy.port();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut c = RawConn::connect(port);
                    if pipelined {
                        // Safe only with one server connection: then the
                        // SET reaches redis before the GET behind it.
                        let mut pipe = Vec::new();
                        for i in 0..ops {
                            let k = format!("mc:{t}:{i}");
                            pipe.extend(cmd(&["SET", &k, &format!("{t}-{i}")]));
                            pipe.extend(cmd(&["GET", &k]));
                            pipe.extend(cmd(&["INCR", "mc:counter"]));
                        }
                        c.send(&pipe);
                        for i in 0..ops {
                            assert_eq!(c.recv_reply(), ok());
                            assert_eq!(c.recv_reply(), b(format!("{t}-{i}")));
                            assert!(int_of(&c.recv_reply()) >= 1);
                        }
                    } else {
                        for i in 0..ops {
                            let k = format!("mc:{t}:{i}");
                            let v = format!("{t}-{i}");
                            match i % 5 {
                                0 | 1 => exa(&mut c, &["SET", &k, &v], ok()),
                                2 => {
                                    exa(&mut c, &["SET", &k, &v], ok());
                                    exa(&mut c, &["GET", &k], b(&v));
                                }
                                3 => {
                                    let p1 = format!("mc:{t}:{}", i - 3);
                                    let p2 = format!("mc:{t}:{}", i - 1);
                                    exa(
                                        &mut c,
                                        &["MGET", &p1, "mc:none", &p2],
                                        arr(vec![
                                            b(format!("{t}-{}", i - 3)),
                                            nil(),
                                            b(format!("{t}-{}", i - 1)),
                                        ]),
                                    );
                                }
                                _ => {
                                    assert!(int_of(&c.call_str("INCR mc:counter")) >= 1);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("client thread");
        }
    });
    let mut c = cl.raw();
    let want = if pipelined {
        threads * ops
    } else {
        threads * ops / 5
    };
    ex(&mut c, "GET mc:counter", b(want.to_string()));
    let total: i64 = cl.backends.iter().map(|r| r.dbsize()).sum();
    let keys_per_thread = if pipelined { ops } else { ops * 3 / 5 };
    assert_eq!(total, (threads * keys_per_thread + 1) as i64);
}

#[test]
fn many_clients_one_server_connection() {
    many_clients("1", true);
}

#[test]
fn many_clients_three_server_connections() {
    many_clients("3", false);
}

#[test]
fn client_disconnecting_with_requests_in_flight() {
    let mut cl = Cluster::start(4, &[], &["-i", "100"]);
    let value = "v".repeat(1000);
    for round in 0..6 {
        let mut pipe = Vec::new();
        for i in 0..1000 {
            let k = format!("fl:{round}:{i}");
            pipe.extend(cmd(&["SET", &k, &value]));
            pipe.extend(cmd(&["MGET", &k, "fl:a", "fl:b", "fl:c", "fl:d"]));
        }
        let c = cl.raw();
        if round % 2 == 1 {
            c.set_linger_zero();
        }
        let mut w = c.writer();
        // The write may fail once the proxy notices the close: fine.
        let _ = w.write_all(&pipe);
        drop(w);
        drop(c);
        // A new client is served at once, with its own replies.
        let mut c = cl.raw();
        assert_open(&mut c);
        exa(&mut c, &["SET", "fl:after", &round.to_string()], ok());
        exa(
            &mut c,
            &["MGET", "fl:after", "fl:x", "fl:after"],
            arr(vec![b(round.to_string()), nil(), b(round.to_string())]),
        );
    }
    // Requests read before the close were still carried out (docs/compatibility.md §12).
    let mut c = cl.raw();
    wait_for("the abandoned pipeline to reach the servers", || {
        c.call(&["EXISTS", "fl:0:0"]) == int(1)
    });
    drop(c);
    cl.proxy.assert_alive();
    // Nothing leaks: every client is gone and no request is left queued.
    let mut json = String::new();
    let settled = wait_until(WAIT, || {
        json = cl.proxy.stats();
        stat_values(&json, "client_connections") == [0]
            && stat_values(&json, "in_queue").iter().all(|&n| n == 0)
            && stat_values(&json, "out_queue").iter().all(|&n| n == 0)
    });
    assert!(settled, "stats never settled: {json}");
}

/// A client that writes a pipeline whose replies are much larger than the
/// socket buffers, and reads only after writing everything, gets every
/// reply intact and in order.
#[test]
fn large_replies_to_a_late_reader() {
    let cl = Cluster::four();
    let big = pattern(1 << 20, 77);
    let mut c = cl.raw();
    exa(&mut c, &[&b"SET"[..], b"late:big", &big], ok());
    exa(&mut c, &[&b"SET"[..], b"late:small", b"s"], ok());
    let mut pipe = Vec::new();
    for _ in 0..32 {
        pipe.extend(cmd(&["GET", "late:big"]));
        pipe.extend(cmd(&["MGET", "late:small", "late:big", "late:none"]));
    }
    c.send(&pipe);
    for i in 0..32 {
        assert!(c.recv_reply() == b(&big), "GET #{i} differs");
        assert!(
            c.recv_reply() == arr(vec![b("s"), b(&big), nil()]),
            "MGET #{i} differs"
        );
    }
    assert_open(&mut c);
}

// ---------------------------------------------------------------------------
// Multi-key commands (docs/compatibility.md §7.4, §13)

#[test]
fn mset_spreads_keys_and_mget_keeps_request_order() {
    let cl = Cluster::spread();
    let mut c = cl.raw();
    let mut mset: Vec<String> = vec!["MSET".into()];
    for i in 0..100 {
        mset.push(format!("m:{i}"));
        mset.push(format!("val-{i}"));
    }
    c.send(&cmd(&mset));
    c.expect(b"+OK\r\n");
    let counts: Vec<usize> = cl.backends.iter().map(|r| r.keys().len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 100, "{counts:?}");
    assert!(counts.iter().all(|&n| n > 0 && n < 100), "{counts:?}");
    for i in 0..100 {
        let k = format!("m:{i}");
        let home = cl.home(k.as_bytes());
        assert_eq!(
            cl.backends[home].get(k.as_bytes()),
            Some(format!("val-{i}").into_bytes())
        );
        // Fragment routing agrees with single-key routing.
        exa(&mut c, &["GET", &k], b(format!("val-{i}")));
    }
    let order = ["m:5", "nope:1", "m:0", "m:99", "nope:2", "m:50", "m:5"];
    let mut args = vec!["MGET"];
    args.extend(order);
    let want: Vec<Resp> = order
        .iter()
        .map(|k| match k.strip_prefix("m:") {
            Some(i) => b(format!("val-{i}")),
            None => nil(),
        })
        .collect();
    exa(&mut c, &args, arr(want));
    // The full 100 keys in reverse order.
    let mut args: Vec<String> = vec!["MGET".into()];
    args.extend((0..100).rev().map(|i| format!("m:{i}")));
    let want: Vec<Resp> = (0..100).rev().map(|i| b(format!("val-{i}"))).collect();
    exa(&mut c, &args, arr(want));
    // One key: forwarded unchanged.
    exa(&mut c, &["MGET", "m:7"], arr(vec![b("val-7")]));
    exa(&mut c, &["MGET", "nope"], arr(vec![nil()]));
    exa(&mut c, &["MSET", "m:one", "1"], ok());
}

#[test]
fn del_unlink_touch_exists_are_summed() {
    let cl = Cluster::spread();
    let mut c = cl.raw();
    let keys: Vec<String> = (0..10).map(|i| format!("d:{i}")).collect();
    for k in &keys {
        exa(&mut c, &["SET", k, "x"], ok());
    }
    let homes: HashSet<usize> = keys.iter().map(|k| cl.home(k.as_bytes())).collect();
    assert!(homes.len() > 1, "test keys all on one backend");
    let with = |cmdname: &str, extra: &[&str]| -> Vec<String> {
        let mut v = vec![cmdname.to_string()];
        v.extend(keys.iter().cloned());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // EXISTS is split and summed (docs/compatibility.md §13), duplicates counted as redis does.
    c.send(&cmd(&with("EXISTS", &["nope"])));
    c.expect(b":10\r\n");
    exa(&mut c, &["EXISTS", "d:0", "d:0", "d:9", "nope"], int(3));
    exa(&mut c, &["EXISTS", "nope", "nope2"], int(0));
    exa(
        &mut c,
        &["TOUCH", "d:0", "d:1", "d:2", "d:3", "d:4", "nope"],
        int(5),
    );
    c.send(&cmd(&["UNLINK", "d:0", "d:1", "nope"]));
    c.expect(b":2\r\n");
    exa(
        &mut c,
        &[
            "DEL", "d:2", "d:3", "d:4", "d:5", "d:6", "d:7", "d:8", "d:9", "d:0",
        ],
        int(8),
    );
    c.send(&cmd(&with("EXISTS", &[])));
    c.expect(b":0\r\n");
    exa(&mut c, &with("DEL", &[]), int(0));
    assert_eq!(cl.backends.iter().map(|r| r.dbsize()).sum::<i64>(), 0);
}

#[test]
fn multi_key_duplicates_are_kept() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    ex(&mut c, "SET a 1", ok());
    ex(&mut c, "SET b 2", ok());
    ex(&mut c, "MGET a a b", bulks(&["1", "1", "2"]));
    ex(
        &mut c,
        "MGET b a nope a b",
        arr(vec![b("2"), b("1"), nil(), b("1"), b("2")]),
    );
    // MSET with a repeated key: the last value wins, as in redis.
    ex(&mut c, "MSET c 1 d 2 c 3", ok());
    ex(&mut c, "MGET c d", bulks(&["3", "2"]));
    // Redis deletes a repeated key once.
    ex(&mut c, "DEL a a", int(1));
    ex(&mut c, "DEL b c b d", int(3));
}

#[test]
fn mset_with_odd_argument_count_is_an_error() {
    let cl = Cluster::four();
    let mut c = cl.raw();
    let e = ex_err(&mut c, "MSET a 1 b", "ERR");
    assert!(e.to_ascii_lowercase().contains("mset"), "{e}");
    assert_open(&mut c);
    ex(&mut c, "GET a", nil());
    let _ = ex_err(&mut c, "MSET a", "ERR");
    assert_open(&mut c);
    assert_eq!(cl.backends.iter().map(|r| r.dbsize()).sum::<i64>(), 0);
}

#[test]
fn hash_tags_keep_keys_together() {
    let cl = Cluster::spread();
    let mut c = cl.raw();
    ex(&mut c, "SET {user1}:a 1", ok());
    ex(&mut c, "SET {user1}:b 2", ok());
    cl.assert_together(&["{user1}:a", "{user1}:b"]);
    let mut homes = HashSet::new();
    for t in 0..20 {
        let keys: Vec<String> = ["x", "y", "zz"]
            .iter()
            .map(|s| format!("pre{{tag{t}}}{s}"))
            .collect();
        let mut mset = vec!["MSET".to_string()];
        for k in &keys {
            mset.push(k.clone());
            mset.push("v".into());
        }
        exa(&mut c, &mset, ok());
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        cl.assert_together(&refs);
        homes.insert(cl.home(keys[0].as_bytes()));
    }
    assert!(homes.len() > 1, "all tags on one backend");
    // Multi-key commands whose keys share a tag (one fragment).
    ex(
        &mut c,
        "MGET pre{tag3}x nope{tag3} pre{tag3}zz",
        arr(vec![b("v"), nil(), b("v")]),
    );
    ex(&mut c, "DEL pre{tag3}x pre{tag3}y nope{tag3}", int(2));
    // Empty tag: the whole key is hashed.
    ex(&mut c, "SET {}x 1", ok());
    ex(&mut c, "GET {}x", b("1"));
}

// ---------------------------------------------------------------------------
// redis_auth and redis_db (docs/compatibility.md §7.7, §7.8, §13)

#[test]
fn redis_auth_gates_clients_and_authenticates_backends() {
    let pw = "s3cret-pw";
    let backends: Vec<Redis> = (0..2)
        .map(|_| Redis::start_with(&["--requirepass", pw]))
        .collect();
    let refs: Vec<&Redis> = backends.iter().collect();
    let proxy = Proxy::redis(&refs, &[("redis_auth", pw), ("hash", "md5")], &[]);
    let mut c = proxy.raw();
    c.send(&cmd(&["GET", "k"]));
    c.expect(b"-NOAUTH Authentication required\r\n");
    c.send(&cmd(&["PING"]));
    c.expect(b"-NOAUTH Authentication required\r\n");
    c.send(&cmd(&["MGET", "a", "b"]));
    c.expect(b"-NOAUTH Authentication required\r\n");
    c.send(&cmd(&["AUTH", "wrong"]));
    c.expect(b"-ERR invalid password\r\n");
    c.send(&cmd(&["GET", "k"]));
    c.expect(b"-NOAUTH Authentication required\r\n");
    // AUTH pipelined with commands in one write applies to those behind it.
    let mut pipe = cmd(&["AUTH", pw]);
    pipe.extend(cmd(&["SET", "au:first", "1"]));
    pipe.extend(cmd(&["GET", "au:first"]));
    c.send(&pipe);
    c.expect(b"+OK\r\n+OK\r\n$1\r\n1\r\n");
    exa(&mut c, &["DEL", "au:first"], int(1));
    // Commands now reach the password-protected backends.
    for i in 0..20 {
        exa(&mut c, &["SET", &format!("au:{i}"), &i.to_string()], ok());
    }
    let mut mget = vec!["MGET".to_string()];
    mget.extend((0..20).map(|i| format!("au:{i}")));
    exa(
        &mut c,
        &mget,
        arr((0..20).map(|i| b(i.to_string())).collect()),
    );
    assert_open(&mut c);
    let total: i64 = backends.iter().map(|r| r.dbsize()).sum();
    assert_eq!(total, 20);
    assert!(
        backends.iter().all(|r| r.dbsize() > 0),
        "keys on one backend only"
    );
    // A wrong password makes the connection unauthenticated again.
    c.send(&cmd(&["AUTH", "wrong"]));
    c.expect(b"-ERR invalid password\r\n");
    c.send(&cmd(&["GET", "au:1"]));
    c.expect(b"-NOAUTH Authentication required\r\n");
    // A second client is not authenticated by the first one.
    let mut c2 = proxy.raw();
    c2.send(&cmd(&["GET", "au:1"]));
    c2.expect(b"-NOAUTH Authentication required\r\n");
    // The redis crate's own AUTH on connect works.
    let mut con = proxy.client_auth(pw);
    let v: String = redis::cmd("GET").arg("au:3").query(&mut con).expect("GET");
    assert_eq!(v, "3");
}

#[test]
fn redis_auth_with_redis_db_on_protected_backends_uses_that_db() {
    let pw = "pw-db";
    let backends: Vec<Redis> = (0..2)
        .map(|_| Redis::start_with(&["--requirepass", pw]))
        .collect();
    let refs: Vec<&Redis> = backends.iter().collect();
    let proxy = Proxy::redis(&refs, &[("redis_auth", pw), ("redis_db", "2")], &[]);
    let mut c = proxy.raw();
    ex(&mut c, &format!("AUTH {pw}"), ok());
    for i in 0..20 {
        exa(&mut c, &["SET", &format!("db:{i}"), "x"], ok());
    }
    let in_db2: i64 = backends.iter().map(|r| r.dbsize_db(2)).sum();
    let in_db0: i64 = backends.iter().map(|r| r.dbsize_db(0)).sum();
    assert_eq!((in_db2, in_db0), (20, 0), "keys must land in db 2 (§13)");
    for i in 0..20 {
        exa(&mut c, &["GET", &format!("db:{i}")], b("x"));
    }
}

#[test]
fn redis_db_alone_selects_that_db() {
    let cl = Cluster::start(3, &[("redis_db", "3")], &[]);
    let mut c = cl.raw();
    for i in 0..30 {
        exa(&mut c, &["SET", &format!("sel:{i}"), "x"], ok());
    }
    exa(
        &mut c,
        &["MSET", "sel:a", "1", "sel:b", "2", "sel:c", "3"],
        ok(),
    );
    let in_db3: i64 = cl.backends.iter().map(|r| r.dbsize_db(3)).sum();
    let in_db0: i64 = cl.backends.iter().map(|r| r.dbsize_db(0)).sum();
    assert_eq!((in_db3, in_db0), (33, 0));
    exa(&mut c, &["MGET", "sel:a", "sel:0"], bulks(&["1", "x"]));
}

// ---------------------------------------------------------------------------
// Replies made by the proxy (docs/compatibility.md §7.3, §7.7, §13)

#[test]
fn local_replies() {
    let cl = Cluster::start(2, &[], &[]);
    let mut c = cl.raw();
    c.send(&cmd(&["PING"]));
    c.expect(b"+PONG\r\n");
    c.send(&cmd(&["ping"]));
    c.expect(b"+PONG\r\n");
    c.send(&cmd(&["PING", "hi"]));
    c.expect(b"$2\r\nhi\r\n");
    c.send(&cmd(&["PING", ""]));
    c.expect(b"$0\r\n\r\n");
    c.send(&cmd(&["AUTH", "x"]));
    c.expect(b"-ERR Client sent AUTH, but no password is set\r\n");

    // HELLO / HELLO 2: a RESP2 map-as-array like redis 6+.
    for line in ["HELLO", "HELLO 2"] {
        let r = items(c.call_str(line));
        assert!(r.len() >= 2 && r.len().is_multiple_of(2), "{line}: {r:?}");
        let proto = r
            .chunks(2)
            .find(|p| p[0] == b("proto"))
            .map(|p| p[1].clone());
        assert_eq!(proto, Some(int(2)), "{line}: {r:?}");
    }
    // HELLO 3 is tests/modern.rs' business (RESP3).
    let e = c.call_str("HELLO 4");
    assert!(
        matches!(&e, Resp::Error(t) if t.starts_with(b"NOPROTO")),
        "HELLO 4 -> {e:?}"
    );
    assert_open(&mut c);

    // Unsupported commands: an error, and the connection stays open.
    for line in [
        "KEYS *",
        "FLUSHALL",
        "XADD s * a b",
        "BLMOVE a b LEFT RIGHT 0",
    ] {
        let r = c.call_str(line);
        let name = line.split(' ').next().unwrap_or_default();
        match &r {
            Resp::Error(t) => {
                let t = String::from_utf8_lossy(t);
                assert!(t.starts_with("ERR "), "{line}: {t}");
                assert!(
                    t.to_ascii_lowercase().contains(&name.to_ascii_lowercase()),
                    "{line}: {t}"
                );
            }
            other => panic!("{line}: expected an error, got {other:?}"),
        }
        assert_open(&mut c);
    }
    c.send(&cmd(&["KEYS", "*"]));
    let line = c.recv_line();
    assert!(
        line.starts_with(b"-ERR unsupported command") && line.ends_with(b"\r\n"),
        "{}",
        show(&line)
    );
    // Wrong arity: an error, and the connection stays open.
    for line in ["GET a b", "PING a b", "GETSET k", "LINSERT k BEFORE x"] {
        let _ = ex_err(&mut c, line, "ERR ");
        assert_open(&mut c);
    }
    // Everything above stayed local.
    assert_eq!(cl.backends.iter().map(|r| r.dbsize()).sum::<i64>(), 0);

    // QUIT: +OK, then EOF; earlier replies are written first, later input
    // is ignored.
    let mut q = cl.raw();
    let mut pipe = cmd(&["SET", "q", "1"]);
    pipe.extend(cmd(&["GET", "q"]));
    pipe.extend(cmd(&["QUIT"]));
    pipe.extend(cmd(&["SET", "q", "2"]));
    q.send(&pipe);
    q.expect(b"+OK\r\n$1\r\n1\r\n+OK\r\n");
    q.expect_eof();
    let mut c2 = cl.raw();
    exa(&mut c2, &["GET", "q"], b("1"));
    let mut q = cl.raw();
    q.send(&cmd(&["QUIT"]));
    q.expect(b"+OK\r\n");
    q.expect_eof();
}

// ---------------------------------------------------------------------------
// Malformed input (docs/compatibility.md §7.1 and §13)

/// Sends `bytes` on a fresh connection; expects `before` (replies owed to
/// earlier requests), then a `-ERR Protocol error` line, then EOF.
fn assert_protocol_error(cl: &Cluster, bytes: &[u8], before: &[u8]) {
    let mut c = cl.raw();
    c.send(bytes);
    if !before.is_empty() {
        c.expect(before);
    }
    let line = c.recv_line();
    assert!(
        line.starts_with(b"-ERR Protocol error"),
        "after sending {}: expected -ERR Protocol error..., got {}",
        show(bytes),
        show(&line)
    );
    c.expect_eof();
}

#[test]
fn malformed_requests_get_an_error_then_close() {
    let cl = Cluster::start(2, &[], &[]);
    let cases: &[&[u8]] = &[
        b"GET \"k\r\n",
        b"GET 'k'x\r\n",
        b"*-0\r\n",
        b"*x\r\n",
        b"*1\r\n$x\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n:4\r\nPING\r\n",
        b"*1\r\n$4\r\nPINGxx",
        b"*1\r\n$4\r\nPING\nxx",
        b"*2\r\n$3\r\nGET\r\n$1\r\nkk\r\n",
        b"*1\n$4\r\nPING\r\n",
    ];
    for bytes in cases {
        assert_protocol_error(&cl, bytes, b"");
    }
    // Replies owed to earlier pipelined requests are written first: a
    // local one, a forwarded one, and a fragmented one.
    assert_protocol_error(&cl, b"*1\r\n$4\r\nPING\r\n*1\r\n$x\r\n", b"+PONG\r\n");
    let mut pipe = cmd(&["SET", "pe", "v"]);
    pipe.extend(cmd(&["GET", "pe"]));
    pipe.extend(cmd(&["MGET", "pe", "nope", "pe"]));
    pipe.extend(b"*1\r\n$x\r\n");
    assert_protocol_error(
        &cl,
        &pipe,
        b"+OK\r\n$1\r\nv\r\n*3\r\n$1\r\nv\r\n$-1\r\n$1\r\nv\r\n",
    );
    // The bad bytes arriving in a later write than the good request.
    let mut c = cl.raw();
    c.send(&cmd(&["GET", "pe"]));
    c.expect(b"$1\r\nv\r\n");
    c.send(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI");
    c.expect(b"+PONG\r\n");
    c.send(b"NGxx\r\n");
    let line = c.recv_line();
    assert!(line.starts_with(b"-ERR Protocol error"), "{}", show(&line));
    c.expect_eof();
    // The proxy is fine afterwards.
    let mut c = cl.raw();
    exa(&mut c, &["GET", "pe"], b("v"));
}

/// Inline commands are served like their multibulk form (fragments
/// included); empty lines, `*0` and `*-1` get no reply, as from redis.
#[test]
fn inline_commands_and_empty_requests() {
    let cl = Cluster::start(2, &[], &[]);
    let mut c = cl.raw();
    c.send(b"SET \"in line\" v\r\n\r\n*0\r\n*-1\r\nGET 'in line'\n  \nPING\r\nPING \"a\\x41\"\r\n");
    c.expect(b"+OK\r\n$1\r\nv\r\n+PONG\r\n$2\r\naA\r\n");
    let mut keys = Vec::new();
    for i in 0..8 {
        let k = format!("in\\x20{i}");
        c.send(format!("SET \"{k}\" {i}\r\n").as_bytes());
        c.expect(b"+OK\r\n");
        keys.push(k);
    }
    // Keys spread over both servers: the fragments are cut from the RESP
    // form, so the unescaped keys are what reach (and route to) redis.
    let quoted: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    c.send(format!("MGET {} nope\r\n", quoted.join(" ")).as_bytes());
    let mut want = b"*9\r\n".to_vec();
    for i in 0..8 {
        want.extend(format!("$1\r\n{i}\r\n").as_bytes());
    }
    want.extend(b"$-1\r\n");
    c.expect(&want);
    exa(&mut c, &["GET", "in 3"], b("3"));
    c.send(format!("DEL {}\n", quoted.join(" ")).as_bytes());
    c.expect(b":8\r\n");
    // A bad inline line is a protocol error, after the replies owed.
    c.send(b"PING\r\nGET \"x\r\n");
    c.expect(b"+PONG\r\n");
    let line = c.recv_line();
    assert_eq!(
        line,
        b"-ERR Protocol error: unbalanced quotes in request\r\n"
    );
    c.expect_eof();
}

#[test]
fn incomplete_request_at_eof_is_discarded() {
    let cl = Cluster::start(2, &[], &[]);
    let mut c = cl.raw();
    let mut bytes = cmd(&["SET", "inc", "1"]);
    bytes.extend(cmd(&["MGET", "inc", "nope", "inc"]));
    bytes.extend(cmd(&["PING"]));
    bytes.extend(b"*3\r\n$3\r\nSET\r\n$3\r\ninc\r\n$1\r\n");
    c.send(&bytes);
    c.shutdown_write();
    // Half-close: the replies to the complete requests still arrive.
    c.expect(b"+OK\r\n*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n1\r\n+PONG\r\n");
    c.expect_eof();
    let mut c = cl.raw();
    exa(&mut c, &["GET", "inc"], b("1"));
}

// ---------------------------------------------------------------------------
// redis-benchmark through the proxy

#[test]
fn redis_benchmark_through_the_proxy() {
    let backends = Redis::start_many(4);
    let refs: Vec<&Redis> = backends.iter().collect();
    // No hash tag, random keys (-r) and md5: MSET's keys spread over the
    // servers.
    let proxy = Proxy::redis(&refs, &[("hash", "md5")], &[]);
    let dir = TempDir::new("bench");
    let out_path = dir.join("bench.out");
    let out = std::fs::File::create(&out_path).expect("bench output");
    let err = out.try_clone().expect("clone");
    let port = proxy.port().to_string();
    let child = std::process::Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-n",
            "2000",
            "-c",
            "10",
            "-P",
            "4",
            "-r",
            "10000",
            "-q",
            "-t",
            "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,lrange,mset",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn redis-benchmark");
    let mut guard = ChildGuard::new(child, false);
    let status = guard.wait_exit(Duration::from_secs(60));
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(status.is_some(), "redis-benchmark hung; output:\n{text}");
    assert!(
        status.is_some_and(|s| s.success()),
        "redis-benchmark failed ({status:?}):\n{text}"
    );
    let lower = text.to_ascii_lowercase();
    for bad in ["err", "error", "noauth", "unsupported"] {
        let offending: Vec<&str> = lower
            .split(['\n', '\r'])
            .filter(|l| l.contains(bad) && !l.contains("could not fetch server config"))
            .collect();
        assert!(
            offending.is_empty(),
            "redis-benchmark printed {offending:?}:\n{text}"
        );
    }
    for t in [
        "SET:",
        "GET:",
        "INCR:",
        "LPUSH:",
        "RPUSH:",
        "LPOP:",
        "RPOP:",
        "SADD:",
        "HSET:",
        "SPOP:",
        "MSET (10 keys):",
    ] {
        assert!(text.contains(t), "no {t} result in:\n{text}");
    }
    let keys: Vec<i64> = backends.iter().map(|r| r.dbsize()).collect();
    assert!(
        keys.iter().all(|&n| n > 0),
        "benchmark keys per backend {keys:?}"
    );
    let started = Instant::now();
    let mut c = proxy.raw();
    assert_open(&mut c);
    assert!(started.elapsed() < Duration::from_secs(5));
}

// ---------------------------------------------------------------------------
// Backend errors and failures (docs/compatibility.md §7.4, §7.6, §9.1, §9.2, §13)

/// Two keys of `prefix` whose homes differ, plus each home.
fn keys_on_two_backends(cl: &Cluster, prefix: &str) -> ((String, usize), (String, usize)) {
    let mut c = cl.raw();
    let mut first: Option<(String, usize)> = None;
    for i in 0..200 {
        let k = format!("{prefix}{i}");
        exa(&mut c, &["SET", &k, &k], ok());
        let h = cl.home(k.as_bytes());
        match &first {
            None => first = Some((k, h)),
            Some((_, h0)) if *h0 != h => return (first.unwrap_or_default(), (k, h)),
            Some(_) => {}
        }
    }
    panic!("200 keys all on one backend");
}

/// Without `redis_auth`, a password-protected backend's `-NOAUTH` is passed
/// through for a single-key command, while a fragmented command whose
/// sub-replies are errors fails as a whole with `-ERR Invalid argument`;
/// the client connection stays open (docs/compatibility.md §7.4, §7.6, §13).
#[test]
fn backend_error_replies() {
    let backends: Vec<Redis> = (0..2)
        .map(|_| Redis::start_with(&["--requirepass", "pw"]))
        .collect();
    let refs: Vec<&Redis> = backends.iter().collect();
    let proxy = Proxy::redis(&refs, &[("hash", "md5")], &[]);
    let mut c = proxy.raw();
    c.send(&cmd(&["GET", "k"]));
    c.expect(b"-NOAUTH Authentication required.\r\n");
    assert_open(&mut c);
    for i in 0..4 {
        let keys: Vec<String> = (0..10).map(|j| format!("na:{i}:{j}")).collect();
        let mut mget = vec!["MGET".to_string()];
        mget.extend(keys.iter().cloned());
        c.send(&cmd(&mget));
        c.expect(b"-ERR Invalid argument\r\n");
        let mut del = vec!["DEL".to_string()];
        del.extend(keys.iter().cloned());
        c.send(&cmd(&del));
        c.expect(b"-ERR Invalid argument\r\n");
        assert_open(&mut c);
    }
    c.send(&cmd(&["MSET", "a", "1", "b", "2", "c", "3", "d", "4"]));
    c.expect(b"-ERR Invalid argument\r\n");
    assert_open(&mut c);
}

/// A dead backend: requests for its keys get `-ERR Connection refused`,
/// the other backend keeps serving, and a multi-key command touching the
/// dead one fails with `-ERR` while the client stays connected (docs/compatibility.md §9.1,
/// 0: better than 0.5.0's close after a failed MGET).
#[test]
fn dead_backend_fails_requests_not_the_client() {
    let mut cl = Cluster::start(2, &[("hash", "md5")], &[]);
    let ((dead_key, dead), (live_key, _)) = keys_on_two_backends(&cl, "dk:");
    cl.backends[dead].kill();
    let mut c = cl.raw();
    // The first request may hit the old connection (EOF: "unknown") or a
    // new one (refused); both are connection-level failures.
    let first = c.call(&["GET", &dead_key]);
    assert!(
        first == Resp::Error(b"ERR Connection refused".to_vec())
            || first == Resp::Error(b"ERR unknown".to_vec())
            || first == Resp::Error(b"ERR Connection reset by peer".to_vec()),
        "{first:?}"
    );
    for _ in 0..3 {
        c.send(&cmd(&["GET", &dead_key]));
        c.expect(b"-ERR Connection refused\r\n");
        exa(&mut c, &["GET", &live_key], b(&live_key));
    }
    c.send(&cmd(&["MGET", &live_key, &dead_key, &live_key]));
    c.expect(b"-ERR Connection refused\r\n");
    c.send(&cmd(&["DEL", &dead_key, &live_key]));
    c.expect(b"-ERR Connection refused\r\n");
    assert_open(&mut c);
    // The live fragment of that DEL was carried out.
    exa(&mut c, &["GET", &live_key], nil());
    exa(&mut c, &["SET", &live_key, &live_key], ok());
    // Pipelined behind a failing MGET, a good request still gets its reply.
    let mut pipe = cmd(&["MGET", &dead_key, &live_key]);
    pipe.extend(cmd(&["GET", &live_key]));
    c.send(&pipe);
    c.expect(b"-ERR Connection refused\r\n");
    assert_eq!(c.recv_reply(), b(&live_key));
    assert_open(&mut c);
    cl.proxy.assert_alive();
}

/// `timeout:` closes the server connection when a reply is late; the
/// request gets `-ERR Connection timed out` and later ones work (docs/compatibility.md §9.2).
#[test]
fn server_timeout() {
    let cl = Cluster::start(1, &[("timeout", "200")], &[]);
    let mut c = cl.raw();
    exa(&mut c, &["SET", "t", "1"], ok());
    // The script keeps redis busy for 3 s. A reply that waited for it
    // comes 3 s or more after the send; the timeout's comes after 200 ms.
    // The check is only "before the script ended", not a latency bound, so
    // a loaded machine has 2.8 s of slack.
    let script = "local t = redis.call('TIME') local s = t[1]*1000000 + t[2] \
        while true do local n = redis.call('TIME') \
        if n[1]*1000000 + n[2] - s > 3000000 then break end end \
        return 1";
    let started = Instant::now();
    c.send(&cmd(&["EVAL", script, "1", "t"]));
    c.expect(b"-ERR Connection timed out\r\n");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150),
        "timed out after {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "reply waited for the script: {took:?}"
    );
    // Served again once redis is free (the late reply is never delivered).
    let mut got = Resp::nil();
    let ok_again = wait_until(WAIT, || {
        got = c.call(&["GET", "t"]);
        got == b("1")
    });
    assert!(ok_again, "last reply {got:?}");
    assert_open(&mut c);
}

/// A `-BUSY` reply is a transient server failure: the server connection
/// is closed and the request gets `-ERR Invalid argument`; once redis is
/// free, requests are served again (docs/compatibility.md §7.6).
#[test]
fn busy_reply_is_a_server_failure() {
    let backend = Redis::start_with(&["--busy-reply-threshold", "50"]);
    let proxy = Proxy::redis(&[&backend], &[], &[]);
    let mut c = proxy.raw();
    exa(&mut c, &["SET", "bz", "1"], ok());
    // A direct client keeps redis busy in a script for ~1.5 s.
    let script = "local t = redis.call('TIME') local s = t[1]*1000000 + t[2] \
        while true do local n = redis.call('TIME') \
        if n[1]*1000000 + n[2] - s > 1500000 then break end end \
        return 'done'";
    let mut runner = backend.raw();
    runner.send(&cmd(&["EVAL", script, "0"]));
    let mut d = backend.raw();
    wait_for(
        "redis to report BUSY",
        || matches!(d.call(&["PING"]), Resp::Error(e) if e.starts_with(b"BUSY ")),
    );
    c.send(&cmd(&["GET", "bz"]));
    c.expect(b"-ERR Invalid argument\r\n");
    assert_open(&mut c);
    assert_eq!(runner.recv_reply(), b("done"));
    exa(&mut c, &["GET", "bz"], b("1"));
}

/// With `server_connections: 3`, new connections are opened for the first
/// three requests; after that each request takes the least recently used
/// connection (docs/compatibility.md §12). Observed on redis with CLIENT LIST: connection
/// ids grow in creation order and `cmd=` is each one's last command.
#[test]
fn server_connections_are_used_least_recently_used_first() {
    let backend = Redis::start();
    let proxy = Proxy::redis(&[&backend], &[("server_connections", "3")], &[]);
    let mut c = proxy.raw();
    for k in ["a", "b", "c"] {
        exa(&mut c, &["SET", k, "1"], ok());
    }
    exa(&mut c, &["GET", "a"], b("1"));
    exa(&mut c, &["STRLEN", "a"], int(1));
    exa(&mut c, &["TTL", "a"], int(-1));
    let mut d = backend.raw();
    let Resp::Bulk(Some(list)) = d.call(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST");
    };
    let list = String::from_utf8_lossy(&list).into_owned();
    let mut conns: Vec<(u64, String)> = list
        .lines()
        .filter_map(|l| {
            let field = |name: &str| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix(name))
                    .map(str::to_string)
            };
            let id = field("id=")?.parse().ok()?;
            let last = field("cmd=")?;
            (!last.starts_with("client")).then_some((id, last))
        })
        .collect();
    conns.sort();
    let cmds: Vec<&str> = conns.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(cmds, ["get", "strlen", "ttl"], "CLIENT LIST:\n{list}");
}

// ---------------------------------------------------------------------------
// Framing across reads, case, scale

/// Requests written a few bytes at a time (every parser state resumed
/// across reads), including a key longer than one mbuf.
#[test]
fn requests_split_across_many_writes() {
    let cl = Cluster::start(4, &[("hash", "md5")], &["-m", "512"]);
    let long_key = "L".repeat(2000);
    let mut pipe = cmd(&["SET", "sp:1", "a\r\nb"]);
    pipe.extend(cmd(&["MSET", "sp:2", "two", &long_key, "long", "sp:3", ""]));
    pipe.extend(cmd(&["PING"]));
    pipe.extend(cmd(&["MGET", "sp:1", &long_key, "sp:none", "sp:2", "sp:3"]));
    pipe.extend(cmd(&["EXISTS", "sp:1", "sp:2", &long_key]));
    pipe.extend(cmd(&["GET", &long_key]));
    let want = [
        ok(),
        ok(),
        status("PONG"),
        arr(vec![b("a\r\nb"), b("long"), nil(), b("two"), b("")]),
        int(3),
        b("long"),
    ];
    for step in [1usize, 2, 3, 7, 13] {
        let mut c = cl.raw();
        for chunk in pipe.chunks(step) {
            c.send(chunk);
        }
        for (n, w) in want.iter().enumerate() {
            assert_eq!(c.recv_reply(), *w, "reply #{n} with {step}-byte writes");
        }
    }
}

#[test]
fn command_names_are_case_insensitive() {
    let cl = Cluster::spread();
    let mut c = cl.raw();
    ex(&mut c, "set ci:1 one", ok());
    ex(&mut c, "sEt ci:2 two", ok());
    ex(&mut c, "Get ci:1", b("one"));
    ex(
        &mut c,
        "mget ci:1 ci:2 ci:3",
        arr(vec![b("one"), b("two"), nil()]),
    );
    ex(&mut c, "MsEt ci:3 three ci:4 four", ok());
    ex(&mut c, "eXiStS ci:1 ci:2 ci:3 ci:4 ci:5", int(4));
    ex(&mut c, "ping", status("PONG"));
    ex(&mut c, "Del ci:1 ci:2 ci:3 ci:4", int(4));
}

#[test]
fn five_thousand_keys_in_one_mget() {
    let cl = Cluster::spread();
    let mut c = cl.raw();
    let n = 5000;
    let mut mset = vec!["MSET".to_string()];
    for i in 0..n {
        mset.push(format!("big:{i}"));
        mset.push(format!("{i}"));
    }
    exa(&mut c, &mset, ok());
    let mut mget = vec!["MGET".to_string()];
    // Every key twice and a missing key in between, reversed.
    for i in (0..n).rev() {
        mget.push(format!("big:{i}"));
        mget.push("big:none".into());
        mget.push(format!("big:{i}"));
    }
    let want: Vec<Resp> = (0..n)
        .rev()
        .flat_map(|i| [b(i.to_string()), nil(), b(i.to_string())])
        .collect();
    exa(&mut c, &mget, arr(want));
    let mut del = vec!["DEL".to_string()];
    del.extend((0..n).map(|i| format!("big:{i}")));
    exa(&mut c, &del, int(n as i64));
}

#[test]
fn hundreds_of_client_connections() {
    let cl = Cluster::four();
    let mut conns: Vec<RawConn> = (0..300).map(|_| cl.raw()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&cmd(&["SET", &format!("hc:{i}"), &i.to_string()]));
    }
    for c in conns.iter_mut() {
        assert_eq!(c.recv_reply(), ok());
    }
    for (i, c) in conns.iter_mut().enumerate().rev() {
        exa(
            c,
            &["MGET", &format!("hc:{i}"), "hc:0"],
            bulks(&[&i.to_string(), "0"]),
        );
    }
}

// ---------------------------------------------------------------------------
// The harness itself (other test files rely on it)

#[test]
fn harness_self_checks() {
    // RESP parsing: partial input, nesting, nulls.
    let full = b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n*-1\r\n$-1\r\n+OK\r\n";
    for cut in 0..full.len() - 5 {
        assert_eq!(parse_resp(&full[..cut]), Ok(None), "cut at {cut}");
    }
    let (v, n) = parse_resp(full).expect("parse").expect("complete");
    assert_eq!(n, full.len() - 5);
    assert_eq!(
        v,
        arr(vec![b("a"), arr(vec![int(1), Resp::Array(None)]), nil()])
    );
    assert_eq!(v.encode(), full[..n].to_vec());
    assert!(parse_resp(b"?x\r\n").is_err());
    assert_eq!(
        stat_values("{\"a\": {\"x\":1, \"s\": {\"x\":-2, \"xy\":5}}}", "x"),
        [1, -2]
    );
    // Ports handed out are unique.
    let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);

    // Two pools from a templated config: redis and memcache.
    let r = Redis::start();
    let m = Memcached::start();
    m.set(b"direct", b"value");
    assert_eq!(m.get(b"direct"), Some(b"value".to_vec()));
    assert_eq!(m.get(b"absent"), None);
    let yaml = format!(
        "r:\n  listen: 127.0.0.1:@PORT0@\n  redis: true\n  servers:\n   - {}\n\
         m:\n  listen: 127.0.0.1:@PORT1@\n  servers:\n   - {}\n",
        r.server_line(1),
        m.server_line(1)
    );
    let mut p = Proxy::start(&yaml, &["-m", "1024"]);
    assert_ne!(p.port_of(0), p.port_of(1));
    let mut c = RawConn::connect(p.port_of(0));
    assert_open(&mut c);
    let mut mc = RawConn::connect(p.port_of(1));
    assert_eq!(mc_get(&mut mc, b"direct"), Some(b"value".to_vec()));
    assert!(p.stats().contains("\"service\":\"nutcracker\""));
    let port = p.port_of(0);
    assert_eq!(
        send_recv(port, &cmd(&["PING"]), Until::Len(7)),
        b"+PONG\r\n"
    );
    let mut two = cmd(&["PING"]);
    two.extend(cmd(&["PING", "x"]));
    assert_eq!(
        send_recv(port, &two, Until::Replies(2)),
        b"+PONG\r\n$1\r\nx\r\n"
    );
    assert_eq!(
        send_recv(port, &two, Until::Suffix(b"x\r\n")),
        b"+PONG\r\n$1\r\nx\r\n"
    );
    two.extend(cmd(&["QUIT"]));
    assert_eq!(
        send_recv(port, &two, Until::Eof),
        b"+PONG\r\n$1\r\nx\r\n+OK\r\n"
    );
    let pid = p.pid();
    p.assert_alive();
    let status = p.stop().expect("stopped");
    assert!(status.success(), "SIGTERM exit: {status}");
    assert!(!pid_listens_on(pid, p.port_of(0)));
}

/// A backend that drops the proxy's connection (here: CLIENT KILL) gets a
/// new one for the next request, initialised again with AUTH and SELECT
/// (docs/compatibility.md §7.7, §7.8, §12).
#[test]
fn server_connection_closed_by_backend_is_reopened() {
    let pw = "reopen-pw";
    let backend = Redis::start_with(&["--requirepass", pw]);
    let proxy = Proxy::redis(
        &[&backend],
        &[("redis_auth", pw), ("redis_db", "2")],
        &["-i", "100"],
    );
    let mut c = proxy.raw();
    ex(&mut c, &format!("AUTH {pw}"), ok());
    for round in 0..3 {
        exa(&mut c, &["SET", &format!("ro:{round}"), "x"], ok());
        let mut d = backend.raw();
        ex(&mut d, &format!("AUTH {pw}"), ok());
        // The proxy's one server connection; the previous round's direct
        // connection may not have been reaped by redis yet.
        let killed = int_of(&d.call_str("CLIENT KILL TYPE normal"));
        assert!((1..=2).contains(&killed), "killed {killed}");
        // Wait until the proxy has seen the EOF, so the next request cannot
        // race onto the dying connection.
        let mut json = String::new();
        let seen = wait_until(WAIT, || {
            json = proxy.stats();
            stat_values(&json, "server_eof").iter().sum::<i64>() > round
        });
        assert!(seen, "server_eof never counted: {json}");
        exa(&mut c, &["GET", &format!("ro:{round}")], b("x"));
        exa(&mut c, &["SET", &format!("ro:after:{round}"), "y"], ok());
    }
    assert_eq!((backend.dbsize_db(2), backend.dbsize_db(0)), (6, 0));
}

/// A pool listening on a unix socket (with permissions) in front of a
/// redis-server reached over its unix socket (docs/compatibility.md §4.3, §4.4).
#[test]
fn unix_socket_listener_and_backend() {
    let dir = std::env::temp_dir().join(format!("nc-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let backend_sock = dir.join("r.sock");
    let listen_sock = dir.join("p.sock");
    let backend = Redis::start_with(&[
        "--unixsocket",
        backend_sock.to_str().unwrap(),
        "--unixsocketperm",
        "700",
    ]);
    let yaml = format!(
        "tcp:\n  listen: 127.0.0.1:@PORT0@\n  redis: true\n  servers:\n   - 127.0.0.1:{}:1\n\
         uni:\n  listen: {} 0600\n  redis: true\n  servers:\n   - {}:1\n",
        backend.port(),
        listen_sock.display(),
        backend_sock.display()
    );
    let proxy = Proxy::start(&yaml, &[]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&listen_sock)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let mut s = std::os::unix::net::UnixStream::connect(&listen_sock).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    use std::io::{Read, Write};
    s.write_all(&cmd(&["SET", "u:k", "via-unix"])).unwrap();
    s.write_all(&cmd(&["GET", "u:k"])).unwrap();
    let want = b"+OK\r\n$8\r\nvia-unix\r\n";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got[..], &want[..]);
    // The key is on the backend, and the stats name of a unix server keeps
    // the trailing ':' (docs/compatibility.md §4.4).
    assert!(backend.has(b"u:k"));
    let stats = proxy.stats();
    assert!(
        stats.contains(&format!("\"{}:\": {{", backend_sock.display())),
        "{stats}"
    );
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that sends more requests than it may have in flight (so the
/// proxy pauses reading it) and then half-closes: every reply comes back,
/// then the proxy closes too (the end of input seen while paused is kept).
#[test]
fn half_close_while_paused_gets_every_reply_then_eof() {
    use std::io::{Read, Write};
    let backend = Redis::start();
    let proxy = Proxy::redis(&[&backend], &[], &[]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let n = 5000;
    let mut pipe = Vec::new();
    for _ in 0..n {
        pipe.extend(cmd(&["GET", "hc:missing"]));
    }
    s.write_all(&pipe).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("EOF from the proxy after the replies");
    assert_eq!(got, b"$-1\r\n".repeat(n));
}
