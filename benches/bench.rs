//! `make bench`: what the proxy costs, measured against the servers it fronts.
//!
//! What it owns: a self-contained benchmark that starts its own backends on
//! free loopback ports (4 `redis-server` and 4 `memcached` behind the proxy,
//! plus one direct server of each kind), one `nutcracker` with a redis pool
//! and a memcached pool over them, and drives the same workloads directly and
//! through the proxy. Redis load comes from `redis-benchmark`; memcached load
//! from a pipelining generator in this file (one mio loop, N connections, each
//! sending `depth` requests, then reading every reply in full before the next
//! batch, as `redis-benchmark -P` does).
//!
//! ```text
//!   redis-benchmark ──► redis-server (direct)          ◄── CPU: direct server
//!   redis-benchmark ──► nutcracker ──► 4 redis-server  ◄── CPU: proxy, sum of backends
//!   redis-benchmark ──► haproxy    ──► 4 redis-server  ◄── CPU: the L4 relay (the floor)
//!   redis-benchmark ──► $NUTCRACKER_BIN2 ──► 4 redis   ◄── CPU: a second binary (e.g. C)
//!   mc generator    ──► the same four targets, memcached
//! ```
//!
//! The L4 relay is HAProxy in `mode tcp` with one thread, round-robin over
//! the same backends: it has no sharding, so each client connection goes to
//! one backend, and every key is written to every backend so its reads hit
//! too. It parses nothing, so its CPU per request is the floor for any
//! proxy on this machine; the proxies are reported as ratios over it, and
//! over the second binary when `NUTCRACKER_BIN2` is set, each ratio taken
//! within one round (the targets run back to back, in an order rotating
//! from round to round) before the median over the rounds.
//!
//! CPU is time on CPU from `/proc/<pid>/task/*/schedstat` (user + kernel, all
//! threads), read before and after each run and divided by the requests of
//! the run; the proxy's read/write system calls per request (socket calls
//! included) are counted with `perf stat` on the syscall tracepoints in
//! the last round (without perf, from `/proc/<pid>/io`, which misses
//! recv/send), its memory from VmRSS (sampled, and read again 10 s
//! after the heaviest workload ends) and VmHWM. The runs of a workload
//! (direct, proxy, relay, second binary) rotate in order from one round to
//! the next;
//! each figure is reported as median with min and max over the rounds. After
//! the tables, the targets of the performance issue are checked as ratios
//! measured within this one run, then the memory per client connection is
//! measured on a fresh proxy per pool, then (with `--sweep`) each `-m` size
//! gets a fresh proxy and a CPU and peak-RSS measurement.
//!
//! Every process is started in its own process group with a parent-death
//! signal and is killed by a drop guard; Ctrl-C stops the run between steps
//! and the guards clean up. Each load run is bounded in time.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

/// Keys per multi-get (redis `MGET`, memcached `get k1 .. k10`).
const MGET_KEYS: usize = 10;
/// The small and the large value size of every workload.
const SMALL: usize = 32;
const LARGE: usize = 16 * 1024;
/// Pipeline depths of every workload.
const DEPTHS: [usize; 2] = [1, 16];
/// `-m` sizes of the sweep.
const SWEEP_SIZES: [usize; 5] = [512, 1024, 4096, 16384, 65536];
/// The proxy's default `-m`, for which the RSS target is stated.
const DEFAULT_MBUF: usize = 16384;
/// Bound on one load run; a run that takes longer is a failure.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on waiting for a server to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Read timeout of the blocking helper connections (populate, idle test).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Client connections opened by the idle-memory measurement.
const IDLE_CONNS: usize = 1000;
/// The heaviest workload, after which the memory given back is measured.
const HEAVIEST: Workload = Workload {
    proto: Proto::Redis,
    cmd: Cmd::Mget,
    size: LARGE,
    depth: 16,
};
/// How long after the heaviest workload its RSS is read again.
const RSS_AFTER: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Options

const USAGE: &str = "\
usage: cargo bench --bench bench -- [options]      (or: make bench BENCH_ARGS='...')

  --quick          1 round, a tenth of the requests: well under a minute
  --rounds N       rounds of direct/proxied runs (default 3; 1 with --quick)
  --mbuf N         nutcracker -m for the main run (default 16384)
  --sweep          after the main run, sweep -m over 512 1024 4096 16384 65536
  --sweep-only     only the -m sweep (and the idle-connection measurement)
  --filter TEXT    only workloads whose name contains TEXT (e.g. 'redis GET')
  --clients N      client connections per run (default 50)
  --keys N         key space of the random keys (default 10000; 2000 with --quick)
  --scale F        multiply every request count by F
  --perf DIR       record the proxy with `perf record --call-graph dwarf` during
                   each proxied run of the first round, one file per workload
                   in DIR (use with --filter: the files are large)
  --self-test      check the reply parsers and helpers, then exit
  -h, --help       this text

Environment: NUTCRACKER_BIN=/path/to/nutcracker benchmarks another binary
(for example the C twemproxy, which takes the same command line);
NUTCRACKER_BIN2=/path/to/nutcracker runs a second binary in the same rounds,
interleaved, and reports the proxy's CPU per request over it;
HAPROXY=/path/to/haproxy the L4 relay (default: haproxy in PATH or
/usr/sbin/haproxy; without it the relay is left out).
";

struct Opts {
    rounds: usize,
    quick: bool,
    mbuf: usize,
    sweep: bool,
    sweep_only: bool,
    filter: Option<String>,
    clients: usize,
    keyspace: u64,
    scale: f64,
    perf_dir: Option<PathBuf>,
    bin: PathBuf,
    bin2: Option<PathBuf>,
    haproxy: Option<PathBuf>,
}

