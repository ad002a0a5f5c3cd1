//! The proxy context and its one event loop.
//!
//! ```text
//!   client socket --read--> InBuf --parse--> request Msg --plan--> server inq
//!        ^                                                            | writev
//!        | writev (outq order)                                        v
//!   client outq <--complete-- reply segs <--parse-- InBuf <--read-- server socket
//! ```
//!
//! Everything lives in [`Context`]: the mio `Poll`, an arena of
//! connections (their ids are the tokens), an arena of messages, the mbuf
//! pool, the [`Topology`] (pools, servers and their tables) and the
//! [`Timers`]. Each loop iteration handles the ready sockets, then gives
//! the turns owed from the last iteration (connections that ended theirs
//! on a budget, and the split and merge work of huge multi-key requests,
//! `split.rs`), then flushes every connection that got something to send
//! (one `writev` carries many queued messages, and a flush is bounded too),
//! then fires the timers that are due, then acts on the signals that
//! arrived. A reload replaces the topology at that point,
//! between two events, so no request ever sees half of one.
//!
//! Where a request goes, file by file: `listener.rs` accepts,
//! `client.rs` reads, parses and writes replies back, `plan.rs` decides
//! (local reply, one server, fragments), `request.rs` carries the decision
//! out and owns the request lifecycle, `server.rs` talks to the backends,
//! `split.rs` splits multi-key requests, `fragment.rs` merges split
//! replies, `reload.rs` swaps the topology,
//! `sentinel.rs` follows Redis Sentinel's master changes.
//! `migrate.rs` moves keys to their new owner when the servers change.

use crate::conf::Conf;
use crate::conn::{Conn, ConnId};
use crate::id::Arena;
use crate::mbuf::MbufPool;
use crate::msg::{Frag, Msg, MsgId, Origin, WriteCursor};
use crate::net::{IoVecs, IovBuf};
use crate::repair::Access;
use crate::stats::{MbufSnap, PoolSnap, ServerSnap, Snapshot, StatsServer};
use crate::timer::{TimerEvent, Timers};
use crate::topology::{ServerId, Topology};
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Process-wide settings from the command line that the engine needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mbuf_size: usize,
    pub stats_addr: String,
    pub stats_port: u16,
    pub stats_interval_ms: u64,
    /// The `-c` file as resolved at start (absolute, so a reload still
    /// finds it after `-d` changed the directory to `/`).
    pub conf_path: Option<PathBuf>,
}

pub(crate) const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
/// The resolver's answers are in (`resolver.rs`).
pub(crate) const RESOLVER_TOKEN: Token = Token(usize::MAX - 2);
/// Most freed messages kept for reuse.
const SPARE_MSGS: usize = 4096;
/// The longest a client's ready replies wait for the rest of its pipeline
/// (see [`waits_for_more`]).
const DEFER_WAIT: Duration = Duration::from_millis(2);
/// Replies past this size are written at once: a large write costs little
/// per byte more than the system call.
const DEFER_MAX_HELD: usize = 64 * 1024;
/// Most events handled per `poll` call.
const EVENTS: usize = 1024;

