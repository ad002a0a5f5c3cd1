//! Harness for end-to-end tests that run the built `nutcracker` binary in
//! front of real `redis-server` and `memcached` processes on loopback.
//!
//! What it owns: picking free loopback ports (unique within the test
//! process, with a fresh pick and restart when another process grabbed one
//! first), starting backends and the proxy and waiting until each really
//! listens (its own pid holds the listening socket: no sleeps, no false
//! "ready" from a stranger on the same port), writing configs into private
//! temp dirs, and killing and reaping every process in `Drop`, so a
//! panicking test leaves nothing behind. When a test panics while a
//! [`Proxy`] is alive, the tail of the proxy's log is printed to help the
//! diagnosis.
//!
//! Clients: [`RawConn`] writes exact bytes and reads exact bytes or whole
//! RESP replies (parsed into [`Resp`]) with a read timeout; [`Proxy::client`]
//! and [`Redis::client`] give `redis` crate connections; the memcached
//! helpers speak the ASCII protocol.
//!
//! ```text
//!   let a = Redis::start();  let b = Redis::start();
//!   let p = Proxy::start_pools(&[PoolConf::redis(&[&a, &b]).hash_tag("{}")], &["-m", "512"]);
//!   let mut c = p.raw();  c.send(&cmd(&["GET", "k"]));  c.expect(b"$-1\r\n");
//! ```

#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bound for anything a test waits on (start-up, a reply, an exit).
pub const WAIT: Duration = Duration::from_secs(10);
/// Read timeout of client sockets: a missing reply fails the test instead
/// of hanging it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a start is retried with fresh ports after a collision.
const START_ATTEMPTS: usize = 5;

/// The binary under test.
pub fn nutcracker_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nutcracker")
}

// ---------------------------------------------------------------------------
// Polling, ports, temp dirs

/// Polls `cond` until it holds or `timeout` passes; the pause between polls
/// grows from 1 ms to 20 ms so fast events are seen fast.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Panics with `what` unless `cond` holds within [`WAIT`].
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(WAIT, cond), "timed out waiting for {what}");
}

/// Ports handed out by [`free_port`] in this process: parallel tests never
/// get the same one, even if the kernel offers it twice.
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port that was free a moment ago (bind port 0, read it,
/// release it) and that no other caller in this process has been given.
/// Another process may still take it before use; the `start` functions
/// detect that and retry with a new port.
pub fn free_port() -> u16 {
    let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if used.insert(port) {
            return port;
        }
    }
    panic!("no unused loopback port found after 1000 tries");
}

/// A directory under the system temp dir, removed on drop (kept when
/// `NC_TEST_KEEP` is set, for post-mortems).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "nc-it-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("NC_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

// ---------------------------------------------------------------------------
// Processes

/// A spawned process that is stopped and reaped on drop: SIGTERM first when
/// `graceful` (so the proxy can shut down cleanly), SIGKILL after a bounded
/// wait or at once otherwise.
pub struct ChildGuard {
    child: Option<Child>,
    graceful: bool,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    pub fn new(child: Child, graceful: bool) -> ChildGuard {
        ChildGuard {
            child: Some(child),
            graceful,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status if the process has ended (reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = c.try_wait().ok().flatten();
            }
        }
        self.status
    }

    /// Sends `sig` unless the process is already gone.
    pub fn signal(&mut self, sig: i32) {
        if self.exited().is_none() {
            if let Ok(pid) = i32::try_from(self.pid()) {
                // SAFETY: plain kill(2) on our own, not yet reaped child.
                unsafe {
                    libc::kill(pid, sig);
                }
            }
        }
    }

    /// Waits (bounded) for the process to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.exited().is_some());
        self.status
    }

    /// Stops the process (see the type doc) and returns how it ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.graceful {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(5)).is_some() {
                return self.status;
            }
        }
        if self.exited().is_none() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                self.status = c.wait().ok();
            }
        }
        self.status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Inodes of the sockets listening on 127.0.0.1:`port` (or any address)
/// according to /proc/net/tcp; `None` when that file cannot be read.
fn listening_inodes(port: u16) -> Option<HashSet<u64>> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!(":{port:04X}");
    let mut out = HashSet::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retr uid timeout inode
        if f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A" {
            if let Ok(inode) = f[9].parse() {
                out.insert(inode);
            }
        }
    }
    Some(out)
}

/// Socket inodes held open by process `pid`.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut out = HashSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                if let Ok(inode) = n.parse() {
                    out.insert(inode);
                }
            }
        }
    }
    out
}

/// True when process `pid` itself listens on `port`. Falls back to a plain
/// connect when /proc is not available.
pub fn pid_listens_on(pid: u32, port: u16) -> bool {
    match listening_inodes(port) {
        Some(listening) => !listening.is_empty() && !socket_inodes(pid).is_disjoint(&listening),
        None => TcpStream::connect(("127.0.0.1", port)).is_ok(),
    }
}

