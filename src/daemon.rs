//! Process-level chores around the proxy: detaching into the background
//! (`-d`), the pid file (`-p`), the open-files limit, and the host
//! description for the start line.
//!
//! [`daemonize`] must run before any thread exists: fork(2) copies only the
//! calling thread. It changes directory to `/` so the daemon does not pin
//! the directory it was started from; callers resolve relative paths first
//! ([`absolute`]).

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `path` made absolute against the current directory (without touching
/// the file system), so it still names the same file after [`daemonize`]
/// has moved to `/`.
pub fn absolute(path: &str) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path))
}

fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the caller guarantees a single-threaded process (see module
    // docs), so the child's state is consistent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// Detaches from the terminal: fork (the parent exits 0), setsid, fork
/// again (so the daemon can never reacquire a terminal), chdir `/`, umask 0,
/// stdin/stdout/stderr to /dev/null. Returns in the grandchild only.
pub fn daemonize() -> io::Result<()> {
    if fork()? != 0 {
        // SAFETY: _exit skips atexit handlers and buffered-stream flushes,
        // which belong to the child now.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: plain syscall.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    // The session leader's exit would send SIGHUP to the new session's
    // members; the grandchild installs its own handler later.
    // SAFETY: setting a signal disposition to SIG_IGN is always sound.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    if fork()? != 0 {
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    std::env::set_current_dir("/")?;
    // SAFETY: plain syscall.
    unsafe { libc::umask(0) };
    redirect_stdio_to_null()
}

fn redirect_stdio_to_null() -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in 0..=2 {
        // SAFETY: both descriptors are valid; dup2 replaces fd atomically.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes the pid file: the decimal pid and a newline, created or
/// truncated, mode 0644.
pub fn write_pidfile(path: &Path, pid: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(format!("{pid}\n").as_bytes())
}

/// Removes the pid file; a failure is logged and otherwise ignored, as in C.
pub fn remove_pidfile(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        crate::log_error!(
            "unlink of pid file '{}' failed, ignored: {}",
            path.display(),
            crate::log::strerror(&e)
        );
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (each client and server
/// connection is a descriptor) and logs the result at notice level.
/// Failure is logged and not fatal: the proxy still works, with fewer
/// connections.
pub fn raise_nofile_limit() {
    // SAFETY: a zeroed rlimit is valid to be filled.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        let e = io::Error::last_os_error();
        crate::log_warn!(
            "getrlimit(RLIMIT_NOFILE) failed: {}",
            crate::log::strerror(&e)
        );
        return;
    }
    let target = if rl.rlim_max == libc::RLIM_INFINITY {
        // The kernel refuses an infinite NOFILE; its own ceiling is nr_open.
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
            .unwrap_or(1 << 20)
    } else {
        rl.rlim_max
    };
    if target > rl.rlim_cur {
        let new = libc::rlimit {
            rlim_cur: target,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            let e = io::Error::last_os_error();
            crate::log_warn!(
                "raising open files limit from {} to {} failed: {}",
                rl.rlim_cur,
                target,
                crate::log::strerror(&e)
            );
            return;
        }
        rl.rlim_cur = target;
    }
    crate::log_notice!("open files limit is {}", rl.rlim_cur);
}

/// `uname` fields for the start line: sysname, release, machine.
pub fn uname() -> (String, String, String) {
    // SAFETY: a zeroed utsname is valid to be filled.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (String::new(), String::new(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        // The kernel NUL-terminates; guard anyway by bounding to the array.
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.sysname), field(&u.release), field(&u.machine))
}

/// The host name for the stats document's `source` field.
pub fn hostname() -> String {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: valid buffer and length.
    if unsafe { libc::gethostname(buf.as_mut_ptr(), buf.len() - 1) } != 0 {
        return String::new();
    }
    // SAFETY: the last byte was never written, so the string is terminated.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("nutcracker-daemon-{}-{name}", std::process::id()))
    }

    #[test]
    fn pidfile_has_newline_mode_and_is_removed() {
        let p = tmp("pid");
        write_pidfile(&p, 4242).expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "4242\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        // The umask may only remove bits.
        assert_eq!(mode & !0o644, 0);
        // Truncated when rewritten.
        write_pidfile(&p, 7).expect("rewrite");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "7\n");
        remove_pidfile(&p);
        assert!(!p.exists());
    }

    #[test]
    fn pidfile_error_is_reported() {
        let e = write_pidfile(Path::new("/nonexistent-dir/x.pid"), 1).expect_err("must fail");
        assert_eq!(crate::log::strerror(&e), "No such file or directory");
    }

    #[test]
    fn absolute_paths() {
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(absolute("a/b.pid"), cwd.join("a/b.pid"));
        assert_eq!(absolute("/x/y"), PathBuf::from("/x/y"));
    }

    #[test]
    fn uname_fields() {
        let (sys, release, machine) = uname();
        assert_eq!(sys, "Linux");
        assert!(!release.is_empty());
        assert!(!machine.is_empty());
    }
}
