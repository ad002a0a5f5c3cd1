//! Server pools and backend connections: routing a key to a server,
//! connecting, sending queued requests, reading replies, and the failure
//! path (close, fail what was queued, count, eject, rebuild the table).
//!
//! A request enters a server connection's `inq`; once written it moves to
//! `outq`; the next reply parsed on that connection belongs to the front of
//! `outq` (redis and memcached answer in order).

use crate::conf::{Listen, PoolConf, ServerAddr, ServerConf};
use crate::conn::{Conn, ListenerConn, ServerConn, ServerRx};
use crate::core::{gather, Context, Deadline, Side, IOV_MAX};
use crate::hashkit::{self, Selector, ServerSpec};
use crate::metrics::{POOL_METRICS, SERVER_METRICS};
use crate::msg::MsgId;
use crate::net::{self, IoStep, Listener, Stream};
use crate::proto::memcache::response::{McRspKind, McRspParser, McValue, Progress as McProgress};
use crate::proto::redis::response::{Progress, RspKind, RspParser};
use std::collections::VecDeque;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant, SystemTime};

pub struct Pool {
    pub conf: PoolConf,
    /// Pool-global indices into `Context::servers`, in sorted-name order.
    pub servers: Vec<usize>,
    pub selector: Selector,
    /// Earliest retry time of an ejected server (auto_eject_hosts).
    pub next_rebuild: Option<Instant>,
    pub nclients: usize,
    pub stats: PoolStats,
}

#[derive(Debug, Default, Clone)]
pub struct PoolStats {
    pub client_eof: i64,
    pub client_err: i64,
    pub client_connections: i64,
    pub server_ejects: i64,
    pub forward_error: i64,
    pub fragments: i64,
}

impl PoolStats {
    /// Values in `metrics::POOL_METRICS` order: the table decides the order.
    pub fn values(&self) -> Vec<i64> {
        POOL_METRICS.iter().map(|m| self.get(m.name)).collect()
    }

    fn get(&self, name: &str) -> i64 {
        match name {
            "client_eof" => self.client_eof,
            "client_err" => self.client_err,
            "client_connections" => self.client_connections,
            "server_ejects" => self.server_ejects,
            "forward_error" => self.forward_error,
            "fragments" => self.fragments,
            _ => 0,
        }
    }
}

pub struct Server {
    pub pool: usize,
    pub conf: ServerConf,
    pub conns: Vec<usize>,
    /// Round-robin cursor over `conns` once all exist.
    pub rr: usize,
    pub failures: u32,
    /// Ejected until then.
    pub next_retry: Option<Instant>,
    pub stats: ServerStats,
}

#[derive(Debug, Default, Clone)]
pub struct ServerStats {
    pub server_eof: i64,
    pub server_err: i64,
    pub server_timedout: i64,
    pub server_connections: i64,
    pub server_ejected_at: i64,
    pub requests: i64,
    pub request_bytes: i64,
    pub responses: i64,
    pub response_bytes: i64,
    pub in_queue: i64,
    pub in_queue_bytes: i64,
    pub out_queue: i64,
    pub out_queue_bytes: i64,
}

impl ServerStats {
    /// Values in `metrics::SERVER_METRICS` order: the table decides the
    /// order.
    pub fn values(&self) -> Vec<i64> {
        SERVER_METRICS.iter().map(|m| self.get(m.name)).collect()
    }

    fn get(&self, name: &str) -> i64 {
        match name {
            "server_eof" => self.server_eof,
            "server_err" => self.server_err,
            "server_timedout" => self.server_timedout,
            "server_connections" => self.server_connections,
            "server_ejected_at" => self.server_ejected_at,
            "requests" => self.requests,
            "request_bytes" => self.request_bytes,
            "responses" => self.responses,
            "response_bytes" => self.response_bytes,
            "in_queue" => self.in_queue,
            "in_queue_bytes" => self.in_queue_bytes,
            "out_queue" => self.out_queue,
            "out_queue_bytes" => self.out_queue_bytes,
            _ => 0,
        }
    }
}

