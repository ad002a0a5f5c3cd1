//! The proxy context and its one event loop.
//!
//! ```text
//!   client socket --read--> InBuf --parse--> request Msg --route--> server inq
//!        ^                                                            | writev
//!        | writev (outq order)                                        v
//!   client outq <--complete-- reply segs <--parse-- InBuf <--read-- server socket
//! ```
//!
//! Everything lives in [`Context`]: the mio `Poll`, a slab of connections
//! (keys are tokens), a slab of messages, the mbuf pool, the pools and
//! servers, and the request deadlines. Each loop iteration handles the
//! ready sockets, then flushes every connection that got something to send
//! (one `writev` carries many queued messages), then expires deadlines.

use crate::conf::Conf;
use crate::conn::Conn;
use crate::mbuf::MbufPool;
use crate::msg::{Frag, Msg, MsgId};
use crate::server::{Pool, Server};
use crate::stats::{MbufSnap, PoolSnap, ServerSnap, Snapshot, StatsServer};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

/// Process-wide settings from the command line that the engine needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mbuf_size: usize,
    pub stats_addr: String,
    pub stats_port: u16,
    pub stats_interval_ms: u64,
}

pub(crate) const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
/// Most freed messages kept for reuse.
const SPARE_MSGS: usize = 4096;
/// Most events handled per `poll` call.
const EVENTS: usize = 1024;

pub struct Context {
    pub poll: Poll,
    pub conns: Slab<Conn>,
    pub msgs: Slab<Msg>,
    /// Freed messages kept for reuse.
    spare_msgs: Vec<Msg>,
    /// Fragment bookkeeping kept for reuse.
    pub spare_frags: Vec<Box<Frag>>,
    /// Work space of the fragmenting and merging code.
    pub frag_scratch: FragScratch,
    pub mbufs: MbufPool,
    pub pools: Vec<Pool>,
    pub servers: Vec<Server>,
    /// Request deadlines (SPEC 8.2), one queue per pool. Every request of a
    /// pool has the same timeout, so deadlines enter each queue in order:
    /// the front is the earliest. Entries of requests that finished are
    /// skipped when they reach the front (their `seq` no longer matches).
    pub timers: Vec<VecDeque<Deadline>>,
    /// Sequence number of the next message, to tell stale deadlines.
    pub next_seq: u64,
    /// Connections with bytes to write, flushed after the events.
    pub dirty_clients: Vec<usize>,
    pub dirty_servers: Vec<usize>,
    /// Paused clients that drained enough to be read again.
    pub resume: Vec<usize>,
    /// Reused `writev` vector (its pointers are only valid during a flush).
    pub iov: Vec<libc::iovec>,
    /// Scratch space for keys that span two mbufs.
    pub key_scratch: Vec<u8>,
    pub settings: Settings,
    pub now: Instant,
    /// Every connection ever opened (listeners, clients, servers).
    pub total_conns: u64,
    pub stats: Option<StatsServer>,
    last_publish: Instant,
    /// Client connections open, and the most the open-file limit allows
    /// (SPEC 10.2); more are accepted and closed at once.
    pub nclients: usize,
    pub max_clients: usize,
    /// Listeners to accept on again once the time comes (after EMFILE).
    pub accept_retry: Vec<(Instant, usize)>,
}

/// Binds the stats socket and every pool listener, then runs the event loop
/// until a shutdown signal. `Err` carries the reason of a startup failure.
pub fn run(conf: Conf, settings: Settings) -> Result<(), String> {
    let mut ctx = Context::new(conf, settings).map_err(|e| format!("event loop: {e}"))?;
    let s = &ctx.settings;
    let stats = StatsServer::start(
        &s.stats_addr,
        s.stats_port,
        s.stats_interval_ms,
        ctx.snapshot(),
    )?;
    ctx.stats = Some(stats);
    ctx.preconnect();
    ctx.listen()?;
    // Listeners count as connections from the start (SPEC 9.4).
    ctx.publish_stats();
    ctx.poll
        .registry()
        .register(
            &mut mio::unix::SourceFd(&crate::signal::wake_fd()),
            SIGNAL_TOKEN,
            Interest::READABLE,
        )
        .map_err(|e| format!("registering the signal pipe failed: {e}"))?;
    ctx.run_loop()
        .map_err(|e| format!("event loop failed: {e}"))
}