/// Waits until `child` listens on every port in `ports`. `Err` carries a
/// reason when the child exited first (e.g. a port was taken) or the wait
/// timed out.
fn wait_listening(child: &mut ChildGuard, ports: &[u16]) -> Result<(), String> {
    let pid = child.pid();
    let mut died = None;
    let up = wait_until(WAIT, || {
        if let Some(st) = child.exited() {
            died = Some(st);
            return true;
        }
        ports.iter().all(|&p| pid_listens_on(pid, p))
    });
    match (up, died) {
        (_, Some(st)) => Err(format!("exited early ({st})")),
        (true, None) => Ok(()),
        (false, None) => Err(format!("not listening on {ports:?} after {WAIT:?}")),
    }
}

/// Last `n` lines of a text file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// redis-server

/// A `redis-server` on a free loopback port, killed on drop.
pub struct Redis {
    child: ChildGuard,
    port: u16,
    password: Option<String>,
    dir: TempDir,
}

impl Redis {
    /// A plain redis-server: no persistence, no password.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// A redis-server with extra command line arguments, e.g.
    /// `["--requirepass", "pw"]` (remembered, so the direct clients
    /// authenticate).
    pub fn start_with(extra: &[&str]) -> Redis {
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra.get(i + 1))
            .map(|s| s.to_string());
        let dir = TempDir::new("redis");
        let mut why = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let port_s = port.to_string();
            let log = dir.join(&format!("redis-{port}.log"));
            let mut args: Vec<&str> = vec![
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
                path_str(dir.path()),
                "--logfile",
                path_str(&log),
            ];
            args.extend_from_slice(extra);
            let child = Command::new("redis-server")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server (is it installed in PATH?)");
            let mut child = ChildGuard::new(child, false);
            match wait_listening(&mut child, &[port]) {
                Ok(()) => {
                    return Redis {
                        child,
                        port,
                        password,
                        dir,
                    }
                }
                Err(e) => why = format!("{e}; log:\n{}", tail(&log, 20)),
            }
        }
        panic!("redis-server did not start: {why}");
    }

    /// Starts `n` plain servers in parallel.
    pub fn start_many(n: usize) -> Vec<Redis> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n).map(|_| s.spawn(Redis::start)).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("redis start thread"))
                .collect()
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Kills the server now (to simulate a dead backend).
    pub fn kill(&mut self) {
        self.child.stop();
    }

    /// A direct `redis` crate connection (authenticated when the server has
    /// a password) selected to `db`.
    pub fn client_db(&self, db: i64) -> redis::Connection {
        let mut settings = redis::RedisConnectionInfo::default()
            .set_skip_set_lib_name()
            .set_db(db);
        if let Some(pw) = &self.password {
            settings = settings.set_password(pw);
        }
        connect_redis(self.port, settings)
    }

    /// A direct connection to db 0.
    pub fn client(&self) -> redis::Connection {
        self.client_db(0)
    }

    /// A raw connection to the backend (not authenticated).
    pub fn raw(&self) -> RawConn {
        RawConn::connect(self.port)
    }

    /// Every key in `db`.
    pub fn keys_db(&self, db: i64) -> Vec<Vec<u8>> {
        let mut c = self.client_db(db);
        redis::cmd("KEYS")
            .arg("*")
            .query(&mut c)
            .expect("KEYS * on backend")
    }

    /// Every key in db 0.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.keys_db(0)
    }

    pub fn dbsize_db(&self, db: i64) -> i64 {
        let mut c = self.client_db(db);
        redis::cmd("DBSIZE")
            .query(&mut c)
            .expect("DBSIZE on backend")
    }

    pub fn dbsize(&self) -> i64 {
        self.dbsize_db(0)
    }

    /// `GET key` in `db`, directly on this backend.
    pub fn get_db(&self, db: i64, key: &[u8]) -> Option<Vec<u8>> {
        let mut c = self.client_db(db);
        redis::cmd("GET")
            .arg(key)
            .query(&mut c)
            .expect("GET on backend")
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get_db(0, key)
    }

    /// True when `key` exists in db 0 of this backend.
    /// Client connections the server has, not counting the one asking.
    pub fn clients(&self) -> usize {
        match self.raw().call(&["CLIENT", "LIST"]) {
            Resp::Bulk(Some(b)) => b
                .split(|&c| c == b'\n')
                .filter(|l| !l.is_empty())
                .count()
                .saturating_sub(1),
            other => panic!("CLIENT LIST: {other:?}"),
        }
    }

    pub fn has(&self, key: &[u8]) -> bool {
        let mut c = self.client();
        let n: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut c)
            .expect("EXISTS on backend");
        n == 1
    }

    /// The server's own `config` line for a pool: `127.0.0.1:<port>:<weight>`.
    pub fn server_line(&self, weight: u32) -> String {
        format!("127.0.0.1:{}:{weight}", self.port)
    }
}

/// A `redis` crate connection to 127.0.0.1:`port` that sends nothing of
/// its own on connect beyond what `settings` asks (no `CLIENT SETINFO`),
/// with read/write timeouts.
pub fn connect_redis(port: u16, settings: redis::RedisConnectionInfo) -> redis::Connection {
    use redis::IntoConnectionInfo as _;
    let info = redis::ConnectionAddr::Tcp("127.0.0.1".to_string(), port)
        .into_connection_info()
        .expect("connection info")
        .set_redis_settings(settings);
    let client = redis::Client::open(info).expect("redis client");
    let con = client
        .get_connection_with_timeout(WAIT)
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    con.set_read_timeout(Some(READ_TIMEOUT))
        .expect("read timeout");
    con.set_write_timeout(Some(READ_TIMEOUT))
        .expect("write timeout");
    con
}

