//! Backend connections: connecting (with the proxy's own AUTH and SELECT
//! first), sending queued requests, reading replies and handing each to the
//! request it answers, and the failure path (close, fail what was queued,
//! count, eject). Which server a key goes to is the topology's business
//! (`topology.rs`); this file only talks to the server it is given.
//!
//! A request enters a server connection's `inq`; once written it moves to
//! `outq`; the next reply parsed on that connection belongs to the front of
//! `outq` (redis and memcached answer in order). A connection marked
//! `draining` (its server left the pool, or the pool's connection settings
//! changed in a reload) takes no new request and closes once both queues
//! are empty.
//!
//! A *private* connection carries only the proxy's own requests: the probe
//! of an ejected server (`probe.rs`) and the steps of an ejection repair
//! (`repair.rs`). It is never chosen for a client's request, and its
//! failure counts no failure of the server: it only fails those requests,
//! which their owners handle (`own_reply`, `own_failed`). A server that is
//! ejected counts no failures until it is back.

use crate::client::{KEYS_PER_UNIT, READ_BUDGET};
use crate::conf::ServerAddr;
use crate::conn::{Conn, ConnId, ServerConn, ServerRx};
use crate::core::{gather, Context, Side, IOV_MAX, WRITE_BUDGET, WRITE_CALLS};
use crate::msg::{Internal, MsgId, Origin};
use crate::net::{self, IoStep, Stream};
use crate::proto::memcache::response::{McRspKind, McRspParser, McValue, Progress as McProgress};
use crate::proto::redis::reply::Proto;
use crate::proto::redis::response::{Progress, RspKind, RspParser, MAX_ELEMS};
use crate::timer::TimerEvent;
use crate::topology::{PoolId, ServerId};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Replies handled per turn of one server connection, in the units of the
/// client's parse budget (a reply is one unit plus one per
/// [`KEYS_PER_UNIT`] elements).
pub const REPLY_BUDGET: usize = 256;
/// The largest reply accepted from a backend, counted while it arrives: as
/// large as the largest request accepted from a client. A backend sending
/// more for one reply (a stream that never ends, or an announced length
/// no request could produce) is failed as a server error.
pub const MAX_REPLY_BYTES: u64 = crate::client::MAX_REQUEST_BYTES;

impl Context {
    /// Connects to every server of the pools with `preconnect: true`.
    pub fn preconnect_all(&mut self) {
        for pid in self.topo.order.clone() {
            self.preconnect(pid);
        }
    }

    pub fn preconnect(&mut self, pid: PoolId) {
        let Some(pool) = self.topo.pool(pid) else {
            return;
        };
        if !pool.conf.preconnect {
            return;
        }
        for s in pool.servers.clone() {
            let none = self
                .topo
                .server(s)
                .is_some_and(|srv| srv.conns.iter().all(|&k| self.is_draining(k)));
            if none {
                let _ = self.server_connect(s, Proto::Resp2, false);
            }
        }
    }

    fn is_draining(&self, sk: ConnId) -> bool {
        matches!(self.conns.get(sk), Some(Conn::Server(c)) if c.draining || c.private || c.proto != Proto::Resp2)
    }

    /// Queues request `mid` on a connection to server `s`.
    pub fn forward(&mut self, mid: MsgId, s: ServerId) {
        self.forward_block(&[mid], s);
    }

    /// Queues requests on one connection to server `s`, one after the
    /// other, so they reach the server as one contiguous run (a
    /// transaction). They all take the first one's protocol.
    pub fn forward_block(&mut self, mids: &[MsgId], s: ServerId) {
        let proto = mids
            .first()
            .and_then(|&m| self.msgs.get(m))
            .map_or(Proto::Resp2, |m| m.proto);
        let sk = match self.server_conn(s, proto) {
            Ok(sk) => sk,
            Err(errno) => {
                for &mid in mids {
                    self.fail_request(mid, errno);
                }
                return;
            }
        };
        self.queue_on(mids, s, sk);
    }

    /// Queues request `mid` on the private connection `sk` to server `s`
    /// (opened now when `sk` is gone); returns the connection used.
    pub fn forward_private(
        &mut self,
        mid: MsgId,
        s: ServerId,
        sk: Option<ConnId>,
    ) -> Option<ConnId> {
        let live = sk.filter(|&k| {
            matches!(self.conns.get(k), Some(Conn::Server(c)) if c.server == s && c.private && !c.draining)
        });
        let sk = match live {
            Some(k) => k,
            None => match self.server_connect(s, Proto::Resp2, true) {
                Ok(k) => {
                    if let Some(Conn::Server(c)) = self.conns.get_mut(k) {
                        c.private = true;
                    }
                    k
                }
                Err(errno) => {
                    self.fail_request(mid, errno);
                    return None;
                }
            },
        };
        self.queue_on(&[mid], s, sk);
        Some(sk)
    }

