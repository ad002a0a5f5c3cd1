//! The running daemon shell (docs/compatibility.md §2.7, §3.3, §3.4 and the docs/compatibility.md §13 changes):
//! `-d` with its pid file, SIGTERM / SIGINT clean exits, SIGHUP log reopen,
//! SIGTTIN / SIGTTOU level changes, the start-up failure paths, and the SysV
//! init script driving the binary.
//!
//! These start the real engine, so each test picks free loopback ports for
//! the pool listener and the stats socket. Every wait is a bounded poll;
//! guards kill whatever was started.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const START_LINE_TAIL: &str = "run, rabbit run / dig that hole, forget the sun / and when at last the work is done / don't sit down / it's time to dig another one";
const DONE: &str = "done, rabbit done";

/// A temp dir with a good config, and the paths a start needs.
struct Setup {
    dir: TempDir,
    conf: PathBuf,
    log: PathBuf,
    pid: PathBuf,
    stats_port: String,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        let dir = TempDir::new(tag);
        let conf = dir.write("nutcracker.yml", &redis_config(free_port()));
        Setup {
            log: dir.join("nutcracker.log"),
            pid: dir.join("nutcracker.pid"),
            conf,
            stats_port: free_port().to_string(),
            dir,
        }
    }

    fn s(p: &Path) -> &str {
        p.to_str().expect("utf-8 temp path")
    }

    /// Common arguments: config, log file, pid file, stats port.
    fn args(&self) -> Vec<&str> {
        vec![
            "-c",
            Self::s(&self.conf),
            "-o",
            Self::s(&self.log),
            "-p",
            Self::s(&self.pid),
            "-s",
            &self.stats_port,
            "-a",
            "127.0.0.1",
        ]
    }

    /// Starts in the foreground and waits for the start lines.
    fn start_foreground(&self, extra: &[&str]) -> ChildGuard {
        let mut args = self.args();
        args.extend_from_slice(extra);
        let child = ChildGuard::spawn(self.dir.path(), &args);
        wait_for_text(&self.log, START_LINE_TAIL);
        wait_for("the pid file", || read_pidfile(&self.pid).is_some());
        child
    }
}

/// The message part of a log line: after `[date time] file:line `.
fn message(line: &str) -> &str {
    line.get(26..)
        .and_then(|rest| rest.split_once(' '))
        .map_or(line, |(_, msg)| msg)
}

#[test]
fn daemon_pid_file_lifecycle() {
    let s = Setup::new("daemon");
    let mut guard = DaemonGuard::new(&s.pid);
    let mut args = vec!["-d"];
    args.extend(s.args());
    let out = run_in(Some(s.dir.path()), &args);
    assert_eq!(out.status.code(), Some(0), "the parent exits 0: {out:?}");
    assert!(out.stderr.is_empty(), "{}", stderr_text(&out));

    wait_for("the pid file", || read_pidfile(&s.pid).is_some());
    let text = read(&s.pid);
    assert!(
        text.ends_with('\n'),
        "pid file ends with a newline: {text:?}"
    );
    let pid = read_pidfile(&s.pid).expect("pid");
    guard.set(pid);
    assert!(alive(pid), "daemon {pid} is running");
    assert!(is_nutcracker(pid));
    assert_ne!(Some(pid), i32::try_from(std::process::id()).ok());

    // Detached: its own session, in /, stdio on /dev/null.
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd");
    assert_eq!(cwd, PathBuf::from("/"));
    // SAFETY: getsid is a plain query.
    let (sid, ours) = unsafe { (libc::getsid(pid), libc::getsid(0)) };
    assert!(sid > 0 && sid != ours, "in a session of its own");
    for fd in 0..=2 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("fd link");
        assert_eq!(target, PathBuf::from("/dev/null"), "fd {fd}");
    }
    let log = wait_for_text(&s.log, START_LINE_TAIL);
    assert!(
        log.contains(&format!(
            "nutcracker-{} built for ",
            env!("CARGO_PKG_VERSION")
        )),
        "{log}"
    );
    assert!(log.contains(&format!("started on pid {pid}\n")), "{log}");

    send_signal(pid, libc::SIGTERM);
    wait_for("the daemon to exit", || !alive(pid));
    wait_for("the pid file to go", || !s.pid.exists());
    let log = wait_for_text(&s.log, DONE);
    assert_eq!(
        count(&log, "signal 15 (SIGTERM) received, exiting\n"),
        1,
        "{log}"
    );
    assert!(log.ends_with(&format!("{DONE}\n")), "{log}");
}