/// For each key, the indexes of the backends that hold it (db 0).
pub fn locate(backends: &[&Redis], key: &[u8]) -> Vec<usize> {
    backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.has(key))
        .map(|(i, _)| i)
        .collect()
}

// ---------------------------------------------------------------------------
// redis sentinel

/// A `redis-server <conf> --sentinel` on a free loopback port, monitoring
/// the given masters with short timeouts (down after 1 s, failover timeout
/// 5 s), killed on drop. Its conf file lives in its own temp dir, since a
/// sentinel rewrites it.
pub struct Sentinel {
    child: ChildGuard,
    port: u16,
    password: Option<String>,
    dir: TempDir,
}

impl Sentinel {
    /// Monitors each `(name, master)` with quorum `quorum`. `auth_pass`
    /// is the masters' password; `password` the sentinel's own.
    pub fn start(
        masters: &[(&str, &Redis)],
        quorum: u32,
        auth_pass: Option<&str>,
        password: Option<&str>,
    ) -> Sentinel {
        let dir = TempDir::new("sentinel");
        let mut why = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let log = dir.join(&format!("sentinel-{port}.log"));
            let mut conf = format!(
                // Also on ::1 where there is one, for sentinels named
                // `localhost`, whichever address that names first.
                "port {port}\nbind 127.0.0.1 -::1\ndaemonize no\ndir {}\nlogfile {}\n",
                path_str(dir.path()),
                path_str(&log)
            );
            if let Some(pw) = password {
                let _ = writeln!(conf, "requirepass {pw}");
            }
            for (name, m) in masters {
                let _ = writeln!(
                    conf,
                    "sentinel monitor {name} 127.0.0.1 {} {quorum}",
                    m.port()
                );
                let _ = writeln!(conf, "sentinel down-after-milliseconds {name} 1000");
                let _ = writeln!(conf, "sentinel failover-timeout {name} 5000");
                let _ = writeln!(conf, "sentinel parallel-syncs {name} 1");
                if let Some(pw) = auth_pass {
                    let _ = writeln!(conf, "sentinel auth-pass {name} {pw}");
                }
            }
            let file = dir.write(&format!("sentinel-{port}.conf"), &conf);
            let child = Command::new("redis-server")
                .arg(path_str(&file))
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server --sentinel");
            let mut child = ChildGuard::new(child, false);
            match wait_listening(&mut child, &[port]) {
                Ok(()) => {
                    return Sentinel {
                        child,
                        port,
                        password: password.map(str::to_string),
                        dir,
                    }
                }
                Err(e) => why = format!("{e}; log:\n{}", tail(&log, 20)),
            }
        }
        panic!("redis sentinel did not start: {why}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy's `sentinels:` line for it: `127.0.0.1:<port>:1`.
    pub fn line(&self) -> String {
        format!("127.0.0.1:{}:1", self.port)
    }

    /// Kills the sentinel now.
    pub fn kill(&mut self) {
        self.child.stop();
    }

    /// A raw connection, authenticated when the sentinel has a password.
    pub fn raw(&self) -> RawConn {
        let mut c = RawConn::connect(self.port);
        if let Some(pw) = &self.password {
            assert_eq!(c.call(&["AUTH", pw.as_str()]), Resp::ok());
        }
        c
    }

    /// The port of master `name` as this sentinel sees it.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        match self
            .raw()
            .call(&["SENTINEL", "get-master-addr-by-name", name])
        {
            Resp::Array(Some(v)) => match v.get(1) {
                Some(Resp::Bulk(Some(p))) => String::from_utf8_lossy(p).parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }

    /// How many replicas of `name` this sentinel knows in a good state,
    /// and how many other sentinels.
    pub fn known(&self, name: &str) -> (usize, usize) {
        let mut c = self.raw();
        let good = |r: Resp| {
            match r {
            Resp::Array(Some(v)) => v
                .iter()
                .filter(|entry| {
                    let Resp::Array(Some(kv)) = entry else {
                        return false;
                    };
                    kv.chunks(2).any(|p| {
                        p.first() == Some(&Resp::bulk("flags"))
                            && matches!(p.get(1), Some(Resp::Bulk(Some(f))) if !f.windows(4).any(|w| w == b"down") && !f.windows(4).any(|w| w == b"disc"))
                    })
                })
                .count(),
            _ => 0,
        }
        };
        let replicas = good(c.call(&["SENTINEL", "REPLICAS", name]));
        let sentinels = good(c.call(&["SENTINEL", "SENTINELS", name]));
        (replicas, sentinels)
    }

    /// `SENTINEL FAILOVER <name>`, which must be accepted.
    pub fn failover(&self, name: &str) {
        let r = self.raw().call(&["SENTINEL", "FAILOVER", name]);
        assert_eq!(r, Resp::ok(), "SENTINEL FAILOVER {name}");
    }
}

// ---------------------------------------------------------------------------
// memcached

/// A `memcached` on a free loopback TCP port (UDP off), killed on drop.
pub struct Memcached {
    child: ChildGuard,
    port: u16,
    dir: TempDir,
}

impl Memcached {
    pub fn start() -> Memcached {
        Memcached::start_with(&[])
    }

    /// With extra arguments, e.g. `["-m", "64"]`. As root, memcached wants
    /// `-u`; `-u root` is added then.
    pub fn start_with(extra: &[&str]) -> Memcached {
        let dir = TempDir::new("memcached");
        let log = dir.join("memcached.log");
        let mut why = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let port_s = port.to_string();
            let mut args = vec!["-l", "127.0.0.1", "-p", &port_s, "-U", "0"];
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                args.extend(["-u", "root"]);
            }
            args.extend_from_slice(extra);
            let out = std::fs::File::create(&log).expect("memcached log");
            let err = out.try_clone().expect("clone log");
            let child = Command::new("memcached")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("spawn memcached (is it installed in PATH?)");
            let mut child = ChildGuard::new(child, false);
            match wait_listening(&mut child, &[port]) {
                Ok(()) => return Memcached { child, port, dir },
                Err(e) => why = format!("{e}; output:\n{}", tail(&log, 20)),
            }
        }
        panic!("memcached did not start: {why}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        self.child.stop();
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn raw(&self) -> RawConn {
        RawConn::connect(self.port)
    }

    /// `get key` directly on this server.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        mc_get(&mut self.raw(), key)
    }

    /// `set key 0 0 <len>` directly on this server.
    pub fn set(&self, key: &[u8], value: &[u8]) {
        let mut c = self.raw();
        let mut req = b"set ".to_vec();
        req.extend_from_slice(key);
        req.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
        c.send(&req);
        c.expect(b"STORED\r\n");
    }

    pub fn server_line(&self, weight: u32) -> String {
        format!("127.0.0.1:{}:{weight}", self.port)
    }
}

/// `get key` over `conn` (a memcached server or a memcache pool); `None`
/// on a miss. Panics on anything but `VALUE ... END` or `END`.
pub fn mc_get(conn: &mut RawConn, key: &[u8]) -> Option<Vec<u8>> {
    let mut req = b"get ".to_vec();
    req.extend_from_slice(key);
    req.extend_from_slice(b"\r\n");
    conn.send(&req);
    let line = conn.recv_line();
    if line == b"END\r\n" {
        return None;
    }
    let text = String::from_utf8_lossy(&line).into_owned();
    let len: usize = text
        .trim_end()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad memcache get reply line {text:?}"));
    assert!(
        text.starts_with("VALUE "),
        "bad memcache get reply {text:?}"
    );
    let data = conn.recv_exact(len + 2);
    conn.expect(b"END\r\n");
    Some(data[..len].to_vec())
}

// ---------------------------------------------------------------------------
// Configs and the proxy

/// One pool of a proxy config. The listen address is filled in by
/// [`Proxy::start_pools`].
#[derive(Clone, Debug)]
pub struct PoolConf {
    pub name: String,
    pub redis: bool,
    pub servers: Vec<String>,
    /// Other directives, written in order as `key: value` (values verbatim,
    /// so quote them yourself where YAML needs it: `"\"{}\""`).
    pub opts: Vec<(String, String)>,
    /// `sentinels:` lines (`host:port:weight`), written after the servers.
    pub sentinels: Vec<String>,
}

impl PoolConf {
    /// An empty pool named `name`.
    pub fn new(name: &str, redis: bool) -> PoolConf {
        PoolConf {
            name: name.to_string(),
            redis,
            servers: Vec::new(),
            opts: Vec::new(),
            sentinels: Vec::new(),
        }
    }

