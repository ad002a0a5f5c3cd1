//! Redis Sentinel: pools with `sentinels:` follow their masters as the
//! sentinels move them (the key twemproxy documented and never shipped).
//!
//! In such a pool a server's *name* is the master name the sentinels know,
//! and its `servers:` address is only where to go until a sentinel has
//! answered. Placement is by name, so keys never move when a master does;
//! only the address behind the name changes ([`crate::topology::Server`]'s
//! `master`, which `server.rs` connects to).
//!
//! Each such pool has one [`Client`] here, talking to one sentinel at a
//! time over two connections that live in the engine's loop like any other
//! (`Conn::Sentinel`, ids as tokens, no blocking call):
//!
//! ```text
//!   subscribe conn:  [AUTH] SUBSCRIBE +switch-master ──► confirmed ──► live
//!                    ... then only pushes: message +switch-master
//!                        "<name> <old-ip> <old-port> <new-ip> <new-port>"
//!   query conn:      [AUTH] SENTINEL get-master-addr-by-name <name>, one per
//!                    server, sent once the subscription is confirmed, after
//!                    every push (to confirm it) and every REFRESH
//! ```
//!
//! Querying only after the subscription is confirmed leaves no gap in which
//! a switch could go unseen; querying again after each push makes the last
//! answer win if a push and an older answer cross. A new address flows as:
//! `sentinel_master` sets the server's `master`, lifts an ejection (the new
//! master is another machine), and drains the server's connections
//! (`drain_server`): what was written to the old master finishes or fails
//! as any request does, and the next request opens a connection to the new
//! address (AUTH and SELECT included, as on any new server connection).
//!
//! Failures: a sentinel that refuses the connection, closes it, answers
//! AUTH or SUBSCRIBE with an error, sends something that is not RESP, or
//! does not answer within a timeout is dropped and the next one is tried at
//! once; when every sentinel failed in a row the client waits (a timer, with
//! a doubling back-off) and keeps the last known addresses. Whatever a
//! sentinel says is checked: a bad address, an unknown name or a garbage
//! push is logged and ignored. Logs name state changes (following a
//! sentinel, lost it, none reachable), not each attempt.
//!
//! A reload that changes a pool's `sentinels:` or `sentinel_auth:` restarts
//! its client ([`Context::sentinel_sync`]); one that removes them sends the
//! servers back to their configured addresses.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::conf::{SentinelConf, ServerAddr};
use crate::conn::{Conn, ConnId};
use crate::core::Context;
use crate::net::{IoStep, Stream};
use crate::proto::redis::response::{Progress, RspKind, RspParser};
use crate::timer::TimerEvent;
use crate::topology::PoolId;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest wait for a sentinel to accept, authenticate and subscribe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a live sentinel is asked again for every master; a refresh
/// still unanswered at the next one means the sentinel is gone.
const REFRESH: Duration = Duration::from_secs(10);
/// Wait after every sentinel failed in a row, doubled up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest reply accepted from a sentinel (theirs are a few dozen bytes).
const MAX_REPLY: usize = 64 * 1024;
/// Bytes read per system call.
const READ_CHUNK: usize = 4096;
const CHANNEL: &[u8] = b"+switch-master";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Commands and their replies.
    Query,
    /// Subscribed to `+switch-master`: pushes only, once confirmed.
    Subscribe,
}

/// The reply a sentinel connection waits for next, in order.
#[derive(Debug)]
enum Expect {
    Auth,
    Subscribe,
    Master(String),
}

/// One connection to a sentinel, kept in the context's arena.
pub struct SentinelConn {
    pub sock: Stream,
    pub pool: PoolId,
    pub role: Role,
    pub connected: bool,
    /// Bytes read and not yet consumed; `rbase` is the stream offset of
    /// its first byte, `parsed` of the first byte the parser has not seen.
    rbuf: Vec<u8>,
    rbase: u64,
    parsed: u64,
    parser: RspParser,
    /// Commands not yet written.
    wbuf: Vec<u8>,
    expect: VecDeque<Expect>,
}

