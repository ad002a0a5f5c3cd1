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
//! What completing does depends only on the message's [`Origin`]: a
//! client's request becomes ready to write, a fragment reports to its
//! parent, an internal request's reply was already consumed by the server
//! code, an orphan is freed.

use crate::client::CLIENT_HARD_HELD;
use crate::conn::{ClientRx, Conn, ConnId};
use crate::core::Context;
use crate::msg::{Frag, Merge, MsgId, Origin};
use crate::net;
use crate::plan::{self, Plan, PLACEHOLDER};
use crate::proto::memcache::request::McKey;
use crate::proto::redis::request::Arg;
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
                let (from, to) = arg_range(a);
                self.rx.inbuf.bytes(self.mbufs, from, to, self.scratch)
            }
            None => &[],
        }
    }
    fn range(&self, i: usize) -> Option<(u64, u64)> {
        self.rx.redis.args.get(i).map(arg_range)
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

    /// The reply is made by the proxy: ready at once.
    pub fn local_reply(&mut self, mid: MsgId, bytes: &[u8]) {
        if let Some(m) = self.msgs.get_mut(mid) {
            self.mbufs.push_bytes(bytes, &mut m.rsp);
            m.done = true;
            if let Some(ck) = m.client() {
                self.dirty_clients.push(ck);
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
        let (pid, authed) = (c.pool, c.authed);
        let mid = self.new_request(ck);
        self.hold(ck, mid, (end - p.start) as usize);
        let Some(pool) = self.topo.pool(pid) else {
            self.fail_request(mid, libc::EINVAL);
            return;
        };
        let mut args = InputArgs {
            rx,
            mbufs: &self.mbufs,
            scratch: &mut self.key_scratch,
        };
        let decided = plan::redis(&pool.conf, authed, p.command(), &mut args);
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
        let decided = plan::memcache(p.cmd, p.keys.len(), p.keys.first().map(key_range));
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
            Plan::ReplyClose(bytes) => {
                self.local_reply(mid, bytes);
                self.close_after(ck, mid);
            }
            Plan::Auth { ok, reply } => {
                if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
                    c.authed = ok;
                }
                self.local_reply(mid, reply);
            }
            Plan::Forward(key) => self.forward_by_key(mid, rx, pid, key, start, end),
            Plan::Split {
                merge: Merge::Values,
                name,
                ..
            } => self.mc_fragment(mid, rx, pid, name),
            Plan::Split { merge, step, name } => self.fragment(mid, rx, pid, merge, step, name),
        }
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
                self.topo.route(pid, k)
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
        self.forward(mid, s);
    }

    /// Splits a multi-key command per server (SPEC 6.4): each fragment is
    /// `*<n>\r\n$<len>\r\n<name>\r\n` made by the proxy followed by the
    /// original key (and value) items, referenced in place.
    fn fragment(
        &mut self,
        mid: MsgId,
        rx: &ClientRx,
        pid: PoolId,
        merge: Merge,
        step: usize,
        name: &'static [u8],
    ) {
        let args = &rx.redis.args;
        let nkeys = (args.len() - 1) / step;
        let mut fs = std::mem::take(&mut self.frag_scratch);
        fs.key_server.clear();
        // Keys routed while the request was read (client.rs, `preroute`).
        if rx.routed.len() == nkeys && rx.routed_gen == self.topo.generation {
            fs.key_server.extend_from_slice(&rx.routed);
        }
        for i in fs.key_server.len()..nkeys {
            let Some(a) = args.get(1 + i * step) else {
                break;
            };
            let k = rx.inbuf.bytes(
                &self.mbufs,
                a.data,
                a.data + u64::from(a.len),
                &mut self.key_scratch,
            );
            match self.topo.route(pid, k) {
                Ok(s) => fs.key_server.push(s),
                Err(errno) => {
                    self.frag_scratch = fs;
                    self.fail_request(mid, errno);
                    return;
                }
            }
        }
        let mut frag = self.new_frag();
        group_by_server(&mut fs, &mut frag.key_child);
        frag.merge = Some(merge);
        fs.children.clear();
        for (ci, &s) in fs.servers.iter().enumerate() {
            let run = run_of(&fs.order, &fs.run_start, ci);
            let items = run.len() * step;
            // `*<n>\r\n$<len>\r\n<name>\r\n`, built without allocating.
            let mut n = itoa::Buffer::new();
            let mut l = itoa::Buffer::new();
            let parts: [&[u8]; 7] = [
                b"*",
                n.format(items + 1).as_bytes(),
                b"\r\n$",
                l.format(name.len()).as_bytes(),
                b"\r\n",
                name,
                b"\r\n",
            ];
            let child = self.alloc_msg(Origin::Fragment(mid));
            let Some(m) = self.msgs.get_mut(child) else {
                continue;
            };
            let mut len = 0;
            for part in parts {
                self.mbufs.push_bytes(part, &mut m.req);
                len += part.len();
            }
            for &i in run {
                let i = i as usize;
                let (Some(first), Some(last)) = (args.get(1 + i * step), args.get(i * step + step))
                else {
                    continue;
                };
                rx.inbuf
                    .segs(&mut self.mbufs, first.start, last.end(), &mut m.req);
                len += (last.end() - first.start) as usize;
            }
            m.req_len = len;
            m.reply_elems = run.len() as u32;
            fs.children.push((child, s));
        }
        self.start_fragments(mid, pid, frag, &fs.children);
        self.frag_scratch = fs;
    }

    /// Splits a multi-key get per server (SPEC 7.2): each fragment is
    /// `get ` + its keys, each followed by a space, + CRLF; keys are
    /// referenced in place.
    fn mc_fragment(&mut self, mid: MsgId, rx: &ClientRx, pid: PoolId, verb: &'static [u8]) {
        let p = &rx.mc;
        let mut fs = std::mem::take(&mut self.frag_scratch);
        let mut frag = self.new_frag();
        fs.key_server.clear();
        for k in &p.keys {
            let (from, to) = key_range(k);
            let kb = rx.inbuf.bytes(&self.mbufs, from, to, &mut self.key_scratch);
            frag.key_bytes.extend_from_slice(kb);
            frag.key_ends.push(frag.key_bytes.len() as u32);
            match self.topo.route(pid, kb) {
                Ok(s) => fs.key_server.push(s),
                Err(errno) => {
                    self.frag_scratch = fs;
                    self.free_frag(frag);
                    self.fail_request(mid, errno);
                    return;
                }
            }
        }
        group_by_server(&mut fs, &mut frag.key_child);
        frag.merge = Some(Merge::Values);
        fs.children.clear();
        for (ci, &s) in fs.servers.iter().enumerate() {
            let run = run_of(&fs.order, &fs.run_start, ci);
            let child = self.alloc_msg(Origin::Fragment(mid));
            let Some(m) = self.msgs.get_mut(child) else {
                continue;
            };
            self.mbufs.push_bytes(verb, &mut m.req);
            let mut len = verb.len();
            for k in run.iter().filter_map(|&i| p.keys.get(i as usize)) {
                let (from, to) = key_range(k);
                // The key's trailing space is usually right after it.
                let next = rx
                    .inbuf
                    .bytes(&self.mbufs, to, to + 1, &mut self.key_scratch)
                    .first()
                    .copied();
                if next == Some(b' ') {
                    rx.inbuf.segs(&mut self.mbufs, from, to + 1, &mut m.req);
                } else {
                    rx.inbuf.segs(&mut self.mbufs, from, to, &mut m.req);
                    self.mbufs.push_bytes(b" ", &mut m.req);
                }
                len += (to - from) as usize + 1;
            }
            self.mbufs.push_bytes(b"\r\n", &mut m.req);
            m.req_len = len + 2;
            fs.children.push((child, s));
        }
        self.start_fragments(mid, pid, frag, &fs.children);
        self.frag_scratch = fs;
    }

    /// Hangs `frag` on the parent and sends its fragments.
    fn start_fragments(
        &mut self,
        mid: MsgId,
        pid: PoolId,
        mut frag: Box<Frag>,
        children: &[(MsgId, ServerId)],
    ) {
        if let Some(p) = self.topo.pool_mut(pid) {
            p.stats.fragments += children.len() as i64;
        }
        frag.pending = children.len() as u32;
        frag.children.extend(children.iter().map(|&(c, _)| c));
        if let Some(m) = self.msgs.get_mut(mid) {
            m.frag = Some(frag);
        }
        for &(child, s) in children {
            self.forward(child, s);
        }
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
                    self.merge(parent);
                    self.client_ready(parent);
                }
            }
            Origin::Client(_) => self.client_ready(mid),
            Origin::Internal(_) | Origin::Orphan => self.free_msg(mid),
        }
    }

    /// A client's request (or a merged parent) is ready to be written: an
    /// error becomes the proxy's error reply.
    fn client_ready(&mut self, mid: MsgId) {
        let Some(m) = self.msgs.get_mut(mid) else {
            return;
        };
        m.done = true;
        let Some(ck) = m.client() else {
            self.free_msg(mid);
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
        self.dirty_clients.push(ck);
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

fn arg_range(a: &Arg) -> (u64, u64) {
    (a.data, a.data + u64::from(a.len))
}

fn key_range(k: &McKey) -> (u64, u64) {
    (k.start, k.start + u64::from(k.len))
}

/// The distinct servers of `fs.key_server` in order of first appearance
/// (one fragment per server) into `fs.servers`, for each key the index of
/// its server in that list into `key_child`, and the key indices grouped
/// by fragment, in request order within each, into `fs.order` (fragment
/// `ci` owns `run_of(.., ci)`). Linear in keys: a server's fragment is
/// found through its slot, and the grouping is a counting sort, so neither
/// many servers nor one server with every key costs more than the keys.
fn group_by_server(fs: &mut crate::core::FragScratch, key_child: &mut Vec<u32>) {
    fs.servers.clear();
    key_child.clear();
    for &s in &fs.key_server {
        let slot = s.index();
        if fs.slot_child.len() <= slot {
            fs.slot_child.resize(slot + 1, 0);
        }
        let ci = match fs.slot_child.get(slot).copied() {
            Some(c) if c > 0 => c - 1,
            _ => {
                fs.servers.push(s);
                let c = fs.servers.len() as u32;
                if let Some(e) = fs.slot_child.get_mut(slot) {
                    *e = c;
                }
                c - 1
            }
        };
        key_child.push(ci);
    }
    for s in &fs.servers {
        if let Some(e) = fs.slot_child.get_mut(s.index()) {
            *e = 0;
        }
    }
    // Counting sort of the key indices by fragment.
    fs.run_start.clear();
    fs.run_start.resize(fs.servers.len() + 1, 0);
    for &ci in key_child.iter() {
        if let Some(n) = fs.run_start.get_mut(ci as usize + 1) {
            *n += 1;
        }
    }
    for i in 1..fs.run_start.len() {
        let prev = fs.run_start.get(i - 1).copied().unwrap_or(0);
        if let Some(n) = fs.run_start.get_mut(i) {
            *n += prev;
        }
    }
    fs.order.clear();
    fs.order.resize(key_child.len(), 0);
    // Each fragment's next free place in `order`, from its run's start.
    let mut fill: Vec<usize> = std::mem::take(&mut fs.fill);
    fill.clear();
    fill.extend_from_slice(fs.run_start.get(..fs.servers.len()).unwrap_or_default());
    for (i, &ci) in key_child.iter().enumerate() {
        if let Some(at) = fill.get_mut(ci as usize) {
            if let Some(o) = fs.order.get_mut(*at) {
                *o = i as u32;
            }
            *at += 1;
        }
    }
    fs.fill = fill;
}

/// The key indices of fragment `ci` (see [`group_by_server`]).
fn run_of<'a>(order: &'a [u32], run_start: &[usize], ci: usize) -> &'a [u32] {
    match (run_start.get(ci), run_start.get(ci + 1)) {
        (Some(&a), Some(&b)) => order.get(a..b).unwrap_or_default(),
        _ => &[],
    }
}
