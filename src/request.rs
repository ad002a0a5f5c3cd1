//! The request lifecycle: a parsed request is planned (`plan.rs`), then
//! carried out here (a local reply, a forward to one server, or one
//! fragment per server), and completed here whichever way its reply came:
//! from a server, from the proxy, or from a failure.
//!
//! ```text
//!   client_parse ─► redis_request / memcache_request ─► plan ─┬─ Reply ─────────────┐
//!                                                              ├─ Forward ─► forward ─┤ (server.rs)
//!                                                              └─ Split ─► fragments ─┤
//!   client_flush ◄── client_ready ◄── merge (fragment.rs) ◄── complete ◄──────────────┘
//! ```
//!
//! Splitting (`split.rs`) and merging (`fragment.rs`) a request of many
//! keys may take several turns; the client gets the reply when it is whole.
//!
//! What completing does depends only on the message's [`Origin`]: a
//! client's request becomes ready to write, a fragment reports to its
//! parent, an internal request's reply was already consumed by the server
//! code, an orphan is freed.

use crate::client::CLIENT_HARD_HELD;
use crate::conn::{ClientRx, Conn, ConnId};
use crate::core::Context;
use crate::mbuf::Seg;
use crate::msg::After;
use crate::msg::{Frag, Merge, MsgId, Origin};
use crate::net;
use crate::plan::{self, ClientState, Plan, PLACEHOLDER};
use crate::proto::memcache::request::McKey;
use crate::proto::redis::reply::{self, Proto};
use crate::proto::redis::request::Arg;
use crate::split::Form;
use crate::topology::{PoolId, ServerId};

/// The arguments of the request being handled, read in place from the
/// client's input (a key split across two mbufs goes through the scratch).
struct InputArgs<'a> {
    rx: &'a ClientRx,
    mbufs: &'a crate::mbuf::MbufPool,
    scratch: &'a mut Vec<u8>,
}

impl plan::Args for InputArgs<'_> {
    fn count(&self) -> usize {
        self.rx.redis.args.len()
    }
    fn bytes(&mut self, i: usize) -> &[u8] {
        match self.rx.redis.args.get(i) {
            Some(a) => {
                let (from, to) = a.data_range();
                self.rx.inbuf.bytes(self.mbufs, from, to, self.scratch)
            }
            None => &[],
        }
    }
    fn range(&self, i: usize) -> Option<(u64, u64)> {
        self.rx.redis.args.get(i).map(Arg::data_range)
    }
}