    /// A redis pool `alpha` over `backends`, weight 1 each.
    pub fn redis(backends: &[&Redis]) -> PoolConf {
        let mut p = PoolConf::new("alpha", true);
        p.servers = backends.iter().map(|b| b.server_line(1)).collect();
        p
    }

    /// Pool `alpha` over `backends`, and pool `tagged` over the same
    /// servers with `hash_tag: "{}"`.
    pub fn redis_and_tagged(backends: &[&Redis]) -> Vec<PoolConf> {
        let tagged = backends
            .iter()
            .fold(PoolConf::new("tagged", true), |p, b| {
                p.server(&b.server_line(1))
            })
            .hash_tag("{}");
        vec![PoolConf::redis(backends), tagged]
    }

    /// A memcache pool `alpha` over `backends`, weight 1 each.
    pub fn memcache(backends: &[&Memcached]) -> PoolConf {
        let mut p = PoolConf::new("alpha", false);
        p.servers = backends.iter().map(|b| b.server_line(1)).collect();
        p
    }

    /// Adds a server line verbatim (`host:port:weight [name]`).
    pub fn server(mut self, line: &str) -> PoolConf {
        self.servers.push(line.to_string());
        self
    }

    /// Adds a directive; `value` is written verbatim.
    pub fn opt(mut self, key: &str, value: &str) -> PoolConf {
        self.opts.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds a `sentinels:` line verbatim (`host:port:weight`).
    pub fn sentinel(mut self, line: &str) -> PoolConf {
        self.sentinels.push(line.to_string());
        self
    }

    /// `hash_tag: "<tag>"`
    pub fn hash_tag(self, tag: &str) -> PoolConf {
        self.opt("hash_tag", &format!("\"{tag}\""))
    }

    /// The YAML text of this pool listening on 127.0.0.1:`port`.
    pub fn yaml(&self, port: u16) -> String {
        let mut y = format!("{}:\n  listen: 127.0.0.1:{port}\n", self.name);
        let _ = writeln!(y, "  redis: {}", self.redis);
        for (k, v) in &self.opts {
            let _ = writeln!(y, "  {k}: {v}");
        }
        y.push_str("  servers:\n");
        for s in &self.servers {
            let _ = writeln!(y, "   - {s}");
        }
        if !self.sentinels.is_empty() {
            y.push_str("  sentinels:\n");
            for s in &self.sentinels {
                let _ = writeln!(y, "   - {s}");
            }
        }
        y
    }
}

/// A running nutcracker, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Proxy {
    child: ChildGuard,
    ports: Vec<u16>,
    stats_port: u16,
    log: PathBuf,
    conf: PathBuf,
    dir: TempDir,
}

/// Placeholder for the n-th listen port in [`Proxy::start`] YAML: `@PORT0@`,
/// `@PORT1@`, ...
pub fn port_placeholder(n: usize) -> String {
    format!("@PORT{n}@")
}

impl Proxy {
    /// Starts nutcracker with config `yaml`, in which every `@PORT<n>@`
    /// (n = 0, 1, ...) is replaced by a free port; the proxy is ready when
    /// it listens on all of them. Always passed: `-c <conf> -s <free port>
    /// -a 127.0.0.1 -v 6 -o <log>`; `extra_args` follow (e.g. `-m 512`).
    pub fn start(yaml: &str, extra_args: &[&str]) -> Proxy {
        let nports = (0..)
            .take_while(|&n| yaml.contains(&port_placeholder(n)))
            .count();
        assert!(nports > 0, "config has no @PORT0@ placeholder:\n{yaml}");
        Proxy::launch(extra_args, nports, |ports| {
            let mut text = yaml.to_string();
            for (n, p) in ports.iter().enumerate() {
                text = text.replace(&port_placeholder(n), &p.to_string());
            }
            text
        })
    }

