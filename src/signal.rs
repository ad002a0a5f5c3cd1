//! Signals (docs/compatibility.md §3.3), self-pipe style: the handler only records, the event
//! loop acts.
//!
//! The handler bumps a per-signal counter in an atomic and writes one byte
//! to a non-blocking pipe; the engine registers the pipe's read end
//! ([`wake_fd`]) with its poller and calls [`handle_pending`] when it turns
//! readable. That function drains the pipe and does the real work (log
//! lines, level changes, reopening the log file) in normal context, where
//! locks and allocation are allowed. Counters rather than a bit mask keep
//! two quick SIGTTINs worth two levels.
//!
//! Handled: SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGINT, SIGTERM.
//! SIGPIPE is ignored (a peer closing mid-write is an ordinary error).
//!
//! SIGSEGV is the exception: the process is broken, so waiting for the loop
//! is no option. Its handler writes the 0.5.0 line
//! `[.......................] signal 11 (SIGSEGV) received, core dumping`
//! with one write(2) to the log's descriptor ([`crate::log::raw_fd`], an
//! atomic: no lock, no allocation, no clock), and returns with the default
//! action restored and the signal raised again, so the process dies by
//! SIGSEGV and the kernel writes the core file. Unlike 0.5.0 it prints no
//! backtrace: producing one is not async-signal-safe.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::Mutex;

/// The signals we handle, with the names the log lines use, in the order
/// [`handle_pending`] processes them (shutdown last, so a level change or
/// log reopen sent just before it is still logged).
const SIGNALS: [(libc::c_int, &str); 7] = [
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
];

/// Times each signal arrived since the last [`handle_pending`]; indexed by
/// signal number (all ours are below 32).
static COUNTS: [AtomicU32; 32] = [const { AtomicU32::new(0) }; 32];

static PIPE_READ: AtomicI32 = AtomicI32::new(-1);
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signo: libc::c_int) {
    // Only async-signal-safe work here: an atomic add and write(2).
    // SAFETY: __errno_location is the thread's errno; saved and restored so
    // the interrupted code does not see our write's errno.
    let saved = unsafe { *libc::__errno_location() };
    if let Ok(i) = usize::try_from(signo) {
        if let Some(c) = COUNTS.get(i) {
            c.fetch_add(1, Ordering::SeqCst);
        }
    }
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = [signo as u8];
        // A full pipe (EAGAIN) is fine: a wake-up is already pending and the
        // counter holds the signal.
        // SAFETY: valid buffer of length 1.
        unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    }
    // SAFETY: see above.
    unsafe { *libc::__errno_location() = saved };
}

/// The line of a SIGSEGV, with the prefix 0.5.0 gives lines written from a
/// signal handler (no time stamp: formatting one is not signal-safe).
const SEGV_LINE: &[u8] = b"[.......................] signal 11 (SIGSEGV) received, core dumping\n";

extern "C" fn on_fatal(signo: libc::c_int) {
    // Installed with SA_RESETHAND, so the action is the default again by
    // now, and the signal is blocked until we return: raised here, it is
    // delivered (and kills) right after the return. A real fault would
    // also kill by faulting again.
    let fd = crate::log::raw_fd();
    // SAFETY: write(2) and raise(3) are async-signal-safe; the buffer is a
    // static of the given length. A failed write has nowhere to go.
    unsafe {
        libc::write(fd, SEGV_LINE.as_ptr().cast(), SEGV_LINE.len());
        libc::raise(signo);
    }
}

fn set_handler(signo: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SA_RESTART: blocking calls elsewhere (file writes) are not cut short.
    set_action(signo, handler, libc::SA_RESTART)
}