impl Context {
    pub fn new(conf: Conf, settings: Settings) -> io::Result<Context> {
        let mut ctx = Context {
            poll: Poll::new()?,
            conns: Slab::new(),
            msgs: Slab::new(),
            spare_msgs: Vec::new(),
            spare_frags: Vec::new(),
            frag_scratch: FragScratch::default(),
            mbufs: MbufPool::new(settings.mbuf_size),
            pools: Vec::new(),
            servers: Vec::new(),
            timers: Vec::new(),
            next_seq: 0,
            dirty_clients: Vec::new(),
            dirty_servers: Vec::new(),
            resume: Vec::new(),
            iov: Vec::with_capacity(IOV_MAX),
            key_scratch: Vec::new(),
            settings,
            now: Instant::now(),
            total_conns: 0,
            stats: None,
            last_publish: Instant::now(),
            nclients: 0,
            max_clients: usize::MAX,
            accept_retry: Vec::new(),
        };
        for pc in conf.pools {
            ctx.add_pool(pc);
        }
        ctx.max_clients = ctx.client_limit();
        Ok(ctx)
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        let wake_every = Duration::from_millis(self.settings.stats_interval_ms.max(1));
        loop {
            let pending = !(self.resume.is_empty()
                && self.dirty_clients.is_empty()
                && self.dirty_servers.is_empty());
            let next = self
                .timers
                .iter()
                .filter_map(|q| q.front().map(|d| d.at))
                .chain(self.accept_retry.iter().map(|&(t, _)| t))
                .min();
            // Freed mbuf memory goes back to the kernel once a burst is
            // over; until then the loop must wake up to look.
            let trim = self.mbufs.idle_trim(self.now).unwrap_or(wake_every);
            let timeout = match next {
                _ if pending => Duration::ZERO,
                Some(t) => t.saturating_duration_since(Instant::now()).min(wake_every),
                None => wake_every,
            }
            .min(trim);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = Instant::now();
            let mut signalled = false;
            for ev in events.iter() {
                let tok = ev.token();
                if tok == SIGNAL_TOKEN {
                    signalled = true;
                    continue;
                }
                let hup = ev.is_read_closed() || ev.is_error();
                self.handle_event(tok.0, ev.is_readable() || hup, hup, ev.is_writable());
            }
            // Only when the self-pipe fired: draining it is a system call.
            if signalled && crate::signal::handle_pending() {
                return Ok(());
            }
            self.flush_dirty();
            self.expire_timers();
            if !self.accept_retry.is_empty() {
                let now = self.now;
                let (due, later): (Vec<_>, Vec<_>) =
                    self.accept_retry.drain(..).partition(|&(t, _)| t <= now);
                self.accept_retry = later;
                for (_, lk) in due {
                    self.accept(lk);
                }
                self.flush_dirty();
            }
            if self.now.duration_since(self.last_publish) >= wake_every {
                self.publish_stats();
            }
        }
    }

