//! Helpers for the tests that run the built `nutcracker` binary: temporary
//! directories, free loopback ports, bounded polling, and guards that kill
//! whatever a test started, even when the test fails half-way.

#![allow(dead_code)]

// Temp dirs, ports and polling are the engine tests' harness's.
#[path = "../support/mod.rs"]
mod support;
pub use support::{free_port, wait_until, TempDir, WAIT};

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nutcracker")
}

/// The crate root (for `conf/`, `scripts/`).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A valid one-pool redis config listening on `listen_port`; the backend
/// need not run (nothing connects without traffic or preconnect).
pub fn redis_config(listen_port: u16) -> String {
    format!(
        "alpha:\n  listen: 127.0.0.1:{listen_port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n   - 127.0.0.1:{}:1\n",
        free_port()
    )
}

/// Panics with `what` unless `cond` holds within [`WAIT`].
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(WAIT, cond), "timed out waiting for {what}");
}

/// File contents, empty when missing.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the file at `path` contains `needle`, and returns the
/// contents.
pub fn wait_for_text(path: &Path, needle: &str) -> String {
    let mut text = String::new();
    let found = wait_until(WAIT, || {
        text = read(path);
        text.contains(needle)
    });
    assert!(
        found,
        "{} never contained {needle:?}; it has:\n{text}",
        path.display()
    );
    text
}

/// Runs the binary with `args` in `dir` (the crate root when `None`) and
/// collects its output; killed if it runs longer than [`WAIT`].
pub fn run_in(dir: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(dir.map_or_else(manifest_dir, Path::to_path_buf))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn nutcracker");
    finish(ChildGuard::new(child))
}

/// Runs the binary with `args` in the crate root.
pub fn run(args: &[&str]) -> Output {
    run_in(None, args)
}

/// Waits (bounded) for a child whose stdout and stderr are pipes and
/// collects everything. Output is read on threads so a chatty child cannot
/// block on a full pipe.
pub fn finish(mut guard: ChildGuard) -> Output {
    let child = guard.child_mut();
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let status = guard
        .wait_exit(WAIT)
        .expect("nutcracker did not exit in time");
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard { child }
    }

    /// Starts the binary with `args` in `dir`, stdin from /dev/null and
    /// stdout/stderr piped.
    pub fn spawn(dir: &Path, args: &[&str]) -> ChildGuard {
        let child = Command::new(bin())
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nutcracker");
        ChildGuard { child }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn signal(&self, sig: libc::c_int) {
        send_signal(self.pid(), sig);
    }

    /// Waits up to `timeout` for the exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn send_signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we started.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// True while `pid` is a live process (a zombie counts as gone: a daemon's
/// parent may be a reaper that has not got to it yet).
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    // Field 3, after the parenthesised command name.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// True when `pid` is running our binary (guards against killing a reused
/// pid).
pub fn is_nutcracker(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().contains("nutcracker"))
        .unwrap_or(false)
}

/// The pid in a pid file, if the file is complete.
pub fn read_pidfile(path: &Path) -> Option<i32> {
    let text = read(path);
    text.strip_suffix('\n')?.parse().ok()
}

/// Kills a detached daemon on drop: the pid recorded with [`Self::set`], or
/// the one in the pid file.
pub struct DaemonGuard {
    pid_file: PathBuf,
    pid: Option<i32>,
}

impl DaemonGuard {
    pub fn new(pid_file: &Path) -> DaemonGuard {
        DaemonGuard {
            pid_file: pid_file.to_path_buf(),
            pid: None,
        }
    }

    pub fn set(&mut self, pid: i32) {
        self.pid = Some(pid);
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        let pid = self.pid.or_else(|| read_pidfile(&self.pid_file));
        if let Some(pid) = pid {
            if alive(pid) && is_nutcracker(pid) {
                // SAFETY: kill(2) on a process this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// `output.stderr` as text.
pub fn stderr_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// How many times `needle` occurs in `hay`.
pub fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}