    /// Starts nutcracker with these pools; pool `i` listens on `port_of(i)`.
    pub fn start_pools(pools: &[PoolConf], extra_args: &[&str]) -> Proxy {
        assert!(!pools.is_empty(), "no pools");
        Proxy::launch(extra_args, pools.len(), |ports| {
            pools
                .iter()
                .zip(ports)
                .map(|(p, &port)| p.yaml(port))
                .collect()
        })
    }

    /// One redis pool over `backends` with extra directives `opts`.
    pub fn redis(backends: &[&Redis], opts: &[(&str, &str)], extra_args: &[&str]) -> Proxy {
        let mut pool = PoolConf::redis(backends);
        for (k, v) in opts {
            pool = pool.opt(k, v);
        }
        Proxy::start_pools(&[pool], extra_args)
    }

    /// Like [`Proxy::start_pools`], with environment variables set for the
    /// proxy only (e.g. `NUTCRACKER_REQUEST_MEMORY`).
    pub fn start_pools_env(pools: &[PoolConf], extra_args: &[&str], env: &[(&str, &str)]) -> Proxy {
        assert!(!pools.is_empty(), "no pools");
        Proxy::launch_env(extra_args, env, pools.len(), |ports| {
            pools
                .iter()
                .zip(ports)
                .map(|(p, &port)| p.yaml(port))
                .collect()
        })
    }

    fn launch(extra_args: &[&str], nports: usize, yaml: impl Fn(&[u16]) -> String) -> Proxy {
        Proxy::launch_env(extra_args, &[], nports, yaml)
    }

    fn launch_env(
        extra_args: &[&str],
        env: &[(&str, &str)],
        nports: usize,
        yaml: impl Fn(&[u16]) -> String,
    ) -> Proxy {
        let dir = TempDir::new("proxy");
        let log = dir.join("nutcracker.log");
        let mut why = String::new();
        for _ in 0..START_ATTEMPTS {
            let ports: Vec<u16> = (0..nports).map(|_| free_port()).collect();
            let stats_port = free_port();
            let conf = dir.write("nutcracker.yml", &yaml(&ports));
            let stats = stats_port.to_string();
            let mut args = vec![
                "-c",
                path_str(&conf),
                "-s",
                &stats,
                "-a",
                "127.0.0.1",
                "-v",
                "6",
                "-o",
                path_str(&log),
            ];
            args.extend_from_slice(extra_args);
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("stdio.log"))
                .expect("open stdio log");
            let err = out.try_clone().expect("clone stdio log");
            let child = Command::new(nutcracker_bin())
                .args(&args)
                .envs(env.iter().copied())
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("spawn nutcracker");
            let mut child = ChildGuard::new(child, true);
            match wait_listening(&mut child, &ports) {
                Ok(()) => {
                    return Proxy {
                        child,
                        ports,
                        stats_port,
                        log,
                        conf,
                        dir,
                    }
                }
                Err(e) => {
                    why = format!(
                        "{e}\nconfig:\n{}\nlog:\n{}\nstdio:\n{}",
                        std::fs::read_to_string(&conf).unwrap_or_default(),
                        tail(&log, 20),
                        tail(&dir.join("stdio.log"), 20)
                    );
                }
            }
        }
        panic!("nutcracker did not start: {why}");
    }