pub struct Context {
    pub poll: Poll,
    pub conns: Arena<Conn>,
    /// Boxed so that taking a message in and out of the arena (and the
    /// spare list) moves a pointer, not the whole message.
    pub msgs: Arena<Box<Msg>, Msg>,
    /// Freed messages kept for reuse.
    // Boxed on purpose: a spare goes back into `msgs` as the box it is.
    #[allow(clippy::vec_box)]
    spare_msgs: Vec<Box<Msg>>,
    /// Fragment bookkeeping kept for reuse.
    pub spare_frags: Vec<Box<Frag>>,
    /// Work space of the fragmenting and merging code.
    pub frag_scratch: FragScratch,
    pub mbufs: MbufPool,
    pub topo: Topology,
    pub timers: Timers,
    /// Connections with bytes to write, flushed after the events.
    pub dirty_clients: Vec<ConnId>,
    pub dirty_servers: Vec<ConnId>,
    /// Clients whose write is put off (see `flush_dirty`).
    deferred_clients: Vec<ConnId>,
    /// When the first of their waits ends.
    defer_until: Option<Instant>,
    /// Scratch of `flush_stalled`.
    stalled: Vec<ConnId>,
    /// Paused clients that drained enough to be read again.
    pub resume: Vec<ConnId>,
    /// Connections whose last turn ended on its work budget with input
    /// left (client.rs, server.rs): read again in the next iteration,
    /// after every connection with an event had its turn. The loop polls
    /// without waiting while this is not empty: mio is edge-triggered and
    /// would not report bytes already waiting.
    pub ready_again: Vec<ConnId>,
    /// Splits and merges of huge requests left for the next iteration
    /// (`split.rs`): each gets a bounded turn per iteration, after the
    /// connections; the loop polls without waiting while there are some.
    pub work: Vec<crate::split::Job>,
    /// Connections whose last flush stopped on the write budget with the
    /// socket still taking bytes: flushed again in the next iteration
    /// (edge-triggered readiness would not tell again).
    pub write_again: Vec<ConnId>,
    /// Bytes held in incomplete requests, over all clients, and the most
    /// allowed (see `client.rs`, [`crate::client::partial_budget`]).
    pub partial_bytes: u64,
    pub partial_budget: u64,
    /// Reused `writev` vector.
    pub iov: IovBuf,
    /// Scratch space for keys that span two mbufs.
    pub key_scratch: Vec<u8>,
    /// Started by the first connect to a server named by host name.
    pub resolver: Option<crate::resolver::Resolver>,
    /// Server connections waiting for their host name, by ticket.
    pub resolving: HashMap<u64, ConnId>,
    pub settings: Settings,
    pub now: Instant,
    /// Every connection ever opened (listeners, clients, servers).
    pub total_conns: u64,
    pub stats: Option<StatsServer>,
    last_publish: Instant,
    /// Client connections open, and the most the open-file limit allows
    /// (docs/compatibility.md, limits); more are accepted and closed at once.
    pub nclients: usize,
    pub max_clients: usize,
    /// Successful and failed reloads (stats scalars).
    pub reloads: u64,
    pub reload_failures: u64,
    /// When the engine started (INFO's uptime).
    pub started: Instant,
    /// The sentinel clients of the pools with `sentinels:`.
    pub sentinels: crate::sentinel::Sentinels,
    /// How the request being routed uses its keys; anything but a read is
    /// remembered for ejection repair while a server is out (`repair.rs`).
    pub cur_access: Access,
    /// Keys being moved between servers (`migrate.rs`).
    pub moves: crate::migrate::Moves,
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
    ctx.preconnect_all();
    ctx.sentinel_sync();
    ctx.migrate_start_all();
    ctx.listen_all()?;
    // Listeners count as connections from the start.
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
        let now = Instant::now();
        let mut ctx = Context {
            poll: Poll::new()?,
            conns: Arena::new(),
            msgs: Arena::new(),
            spare_msgs: Vec::new(),
            spare_frags: Vec::new(),
            frag_scratch: FragScratch::default(),
            mbufs: MbufPool::new(settings.mbuf_size),
            topo: Topology::new(conf.pools, now),
            timers: Timers::default(),
            dirty_clients: Vec::new(),
            dirty_servers: Vec::new(),
            deferred_clients: Vec::new(),
            defer_until: None,
            stalled: Vec::new(),
            resume: Vec::new(),
            ready_again: Vec::new(),
            work: Vec::new(),
            write_again: Vec::new(),
            partial_bytes: 0,
            partial_budget: crate::client::partial_budget(),
            iov: IovBuf::with_capacity(IOV_MAX),
            key_scratch: Vec::new(),
            resolver: None,
            resolving: HashMap::new(),
            settings,
            now,
            total_conns: 0,
            stats: None,
            last_publish: now,
            nclients: 0,
            max_clients: usize::MAX,
            reloads: 0,
            reload_failures: 0,
            started: now,
            sentinels: Default::default(),
            cur_access: Access::Read,
            moves: crate::migrate::Moves::default(),
        };
        ctx.max_clients = ctx.client_limit();
        Ok(ctx)
    }

    fn run_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        let wake_every = Duration::from_millis(self.settings.stats_interval_ms.max(1));
        let mut again: Vec<ConnId> = Vec::new();
        let mut work: Vec<crate::split::Job> = Vec::new();
        let mut writes: Vec<ConnId> = Vec::new();
        loop {
            // The turns owed from the last iteration, taken before the poll
            // so that a connection queued again in this one waits for the
            // next: every ready connection gets a turn in between.
            std::mem::swap(&mut again, &mut self.ready_again);
            std::mem::swap(&mut work, &mut self.work);
            std::mem::swap(&mut writes, &mut self.write_again);
            let pending = !(again.is_empty()
                && work.is_empty()
                && writes.is_empty()
                && self.resume.is_empty()
                && self.dirty_clients.is_empty()
                && self.dirty_servers.is_empty());
            // Freed mbuf memory goes back to the kernel once a burst is
            // over; until then the loop must wake up to look.
            let trim = self.mbufs.idle_trim(self.now).unwrap_or(wake_every);
            let timeout = match self.timers.next_due() {
                _ if pending => Duration::ZERO,
                Some(t) => t.saturating_duration_since(Instant::now()).min(wake_every),
                None => wake_every,
            }
            .min(trim);
            // A put-off write waits for the next event, or its time.
            let timeout = match self.defer_until {
                Some(t) => timeout.min(t.saturating_duration_since(Instant::now())),
                None => timeout,
            };
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
                if tok == RESOLVER_TOKEN {
                    self.server_resolved();
                    continue;
                }
                let hup = ev.is_read_closed() || ev.is_error();
                self.handle_event(
                    ConnId::from_token(tok),
                    ev.is_readable() || hup,
                    hup,
                    ev.is_writable(),
                );
            }
            self.take_turns(&mut again);
            self.take_work(&mut work);
            for k in writes.drain(..) {
                match self.conns.get(k) {
                    Some(Conn::Client(_)) => self.dirty_client(k),
                    Some(Conn::Server(_)) => self.dirty_server(k),
                    _ => {}
                }
            }
            self.flush_dirty();
            self.defer_until = self.flush_stalled();
            self.fire_timers();
            // Only when the self-pipe fired: draining it is a system call.
            if signalled {
                let sig = crate::signal::handle_pending();
                if sig.shutdown {
                    return Ok(());
                }
                if sig.reload {
                    self.reload();
                    self.flush_dirty();
                }
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
        let topo = &self.topo;
        Snapshot {
            pools: topo
                .order
                .iter()
                .filter_map(|&p| topo.pool(p))
                .map(|p| PoolSnap {
                    name: p.conf.name.clone(),
                    values: p.stats.values(),
                    servers: p
                        .servers
                        .iter()
                        .filter_map(|&s| topo.server(s))
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
            reloads: self.reloads,
            reload_failures: self.reload_failures,
        }
    }

    /// Gives each connection of `again` (queued by the last iteration) its
    /// next turn of reading, then empties the list.
    fn take_turns(&mut self, again: &mut Vec<ConnId>) {
        for &k in again.iter() {
            match self.conns.get_mut(k) {
                Some(Conn::Client(c)) => {
                    c.again = false;
                    let hup = c.hup;
                    self.client_read(k, hup);
                }
                Some(Conn::Server(c)) => {
                    c.again = false;
                    let hup = c.hup;
                    self.server_read(k, hup);
                }
                Some(Conn::Listener(l)) => {
                    l.again = false;
                    self.accept(k);
                }
                // Sentinel connections never run out of budget.
                Some(Conn::Sentinel(_)) | None => {}
            }
        }
        again.clear();
    }

    /// `hup`: the peer closed or the socket failed; reads then go on until
    /// the end is seen (a short read is not taken as "nothing more").
    fn handle_event(&mut self, id: ConnId, readable: bool, hup: bool, writable: bool) {
        match self.conns.get_mut(id) {
            Some(Conn::Listener(_)) => self.accept(id),
            Some(Conn::Client(c)) => {
                if hup {
                    // Kept: a paused client reads this end only later.
                    c.hup = true;
                }
                if readable {
                    self.client_read(id, hup);
                }
                if writable {
                    self.dirty_client(id);
                }
            }
            Some(Conn::Server(s)) => {
                if hup {
                    s.hup = true;
                }
                if !s.connected && (readable || writable) {
                    self.server_connect_done(id);
                }
                if readable {
                    self.server_read(id, hup);
                }
                if writable {
                    self.dirty_server(id);
                }
            }
            Some(Conn::Sentinel(_)) => self.sentinel_event(id, readable, hup, writable),
            // Closed earlier in this batch (the generation tells).
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
            // Each connection is in its list once (its `dirty` flag), so
            // there is nothing to sort or de-duplicate; the flag is cleared
            // before the flush so that a flush that dirties it again queues
            // it for the next round.
            let servers = std::mem::take(&mut self.dirty_servers);
            for &k in &servers {
                if let Some(Conn::Server(s)) = self.conns.get_mut(k) {
                    s.dirty = false;
                    self.server_flush(k);
                }
            }
            reuse(&mut self.dirty_servers, servers);
            let clients = std::mem::take(&mut self.dirty_clients);
            for &k in &clients {
                if let Some(Conn::Client(c)) = self.conns.get_mut(k) {
                    c.dirty = false;
                    let since = c.defer_since.unwrap_or(self.now);
                    if self.now.saturating_duration_since(since) < DEFER_WAIT
                        && c.held < DEFER_MAX_HELD
                        && !c.closing
                        && !c.eof
                        && waits_for_more(&self.msgs, c)
                    {
                        c.defer_since = Some(since);
                        queue_once(&mut c.deferred, &mut self.deferred_clients, k);
                        continue;
                    }
                    c.defer_since = None;
                    self.client_flush(k);
                }
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

    /// Writes the put-off clients whose wait is over ([`DEFER_WAIT`]); the
    /// others stay put off. Returns when the next wait ends, if any does.
    fn flush_stalled(&mut self) -> Option<Instant> {
        if self.deferred_clients.is_empty() {
            return None;
        }
        let mut list = std::mem::take(&mut self.deferred_clients);
        let mut stalled = std::mem::take(&mut self.stalled);
        let now = self.now;
        let mut next: Option<Instant> = None;
        let conns = &mut self.conns;
        list.retain(|&k| {
            let Some(Conn::Client(c)) = conns.get_mut(k) else {
                return false;
            };
            match c.defer_since {
                Some(t) if now.saturating_duration_since(t) < DEFER_WAIT => {
                    let end = t + DEFER_WAIT;
                    next = Some(next.map_or(end, |n| n.min(end)));
                    true
                }
                Some(_) => {
                    c.deferred = false;
                    c.defer_since = None;
                    stalled.push(k);
                    false
                }
                // Written meanwhile.
                None => {
                    c.deferred = false;
                    false
                }
            }
        });
        self.deferred_clients = list;
        for &k in &stalled {
            self.client_flush(k);
        }
        stalled.clear();
        self.stalled = stalled;
        self.flush_dirty();
        next
    }

    /// Queues client `ck` for [`flush_dirty`](Self::flush_dirty), once.
    pub fn dirty_client(&mut self, ck: ConnId) {
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            queue_once(&mut c.dirty, &mut self.dirty_clients, ck);
        }
    }

    /// Queues server connection `sk` for [`flush_dirty`](Self::flush_dirty), once.
    pub fn dirty_server(&mut self, sk: ConnId) {
        if let Some(Conn::Server(s)) = self.conns.get_mut(sk) {
            queue_once(&mut s.dirty, &mut self.dirty_servers, sk);
        }
    }

    /// Acts on every timer that is due.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        let mut fired = false;
        while let Some(ev) = self.timers.pop_due(now) {
            fired = true;
            match ev {
                TimerEvent::Deadline(mid, at) => self.deadline_passed(mid, at),
                TimerEvent::ServerRetry(sid) => self.probe_start(sid),
                TimerEvent::RepairNext(sid) => self.repair_next(sid),
                TimerEvent::AcceptRetry(lid) => {
                    if let Some(Conn::Listener(l)) = self.conns.get_mut(lid) {
                        l.retry_pending = false;
                    }
                    self.accept(lid);
                }
                TimerEvent::Sentinel(pid, at) => self.sentinel_tick(pid, at),
                TimerEvent::MigrateTick(pid) => self.migrate_tick(pid),
            }
        }
        if fired {
            self.flush_dirty();
        }
    }

    /// A request's deadline passed: its server connection is closed, which
    /// fails everything on it (docs/compatibility.md, timeouts). An entry
    /// for a request that finished, or whose deadline moved, is dropped.
    fn deadline_passed(&mut self, mid: MsgId, at: Instant) {
        let Some(m) = self.msgs.get_mut(mid) else {
            return;
        };
        if m.deadline != Some(at) {
            return;
        }
        match m.server_conn {
            Some(sk) => self.server_close(sk, libc::ETIMEDOUT, true),
            None => m.deadline = None,
        }
    }

    /// Rebuilds a pool's table and schedules the next retry, if a server is
    /// still ejected.
    pub fn rebuild_pool(&mut self, pid: crate::topology::PoolId) {
        let _ = self.topo.rebuild(pid, self.now);
    }

    /// The open-file soft limit less 32 and the pools' own descriptors.
    pub fn client_limit(&self) -> usize {
        // SAFETY: a zeroed rlimit is a valid out-parameter.
        let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0
            || rl.rlim_cur == libc::RLIM_INFINITY
        {
            return usize::MAX;
        }
        let reserved = self.topo.reserved_fds();
        (rl.rlim_cur as usize).saturating_sub(32 + reserved).max(1)
    }

    pub fn register(&mut self, id: ConnId) -> io::Result<()> {
        self.total_conns += 1;
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        let tok = id.token();
        match self.conns.get_mut(id) {
            Some(Conn::Listener(l)) => registry.register(l.sock.source(), tok, Interest::READABLE),
            Some(Conn::Client(c)) => registry.register(c.sock.source(), tok, interest),
            // One waiting for its host name is registered once it has a
            // socket (`server_resolved`).
            Some(Conn::Server(s)) => match s.sock.as_mut() {
                Some(sock) => registry.register(sock.source(), tok, interest),
                None => Ok(()),
            },
            Some(Conn::Sentinel(s)) => registry.register(s.sock.source(), tok, interest),
            None => Ok(()),
        }
    }

    pub fn deregister(&mut self, conn: &mut Conn) {
        let registry = self.poll.registry();
        let _ = match conn {
            Conn::Listener(l) => registry.deregister(l.sock.source()),
            Conn::Client(c) => registry.deregister(c.sock.source()),
            Conn::Server(s) => match s.sock.as_mut() {
                Some(sock) => registry.deregister(sock.source()),
                None => Ok(()),
            },
            Conn::Sentinel(s) => registry.deregister(s.sock.source()),
        };
    }

    pub fn alloc_msg(&mut self, origin: Origin) -> MsgId {
        let mut m = self.spare_msgs.pop().unwrap_or_default();
        m.origin = origin;
        m.generation = self.topo.generation;
        self.msgs.insert(m)
    }

    /// Releases a message's bytes and forgets it (and its fragments).
    pub fn free_msg(&mut self, mid: MsgId) {
        let Some(mut m) = self.msgs.remove(mid) else {
            return;
        };
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

/// Whether a client's write is better put off: the front of its queue is
/// ready but a later request is not. A pipelining client's replies come
/// from several servers, often in successive iterations; writing each
/// ready prefix costs a `writev` per piece, the dearest system call of the
/// loop (it runs the loopback TCP path of the receiver too). Putting the
/// write off until the rest of the batch is in ([`DEFER_WAIT`] at most)
/// lets it go out in one piece; a client with nothing outstanding behind
/// its ready replies (every depth-1 client) is written at once.
fn waits_for_more(msgs: &Arena<Box<Msg>, Msg>, c: &crate::conn::ClientConn) -> bool {
    let done = |mid: &MsgId| msgs.get(*mid).is_some_and(|m| m.done);
    // The scan stops at the first reply not in: as far as `gather` goes.
    c.outq.front().is_some_and(done) && !c.outq.iter().all(done)
}

/// Vectors the fragment code reuses from request to request.
#[derive(Debug, Default)]
pub struct FragScratch {
    /// The fragments being sent, with their servers.
    pub children: Vec<(MsgId, ServerId)>,
}

/// Puts `id` on `list` unless `queued` (its flag for that list) says it is
/// there already: each connection is on a work list at most once.
pub fn queue_once(queued: &mut bool, list: &mut Vec<ConnId>, id: ConnId) {
    if !*queued {
        *queued = true;
        list.push(id);
    }
}

/// Gives a drained work list's capacity back to `slot` unless new work was
/// queued there meanwhile (no allocation per loop iteration).
fn reuse(slot: &mut Vec<ConnId>, mut used: Vec<ConnId>) {
    if slot.is_empty() {
        used.clear();
        *slot = used;
    }
}

/// Most segments gathered into one `writev`.
pub const IOV_MAX: usize = 256;
/// Bytes and `writev` calls of one connection's flush per iteration: a
/// reader as fast as the proxy (loopback) would otherwise keep an 80 MB
/// reply, or a million-segment one, writing for tens of milliseconds.
/// Loopback takes a few MB per millisecond, and a `writev` of
/// [`IOV_MAX`] small segments a few microseconds: either bound is a
/// fraction of a millisecond. The rest goes in the next iteration
/// (`write_again`).
pub const WRITE_BUDGET: usize = 2 * 1024 * 1024;
pub const WRITE_CALLS: usize = 64;

/// Which bytes of a message a queue sends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A server's in queue: every request's bytes.
    Request,
    /// A client's out queue: replies, up to the first not yet done.
    Reply,
}

/// Fills `iov` with the bytes `queue` has to send, the front message from
/// `sent` on (what is already written of it), up to [`IOV_MAX`] segments.
/// The cost is the segments gathered, never the ones already written.
pub fn gather<'a>(
    msgs: &'a Arena<Box<Msg>, Msg>,
    mbufs: &'a MbufPool,
    queue: &VecDeque<MsgId>,
    sent: WriteCursor,
    side: Side,
    iov: &mut IoVecs<'a>,
) {
    for (qi, &mid) in queue.iter().enumerate() {
        let Some(m) = msgs.get(mid) else {
            continue;
        };
        let segs = match side {
            Side::Request => &m.req,
            Side::Reply if m.done => &m.rsp,
            Side::Reply => return,
        };
        let (first, mut skip) = if qi == 0 {
            (sent.seg, sent.off)
        } else {
            (0, 0)
        };
        for seg in segs.get(first..).unwrap_or_default() {
            let b = mbufs.bytes(seg);
            let b = b.get(skip.min(b.len())..).unwrap_or_default();
            skip = 0;
            if b.is_empty() {
                continue;
            }
            iov.push(b);
            if iov.len() == IOV_MAX {
                return;
            }
        }
    }
}