impl Context {
    /// A request joins the client's out queue in arrival order.
    pub fn new_request(&mut self, ck: ConnId) -> MsgId {
        let mid = self.alloc_msg(Origin::Client(ck));
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            c.outq.push_back(mid);
        }
        mid
    }

    /// Makes `bytes` (built by the proxy) the request to send.
    pub fn set_request(&mut self, mid: MsgId, bytes: &[u8]) {
        if let Some(m) = self.msgs.get_mut(mid) {
            self.mbufs.push_bytes(bytes, &mut m.req);
            m.req_len += bytes.len();
        }
    }

    /// The reply is made by the proxy: ready at once.
    pub fn local_reply(&mut self, mid: MsgId, bytes: &[u8]) {
        if let Some(m) = self.msgs.get_mut(mid) {
            self.mbufs.push_bytes(bytes, &mut m.rsp);
            m.done = true;
            if let Some(ck) = m.client() {
                self.dirty_client(ck);
            }
        }
    }

    /// Close the client once this message's reply is written; read no more.
    pub fn close_after(&mut self, ck: ConnId, mid: MsgId) {
        if let Some(m) = self.msgs.get_mut(mid) {
            m.close_after = true;
        }
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            c.closing = true;
        }
    }

    /// Handles one parsed redis request `p.start..end`.
    pub fn redis_request(&mut self, ck: ConnId, rx: &ClientRx, end: u64) {
        let p = &rx.redis;
        let Some(Conn::Client(c)) = self.conns.get(ck) else {
            return;
        };
        let (pid, proto) = (c.pool, c.proto);
        let mid = self.new_request(ck);
        self.hold(ck, mid, (end - p.start) as usize);
        if let Some(m) = self.msgs.get_mut(mid) {
            m.proto = proto;
        }
        let (Some(pool), Some(Conn::Client(c))) = (self.topo.pool(pid), self.conns.get(ck)) else {
            self.fail_request(mid, libc::EINVAL);
            return;
        };
        // Only looked at while a server of the pool is out (`repair.rs`).
        self.cur_access = match pool.repair {
            Some(_) => crate::repair::redis_access(p.name()),
            None => crate::repair::Access::Read,
        };
        let state = ClientState {
            authed: c.authed,
            proto: c.proto,
            in_tx: c.tx.is_some(),
            id: c.id,
            name: c.name.as_deref(),
        };
        let mut args = InputArgs {
            rx,
            mbufs: &self.mbufs,
            scratch: &mut self.key_scratch,
        };
        let decided = plan::redis(&pool.conf, state, p.spec(), &mut args);
        self.carry_out(ck, mid, rx, pid, decided, p.start, end);
    }

    /// Handles one parsed memcached request `p.start..end`.
    pub fn memcache_request(&mut self, ck: ConnId, rx: &ClientRx, end: u64) {
        let p = &rx.mc;
        let Some(Conn::Client(c)) = self.conns.get(ck) else {
            return;
        };
        let pid = c.pool;
        let mid = self.new_request(ck);
        self.hold(ck, mid, (end - p.start) as usize);
        if let Some(m) = self.msgs.get_mut(mid) {
            m.noreply = p.noreply;
        }
        self.cur_access = match self.topo.pool(pid).and_then(|pool| pool.repair.as_ref()) {
            Some(_) => crate::repair::mc_access(p.cmd),
            None => crate::repair::Access::Read,
        };
        let decided = plan::memcache(p.cmd, p.keys.len(), p.keys.first().map(McKey::range));
        self.carry_out(ck, mid, rx, pid, decided, p.start, end);
    }

    /// Does what the plan says.
    #[allow(clippy::too_many_arguments)]
    fn carry_out(
        &mut self,
        ck: ConnId,
        mid: MsgId,
        rx: &ClientRx,
        pid: PoolId,
        decided: Plan,
        start: u64,
        end: u64,
    ) {
        match decided {
            Plan::Reply(bytes) => self.local_reply(mid, &bytes),
            // QUIT (the only command that closes).
            Plan::ReplyClose(bytes) => {
                self.local_reply(mid, bytes);
                self.close_after(ck, mid);
                if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
                    c.quit = true;
                }
            }
            Plan::Auth { ok, reply } => {
                if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
                    c.authed = ok;
                }
                self.local_reply(mid, reply);
            }
            Plan::Forward(key) => self.forward_by_key(mid, rx, pid, key, start, end),
            Plan::ForwardKeys(keys) => self.forward_one_server(mid, rx, pid, &keys, start, end),
            Plan::Split {
                merge: Merge::Values,
                name,
                ..
            } => self.split_start(
                ck,
                mid,
                rx,
                pid,
                Merge::Values,
                Form::Memcache { verb: name },
                end,
            ),
            Plan::Split { merge, step, name } => {
                self.split_start(ck, mid, rx, pid, merge, Form::Redis { step, name }, end)
            }
            Plan::FanOut(merge) => {
                let mut segs = Vec::new();
                rx.inbuf.segs(&mut self.mbufs, start, end, &mut segs);
                self.fan_out(mid, pid, merge, &segs, (end - start) as usize);
                self.mbufs.release_segs(&segs);
            }
            Plan::Info => {
                let mut wanted = Vec::new();
                for a in rx.redis.args.iter().skip(1) {
                    let (from, to) = a.data_range();
                    wanted.extend_from_slice(rx.inbuf.bytes(
                        &self.mbufs,
                        from,
                        to,
                        &mut self.key_scratch,
                    ));
                    wanted.push(b' ');
                }
                let mut segs = Vec::new();
                self.mbufs.push_bytes(b"*1\r\n$4\r\nINFO\r\n", &mut segs);
                self.fan_out(mid, pid, Merge::Info, &segs, 14);
                self.mbufs.release_segs(&segs);
                if let Some(f) = self.msgs.get_mut(mid).and_then(|m| m.frag.as_mut()) {
                    f.sections = wanted;
                }
            }
            Plan::Scan { cursor } => self.scan(mid, rx, pid, cursor, end),
            Plan::SetName(name) => {
                if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
                    c.name = name;
                }
                self.local_reply(mid, b"+OK\r\n");
            }
            Plan::Hello2 { setname } => {
                let id = match self.conns.get_mut(ck) {
                    Some(Conn::Client(c)) => {
                        c.proto = Proto::Resp2;
                        c.authed = true;
                        if setname.is_some() {
                            c.name = setname;
                        }
                        c.id
                    }
                    _ => 0,
                };
                let mut r = Vec::new();
                reply::hello(
                    Proto::Resp2,
                    &mut r,
                    &reply::HelloInfo {
                        server: b"redis",
                        version: b"7.0.0",
                        id: i64::try_from(id).unwrap_or(i64::MAX),
                        mode: b"standalone",
                        role: b"master",
                    },
                );
                if let Some(m) = self.msgs.get_mut(mid) {
                    m.proto = Proto::Resp2;
                }
                self.local_reply(mid, &r);
            }
            Plan::Hello3 { setname } => {
                // Switched now, so requests pipelined behind HELLO already
                // go on RESP3 connections; undone if the backend refuses.
                if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
                    c.proto = Proto::Resp3;
                    c.authed = true;
                    if setname.is_some() {
                        c.name = setname;
                    }
                }
                let routed = self.topo.route(pid, PLACEHOLDER);
                if let Some(m) = self.msgs.get_mut(mid) {
                    m.proto = Proto::Resp3;
                    m.after = After::Hello3;
                }
                self.set_request(mid, b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
                match routed {
                    Ok(s) => self.forward(mid, s),
                    Err(errno) => self.fail_request(mid, errno),
                }
            }
            Plan::Multi => self.tx_begin(ck, mid),
            Plan::Exec => self.tx_exec(ck, mid),
            Plan::Discard => self.tx_discard(ck, mid),
            Plan::Queue(keys) => self.tx_queue(ck, mid, rx, &keys, start, end),
            Plan::QueueError(reply) => self.tx_refuse(ck, mid, &reply),
            Plan::McStats => {
                let text = self.mc_stats(pid, rx.mc.args().next().is_some());
                self.local_reply(mid, text.as_bytes());
            }
            Plan::McOneServer => {
                let keys = rx.mc.keys.iter().map(McKey::range);
                match self.one_owner(rx, pid, keys) {
                    Ok(_) => {}
                    Err(Spread::Servers) => {
                        self.local_reply(
                            mid,
                            b"SERVER_ERROR gat of keys on several servers is not supported by the proxy\r\n",
                        );
                        return;
                    }
                    Err(Spread::Errno(errno)) => {
                        self.fail_request(mid, errno);
                        return;
                    }
                }
                let first = rx.mc.keys.first().map(McKey::range);
                self.forward_by_key(mid, rx, pid, first, start, end);
            }
        }
    }

    /// memcached `stats`, in memcached's `STAT name value` lines: the
    /// proxy's process figures and the pool's counters. `stats <group>`
    /// (items, slabs, ...) has no proxy figures: an empty list.
    fn mc_stats(&self, pid: PoolId, group: bool) -> String {
        use std::fmt::Write as _;
        let mut t = String::new();
        if !group {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let _ = write!(t, "STAT pid {}\r\n", std::process::id());
            let _ = write!(t, "STAT uptime {}\r\n", self.started.elapsed().as_secs());
            let _ = write!(t, "STAT time {now}\r\n");
            let _ = write!(t, "STAT version {}\r\n", env!("CARGO_PKG_VERSION"));
            let _ = write!(t, "STAT proxy nutcracker\r\n");
            if let Some(p) = self.topo.pool(pid) {
                let _ = write!(t, "STAT curr_connections {}\r\n", p.nclients);
                let _ = write!(t, "STAT total_connections {}\r\n", self.total_conns);
                let _ = write!(
                    t,
                    "STAT pool {}\r\n",
                    p.conf.name.replace(char::is_whitespace, "_")
                );
                let _ = write!(t, "STAT servers {}\r\n", p.servers.len());
                let (mut req, mut rsp, mut req_b, mut rsp_b) = (0, 0, 0, 0);
                for srv in p.servers.iter().filter_map(|&s| self.topo.server(s)) {
                    req += srv.stats.requests;
                    rsp += srv.stats.responses;
                    req_b += srv.stats.request_bytes;
                    rsp_b += srv.stats.response_bytes;
                }
                let _ = write!(t, "STAT requests {req}\r\n");
                let _ = write!(t, "STAT responses {rsp}\r\n");
                let _ = write!(t, "STAT bytes_read {req_b}\r\n");
                let _ = write!(t, "STAT bytes_written {rsp_b}\r\n");
                let _ = write!(t, "STAT fragments {}\r\n", p.stats.fragments);
                let _ = write!(t, "STAT forward_error {}\r\n", p.stats.forward_error);
                let _ = write!(t, "STAT server_ejects {}\r\n", p.stats.server_ejects);
            }
        }
        t.push_str("END\r\n");
        t
    }

    /// The one server owning every key at these input ranges (`None`: no
    /// key), or why there is none.
    fn one_owner(
        &mut self,
        rx: &ClientRx,
        pid: PoolId,
        keys: impl Iterator<Item = (u64, u64)>,
    ) -> Result<Option<ServerId>, Spread> {
        let mut owner: Option<ServerId> = None;
        for (from, to) in keys {
            let k = rx.inbuf.bytes(&self.mbufs, from, to, &mut self.key_scratch);
            match self.topo.route_for(pid, k, self.cur_access) {
                Ok(s) if owner.is_none_or(|o| o == s) => owner = Some(s),
                Ok(_) => return Err(Spread::Servers),
                Err(errno) => return Err(Spread::Errno(errno)),
            }
        }
        Ok(owner)
    }

    /// A command whose keys must all be on one server (it cannot be
    /// split): forwarded whole to that server, or refused.
    fn forward_one_server(
        &mut self,
        mid: MsgId,
        rx: &ClientRx,
        pid: PoolId,
        keys: &[usize],
        start: u64,
        end: u64,
    ) {
        let ranges = keys
            .iter()
            .filter_map(|&i| rx.redis.args.get(i))
            .map(Arg::data_range);
        let owner = match self.one_owner(rx, pid, ranges) {
            Ok(owner) => owner,
            Err(Spread::Servers) => {
                self.local_reply(
                    mid,
                    b"-CROSSSLOT Keys in request don't hash to the same server of the pool (hash tags keep keys together)\r\n",
                );
                return;
            }
            Err(Spread::Errno(errno)) => {
                self.fail_request(mid, errno);
                return;
            }
        };
        let Some(s) = owner else {
            self.forward_by_key(mid, rx, pid, None, start, end);
            return;
        };
        if let Some(m) = self.msgs.get_mut(mid) {
            rx.inbuf.segs(&mut self.mbufs, start, end, &mut m.req);
            m.req_len = (end - start) as usize;
        }
        if self.migrating(pid) {
            let keys = keys
                .iter()
                .filter_map(|&i| rx.redis.args.get(i))
                .map(|a| {
                    let (from, to) = a.data_range();
                    rx.inbuf
                        .bytes(&self.mbufs, from, to, &mut self.key_scratch)
                        .to_vec()
                })
                .collect();
            self.forward_moving(mid, pid, s, keys);
            return;
        }
        self.forward(mid, s);
    }

    /// Sends `req` (retained once per server) to every server of the pool;
    /// their replies are merged by `merge`.
    fn fan_out(&mut self, mid: MsgId, pid: PoolId, merge: Merge, req: &[Seg], len: usize) {
        let servers = self
            .topo
            .pool(pid)
            .map(|p| p.servers.clone())
            .unwrap_or_default();
        if servers.is_empty() {
            self.fail_request(mid, libc::ECONNREFUSED);
            return;
        }
        let (proto, noreply) = self
            .msgs
            .get(mid)
            .map_or((Proto::Resp2, false), |m| (m.proto, m.noreply));
        let mut frag = self.new_frag();
        frag.merge = Some(merge);
        for s in servers {
            let child = self.alloc_msg(Origin::Fragment(mid));
            if let Some(m) = self.msgs.get_mut(child) {
                for seg in req {
                    self.mbufs.retain(seg.id);
                    m.req.push(*seg);
                }
                m.req_len = len;
                m.proto = proto;
                m.noreply = noreply;
                // Fan-out replies are checked by their merge, not by count.
                m.reply_elems = u32::MAX;
            }
            frag.children.push(child);
            frag.servers.push(s);
        }
        self.start_fragments(mid, pid, frag);
    }

    /// `SCAN cursor [options]`: the cursor names a server (`cursor % n`,
    /// by its position in the pool) and that server's own cursor
    /// (`cursor / n`); the reply's cursor is encoded the same way, moving to
    /// the next server when one is done, so a full iteration visits every
    /// server once.
    fn scan(&mut self, mid: MsgId, rx: &ClientRx, pid: PoolId, cursor: u64, end: u64) {
        let servers = self
            .topo
            .pool(pid)
            .map(|p| p.servers.clone())
            .unwrap_or_default();
        let n = servers.len() as u64;
        let Some(&s) = servers.get((cursor % n.max(1)) as usize) else {
            self.fail_request(mid, libc::ECONNREFUSED);
            return;
        };
        let own = (cursor / n).to_string();
        let args = &rx.redis.args;
        let child = self.alloc_msg(Origin::Fragment(mid));
        let proto = self.msgs.get(mid).map_or(Proto::Resp2, |m| m.proto);
        if let Some(m) = self.msgs.get_mut(child) {
            let mut head = Vec::with_capacity(32);
            reply::array(&mut head, args.len());
            reply::bulk(&mut head, b"SCAN");
            reply::bulk(&mut head, own.as_bytes());
            self.mbufs.push_bytes(&head, &mut m.req);
            let mut len = head.len();
            if let Some(first) = args.get(2) {
                rx.inbuf.segs(&mut self.mbufs, first.start, end, &mut m.req);
                len += (end - first.start) as usize;
            }
            m.req_len = len;
            m.proto = proto;
            // SCAN answers [cursor, keys].
            m.reply_elems = 2;
        }
        let mut frag = self.new_frag();
        frag.merge = Some(Merge::Scan);
        frag.index = (cursor % n) as u32;
        frag.count = n as u32;
        frag.children.push(child);
        frag.servers.push(s);
        self.start_fragments(mid, pid, frag);
    }

    /// Routes by `key` (or `placeholder`) and forwards the whole request.
    fn forward_by_key(
        &mut self,
        mid: MsgId,
        rx: &ClientRx,
        pid: PoolId,
        key: Option<(u64, u64)>,
        start: u64,
        end: u64,
    ) {
        let routed = match key {
            Some((from, to)) => {
                let k = rx.inbuf.bytes(&self.mbufs, from, to, &mut self.key_scratch);
                self.topo.route_for(pid, k, self.cur_access)
            }
            None => self.topo.route(pid, PLACEHOLDER),
        };
        let s = match routed {
            Ok(s) => s,
            Err(errno) => {
                self.fail_request(mid, errno);
                return;
            }
        };
        if let Some(m) = self.msgs.get_mut(mid) {
            rx.inbuf.segs(&mut self.mbufs, start, end, &mut m.req);
            m.req_len = (end - start) as usize;
        }
        if let (Some((from, to)), true) = (key, self.migrating(pid)) {
            // The key may still be on its previous owner (`migrate.rs`).
            let k = rx
                .inbuf
                .bytes(&self.mbufs, from, to, &mut self.key_scratch)
                .to_vec();
            self.forward_moving(mid, pid, s, vec![k]);
            return;
        }
        self.forward(mid, s);
    }

    /// Hangs `frag` (its `children` made, with their `servers`) on the
    /// parent and sends its fragments.
    pub fn start_fragments(&mut self, mid: MsgId, pid: PoolId, mut frag: Box<Frag>) {
        if let Some(p) = self.topo.pool_mut(pid) {
            p.stats.fragments += frag.children.len() as i64;
        }
        frag.pending = frag.children.len() as u32;
        // Fragments travel in their client's protocol.
        let proto = self.msgs.get(mid).map_or(Proto::Resp2, |m| m.proto);
        let mut sent = std::mem::take(&mut self.frag_scratch.children);
        sent.clear();
        for (&c, &s) in frag.children.iter().zip(&frag.servers) {
            if let Some(m) = self.msgs.get_mut(c) {
                m.proto = proto;
            }
            sent.push((c, s));
        }
        frag.servers.clear();
        if let Some(m) = self.msgs.get_mut(mid) {
            m.frag = Some(frag);
        }
        for &(child, s) in &sent {
            self.forward_staged(child, pid, s);
        }
        self.frag_scratch.children = sent;
    }

    /// Fails a request with `errno`; 0 (a backend that just closed) still
    /// fails it, with the text `unknown` as in 0.5.0.
    pub fn fail_request(&mut self, mid: MsgId, errno: i32) {
        if let Some(m) = self.msgs.get_mut(mid) {
            m.err = if errno == 0 { net::ERR_UNKNOWN } else { errno };
        }
        self.complete(mid);
    }

    /// A request got its reply or failed: what happens next depends on who
    /// waits for it.
    pub fn complete(&mut self, mid: MsgId) {
        let Some(m) = self.msgs.get_mut(mid) else {
            return;
        };
        m.done = true;
        match m.origin {
            Origin::Fragment(parent) => {
                let Some(f) = self.msgs.get_mut(parent).and_then(|p| p.frag.as_mut()) else {
                    return;
                };
                f.pending = f.pending.saturating_sub(1);
                if f.pending == 0 {
                    // A huge reply is merged over the next turns.
                    let whole = self.merge(parent);
                    self.merge_went(parent, whole);
                }
            }
            Origin::Client(_) => self.client_ready(mid),
            Origin::Internal(crate::msg::Internal::Move(job)) => self.move_reply(mid, job),
            Origin::Internal(_) | Origin::Orphan => self.free_msg(mid),
        }
    }

    /// A client's request (or a merged parent) is ready to be written: an
    /// error becomes the proxy's error reply.
    pub fn client_ready(&mut self, mid: MsgId) {
        let Some(m) = self.msgs.get_mut(mid) else {
            return;
        };
        m.done = true;
        let Some(ck) = m.client() else {
            self.free_msg(mid);
            return;
        };
        if m.after == After::Hello3 {
            self.hello3_done(ck, mid);
        }
        let Some(m) = self.msgs.get_mut(mid) else {
            return;
        };
        if m.err != 0 && m.rsp.is_empty() && !m.noreply {
            let errno = m.err;
            if let Some(Conn::Client(c)) = self.conns.get(ck) {
                let pid = c.pool;
                let redis = match self.topo.pool_mut(pid) {
                    Some(p) => {
                        p.stats.forward_error += 1;
                        p.conf.redis
                    }
                    None => true,
                };
                let reply = if redis {
                    format!("-ERR {}\r\n", net::strerror(errno))
                } else {
                    format!("SERVER_ERROR {}\r\n", net::strerror(errno))
                };
                if let Some(m) = self.msgs.get_mut(mid) {
                    self.mbufs.push_bytes(reply.as_bytes(), &mut m.rsp);
                }
            }
        }
        let len = self.msgs.get(mid).map_or(0, |m| m.rsp_len());
        self.hold(ck, mid, len);
        if let Some(Conn::Client(c)) = self.conns.get(ck) {
            if c.held > CLIENT_HARD_HELD && c.outq.len() > 1 {
                crate::log_warn!(
                    "c {} closed: it holds {} bytes of replies it does not read",
                    ck,
                    c.held
                );
                self.client_close(ck, false);
                return;
            }
        }
        self.dirty_client(ck);
    }

    /// The backend's answer to `HELLO 3`: passed on when it switched; an
    /// error (or a failure to reach it) means no RESP3: `NOPROTO`, and the
    /// client stays in RESP2.
    fn hello3_done(&mut self, ck: ConnId, mid: MsgId) {
        let Some(m) = self.msgs.get_mut(mid) else {
            return;
        };
        let refused = m.err != 0
            || m.rsp
                .first()
                .is_none_or(|seg| self.mbufs.bytes(seg).first() == Some(&b'-'));
        if !refused {
            return;
        }
        self.mbufs.release_segs(&m.rsp);
        m.rsp.clear();
        m.err = 0;
        self.mbufs
            .push_bytes(b"-NOPROTO unsupported protocol version\r\n", &mut m.rsp);
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            c.proto = Proto::Resp2;
        }
    }

    /// Counts `bytes` more held by client `ck` for message `mid`.
    pub fn hold(&mut self, ck: ConnId, mid: MsgId, bytes: usize) {
        if let Some(m) = self.msgs.get_mut(mid) {
            m.held += bytes;
        }
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            c.held += bytes;
        }
    }
}

/// Why the keys of a request have no single owner.
enum Spread {
    /// They are on several servers.
    Servers,
    /// One could not be routed.
    Errno(i32),
}
