//! Sockets: one small type for TCP and unix streams and listeners, and the
//! system calls the data path uses (a read into one or several mbufs, a
//! `writev` of many segments), with their results normalised to [`IoStep`].

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use std::io;
use std::os::fd::{AsRawFd, RawFd};

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Outcome of one non-blocking read or write.
#[derive(Debug)]
pub enum IoStep {
    /// This many bytes moved.
    Done(usize),
    /// Nothing to do until the next readiness event.
    WouldBlock,
    /// The peer closed its side (reads only).
    Eof,
    Error(io::Error),
}

impl Stream {
    pub fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    pub fn read(&self, buf: &mut [u8]) -> IoStep {
        // recv(2), not read(2): a socket's own call skips the file layer's
        // checks, a few per cent of a small request's cost.
        // SAFETY: buf is a valid writable region of buf.len() bytes.
        retried(true, || unsafe {
            libc::recv(self.fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
        })
    }

    /// Reads once into the slices in order (one `recvmsg`): a reply that
    /// streams in fills several chunks per system call.
    pub fn read_vectored(&self, bufs: &mut [io::IoSliceMut<'_>]) -> IoStep {
        // SAFETY: a zeroed msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSliceMut is guaranteed ABI-compatible with iovec on Unix.
        msg.msg_iov = bufs.as_mut_ptr().cast::<libc::iovec>();
        msg.msg_iovlen = bufs.len() as _;
        // SAFETY: each iovec is a live, exclusively borrowed slice for the
        // whole call; the kernel writes at most its length.
        retried(true, || unsafe { libc::recvmsg(self.fd(), &mut msg, 0) })
    }

    /// Writes the gathered slices with one `writev`. Taking [`IoVecs`]
    /// (which only safe code fills, from live slices) rather than raw
    /// iovecs makes a dangling pointer impossible from safe code.
    pub fn writev(&self, iov: &IoVecs<'_>) -> IoStep {
        let v = iov.as_slice();
        if v.is_empty() {
            return IoStep::Done(0);
        }
        // sendmsg(2), not writev(2), for the reason given in `read`.
        // SAFETY: a zeroed msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = v.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = v.len() as _;
        // SAFETY: every iovec was made from a slice that `iov` borrows for
        // its whole lifetime, so each points to live bytes; the kernel only
        // reads them.
        retried(false, || unsafe {
            libc::sendmsg(self.fd(), &msg, libc::MSG_NOSIGNAL)
        })
    }

    /// The pending error of a non-blocking connect, if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }

    /// Ok once a non-blocking connect has completed.
    pub fn connected(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(|_| ()),
            Stream::Unix(s) => s.peer_addr().map(|_| ()),
        }
    }
}

/// Makes a read or write system call again while a signal interrupts it,
/// and says what its result means (for a read, 0 is the peer's end).
fn retried(reading: bool, mut call: impl FnMut() -> isize) -> IoStep {
    loop {
        let n = call();
        if n > 0 || (n == 0 && !reading) {
            return IoStep::Done(n as usize);
        }
        if n == 0 {
            return IoStep::Eof;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return IoStep::WouldBlock,
            _ => return IoStep::Error(e),
        }
    }
}

/// Reusable storage for a `writev` vector. Its capacity survives from one
/// write to the next (no allocation per write); [`IovBuf::start`] lends it
/// out as an [`IoVecs`] for one gathering.
#[derive(Default)]
pub struct IovBuf {
    // Always empty between gatherings: no pointer outlives its slice.
    spare: Vec<libc::iovec>,
}

impl IovBuf {
    pub fn with_capacity(n: usize) -> IovBuf {
        IovBuf {
            spare: Vec::with_capacity(n),
        }
    }

    /// An empty vector of slices that live at least as long as `'a`.
    pub fn start<'a>(&'a mut self) -> IoVecs<'a> {
        self.spare.clear();
        IoVecs {
            v: &mut self.spare,
            _bytes: std::marker::PhantomData,
        }
    }
}