    /// Queues requests on connection `sk` of server `s`, in order.
    fn queue_on(&mut self, mids: &[MsgId], s: ServerId, sk: ConnId) {
        let timeout = self.topo.server_pool(s).and_then(|p| p.conf.timeout_ms);
        for &mid in mids {
            let Some(m) = self.msgs.get_mut(mid) else {
                continue;
            };
            m.server = Some(s);
            m.server_conn = Some(sk);
            let bytes = m.req_len as i64;
            let internal = m.is_internal();
            if let (Some(ms), false) = (timeout, m.noreply) {
                m.deadline = Some(
                    self.timers
                        .deadline(self.now, Duration::from_millis(ms), mid),
                );
            }
            // Counted when queued, as 0.5.0 does: a request to a server
            // that then refuses the connection counts in `requests` too.
            if !internal {
                if let Some(srv) = self.topo.server_mut(s) {
                    srv.stats.in_queue += 1;
                    srv.stats.in_queue_bytes += bytes;
                    srv.stats.requests += 1;
                    srv.stats.request_bytes += bytes;
                }
            }
            if let Some(Conn::Server(c)) = self.conns.get_mut(sk) {
                c.inq.push_back(mid);
            }
        }
        self.dirty_server(sk);
    }

    /// A connection to server `s`: a new one while fewer than
    /// `server_connections` exist, else the next in turn. Draining
    /// connections are not counted and get nothing new.
    fn server_conn(&mut self, s: ServerId, proto: Proto) -> Result<ConnId, i32> {
        let max = self
            .topo
            .server_pool(s)
            .map_or(1, |p| p.conf.server_connections.max(1) as usize);
        let conns = &self.conns;
        let srv = self.topo.server_mut(s).ok_or(libc::EINVAL)?;
        // Counted and picked in place: no allocation per request.
        let usable = |k: &&ConnId| matches!(conns.get(**k), Some(Conn::Server(c)) if !c.draining && !c.private && c.proto == proto);
        let live = srv.conns.iter().filter(usable).count();
        if live >= max {
            // Least recently used first: the connections in creation order.
            let k = srv.conns.iter().filter(usable).nth(srv.rr % live).copied();
            srv.rr = (srv.rr + 1) % live;
            return k.ok_or(libc::EINVAL);
        }
        self.server_connect(s, proto, false)
    }

    /// A connection to server `s` reserved for the proxy's own requests
    /// (probe, repair): an open one, or a new one.
    pub fn private_conn(&mut self, s: ServerId) -> Result<ConnId, i32> {
        let srv = self.topo.server(s).ok_or(libc::EINVAL)?;
        let open = srv.conns.iter().copied().find(
            |&k| matches!(self.conns.get(k), Some(Conn::Server(c)) if c.private && !c.draining),
        );
        match open {
            Some(k) => Ok(k),
            None => self.server_connect(s, Proto::Resp2, true),
        }
    }

    /// Queues one of the proxy's own requests on connection `sk` of server
    /// `s`, with a deadline `after` from now when given.
    pub fn queue_internal(&mut self, sk: ConnId, s: ServerId, mid: MsgId, after: Option<Duration>) {
        let Some(Conn::Server(c)) = self.conns.get_mut(sk) else {
            self.free_msg(mid);
            return;
        };
        c.inq.push_back(mid);
        if let Some(m) = self.msgs.get_mut(mid) {
            m.server = Some(s);
            m.server_conn = Some(sk);
            if let Some(d) = after {
                m.deadline = Some(self.timers.deadline(self.now, d, mid));
            }
        }
        self.dirty_server(sk);
    }