impl SentinelConn {
    fn new(sock: Stream, pool: PoolId, role: Role) -> SentinelConn {
        SentinelConn {
            sock,
            pool,
            role,
            connected: false,
            rbuf: Vec::new(),
            rbase: 0,
            parsed: 0,
            parser: RspParser::new(),
            wbuf: Vec::new(),
            expect: VecDeque::new(),
        }
    }

    fn send(&mut self, args: &[&[u8]], expect: Expect) {
        crate::proto::redis::write_command(&mut self.wbuf, args);
        self.expect.push_back(expect);
    }
}

/// A pool's sentinel client.
struct Client {
    sentinels: Vec<SentinelConf>,
    auth: Option<String>,
    /// The sentinel in use or being tried.
    current: usize,
    /// Sentinels that failed since one was last live.
    tried: usize,
    query: Option<ConnId>,
    sub: Option<ConnId>,
    /// The subscription is confirmed.
    live: bool,
    /// Logged already that no sentinel is reachable.
    down_logged: bool,
    backoff: Duration,
    /// The one timer entry this client acts on (others are stale).
    tick: Option<Instant>,
    /// Master names a sentinel said it does not know (logged once each).
    unknown: HashSet<String>,
    /// The resolver's ticket while the current sentinel's host name is
    /// being looked up (off the loop, `resolver.rs`).
    resolving: Option<u64>,
}

/// Every pool's sentinel client, by pool.
#[derive(Default)]
pub struct Sentinels {
    clients: HashMap<PoolId, Client>,
    /// Host name lookups under way, by ticket.
    resolving: HashMap<u64, PoolId>,
}

impl Sentinels {
    /// Pools with a running client (for tests and leak checks).
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// A reply, decoded as far as sentinel replies need.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Error(String),
    /// Status, integer or bulk: its text (`None` for a null bulk).
    Value(Option<Vec<u8>>),
    /// The elements that are strings (`None` for others); `None` for a null
    /// array.
    Array(Option<Vec<Option<Vec<u8>>>>),
}

impl Context {
    /// Makes the running sentinel clients match the configured pools: at
    /// start, and after every reload. A client whose pool went away, or
    /// whose `sentinels:` or `sentinel_auth:` changed, is stopped (and
    /// started again in the second case); a pool that lost its sentinels
    /// goes back to its configured addresses.
    pub fn sentinel_sync(&mut self) {
        let running: Vec<PoolId> = self.sentinels.clients.keys().copied().collect();
        for pid in running {
            let live_pool = self.topo.order.contains(&pid);
            let want = self
                .topo
                .pool(pid)
                .filter(|p| live_pool && !p.conf.sentinels.is_empty())
                .map(|p| (&p.conf.sentinels, &p.conf.sentinel_auth));
            let same = match (want, self.sentinels.clients.get(&pid)) {
                (Some((s, a)), Some(c)) => c.sentinels == *s && c.auth == *a,
                _ => false,
            };
            if same {
                continue;
            }
            let dropped = want.is_none();
            self.sentinel_stop(pid);
            if dropped && live_pool {
                self.sentinel_forget_masters(pid);
            }
        }
        for pid in self.topo.order.clone() {
            if self.sentinels.clients.contains_key(&pid) {
                continue;
            }
            let Some(p) = self.topo.pool(pid) else {
                continue;
            };
            if p.conf.sentinels.is_empty() {
                continue;
            }
            let client = Client {
                sentinels: p.conf.sentinels.clone(),
                auth: p.conf.sentinel_auth.clone(),
                current: 0,
                tried: 0,
                query: None,
                sub: None,
                live: false,
                down_logged: false,
                backoff: BACKOFF_MIN,
                tick: None,
                unknown: HashSet::new(),
                resolving: None,
            };
            self.sentinels.clients.insert(pid, client);
            self.sentinel_connect(pid);
        }
    }

    /// Stops a pool's client and closes its connections.
    fn sentinel_stop(&mut self, pid: PoolId) {
        let Some(c) = self.sentinels.clients.remove(&pid) else {
            return;
        };
        for k in [c.query, c.sub].into_iter().flatten() {
            self.sentinel_close(k);
        }
        if let Some(p) = self.topo.pool_mut(pid) {
            p.stats.sentinel_connected = 0;
        }
    }

