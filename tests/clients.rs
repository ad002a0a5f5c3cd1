//! Today's client libraries at their default settings, end to end through
//! the built proxy (issue 12): redis-py 8 (sync, asyncio, hiredis), coredis,
//! node-redis, ioredis, redis-benchmark and redis-cli --pipe, the npm
//! `memcached` package, python-memcached and the libmemcached tools, and the
//! two-key commands whose keys sit on two servers.
//!
//! Each test starts real backends (4 redis-server or 3 memcached) and the
//! proxy over them with the harness in `support`, runs one scenario script
//! from tests/clients/ (Python or Node) against the proxy and asserts its exit
//! status and its `ok`/`FAIL` lines. The scripts check results (values read
//! back, keys looked up directly on the backends), not just "no error".
//!
//! The clients are pinned and installed once per build tree by
//! tests/clients/setup.sh into target/clients-venv and target/clients-node.
//! When a package registry is unreachable the setup exits 75 and every test
//! here prints "skipped: ..." and returns; any other setup failure fails.
//!
//! The `*_plain_*` tests run the same scripts straight against a plain
//! redis-server or memcached, where they must pass: that keeps the scripts
//! themselves honest.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use support::*;

/// What the setup left us.
enum Clients {
    Ready {
        python: PathBuf,
        node_path: PathBuf,
    },
    /// A registry could not be reached: the tests skip, with this message.
    Unreachable(String),
}

/// The setup's exit status for "a registry is unreachable" (EX_TEMPFAIL).
const UNREACHABLE: i32 = 75;

/// The build tree (`target/`): the binary lives in `target/release/`.
fn target_dir() -> PathBuf {
    let bin = Path::new(nutcracker_bin());
    bin.parent()
        .and_then(Path::parent)
        .expect("binary is target/<profile>/nutcracker")
        .to_path_buf()
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs the setup once per test process; parallel test processes are kept
/// apart by the setup's own lock file.
fn clients() -> &'static Clients {
    static SETUP: OnceLock<Clients> = OnceLock::new();
    SETUP.get_or_init(|| {
        // Bounded: a first install takes well under a minute here; an
        // unreachable registry fails within the setup's own retry limits.
        let out = Command::new("timeout")
            .args(["-k", "10", "900", "bash"])
            .arg(clients_dir().join("setup.sh"))
            .arg(target_dir())
            .stdin(Stdio::null())
            .output()
            .expect("run tests/clients/setup.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        match out.status.code() {
            Some(0) => {
                let field = |name: &str| {
                    stdout
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(PathBuf::from)
                        .unwrap_or_else(|| panic!("setup printed no {name}: {stdout}"))
                };
                Clients::Ready {
                    python: field("python="),
                    node_path: field("node_path="),
                }
            }
            Some(UNREACHABLE) => Clients::Unreachable(stderr.trim().to_string()),
            _ => panic!(
                "tests/clients/setup.sh failed ({}):\n{stderr}{stdout}",
                out.status
            ),
        }
    })
}

/// A scenario script and its arguments.
struct Scenario<'a> {
    /// Path under tests/clients/, `py/....py` or `node/....js`.
    script: &'a str,
    port: u16,
    backends: Vec<String>,
    args: &'a [&'a str],
}