fn parse_opts() -> Result<Option<Opts>, String> {
    let mut g = getopts::Options::new();
    g.optflag("", "quick", "");
    g.optopt("", "rounds", "", "N");
    g.optopt("", "mbuf", "", "N");
    g.optflag("", "sweep", "");
    g.optflag("", "sweep-only", "");
    g.optopt("", "filter", "", "TEXT");
    g.optopt("", "clients", "", "N");
    g.optopt("", "keys", "", "N");
    g.optopt("", "scale", "", "F");
    g.optopt("", "perf", "", "DIR");
    // `cargo bench` appends `--bench` to the arguments of every bench target.
    g.optflag("", "bench", "");
    g.optflag("", "self-test", "");
    g.optflag("h", "help", "");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = g.parse(&args).map_err(|e| format!("{e}\n{USAGE}"))?;
    if m.opt_present("help") {
        print!("{USAGE}");
        return Ok(None);
    }
    // `cargo test --all-targets` runs this target with no arguments at all
    // (`cargo bench` always passes --bench): do the quick checks, not a
    // benchmark of several minutes.
    if m.opt_present("self-test") || args.is_empty() {
        self_test::run();
        return Ok(None);
    }
    fn num<T: std::str::FromStr>(m: &getopts::Matches, name: &str) -> Result<Option<T>, String> {
        match m.opt_str(name) {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| format!("--{name}: not a valid number: {s:?}")),
        }
    }
    let quick = m.opt_present("quick");
    let rounds = num::<usize>(&m, "rounds")?.unwrap_or(if quick { 1 } else { 3 });
    let mbuf = num::<usize>(&m, "mbuf")?.unwrap_or(DEFAULT_MBUF);
    let clients = num::<usize>(&m, "clients")?.unwrap_or(50);
    let keyspace = num::<u64>(&m, "keys")?.unwrap_or(if quick { 2000 } else { 10000 });
    let scale = num::<f64>(&m, "scale")?.unwrap_or(1.0);
    if rounds == 0 || clients == 0 || keyspace == 0 || scale.is_nan() || scale <= 0.0 {
        return Err("--rounds, --clients, --keys and --scale must be positive".into());
    }
    if !(512..=16_777_216).contains(&mbuf) {
        return Err("--mbuf must be between 512 and 16777216".into());
    }
    let bin = match std::env::var_os("NUTCRACKER_BIN") {
        Some(b) => PathBuf::from(b),
        None => PathBuf::from(env!("CARGO_BIN_EXE_nutcracker")),
    };
    if !bin.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release` first",
            bin.display()
        ));
    }
    let bin2 = std::env::var_os("NUTCRACKER_BIN2")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from);
    if let Some(b) = bin2.as_ref().filter(|b| !b.is_file()) {
        return Err(format!("NUTCRACKER_BIN2: {} not found", b.display()));
    }
    let haproxy = match std::env::var_os("HAPROXY").filter(|b| !b.is_empty()) {
        Some(h) if Path::new(&h).is_file() => Some(PathBuf::from(h)),
        Some(h) => return Err(format!("HAPROXY: {} not found", Path::new(&h).display())),
        None => find_haproxy(),
    };
    Ok(Some(Opts {
        rounds,
        quick,
        mbuf,
        sweep: m.opt_present("sweep") || m.opt_present("sweep-only"),
        sweep_only: m.opt_present("sweep-only"),
        filter: m.opt_str("filter"),
        clients,
        keyspace,
        scale,
        perf_dir: m.opt_str("perf").map(PathBuf::from),
        bin,
        bin2,
        haproxy,
    }))
}

/// `haproxy` in PATH, else Debian's /usr/sbin/haproxy (not in a normal
/// user's PATH).
fn find_haproxy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// Interruption

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM only set a flag: the run stops at its next check and
/// the drop guards stop every child. Children live in their own process
/// groups, so the terminal's SIGINT reaches only this process.
fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn check_interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// Sleeps `d` unless interrupted.
fn pause(d: Duration) -> Result<(), String> {
    check_interrupted()?;
    std::thread::sleep(d);
    check_interrupted()
}

// ---------------------------------------------------------------------------
// Processes

/// A child process stopped and reaped on drop: with `term_first` it gets
/// SIGTERM and a bounded wait before SIGKILL (so the proxy exits cleanly).
struct Proc {
    child: Child,
    term_first: bool,
    done: bool,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, term_first: bool) -> Result<Proc, String> {
        // SAFETY: only async-signal-safe calls between fork and exec. Its own
        // process group keeps Ctrl-C from the terminal away from the child
        // (the guard stops it); the death signal covers a killed benchmark.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e} (is it installed?)"))?;
        Ok(Proc {
            child,
            term_first,
            done: false,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> bool {
        if !self.done {
            self.done = matches!(self.child.try_wait(), Ok(Some(_)) | Err(_));
        }
        self.done
    }

    fn signal(&mut self, sig: libc::c_int) {
        if !self.exited() {
            if let Ok(pid) = libc::pid_t::try_from(self.pid()) {
                // SAFETY: kill(2) on our own child, not yet reaped.
                unsafe {
                    libc::kill(pid, sig);
                }
            }
        }
    }

    /// Waits up to `timeout` for the exit; true when it exited.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.exited() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    fn stop(&mut self) {
        if self.term_first {
            self.signal(libc::SIGTERM);
            if self.wait_exit(Duration::from_secs(5)) {
                return;
            }
        }
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.done = true;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let p = std::env::temp_dir().join(format!("nc-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// Waits until `p` accepts connections on every port (and is still alive).
fn wait_listening(p: &mut Proc, ports: &[u16]) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if p.exited() || INTERRUPTED.load(Ordering::SeqCst) {
            return false;
        }
        if ports
            .iter()
            .all(|&port| TcpStream::connect(("127.0.0.1", port)).is_ok())
        {
            // A stranger that grabbed the port would answer too; a child that
            // lost the port exits at once, so look again after a moment.
            std::thread::sleep(Duration::from_millis(20));
            return !p.exited();
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts a server on `nports` fresh ports, retrying with new ports when the
/// start fails (e.g. a port was taken meanwhile).
fn start_on_ports(
    name: &str,
    nports: usize,
    term_first: bool,
    mut mk: impl FnMut(&[u16]) -> Result<Command, String>,
) -> Result<(Proc, Vec<u16>), String> {
    for _ in 0..5 {
        check_interrupted()?;
        let ports = (0..nports)
            .map(|_| free_port())
            .collect::<Result<Vec<_>, _>>()?;
        let mut cmd = mk(&ports)?;
        cmd.stdin(Stdio::null());
        let mut p = Proc::spawn(name, &mut cmd, term_first)?;
        if wait_listening(&mut p, &ports) {
            return Ok((p, ports));
        }
    }
    check_interrupted()?;
    Err(format!("{name} did not start listening (5 attempts)"))
}

/// A backend or direct server.
struct Server {
    proc: Proc,
    port: u16,
}

fn start_redis(dir: &Path) -> Result<Server, String> {
    let (proc, ports) = start_on_ports("redis-server", 1, false, |ports| {
        let port = ports[0].to_string();
        let log = dir.join(format!("redis-{port}.log"));
        let mut c = Command::new("redis-server");
        c.args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok(c)
    })?;
    Ok(Server {
        proc,
        port: ports[0],
    })
}

fn start_memcached() -> Result<Server, String> {
    // SAFETY: getuid(2) has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    let (proc, ports) = start_on_ports("memcached", 1, false, |ports| {
        let mut c = Command::new("memcached");
        // One worker thread, like redis; 1 GiB so no workload evicts keys.
        c.args(["-l", "127.0.0.1", "-p", &ports[0].to_string()])
            .args(["-U", "0", "-t", "1", "-m", "1024", "-c", "4096"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root {
            c.args(["-u", "root"]);
        }
        Ok(c)
    })?;
    Ok(Server {
        proc,
        port: ports[0],
    })
}

/// All backends and direct servers.
struct Cluster {
    redis: Vec<Server>,
    redis_direct: Server,
    mc: Vec<Server>,
    mc_direct: Server,
}

impl Cluster {
    fn start(dir: &Path) -> Result<Cluster, String> {
        let redis = (0..4)
            .map(|_| start_redis(dir))
            .collect::<Result<Vec<_>, _>>()?;
        let redis_direct = start_redis(dir)?;
        let mc = (0..4)
            .map(|_| start_memcached())
            .collect::<Result<Vec<_>, _>>()?;
        let mc_direct = start_memcached()?;
        Ok(Cluster {
            redis,
            redis_direct,
            mc,
            mc_direct,
        })
    }

    fn backends(&self, proto: Proto) -> &[Server] {
        match proto {
            Proto::Redis => &self.redis,
            Proto::Memcache => &self.mc,
        }
    }

    fn direct(&self, proto: Proto) -> &Server {
        match proto {
            Proto::Redis => &self.redis_direct,
            Proto::Memcache => &self.mc_direct,
        }
    }

    fn conf(&self, redis_port: u16, mc_port: u16) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "bench_redis:\n  listen: 127.0.0.1:{redis_port}\n  hash: fnv1a_64\n  \
             distribution: ketama\n  redis: true\n  servers:"
        );
        for (i, b) in self.redis.iter().enumerate() {
            let _ = writeln!(s, "   - 127.0.0.1:{}:1 redis{i}", b.port);
        }
        let _ = writeln!(
            s,
            "bench_memcache:\n  listen: 127.0.0.1:{mc_port}\n  hash: fnv1a_64\n  \
             distribution: ketama\n  servers:"
        );
        for (i, b) in self.mc.iter().enumerate() {
            let _ = writeln!(s, "   - 127.0.0.1:{}:1 memcache{i}", b.port);
        }
        s
    }
}

/// The proxy under test: one redis pool and one memcached pool.
struct Proxy {
    proc: Proc,
    redis_port: u16,
    mc_port: u16,
}

impl Proxy {
    fn start(bin: &Path, cluster: &Cluster, dir: &Path, mbuf: usize) -> Result<Proxy, String> {
        let (proc, ports) = start_on_ports("nutcracker", 3, true, |ports| {
            let conf = dir.join(format!("nutcracker-{}.yml", ports[0]));
            std::fs::write(&conf, cluster.conf(ports[0], ports[1]))
                .map_err(|e| format!("write {}: {e}", conf.display()))?;
            let mut c = Command::new(bin);
            c.arg("-c")
                .arg(&conf)
                .args(["-s", &ports[2].to_string(), "-a", "127.0.0.1"])
                .args(["-m", &mbuf.to_string()])
                .arg("-o")
                .arg(dir.join(format!("nutcracker-{}.log", ports[0])))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            Ok(c)
        })?;
        Ok(Proxy {
            proc,
            redis_port: ports[0],
            mc_port: ports[1],
        })
    }

    /// The L4 relay: HAProxy, one thread, `mode tcp`, each pool's client
    /// connections round-robin over its backends. No health checks and no
    /// logging, so all it does is move bytes.
    fn start_relay(haproxy: &Path, cluster: &Cluster, dir: &Path) -> Result<Proxy, String> {
        let (proc, ports) = start_on_ports("haproxy", 2, true, |ports| {
            let conf = dir.join(format!("haproxy-{}.cfg", ports[0]));
            let mut text = String::from(
                "global\n    nbthread 1\n    maxconn 8192\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    \
                 timeout client 300s\n    timeout server 300s\n",
            );
            for (name, port, backends) in [
                ("redis", ports[0], &cluster.redis),
                ("memcache", ports[1], &cluster.mc),
            ] {
                let _ = writeln!(
                    text,
                    "listen {name}\n    bind 127.0.0.1:{port}\n    balance roundrobin"
                );
                for (i, b) in backends.iter().enumerate() {
                    let _ = writeln!(text, "    server {name}{i} 127.0.0.1:{}", b.port);
                }
            }
            std::fs::write(&conf, text).map_err(|e| format!("write {}: {e}", conf.display()))?;
            let mut c = Command::new(haproxy);
            c.arg("-db")
                .arg("-f")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            Ok(c)
        })?;
        Ok(Proxy {
            proc,
            redis_port: ports[0],
            mc_port: ports[1],
        })
    }

    fn port(&self, proto: Proto) -> u16 {
        match proto {
            Proto::Redis => self.redis_port,
            Proto::Memcache => self.mc_port,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

// ---------------------------------------------------------------------------
// /proc readings

/// Nanoseconds on CPU of all threads of `pid` (user + system). Falls back to
/// utime + stime (clock ticks) where schedstat is missing.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut total = 0u64;
    for task in dir.flatten() {
        let p = task.path();
        if let Some(ns) = std::fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            total += ns;
            continue;
        }
        if let Some(ticks) = std::fs::read_to_string(p.join("stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
        {
            // SAFETY: sysconf(3) has no preconditions.
            let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
                .unwrap_or(100)
                .max(1);
            total += ticks * 1_000_000_000 / hz;
        }
    }
    total
}

/// utime + stime from a `/proc/<pid>/task/<tid>/stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field of `/proc/<pid>/status` (e.g. "VmRSS:"), in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Read- and write-family system calls of `pid` so far (`syscr` + `syscw`
/// of `/proc/<pid>/io`: read, readv, write, writev; not send/recv*msg).
fn io_syscalls(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/io")) else {
        return 0;
    };
    s.lines()
        .filter(|l| l.starts_with("syscr:") || l.starts_with("syscw:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The system calls counted per request: the read and write families,
/// socket calls included (the proxy uses recv/sendmsg, HAProxy recv/send,
/// C twemproxy read/writev).
const COUNTED_SYSCALLS: [&str; 8] = [
    "read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg",
];

/// Counts [`COUNTED_SYSCALLS`] of a process with `perf stat` on the
/// syscall tracepoints: `/proc/<pid>/io` counts only read(2)/write(2)
/// and their vector forms, not the socket calls.
struct SyscallCount {
    perf: Proc,
    out: PathBuf,
}

impl SyscallCount {
    /// None when perf or the tracepoints are not available.
    fn start(pid: u32, dir: &Path) -> Option<SyscallCount> {
        let out = dir.join(format!("syscalls-{pid}.csv"));
        let _ = std::fs::remove_file(&out);
        let events: Vec<String> = COUNTED_SYSCALLS
            .iter()
            .map(|c| format!("syscalls:sys_enter_{c}"))
            .collect();
        let mut c = Command::new("perf");
        c.args(["stat", "-x", ",", "-e", &events.join(",")])
            .args(["-p", &pid.to_string(), "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut perf = Proc::spawn("perf", &mut c, false).ok()?;
        // perf stat attaches within milliseconds; give it ample time.
        std::thread::sleep(Duration::from_millis(300));
        if perf.exited() {
            return None;
        }
        Some(SyscallCount { perf, out })
    }

    fn finish(mut self) -> Option<u64> {
        self.perf.signal(libc::SIGINT);
        self.perf.wait_exit(Duration::from_secs(30));
        let text = std::fs::read_to_string(&self.out).ok()?;
        let _ = std::fs::remove_file(&self.out);
        let mut total = 0u64;
        let mut seen = 0;
        for line in text.lines().filter(|l| l.contains("syscalls:sys_enter_")) {
            let n: u64 = line.split(',').next()?.trim().parse().ok()?;
            total += n;
            seen += 1;
        }
        (seen == COUNTED_SYSCALLS.len()).then_some(total)
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Samples VmRSS of one process every 20 ms in a thread and keeps the
/// maximum since the last `take_max`.
struct RssSampler {
    pid: Arc<AtomicU32>,
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let pid = Arc::new(AtomicU32::new(pid));
        let max = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, m, s) = (pid.clone(), max.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = status_bytes(p.load(Ordering::Relaxed), "VmRSS:") {
                    m.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            pid,
            max,
            stop,
            thread: Some(thread),
        }
    }

    /// The maximum sampled since the previous call, also counting `now`.
    fn take_max(&self) -> u64 {
        let now = status_bytes(self.pid.load(Ordering::Relaxed), "VmRSS:").unwrap_or(0);
        self.max.swap(0, Ordering::Relaxed).max(now)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Workloads

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Redis,
    Memcache,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Redis => "redis",
            Proto::Memcache => "memcache",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cmd {
    Set,
    Get,
    Mget,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Workload {
    proto: Proto,
    cmd: Cmd,
    size: usize,
    depth: usize,
}

impl Workload {
    fn name(&self) -> String {
        let cmd = match (self.proto, self.cmd) {
            (Proto::Redis, Cmd::Set) => "SET".to_string(),
            (Proto::Redis, Cmd::Get) => "GET".to_string(),
            (Proto::Redis, Cmd::Mget) => format!("MGET{MGET_KEYS}"),
            (Proto::Memcache, Cmd::Set) => "set".to_string(),
            (Proto::Memcache, Cmd::Get) => "get".to_string(),
            (Proto::Memcache, Cmd::Mget) => format!("get{MGET_KEYS}"),
        };
        format!(
            "{} {cmd} {} P{}",
            self.proto.name(),
            size_name(self.size),
            self.depth
        )
    }

    /// Requests per run in the default mode: about a second each on an idle
    /// 2-core machine (the default run takes about two minutes).
    fn base_requests(&self) -> u64 {
        let large = self.size > 1024;
        let piped = self.depth > 1;
        match (self.cmd, large, piped) {
            (Cmd::Mget, false, true) => 120_000,
            (Cmd::Mget, false, false) => 40_000,
            (Cmd::Mget, true, true) => 10_000,
            (Cmd::Mget, true, false) => 6_000,
            (_, false, true) => 400_000,
            (_, false, false) => 80_000,
            (_, true, true) => 60_000,
            (_, true, false) => 30_000,
        }
    }

    fn requests(&self, o: &Opts) -> u64 {
        let base = self.base_requests() as f64 * o.scale / if o.quick { 10.0 } else { 1.0 };
        // Every connection gets a few batches.
        (base as u64).max((o.clients * self.depth * 4) as u64)
    }
}

fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

fn all_workloads() -> Vec<Workload> {
    let mut v = Vec::new();
    for proto in [Proto::Redis, Proto::Memcache] {
        for size in [SMALL, LARGE] {
            for cmd in [Cmd::Set, Cmd::Get, Cmd::Mget] {
                for depth in DEPTHS {
                    v.push(Workload {
                        proto,
                        cmd,
                        size,
                        depth,
                    });
                }
            }
        }
    }
    v
}

/// `key:` and the number zero-padded to 12 digits: redis-benchmark's
/// `key:__rand_int__` with `-r`, so both load generators share the keys.
fn push_key(out: &mut Vec<u8>, k: u64) {
    let mut digits = [b'0'; 12];
    let mut v = k;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(b"key:");
    out.extend_from_slice(&digits);
}

/// xorshift64*: cheap, deterministic random keys.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

// ---------------------------------------------------------------------------
// Load results

/// What one load run measured from the client side.
struct Load {
    requests: u64,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// A problem worth printing (errors, misses).
    note: Option<String>,
}

/// Runs `redis-benchmark` against `port`.
fn redis_load(port: u16, w: &Workload, n: u64, o: &Opts, dir: &Path) -> Result<Load, String> {
    let out = dir.join("redis-benchmark.out");
    let err = dir.join("redis-benchmark.err");
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut c = Command::new("redis-benchmark");
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--csv"])
        .args(["-c", &o.clients.to_string(), "-P", &w.depth.to_string()])
        .args(["-n", &n.to_string(), "-r", &o.keyspace.to_string()]);
    match w.cmd {
        Cmd::Set => c.args(["-d", &w.size.to_string(), "-t", "set"]),
        Cmd::Get => c.args(["-d", &w.size.to_string(), "-t", "get"]),
        Cmd::Mget => c.arg("mget").args([KEY_PATTERN; MGET_KEYS]),
    };
    c.stdin(Stdio::null())
        .stdout(file(&out)?)
        .stderr(file(&err)?);
    let mut p = Proc::spawn("redis-benchmark", &mut c, false)?;
    let deadline = Instant::now() + RUN_TIMEOUT;
    while !p.exited() {
        check_interrupted()?;
        if Instant::now() >= deadline {
            return Err(format!("{}: redis-benchmark timed out", w.name()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = p.child.wait().map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let errs = std::fs::read_to_string(&err).unwrap_or_default();
    // redis-benchmark 7 exits on the first error reply.
    let problems: Vec<&str> = errs
        .lines()
        .chain(text.lines())
        .filter(|l| !l.starts_with('"') && !l.contains("Could not fetch server CONFIG"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    if !status.success() || !problems.is_empty() {
        return Err(format!(
            "{}: redis-benchmark failed ({status}): {}",
            w.name(),
            problems.join(" | ")
        ));
    }
    parse_csv(&text).map(|(ops, p50, p99)| Load {
        requests: n,
        ops_per_sec: ops,
        p50_ms: p50,
        p99_ms: p99,
        note: None,
    })
}

const KEY_PATTERN: &str = "key:__rand_int__";

/// rps, p50 and p99 (ms) from redis-benchmark's `--csv` output, found by the
/// names in its header line.
fn parse_csv(text: &str) -> Result<(f64, f64, f64), String> {
    let mut lines = text.lines().filter(|l| l.starts_with('"'));
    let split = |l: &str| -> Vec<String> {
        l.split(',')
            .map(|f| f.trim().trim_matches('"').to_string())
            .collect()
    };
    let header = split(lines.next().ok_or("redis-benchmark printed no CSV")?);
    let row = split(
        lines
            .next()
            .ok_or("redis-benchmark printed no result row")?,
    );
    let col = |name: &str| -> Result<f64, String> {
        let i = header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("redis-benchmark CSV has no {name} column"))?;
        row.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("redis-benchmark CSV: bad {name} value"))
    };
    Ok((col("rps")?, col("p50_latency_ms")?, col("p99_latency_ms")?))
}

/// One connection of the memcached load generator.
struct McConn {
    sock: mio::net::TcpStream,
    out: Vec<u8>,
    out_pos: usize,
    input: Vec<u8>,
    pending: usize,
    sent_at: Instant,
}

/// What a complete memcached reply was.
#[derive(Debug, PartialEq, Eq)]
enum McReply {
    Stored,
    /// `get`: the number of VALUE blocks before END.
    Values(usize),
    /// Any other line (ERROR, CLIENT_ERROR, SERVER_ERROR, NOT_STORED ...).
    Other(String),
}

/// Parses one reply at the start of `buf`: `None` while incomplete, else its
/// length and kind. Values are skipped by their declared length, so a large
/// value is not scanned.
fn parse_mc_reply(buf: &[u8], cmd: Cmd) -> Result<Option<(usize, McReply)>, String> {
    let line_end = |from: usize| -> Option<usize> {
        buf.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i)
    };
    let mut pos = 0;
    let mut values = 0;
    loop {
        let Some(end) = line_end(pos) else {
            return Ok(None);
        };
        let line = &buf[pos..end];
        if cmd != Cmd::Set && line.starts_with(b"VALUE ") {
            let bytes: usize = std::str::from_utf8(line)
                .ok()
                .and_then(|l| l.split(' ').nth(3))
                .and_then(|b| b.parse().ok())
                .ok_or_else(|| format!("bad VALUE line {:?}", String::from_utf8_lossy(line)))?;
            let next = end + 2 + bytes + 2;
            if buf.len() < next {
                return Ok(None);
            }
            if buf.get(next - 2..next) != Some(b"\r\n".as_slice()) {
                return Err("value not followed by CRLF".into());
            }
            values += 1;
            pos = next;
            continue;
        }
        let reply = match line {
            b"END" if cmd != Cmd::Set => McReply::Values(values),
            b"STORED" if cmd == Cmd::Set => McReply::Stored,
            other => McReply::Other(String::from_utf8_lossy(other).into_owned()),
        };
        return Ok(Some((end + 2, reply)));
    }
}

fn push_mc_request(out: &mut Vec<u8>, cmd: Cmd, value: &[u8], rng: &mut Rng, keyspace: u64) {
    match cmd {
        Cmd::Get => {
            out.extend_from_slice(b"get ");
            push_key(out, rng.below(keyspace));
        }
        Cmd::Mget => {
            out.extend_from_slice(b"get");
            for _ in 0..MGET_KEYS {
                out.push(b' ');
                push_key(out, rng.below(keyspace));
            }
        }
        Cmd::Set => return push_mc_set(out, rng.below(keyspace), value),
    }
    out.extend_from_slice(b"\r\n");
}

fn push_mc_set(out: &mut Vec<u8>, key: u64, value: &[u8]) {
    out.extend_from_slice(b"set ");
    push_key(out, key);
    out.extend_from_slice(format!(" 0 0 {}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes what is queued, until done or the socket would block.
fn flush(c: &mut McConn) -> Result<(), String> {
    while c.out_pos < c.out.len() {
        match c.sock.write(&c.out[c.out_pos..]) {
            Ok(0) => return Err("connection closed while writing".into()),
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    c.out.clear();
    c.out_pos = 0;
    Ok(())
}

/// Reads everything available.
fn fill(c: &mut McConn, scratch: &mut [u8]) -> Result<(), String> {
    loop {
        match c.sock.read(scratch) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(n) => c.input.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// The memcached load generator: `clients` connections in one mio loop,
/// each sending `depth` requests and reading all replies before the next
/// batch, until `n` requests are answered.
fn mc_load(port: u16, w: &Workload, n: u64, o: &Opts) -> Result<Load, String> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut conns = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        let s = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut sock = mio::net::TcpStream::from_std(s);
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("register: {e}"))?;
        conns.push(McConn {
            sock,
            out: Vec::new(),
            out_pos: 0,
            input: Vec::new(),
            pending: 0,
            sent_at: Instant::now(),
        });
    }
    let value = vec![b'x'; w.size];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(port));
    let mut scratch = vec![0u8; 256 * 1024];
    let mut latencies_us: Vec<u32> = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let (mut issued, mut done) = (0u64, 0u64);
    let (mut values, mut odd) = (0u64, 0u64);
    let mut first_odd: Option<String> = None;
    let start = Instant::now();
    let deadline = start + RUN_TIMEOUT;

    let mut issue = |c: &mut McConn, issued: &mut u64| -> Result<(), String> {
        let batch = (w.depth as u64).min(n - *issued);
        for _ in 0..batch {
            push_mc_request(&mut c.out, w.cmd, &value, &mut rng, o.keyspace);
        }
        *issued += batch;
        c.pending = batch as usize;
        c.sent_at = Instant::now();
        flush(c)
    };
    for c in conns.iter_mut() {
        if issued < n {
            issue(c, &mut issued)?;
        }
    }
    let mut events = Events::with_capacity(256);
    while done < n {
        check_interrupted()?;
        if Instant::now() >= deadline {
            return Err(format!("{}: timed out, {done} of {n} done", w.name()));
        }
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        for ev in events.iter() {
            let Some(c) = conns.get_mut(ev.token().0) else {
                continue;
            };
            flush(c)?;
            fill(c, &mut scratch)?;
            let mut used = 0;
            while c.pending > 0 {
                let Some((len, reply)) = parse_mc_reply(&c.input[used..], w.cmd)? else {
                    break;
                };
                used += len;
                c.pending -= 1;
                done += 1;
                let us = c.sent_at.elapsed().as_micros();
                latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                match reply {
                    McReply::Stored => {}
                    McReply::Values(k) => values += k as u64,
                    McReply::Other(line) => {
                        odd += 1;
                        first_odd.get_or_insert(line);
                    }
                }
            }
            c.input.drain(..used);
            if c.pending == 0 && !c.input.is_empty() {
                return Err(format!("{}: unexpected bytes after the replies", w.name()));
            }
            if c.pending == 0 && issued < n {
                issue(c, &mut issued)?;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    latencies_us.sort_unstable();
    let pct = |q: f64| -> f64 {
        let i = ((latencies_us.len() as f64 - 1.0) * q).round() as usize;
        latencies_us
            .get(i)
            .map_or(0.0, |&us| f64::from(us) / 1000.0)
    };
    let mut note = None;
    if odd > 0 {
        note = Some(format!(
            "{odd} unexpected replies, first: {:?}",
            first_odd.unwrap_or_default()
        ));
    } else if w.cmd != Cmd::Set {
        let keys = n * if w.cmd == Cmd::Mget {
            MGET_KEYS as u64
        } else {
            1
        };
        if values < keys * 9 / 10 {
            note = Some(format!("only {values} of {keys} keys found"));
        }
    }
    Ok(Load {
        requests: n,
        ops_per_sec: n as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        note,
    })
}

/// Writes every key of the key space with a value of `size` bytes, through
/// whatever listens on `port` (a server or the proxy).
fn populate(proto: Proto, port: u16, keyspace: u64, size: usize) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("populate: connect 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_nodelay(true))
        .map_err(|e| e.to_string())?;
    let value = vec![b'x'; size];
    let batch = 64;
    let ok: &[u8] = match proto {
        Proto::Redis => b"+OK",
        Proto::Memcache => b"STORED",
    };
    let mut out = Vec::new();
    let mut k = 0;
    while k < keyspace {
        check_interrupted()?;
        let end = (k + batch).min(keyspace);
        out.clear();
        for key in k..end {
            match proto {
                Proto::Redis => {
                    out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$16\r\n");
                    push_key(&mut out, key);
                    out.extend_from_slice(format!("\r\n${size}\r\n").as_bytes());
                    out.extend_from_slice(&value);
                    out.extend_from_slice(b"\r\n");
                }
                Proto::Memcache => push_mc_set(&mut out, key, &value),
            }
        }
        s.write_all(&out)
            .map_err(|e| format!("populate: write: {e}"))?;
        expect_lines(&mut s, (end - k) as usize, ok)?;
        k = end;
    }
    Ok(())
}

/// Reads `count` single-line replies, each of which must be `ok`.
fn expect_lines(s: &mut TcpStream, count: usize, ok: &[u8]) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut scratch = [0u8; 4096];
    let (mut got, mut start) = (0, 0);
    while got < count {
        let n = s
            .read(&mut scratch)
            .map_err(|e| format!("reading replies: {e}"))?;
        if n == 0 {
            return Err("connection closed while reading replies".into());
        }
        buf.extend_from_slice(&scratch[..n]);
        while let Some(i) = buf[start..].windows(2).position(|w| w == b"\r\n") {
            let line = &buf[start..start + i];
            if line != ok {
                return Err(format!(
                    "unexpected reply {:?}",
                    String::from_utf8_lossy(line)
                ));
            }
            got += 1;
            start += i + 2;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Measurement

/// One round of one workload, direct and proxied.
#[derive(Clone, Default)]
struct Sample {
    ops_direct: f64,
    ops_proxied: f64,
    /// Proxy CPU per request, µs.
    proxy_us: f64,
    /// Sum over the 4 backends in the proxied run, per request, µs.
    backend_us: f64,
    /// The direct server in the direct run, per request, µs.
    direct_us: f64,
    /// Proxy read/write system calls per request.
    syscalls: f64,
    p50_proxied: f64,
    p99_proxied: f64,
    p50_direct: f64,
    p99_direct: f64,
    /// Largest VmRSS of the proxy sampled during the proxied run, bytes.
    rss_max: u64,
    /// The proxy's VmRSS [`RSS_AFTER`] after the run (heaviest workload).
    rss_after: Option<u64>,
    /// The L4 relay's run, when there is a relay.
    relay: Option<HopRun>,
    /// The second binary's run, with `NUTCRACKER_BIN2`.
    bin2: Option<HopRun>,
}

/// What a run through the relay or the second binary measured.
#[derive(Clone, Default)]
struct HopRun {
    ops: f64,
    /// Its CPU per request, µs.
    cpu_us: f64,
    syscalls: f64,
    p50: f64,
    p99: f64,
    rss_max: u64,
    rss_after: Option<u64>,
}

/// A figure of the relay's run, NaN without a relay.
fn relay_f(s: &Sample, f: fn(&HopRun) -> f64) -> f64 {
    s.relay.as_ref().map_or(f64::NAN, f)
}

/// A figure of the second binary's run, NaN without one.
fn bin2_f(s: &Sample, f: fn(&HopRun) -> f64) -> f64 {
    s.bin2.as_ref().map_or(f64::NAN, f)
}

/// The proxy's CPU per request over the relay's, within one round.
fn over_relay(s: &Sample) -> f64 {
    s.proxy_us / relay_f(s, |h| h.cpu_us)
}

/// The proxy's CPU per request over the second binary's, within one round.
fn over_bin2(s: &Sample) -> f64 {
    s.proxy_us / bin2_f(s, |h| h.cpu_us)
}

struct Bench<'a> {
    o: &'a Opts,
    dir: &'a Path,
    cluster: &'a Cluster,
}

impl Bench<'_> {
    fn load(&self, port: u16, w: &Workload, n: u64) -> Result<Load, String> {
        match w.proto {
            Proto::Redis => redis_load(port, w, n, self.o, self.dir),
            Proto::Memcache => mc_load(port, w, n, self.o),
        }
    }

    /// Direct run: returns the load and the direct server's CPU µs/request.
    fn run_direct(&self, w: &Workload, n: u64) -> Result<(Load, f64), String> {
        let server = self.cluster.direct(w.proto);
        let before = cpu_ns(server.proc.pid());
        let load = self.load(server.port, w, n)?;
        let cpu = cpu_ns(server.proc.pid()).saturating_sub(before);
        let us = cpu as f64 / 1000.0 / load.requests as f64;
        Ok((load, us))
    }

    /// Proxied run: the load, proxy and backend CPU µs/request.
    /// `count_syscalls`: count the proxy's system calls in this run (with
    /// `perf stat`, which costs the proxy a little CPU per call, so only
    /// one round does; the others report NaN, left out of the medians).
    fn run_proxied(
        &self,
        proxy: &Proxy,
        w: &Workload,
        n: u64,
        perf_to: Option<PathBuf>,
        count_syscalls: bool,
    ) -> Result<Proxied, String> {
        let backends: Vec<u32> = self
            .cluster
            .backends(w.proto)
            .iter()
            .map(|b| b.proc.pid())
            .collect();
        let perf = match perf_to {
            Some(path) => start_perf(proxy.pid(), &path),
            None => None,
        };
        let counter = if count_syscalls && perf.is_none() {
            SyscallCount::start(proxy.pid(), self.dir)
        } else {
            None
        };
        let p0 = cpu_ns(proxy.pid());
        let s0 = io_syscalls(proxy.pid());
        let b0: u64 = backends.iter().map(|&p| cpu_ns(p)).sum();
        let load = self.load(proxy.port(w.proto), w, n)?;
        let p1 = cpu_ns(proxy.pid());
        let s1 = io_syscalls(proxy.pid());
        let b1: u64 = backends.iter().map(|&p| cpu_ns(p)).sum();
        let counted = match counter {
            Some(c) => c.finish(),
            None => None,
        };
        if let Some(mut p) = perf {
            p.signal(libc::SIGINT);
            p.wait_exit(Duration::from_secs(30));
        }
        let requests = load.requests as f64;
        let per = |d: u64| d as f64 / 1000.0 / requests;
        Ok(Proxied {
            proxy_us: per(p1.saturating_sub(p0)),
            backend_us: per(b1.saturating_sub(b0)),
            syscalls: match (count_syscalls, counted) {
                (false, _) => f64::NAN,
                (true, Some(c)) => c as f64 / requests,
                // Without perf: read/write(v) only (socket calls missed).
                (true, None) => s1.saturating_sub(s0) as f64 / requests,
            },
            load,
        })
    }

    /// Writes the key space to the direct server and to every backend in
    /// full: the proxies read each key from the backend it hashes to, the
    /// relay from whichever backend its connection landed on.
    fn populate_all(&self, proto: Proto, size: usize) -> Result<(), String> {
        populate(
            proto,
            self.cluster.direct(proto).port,
            self.o.keyspace,
            size,
        )?;
        for b in self.cluster.backends(proto) {
            populate(proto, b.port, self.o.keyspace, size)?;
        }
        Ok(())
    }
}

/// What a proxied run measured.
struct Proxied {
    load: Load,
    /// Proxy CPU µs per request.
    proxy_us: f64,
    /// Sum over the backends, CPU µs per request.
    backend_us: f64,
    /// Proxy read and write system calls per request.
    syscalls: f64,
}

/// `perf record --call-graph dwarf` of `pid` into `path`, once the file exists (perf is
/// attached); `None` when perf is missing or does not start.
fn start_perf(pid: u32, path: &Path) -> Option<Proc> {
    let _ = std::fs::remove_file(path);
    let mut c = Command::new("perf");
    c.args(["record", "-F", "1999", "--call-graph", "dwarf,16384"])
        .args(["-p", &pid.to_string(), "-o"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut p = Proc::spawn("perf", &mut c, false).ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        if p.exited() || Instant::now() >= deadline {
            eprintln!("bench: perf record did not start");
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // perf writes its header before the counters are enabled on the target.
    std::thread::sleep(Duration::from_millis(200));
    Some(p)
}

/// Median, min and max.
#[derive(Clone, Copy)]
struct Spread {
    med: f64,
    min: f64,
    max: f64,
}

fn spread(values: impl IntoIterator<Item = f64>) -> Spread {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Spread {
            med: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let med = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Spread {
        med,
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn fmt_ops(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn fmt_num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        "-".into()
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ---------------------------------------------------------------------------
// The main run

struct MainResult {
    samples: Vec<(Workload, u64, Vec<Sample>)>,
    hwm: u64,
    rss_sampled: u64,
    /// The second binary's VmHWM, when it ran.
    bin2_hwm: Option<u64>,
}

/// What a run of a workload goes through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Direct,
    Proxy,
    Relay,
    Bin2,
}

/// A relay or proxy process in the main run, with its RSS sampler.
struct Hop {
    target: Target,
    proxy: Proxy,
    sampler: RssSampler,
}

fn main_run(b: &Bench, workloads: &[Workload]) -> Result<MainResult, String> {
    let o = b.o;
    let mut hops = Vec::new();
    let proxy = Proxy::start(&o.bin, b.cluster, b.dir, o.mbuf)?;
    eprintln!(
        "bench: proxy pid {} (redis pool 127.0.0.1:{}, memcached pool 127.0.0.1:{}), -m {}",
        proxy.pid(),
        proxy.redis_port,
        proxy.mc_port,
        o.mbuf
    );
    hops.push((Target::Proxy, proxy));
    if let Some(h) = &o.haproxy {
        let relay = Proxy::start_relay(h, b.cluster, b.dir)?;
        eprintln!("bench: relay pid {} ({})", relay.pid(), h.display());
        hops.push((Target::Relay, relay));
    }
    if let Some(bin2) = &o.bin2 {
        let p = Proxy::start(bin2, b.cluster, b.dir, o.mbuf)?;
        eprintln!("bench: second binary pid {} ({})", p.pid(), bin2.display());
        hops.push((Target::Bin2, p));
    }
    let hops: Vec<Hop> = hops
        .into_iter()
        .map(|(target, proxy)| Hop {
            target,
            sampler: RssSampler::start(proxy.pid()),
            proxy,
        })
        .collect();
    let mut order: Vec<Target> = vec![Target::Direct];
    order.extend(hops.iter().map(|h| h.target));
    let mut samples: Vec<(Workload, u64, Vec<Sample>)> = workloads
        .iter()
        .map(|w| (*w, w.requests(o), Vec::new()))
        .collect();
    let mut rss_sampled = 0;
    for round in 0..o.rounds {
        for proto in [Proto::Redis, Proto::Memcache] {
            for size in [SMALL, LARGE] {
                if !samples
                    .iter()
                    .any(|(w, _, _)| w.proto == proto && w.size == size)
                {
                    continue;
                }
                b.populate_all(proto, size)?;
                for (w, n, runs) in samples.iter_mut() {
                    if w.proto != proto || w.size != size {
                        continue;
                    }
                    let perf_to = o
                        .perf_dir
                        .as_ref()
                        .filter(|_| round == 0)
                        .map(|d| d.join(format!("perf-{}.data", w.name().replace(' ', "-"))));
                    let mut sample = Sample::default();
                    // Rotate the order so drift in machine load does not
                    // always favour the same target.
                    let mut this_round = order.clone();
                    this_round.rotate_left(round % order.len());
                    let mut ended: Vec<(Instant, usize)> = Vec::new();
                    for t in this_round {
                        if t == Target::Direct {
                            let (dl, direct_us) = b.run_direct(w, *n)?;
                            if let Some(note) = &dl.note {
                                eprintln!("bench: {} direct: {note}", w.name());
                            }
                            sample.ops_direct = dl.ops_per_sec;
                            sample.direct_us = direct_us;
                            sample.p50_direct = dl.p50_ms;
                            sample.p99_direct = dl.p99_ms;
                            continue;
                        }
                        let Some(i) = hops.iter().position(|h| h.target == t) else {
                            continue;
                        };
                        let hop = &hops[i];
                        hop.sampler.take_max();
                        let perf = if t == Target::Proxy {
                            perf_to.clone()
                        } else {
                            None
                        };
                        let count = round + 1 == o.rounds;
                        let px = b.run_proxied(&hop.proxy, w, *n, perf, count)?;
                        let rss = hop.sampler.take_max();
                        ended.push((Instant::now(), i));
                        if let Some(note) = &px.load.note {
                            eprintln!("bench: {} {t:?}: {note}", w.name());
                        }
                        let pl = &px.load;
                        match t {
                            Target::Proxy => {
                                rss_sampled = rss_sampled.max(rss);
                                sample.ops_proxied = pl.ops_per_sec;
                                sample.proxy_us = px.proxy_us;
                                sample.backend_us = px.backend_us;
                                sample.syscalls = px.syscalls;
                                sample.p50_proxied = pl.p50_ms;
                                sample.p99_proxied = pl.p99_ms;
                                sample.rss_max = rss;
                            }
                            _ => {
                                let run = HopRun {
                                    ops: pl.ops_per_sec,
                                    cpu_us: px.proxy_us,
                                    syscalls: px.syscalls,
                                    p50: pl.p50_ms,
                                    p99: pl.p99_ms,
                                    rss_max: rss,
                                    rss_after: None,
                                };
                                if t == Target::Relay {
                                    sample.relay = Some(run);
                                } else {
                                    sample.bin2 = Some(run);
                                }
                            }
                        }
                    }
                    if *w == HEAVIEST {
                        // Each process's RSS once it has been idle for
                        // RSS_AFTER: what it gives back after the burst.
                        for (at, i) in ended {
                            let wait = (at + RSS_AFTER).saturating_duration_since(Instant::now());
                            pause(wait)?;
                            let hop = &hops[i];
                            let now = status_bytes(hop.proxy.pid(), "VmRSS:");
                            match hop.target {
                                Target::Proxy => sample.rss_after = now,
                                Target::Relay => {
                                    if let Some(r) = sample.relay.as_mut() {
                                        r.rss_after = now;
                                    }
                                }
                                _ => {
                                    if let Some(r) = sample.bin2.as_mut() {
                                        r.rss_after = now;
                                    }
                                }
                            }
                        }
                    }
                    let hop_us = |h: &Option<HopRun>| {
                        h.as_ref().map_or(String::new(), |h| fmt_num(h.cpu_us, 2))
                    };
                    eprintln!(
                        "bench: round {}/{} {:<24} direct {:>8}/s  proxied {:>8}/s  us/req: proxy {:>6} backends {:>6} relay {:>6} bin2 {:>6}",
                        round + 1,
                        o.rounds,
                        w.name(),
                        fmt_ops(sample.ops_direct),
                        fmt_ops(sample.ops_proxied),
                        fmt_num(sample.proxy_us, 2),
                        fmt_num(sample.backend_us, 2),
                        hop_us(&sample.relay),
                        hop_us(&sample.bin2),
                    );
                    runs.push(sample);
                }
            }
        }
    }
    let hwm_of = |t: Target| {
        hops.iter()
            .find(|h| h.target == t)
            .and_then(|h| status_bytes(h.proxy.pid(), "VmHWM:"))
    };
    Ok(MainResult {
        samples,
        hwm: hwm_of(Target::Proxy).unwrap_or(0),
        rss_sampled,
        bin2_hwm: hwm_of(Target::Bin2),
    })
}

fn print_workload(w: &Workload, n: u64, runs: &[Sample], o: &Opts) {
    println!(
        "\n{}  ({} clients, {} requests per run, {} round{})",
        w.name(),
        o.clients,
        n,
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    println!("  {:<44} {:>10} {:>10} {:>10}", "", "median", "min", "max");
    let row = |label: &str, f: &dyn Fn(&Sample) -> f64, fmt: &dyn Fn(f64) -> String| {
        let s = spread(runs.iter().map(f));
        println!(
            "  {:<44} {:>10} {:>10} {:>10}",
            label,
            fmt(s.med),
            fmt(s.min),
            fmt(s.max)
        );
    };
    let ops = |x: f64| fmt_ops(x);
    let d2 = |x: f64| fmt_num(x, 2);
    let d3 = |x: f64| fmt_num(x, 3);
    row("ops/s direct", &|s| s.ops_direct, &ops);
    row("ops/s proxied", &|s| s.ops_proxied, &ops);
    row(
        "ratio proxied/direct",
        &|s| s.ops_proxied / s.ops_direct,
        &d2,
    );
    row("proxy CPU us/req", &|s| s.proxy_us, &d3);
    row(
        "backend CPU us/req (4 backends, proxied run)",
        &|s| s.backend_us,
        &d3,
    );
    row(
        "ratio proxy/backend CPU",
        &|s| s.proxy_us / s.backend_us,
        &d2,
    );
    row(
        "direct server CPU us/req (direct run)",
        &|s| s.direct_us,
        &d3,
    );
    row(
        "proxy read+write syscalls/req (last round)",
        &|s| s.syscalls,
        &d3,
    );
    row("p50 ms proxied", &|s| s.p50_proxied, &d3);
    row("p99 ms proxied", &|s| s.p99_proxied, &d3);
    row("p50 ms direct", &|s| s.p50_direct, &d3);
    row("p99 ms direct", &|s| s.p99_direct, &d3);
    row("proxy RSS MiB in run", &|s| mib(s.rss_max), &|x| {
        fmt_num(x, 1)
    });
    if runs.iter().any(|s| s.rss_after.is_some()) {
        row(
            "proxy RSS MiB 10 s after the run",
            &|s| s.rss_after.map_or(f64::NAN, mib),
            &|x| fmt_num(x, 1),
        );
    }
    if runs.iter().any(|s| s.relay.is_some()) {
        row(
            "ops/s relay (L4, haproxy)",
            &|s| relay_f(s, |h| h.ops),
            &ops,
        );
        row("relay CPU us/req", &|s| relay_f(s, |h| h.cpu_us), &d3);
        row("ratio proxy/relay CPU (per round)", &over_relay, &d2);
        row(
            "relay read+write syscalls/req (last round)",
            &|s| relay_f(s, |h| h.syscalls),
            &d3,
        );
        row("p50 ms relay", &|s| relay_f(s, |h| h.p50), &d3);
        row("p99 ms relay", &|s| relay_f(s, |h| h.p99), &d3);
    }
    if runs.iter().any(|s| s.bin2.is_some()) {
        row("ops/s bin2", &|s| bin2_f(s, |h| h.ops), &ops);
        row("bin2 CPU us/req", &|s| bin2_f(s, |h| h.cpu_us), &d3);
        row("ratio proxy/bin2 CPU (per round)", &over_bin2, &d2);
        row(
            "bin2 read+write syscalls/req (last round)",
            &|s| bin2_f(s, |h| h.syscalls),
            &d3,
        );
        row("p50 ms bin2", &|s| bin2_f(s, |h| h.p50), &d3);
        row("p99 ms bin2", &|s| bin2_f(s, |h| h.p99), &d3);
        row(
            "bin2 RSS MiB in run",
            &|s| bin2_f(s, |h| mib(h.rss_max)),
            &|x| fmt_num(x, 1),
        );
        if runs.iter().any(|s| s.rss_after.is_some()) {
            row(
                "bin2 RSS MiB 10 s after the run",
                &|s| bin2_f(s, |h| h.rss_after.map_or(f64::NAN, mib)),
                &|x| fmt_num(x, 1),
            );
        }
    }
}

fn print_overview(r: &MainResult) {
    println!(
        "\nOverview (medians; px/rl and px/b2: proxy CPU/req over the relay's and the second \
         binary's, per round; RSS: proxy MiB during the run)"
    );
    println!(
        "  {:<24} {:>9} {:>9} {:>6} {:>9} {:>9} {:>7} {:>9} {:>6} {:>9} {:>6} {:>9} {:>7} {:>15} {:>7}",
        "workload",
        "direct/s",
        "proxied/s",
        "ratio",
        "proxy us",
        "backend",
        "px/be",
        "relay us",
        "px/rl",
        "bin2 us",
        "px/b2",
        "direct us",
        "sys/req",
        "p50/p99 ms prx",
        "RSS"
    );
    for (w, _, runs) in &r.samples {
        let m = |f: &dyn Fn(&Sample) -> f64| spread(runs.iter().map(f)).med;
        println!(
            "  {:<24} {:>9} {:>9} {:>6} {:>9} {:>9} {:>7} {:>9} {:>6} {:>9} {:>6} {:>9} {:>7} {:>15} {:>7}",
            w.name(),
            fmt_ops(m(&|s| s.ops_direct)),
            fmt_ops(m(&|s| s.ops_proxied)),
            fmt_num(m(&|s| s.ops_proxied / s.ops_direct), 2),
            fmt_num(m(&|s| s.proxy_us), 3),
            fmt_num(m(&|s| s.backend_us), 3),
            fmt_num(m(&|s| s.proxy_us / s.backend_us), 2),
            fmt_num(m(&|s| relay_f(s, |h| h.cpu_us)), 3),
            fmt_num(m(&over_relay), 2),
            fmt_num(m(&|s| bin2_f(s, |h| h.cpu_us)), 3),
            fmt_num(m(&over_bin2), 2),
            fmt_num(m(&|s| s.direct_us), 3),
            fmt_num(m(&|s| s.syscalls), 2),
            format!(
                "{}/{}",
                fmt_num(m(&|s| s.p50_proxied), 2),
                fmt_num(m(&|s| s.p99_proxied), 2)
            ),
            fmt_num(m(&|s| mib(s.rss_max)), 1),
        );
    }
}

/// One row of the issue's table: the figure now (a range when it spans
/// several workloads), the target, and whether the worst case meets it.
struct IssueRow {
    what: &'static str,
    /// Per workload (or one value): the name and the median figure.
    values: Vec<(String, f64)>,
    unit: &'static str,
    limit: f64,
}

/// The table of issue 18, straight from this run: each CPU row is the
/// median over the rounds of the per-round ratio, per workload; a row over
/// several workloads shows their range and passes when the worst meets the
/// target.
fn issue_rows(r: &MainResult) -> Vec<IssueRow> {
    let med = |runs: &[Sample], f: &dyn Fn(&Sample) -> f64| spread(runs.iter().map(f)).med;
    let pick = |depth: usize| -> Vec<(String, f64)> {
        r.samples
            .iter()
            .filter(|(w, _, _)| w.size == SMALL && w.depth == depth && w.cmd != Cmd::Mget)
            .map(|(w, _, runs)| (w.name(), med(runs, &over_relay)))
            .collect()
    };
    let over_c: Vec<(String, f64)> = r
        .samples
        .iter()
        .map(|(w, _, runs)| (w.name(), med(runs, &over_bin2)))
        .collect();
    let heavy = r.samples.iter().find(|(w, _, _)| *w == HEAVIEST);
    let heavy_name = HEAVIEST.name();
    let after: Vec<(String, f64)> = heavy
        .map(|(_, _, runs)| {
            vec![(
                heavy_name.clone(),
                med(runs, &|s| s.rss_after.map_or(f64::NAN, mib)),
            )]
        })
        .unwrap_or_default();
    let peak: Vec<(String, f64)> = heavy
        .map(|(_, _, runs)| {
            vec![(
                heavy_name.clone(),
                med(runs, &|s| mib(s.rss_max) / bin2_f(s, |h| mib(h.rss_max))),
            )]
        })
        .unwrap_or_default();
    vec![
        IssueRow {
            what: "32 B GET/SET depth 16: proxy CPU/request over the L4 relay's",
            values: pick(16),
            unit: "x",
            limit: 1.2,
        },
        IssueRow {
            what: "32 B GET/SET depth 1: over the L4 relay's",
            values: pick(1),
            unit: "x",
            limit: 0.7,
        },
        IssueRow {
            what: "every workload over C twemproxy's",
            values: over_c,
            unit: "x",
            limit: 0.7,
        },
        IssueRow {
            what: "RSS 10 s after the heaviest workload ends (MGET of 10 x 16 KiB, depth 16)",
            values: after,
            unit: " MiB",
            limit: 16.0,
        },
        IssueRow {
            what: "peak RSS in that workload over C's",
            values: peak,
            unit: "x",
            limit: 0.5,
        },
    ]
}

/// Prints the issue's table; returns how many rows missed their target.
fn print_issue_table(r: &MainResult, o: &Opts) -> usize {
    let bin2 = o
        .bin2
        .as_ref()
        .map_or("not run (set NUTCRACKER_BIN2)".to_string(), |b| {
            format!(
                "{} ({})",
                b.display(),
                tool_version(&b.to_string_lossy(), "-V")
            )
        });
    let relay = o
        .haproxy
        .as_ref()
        .map_or("not run (haproxy not found)".to_string(), |h| {
            format!("{}, nbthread 1, mode tcp, roundrobin", h.display())
        });
    println!(
        "\nIssue 18 summary (ratios within this run, medians over rounds of per-round ratios)"
    );
    println!("  L4 relay: {relay}");
    println!("  C twemproxy (NUTCRACKER_BIN2): {bin2}");
    println!(
        "  | {:<74} | {:>13} | {:>10} | {:<4} |",
        "", "now", "target", ""
    );
    println!("  | {:-<74} | {:->13} | {:->10} | {:-<4} |", "", "", "", "");
    let rows = issue_rows(r);
    let mut failed = 0;
    for row in &rows {
        let v: Vec<f64> = row
            .values
            .iter()
            .map(|(_, x)| *x)
            .filter(|x| x.is_finite())
            .collect();
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let decimals = if row.unit == "x" { 2 } else { 1 };
        let now = if v.is_empty() {
            "-".to_string()
        } else if v.len() == 1 || fmt_num(lo, decimals) == fmt_num(hi, decimals) {
            format!("{}{}", fmt_num(hi, decimals), row.unit)
        } else {
            format!(
                "{}-{}{}",
                fmt_num(lo, decimals),
                fmt_num(hi, decimals),
                row.unit
            )
        };
        // Every workload the row covers must have its figure.
        let complete = !v.is_empty() && v.len() == row.values.len();
        let verdict = if !complete {
            "n/a"
        } else if hi <= row.limit {
            "PASS"
        } else {
            "FAIL"
        };
        if verdict != "PASS" {
            failed += 1;
        }
        println!(
            "  | {:<74} | {:>13} | {:>10} | {:<4} |",
            row.what,
            now,
            format!("<= {}{}", row.limit, row.unit),
            verdict
        );
    }
    // What the ranges are made of, with every round's ratio.
    println!("\n  per workload: proxy CPU us/req, relay, bin2; ratios per round (median first)");
    for (w, _, runs) in &r.samples {
        let per_round = |f: &dyn Fn(&Sample) -> f64| -> String {
            let v: Vec<String> = runs
                .iter()
                .map(f)
                .filter(|x| x.is_finite())
                .map(|x| fmt_num(x, 2))
                .collect();
            if v.is_empty() {
                "-".into()
            } else {
                format!(
                    "{} [{}]",
                    fmt_num(spread(runs.iter().map(f)).med, 2),
                    v.join(" ")
                )
            }
        };
        let med = |f: &dyn Fn(&Sample) -> f64| fmt_num(spread(runs.iter().map(f)).med, 3);
        println!(
            "    {:<24} proxy {:>7}  relay {:>7}  bin2 {:>7}  px/relay {:<22} px/bin2 {}",
            w.name(),
            med(&|s| s.proxy_us),
            med(&|s| relay_f(s, |h| h.cpu_us)),
            med(&|s| bin2_f(s, |h| h.cpu_us)),
            per_round(&over_relay),
            per_round(&over_bin2)
        );
    }
    if let Some((_, _, runs)) = r.samples.iter().find(|(w, _, _)| *w == HEAVIEST) {
        let med = |f: &dyn Fn(&Sample) -> f64| fmt_num(spread(runs.iter().map(f)).med, 1);
        println!(
            "    {} RSS MiB: proxy peak {} / 10 s after {}; bin2 peak {} / 10 s after {}; \
             VmHWM over the run: proxy {}, bin2 {}",
            HEAVIEST.name(),
            med(&|s| mib(s.rss_max)),
            med(&|s| s.rss_after.map_or(f64::NAN, mib)),
            med(&|s| bin2_f(s, |h| mib(h.rss_max))),
            med(&|s| bin2_f(s, |h| h.rss_after.map_or(f64::NAN, mib))),
            fmt_num(mib(r.hwm), 1),
            r.bin2_hwm.map_or("-".into(), |h| fmt_num(mib(h), 1)),
        );
    }
    failed
}

/// A target of the performance issue, evaluated on this run's medians.
struct Check {
    what: String,
    value: f64,
    limit: f64,
    detail: String,
}

fn checks(r: &MainResult, o: &Opts) -> Vec<Check> {
    let find = |proto: Proto, cmd: Cmd, size: usize, depth: usize| -> Option<&Vec<Sample>> {
        r.samples.iter().find_map(|(w, _, runs)| {
            (*w == Workload {
                proto,
                cmd,
                size,
                depth,
            })
            .then_some(runs)
        })
    };
    let med = |runs: &Vec<Sample>, f: &dyn Fn(&Sample) -> f64| spread(runs.iter().map(f)).med;
    let mut out = Vec::new();
    for proto in [Proto::Redis, Proto::Memcache] {
        let p = proto.name();
        for (depth, limit) in [(16, 1.2), (1, 1.5)] {
            for cmd in [Cmd::Get, Cmd::Set] {
                let w = Workload {
                    proto,
                    cmd,
                    size: SMALL,
                    depth,
                };
                if let Some(runs) = find(proto, cmd, SMALL, depth) {
                    out.push(Check {
                        what: format!("{}: proxy CPU/req <= {limit} x backend", w.name()),
                        value: med(runs, &|s| s.proxy_us / s.backend_us),
                        limit,
                        detail: format!(
                            "proxy {} us, backends {} us",
                            fmt_num(med(runs, &|s| s.proxy_us), 3),
                            fmt_num(med(runs, &|s| s.backend_us), 3)
                        ),
                    });
                }
            }
        }
        if let (Some(mget), Some(get)) = (
            find(proto, Cmd::Mget, SMALL, 16),
            find(proto, Cmd::Get, SMALL, 16),
        ) {
            let (a, g) = (med(mget, &|s| s.proxy_us), med(get, &|s| s.proxy_us));
            let (ba, bg) = (med(mget, &|s| s.backend_us), med(get, &|s| s.backend_us));
            out.push(Check {
                what: format!("{p} {MGET_KEYS}-key multi-get 32B P16: proxy CPU <= 3 x GET"),
                value: a / g,
                limit: 3.0,
                detail: format!(
                    "multi-get {} us, get {} us (backends: {}x)",
                    fmt_num(a, 3),
                    fmt_num(g, 3),
                    fmt_num(ba / bg, 1)
                ),
            });
        }
        for cmd in [Cmd::Set, Cmd::Get, Cmd::Mget] {
            for depth in DEPTHS {
                if let (Some(large), Some(small)) = (
                    find(proto, cmd, LARGE, depth),
                    find(proto, cmd, SMALL, depth),
                ) {
                    let (l, s) = (med(large, &|s| s.proxy_us), med(small, &|s| s.proxy_us));
                    let (bl, bs) = (med(large, &|s| s.backend_us), med(small, &|s| s.backend_us));
                    let name = Workload {
                        proto,
                        cmd,
                        size: LARGE,
                        depth,
                    }
                    .name();
                    out.push(Check {
                        what: format!("{name}: proxy CPU <= 2 x 32B"),
                        value: l / s,
                        limit: 2.0,
                        detail: format!(
                            "16KiB {} us, 32B {} us (backends: {}x)",
                            fmt_num(l, 3),
                            fmt_num(s, 3),
                            fmt_num(bl / bs, 1)
                        ),
                    });
                }
            }
        }
    }
    let note = if o.mbuf == DEFAULT_MBUF {
        ""
    } else {
        " (non-default -m)"
    };
    out.push(Check {
        what: format!("proxy peak RSS (VmHWM) over the whole run <= 32 MiB{note}"),
        value: mib(r.hwm),
        limit: 32.0,
        detail: format!(
            "VmHWM {} MiB, max sampled VmRSS {} MiB",
            fmt_num(mib(r.hwm), 1),
            fmt_num(mib(r.rss_sampled), 1)
        ),
    });
    out
}

fn print_checks(checks: &[Check]) -> usize {
    println!("\nTargets (ratios within this run, medians)");
    let mut failed = 0;
    for c in checks {
        let pass = c.value <= c.limit;
        if !pass {
            failed += 1;
        }
        println!(
            "  {}  {:<58} {:>7} (limit {})  {}",
            if pass { "PASS" } else { "FAIL" },
            c.what,
            fmt_num(c.value, 2),
            c.limit,
            c.detail
        );
    }
    println!(
        "  {} of {} targets met",
        checks.len() - failed,
        checks.len()
    );
    failed
}

// ---------------------------------------------------------------------------
// Idle memory per connection

/// Opens [`IDLE_CONNS`] client connections to one pool of a fresh proxy per
/// pool and reports the RSS growth per connection: connected only; after
/// one request on each, one connection at a time (what an idle connection
/// keeps after use); and after one request on each, all at once (buffers
/// the proxy pools for that many requests in flight). The request is a
/// `GET` of a missing key, so it makes a server round trip.
fn idle_memory(b: &Bench) -> Result<(), String> {
    println!(
        "\nIdle memory per client connection ({IDLE_CONNS} connections, fresh proxy per pool, \
         -m {}; RSS growth / {IDLE_CONNS}, kernel socket buffers not included)",
        b.o.mbuf
    );
    println!(
        "  {:<9} {:>14} {:>20} {:>20}   RSS MiB",
        "pool", "connected", "after 1 req each", "1 req each at once"
    );
    for proto in [Proto::Redis, Proto::Memcache] {
        let proxy = Proxy::start(&b.o.bin, b.cluster, b.dir, b.o.mbuf)?;
        let pid = proxy.pid();
        let rss = || status_bytes(pid, "VmRSS:").unwrap_or(0);
        let (req, reply): (&[u8], &[u8]) = match proto {
            Proto::Redis => (b"*2\r\n$3\r\nGET\r\n$5\r\nnokey\r\n", b"$-1\r\n"),
            Proto::Memcache => (b"get nokey\r\n", b"END\r\n"),
        };
        let port = proxy.port(proto);
        // A first request opens the server connection, which is not the
        // clients' cost.
        let mut first = connect_blocking(port)?;
        first
            .write_all(req)
            .map_err(|e| format!("idle test: {e}"))?;
        read_reply(&mut first, reply)?;
        drop(first);
        pause(Duration::from_millis(100))?;
        let fds0 = fd_count(pid);
        let rss0 = rss();
        let mut conns = (0..IDLE_CONNS)
            .map(|_| connect_blocking(port))
            .collect::<Result<Vec<_>, _>>()?;
        let deadline = Instant::now() + IO_TIMEOUT;
        while fd_count(pid) < fds0 + IDLE_CONNS {
            if Instant::now() >= deadline {
                return Err(format!(
                    "idle test: the proxy accepted only {} of {IDLE_CONNS} connections",
                    fd_count(pid).saturating_sub(fds0)
                ));
            }
            pause(Duration::from_millis(5))?;
        }
        let rss1 = rss();
        for s in conns.iter_mut() {
            s.write_all(req).map_err(|e| format!("idle test: {e}"))?;
            read_reply(s, reply)?;
        }
        let rss2 = rss();
        for s in conns.iter_mut() {
            s.write_all(req).map_err(|e| format!("idle test: {e}"))?;
        }
        for s in conns.iter_mut() {
            read_reply(s, reply)?;
        }
        let rss3 = rss();
        let per = |after: u64| {
            format!(
                "{:.0} B",
                after.saturating_sub(rss0) as f64 / IDLE_CONNS as f64
            )
        };
        println!(
            "  {:<9} {:>14} {:>20} {:>20}   {:.1} / {:.1} / {:.1} / {:.1}",
            proto.name(),
            per(rss1),
            per(rss2),
            per(rss3),
            mib(rss0),
            mib(rss1),
            mib(rss2),
            mib(rss3)
        );
    }
    Ok(())
}

/// Keys per second the migration workload's mover examines: slow enough
/// that the migration lasts the whole run, as a production one would.
const MIGRATE_RATE: u32 = 1000;
/// The name `--filter` selects the migration workload by.
const MIGRATION_WORKLOAD: &str = "redis GET migrating";

/// A proxy over one redis pool: `servers` the cluster's first redis
/// backends, `from` (when not 0) that many as `migrate_from:`. Returns the
/// process and its pool port.
fn start_migrating(b: &Bench, servers: usize, from: usize) -> Result<(Proc, u16), String> {
    let (proc, ports) = start_on_ports("nutcracker", 2, true, |ports| {
        let conf = b.dir.join(format!("nutcracker-migrate-{}.yml", ports[0]));
        let mut text = format!(
            "bench_migrate:\n  listen: 127.0.0.1:{}\n  hash: fnv1a_64\n  distribution: ketama\n  \
             redis: true\n  migrate_rate: {MIGRATE_RATE}\n",
            ports[0]
        );
        let list = |n: usize| -> String {
            b.cluster.redis[..n]
                .iter()
                .enumerate()
                .map(|(i, r)| format!("   - 127.0.0.1:{}:1 redis{i}\n", r.port))
                .collect()
        };
        if from > 0 {
            text.push_str("  migrate_from:\n");
            text.push_str(&list(from));
        }
        text.push_str("  servers:\n");
        text.push_str(&list(servers));
        std::fs::write(&conf, text).map_err(|e| format!("write {}: {e}", conf.display()))?;
        let mut c = Command::new(&b.o.bin);
        c.arg("-c")
            .arg(&conf)
            .args(["-s", &ports[1].to_string(), "-a", "127.0.0.1"])
            .arg("-o")
            .arg(b.dir.join(format!("nutcracker-migrate-{}.log", ports[0])))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok(c)
    })?;
    Ok((proc, ports[0]))
}

/// GET throughput and proxy CPU while a migration runs (3 -> 4 redis
/// servers: a quarter of the keys move, each GET on one of them first asks
/// its old owner), against the same load on a proxy without a migration.
/// Each run starts from the keys placed over 3 servers only.
fn migration_bench(b: &Bench) -> Result<(), String> {
    let w = Workload {
        proto: Proto::Redis,
        cmd: Cmd::Get,
        size: SMALL,
        depth: 1,
    };
    let n = w.requests(b.o);
    println!(
        "\nredis GET {} P1 while servers are added (3 -> 4, migrate_rate {MIGRATE_RATE}), {n} requests",
        size_name(SMALL)
    );
    println!(
        "  {:<26} {:>12} {:>9} {:>9} {:>14}",
        "proxy", "ops/s", "p50 ms", "p99 ms", "CPU us/req"
    );
    let mut base = None;
    for migrating in [false, true] {
        for r in &b.cluster.redis {
            let mut s = connect_blocking(r.port)?;
            s.write_all(b"*1\r\n$8\r\nFLUSHALL\r\n")
                .map_err(|e| format!("flushall: {e}"))?;
            read_reply(&mut s, b"+OK\r\n")?;
        }
        {
            let (_loader, port) = start_migrating(b, 3, 0)?;
            populate(Proto::Redis, port, b.o.keyspace, SMALL)?;
        }
        let (proc, port) = if migrating {
            start_migrating(b, 4, 3)?
        } else {
            start_migrating(b, 3, 0)?
        };
        let cpu0 = cpu_ns(proc.pid());
        let load = redis_load(port, &w, n, b.o, b.dir)?;
        let cpu =
            cpu_ns(proc.pid()).saturating_sub(cpu0) as f64 / 1000.0 / load.requests.max(1) as f64;
        let name = if migrating {
            "migrating (3 -> 4)"
        } else {
            "no migration (3 servers)"
        };
        println!(
            "  {:<26} {:>12} {:>9} {:>9} {:>14}",
            name,
            fmt_ops(load.ops_per_sec),
            fmt_num(load.p50_ms, 3),
            fmt_num(load.p99_ms, 3),
            fmt_num(cpu, 2)
        );
        match base {
            None => base = Some((load.ops_per_sec, cpu)),
            Some((ops, c)) => println!(
                "  while migrating: {:.0}% of the throughput, {:.2}x the CPU per request",
                100.0 * load.ops_per_sec / ops.max(1.0),
                cpu / c.max(1e-9)
            ),
        }
    }
    Ok(())
}

fn connect_blocking(port: u16) -> Result<TcpStream, String> {
    let s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn read_reply(s: &mut TcpStream, reply: &[u8]) -> Result<(), String> {
    let mut got = vec![0u8; reply.len()];
    s.read_exact(&mut got)
        .map_err(|e| format!("reading a reply: {e}"))?;
    if got != reply {
        return Err(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The -m sweep

/// One `-m` size of the sweep: per workload the proxy CPU µs/request and
/// the ops/s, and the proxy's peak RSS.
struct SweepRow {
    mbuf: usize,
    cells: Vec<(Spread, Spread)>,
    hwm: u64,
}

fn sweep(b: &Bench, filter: &dyn Fn(&Workload) -> bool) -> Result<(), String> {
    let o = b.o;
    let workloads: Vec<Workload> = [Proto::Redis, Proto::Memcache]
        .into_iter()
        .flat_map(|proto| {
            [
                Workload {
                    proto,
                    cmd: Cmd::Get,
                    size: SMALL,
                    depth: 16,
                },
                Workload {
                    proto,
                    cmd: Cmd::Set,
                    size: LARGE,
                    depth: 16,
                },
            ]
        })
        .filter(|w| filter(w))
        .collect();
    if workloads.is_empty() {
        return Ok(());
    }
    let rounds = if o.quick { 1 } else { o.rounds };
    let mut rows: Vec<SweepRow> = Vec::new();
    for &m in &SWEEP_SIZES {
        let proxy = Proxy::start(&o.bin, b.cluster, b.dir, m)?;
        let mut cells = Vec::new();
        for w in &workloads {
            let n = w.requests(o);
            let mut cpu = Vec::new();
            let mut ops = Vec::new();
            for _ in 0..rounds {
                if w.cmd == Cmd::Get {
                    populate(w.proto, proxy.port(w.proto), o.keyspace, w.size)?;
                }
                let px = b.run_proxied(&proxy, w, n, None, false)?;
                cpu.push(px.proxy_us);
                ops.push(px.load.ops_per_sec);
            }
            eprintln!(
                "bench: sweep -m {m:<6} {:<24} proxy {} us/req, {}/s",
                w.name(),
                fmt_num(spread(cpu.iter().copied()).med, 3),
                fmt_ops(spread(ops.iter().copied()).med)
            );
            cells.push((spread(cpu), spread(ops)));
        }
        let hwm = status_bytes(proxy.pid(), "VmHWM:").unwrap_or(0);
        rows.push(SweepRow {
            mbuf: m,
            cells,
            hwm,
        });
    }
    println!(
        "\n-m sweep: proxy CPU us/req (median of {rounds}{}) and ops/s; \
         peak RSS over the size's runs (fresh proxy per size)",
        if rounds > 1 { ", min..max" } else { "" }
    );
    let mut header = format!("  {:>6}", "-m");
    for w in &workloads {
        let _ = write!(header, " {:>34}", w.name());
    }
    let _ = write!(header, " {:>9}", "VmHWM MiB");
    println!("{header}");
    for row in &rows {
        let mut line = format!("  {:>6}", row.mbuf);
        for (cpu, ops) in &row.cells {
            let range = if rounds > 1 {
                format!(" ({}..{})", fmt_num(cpu.min, 2), fmt_num(cpu.max, 2))
            } else {
                String::new()
            };
            let cell = format!("{}{range} us {}/s", fmt_num(cpu.med, 3), fmt_ops(ops.med));
            let _ = write!(line, " {cell:>34}");
        }
        let _ = write!(line, " {:>9}", fmt_num(mib(row.hwm), 1));
        println!("{line}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------

fn tool_version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            t.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|| "not found".into())
}

/// Raises the soft open-files limit to the hard one: the idle test holds
/// 1000 sockets, and the proxy (our child) inherits the limit.
fn raise_nofile() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

fn run(o: &Opts) -> Result<usize, String> {
    for tool in ["redis-server", "redis-benchmark", "memcached"] {
        if tool_version(tool, "--version") == "not found" {
            return Err(format!(
                "{tool} not found: install redis-server, redis-tools and memcached \
                 (scripts/bench.sh does it with apt-get when run as root)"
            ));
        }
    }
    raise_nofile();
    let filter = |w: &Workload| o.filter.as_ref().is_none_or(|f| w.name().contains(f));
    let workloads: Vec<Workload> = all_workloads().into_iter().filter(filter).collect();
    let migration = o
        .filter
        .as_ref()
        .is_none_or(|f| MIGRATION_WORKLOAD.contains(f.as_str()));
    if workloads.is_empty() && !o.sweep && !migration {
        return Err("--filter matches no workload".into());
    }
    println!("nutcracker benchmark");
    println!(
        "  binary       {} ({})",
        o.bin.display(),
        tool_version(&o.bin.to_string_lossy(), "-V")
    );
    if let Some(b2) = &o.bin2 {
        println!(
            "  binary 2     {} ({}), in the same rounds",
            b2.display(),
            tool_version(&b2.to_string_lossy(), "-V")
        );
    }
    println!(
        "  L4 relay     {}",
        o.haproxy.as_ref().map_or(
            "none: haproxy not found (scripts/bench.sh installs it as root)".to_string(),
            |h| format!(
                "{} ({}), nbthread 1, mode tcp, roundrobin",
                h.display(),
                tool_version(&h.to_string_lossy(), "-v")
            )
        )
    );
    println!(
        "  backends     {}; {}",
        tool_version("redis-server", "--version"),
        tool_version("memcached", "-V")
    );
    println!(
        "  machine      {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  settings     {} rounds, {} clients, {} keys, -m {}{}",
        o.rounds,
        o.clients,
        o.keyspace,
        o.mbuf,
        if o.quick { ", quick" } else { "" }
    );
    println!("  CPU          from /proc/<pid>/task/*/schedstat (user + kernel, all threads)");
    if let Some(d) = &o.perf_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let tmp = TempDir::new()?;
    let started = Instant::now();
    let cluster = Cluster::start(&tmp.0)?;
    let b = Bench {
        o,
        dir: &tmp.0,
        cluster: &cluster,
    };
    let mut failed = 0;
    if !o.sweep_only && !workloads.is_empty() {
        let r = main_run(&b, &workloads)?;
        println!("\nPer workload (ops/s from the client; CPU per request from /proc)");
        for (w, n, runs) in &r.samples {
            print_workload(w, *n, runs, o);
        }
        print_overview(&r);
        failed = print_checks(&checks(&r, o));
        failed += print_issue_table(&r, o);
    }
    idle_memory(&b)?;
    if !o.sweep_only && migration {
        migration_bench(&b)?;
    }
    if o.sweep {
        sweep(&b, &filter)?;
    }
    if let Some(d) = &o.perf_dir {
        let mut files: Vec<String> = std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path().display().to_string())
                    .filter(|p| p.ends_with(".data"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        println!("\nperf data (perf report --no-children -i FILE):");
        for f in files {
            println!("  {f}");
        }
    }
    println!("\nfinished in {:.0} s", started.elapsed().as_secs_f64());
    Ok(failed)
}

fn main() {
    install_signal_handlers();
    let code = match parse_opts() {
        Ok(None) => 0,
        Ok(Some(o)) => match run(&o) {
            // Missed targets are reported, not an error: numbers on a busy
            // machine are noisy, and the run itself worked.
            Ok(_) => 0,
            Err(e) => {
                eprintln!("bench: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("bench: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// Checks of the pure helpers, run by `--self-test`: a `harness = false`
/// bench target has no `#[test]` runner.
mod self_test {
    use super::*;

    pub fn run() {
        mc_reply_parsing();
        keys_match_redis_benchmark();
        csv_columns_by_name();
        spread_median();
        issue_rows_from_samples();
        println!("bench self-test: ok");
    }

    fn mc_reply_parsing() {
        assert_eq!(parse_mc_reply(b"STO", Cmd::Set), Ok(None));
        assert_eq!(
            parse_mc_reply(b"STORED\r\nEND", Cmd::Set),
            Ok(Some((8, McReply::Stored)))
        );
        let two = b"VALUE a 0 3\r\nxyz\r\nVALUE b 0 1\r\nq\r\nEND\r\n";
        assert_eq!(
            parse_mc_reply(two, Cmd::Mget),
            Ok(Some((two.len(), McReply::Values(2))))
        );
        for cut in 0..two.len() {
            assert_eq!(
                parse_mc_reply(&two[..cut], Cmd::Mget),
                Ok(None),
                "cut {cut}"
            );
        }
        assert_eq!(
            parse_mc_reply(b"SERVER_ERROR x\r\n", Cmd::Get),
            Ok(Some((16, McReply::Other("SERVER_ERROR x".into()))))
        );
        assert!(parse_mc_reply(b"VALUE a 0 zz\r\n", Cmd::Get).is_err());
    }

    fn keys_match_redis_benchmark() {
        let mut v = Vec::new();
        push_key(&mut v, 42);
        assert_eq!(v, b"key:000000000042");
        let mut set = Vec::new();
        push_mc_set(&mut set, 42, b"xxxxx");
        assert_eq!(set, b"set key:000000000042 0 0 5\r\nxxxxx\r\n");
    }

    fn csv_columns_by_name() {
        let t = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\
                 \"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                 \"GET\",\"363636.38\",\"2.047\",\"0.072\",\"2.135\",\"5.103\",\"7.183\",\"7.287\"\n";
        assert_eq!(parse_csv(t), Ok((363636.38, 2.135, 7.183)));
    }

    fn issue_rows_from_samples() {
        let relay = HopRun {
            cpu_us: 2.0,
            ..HopRun::default()
        };
        let samples = all_workloads()
            .into_iter()
            .map(|w| {
                let s = Sample {
                    proxy_us: 1.0,
                    rss_max: 64 << 20,
                    rss_after: (w == HEAVIEST).then_some(8 << 20),
                    relay: Some(relay.clone()),
                    ..Sample::default()
                };
                (w, 1, vec![s.clone(), s])
            })
            .collect();
        let r = MainResult {
            samples,
            hwm: 0,
            rss_sampled: 0,
            bin2_hwm: None,
        };
        let rows = issue_rows(&r);
        assert_eq!(rows.len(), 5);
        // 32 B GET and SET of both protocols at depth 16, then at depth 1.
        for row in &rows[..2] {
            assert_eq!(row.values.len(), 4, "{}", row.what);
            assert!(row.values.iter().all(|(_, v)| *v == 0.5));
        }
        // Without a second binary its rows have no figures.
        assert!(rows[2].values.iter().all(|(_, v)| v.is_nan()));
        assert_eq!(rows[3].values, vec![(HEAVIEST.name(), 8.0)]);
        assert!(rows[4].values[0].1.is_nan());
    }

    fn spread_median() {
        let s = spread([3.0, 1.0, 2.0]);
        assert_eq!((s.med, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(spread([1.0, 2.0, 4.0, 10.0]).med, 3.0);
    }
}