    /// The pool no longer uses sentinels: every server goes back to its
    /// configured address.
    fn sentinel_forget_masters(&mut self, pid: PoolId) {
        let Some(p) = self.topo.pool(pid) else {
            return;
        };
        for s in p.servers.clone() {
            let Some(srv) = self.topo.server_mut(s) else {
                continue;
            };
            let Some(master) = srv.master.take() else {
                continue;
            };
            if master != srv.conf.addr {
                self.drain_server(s, 0);
            }
        }
        self.preconnect(pid);
    }

    fn sentinel_close(&mut self, k: ConnId) {
        if !matches!(self.conns.get(k), Some(Conn::Sentinel(_))) {
            return;
        }
        if let Some(mut conn) = self.conns.remove(k) {
            self.deregister(&mut conn);
        }
    }

    /// Opens both connections to the current sentinel of pool `pid`.
    fn sentinel_connect(&mut self, pid: PoolId) {
        let Some(c) = self.sentinels.clients.get(&pid) else {
            return;
        };
        let Some(sc) = c.sentinels.get(c.current).cloned() else {
            return;
        };
        let addr = match sc.host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, sc.port),
            Err(_) => {
                match self.resolve(&sc.host, sc.port) {
                    Ok(ticket) => {
                        if let Some(c) = self.sentinels.clients.get_mut(&pid) {
                            c.resolving = Some(ticket);
                        }
                        self.sentinels.resolving.insert(ticket, pid);
                        // A lookup that hangs fails like a connect.
                        self.sentinel_schedule(pid, CONNECT_TIMEOUT);
                    }
                    Err(why) => {
                        self.sentinel_failed(pid, &format!("address resolution failed: {why}"));
                    }
                }
                return;
            }
        };
        self.sentinel_open(pid, addr);
    }

    /// The resolver answered for a sentinel's host name: connect, or try
    /// the next sentinel. An answer the client no longer waits for (it
    /// timed out, or the pool went in a reload) is dropped.
    pub fn sentinel_resolved(&mut self, ticket: u64, answer: Result<SocketAddr, String>) {
        let Some(pid) = self.sentinels.resolving.remove(&ticket) else {
            return;
        };
        let Some(c) = self.sentinels.clients.get_mut(&pid) else {
            return;
        };
        if c.resolving != Some(ticket) {
            return;
        }
        c.resolving = None;
        c.tick = None;
        match answer {
            Ok(addr) => self.sentinel_open(pid, addr),
            Err(why) => self.sentinel_failed(pid, &format!("address resolution failed: {why}")),
        }
    }

    /// Opens both connections to the current sentinel of pool `pid`, at
    /// `addr`.
    fn sentinel_open(&mut self, pid: PoolId, addr: SocketAddr) {
        let Some(c) = self.sentinels.clients.get(&pid) else {
            return;
        };
        let auth = c.auth.clone();
        for role in [Role::Query, Role::Subscribe] {
            let sock = match crate::net::tcp_connect(addr, false) {
                Ok(sock) => sock,
                Err(e) => {
                    self.sentinel_failed(pid, &e.to_string());
                    return;
                }
            };
            let mut conn = SentinelConn::new(sock, pid, role);
            if let Some(pw) = &auth {
                conn.send(&[b"AUTH", pw.as_bytes()], Expect::Auth);
            }
            if role == Role::Subscribe {
                conn.send(&[b"SUBSCRIBE", CHANNEL], Expect::Subscribe);
            }
            let k = self.conns.insert(Conn::Sentinel(conn));
            if let Some(c) = self.sentinels.clients.get_mut(&pid) {
                match role {
                    Role::Query => c.query = Some(k),
                    Role::Subscribe => c.sub = Some(k),
                }
            }
            if let Err(e) = self.register(k) {
                self.sentinel_failed(pid, &e.to_string());
                return;
            }
        }
        self.sentinel_schedule(pid, CONNECT_TIMEOUT);
    }

    fn sentinel_schedule(&mut self, pid: PoolId, after: Duration) {
        let at = self.now + after;
        if let Some(c) = self.sentinels.clients.get_mut(&pid) {
            c.tick = Some(at);
            self.timers.schedule(at, TimerEvent::Sentinel(pid, at));
        }
    }

    /// The current sentinel failed: close its connections and try the next
    /// one, or wait when all of them failed in a row.
    fn sentinel_failed(&mut self, pid: PoolId, why: &str) {
        let pname = self
            .topo
            .pool(pid)
            .map(|p| p.conf.name.clone())
            .unwrap_or_default();
        let Some(c) = self.sentinels.clients.get_mut(&pid) else {
            return;
        };
        let conns = [c.query.take(), c.sub.take()];
        c.resolving = None;
        let was_live = std::mem::replace(&mut c.live, false);
        let name = c
            .sentinels
            .get(c.current)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let n = c.sentinels.len().max(1);
        c.current = (c.current + 1) % n;
        c.tried += 1;
        c.tick = None;
        let exhausted = c.tried >= n;
        if exhausted {
            c.tried = 0;
        }
        // Said once per outage, not at every round of attempts.
        let first_down = exhausted && !c.down_logged;
        if exhausted {
            c.down_logged = true;
        }
        let wait = c.backoff;
        if exhausted {
            c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
        }
        for k in conns.into_iter().flatten() {
            self.sentinel_close(k);
        }
        if let Some(p) = self.topo.pool_mut(pid) {
            p.stats.sentinel_connected = 0;
        }
        if was_live {
            crate::log_warn!("pool '{}': lost sentinel {}: {}", pname, name, why);
        } else {
            crate::log_debug!("pool '{}': sentinel {} failed: {}", pname, name, why);
        }
        if !exhausted {
            self.sentinel_connect(pid);
            return;
        }
        if first_down {
            crate::log_warn!(
                "pool '{}': no sentinel reachable; keeping the last known master addresses and retrying",
                pname
            );
        }
        self.sentinel_schedule(pid, wait);
    }

    /// A sentinel timer came due: connect (after a back-off), give up on a
    /// sentinel that is too slow, or refresh the masters of a live one.
    pub fn sentinel_tick(&mut self, pid: PoolId, at: Instant) {
        let Some(c) = self.sentinels.clients.get_mut(&pid) else {
            return;
        };
        if c.tick != Some(at) {
            return;
        }
        c.tick = None;
        let (query, live) = (c.query, c.live);
        if c.resolving.is_some() {
            self.sentinel_failed(pid, "timed out resolving its host name");
            return;
        }
        let Some(q) = query else {
            self.sentinel_connect(pid);
            return;
        };
        if !live {
            self.sentinel_failed(pid, "timed out connecting");
            return;
        }
        let unanswered =
            matches!(self.conns.get(q), Some(Conn::Sentinel(s)) if !s.expect.is_empty());
        if unanswered {
            self.sentinel_failed(pid, "no reply to the last queries");
            return;
        }
        self.sentinel_query(pid);
        self.sentinel_schedule(pid, REFRESH);
    }

    /// Asks the current sentinel where every server's master is.
    fn sentinel_query(&mut self, pid: PoolId) {
        let (Some(c), Some(p)) = (self.sentinels.clients.get(&pid), self.topo.pool(pid)) else {
            return;
        };
        let Some(q) = c.query else {
            return;
        };
        let names: Vec<String> = p
            .servers
            .iter()
            .filter_map(|&s| self.topo.server(s))
            .map(|s| s.conf.name.clone())
            .collect();
        if let Some(Conn::Sentinel(conn)) = self.conns.get_mut(q) {
            for name in names {
                let args: [&[u8]; 3] = [b"SENTINEL", b"get-master-addr-by-name", name.as_bytes()];
                crate::proto::redis::write_command(&mut conn.wbuf, &args);
                conn.expect.push_back(Expect::Master(name));
            }
        }
        self.sentinel_flush(q);
    }

    /// Readiness on a sentinel connection.
    pub fn sentinel_event(&mut self, k: ConnId, readable: bool, hup: bool, writable: bool) {
        let Some(Conn::Sentinel(c)) = self.conns.get(k) else {
            return;
        };
        let pid = c.pool;
        if !c.connected {
            let err = match c.sock.take_error() {
                Ok(Some(e)) | Err(e) => Some(e.to_string()),
                Ok(None) => match c.sock.connected() {
                    Ok(()) => None,
                    Err(e) if e.kind() == std::io::ErrorKind::NotConnected && !hup => return,
                    Err(e) => Some(e.to_string()),
                },
            };
            if let Some(why) = err {
                self.sentinel_failed(pid, &why);
                return;
            }
            if let Some(Conn::Sentinel(c)) = self.conns.get_mut(k) {
                c.connected = true;
            }
            self.sentinel_flush(k);
        } else if writable {
            self.sentinel_flush(k);
        }
        if readable || hup {
            self.sentinel_read(k);
        }
    }

    fn sentinel_flush(&mut self, k: ConnId) {
        loop {
            let Some(Conn::Sentinel(c)) = self.conns.get(k) else {
                return;
            };
            if !c.connected || c.wbuf.is_empty() {
                return;
            }
            let pid = c.pool;
            let mut iov = self.iov.start();
            iov.push(&c.wbuf);
            let step = c.sock.writev(&iov);
            drop(iov);
            match step {
                IoStep::Done(n) => {
                    if let Some(Conn::Sentinel(c)) = self.conns.get_mut(k) {
                        c.wbuf.drain(..n.min(c.wbuf.len()));
                    }
                }
                IoStep::WouldBlock | IoStep::Eof => return,
                IoStep::Error(e) => {
                    self.sentinel_failed(pid, &e.to_string());
                    return;
                }
            }
        }
    }

    fn sentinel_read(&mut self, k: ConnId) {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let Some(Conn::Sentinel(c)) = self.conns.get_mut(k) else {
                return;
            };
            let pid = c.pool;
            match c.sock.read(&mut chunk) {
                IoStep::Done(n) => {
                    c.rbuf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                }
                IoStep::WouldBlock => return,
                IoStep::Eof => {
                    self.sentinel_failed(pid, "the sentinel closed the connection");
                    return;
                }
                IoStep::Error(e) => {
                    self.sentinel_failed(pid, &e.to_string());
                    return;
                }
            }
            if !self.sentinel_parse(k) {
                return;
            }
        }
    }

    /// Handles every whole reply read so far; false when the connection is
    /// gone.
    fn sentinel_parse(&mut self, k: ConnId) -> bool {
        loop {
            let Some(Conn::Sentinel(c)) = self.conns.get_mut(k) else {
                return false;
            };
            let pid = c.pool;
            let from = usize::try_from(c.parsed - c.rbase).unwrap_or(usize::MAX);
            let data = c.rbuf.get(from..).unwrap_or_default();
            if data.is_empty() {
                return true;
            }
            let (n, prog) = c.parser.feed(data, c.parsed);
            c.parsed += n as u64;
            match prog {
                Progress::Incomplete => {
                    if c.rbuf.len() > MAX_REPLY {
                        self.sentinel_failed(pid, "reply too long");
                        return false;
                    }
                    return true;
                }
                // Sentinel connections speak RESP2: a push frame is as
                // foreign as garbage.
                Progress::Error | Progress::Push(_) => {
                    self.sentinel_failed(pid, "the sentinel sent something that is not RESP");
                    return false;
                }
                Progress::Complete(end) => {
                    let len = usize::try_from(end - c.rbase).unwrap_or(usize::MAX);
                    let reply = decode(&c.parser, c.rbuf.get(..len).unwrap_or_default(), c.rbase);
                    c.rbuf.drain(..len.min(c.rbuf.len()));
                    c.rbase = end;
                    c.parsed = end;
                    c.parser.reset();
                    let expect = c.expect.pop_front();
                    let role = c.role;
                    self.sentinel_reply(pid, role, expect, reply);
                }
            }
        }
    }

    fn sentinel_reply(&mut self, pid: PoolId, role: Role, expect: Option<Expect>, reply: Reply) {
        let pname = self
            .topo
            .pool(pid)
            .map(|p| p.conf.name.clone())
            .unwrap_or_default();
        match expect {
            Some(Expect::Auth) => {
                if let Reply::Error(e) = reply {
                    self.sentinel_failed(pid, &format!("AUTH refused: {e}"));
                }
            }
            Some(Expect::Subscribe) => {
                let ok = matches!(&reply, Reply::Array(Some(v))
                    if v.first() == Some(&Some(b"subscribe".to_vec())));
                if !ok {
                    self.sentinel_failed(pid, &format!("SUBSCRIBE refused: {reply:?}"));
                    return;
                }
                self.sentinel_live(pid);
            }
            Some(Expect::Master(name)) => match master_addr(&reply) {
                Ok(Some((host, port))) => self.sentinel_master(pid, &name, host, port),
                Ok(None) => {
                    let first = self
                        .sentinels
                        .clients
                        .get_mut(&pid)
                        .is_some_and(|c| c.unknown.insert(name.clone()));
                    if first {
                        crate::log_warn!(
                            "pool '{}': the sentinel does not know master '{}'; keeping its address",
                            pname,
                            name
                        );
                    }
                }
                Err(why) => {
                    crate::log_warn!(
                        "pool '{}': ignored the sentinel's answer for master '{}': {}",
                        pname,
                        name,
                        why
                    );
                }
            },
            None if role == Role::Subscribe => match switch_master(&reply) {
                Some((name, host, port)) => {
                    let known = self.topo.pool(pid).is_some_and(|p| {
                        p.servers
                            .iter()
                            .any(|&s| self.topo.server(s).is_some_and(|v| v.conf.name == name))
                    });
                    if !known {
                        crate::log_info!(
                            "pool '{}': +switch-master for unknown master '{}' ignored",
                            pname,
                            name
                        );
                        return;
                    }
                    self.sentinel_master(pid, &name, host, port);
                    // Confirm: if an older answer crosses this push, the
                    // reply to this query comes last and wins.
                    self.sentinel_query(pid);
                }
                None => {
                    crate::log_info!("pool '{}': ignored a sentinel message: {:?}", pname, reply);
                }
            },
            None => {
                crate::log_info!("pool '{}': ignored an unexpected sentinel reply", pname);
            }
        }
    }

    /// The subscription is confirmed: the sentinel is in use.
    fn sentinel_live(&mut self, pid: PoolId) {
        let Some(c) = self.sentinels.clients.get_mut(&pid) else {
            return;
        };
        c.live = true;
        c.tried = 0;
        c.down_logged = false;
        c.backoff = BACKOFF_MIN;
        let name = c
            .sentinels
            .get(c.current)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let pname = match self.topo.pool_mut(pid) {
            Some(p) => {
                p.stats.sentinel_connected = 1;
                p.conf.name.clone()
            }
            None => String::new(),
        };
        crate::log_notice!(
            "pool '{}': following masters through sentinel {}",
            pname,
            name
        );
        self.sentinel_query(pid);
        self.sentinel_schedule(pid, REFRESH);
    }

    /// A sentinel says master `name` of pool `pid` is at `host:port`.
    fn sentinel_master(&mut self, pid: PoolId, name: &str, host: String, port: u16) {
        if let Some(c) = self.sentinels.clients.get_mut(&pid) {
            c.unknown.remove(name);
        }
        let Some(p) = self.topo.pool(pid) else {
            return;
        };
        let pname = p.conf.name.clone();
        let found = p.servers.iter().copied().find(|&s| {
            self.topo
                .server(s)
                .is_some_and(|v| v.conf.name == name && !v.detached)
        });
        let Some(s) = found else {
            return;
        };
        let new = ServerAddr::Tcp { host, port };
        let Some(srv) = self.topo.server_mut(s) else {
            return;
        };
        if *srv.addr() == new {
            srv.master = Some(new);
            return;
        }
        let old = addr_text(srv.addr());
        let now = addr_text(&new);
        srv.master = Some(new);
        // The new master is another machine: the old one's failures and
        // ejection say nothing about it.
        srv.failures = 0;
        let ejected = srv.next_retry.take().is_some();
        if let Some(p) = self.topo.pool_mut(pid) {
            p.stats.master_switches += 1;
        }
        crate::log_notice!(
            "pool '{}': master '{}' moved from {} to {}",
            pname,
            name,
            old,
            now
        );
        if ejected {
            self.rebuild_pool(pid);
        }
        self.drain_server(s, 0);
        self.preconnect(pid);
    }
}