impl Context {
    pub fn add_pool(&mut self, conf: PoolConf) {
        let pidx = self.pools.len();
        let mut idx = Vec::new();
        for sc in &conf.servers {
            idx.push(self.servers.len());
            self.servers.push(Server {
                pool: pidx,
                conf: sc.clone(),
                conns: Vec::new(),
                rr: 0,
                failures: 0,
                next_retry: None,
                stats: ServerStats::default(),
            });
        }
        let selector = Selector::build(conf.distribution, &[]);
        self.pools.push(Pool {
            conf,
            servers: idx,
            selector,
            next_rebuild: None,
            nclients: 0,
            stats: PoolStats::default(),
        });
        self.rebuild(pidx);
    }

    pub fn rebuild(&mut self, pidx: usize) {
        if let Some(pool) = self.pools.get_mut(pidx) {
            rebuild_pool(pool, &self.servers, self.now);
        }
    }

    pub fn listen(&mut self) -> Result<(), String> {
        for pidx in 0..self.pools.len() {
            let conf = &self.pools[pidx].conf;
            let sock = match &conf.listen {
                Listen::Tcp(addr) => net::tcp_listen(*addr, conf.backlog, conf.reuseport)
                    .map(Listener::Tcp)
                    .map_err(|e| {
                        format!(
                            "{} on p {} to addr '{}' failed: {}",
                            e.step,
                            e.fd,
                            conf.listen_str,
                            e.text()
                        )
                    }),
                Listen::Unix { path, perm } => {
                    let _ = std::fs::remove_file(path);
                    let l = mio::net::UnixListener::bind(path).map_err(|e| {
                        format!(
                            "bind on p to addr '{}' failed: {}",
                            conf.listen_str,
                            net::strerror(e.raw_os_error().unwrap_or(0))
                        )
                    })?;
                    if *perm != 0 {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*perm))
                            .map_err(|e| format!("chmod of '{path}' failed: {e}"))?;
                    }
                    Ok(Listener::Unix(l))
                }
            }?;
            let name = conf.name.clone();
            let listen_str = conf.listen_str.clone();
            let key = self
                .conns
                .insert(Conn::Listener(ListenerConn { sock, pool: pidx }));
            self.register(key)
                .map_err(|e| format!("registering listener failed: {e}"))?;
            crate::log_notice!(
                "p {} listening on '{}' in {} pool '{}' with {} servers",
                key,
                listen_str,
                if self.pools[pidx].conf.redis {
                    "redis"
                } else {
                    "memcache"
                },
                name,
                self.pools[pidx].servers.len()
            );
        }
        Ok(())
    }

    pub fn preconnect(&mut self) {
        for pidx in 0..self.pools.len() {
            if !self.pools[pidx].conf.preconnect {
                continue;
            }
            for s in self.pools[pidx].servers.clone() {
                if self.servers[s].conns.is_empty() {
                    let _ = self.server_connect(s);
                }
            }
        }
    }

    /// Picks the server for `key` in pool `pidx` (see [`route`]).
    pub fn route(&mut self, pidx: usize, key: &[u8]) -> Result<usize, i32> {
        route(&mut self.pools, &self.servers, self.now, pidx, key)
    }

    /// Queues request `mid` on a connection to server `s`.
    pub fn forward(&mut self, mid: MsgId, s: usize) {
        let sk = match self.server_conn(s) {
            Ok(sk) => sk,
            Err(errno) => {
                self.fail_request(mid, errno);
                return;
            }
        };
        let timeout = self.pools[self.servers[s].pool].conf.timeout_ms;
        let Some(m) = self.msgs.get_mut(mid) else {
            return;
        };
        m.server = Some(s);
        m.server_conn = Some(sk);
        let bytes = m.req_len as i64;
        if let (Some(ms), false) = (timeout, m.noreply) {
            let at = self.now + Duration::from_millis(ms);
            m.deadline = Some(at);
            let pidx = self.servers[s].pool;
            if self.timers.len() <= pidx {
                self.timers.resize_with(pidx + 1, VecDeque::new);
            }
            self.timers[pidx].push_back(Deadline {
                at,
                mid,
                seq: m.seq,
            });
        }
        let st = &mut self.servers[s].stats;
        st.in_queue += 1;
        st.in_queue_bytes += bytes;
        if let Some(Conn::Server(c)) = self.conns.get_mut(sk) {
            c.inq.push_back(mid);
        }
        self.dirty_servers.push(sk);
    }

    /// A connection to server `s`: a new one while fewer than
    /// `server_connections` exist, else the next in turn.
    fn server_conn(&mut self, s: usize) -> Result<usize, i32> {
        let max = self.pools[self.servers[s].pool]
            .conf
            .server_connections
            .max(1) as usize;
        let srv = &mut self.servers[s];
        if srv.conns.len() >= max {
            // Least recently used first: the connections in creation order.
            let k = srv.conns[srv.rr % srv.conns.len()];
            srv.rr = (srv.rr + 1) % srv.conns.len();
            return Ok(k);
        }
        self.server_connect(s)
    }

    fn server_connect(&mut self, s: usize) -> Result<usize, i32> {
        let pidx = self.servers[s].pool;
        let sock = match &self.servers[s].conf.addr {
            ServerAddr::Tcp { host, port } => {
                let addr = match (host.as_str(), *port)
                    .to_socket_addrs()
                    .map(|mut a| a.next())
                {
                    Ok(Some(a)) => a,
                    _ => {
                        crate::log_error!(
                            "address resolution of node '{}' service '{}' failed",
                            host,
                            port
                        );
                        self.server_failed(s);
                        return Err(libc::EHOSTDOWN);
                    }
                };
                match mio::net::TcpStream::connect(addr) {
                    Ok(t) => {
                        let _ = t.set_nodelay(true);
                        if self.pools[pidx].conf.tcpkeepalive {
                            let _ = net::set_int_opt(
                                std::os::fd::AsRawFd::as_raw_fd(&t),
                                libc::SOL_SOCKET,
                                libc::SO_KEEPALIVE,
                                1,
                            );
                        }
                        Stream::Tcp(t)
                    }
                    Err(e) => {
                        self.server_failed(s);
                        return Err(e.raw_os_error().unwrap_or(libc::ECONNREFUSED));
                    }
                }
            }
            ServerAddr::Unix { path } => match mio::net::UnixStream::connect(path) {
                Ok(u) => Stream::Unix(u),
                Err(e) => {
                    self.server_failed(s);
                    return Err(e.raw_os_error().unwrap_or(libc::ECONNREFUSED));
                }
            },
        };
        let mut conn = ServerConn {
            sock,
            server: s,
            rx: ServerRx::default(),
            inq: VecDeque::new(),
            outq: VecDeque::new(),
            wsent: 0,
            connected: false,
        };
        // AUTH goes before SELECT (docs/compatibility.md §13), both ahead of any request.
        let (auth, db) = (
            self.pools[pidx].conf.redis_auth.clone(),
            self.pools[pidx].conf.redis_db,
        );
        if let Some(pw) = auth {
            let mid = self.internal_msg(&[b"AUTH", pw.as_bytes()], false);
            conn.inq.push_back(mid);
        }
        if db > 0 {
            let mid = self.internal_msg(&[b"SELECT", db.to_string().as_bytes()], true);
            conn.inq.push_back(mid);
        }
        let key = self.conns.insert(Conn::Server(conn));
        if let Err(e) = self.register(key) {
            self.server_close(key, e.raw_os_error().unwrap_or(libc::EINVAL), false);
            return Err(libc::EINVAL);
        }
        for mid in self.server_inq(key) {
            if let Some(m) = self.msgs.get_mut(mid) {
                m.server_conn = Some(key);
            }
        }
        self.servers[s].conns.push(key);
        Ok(key)
    }

    fn server_inq(&self, key: usize) -> Vec<MsgId> {
        match self.conns.get(key) {
            Some(Conn::Server(c)) => c.inq.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    fn internal_msg(&mut self, args: &[&[u8]], is_select: bool) -> MsgId {
        let mut wire = Vec::new();
        crate::proto::redis::write_command(&mut wire, args);
        let mid = self.alloc_msg(None);
        let mut segs = Vec::new();
        self.mbufs.push_bytes(&wire, &mut segs);
        let m = &mut self.msgs[mid];
        m.req = segs;
        m.req_len = wire.len();
        m.internal = true;
        m.is_select = is_select;
        mid
    }

    pub fn server_connect_done(&mut self, sk: usize) {
        let Some(Conn::Server(c)) = self.conns.get(sk) else {
            return;
        };
        let err = match c.sock.take_error() {
            Ok(Some(e)) => e.raw_os_error(),
            Err(e) => e.raw_os_error(),
            Ok(None) => match c.sock.connected() {
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
        self.servers[s].stats.server_connections += 1;
        self.dirty_servers.push(sk);
    }

    /// Writes as much of the in queue as the socket takes, in one `writev`
    /// per round, moving written requests to the out queue.
    pub fn server_flush(&mut self, sk: usize) {
        let mut iov = std::mem::take(&mut self.iov);
        self.server_flush_with(sk, &mut iov);
        self.iov = iov;
    }

    fn server_flush_with(&mut self, sk: usize, iov: &mut Vec<libc::iovec>) {
        loop {
            let Some(Conn::Server(c)) = self.conns.get(sk) else {
                return;
            };
            if !c.connected || c.inq.is_empty() {
                return;
            }
            gather(&self.msgs, &self.mbufs, &c.inq, c.wsent, Side::Request, iov);
            let full = iov.len() == IOV_MAX;
            match c.sock.writev(iov) {
                IoStep::Done(n) => {
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

    fn server_advance(&mut self, sk: usize, mut n: usize) {
        loop {
            let Some(Conn::Server(c)) = self.conns.get_mut(sk) else {
                return;
            };
            let Some(&mid) = c.inq.front() else { return };
            let len = self.msgs.get(mid).map_or(0, |m| m.req_len);
            let left = len - c.wsent.min(len);
            if n < left {
                c.wsent += n;
                return;
            }
            n -= left;
            c.wsent = 0;
            c.inq.pop_front();
            let s = c.server;
            let (noreply, internal) = self
                .msgs
                .get(mid)
                .map_or((false, true), |m| (m.noreply, m.internal));
            if !internal {
                let st = &mut self.servers[s].stats;
                st.in_queue -= 1;
                st.in_queue_bytes -= len as i64;
                st.requests += 1;
                st.request_bytes += len as i64;
            }
            if noreply {
                self.server_done(mid);
                self.complete(mid);
            } else {
                if !internal {
                    let st = &mut self.servers[s].stats;
                    st.out_queue += 1;
                    st.out_queue_bytes += len as i64;
                }
                if let Some(Conn::Server(c)) = self.conns.get_mut(sk) {
                    c.outq.push_back(mid);
                }
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

    pub fn server_read(&mut self, sk: usize, hup: bool) {
        let (mut rx, redis) = match self.conns.get_mut(sk) {
            Some(Conn::Server(c)) => (
                std::mem::take(&mut c.rx),
                self.pools[self.servers[c.server].pool].conf.redis,
            ),
            _ => return,
        };
        let mut close: Option<(i32, bool)> = None;
        'read: loop {
            let Some(Conn::Server(c)) = self.conns.get(sk) else {
                return;
            };
            match rx.inbuf.read(&c.sock, &mut self.mbufs) {
                IoStep::Done(_) => {}
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
            loop {
                let (data, base) = rx.inbuf.unparsed(&self.mbufs);
                if data.is_empty() {
                    break;
                }
                let (n, prog) = if redis {
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
                    Progress::Incomplete => break,
                    Progress::Complete(end) => {
                        let reply = if redis {
                            self.redis_reply(&rx.redis)
                        } else {
                            mc_reply(&rx.mc)
                        };
                        if let Err(errno) = self.on_reply(sk, &rx, reply, end) {
                            close = Some((errno, false));
                            break 'read;
                        }
                        rx.inbuf.consume(&mut self.mbufs, end);
                        rx.redis.reset();
                        rx.mc.reset();
                    }
                    Progress::Error => {
                        crate::log_error!("s {} parsed bad rsp from server", sk);
                        close = Some((libc::EINVAL, false));
                        break 'read;
                    }
                }
            }
            if rx.inbuf.drained && !hup {
                break;
            }
        }
        if let Some(Conn::Server(c)) = self.conns.get_mut(sk) {
            c.rx = rx;
        } else {
            rx.inbuf.clear(&mut self.mbufs);
        }
        if let Some((errno, eof)) = close {
            if eof {
                crate::log_info!("s {} active is done", sk);
            }
            self.server_close_eof(sk, errno, eof);
        }
    }

    fn redis_reply<'a>(&self, p: &'a RspParser) -> Reply<'a> {
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

    /// A whole reply `reply.start..end` arrived: hand it to the request it
    /// answers. `Err` closes the connection (stray or transient reply).
    fn on_reply(&mut self, sk: usize, rx: &ServerRx, reply: Reply, end: u64) -> Result<(), i32> {
        let Some(Conn::Server(c)) = self.conns.get_mut(sk) else {
            return Err(libc::EINVAL);
        };
        let s = c.server;
        let Some(mid) = c.outq.pop_front() else {
            crate::log_error!("s {} unexpected reply from server", sk);
            return Err(libc::EINVAL);
        };
        let start = reply.start;
        let internal = self.msgs.get(mid).is_none_or(|m| m.internal);
        if internal {
            if let (true, Some(text)) = (
                self.msgs.get(mid).is_some_and(|m| m.is_select),
                reply.error_text,
            ) {
                let pool = &self.pools[self.servers[s].pool].conf;
                crate::log_warn!(
                    "SELECT {} failed on {} | {}: {}",
                    pool.redis_db,
                    pool.name,
                    self.servers[s].conf.name,
                    String::from_utf8_lossy(text)
                );
            }
            self.free_msg(mid);
            return Ok(());
        }
        if reply.transient {
            // The request fails with the rest of the connection (docs/compatibility.md §7.6).
            if let Some(Conn::Server(c)) = self.conns.get_mut(sk) {
                c.outq.push_front(mid);
            }
            return Err(libc::EINVAL);
        }
        let len = (end - start) as usize;
        {
            let req_len = self.msgs.get(mid).map_or(0, |m| m.req_len) as i64;
            let st = &mut self.servers[s].stats;
            st.out_queue -= 1;
            st.out_queue_bytes -= req_len;
            st.responses += 1;
            st.response_bytes += len as i64;
        }
        self.servers[s].failures = 0;
        self.server_done(mid);
        let merge = self
            .msgs
            .get(mid)
            .and_then(|m| m.parent)
            .and_then(|pm| self.msgs.get(pm))
            .and_then(|pm| pm.frag.as_ref())
            .and_then(|f| f.merge);
        let rel = |a: u64| (a - start) as u32;
        if let Some(m) = self.msgs.get_mut(mid) {
            rx.inbuf.segs(&mut self.mbufs, start, end, &mut m.rsp);
            if m.parent.is_some() {
                m.integer = reply.integer;
                m.elems = reply.elems.iter().map(|&(a, b)| (rel(a), rel(b))).collect();
                if !reply.mc_values.is_empty() {
                    m.elems = reply
                        .mc_values
                        .iter()
                        .map(|v| (rel(v.start), rel(v.end)))
                        .collect();
                    m.val_keys = reply
                        .mc_values
                        .iter()
                        .map(|v| (rel(v.key_start), rel(v.key_start) + v.key_len))
                        .collect();
                }
                m.bad_reply = !reply.shape.fits(merge);
            }
        }
        self.complete(mid);
        Ok(())
    }

    fn server_close_eof(&mut self, sk: usize, errno: i32, eof: bool) {
        if eof {
            if let Some(Conn::Server(c)) = self.conns.get(sk) {
                let s = c.server;
                self.servers[s].stats.server_eof += 1;
            }
            self.server_close(sk, errno, false);
        } else {
            self.server_close(sk, errno, false);
        }
    }

    /// Closes a server connection: every request queued or in flight on it
    /// fails with `errno` (docs/compatibility.md §9), and one failure is counted.
    pub fn server_close(&mut self, sk: usize, errno: i32, timed_out: bool) {
        if !matches!(self.conns.get(sk), Some(Conn::Server(_))) {
            return;
        }
        let mut conn = self.conns.remove(sk);
        self.deregister(&mut conn);
        let Conn::Server(mut c) = conn else { return };
        let s = c.server;
        c.rx.inbuf.clear(&mut self.mbufs);
        self.servers[s].conns.retain(|&k| k != sk);
        {
            let st = &mut self.servers[s].stats;
            if c.connected {
                st.server_connections -= 1;
            }
            if timed_out {
                st.server_timedout += 1;
            } else if errno != 0 {
                st.server_err += 1;
            }
        }
        crate::log_info!(
            "close s {} to '{}': {}",
            sk,
            self.servers[s].conf.pname,
            net::strerror(errno)
        );
        let sent: Vec<MsgId> = c.outq.drain(..).collect();
        let unsent: Vec<MsgId> = c.inq.drain(..).collect();
        for (queue, was_sent) in [(sent, true), (unsent, false)] {
            for mid in queue {
                let Some(m) = self.msgs.get(mid) else {
                    continue;
                };
                if m.internal {
                    self.free_msg(mid);
                    continue;
                }
                let len = m.req_len as i64;
                let st = &mut self.servers[s].stats;
                if was_sent {
                    st.out_queue -= 1;
                    st.out_queue_bytes -= len;
                } else {
                    st.in_queue -= 1;
                    st.in_queue_bytes -= len;
                }
                self.server_done(mid);
                self.fail_request(mid, errno);
            }
        }
        self.server_failed(s);
    }

    /// One failure of server `s` (docs/compatibility.md §9.3): may eject it.
    pub fn server_failed(&mut self, s: usize) {
        let pidx = self.servers[s].pool;
        let conf = &self.pools[pidx].conf;
        if !conf.auto_eject_hosts {
            return;
        }
        let (limit, retry) = (conf.server_failure_limit, conf.server_retry_timeout_ms);
        let srv = &mut self.servers[s];
        srv.failures += 1;
        if srv.failures < limit.max(1) {
            return;
        }
        srv.failures = 0;
        srv.next_retry = Some(self.now + Duration::from_millis(retry));
        srv.stats.server_ejected_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        self.pools[pidx].stats.server_ejects += 1;
        crate::log_warn!(
            "server '{}' ejected for {} msec",
            self.servers[s].conf.pname,
            retry
        );
        self.rebuild(pidx);
    }
}

/// Picks the server for `key` in pool `pidx` (docs/compatibility.md §5), first rebuilding the
/// table if an ejected server's retry time has passed. A free function over
/// the two fields it needs, so a key borrowed from the mbufs can be passed.
pub fn route(
    pools: &mut [Pool],
    servers: &[Server],
    now: Instant,
    pidx: usize,
    key: &[u8],
) -> Result<usize, i32> {
    let pool = pools.get_mut(pidx).ok_or(libc::EINVAL)?;
    if pool.conf.auto_eject_hosts && pool.next_rebuild.is_some_and(|t| t <= now) {
        rebuild_pool(pool, servers, now);
    }
    if pool.selector.is_empty() {
        return Err(libc::ECONNREFUSED);
    }
    let n = pool.servers.len();
    let idx = hashkit::select(
        &mut pool.selector,
        pool.conf.hash,
        pool.conf.hash_tag,
        key,
        n,
    )
    .ok_or(libc::ECONNREFUSED)?;
    pool.servers.get(idx).copied().ok_or(libc::ECONNREFUSED)
}

/// Rebuilds a pool's table from its live servers (docs/compatibility.md §5.2-§5.6) and notes
/// when the next ejected server may come back.
fn rebuild_pool(pool: &mut Pool, servers: &[Server], now: Instant) {
    let mut next = None::<Instant>;
    let specs: Vec<ServerSpec> = pool
        .servers
        .iter()
        .filter_map(|&s| servers.get(s))
        .map(|srv| {
            let live = srv.next_retry.is_none_or(|t| t <= now);
            if let (false, Some(t)) = (live, srv.next_retry) {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
            ServerSpec {
                name: srv.conf.name.as_bytes(),
                weight: srv.conf.weight,
                live,
            }
        })
        .collect();
    pool.selector = Selector::build(pool.conf.distribution, &specs);
    pool.next_rebuild = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric of the table is counted by a field (a name with no
    /// field would read 0 for ever).
    #[test]
    fn every_metric_has_a_counter() {
        let pool = PoolStats {
            client_eof: 1,
            client_err: 2,
            client_connections: 3,
            server_ejects: 4,
            forward_error: 5,
            fragments: 6,
        };
        assert_eq!(pool.values(), [1, 2, 3, 4, 5, 6]);
        let server = ServerStats {
            server_eof: 1,
            server_err: 2,
            server_timedout: 3,
            server_connections: 4,
            server_ejected_at: 5,
            requests: 6,
            request_bytes: 7,
            responses: 8,
            response_bytes: 9,
            in_queue: 10,
            in_queue_bytes: 11,
            out_queue: 12,
            out_queue_bytes: 13,
        };
        assert_eq!(server.values(), (1..=13).collect::<Vec<i64>>());
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
            Shape::Memcache(kind) => {
                merge == Some(crate::msg::Merge::Values) && kind == McRspKind::Values
            }
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
