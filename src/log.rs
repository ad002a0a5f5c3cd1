//! The process-wide logger: levels, destination (stderr or the `-o` file),
//! the line format of docs/compatibility.md §3.1, and the `log_*!` macros every module uses.
//!
//! A line is `[YYYY-MM-DD HH:MM:SS.mmm] <file>:<line> <message>\n` in local
//! time, built in a fixed buffer and written with one write(2), so lines from
//! the event loop and the stats thread never interleave inside a line. The
//! level lives in an atomic that the macros test before formatting anything,
//! so a disabled debug line costs one relaxed load. The destination sits
//! behind a read-write lock: writers share it, and only [`reopen`] (SIGHUP)
//! takes it exclusively to swap in the new file.
//!
//! Lines are cut at [`MAX_LINE`] bytes (the C binary cuts at 256).
//!
//! A fatal-signal handler cannot take the lock (the thread it interrupted
//! may hold it), so the descriptor lines go to is also kept in an atomic,
//! [`raw_fd`]. A reopen never changes that number: the new file is moved
//! onto the old descriptor with dup3(2), so a handler that has just loaded
//! the number cannot write to a descriptor that was closed and reused.

use std::ffi::CStr;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::RwLock;

pub const LOG_EMERG: i32 = 0;
pub const LOG_ALERT: i32 = 1;
pub const LOG_CRIT: i32 = 2;
pub const LOG_ERR: i32 = 3;
pub const LOG_WARN: i32 = 4;
pub const LOG_NOTICE: i32 = 5;
pub const LOG_INFO: i32 = 6;
pub const LOG_DEBUG: i32 = 7;
pub const LOG_VERB: i32 = 8;
pub const LOG_VVERB: i32 = 9;
pub const LOG_VVVERB: i32 = 10;
pub const LOG_PVERB: i32 = 11;

/// The `-v` default.
pub const DEFAULT_LEVEL: i32 = LOG_NOTICE;

/// Longest line written, newline included; longer messages are cut.
pub const MAX_LINE: usize = 4096;

static LEVEL: AtomicI32 = AtomicI32::new(DEFAULT_LEVEL);

/// Where lines go. `None` file means stderr.
struct Sink {
    file: Option<File>,
    /// Absolute path of the `-o` file, so SIGHUP reopens the same file after
    /// a daemon has changed directory.
    path: Option<PathBuf>,
}

static SINK: RwLock<Sink> = RwLock::new(Sink {
    file: None,
    path: None,
});

/// The descriptor behind [`SINK`], readable without the lock.
static FD: AtomicI32 = AtomicI32::new(libc::STDERR_FILENO);

/// The descriptor log lines go to (stderr's or the `-o` file's), for code
/// that must not lock or allocate: a signal handler may write(2) to it.
pub fn raw_fd() -> RawFd {
    FD.load(Ordering::SeqCst)
}

fn clamp(level: i32) -> i32 {
    level.clamp(LOG_EMERG, LOG_PVERB)
}

fn open_log(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
}

/// Sets the level (clamped to 0..=11, as the C `log_init` does) and the
/// destination: `file` opened in append/create mode 0644, or stderr when
/// `None` or empty (as in C). The error is the open(2) failure; the caller
/// prints `opening log file 'F' failed: <strerror>`.
pub fn init(level: i32, file: Option<&str>) -> io::Result<()> {
    let (file, path) = match file.filter(|name| !name.is_empty()) {
        Some(name) => {
            let f = open_log(std::path::Path::new(name))?;
            let abs = std::path::absolute(name).unwrap_or_else(|_| PathBuf::from(name));
            (Some(f), Some(abs))
        }
        None => (None, None),
    };
    LEVEL.store(clamp(level), Ordering::Relaxed);
    let mut sink = SINK.write().unwrap_or_else(|e| e.into_inner());
    let fd = file.as_ref().map_or(libc::STDERR_FILENO, |f| f.as_raw_fd());
    // Published before the old file (if any) is closed by the assignment.
    FD.store(fd, Ordering::SeqCst);
    sink.file = file;
    sink.path = path;
    Ok(())
}

/// True when lines go to a file rather than stderr.
pub fn to_file() -> bool {
    SINK.read().map(|s| s.file.is_some()).unwrap_or(false)
}

/// The current level.
pub fn level() -> i32 {
    LEVEL.load(Ordering::Relaxed)
}