pub fn addr_text(a: &ServerAddr) -> String {
    match a {
        ServerAddr::Tcp { host, port } => format!("{host}:{port}"),
        ServerAddr::Unix { path } => path.clone(),
    }
}

/// Decodes a whole reply; `raw` holds the stream from offset `base` on.
fn decode(p: &RspParser, raw: &[u8], base: u64) -> Reply {
    let slice = |a: u64, b: u64| -> &[u8] {
        let (Ok(a), Ok(b)) = (usize::try_from(a - base), usize::try_from(b - base)) else {
            return &[];
        };
        raw.get(a..b).unwrap_or_default()
    };
    let whole = slice(p.start, base + raw.len() as u64);
    match p.kind {
        // Escaped: a sentinel's words go into log lines.
        RspKind::Error => Reply::Error(crate::conf::one_line(&String::from_utf8_lossy(
            line_text(whole).unwrap_or_default(),
        ))),
        RspKind::Status | RspKind::Integer | RspKind::Bulk => {
            Reply::Value(string_value(whole).map(<[u8]>::to_vec))
        }
        RspKind::Array if p.count < 0 => Reply::Array(None),
        RspKind::Array => Reply::Array(Some(
            p.elems
                .iter()
                .map(|&(a, b)| string_value(slice(a, b)).map(<[u8]>::to_vec))
                .collect(),
        )),
        // RESP3 types a RESP2 sentinel never sends: nothing usable.
        _ => Reply::Value(None),
    }
}