/// Runs the scenario; `None` when the clients could not be installed
/// (skipped, after saying so). Panics unless the script exits 0 with every
/// check passed and an `ok` line for each of `must_pass`.
fn expect_pass(s: Scenario, must_pass: &[&str]) -> Option<String> {
    let (python, node_path) = match clients() {
        Clients::Ready { python, node_path } => (python, node_path),
        Clients::Unreachable(why) => {
            println!("skipped: client libraries could not be installed: {why}");
            return None;
        }
    };
    let script = clients_dir().join(s.script);
    // `timeout` bounds the whole script: a hung client fails the test.
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "240"]);
    if s.script.ends_with(".py") {
        // No __pycache__ left in the source tree.
        cmd.arg(python).env("PYTHONDONTWRITEBYTECODE", "1");
    } else {
        cmd.arg("node").env("NODE_PATH", node_path);
    }
    cmd.arg(&script)
        .args(["--host", "127.0.0.1", "--port", &s.port.to_string()]);
    if !s.backends.is_empty() {
        cmd.args(["--backends", &s.backends.join(",")]);
    }
    let out = cmd
        .args(s.args)
        .stdin(Stdio::null())
        .output()
        .expect("run scenario script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let shown = format!(
        "{} {}: {}\n---- stdout\n{stdout}---- stderr\n{stderr}",
        s.script,
        s.args.join(" "),
        out.status
    );
    println!("{shown}");
    assert!(out.status.success(), "scenario failed: {shown}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("checks ok=") && l.ends_with(" failed=0")),
        "no clean summary line: {shown}"
    );
    assert!(!stdout.contains("\nFAIL "), "a check failed: {shown}");
    for what in must_pass {
        assert!(
            stdout
                .lines()
                .any(|l| l.strip_prefix("ok   ") == Some(*what)),
            "missing check {what:?}: {shown}"
        );
    }
    Some(stdout)
}

/// Four redis backends behind one pool with hash tags `{}`. The proxy is
/// dropped (stopped) before its backends.
struct RedisPool {
    proxy: Proxy,
    backends: Vec<Redis>,
}

impl RedisPool {
    fn start() -> RedisPool {
        let backends = Redis::start_many(4);
        let refs: Vec<&Redis> = backends.iter().collect();
        let proxy = Proxy::start_pools(&[PoolConf::redis(&refs).hash_tag("{}")], &[]);
        RedisPool { proxy, backends }
    }

    fn scenario<'a>(&self, script: &'a str, args: &'a [&'a str]) -> Scenario<'a> {
        Scenario {
            script,
            port: self.proxy.port(),
            backends: self.backends.iter().map(Redis::addr).collect(),
            args,
        }
    }
}

/// Three memcached backends behind one memcache pool.
struct MemcachePool {
    proxy: Proxy,
    backends: Vec<Memcached>,
}

impl MemcachePool {
    fn start() -> MemcachePool {
        let backends: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
        let refs: Vec<&Memcached> = backends.iter().collect();
        let proxy = Proxy::start_pools(&[PoolConf::memcache(&refs)], &[]);
        MemcachePool { proxy, backends }
    }

    fn scenario<'a>(&self, script: &'a str, args: &'a [&'a str]) -> Scenario<'a> {
        Scenario {
            script,
            port: self.proxy.port(),
            backends: self.backends.iter().map(Memcached::addr).collect(),
            args,
        }
    }
}

/// A scenario straight against one plain server (no proxy, no backends list:
/// the scripts skip the checks that need a pool's layout).
fn plain<'a>(script: &'a str, port: u16, args: &'a [&'a str]) -> Scenario<'a> {
    Scenario {
        script,
        port,
        backends: Vec::new(),
        args,
    }
}

// ---------------------------------------------------------------------------
// The scripts against plain servers: these pass today and prove the scripts.

#[test]
fn redis_scripts_pass_against_plain_redis() {
    let r = Redis::start();
    let p = r.port();
    for (script, args) in [
        (
            "py/redis_py.py",
            &["--api", "sync", "--parser", "python"][..],
        ),
        (
            "py/redis_py.py",
            &["--api", "asyncio", "--parser", "hiredis"][..],
        ),
        ("py/coredis_client.py", &[][..]),
        ("py/cross_server.py", &[][..]),
        ("py/redis_tools.py", &[][..]),
        ("node/node_redis.js", &[][..]),
        ("node/ioredis_client.js", &[][..]),
    ] {
        if expect_pass(plain(script, p, args), &[]).is_none() {
            return;
        }
    }
}