#[test]
fn log_line_format() {
    let s = Setup::new("format");
    let mut child = s.start_foreground(&[]);
    child.signal(libc::SIGTERM);
    assert_eq!(child.wait_exit(WAIT).and_then(|st| st.code()), Some(0));
    let log = read(&s.log);
    for line in log.lines() {
        // [YYYY-MM-DD HH:MM:SS.mmm] file.rs:N message
        let b = line.as_bytes();
        assert!(b.len() > 27, "{line:?}");
        assert_eq!(b[0], b'[', "{line:?}");
        assert_eq!(&line[24..26], "] ", "{line:?}");
        assert!(
            line[1..24].bytes().enumerate().all(|(i, c)| match i {
                4 | 7 => c == b'-',
                10 => c == b' ',
                13 | 16 => c == b':',
                19 => c == b'.',
                _ => c.is_ascii_digit(),
            }),
            "{line:?}"
        );
        let rest = &line[26..];
        let (loc, _msg) = rest.split_once(' ').expect("location then message");
        let (file, num) = loc.split_once(':').expect("file:line");
        assert!(file.ends_with(".rs"), "{line:?}");
        assert!(num.parse::<u32>().is_ok(), "{line:?}");
    }
}

#[test]
fn sighup_reopens_the_log_file() {
    let s = Setup::new("hup");
    let mut child = s.start_foreground(&[]);
    let rotated = s.dir.join("nutcracker.log.1");
    std::fs::rename(&s.log, &rotated).expect("rotate");
    child.signal(libc::SIGHUP);
    // The SIGHUP line goes to the old (renamed) file, later lines to the new.
    wait_for_text(&rotated, "signal 1 (SIGHUP) received, reopening log file\n");
    wait_for("the new log file", || s.log.exists());
    child.signal(libc::SIGUSR1);
    wait_for_text(&s.log, "signal 10 (SIGUSR1) received\n");
    child.signal(libc::SIGUSR2);
    wait_for_text(&s.log, "signal 12 (SIGUSR2) received\n");
    child.signal(libc::SIGTERM);
    assert_eq!(child.wait_exit(WAIT).and_then(|st| st.code()), Some(0));
    let new = read(&s.log);
    assert!(!new.contains("reopening"), "{new}");
    assert!(new.ends_with(&format!("{DONE}\n")), "{new}");
    let old = read(&rotated);
    assert!(!old.contains("SIGUSR1"), "{old}");
    // The reopened file is created with mode 0644 (less the umask).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.log)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode & !0o644, 0, "{mode:o}");
}

#[test]
fn sigttin_sigttou_change_the_level() {
    let s = Setup::new("level");
    let mut child = s.start_foreground(&["-v", "10"]);
    child.signal(libc::SIGTTIN);
    wait_for_text(&s.log, "up log level to 11\n");
    // At the maximum only the signal line is written.
    child.signal(libc::SIGTTIN);
    wait_for("the second SIGTTIN line", || {
        count(
            &read(&s.log),
            "signal 21 (SIGTTIN) received, up logging level\n",
        ) == 2
    });
    child.signal(libc::SIGTTOU);
    wait_for_text(&s.log, "down log level to 10\n");
    child.signal(libc::SIGTERM);
    assert_eq!(child.wait_exit(WAIT).and_then(|st| st.code()), Some(0));
    let log = read(&s.log);
    assert_eq!(count(&log, "up log level to "), 1, "{log}");
    assert_eq!(
        count(&log, "signal 22 (SIGTTOU) received, down logging level\n"),
        1,
        "{log}"
    );
    let order: Vec<&str> = log
        .lines()
        .map(message)
        .filter(|m| m.contains("level"))
        .collect();
    assert_eq!(
        order,
        [
            "signal 21 (SIGTTIN) received, up logging level",
            "up log level to 11",
            "signal 21 (SIGTTIN) received, up logging level",
            "signal 22 (SIGTTOU) received, down logging level",
            "down log level to 10",
        ]
    );
}

#[test]
fn sigttou_at_level_zero_changes_nothing() {
    let s = Setup::new("level0");
    let mut child = s.start_foreground(&["-v", "0"]);
    child.signal(libc::SIGTTOU);
    wait_for_text(&s.log, "signal 22 (SIGTTOU) received, down logging level\n");
    child.signal(libc::SIGTTIN);
    wait_for_text(&s.log, "up log level to 1\n");
    child.signal(libc::SIGTERM);
    assert_eq!(child.wait_exit(WAIT).and_then(|st| st.code()), Some(0));
    assert_eq!(count(&read(&s.log), "down log level to"), 0);
}