/// The text of a `+`, `-` or `:` line (after the type byte).
fn line_text(raw: &[u8]) -> Option<&[u8]> {
    let end = raw.windows(2).position(|w| w == b"\r\n")?;
    raw.get(1..end)
}

/// The bytes of one encoded string value: a bulk, a status or an integer;
/// `None` for a null bulk or anything else.
fn string_value(raw: &[u8]) -> Option<&[u8]> {
    match raw.first()? {
        b'+' | b':' => line_text(raw),
        b'$' => {
            let head = line_text(raw)?;
            let len: usize = std::str::from_utf8(head).ok()?.parse().ok()?;
            let start = head.len() + 3;
            raw.get(start..start.checked_add(len)?)
        }
        _ => None,
    }
}

/// The answer to `get-master-addr-by-name`: `Ok(None)` when the sentinel
/// does not know the name (a null reply), `Err` when it makes no sense.
fn master_addr(reply: &Reply) -> Result<Option<(String, u16)>, String> {
    match reply {
        Reply::Array(None) | Reply::Value(None) => Ok(None),
        Reply::Array(Some(v)) => match v.as_slice() {
            [Some(host), Some(port)] => host_port(host, port)
                .map(Some)
                .ok_or_else(|| "not a valid address".to_string()),
            _ => Err("not a two-element array".to_string()),
        },
        Reply::Error(e) => Err(e.clone()),
        Reply::Value(Some(_)) => Err("not an array".to_string()),
    }
}