    /// Hands the current counters to the stats thread (once per interval:
    /// the hot path only bumps plain integers).
    pub fn publish_stats(&mut self) {
        self.last_publish = self.now;
        let snap = self.snapshot();
        if let Some(st) = &self.stats {
            st.publish(snap);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let counts = self.mbufs.counts();
        Snapshot {
            pools: self
                .pools
                .iter()
                .map(|p| PoolSnap {
                    name: p.conf.name.clone(),
                    values: p.stats.values(),
                    servers: p
                        .servers
                        .iter()
                        .filter_map(|&s| self.servers.get(s))
                        .map(|s| ServerSnap {
                            name: s.conf.name.clone(),
                            values: s.stats.values(),
                        })
                        .collect(),
                })
                .collect(),
            total_connections: self.total_conns,
            curr_connections: self.conns.len() as u64,
            mbuf: MbufSnap {
                chunk_size: self.settings.mbuf_size,
                allocated: counts.allocated,
                free: counts.free,
            },
        }
    }

    /// `hup`: the peer closed or the socket failed; reads then go on until
    /// the end is seen (a short read is not taken as "nothing more").
    fn handle_event(&mut self, key: usize, readable: bool, hup: bool, writable: bool) {
        match self.conns.get(key) {
            Some(Conn::Listener(_)) => self.accept(key),
            Some(Conn::Client(_)) => {
                if hup {
                    // Kept: a paused client reads this end only later.
                    if let Some(Conn::Client(c)) = self.conns.get_mut(key) {
                        c.hup = true;
                    }
                }
                if readable {
                    self.client_read(key, hup);
                }
                if writable {
                    self.dirty_clients.push(key);
                }
            }
            Some(Conn::Server(s)) => {
                if !s.connected && (readable || writable) {
                    self.server_connect_done(key);
                }
                if readable {
                    self.server_read(key, hup);
                }
                if writable {
                    self.dirty_servers.push(key);
                }
            }
            None => {}
        }
    }

    /// Writes what every touched connection has queued. Flushing a server
    /// can complete requests (noreply) and closing one can fail requests,
    /// both of which dirty clients, so servers go first.
    pub fn flush_dirty(&mut self) {
        let mut rounds = 0;
        while !(self.dirty_servers.is_empty()
            && self.dirty_clients.is_empty()
            && self.resume.is_empty())
            && rounds < 8
        {
            rounds += 1;
            let mut servers = std::mem::take(&mut self.dirty_servers);
            servers.sort_unstable();
            servers.dedup();
            for &k in &servers {
                self.server_flush(k);
            }
            reuse(&mut self.dirty_servers, servers);
            let mut clients = std::mem::take(&mut self.dirty_clients);
            clients.sort_unstable();
            clients.dedup();
            for &k in &clients {
                self.client_flush(k);
            }
            reuse(&mut self.dirty_clients, clients);
            if !self.resume.is_empty() {
                for k in std::mem::take(&mut self.resume) {
                    let hup = matches!(self.conns.get(k), Some(Conn::Client(c)) if c.hup);
                    self.client_read(k, hup);
                }
            }
        }
    }

    /// Closes the server connection of every request past its deadline;
    /// drops the queue entries of requests that finished meanwhile.
    fn expire_timers(&mut self) {
        let now = Instant::now();
        for p in 0..self.timers.len() {
            while let Some(&Deadline { at, mid, seq }) = self.timers[p].front() {
                let live = self
                    .msgs
                    .get(mid)
                    .filter(|m| m.seq == seq && m.deadline.is_some());
                let Some(m) = live else {
                    self.timers[p].pop_front();
                    continue;
                };
                if at > now {
                    break;
                }
                self.timers[p].pop_front();
                match m.server_conn {
                    Some(sk) => self.server_close(sk, libc::ETIMEDOUT, true),
                    None => {
                        if let Some(m) = self.msgs.get_mut(mid) {
                            m.deadline = None;
                        }
                    }
                }
            }
        }
        self.flush_dirty();
    }

    /// The open-file soft limit less 32 and the pools' own descriptors.
    fn client_limit(&self) -> usize {
        // SAFETY: a zeroed rlimit is a valid out-parameter.
        let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0
            || rl.rlim_cur == libc::RLIM_INFINITY
        {
            return usize::MAX;
        }
        let reserved: usize = self
            .pools
            .iter()
            .map(|p| p.conf.server_connections as usize * p.servers.len() + 1)
            .sum();
        (rl.rlim_cur as usize).saturating_sub(32 + reserved).max(1)
    }

    pub fn register(&mut self, key: usize) -> io::Result<()> {
        self.total_conns += 1;
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        match self.conns.get_mut(key) {
            Some(Conn::Listener(l)) => {
                registry.register(l.sock.source(), Token(key), Interest::READABLE)
            }
            Some(Conn::Client(c)) => registry.register(c.sock.source(), Token(key), interest),
            Some(Conn::Server(s)) => registry.register(s.sock.source(), Token(key), interest),
            None => Ok(()),
        }
    }

    pub fn deregister(&mut self, conn: &mut Conn) {
        let registry = self.poll.registry();
        let _ = match conn {
            Conn::Listener(l) => registry.deregister(l.sock.source()),
            Conn::Client(c) => registry.deregister(c.sock.source()),
            Conn::Server(s) => registry.deregister(s.sock.source()),
        };
    }

    pub fn alloc_msg(&mut self, owner: Option<usize>) -> MsgId {
        let mut m = match self.spare_msgs.pop() {
            Some(mut m) => {
                m.owner = owner;
                m
            }
            None => Msg::new(owner),
        };
        self.next_seq += 1;
        m.seq = self.next_seq;
        self.msgs.insert(m)
    }

    /// Releases a message's bytes and forgets it (and its fragments).
    pub fn free_msg(&mut self, mid: MsgId) {
        if !self.msgs.contains(mid) {
            return;
        }
        let mut m = self.msgs.remove(mid);
        self.mbufs.release_segs(&m.req);
        self.mbufs.release_segs(&m.rsp);
        if let Some(f) = m.frag.take() {
            self.free_frag(f);
        }
        // Keep the message (and its vectors' capacity) for the next request:
        // no allocation per request in the steady state.
        if self.spare_msgs.len() < SPARE_MSGS {
            m.reset();
            self.spare_msgs.push(m);
        }
    }

    /// Frees a parent's fragments and keeps its bookkeeping for reuse.
    pub fn free_frag(&mut self, mut f: Box<Frag>) {
        for &c in &f.children {
            self.free_msg(c);
        }
        if self.spare_frags.len() < SPARE_MSGS {
            f.clear();
            self.spare_frags.push(f);
        }
    }

    /// Empty fragment bookkeeping, reused when possible.
    pub fn new_frag(&mut self) -> Box<Frag> {
        self.spare_frags.pop().unwrap_or_default()
    }

    /// Counts of live objects, for leak tests.
    pub fn live_counts(&self) -> (usize, usize, usize) {
        (self.conns.len(), self.msgs.len(), self.mbufs.in_use())
    }
}

/// Vectors the fragment code reuses from request to request.
#[derive(Debug, Default)]
pub struct FragScratch {
    /// Server of each key, in request order.
    pub key_server: Vec<usize>,
    /// Distinct servers, one fragment each, in order of first appearance.
    pub servers: Vec<usize>,
    /// The fragments made, with their servers.
    pub children: Vec<(MsgId, usize)>,
    /// Per fragment: the next reply element to take when merging.
    pub next: Vec<usize>,
}

/// A request's deadline in its pool's queue.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub mid: MsgId,
    pub seq: u64,
}