/// twemproxy's own `test_signal`: HUP, TTIN, TTOU and SEGV each leave their
/// name in the log. SEGV logs the 0.5.0 line (written from the handler,
/// hence the dotted prefix instead of a time) and the process then dies by
/// SIGSEGV itself, not by an exit.
#[test]
fn sigsegv_is_logged_and_kills_by_the_signal() {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    let s = Setup::new("segv");
    let mut cmd = Command::new(bin());
    cmd.args(s.args())
        .current_dir(s.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; between fork and exec it only
    // keeps the dying child from writing a core file into the test's dir.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &none) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = ChildGuard::new(cmd.spawn().expect("spawn nutcracker"));
    wait_for_text(&s.log, START_LINE_TAIL);
    for (sig, name) in [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
    ] {
        child.signal(sig);
        wait_for_text(&s.log, &format!("({name}) received"));
    }
    child.signal(libc::SIGSEGV);
    let status = child.wait_exit(WAIT).expect("exit after SIGSEGV");
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
    let log = read(&s.log);
    assert_eq!(
        count(
            &log,
            "\n[.......................] signal 11 (SIGSEGV) received, core dumping\n"
        ),
        1,
        "{log}"
    );
    assert!(!log.contains(DONE), "no orderly exit: {log}");
}

#[test]
fn sigint_exits_cleanly() {
    let s = Setup::new("int");
    let mut child = s.start_foreground(&[]);
    child.signal(libc::SIGINT);
    let status = child.wait_exit(WAIT).expect("exit after SIGINT");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!s.pid.exists(), "pid file removed");
    let log = read(&s.log);
    assert_eq!(
        count(&log, "signal 2 (SIGINT) received, exiting\n"),
        1,
        "{log}"
    );
    assert!(log.ends_with(&format!("{DONE}\n")), "{log}");
}

#[test]
fn bad_config_with_daemonize_fails_before_detaching() {
    let s = Setup::new("badd");
    std::fs::write(
        &s.conf,
        "alpha:\n  listen: 127.0.0.1:22121\n  hash: sha1\n  servers:\n   - 127.0.0.1:6379:1\n",
    )
    .expect("write");
    let _guard = DaemonGuard::new(&s.pid);
    let mut args = vec!["-d"];
    args.extend(s.args());
    let out = run_in(Some(s.dir.path()), &args);
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let reason = "conf: directive \"hash\" is not a valid hash";
    assert_eq!(count(&err, reason), 1, "{err}");
    assert!(err.contains("line 3)"), "{err}");
    let invalid = format!(
        "nutcracker: configuration file '{}' syntax is invalid\n",
        s.conf.display()
    );
    assert_eq!(count(&err, &invalid), 1, "{err}");
    assert!(!s.pid.exists(), "no pid file");
    let log = read(&s.log);
    assert!(!log.contains("started on pid"), "never started: {log}");
    assert_eq!(
        count(&log, reason),
        1,
        "the reason is in the log too: {log}"
    );
}

#[test]
fn bad_config_in_foreground_logs_reason_once_and_exits_1() {
    let s = Setup::new("badf");
    std::fs::write(
        &s.conf,
        "alpha:\n  listen: 127.0.0.1:22121\n  redis: yes\n  servers:\n   - 127.0.0.1:6379:1\n",
    )
    .expect("write");
    // Log to stderr (no -o) to see both the log lines and the stderr line.
    let out = run_in(
        Some(s.dir.path()),
        &[
            "-c",
            "nutcracker.yml",
            "-p",
            "nutcracker.pid",
            "-s",
            &s.stats_port,
        ],
    );
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        count(
            &err,
            "conf: directive \"redis\" is not \"true\" or \"false\""
        ),
        1,
        "{err}"
    );
    assert_eq!(
        count(
            &err,
            "nutcracker: configuration file 'nutcracker.yml' syntax is invalid\n"
        ),
        1,
        "{err}"
    );
    assert!(err.contains(START_LINE_TAIL), "{err}");
    assert!(err.ends_with(&format!("{DONE}\n")), "{err}");
    assert!(!s.pid.exists(), "pid file removed on the failure path");
}