/// Slices gathered for one `writev`, each borrowed for `'a`.
pub struct IoVecs<'a> {
    v: &'a mut Vec<libc::iovec>,
    _bytes: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> IoVecs<'a> {
    /// Adds `b`; bytes that continue the last entry in memory (consecutive
    /// elements of one reply, split apart by a merge) extend it instead, so
    /// the kernel copies fewer, larger pieces (and past 8 entries it has to
    /// allocate for them).
    pub fn push(&mut self, b: &'a [u8]) {
        if let Some(last) = self.v.last_mut() {
            if (last.iov_base as usize).wrapping_add(last.iov_len) == b.as_ptr() as usize {
                // Both slices are borrowed for 'a and touch: their union is
                // one borrowed range.
                last.iov_len += b.len();
                return;
            }
        }
        self.v.push(libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        });
    }

    pub fn len(&self) -> usize {
        self.v.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    fn as_slice(&self) -> &[libc::iovec] {
        self.v
    }
}

impl Drop for IoVecs<'_> {
    fn drop(&mut self) {
        // The pointers die with the borrow.
        self.v.clear();
    }
}

impl Listener {
    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l) => l,
        }
    }

    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// A non-blocking connect to `addr` with the proxy's socket options (no
/// Nagle delay; `tcpkeepalive:` when `keepalive`).
pub fn tcp_connect(addr: std::net::SocketAddr, keepalive: bool) -> io::Result<Stream> {
    let t = TcpStream::connect(addr)?;
    let _ = t.set_nodelay(true);
    if keepalive {
        let _ = set_int_opt(t.as_raw_fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    }
    Ok(Stream::Tcp(t))
}

pub fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a local int of the stated size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The C library's text for an errno, as nutcracker puts in error replies.
/// The error of a request whose server connection ended with no errno
/// (the backend closed it): replied as `unknown`.
pub const ERR_UNKNOWN: i32 = -1;

pub fn strerror(errno: i32) -> String {
    if errno <= 0 {
        return "unknown".to_string();
    }
    let s = io::Error::from_raw_os_error(errno).to_string();
    // std appends " (os error N)"; the C binary prints the bare text.
    match s.rfind(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Why a listening socket could not be made: the step that failed, the
/// socket's descriptor (for the C binary's `bind on p 6 ...` messages) and
/// the error.
#[derive(Debug)]
pub struct ListenError {
    pub step: &'static str,
    pub fd: RawFd,
    pub err: io::Error,
}

impl ListenError {
    fn last(step: &'static str, fd: RawFd) -> ListenError {
        ListenError {
            step,
            fd,
            err: io::Error::last_os_error(),
        }
    }

    /// The C library's text for the error.
    pub fn text(&self) -> String {
        strerror(self.err.raw_os_error().unwrap_or(0))
    }
}

/// A TCP listener with the options of docs/compatibility.md §12 (SO_REUSEADDR, optional
/// SO_REUSEPORT, the configured backlog).
pub fn tcp_listen(
    addr: std::net::SocketAddr,
    backlog: u32,
    reuseport: bool,
) -> Result<TcpListener, ListenError> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the fd is owned by the listener below.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(ListenError::last("socket", -1));
    }
    // SAFETY: fd was just created and is owned by nobody else; dropping it
    // closes the socket on every early return.
    let std_listener =
        unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).map_err(|err| ListenError {
        step: "set reuseaddr",
        fd,
        err,
    })?;
    if reuseport {
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).map_err(|err| ListenError {
            step: "set reuseport",
            fd,
            err,
        })?;
    }
    let (storage, len) = sockaddr(&addr);
    // SAFETY: storage holds a valid sockaddr of length len.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(ListenError::last("bind", fd));
    }
    let backlog = backlog.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: fd is a bound socket.
    if unsafe { libc::listen(fd, backlog) } != 0 {
        return Err(ListenError::last("listen", fd));
    }
    Ok(TcpListener::from_std(std_listener))
}

pub(crate) fn sockaddr(addr: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_slices_share_one_iovec() {
        let bytes = b"*2\r\n$1\r\na\r\n$1\r\nb\r\n".to_vec();
        let other = b"+OK\r\n".to_vec();
        let mut buf = IovBuf::with_capacity(4);
        let mut iov = buf.start();
        iov.push(&bytes[..4]);
        iov.push(&bytes[4..11]);
        iov.push(&bytes[11..]);
        assert_eq!(iov.len(), 1);
        iov.push(&other);
        iov.push(&bytes[..4]);
        assert_eq!(iov.len(), 3);
        let v = iov.as_slice();
        assert_eq!(v[0].iov_len, bytes.len());
        assert_eq!(v[1].iov_len, other.len());
        assert_eq!(v[2].iov_len, 4);
    }
}