    /// The listen port of the first pool.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// The listen port of pool `n` (in config order).
    pub fn port_of(&self, n: usize) -> u16 {
        self.ports[n]
    }

    pub fn stats_port(&self) -> u16 {
        self.stats_port
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log tail) if the proxy process has ended.
    pub fn assert_alive(&mut self) {
        if let Some(st) = self.child.exited() {
            panic!(
                "nutcracker exited ({st}); log:\n{}\nstdio:\n{}",
                tail(&self.log, 40),
                tail(&self.dir.join("stdio.log"), 40)
            );
        }
    }

    /// Sends a signal (e.g. `libc::SIGTTIN`).
    pub fn signal(&mut self, sig: i32) {
        self.child.signal(sig);
    }

    /// Stops the proxy (SIGTERM, bounded wait, SIGKILL) and returns how it
    /// ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.stop()
    }

    /// Replaces the config file with `yaml` (whole, by rename, as a
    /// careful operator would) and sends SIGUSR1; returns the log line the
    /// reload produced (`reloaded configuration ...` or `reload failed:
    /// ...`) once it is written.
    pub fn reload(&mut self, yaml: &str) -> String {
        let tmp = self.dir.join("nutcracker.yml.new");
        std::fs::write(&tmp, yaml).expect("write new config");
        std::fs::rename(&tmp, &self.conf).expect("rename new config");
        self.signal_reload()
    }

    /// Sends SIGUSR1 and waits for the reload's log line (see [`reload`]).
    pub fn signal_reload(&mut self) -> String {
        let done = |log: &str| {
            log.matches("reloaded configuration").count() + log.matches("reload failed").count()
        };
        let before = done(&self.log_text());
        self.signal(libc::SIGUSR1);
        let mut line = String::new();
        wait_for("the reload's log line", || {
            let log = self.log_text();
            if done(&log) > before {
                line = log
                    .lines()
                    .rev()
                    .find(|l| l.contains("reloaded configuration") || l.contains("reload failed"))
                    .unwrap_or_default()
                    .to_string();
                true
            } else {
                false
            }
        });
        self.assert_alive();
        line
    }

    /// A raw connection to pool 0.
    pub fn raw(&self) -> RawConn {
        RawConn::connect(self.port())
    }

    /// A `redis` crate connection to pool 0 (no AUTH, no SETINFO).
    pub fn client(&self) -> redis::Connection {
        connect_redis(
            self.port(),
            redis::RedisConnectionInfo::default().set_skip_set_lib_name(),
        )
    }

    /// A `redis` crate connection to pool 0 that sends `AUTH pw` first.
    pub fn client_auth(&self, pw: &str) -> redis::Connection {
        connect_redis(
            self.port(),
            redis::RedisConnectionInfo::default()
                .set_skip_set_lib_name()
                .set_password(pw),
        )
    }

    /// Its open descriptors, leaving out connections to the stats port:
    /// after the answer the stats thread drains each one until the client's
    /// close, so the one just read may still be open for a moment.
    pub fn fds(&self) -> usize {
        let stats = stats_sockets(self.stats_port);
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| {
                        let link = std::fs::read_link(e.path()).unwrap_or_default();
                        let link = link.to_string_lossy();
                        let inode = link
                            .strip_prefix("socket:[")
                            .and_then(|r| r.strip_suffix(']'))
                            .and_then(|n| n.parse::<u64>().ok());
                        !inode.is_some_and(|i| stats.contains(&i))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// The stats JSON document (everything the stats port sends).
    pub fn stats(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.stats_port)).expect("connect stats");
        s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
        let mut v = Vec::new();
        s.read_to_end(&mut v).expect("read stats");
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// Metric `name` of the server block named `server` (`127.0.0.1:<port>`)
/// in a stats JSON document; `None` when the server or metric is absent.
pub fn server_stat_opt(json: &str, server: &str, name: &str) -> Option<i64> {
    let head = format!("\"{server}\": {{");
    let at = json.find(&head)?;
    let block = &json[at + head.len()..];
    let block = &block[..block.find('}').unwrap_or(block.len())];
    stat_values(block, name).first().copied()
}

/// [`server_stat_opt`], for a server and metric that must be there.
pub fn server_stat(json: &str, server: &str, name: &str) -> i64 {
    server_stat_opt(json, server, name)
        .unwrap_or_else(|| panic!("no \"{name}\" of server {server} in stats: {json}"))
}

/// Every value of metric `name` in a stats JSON document (pool metrics
/// once per pool, server metrics once per server), in document order.
pub fn stat_values(json: &str, name: &str) -> Vec<i64> {
    let needle = format!("\"{name}\":");
    json.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &json[at + needle.len()..];
            let end = rest
                .find(|c: char| c != '-' && !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let alive = self.child.exited().is_none();
            eprintln!(
                "---- nutcracker (pid {}, {}) log tail {}:\n{}\n---- stdio:\n{}\n----",
                self.pid(),
                if alive { "running" } else { "EXITED" },
                self.log.display(),
                tail(&self.log, 40),
                tail(&self.dir.join("stdio.log"), 20)
            );
        }
        self.child.stop();
    }
}