#[test]
fn unwritable_pid_file_fails_before_the_start_lines() {
    let s = Setup::new("pidfail");
    let out = run_in(
        Some(s.dir.path()),
        &[
            "-c",
            "nutcracker.yml",
            // An empty -o means stderr, as in C.
            "-o",
            "",
            "-p",
            "/nonexistent/dir/n.pid",
            "-s",
            &s.stats_port,
        ],
    );
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].ends_with(
            "opening pid file '/nonexistent/dir/n.pid' failed: No such file or directory"
        ),
        "{err}"
    );
    assert!(lines[1].ends_with(DONE), "{err}");
}

#[test]
fn busy_listen_port_fails_with_exit_1() {
    let s = Setup::new("bind");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    std::fs::write(&s.conf, redis_config(port)).expect("write");
    let mut args = s.args();
    args.push("-v");
    args.push("11");
    let out = run_in(Some(s.dir.path()), &args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let log = read(&s.log);
    assert!(log.contains("started on pid"), "{log}");
    assert!(
        log.contains(&format!(
            "127.0.0.1:{port}' failed: Address already in use\n"
        )),
        "{log}"
    );
    assert!(log.ends_with(&format!("{DONE}\n")), "{log}");
    assert!(!s.pid.exists(), "pid file removed");
    drop(busy);
}

/// Runs the init script with the test's paths and returns (status, output).
fn init_script(s: &Setup, action: &str) -> (Option<i32>, String) {
    let script = manifest_dir().join("scripts/nutcracker.init");
    let out = Command::new("sh")
        .arg(&script)
        .arg(action)
        .env("NUTCRACKER_DEFAULTS", s.dir.join("no-such-defaults"))
        .env("DAEMON", bin())
        .env("PIDFILE", &s.pid)
        .env("LOGFILE", &s.log)
        .env("CONFFILE", &s.conf)
        .env("DAEMON_ARGS", format!("-s {} -a 127.0.0.1", s.stats_port))
        .stdin(Stdio::null())
        .output()
        .expect("run init script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn init_script_start_reload_status_stop() {
    let s = Setup::new("init");
    let mut guard = DaemonGuard::new(&s.pid);

    let (code, text) = init_script(&s, "status");
    assert_eq!(code, Some(3), "not running yet: {text}");

    let (code, text) = init_script(&s, "start");
    assert_eq!(code, Some(0), "start: {text}");
    let pid = read_pidfile(&s.pid).expect("start waits for the pid file");
    guard.set(pid);
    assert!(alive(pid));

    // A second start is a no-op that succeeds (LSB).
    let (code, text) = init_script(&s, "start");
    assert_eq!(code, Some(0), "start again: {text}");
    assert_eq!(read_pidfile(&s.pid), Some(pid));

    let (code, text) = init_script(&s, "status");
    assert_eq!(code, Some(0), "status: {text}");
    assert!(text.contains(&pid.to_string()), "{text}");

    std::fs::rename(&s.log, s.dir.join("rotated.log")).expect("rotate");
    let (code, text) = init_script(&s, "reload-logs");
    assert_eq!(code, Some(0), "reload-logs: {text}");
    wait_for_text(&s.dir.join("rotated.log"), "signal 1 (SIGHUP) received");
    wait_for("the reopened log", || s.log.exists());

    let (code, text) = init_script(&s, "configtest");
    assert_eq!(code, Some(0), "configtest: {text}");

    // reload: checked with -t, then SIGUSR1; the same process goes on.
    let (code, text) = init_script(&s, "reload");
    assert_eq!(code, Some(0), "reload: {text}");
    wait_for_text(&s.log, "reloaded configuration from");
    assert_eq!(read_pidfile(&s.pid), Some(pid));
    assert!(alive(pid));

    let (code, text) = init_script(&s, "stop");
    assert_eq!(code, Some(0), "stop: {text}");
    assert!(!alive(pid), "stopped");
    assert!(!s.pid.exists());
    wait_for_text(&s.log, DONE);

    let (code, text) = init_script(&s, "status");
    assert_eq!(code, Some(3), "stopped: {text}");
    let (code, text) = init_script(&s, "stop");
    assert_eq!(code, Some(0), "stopping a stopped service succeeds: {text}");
}

#[test]
fn init_script_start_fails_on_bad_config() {
    let s = Setup::new("initbad");
    let _guard = DaemonGuard::new(&s.pid);
    std::fs::write(&s.conf, "alpha:\n  listen: nowhere\n").expect("write");
    let (code, text) = init_script(&s, "start");
    assert_ne!(code, Some(0), "start must fail: {text}");
    assert!(text.contains("syntax is invalid"), "{text}");
    assert!(!s.pid.exists());
}