/// A `+switch-master` push: the master's name and its new address.
fn switch_master(reply: &Reply) -> Option<(String, String, u16)> {
    let Reply::Array(Some(v)) = reply else {
        return None;
    };
    let [Some(kind), Some(channel), Some(payload)] = v.as_slice() else {
        return None;
    };
    if kind.as_slice() != b"message" || channel.as_slice() != CHANNEL {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?;
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let [name, _old_host, _old_port, host, port] = fields.as_slice() else {
        return None;
    };
    let (host, port) = host_port(host.as_bytes(), port.as_bytes())?;
    Some((name.to_string(), host, port))
}

/// A host and port as a sentinel writes them, checked: a host of address
/// and name characters only, a port 1..65535.
fn host_port(host: &[u8], port: &[u8]) -> Option<(String, u16)> {
    let ok_host = !host.is_empty()
        && host.len() <= 255
        && host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_' | b'%'));
    if !ok_host || port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let port: u16 = std::str::from_utf8(port).ok()?.parse().ok()?;
    if port == 0 {
        return None;
    }
    Some((String::from_utf8(host.to_vec()).ok()?, port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Parses `wire` whole (then again one byte at a time) and decodes it.
    fn parse(wire: &[u8]) -> Reply {
        let mut p = RspParser::new();
        let (n, prog) = p.feed(wire, 100);
        assert_eq!(
            prog,
            Progress::Complete(100 + wire.len() as u64),
            "{wire:?}"
        );
        assert_eq!(n, wire.len());
        let whole = decode(&p, wire, 100);
        let mut p = RspParser::new();
        let mut last = Progress::Incomplete;
        for i in 0..wire.len() {
            last = p.feed(&wire[i..=i], 100 + i as u64).1;
        }
        assert_eq!(last, Progress::Complete(100 + wire.len() as u64));
        assert_eq!(decode(&p, wire, 100), whole);
        whole
    }

    #[test]
    fn master_address_replies() {
        let r = parse(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n");
        assert_eq!(master_addr(&r), Ok(Some(("127.0.0.1".into(), 6380))));
        assert_eq!(master_addr(&parse(b"*-1\r\n")), Ok(None));
        assert_eq!(master_addr(&parse(b"$-1\r\n")), Ok(None));
        assert!(master_addr(&parse(b"-IDONTKNOW x\r\n")).is_err());
        assert!(master_addr(&parse(b"+OK\r\n")).is_err());
        assert!(master_addr(&parse(b"*1\r\n$1\r\na\r\n")).is_err());
        // A sentinel that lies about the address is not believed.
        for (host, port) in [
            ("127.0.0.1", "0"),
            ("127.0.0.1", "65536"),
            ("127.0.0.1", "-1"),
            ("127.0.0.1", "63 79"),
            ("", "6379"),
            ("a b", "6379"),
            ("x\ny", "6379"),
        ] {
            let wire = format!(
                "*2\r\n${}\r\n{host}\r\n${}\r\n{port}\r\n",
                host.len(),
                port.len()
            );
            assert!(
                master_addr(&parse(wire.as_bytes())).is_err(),
                "{host} {port}"
            );
        }
        let r = parse(b"*2\r\n:1\r\n*0\r\n");
        assert!(master_addr(&r).is_err());
    }

    #[test]
    fn switch_master_pushes() {
        let payload = "m1 127.0.0.1 6379 127.0.0.1 6380";
        let wire = format!(
            "*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n${}\r\n{payload}\r\n",
            payload.len()
        );
        assert_eq!(
            switch_master(&parse(wire.as_bytes())),
            Some(("m1".into(), "127.0.0.1".into(), 6380))
        );
        // The subscription's confirmation is not a switch.
        let confirm = parse(b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n");
        assert_eq!(switch_master(&confirm), None);
        for bad in [
            "m1 127.0.0.1 6379 127.0.0.1",
            "m1 127.0.0.1 6379 127.0.0.1 6380 extra",
            "m1 127.0.0.1 6379 127.0.0.1 port",
            "",
        ] {
            let wire = format!(
                "*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n${}\r\n{bad}\r\n",
                bad.len()
            );
            assert_eq!(switch_master(&parse(wire.as_bytes())), None, "{bad}");
        }
        let other = parse(b"*3\r\n$7\r\nmessage\r\n$6\r\n+sdown\r\n$1\r\nx\r\n");
        assert_eq!(switch_master(&other), None);
        assert_eq!(switch_master(&parse(b":3\r\n")), None);
        assert_eq!(switch_master(&parse(b"*-1\r\n")), None);
    }

    #[test]
    fn string_values() {
        assert_eq!(string_value(b"$3\r\nabc\r\n"), Some(&b"abc"[..]));
        assert_eq!(string_value(b"$0\r\n\r\n"), Some(&b""[..]));
        assert_eq!(string_value(b"$-1\r\n"), None);
        assert_eq!(string_value(b"$9\r\nabc\r\n"), None);
        assert_eq!(string_value(b"$99999999999999999999999\r\nabc\r\n"), None);
        assert_eq!(string_value(b"+OK\r\n"), Some(&b"OK"[..]));
        assert_eq!(string_value(b":12\r\n"), Some(&b"12"[..]));
        assert_eq!(string_value(b"*1\r\n:1\r\n"), None);
        assert_eq!(string_value(b""), None);
        assert_eq!(
            parse(b"-ERR invalid password\r\n"),
            Reply::Error("ERR invalid password".into())
        );
    }
}