/// Sets the level, clamped to 0..=11.
pub fn set_level(level: i32) {
    LEVEL.store(clamp(level), Ordering::Relaxed);
}

/// True when a message at `level` would be written.
#[inline]
pub fn loggable(level: i32) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level
}

/// Raises the level by one (SIGTTIN) and logs `up log level to N`. At the
/// maximum nothing changes and nothing is logged. Returns the new level.
pub fn level_up() -> Option<i32> {
    let new = LEVEL
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
            (l < LOG_PVERB).then_some(l + 1)
        })
        .ok()
        .map(|old| old + 1)?;
    write_line(file!(), line!(), format_args!("up log level to {new}"));
    Some(new)
}

/// Lowers the level by one (SIGTTOU) and logs `down log level to N`. At 0
/// nothing changes and nothing is logged. Returns the new level.
pub fn level_down() -> Option<i32> {
    let new = LEVEL
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
            (l > LOG_EMERG).then_some(l - 1)
        })
        .ok()
        .map(|old| old - 1)?;
    write_line(file!(), line!(), format_args!("down log level to {new}"));
    Some(new)
}

/// Reopens the `-o` file (SIGHUP, after logrotate moved it away); a no-op
/// when logging to stderr. Unlike the C binary, a failed open keeps the old
/// file and says so there, rather than silently losing every later line.
pub fn reopen() -> io::Result<()> {
    let path = match SINK.read() {
        Ok(s) => s.path.clone(),
        Err(e) => e.into_inner().path.clone(),
    };
    let Some(path) = path else {
        return Ok(());
    };
    match open_log(&path).and_then(|f| replace_file(&f)) {
        Ok(()) => Ok(()),
        Err(e) => {
            write_line(
                file!(),
                line!(),
                format_args!(
                    "reopening log file '{}' failed, ignored: {}",
                    path.display(),
                    strerror(&e)
                ),
            );
            Err(e)
        }
    }
}

/// Moves `new` onto the descriptor of the current `-o` file, which keeps
/// its number (see the module docs); `new`'s own descriptor is closed when
/// the caller drops it.
fn replace_file(new: &File) -> io::Result<()> {
    let sink = SINK.write().unwrap_or_else(|e| e.into_inner());
    let Some(old) = &sink.file else {
        return Ok(());
    };
    // SAFETY: both descriptors are open files we own; dup3 atomically
    // closes the old description and keeps close-on-exec set.
    let rc = unsafe { libc::dup3(new.as_raw_fd(), old.as_raw_fd(), libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The C library's text for an OS error (`strerror`), without the
/// ` (os error N)` suffix std adds, so messages match the C binary's.
pub fn strerror(err: &io::Error) -> String {
    let Some(errno) = err.raw_os_error() else {
        return err.to_string();
    };
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: the buffer is valid for its length; the XSI strerror_r (which
    // libc binds on Linux) NUL-terminates on success.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return format!("Unknown error {errno}");
    }
    // SAFETY: NUL-terminated within `buf` on success (see above).
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Writes `msg` plus a newline to stderr in one write, whatever the log
/// destination (the C `log_stderr`, used for command-line messages).
pub fn stderr(msg: &str) {
    let mut line = String::with_capacity(msg.len() + 1);
    line.push_str(msg);
    line.push('\n');
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// A fixed buffer that silently drops what does not fit, at a character
/// boundary, keeping one byte for the newline.
struct LineBuf {
    buf: [u8; MAX_LINE],
    len: usize,
}

impl LineBuf {
    fn new() -> Self {
        LineBuf {
            buf: [0; MAX_LINE],
            len: 0,
        }
    }

    fn finish(&mut self) -> &[u8] {
        // The writer never fills the last byte, so there is room here.
        let end = self.len.min(MAX_LINE - 1);
        self.buf[end] = b'\n';
        &self.buf[..=end]
    }
}

impl fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = (MAX_LINE - 1).saturating_sub(self.len);
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// `[YYYY-MM-DD HH:MM:SS.mmm] ` in local time.
fn write_timestamp(out: &mut LineBuf) {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: valid out-pointer; a null timezone is allowed.
    unsafe { libc::gettimeofday(&mut tv, std::ptr::null_mut()) };
    // SAFETY: an all-zero `tm` is a valid value to be overwritten.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the
    // thread-safe variant.
    let ok = !unsafe { libc::localtime_r(&tv.tv_sec, &mut tm) }.is_null();
    if !ok {
        let _ = out.write_str("[0000-00-00 00:00:00.000] ");
        return;
    }
    let _ = write!(
        out,
        "[{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}] ",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tv.tv_usec / 1000
    );
}

/// Formats and writes one line regardless of the level. The macros check
/// the level first; call this directly only for lines that are always
/// written. `file` may be a path: only its last component is printed.
pub fn write_line(file: &str, line: u32, args: fmt::Arguments<'_>) {
    let mut buf = LineBuf::new();
    write_timestamp(&mut buf);
    let base = file.rsplit('/').next().unwrap_or(file);
    let _ = write!(buf, "{base}:{line} ");
    let _ = buf.write_fmt(args);
    let bytes = buf.finish();
    let sink = SINK.read().unwrap_or_else(|e| e.into_inner());
    // A failed log write has nowhere better to go; dropping it is what the
    // C logger does too.
    let _ = match &sink.file {
        Some(f) => write_once(f, bytes),
        None => write_once(&io::stderr(), bytes),
    };
}

/// One write(2) for the whole line, retried only on EINTR or a short write.
fn write_once<W>(mut w: W, mut bytes: &[u8]) -> io::Result<()>
where
    W: io::Write,
{
    while !bytes.is_empty() {
        match w.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Always written, whatever the level (start and stop lines).
#[macro_export]
macro_rules! loga {
    ($($arg:tt)+) => {
        $crate::log::write_line(file!(), line!(), format_args!($($arg)+))
    };
}

/// Logs at `level` if the current level allows it; the arguments are not
/// evaluated otherwise.
#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        if $crate::log::loggable($level) {
            $crate::log::write_line(file!(), line!(), format_args!($($arg)+));
        }
    };
}

/// Errors: written from level 1 (ALERT) up, as in the C binary.
#[macro_export]
macro_rules! log_error {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::LOG_ALERT, $($arg)+) };
}

/// Warnings: written from level 4 (WARN) up.
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::LOG_WARN, $($arg)+) };
}