/// Gives a drained work list's capacity back to `slot` unless new work was
/// queued there meanwhile (no allocation per loop iteration).
fn reuse(slot: &mut Vec<usize>, mut used: Vec<usize>) {
    if slot.is_empty() {
        used.clear();
        *slot = used;
    }
}

/// Most segments gathered into one `writev`.
pub const IOV_MAX: usize = 256;

/// Which bytes of a message a queue sends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A server's in queue: every request's bytes.
    Request,
    /// A client's out queue: replies, up to the first not yet done.
    Reply,
}

/// Fills `iov` (cleared first) with the bytes `queue` has to send, less the
/// first `skip` already written, up to [`IOV_MAX`] segments.
pub fn gather(
    msgs: &Slab<Msg>,
    mbufs: &MbufPool,
    queue: &std::collections::VecDeque<MsgId>,
    mut skip: usize,
    side: Side,
    iov: &mut Vec<libc::iovec>,
) {
    iov.clear();
    for &mid in queue {
        let Some(m) = msgs.get(mid) else {
            continue;
        };
        let segs = match side {
            Side::Request => &m.req,
            Side::Reply if m.done => &m.rsp,
            Side::Reply => return,
        };
        for seg in segs {
            let b = mbufs.bytes(seg);
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            let b = &b[skip..];
            skip = 0;
            iov.push(libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            });
            if iov.len() == IOV_MAX {
                return;
            }
        }
    }
}