fn set_action(
    signo: libc::c_int,
    handler: libc::sighandler_t,
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; fields are set before use.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = flags;
    // SAFETY: valid pointers; sa_mask is initialised by sigemptyset.
    unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(signo, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Creates the self-pipe (once) and installs the handlers. Safe to call more
/// than once.
pub fn install() -> io::Result<()> {
    ensure_pipe()?;
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for (signo, _) in SIGNALS {
        set_handler(signo, handler)?;
    }
    set_handler(libc::SIGPIPE, libc::SIG_IGN)?;
    // SA_ONSTACK: a stack overflow faults with no stack left, so the
    // handler runs on the alternate stack std sets up for each thread.
    let fatal = on_fatal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    set_action(libc::SIGSEGV, fatal, libc::SA_RESETHAND | libc::SA_ONSTACK)?;
    Ok(())
}

fn ensure_pipe() -> io::Result<()> {
    static ONCE: Mutex<()> = Mutex::new(());
    let _guard = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if PIPE_READ.load(Ordering::SeqCst) < 0 {
        let mut fds = [-1 as libc::c_int; 2];
        // SAFETY: valid array of two ints.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        PIPE_WRITE.store(fds[1], Ordering::SeqCst);
        PIPE_READ.store(fds[0], Ordering::SeqCst);
    }
    Ok(())
}

/// The pipe's read end (non-blocking), for the engine's poller; -1 before
/// [`install`].
pub fn wake_fd() -> RawFd {
    PIPE_READ.load(Ordering::SeqCst)
}

fn drain_pipe() {
    let fd = PIPE_READ.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: valid buffer; the fd is ours and non-blocking.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            continue;
        }
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        // 0 cannot happen while we hold the write end; EAGAIN means empty.
        break;
    }
}

fn take(signo: libc::c_int) -> u32 {
    usize::try_from(signo)
        .ok()
        .and_then(|i| COUNTS.get(i))
        .map_or(0, |c| c.swap(0, Ordering::SeqCst))
}

/// What the engine must do about the signals that arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalEvents {
    /// SIGINT or SIGTERM: leave the loop and exit.
    pub shutdown: bool,
    /// SIGUSR1: reload the configuration (several signals are one reload).
    pub reload: bool,
}

/// Drains the pipe and acts on every signal received since the last call,
/// logging the C binary's lines; what only the engine can do (shut down,
/// reload) is returned as events.
pub fn handle_pending() -> SignalEvents {
    // Drain before reading the counters: a signal landing after the drain
    // leaves a byte in the pipe, so the loop wakes again for it.
    drain_pipe();
    let mut ev = SignalEvents::default();
    for (signo, name) in SIGNALS {
        for _ in 0..take(signo) {
            match act(signo, name) {
                Some(Asked::Shutdown) => ev.shutdown = true,
                Some(Asked::Reload) => ev.reload = true,
                None => {}
            }
        }
    }
    ev
}

enum Asked {
    Shutdown,
    Reload,
}

/// One signal's log line and local effect, and what it asks of the engine.
fn act(signo: libc::c_int, name: &str) -> Option<Asked> {
    let action = match signo {
        libc::SIGTTIN => ", up logging level",
        libc::SIGTTOU => ", down logging level",
        libc::SIGHUP => ", reopening log file",
        libc::SIGINT | libc::SIGTERM => ", exiting",
        _ => "",
    };
    // Logged before acting: the SIGHUP line lands in the old file, as in C.
    crate::loga!("signal {signo} ({name}) received{action}");
    match signo {
        libc::SIGTTIN => {
            crate::log::level_up();
        }
        libc::SIGTTOU => {
            crate::log::level_down();
        }
        libc::SIGHUP => {
            // A failure is logged by reopen itself; the old file stays.
            let _ = crate::log::reopen();
        }
        libc::SIGINT | libc::SIGTERM => return Some(Asked::Shutdown),
        libc::SIGUSR1 => return Some(Asked::Reload),
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_signal_wakes_the_pipe_and_is_counted() {
        // Only SIGUSR2 (which just logs): the test process keeps its default
        // SIGINT/SIGTERM so it can still be interrupted.
        ensure_pipe().expect("pipe");
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        set_handler(libc::SIGUSR2, handler).expect("handler");
        let fd = wake_fd();
        assert!(fd >= 0);
        // SAFETY: raise is always safe to call.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
        assert_eq!(n, 1, "pipe readable after the signal");
        assert_eq!(
            handle_pending(),
            SignalEvents::default(),
            "SIGUSR2 asks nothing of the engine"
        );
        // Drained: nothing left to read, counter reset.
        // SAFETY: as above.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert_eq!(n, 0);
        assert_eq!(take(libc::SIGUSR2), 0);
    }

    #[test]
    fn signal_names_match_numbers() {
        let names: Vec<(i32, &str)> = SIGNALS.to_vec();
        assert!(names.contains(&(1, "SIGHUP")));
        assert!(names.contains(&(2, "SIGINT")));
        assert!(names.contains(&(10, "SIGUSR1")));
        assert!(names.contains(&(15, "SIGTERM")));
        assert!(names.contains(&(21, "SIGTTIN")));
        assert!(names.contains(&(22, "SIGTTOU")));
    }
}