    fn server_connect(&mut self, s: ServerId, proto: Proto, private: bool) -> Result<ConnId, i32> {
        let (Some(srv), Some(pool)) = (self.topo.server(s), self.topo.server_pool(s)) else {
            return Err(libc::EINVAL);
        };
        let keepalive = pool.conf.tcpkeepalive;
        let (auth, db) = (pool.conf.redis_auth.clone(), pool.conf.redis_db);
        let mut ask = None;
        let sock = match srv.addr() {
            ServerAddr::Tcp { host, port } => match host.parse::<std::net::IpAddr>() {
                Ok(ip) => match net::tcp_connect(SocketAddr::new(ip, *port), keepalive) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        self.server_failed(s);
                        return Err(e.raw_os_error().unwrap_or(libc::ECONNREFUSED));
                    }
                },
                // A host name: resolved off the loop; the connection
                // waits for it with its requests queued.
                Err(_) => {
                    ask = Some((host.clone(), *port));
                    None
                }
            },
            ServerAddr::Unix { path } => match mio::net::UnixStream::connect(path) {
                Ok(u) => Some(Stream::Unix(u)),
                Err(e) => {
                    self.server_failed(s);
                    return Err(e.raw_os_error().unwrap_or(libc::ECONNREFUSED));
                }
            },
        };
        let ticket = match ask {
            Some((host, port)) => match self.resolve(&host, port) {
                Ok(t) => Some(t),
                Err(why) => {
                    log_unresolved(&host, port, &why);
                    self.server_failed(s);
                    return Err(libc::EHOSTDOWN);
                }
            },
            None => None,
        };
        let mut conn = ServerConn {
            sock,
            server: s,
            rx: ServerRx::default(),
            inq: VecDeque::new(),
            outq: VecDeque::new(),
            wsent: Default::default(),
            connected: false,
            draining: false,
            proto,
            hup: false,
            again: false,
            dirty: false,
            private,
        };
        // AUTH goes before SELECT (docs/compatibility.md), both ahead of any
        // request.
        if let Some(pw) = auth {
            let mid = self.internal_msg(&[b"AUTH", pw.as_bytes()], Internal::Auth);
            conn.inq.push_back(mid);
        }
        if db > 0 {
            let mid = self.internal_msg(&[b"SELECT", db.to_string().as_bytes()], Internal::Select);
            conn.inq.push_back(mid);
        }
        if proto == Proto::Resp3 {
            let mid = self.internal_msg(&[b"HELLO", b"3"], Internal::Hello);
            conn.inq.push_back(mid);
        }
        let queued: Vec<MsgId> = conn.inq.iter().copied().collect();
        let key = self.conns.insert(Conn::Server(conn));
        if let Err(e) = self.register(key) {
            self.server_close(key, e.raw_os_error().unwrap_or(libc::EINVAL), false);
            return Err(libc::EINVAL);
        }
        for mid in queued {
            if let Some(m) = self.msgs.get_mut(mid) {
                m.server_conn = Some(key);
            }
        }
        if let Some(srv) = self.topo.server_mut(s) {
            srv.conns.push(key);
        }
        if let Some(t) = ticket {
            self.resolving.insert(t, key);
        }
        Ok(key)
    }

    /// Asks the resolver (started now if this is the first host name).
    /// Past [`MAX_RESOLVING`] connections waiting (a resolver that answers
    /// nothing, and clients that keep asking), a connect fails at once.
    pub(crate) fn resolve(&mut self, host: &str, port: u16) -> Result<u64, String> {
        if self.resolving.len() >= MAX_RESOLVING {
            return Err(format!(
                "{MAX_RESOLVING} connections already wait for the resolver"
            ));
        }
        if self.resolver.is_none() {
            let r = crate::resolver::Resolver::new(
                self.poll.registry(),
                crate::core::RESOLVER_TOKEN,
                crate::resolver::system_lookup,
            )
            .map_err(|e| format!("cannot start the resolver: {e}"))?;
            self.resolver = Some(r);
        }
        match self.resolver.as_mut() {
            Some(r) => r.ask(host, port),
            None => Err("no resolver".into()),
        }
    }

    /// The resolver has answers: each waiting connection connects to its
    /// address, or fails with `Host is down` as an unresolvable name did
    /// in 0.5.0 (its requests get that error; one failure of the server
    /// is counted). An answer for a connection closed meanwhile (its
    /// requests timed out, a reload dropped its server) is dropped.
    pub fn server_resolved(&mut self) {
        let mut answers = Vec::new();
        if let Some(r) = &self.resolver {
            r.answers(&mut answers);
        }
        for (ticket, answer) in answers {
            let Some(sk) = self.resolving.remove(&ticket) else {
                self.sentinel_resolved(ticket, answer);
                continue;
            };
            let Some(Conn::Server(c)) = self.conns.get(sk) else {
                continue;
            };
            let s = c.server;
            let target = match (self.topo.server(s), self.topo.server_pool(s)) {
                (Some(srv), Some(pool)) => match srv.addr() {
                    ServerAddr::Tcp { host, port } => {
                        Some((host.clone(), *port, pool.conf.tcpkeepalive))
                    }
                    ServerAddr::Unix { .. } => None,
                },
                _ => None,
            };
            // Its server is gone (or no longer named by host name): the
            // requests it holds fail rather than wait for nothing.
            let Some((host, port, keepalive)) = target else {
                self.server_close(sk, libc::EHOSTDOWN, false);
                continue;
            };
            let addr = match answer {
                Ok(a) => a,
                Err(why) => {
                    log_unresolved(&host, port, &why);
                    self.server_close(sk, libc::EHOSTDOWN, false);
                    continue;
                }
            };
            let sock = match net::tcp_connect(addr, keepalive) {
                Ok(t) => t,
                Err(e) => {
                    self.server_close(sk, e.raw_os_error().unwrap_or(libc::ECONNREFUSED), false);
                    continue;
                }
            };
            let registered = match self.conns.get_mut(sk) {
                Some(Conn::Server(c)) => {
                    let sock = c.sock.insert(sock);
                    self.poll.registry().register(
                        sock.source(),
                        sk.token(),
                        mio::Interest::READABLE | mio::Interest::WRITABLE,
                    )
                }
                _ => continue,
            };
            if let Err(e) = registered {
                self.server_close(sk, e.raw_os_error().unwrap_or(libc::EINVAL), false);
            }
        }
    }

    /// A request of the proxy's own, whose reply the engine consumes.
    pub fn internal_msg(&mut self, args: &[&[u8]], kind: Internal) -> MsgId {
        let mut wire = Vec::new();
        crate::proto::redis::write_command(&mut wire, args);
        let mid = self.alloc_msg(Origin::Internal(kind));
        if let Some(m) = self.msgs.get_mut(mid) {
            self.mbufs.push_bytes(&wire, &mut m.req);
            m.req_len = wire.len();
        }
        mid
    }

    /// A request of the proxy's own given as its wire bytes (memcached).
    pub fn internal_raw(&mut self, wire: &[u8], kind: Internal) -> MsgId {
        let mid = self.alloc_msg(Origin::Internal(kind));
        if let Some(m) = self.msgs.get_mut(mid) {
            self.mbufs.push_bytes(wire, &mut m.req);
            m.req_len = wire.len();
        }
        mid
    }

    pub fn server_connect_done(&mut self, sk: ConnId) {
        let Some(Conn::Server(c)) = self.conns.get(sk) else {
            return;
        };
        let Some(sock) = &c.sock else {
            return;
        };
        let err = match sock.take_error() {
            Ok(Some(e)) => e.raw_os_error(),
            Err(e) => e.raw_os_error(),
            Ok(None) => match sock.connected() {
                Ok(()) => None,
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return,
                Err(e) => e.raw_os_error(),
            },
        };
        if let Some(errno) = err {
            self.server_close(sk, errno, false);
            return;
        }
        let s = c.server;
        if let Some(Conn::Server(c)) = self.conns.get_mut(sk) {
            c.connected = true;
        }
        if let Some(srv) = self.topo.server_mut(s) {
            srv.stats.server_connections += 1;
        }
        self.dirty_server(sk);
    }

    /// Writes as much of the in queue as the socket takes, in one `writev`
    /// per round, moving written requests to the out queue.
    pub fn server_flush(&mut self, sk: ConnId) {
        let (mut bytes, mut calls) = (0, 0);
        loop {
            let Some(Conn::Server(c)) = self.conns.get(sk) else {
                return;
            };
            if (bytes >= WRITE_BUDGET || calls >= WRITE_CALLS) && !c.inq.is_empty() {
                // A million-key split's fragments: the rest next iteration.
                self.write_again.push(sk);
                return;
            }
            if !c.connected || c.inq.is_empty() {
                if c.draining && c.idle() {
                    self.server_close(sk, 0, false);
                }
                return;
            }
            let mut iov = self.iov.start();
            gather(
                &self.msgs,
                &self.mbufs,
                &c.inq,
                c.wsent,
                Side::Request,
                &mut iov,
            );
            let full = iov.len() == IOV_MAX;
            if iov.is_empty() {
                // Requests queued but nothing to gather: a length that does
                // not match its bytes. Never spin on it.
                crate::log_error!("s {} has queued requests with no bytes", sk);
                return;
            }
            // Connected, so it has its socket.
            let step = match &c.sock {
                Some(sock) => sock.writev(&iov),
                None => IoStep::WouldBlock,
            };
            drop(iov);
            match step {
                IoStep::Done(n) => {
                    bytes += n;
                    calls += 1;
                    self.server_advance(sk, n);
                    if !full {
                        // Short of the limit: loop once more only if the
                        // kernel took everything and more is queued.
                        let more = matches!(self.conns.get(sk), Some(Conn::Server(c)) if !c.inq.is_empty());
                        if !more {
                            return;
                        }
                    }
                }
                IoStep::WouldBlock => return,
                IoStep::Eof => return,
                IoStep::Error(e) => {
                    self.server_close(sk, e.raw_os_error().unwrap_or(libc::EPIPE), false);
                    return;
                }
            }
        }
    }

    fn server_advance(&mut self, sk: ConnId, mut n: usize) {
        loop {
            let Some(Conn::Server(c)) = self.conns.get_mut(sk) else {
                return;
            };
            let Some(&mid) = c.inq.front() else { return };
            let (len, written) = match self.msgs.get(mid) {
                Some(m) => (m.req_len, c.wsent.advance(&m.req, &mut n)),
                None => (0, true),
            };
            if !written {
                return;
            }
            c.wsent = Default::default();
            c.inq.pop_front();
            let s = c.server;
            let (noreply, internal) = self
                .msgs
                .get(mid)
                .map_or((false, true), |m| (m.noreply, m.is_internal()));
            if !internal {
                if let Some(srv) = self.topo.server_mut(s) {
                    let st = &mut srv.stats;
                    st.in_queue -= 1;
                    st.in_queue_bytes -= len as i64;
                    if !noreply {
                        st.out_queue += 1;
                        st.out_queue_bytes += len as i64;
                    }
                }
            }
            if noreply {
                self.server_done(mid);
                self.complete(mid);
            } else if let Some(Conn::Server(c)) = self.conns.get_mut(sk) {
                c.outq.push_back(mid);
            }
        }
    }

    /// Detaches a request from its server connection and deadline.
    pub fn server_done(&mut self, mid: MsgId) {
        if let Some(m) = self.msgs.get_mut(mid) {
            m.server_conn = None;
            m.deadline = None;
        }
    }

    /// One turn of reading and parsing replies: at most [`READ_BUDGET`]
    /// bytes read and [`REPLY_BUDGET`] units of replies handled, so a
    /// backend that keeps its socket full cannot hold the loop; a turn that
    /// ends on its budget queues the connection in `ready_again`. A reply
    /// a backend cannot legitimately send (bytes when no request awaits a
    /// reply, a reply growing past [`MAX_REPLY_BYTES`], anything the
    /// parsers refuse) closes the connection as a server error.
    pub fn server_read(&mut self, sk: ConnId, hup: bool) {
        let (mut rx, redis, resp3) = match self.conns.get_mut(sk) {
            Some(Conn::Server(c)) => (
                std::mem::take(&mut c.rx),
                self.topo.server_pool(c.server).is_none_or(|p| p.conf.redis),
                c.proto == Proto::Resp3,
            ),
            _ => return,
        };
        let mut close: Option<(i32, bool)> = None;
        let mut again = false;
        let mut bytes = READ_BUDGET;
        let mut units = REPLY_BUDGET;
        let mut fresh = false;
        'turn: loop {
            // What is buffered first: a resumed turn has some.
            loop {
                let (data, base) = rx.inbuf.unparsed(&self.mbufs);
                if data.is_empty() {
                    break;
                }
                if units == 0 {
                    again = true;
                    break 'turn;
                }
                let idle = rx.redis.is_idle() && rx.mc.is_idle();
                // On RESP3 a push frame may come unasked; anything else
                // unasked is still refused by `on_reply`.
                if idle && !resp3 && !self.awaits_reply(sk) {
                    crate::log_error!("s {} unexpected data from server", sk);
                    close = Some((libc::EINVAL, false));
                    break 'turn;
                }
                let (n, prog) = if redis {
                    if rx.redis.is_idle() {
                        let (frag, max) = self.front_reply_limit(sk);
                        rx.redis.want_elems = frag;
                        rx.redis.max_count = max;
                    }
                    rx.redis.feed(data, base)
                } else {
                    let (n, p) = rx.mc.feed(data, base);
                    let p = match p {
                        McProgress::Incomplete => Progress::Incomplete,
                        McProgress::Complete(end) => Progress::Complete(end),
                        McProgress::Error => Progress::Error,
                    };
                    (n, p)
                };
                rx.inbuf.parsed = base + n as u64;
                match prog {
                    Progress::Incomplete => {
                        let cd = self.mbufs.chunk_data();
                        if rx.inbuf.end(cd) - rx.inbuf.start > MAX_REPLY_BYTES {
                            crate::log_error!(
                                "s {} reply from server exceeds {} bytes",
                                sk,
                                MAX_REPLY_BYTES
                            );
                            close = Some((libc::EMSGSIZE, false));
                            break 'turn;
                        }
                        // A read ahead may have filled later chunks too.
                        if n == data.len() && rx.inbuf.parsed < rx.inbuf.end(cd) {
                            continue;
                        }
                        break;
                    }
                    Progress::Complete(end) => {
                        let reply = if redis {
                            redis_reply(&rx.redis)
                        } else {
                            mc_reply(&rx.mc)
                        };
                        let cost = 1 + reply.elems.len().max(reply.mc_values.len()) / KEYS_PER_UNIT;
                        if let Err(errno) = self.on_reply(sk, &rx, reply, end) {
                            close = Some((errno, false));
                            break 'turn;
                        }
                        units = units.saturating_sub(cost);
                        rx.inbuf.consume(&mut self.mbufs, end);
                        rx.redis.reset();
                        rx.mc.reset();
                    }
                    // Out-of-band data on a RESP3 connection (the proxy
                    // subscribes to nothing, so only the likes of tracking
                    // invalidations): answers no request; dropped.
                    Progress::Push(end) if resp3 => {
                        rx.inbuf.consume(&mut self.mbufs, end);
                        rx.redis.reset();
                    }
                    // On RESP2 a push frame cannot come: bad data.
                    Progress::Error | Progress::Push(_) => {
                        crate::log_error!("s {} parsed bad rsp from server", sk);
                        close = Some((libc::EINVAL, false));
                        break 'turn;
                    }
                }
            }
            if fresh && rx.inbuf.drained && !hup {
                break;
            }
            if bytes == 0 {
                again = true;
                break;
            }
            let Some(Conn::Server(ServerConn {
                sock: Some(sock), ..
            })) = self.conns.get(sk)
            else {
                rx.inbuf.clear(&mut self.mbufs);
                return;
            };
            match rx.inbuf.read(sock, &mut self.mbufs) {
                IoStep::Done(n) => {
                    bytes = bytes.saturating_sub(n);
                    fresh = true;
                }
                IoStep::WouldBlock => break,
                IoStep::Eof => {
                    close = Some((0, true));
                    break;
                }
                IoStep::Error(e) => {
                    close = Some((e.raw_os_error().unwrap_or(libc::ECONNRESET), false));
                    break;
                }
            }
        }
        if let Some(Conn::Server(c)) = self.conns.get_mut(sk) {
            c.rx = rx;
            if close.is_none() && c.draining && c.idle() {
                close = Some((0, false));
            }
            if again && close.is_none() {
                crate::core::queue_once(&mut c.again, &mut self.ready_again, sk);
            }
        } else {
            rx.inbuf.clear(&mut self.mbufs);
        }
        if let Some((errno, eof)) = close {
            if eof {
                crate::log_info!("s {} active is done", sk);
                if let Some(Conn::Server(c)) = self.conns.get(sk) {
                    let s = c.server;
                    if let Some(srv) = self.topo.server_mut(s) {
                        srv.stats.server_eof += 1;
                    }
                }
            }
            self.server_close(sk, errno, false);
        }
    }

    /// Whether a request on `sk` was sent and awaits its reply: bytes that
    /// come when none does answer nothing (and could pile up unbounded).
    fn awaits_reply(&self, sk: ConnId) -> bool {
        matches!(self.conns.get(sk), Some(Conn::Server(c)) if !c.outq.is_empty())
    }

    /// For the next reply on `sk`: whether it answers a fragment (whose
    /// elements the merge needs), and the most elements its top-level
    /// array may announce: what the fragment asked for (an MGET fragment
    /// of n keys gets n), else [`MAX_ELEMS`].
    fn front_reply_limit(&self, sk: ConnId) -> (bool, i64) {
        let Some(Conn::Server(c)) = self.conns.get(sk) else {
            return (false, MAX_ELEMS);
        };
        match c.outq.front().and_then(|&mid| self.msgs.get(mid)) {
            Some(m) if m.parent().is_some() => (true, i64::from(m.reply_elems).min(MAX_ELEMS)),
            _ => (false, MAX_ELEMS),
        }
    }

    /// A whole reply `reply.start..end` arrived: hand it to the request it
    /// answers. `Err` closes the connection (stray or transient reply).
    fn on_reply(&mut self, sk: ConnId, rx: &ServerRx, reply: Reply, end: u64) -> Result<(), i32> {
        let Some(Conn::Server(c)) = self.conns.get_mut(sk) else {
            return Err(libc::EINVAL);
        };
        let s = c.server;
        let Some(mid) = c.outq.pop_front() else {
            crate::log_error!("s {} unexpected reply from server", sk);
            return Err(libc::EINVAL);
        };
        let start = reply.start;
        let origin = self.msgs.get(mid).map_or(Origin::Orphan, |m| m.origin);
        if let Origin::Internal(kind) = origin {
            if let Internal::Move(_) = kind {
                // A key move reads its reply itself (`migrate.rs`).
                self.server_done(mid);
                if let Some(m) = self.msgs.get_mut(mid) {
                    rx.inbuf.segs(&mut self.mbufs, start, end, &mut m.rsp);
                }
                self.complete(mid);
                return Ok(());
            }
            match kind {
                // Consumed by probe.rs and repair.rs, which read the reply
                // itself (a DUMP payload, a SCAN page); copied, as these
                // are rare and the reply's bytes go away with the input.
                Internal::Probe | Internal::Repair(_) => {
                    let raw = rx
                        .inbuf
                        .bytes(&self.mbufs, start, end, &mut self.key_scratch)
                        .to_vec();
                    self.server_done(mid);
                    self.own_reply(s, mid, kind, &raw);
                }
                _ => self.internal_reply(s, kind, &reply),
            }
            self.free_msg(mid);
            return Ok(());
        }
        let mut answers = self
            .msgs
            .get_mut(mid)
            .map(|m| std::mem::take(&mut m.val_keys))
            .unwrap_or_default();
        answers.clear();
        let asked = reply.mc_values.is_empty()
            || self.msgs.get(mid).is_some_and(|m| {
                values_asked(
                    &self.mbufs,
                    &m.req,
                    &rx.inbuf,
                    reply.mc_values,
                    &mut self.key_scratch,
                    &mut answers,
                )
            });
        if !asked {
            crate::log_error!("s {} VALUE for a key not asked from server", sk);
        }
        if reply.transient || !asked {
            // The request fails with the rest of the connection
            // (docs/compatibility.md, transient errors; a VALUE block for
            // a key that was not asked is a server error like garbage).
            if let Some(Conn::Server(c)) = self.conns.get_mut(sk) {
                c.outq.push_front(mid);
            }
            return Err(libc::EINVAL);
        }
        let len = (end - start) as usize;
        let req_len = self.msgs.get(mid).map_or(0, |m| m.req_len) as i64;
        // As in 0.5.0, `responses` counts the replies that go on to a
        // client: one whose client left is dropped uncounted.
        let forwarded = match origin {
            Origin::Orphan => false,
            Origin::Fragment(p) => self
                .msgs
                .get(p)
                .is_some_and(|pm| !matches!(pm.origin, Origin::Orphan)),
            _ => true,
        };
        if let Some(srv) = self.topo.server_mut(s) {
            let st = &mut srv.stats;
            st.out_queue -= 1;
            st.out_queue_bytes -= req_len;
            if forwarded {
                st.responses += 1;
                st.response_bytes += len as i64;
            }
            srv.failures = 0;
        }
        self.server_done(mid);
        let merge = self
            .msgs
            .get(mid)
            .and_then(|m| m.parent())
            .and_then(|pm| self.msgs.get(pm))
            .and_then(|pm| pm.frag.as_ref())
            .and_then(|f| f.merge);
        let rel = |a: u64| (a - start) as u32;
        if let Some(m) = self.msgs.get_mut(mid) {
            rx.inbuf.segs(&mut self.mbufs, start, end, &mut m.rsp);
            if m.parent().is_some() {
                m.integer = reply.integer;
                m.elems.clear();
                m.elems
                    .extend(reply.elems.iter().map(|&(a, b)| (rel(a), rel(b))));
                if !reply.mc_values.is_empty() {
                    m.elems.clear();
                    m.elems
                        .extend(reply.mc_values.iter().map(|v| (rel(v.start), rel(v.end))));
                }
                m.bad_reply = !reply.shape.fits(merge);
            }
            // Kept on every message (the vector's capacity is reused).
            m.val_keys = answers;
        }
        self.complete(mid);
        Ok(())
    }

    /// The reply to one of the proxy's own requests.
    fn internal_reply(&mut self, s: ServerId, kind: Internal, reply: &Reply) {
        match kind {
            Internal::Auth
            | Internal::TxStep
            | Internal::Probe
            | Internal::Repair(_)
            | Internal::Move(_) => {}
            Internal::Hello => {
                if let (Some(text), Some(srv)) = (reply.error_text, self.topo.server(s)) {
                    crate::log_warn!(
                        "HELLO 3 failed on {}: {}",
                        srv.conf.name,
                        String::from_utf8_lossy(text)
                    );
                }
            }
            Internal::Select => {
                let (Some(text), Some(pool), Some(srv)) = (
                    reply.error_text,
                    self.topo.server_pool(s),
                    self.topo.server(s),
                ) else {
                    return;
                };
                crate::log_warn!(
                    "SELECT {} failed on {} | {}: {}",
                    pool.conf.redis_db,
                    pool.conf.name,
                    srv.conf.name,
                    String::from_utf8_lossy(text)
                );
            }
        }
    }

    /// Closes a server connection: every request queued or in flight on it
    /// fails with `errno` (docs/compatibility.md, failures), and one failure
    /// is counted. A draining connection closed once idle (`errno` 0)
    /// counts nothing.
    pub fn server_close(&mut self, sk: ConnId, errno: i32, timed_out: bool) {
        let Some(mut conn) = self.conns.remove(sk) else {
            return;
        };
        self.deregister(&mut conn);
        let Conn::Server(mut c) = conn else {
            return;
        };
        let s = c.server;
        c.rx.inbuf.clear(&mut self.mbufs);
        if c.sock.is_none() {
            // Closed while its host name was being resolved: the answer
            // will find nothing.
            self.resolving.retain(|_, k| *k != sk);
        }
        let retired = c.draining && c.idle() && errno == 0 && !timed_out;
        let pname = match self.topo.server_mut(s) {
            Some(srv) => {
                srv.conns.retain(|&k| k != sk);
                let st = &mut srv.stats;
                if c.connected {
                    st.server_connections -= 1;
                }
                // A name that did not resolve is no server error, as in
                // 0.5.0 (it never had a socket).
                if timed_out {
                    st.server_timedout += 1;
                } else if errno != 0 && c.sock.is_some() {
                    st.server_err += 1;
                }
                srv.conf.pname.clone()
            }
            None => String::new(),
        };
        if retired {
            crate::log_info!("close s {} to '{}': drained", sk, pname);
            self.server_gone_check(s);
            return;
        }
        crate::log_info!("close s {} to '{}': {}", sk, pname, net::strerror(errno));
        let sent: Vec<MsgId> = c.outq.drain(..).collect();
        let unsent: Vec<MsgId> = c.inq.drain(..).collect();
        for (queue, was_sent) in [(sent, true), (unsent, false)] {
            for mid in queue {
                let Some(m) = self.msgs.get(mid) else {
                    continue;
                };
                if let Origin::Internal(Internal::Move(_)) = m.origin {
                    // A key move must hear of the failure to go on.
                    self.server_done(mid);
                    self.fail_request(mid, errno);
                    continue;
                }
                if let Origin::Internal(kind) = m.origin {
                    self.server_done(mid);
                    self.own_failed(s, mid, kind);
                    self.free_msg(mid);
                    continue;
                }
                let len = m.req_len as i64;
                if let Some(srv) = self.topo.server_mut(s) {
                    let st = &mut srv.stats;
                    if was_sent {
                        st.out_queue -= 1;
                        st.out_queue_bytes -= len;
                    } else {
                        st.in_queue -= 1;
                        st.in_queue_bytes -= len;
                    }
                }
                self.server_done(mid);
                self.fail_request(mid, errno);
            }
        }
        // A draining connection was made to an address or under settings
        // that no longer hold (a reload, a master switch): its failure says
        // nothing about the server as it is now. The proxy's own private
        // connection failing is its own requests' business (a failed probe
        // restarts the retry wait, a failed repair step is retried). Neither
        // counts toward an ejection.
        if !c.draining && !c.private {
            self.server_failed(s);
        }
        self.server_gone_check(s);
    }

    /// One failure of server `s` (docs/compatibility.md, ejection): may
    /// eject it, in which case a timer brings it back after
    /// `server_retry_timeout`.
    pub fn server_failed(&mut self, s: ServerId) {
        let Some(pool) = self.topo.server_pool(s) else {
            return;
        };
        if !pool.conf.auto_eject_hosts {
            return;
        }
        let (limit, retry) = (
            pool.conf.server_failure_limit,
            pool.conf.server_retry_timeout_ms,
        );
        let now = self.now;
        let Some(srv) = self.topo.server_mut(s) else {
            return;
        };
        // Already out of the table: nothing more to count until its probe
        // (`probe.rs`) lets it back.
        if srv.detached || srv.next_retry.is_some() {
            return;
        }
        srv.failures += 1;
        if srv.failures < limit.max(1) {
            return;
        }
        srv.failures = 0;
        let at = now + Duration::from_millis(retry);
        srv.next_retry = Some(at);
        srv.stats.server_ejected_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let (pid, pname): (PoolId, String) = (srv.pool, srv.conf.pname.clone());
        if let Some(p) = self.topo.pool_mut(pid) {
            p.stats.server_ejects += 1;
        }
        crate::log_warn!("server '{}' ejected for {} msec", pname, retry);
        self.timers.schedule(at, TimerEvent::ServerRetry(s));
        self.repair_track(s);
        self.rebuild_pool(pid);
    }
}