// ---------------------------------------------------------------------------
// RESP

/// A RESP2 value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Status(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    /// `$-1` is `Bulk(None)`.
    Bulk(Option<Vec<u8>>),
    /// `*-1` is `Array(None)`.
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn bulk(b: impl AsRef<[u8]>) -> Resp {
        Resp::Bulk(Some(b.as_ref().to_vec()))
    }

    pub fn nil() -> Resp {
        Resp::Bulk(None)
    }

    pub fn ok() -> Resp {
        Resp::Status(b"OK".to_vec())
    }

    pub fn array(items: Vec<Resp>) -> Resp {
        Resp::Array(Some(items))
    }

    /// The text of a status or error line.
    pub fn line(&self) -> Option<String> {
        match self {
            Resp::Status(s) | Resp::Error(s) => Some(String::from_utf8_lossy(s).into_owned()),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Resp::Error(_))
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Resp::Status(s) => {
                out.push(b'+');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Resp::Error(s) => {
                out.push(b'-');
                out.extend_from_slice(s);
                out.extend_from_slice(b"\r\n");
            }
            Resp::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
            Resp::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Resp::Bulk(Some(b)) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Resp::Array(None) => out.extend_from_slice(b"*-1\r\n"),
            Resp::Array(Some(items)) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.encode_into(out);
                }
            }
        }
    }
}

/// Parses one RESP2 value at the start of `buf`: `Ok(None)` when more bytes
/// are needed, else the value and its length in bytes.
pub fn parse_resp(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Resp, usize)>, String> {
    if depth > 64 {
        return Err("reply nested deeper than 64".into());
    }
    let rest = &buf[at.min(buf.len())..];
    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, body)) = rest[..eol].split_first() else {
        return Err("empty reply line".into());
    };
    let after = at + eol + 2;
    let num = || -> Result<i64, String> {
        std::str::from_utf8(body)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad number {}", show(body)))
    };
    match kind {
        b'+' => Ok(Some((Resp::Status(body.to_vec()), after))),
        b'-' => Ok(Some((Resp::Error(body.to_vec()), after))),
        b':' => Ok(Some((Resp::Int(num()?), after))),
        b'$' => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), after)));
            }
            let n = usize::try_from(n).map_err(|e| e.to_string())?;
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Err(format!("bulk of {n} bytes not followed by CRLF"));
            }
            Ok(Some((Resp::bulk(&buf[after..after + n]), after + n + 2)))
        }
        b'*' => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Resp::Array(None), after)));
            }
            let mut items = Vec::new();
            let mut pos = after;
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    None => return Ok(None),
                    Some((v, next)) => {
                        items.push(v);
                        pos = next;
                    }
                }
            }
            Ok(Some((Resp::Array(Some(items)), pos)))
        }
        _ => Err(format!("bad reply type byte in {}", show(&rest[..eol + 2]))),
    }
}

/// A multibulk request: `*<n>\r\n` then `$<len>\r\n<arg>\r\n` per argument.
pub fn cmd<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Bytes escaped for a failure message, cut after 300 bytes.
pub fn show(bytes: &[u8]) -> String {
    let cut = bytes.len().min(300);
    let mut s = bytes[..cut].escape_ascii().to_string();
    if cut < bytes.len() {
        let _ = write!(s, "... ({} bytes)", bytes.len());
    }
    format!("\"{s}\"")
}

// ---------------------------------------------------------------------------
// Raw client

/// A blocking loopback TCP client with a read timeout and its own read
/// buffer, for byte-exact conversations.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    port: u16,
}

/// When [`send_recv`] stops reading.
#[derive(Clone, Copy, Debug)]
pub enum Until<'a> {
    /// Exactly this many bytes.
    Len(usize),
    /// Until the bytes read end with this suffix.
    Suffix(&'a [u8]),
    /// This many complete RESP replies.
    Replies(usize),
    /// Until the peer closes.
    Eof,
}