#[test]
fn memcache_scripts_pass_against_plain_memcached() {
    let m = Memcached::start();
    for script in ["py/memcache_py.py", "node/memcached_node.js"] {
        if expect_pass(plain(script, m.port(), &[]), &[]).is_none() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// redis-py 8 (RESP3 by default)

#[test]
fn redis_py_sync_resp3_basics() {
    let pool = RedisPool::start();
    let args = ["--api", "sync", "--parser", "python", "--part", "basic"];
    expect_pass(
        pool.scenario("py/redis_py.py", &args),
        &[
            "handshake HELLO 3 answered with proto 3",
            "HGETALL returns a dict",
            "GET of a missing key is None",
            "MGET over 4 keys on different servers",
        ],
    );
}

#[test]
fn redis_py_asyncio_resp3_basics() {
    let pool = RedisPool::start();
    let args = ["--api", "asyncio", "--parser", "python", "--part", "basic"];
    expect_pass(
        pool.scenario("py/redis_py.py", &args),
        &[
            "HGETALL returns a dict",
            "MGET over 4 keys on different servers",
        ],
    );
}

#[test]
fn redis_py_hiredis_resp3_basics() {
    let pool = RedisPool::start();
    let args = ["--api", "sync", "--parser", "hiredis", "--part", "basic"];
    expect_pass(
        pool.scenario("py/redis_py.py", &args),
        &[
            "connection uses the hiredis parser",
            "HGETALL returns a dict",
            "MGET over 4 keys on different servers",
        ],
    );
}

#[test]
fn redis_py_info() {
    let pool = RedisPool::start();
    let args = ["--part", "info"];
    expect_pass(
        pool.scenario("py/redis_py.py", &args),
        &["INFO has redis_version", "ECHO"],
    );
}

#[test]
fn redis_py_pipeline_transaction() {
    let pool = RedisPool::start();
    let args = ["--part", "transaction"];
    expect_pass(
        pool.scenario("py/redis_py.py", &args),
        &[
            "transaction INCR applied exactly once",
            "transaction over two servers is refused",
            "refused transaction wrote nothing on any backend",
        ],
    );
}

#[test]
fn redis_py_lock() {
    let pool = RedisPool::start();
    let args = ["--part", "lock"];
    expect_pass(
        pool.scenario("py/redis_py.py", &args),
        &[
            "Lock.release()",
            "lock key gone after release",
            "Lock.extend()",
        ],
    );
}

#[test]
fn redis_py_script_after_flush() {
    let pool = RedisPool::start();
    let args = ["--part", "script"];
    expect_pass(
        pool.scenario("py/redis_py.py", &args),
        &[
            "script after SCRIPT FLUSH (NOSCRIPT fallback)",
            "SCRIPT EXISTS after the fallback",
        ],
    );
}

#[test]
fn redis_py_scan_iter() {
    let pool = RedisPool::start();
    let args = ["--part", "scan"];
    expect_pass(
        pool.scenario("py/redis_py.py", &args),
        &[
            "scan_iter() visits every key exactly once",
            "scan_iter(count=10) visits every key exactly once",
        ],
    );
}

#[test]
fn redis_py_asyncio_everything() {
    let pool = RedisPool::start();
    let args = ["--api", "asyncio", "--parser", "hiredis"];
    expect_pass(
        pool.scenario("py/redis_py.py", &args),
        &[
            "refused transaction wrote nothing on any backend",
            "Lock.release()",
            "scan_iter() visits every key exactly once",
        ],
    );
}

#[test]
fn redis_py_hiredis_everything() {
    let pool = RedisPool::start();
    let args = ["--api", "sync", "--parser", "hiredis"];
    expect_pass(
        pool.scenario("py/redis_py.py", &args),
        &[
            "refused transaction wrote nothing on any backend",
            "script after SCRIPT FLUSH (NOSCRIPT fallback)",
            "scan_iter() visits every key exactly once",
        ],
    );
}

// ---------------------------------------------------------------------------
// coredis (RESP3 only)

#[test]
fn coredis_basics() {
    let pool = RedisPool::start();
    expect_pass(
        pool.scenario("py/coredis_client.py", &["--part", "basic"]),
        &["GET", "HGETALL returns a dict"],
    );
}

#[test]
fn coredis_scan() {
    let pool = RedisPool::start();
    expect_pass(
        pool.scenario("py/coredis_client.py", &["--part", "scan"]),
        &["scan_iter() visits every key exactly once"],
    );
}

// ---------------------------------------------------------------------------
// node-redis (npm `redis`, RESP3 by default)

#[test]
fn node_redis_basics() {
    let pool = RedisPool::start();
    expect_pass(
        pool.scenario("node/node_redis.js", &["--part", "basic"]),
        &[
            "connect() at defaults",
            "HGETALL (a RESP3 map) as an object",
            "connect() with name and database: 0",
            "CLIENT GETNAME is the name option",
        ],
    );
}

#[test]
fn node_redis_multi() {
    let pool = RedisPool::start();
    expect_pass(
        pool.scenario("node/node_redis.js", &["--part", "multi"]),
        &[
            "transaction INCR applied exactly once",
            "multi() over two servers is refused",
            "refused multi wrote nothing on any backend",
        ],
    );
}

#[test]
fn node_redis_scan_iterator() {
    let pool = RedisPool::start();
    expect_pass(
        pool.scenario("node/node_redis.js", &["--part", "scan"]),
        &[
            "scanIterator() visits every key exactly once",
            "scanIterator(COUNT 10) visits every key exactly once",
        ],
    );
}

// ---------------------------------------------------------------------------
// ioredis (6.x opens with HELLO 3 and falls back to RESP2 on NOPROTO; its
// ready check sends INFO)

#[test]
fn ioredis_ready_check_and_basics() {
    let pool = RedisPool::start();
    expect_pass(
        pool.scenario("node/ioredis_client.js", &["--part", "basic"]),
        &["connects and passes the INFO ready check", "get"],
    );
}

#[test]
fn ioredis_multi() {
    let pool = RedisPool::start();
    expect_pass(
        pool.scenario("node/ioredis_client.js", &["--part", "multi"]),
        &["transaction INCR applied exactly once"],
    );
}

#[test]
fn ioredis_pipeline_and_eval() {
    let pool = RedisPool::start();
    let args = ["--part", "pipeline", "--part", "eval"];
    expect_pass(
        pool.scenario("node/ioredis_client.js", &args),
        &["pipeline() over 4 servers", "eval with one key"],
    );
}

// ---------------------------------------------------------------------------
// redis-tools

#[test]
fn redis_benchmark_default_tests() {
    let pool = RedisPool::start();
    expect_pass(
        pool.scenario("py/redis_tools.py", &["--part", "benchmark"]),
        &[
            "redis-benchmark exits 0",
            "redis-benchmark ran every default test",
        ],
    );
}

#[test]
fn redis_cli_pipe() {
    let pool = RedisPool::start();
    expect_pass(
        pool.scenario("py/redis_tools.py", &["--part", "pipe"]),
        &[
            "redis-cli --pipe reports errors: 0, replies: 1000",
            "every piped key reads back with its value",
        ],
    );
}

// ---------------------------------------------------------------------------
// Two-key commands across servers

#[test]
fn two_key_commands_across_servers_are_refused() {
    let pool = RedisPool::start();
    expect_pass(
        pool.scenario("py/cross_server.py", &[]),
        &[
            "COPY destination written on no backend",
            "LMOVE destination written on no backend",
            "RPOPLPUSH destination written on no backend",
            "SMOVE destination written on no backend",
            "SMOVE error names the cross-server condition",
        ],
    );
}

// ---------------------------------------------------------------------------
// memcached

#[test]
fn memcached_node_stats_then_get() {
    let pool = MemcachePool::start();
    expect_pass(
        pool.scenario("node/memcached_node.js", &["--part", "stats"]),
        &[
            "stats() answers with a result per server",
            "get after stats()",
        ],
    );
}

#[test]
fn memcached_node_flush() {
    let pool = MemcachePool::start();
    expect_pass(
        pool.scenario("node/memcached_node.js", &["--part", "flush"]),
        &[
            "flush() answers",
            "no key left on any backend after flush()",
        ],
    );
}

#[test]
fn python_memcached_flush_all() {
    let pool = MemcachePool::start();
    expect_pass(
        pool.scenario("py/memcache_py.py", &["--part", "flush"]),
        &[
            "no key left on any backend after flush_all()",
            "get() after flush_all()",
        ],
    );
}

#[test]
fn memcflush_and_memcstat() {
    let pool = MemcachePool::start();
    expect_pass(
        pool.scenario("py/memcache_py.py", &["--part", "tools"]),
        &[
            "memcflush exits 0",
            "no key left on any backend after memcflush",
            "memcstat prints stats (version and more)",
        ],
    );
}