/// 0.5.0's words for a failed lookup, with the resolver's reason.
fn log_unresolved(host: &str, port: u16, why: &str) {
    crate::log_error!(
        "address resolution of node '{}' service '{}' failed: {}",
        host,
        port,
        why
    );
}

/// Most server connections waiting for their host name at once.
const MAX_RESOLVING: usize = 256;

/// Whether the keys of `values` (a memcached reply's VALUE blocks, in
/// order) are a subsequence of the keys of the request `req` (`get k1 k2
/// ..\r\n`, as sent): memcached answers the keys in the order asked and
/// leaves misses out, so anything else (a key never asked, or out of
/// order) is not a reply to this request. Linear in the request's bytes.
/// `answers` gets, for each block, the index among the request's keys of
/// the key it answers (what the merge puts in request order).
fn values_asked(
    mbufs: &crate::mbuf::MbufPool,
    req: &[crate::mbuf::Seg],
    inbuf: &crate::inbuf::InBuf,
    values: &[McValue],
    scratch: &mut Vec<u8>,
    answers: &mut Vec<u32>,
) -> bool {
    // memcached keys are at most 250 bytes; a longer token matches none.
    const KEY_MAX: usize = 250;
    // A token cut by a segment boundary (a key across two chunks) is
    // gathered here (with room for the CR that may end the line); every
    // other token is compared where it lies.
    let mut carry = [0u8; KEY_MAX + 1];
    let mut len = 0usize;
    let mut long = false;
    let mut verb = true;
    let mut vi = 0usize;
    let mut keys = 0u32;
    let mut end_token = |tok: &[u8], long: bool, verb: &mut bool, vi: &mut usize| {
        if tok.is_empty() && !long {
            return;
        }
        if std::mem::take(verb) {
            return;
        }
        let key_index = keys;
        keys += 1;
        let Some(v) = values.get(*vi) else {
            return;
        };
        let from = v.key_start;
        let key = inbuf.bytes(mbufs, from, from + u64::from(v.key_len), scratch);
        if !long && tok.len() <= KEY_MAX && key == tok {
            *vi += 1;
            answers.push(key_index);
        }
    };
    // Tokens as memcached splits a line: at spaces, up to the LF; a CR is
    // a token byte unless it ends the line (the request parser agrees).
    let delim = |b: &u8| *b == b' ' || *b == b'\n';
    let at_eol = |tok: &'_ [u8], eol: bool| -> usize {
        if eol && tok.last() == Some(&b'\r') {
            tok.len() - 1
        } else {
            tok.len()
        }
    };
    // Appends a token's piece to `carry`; past its room it is only `long`.
    let gather =
        |carry: &mut [u8; KEY_MAX + 1], len: &mut usize, long: &mut bool, piece: &[u8]| match carry
            .get_mut(*len..*len + piece.len())
        {
            Some(dst) if !*long => {
                dst.copy_from_slice(piece);
                *len += piece.len();
            }
            _ => *long = true,
        };
    'bytes: for seg in req {
        let mut rest = mbufs.bytes(seg);
        while !rest.is_empty() {
            let Some(n) = rest.iter().position(delim) else {
                // The token goes on in the next segment.
                gather(&mut carry, &mut len, &mut long, rest);
                break;
            };
            let (head, tail) = rest.split_at(n);
            let eol = tail.first() == Some(&b'\n');
            if len > 0 || long {
                gather(&mut carry, &mut len, &mut long, head);
                let tok = carry.get(..len).unwrap_or_default();
                let tok = tok.get(..at_eol(tok, eol)).unwrap_or_default();
                end_token(tok, long, &mut verb, &mut vi);
                len = 0;
                long = false;
            } else {
                let tok = head.get(..at_eol(head, eol)).unwrap_or_default();
                end_token(tok, tok.len() > KEY_MAX, &mut verb, &mut vi);
            }
            if eol {
                break 'bytes;
            }
            rest = tail.get(1..).unwrap_or_default();
        }
    }
    if len > 0 || long {
        end_token(
            carry.get(..len).unwrap_or_default(),
            long,
            &mut verb,
            &mut vi,
        );
    }
    vi == values.len()
}