/// Written from level 5 (NOTICE, the default) up.
#[macro_export]
macro_rules! log_notice {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::LOG_NOTICE, $($arg)+) };
}

/// Written from level 6 (INFO) up.
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::LOG_INFO, $($arg)+) };
}

/// Written from level 7 (DEBUG) up.
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::LOG_DEBUG, $($arg)+) };
}

/// Written from level 8 (VERB) up.
#[macro_export]
macro_rules! log_verb {
    ($($arg:tt)+) => { $crate::log_at!($crate::log::LOG_VERB, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_buffer_cuts_at_char_boundary_and_keeps_newline() {
        let mut b = LineBuf::new();
        let long = "é".repeat(MAX_LINE);
        let _ = b.write_str(&long);
        let out = b.finish().to_vec();
        assert!(out.len() <= MAX_LINE);
        assert_eq!(out.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&out).expect("cut at a char boundary");
        assert!(text.trim_end().chars().all(|c| c == 'é'));
    }

    #[test]
    fn short_line_untouched() {
        let mut b = LineBuf::new();
        let _ = write!(b, "hello {}", 42);
        assert_eq!(b.finish(), b"hello 42\n");
    }

    #[test]
    fn timestamp_shape() {
        let mut b = LineBuf::new();
        write_timestamp(&mut b);
        let s = std::str::from_utf8(&b.buf[..b.len]).expect("ascii");
        // [2024-01-02 03:04:05.678]
        assert_eq!(s.len(), 26, "{s:?}");
        let bytes = s.as_bytes();
        assert_eq!(bytes[0], b'[');
        assert_eq!(&s[24..], "] ");
        for (i, c) in s[1..24].char_indices() {
            match i {
                4 | 7 => assert_eq!(c, '-'),
                10 => assert_eq!(c, ' '),
                13 | 16 => assert_eq!(c, ':'),
                19 => assert_eq!(c, '.'),
                _ => assert!(c.is_ascii_digit(), "{s:?}"),
            }
        }
    }

    #[test]
    fn strerror_matches_libc_text() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(strerror(&e), "No such file or directory");
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(strerror(&e), "Permission denied");
    }

    #[test]
    fn clamping() {
        assert_eq!(clamp(-3), 0);
        assert_eq!(clamp(99), 11);
        assert_eq!(clamp(7), 7);
    }
}