impl RawConn {
    pub fn connect(port: u16) -> RawConn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(READ_TIMEOUT))
            .expect("write timeout");
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            buf: Vec::new(),
            port,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// A second handle on the socket, e.g. for a writer thread while this
    /// one reads (large pipelines would otherwise deadlock on full buffers).
    pub fn writer(&self) -> TcpStream {
        self.stream.try_clone().expect("clone socket")
    }

    /// Makes the next close send RST instead of FIN (SO_LINGER 0).
    pub fn set_linger_zero(&self) {
        use std::os::unix::io::AsRawFd as _;
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket we own, with a properly sized value.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::addr_of!(l).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt SO_LINGER");
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).expect("read timeout");
    }

    /// Writes all of `bytes`, or says why not (for a peer that may close
    /// the connection while it is being written to).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write to :{}: {e}", self.port));
    }

    /// Sends a request built from `args` and returns the parsed reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Resp {
        self.send(&cmd(args));
        self.recv_reply()
    }

    /// Like [`RawConn::call`], the arguments split at ASCII spaces
    /// (`"SET k v"`).
    pub fn call_str(&mut self, line: &str) -> Resp {
        let args: Vec<&str> = line.split(' ').filter(|a| !a.is_empty()).collect();
        self.call(&args)
    }

    /// Half-closes the write side (the peer sees EOF).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads more bytes into the buffer; `Ok(0)` is EOF.
    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn fill_or_panic(&mut self, what: &str) {
        match self.fill() {
            Ok(0) => panic!(
                "EOF from :{} while waiting for {what}; got so far {}",
                self.port,
                show(&self.buf)
            ),
            Ok(_) => {}
            Err(e) => panic!(
                "read from :{} failed ({e}) while waiting for {what}; got so far {}",
                self.port,
                show(&self.buf)
            ),
        }
    }

    /// Exactly `n` bytes.
    pub fn recv_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill_or_panic(&format!("{n} bytes"));
        }
        self.buf.drain(..n).collect()
    }

    /// Reads `expected.len()` bytes and asserts they are `expected`.
    pub fn expect(&mut self, expected: &[u8]) {
        let got = self.recv_exact(expected.len());
        assert!(
            got == expected,
            "from :{}: expected {}, got {}",
            self.port,
            show(expected),
            show(&got)
        );
    }

    /// One line including its `\r\n`.
    pub fn recv_line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.buf.drain(..i + 2).collect();
            }
            self.fill_or_panic("a CRLF-terminated line");
        }
    }

    /// One complete RESP reply, parsed.
    pub fn recv_reply(&mut self) -> Resp {
        self.recv_reply_raw().0
    }

    /// One complete RESP reply, parsed and as its raw bytes.
    pub fn recv_reply_raw(&mut self) -> (Resp, Vec<u8>) {
        loop {
            match parse_resp(&self.buf) {
                Ok(Some((v, n))) => {
                    let raw: Vec<u8> = self.buf.drain(..n).collect();
                    return (v, raw);
                }
                Ok(None) => self.fill_or_panic("a complete reply"),
                Err(e) => panic!("bad reply from :{}: {e}: {}", self.port, show(&self.buf)),
            }
        }
    }

    /// Asserts the peer closes the connection (EOF or reset) without
    /// sending anything more.
    pub fn expect_eof(&mut self) {
        assert!(
            self.buf.is_empty(),
            "expected EOF from :{}, but have unread {}",
            self.port,
            show(&self.buf)
        );
        // `fill` retries EINTR itself, so one read decides.
        match self.fill() {
            Ok(0) => {}
            Ok(_) => panic!("expected EOF from :{}, got {}", self.port, show(&self.buf)),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected EOF from :{}, read failed: {e}", self.port),
        }
    }

    /// Asserts nothing arrives within `quiet` (and the connection is still
    /// open).
    pub fn expect_silence(&mut self, quiet: Duration) {
        self.set_read_timeout(quiet);
        let r = self.fill();
        self.set_read_timeout(READ_TIMEOUT);
        match r {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(0) => panic!("connection to :{} closed unexpectedly", self.port),
            Ok(_) => panic!("unexpected bytes from :{}: {}", self.port, show(&self.buf)),
            Err(e) => panic!("read from :{} failed: {e}", self.port),
        }
    }

    /// Reads according to `until` and returns the bytes.
    pub fn recv_until(&mut self, until: Until) -> Vec<u8> {
        match until {
            Until::Len(n) => self.recv_exact(n),
            Until::Suffix(s) => {
                while !self.buf.ends_with(s) {
                    self.fill_or_panic(&format!("suffix {}", show(s)));
                }
                std::mem::take(&mut self.buf)
            }
            Until::Replies(n) => {
                let mut out = Vec::new();
                for _ in 0..n {
                    out.extend(self.recv_reply_raw().1);
                }
                out
            }
            Until::Eof => loop {
                match self.fill() {
                    Ok(0) => return std::mem::take(&mut self.buf),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                        return std::mem::take(&mut self.buf)
                    }
                    Err(e) => panic!(
                        "read from :{} failed ({e}) before EOF; got {}",
                        self.port,
                        show(&self.buf)
                    ),
                }
            },
        }
    }
}

/// Connects to `port`, writes `bytes` in one write, reads per `until`.
pub fn send_recv(port: u16, bytes: &[u8], until: Until) -> Vec<u8> {
    let mut c = RawConn::connect(port);
    c.send(bytes);
    c.recv_until(until)
}

/// Resident memory of `pid` in bytes (VmRSS), 0 when it is gone.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Socket inodes of the TCP connections (not listeners) whose local port
/// is `port`, from /proc/net/tcp and tcp6.
fn stats_sockets(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let lport = local
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            // 0A: LISTEN.
            if lport == Some(port) && *state != "0A" {
                if let Ok(i) = inode.parse() {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// Open file descriptors of `pid`, 0 when it is gone.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