fn redis_reply(p: &RspParser) -> Reply<'_> {
    Reply {
        start: p.start,
        transient: p.is_transient_error(),
        error_text: (p.kind == RspKind::Error).then(|| p.prefix()),
        integer: p.integer,
        elems: &p.elems,
        mc_values: &[],
        shape: Shape::Redis(p.kind, p.count),
    }
}

/// What the engine needs to know of a parsed reply, whichever the protocol.
struct Reply<'a> {
    start: u64,
    /// redis -OOM/-BUSY/-LOADING: a server failure (docs/compatibility.md §7.6).
    transient: bool,
    error_text: Option<&'a [u8]>,
    integer: Option<i64>,
    elems: &'a [(u64, u64)],
    mc_values: &'a [McValue],
    shape: Shape,
}

/// The kind of a reply, to judge whether it fits a fragment's merge.
#[derive(Clone, Copy)]
enum Shape {
    Redis(RspKind, i64),
    Memcache(McRspKind),
}

impl Shape {
    fn fits(self, merge: Option<crate::msg::Merge>) -> bool {
        match self {
            Shape::Redis(kind, count) => crate::fragment::redis_reply_fits(merge, kind, count),
            Shape::Memcache(kind) => match merge {
                Some(crate::msg::Merge::Values) => kind == McRspKind::Values,
                // flush_all: the merge reads each reply itself.
                Some(crate::msg::Merge::McOk) => true,
                _ => false,
            },
        }
    }
}

fn mc_reply(p: &McRspParser) -> Reply<'_> {
    Reply {
        start: p.start,
        transient: false,
        error_text: None,
        integer: None,
        elems: &[],
        mc_values: &p.values,
        shape: Shape::Memcache(p.kind),
    }
}
