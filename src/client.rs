//! Client connections: accept, read and parse requests, answer what the
//! proxy answers itself, route the rest (splitting multi-key commands),
//! and write replies back in request order.
//!
//! `req_recv -> request (local | forward | fragment) -> ... -> complete ->
//! client_flush`: a request joins its client's `outq` the moment it is
//! parsed, so however its reply is produced, replies leave in order.

use crate::conn::{ClientConn, ClientRx, Conn};
use crate::core::Context;
use crate::core::{gather, Side};
use crate::msg::{Frag, Merge, MsgId};
use crate::net::{self, IoStep, Stream};
use crate::proto::memcache::request::{McCmd, McKey, Progress as McProgress};
use crate::proto::redis::command::Cmd;
use crate::proto::redis::request::{Arg, Progress};
use crate::server::route;

/// One parse step, whichever the protocol.
enum Step {
    Incomplete,
    Complete(u64),
    /// Bytes holding no request (redis `*0`, an empty inline line).
    Skip(u64),
    /// The reply to send before closing.
    Error(Vec<u8>),
}
use std::collections::VecDeque;

/// The key keyless forwarded commands are routed by (SPEC 4.1).
const PLACEHOLDER: &[u8] = b"placeholder";
/// A client holding more than this many bytes of requests and replies not
/// yet written back is not read until it drains below half (it pipelines
/// without reading its replies, or its backends are slow).
pub const CLIENT_MAX_HELD: usize = 64 * 1024 * 1024;
/// The same bound on the number of requests not yet answered and written
/// back: it also bounds the replies that can pile up for a client that does
/// not read (at most this many, whatever their size).
pub const CLIENT_MAX_QUEUED: usize = 1024;
/// A client holding more than this (several replies it does not read) is
/// closed, as redis' client-output-buffer-limit does; one reply alone,
/// however large, never triggers it.
pub const CLIENT_HARD_HELD: usize = 512 * 1024 * 1024;
/// The largest single request accepted (redis' own client query buffer
/// limit); a larger one is a protocol error.
pub const MAX_REQUEST_BYTES: u64 = 1024 * 1024 * 1024;
/// How long to wait before accepting again after running out of files.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

impl Context {
    pub fn accept(&mut self, lk: usize) {
        loop {
            let Some(Conn::Listener(l)) = self.conns.get(lk) else {
                return;
            };
            let pidx = l.pool;
            let sock = match l.sock.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors or memory: the pending connections
                    // stay in the backlog; try again shortly (an edge-
                    // triggered listener would not tell us again).
                    crate::log_error!("accept on p {} failed: {}", lk, crate::log::strerror(&e));
                    self.accept_retry.push((self.now + ACCEPT_RETRY, lk));
                    return;
                }
            };
            if self.nclients >= self.max_clients {
                crate::log_warn!(
                    "client connections {} exceed the limit {} of open files",
                    self.nclients,
                    self.max_clients
                );
                drop(sock);
                continue;
            }
            let pool = &self.pools[pidx];
            let limit = pool.conf.client_connections as usize;
            if limit > 0 && pool.nclients >= limit {
                crate::log_warn!(
                    "client connections {} exceed limit {} in pool '{}'",
                    pool.nclients,
                    limit,
                    pool.conf.name
                );
                drop(sock);
                continue;
            }
            if let Stream::Tcp(t) = &sock {
                let _ = t.set_nodelay(true);
                if pool.conf.tcpkeepalive {
                    let _ = net::set_int_opt(sock.fd(), libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
                }
            }
            let key = self.conns.insert(Conn::Client(ClientConn {
                sock,
                pool: pidx,
                rx: ClientRx::default(),
                outq: VecDeque::new(),
                wsent: 0,
                eof: false,
                closing: false,
                authed: false,
                held: 0,
                paused: false,
                hup: false,
            }));
            if self.register(key).is_err() {
                let _ = self.conns.remove(key);
                continue;
            }
            self.nclients += 1;
            let pool = &mut self.pools[pidx];
            pool.nclients += 1;
            pool.stats.client_connections += 1;
        }
    }

    pub fn client_read(&mut self, ck: usize, hup: bool) {
        let mut rx = match self.conns.get_mut(ck) {
            Some(Conn::Client(c)) if !c.closing && !c.paused => std::mem::take(&mut c.rx),
            _ => return,
        };
        let mut eof = false;
        let mut error = false;
        let mut drained = false;
        loop {
            // Bytes already buffered first: a resumed client has some.
            if self.client_parse(ck, &mut rx) || drained {
                break;
            }
            let Some(Conn::Client(c)) = self.conns.get(ck) else {
                rx.inbuf.clear(&mut self.mbufs);
                return;
            };
            match rx.inbuf.read(&c.sock, &mut self.mbufs) {
                IoStep::Done(_) => drained = rx.inbuf.drained && !hup,
                IoStep::WouldBlock => break,
                IoStep::Eof => {
                    eof = true;
                    break;
                }
                IoStep::Error(_) => {
                    error = true;
                    break;
                }
            }
        }
        let cd = self.mbufs.chunk_data();
        let Some(Conn::Client(c)) = self.conns.get_mut(ck) else {
            rx.inbuf.clear(&mut self.mbufs);
            return;
        };
        if c.closing {
            // Input after QUIT or a protocol error is ignored.
            rx.inbuf.clear(&mut self.mbufs);
            rx.inbuf.start = rx.inbuf.end(cd);
            rx.redis.reset();
        }
        c.rx = rx;
        if error {
            self.client_close(ck, false);
        } else if eof {
            c.eof = true;
            if c.rx.inbuf.has_partial(cd) {
                crate::log_info!("eof c {} discarding incomplete req", ck);
            }
            self.dirty_clients.push(ck);
        }
    }

    /// Parses and handles every whole request buffered. True when reading
    /// must stop: the client is closing, or paused because it holds too
    /// much (see [`CLIENT_MAX_HELD`]).
    fn client_parse(&mut self, ck: usize, rx: &mut ClientRx) -> bool {
        let redis = match self.conns.get(ck) {
            Some(Conn::Client(c)) => self.pools[c.pool].conf.redis,
            _ => return true,
        };
        loop {
            match self.conns.get_mut(ck) {
                Some(Conn::Client(c)) => {
                    if c.closing {
                        return true;
                    }
                    if c.held > CLIENT_MAX_HELD || c.outq.len() > CLIENT_MAX_QUEUED {
                        c.paused = true;
                        return true;
                    }
                }
                _ => return true,
            }
            let (data, base) = rx.inbuf.unparsed(&self.mbufs);
            if data.is_empty() {
                return false;
            }
            let step = if redis {
                let (n, prog) = rx.redis.feed(data, base);
                let step = match prog {
                    Progress::Incomplete => Step::Incomplete,
                    Progress::Complete(end) => Step::Complete(end),
                    Progress::Skip(end) => Step::Skip(end),
                    Progress::Error(e) => {
                        Step::Error(format!("-ERR {}\r\n", e.message()).into_bytes())
                    }
                };
                (n, step)
            } else {
                let (n, prog) = rx.mc.feed(data, base);
                let step = match prog {
                    McProgress::Incomplete => Step::Incomplete,
                    McProgress::Complete(end) => Step::Complete(end),
                    // Lines memcached refuses in step: still answered and
                    // closed, as before the parser told them apart.
                    McProgress::Refused(_, e) | McProgress::Error(e) => {
                        crate::log_info!("c {} parsed bad req: {}", ck, e.reason());
                        Step::Error(e.reply().to_vec())
                    }
                };
                (n, step)
            };
            rx.inbuf.parsed = base + step.0 as u64;
            match step.1 {
                Step::Incomplete => {
                    let cd = self.mbufs.chunk_data();
                    if rx.inbuf.end(cd) - rx.inbuf.start > MAX_REQUEST_BYTES {
                        let reply: &[u8] = if redis {
                            b"-ERR Protocol error: request too large\r\n"
                        } else {
                            b"SERVER_ERROR object too large for cache\r\n"
                        };
                        self.protocol_error(ck, reply);
                        return true;
                    }
                    return false;
                }
                Step::Complete(end) => {
                    if redis {
                        if rx.redis.is_inline() {
                            self.redis_inline_request(ck, rx);
                        } else {
                            self.redis_request(ck, rx, end);
                        }
                        rx.redis.reset();
                    } else {
                        self.memcache_request(ck, rx, end);
                        rx.mc.reset();
                    }
                    rx.inbuf.consume(&mut self.mbufs, end);
                }
                Step::Skip(end) => {
                    rx.redis.reset();
                    rx.inbuf.consume(&mut self.mbufs, end);
                }
                Step::Error(reply) => {
                    self.protocol_error(ck, &reply);
                    return true;
                }
            }
        }
    }

    /// An inline request goes the way of any other as the multibulk form
    /// the parser made of it (what redis executes for the line): loaded at
    /// offset 0 of a scratch input and parsed again, so routing, local
    /// replies and fragments read its arguments from there.
    fn redis_inline_request(&mut self, ck: usize, rx: &ClientRx) {
        let resp = rx.redis.inline_resp();
        let mut irx = ClientRx::default();
        irx.inbuf.load(&mut self.mbufs, resp);
        if let (_, Progress::Complete(end)) = irx.redis.feed(resp, 0) {
            self.redis_request(ck, &irx, end);
        }
        irx.inbuf.clear(&mut self.mbufs);
    }

    /// Queues `reply` after the replies already owed, then closes.
    fn protocol_error(&mut self, ck: usize, reply: &[u8]) {
        crate::log_info!(
            "c {} protocol error: {}",
            ck,
            String::from_utf8_lossy(reply).trim_end()
        );
        let mid = self.new_request(ck);
        self.local_reply(mid, reply);
        self.close_after(ck, mid);
    }

    /// A request joins the client's out queue in arrival order.
    fn new_request(&mut self, ck: usize) -> MsgId {
        let mid = self.alloc_msg(Some(ck));
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
            if let Some(ck) = m.owner {
                self.dirty_clients.push(ck);
            }
        }
    }

    fn close_after(&mut self, ck: usize, mid: MsgId) {
        if let Some(m) = self.msgs.get_mut(mid) {
            m.close_after = true;
        }
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            c.closing = true;
        }
    }

    /// Handles one parsed redis request `p.start..end`. Returns true when
    /// the client must not be read any more (QUIT).
    fn redis_request(&mut self, ck: usize, rx: &ClientRx, end: u64) -> bool {
        let p = &rx.redis;
        let args = &p.args;
        let Some(Conn::Client(c)) = self.conns.get(ck) else {
            return true;
        };
        let (pidx, authed) = (c.pool, c.authed);
        let mid = self.new_request(ck);
        self.hold(ck, mid, (end - p.start) as usize);
        // The name as sent, for error replies only (not made per request).
        let name = |ctx: &mut Context| match args.first() {
            Some(a) => printable(ctx.arg_bytes(rx, a), 64),
            None => String::new(),
        };
        let Some(cmd) = p.command() else {
            let name = name(self);
            crate::log_info!("parsed unsupported command '{}'", name);
            let reply = format!("-ERR unsupported command '{name}'\r\n");
            self.local_reply(mid, reply.as_bytes());
            return false;
        };
        let needs_auth = self.pools[pidx].conf.redis_auth.is_some();
        if needs_auth && !authed && !matches!(cmd, Cmd::Auth | Cmd::Quit) {
            self.local_reply(mid, b"-NOAUTH Authentication required\r\n");
            return false;
        }
        if !cmd.arity_ok(args.len()) {
            let name = name(self);
            let reply = format!(
                "-ERR wrong number of arguments for '{}' command\r\n",
                name.to_ascii_lowercase()
            );
            self.local_reply(mid, reply.as_bytes());
            return false;
        }
        match cmd {
            Cmd::Ping => {
                match args.get(1) {
                    None => self.local_reply(mid, b"+PONG\r\n"),
                    Some(a) => {
                        let mut reply = Vec::new();
                        crate::proto::redis::write_bulk(&mut reply, self.arg_bytes(rx, a));
                        self.local_reply(mid, &reply);
                    }
                }
                false
            }
            Cmd::Quit => {
                self.local_reply(mid, b"+OK\r\n");
                self.close_after(ck, mid);
                true
            }
            Cmd::Auth => {
                let given = args
                    .get(1)
                    .map(|a| self.arg_bytes(rx, a).to_vec())
                    .unwrap_or_default();
                let reply: &[u8] = match &self.pools[pidx].conf.redis_auth {
                    None => b"-ERR Client sent AUTH, but no password is set\r\n",
                    Some(pw) if pw.as_bytes() == given.as_slice() => b"+OK\r\n",
                    Some(_) => b"-ERR invalid password\r\n",
                };
                let ok = reply == b"+OK\r\n";
                if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
                    c.authed = ok;
                }
                self.local_reply(mid, reply);
                false
            }
            Cmd::Hello => {
                let version = args.get(1).map(|a| self.arg_bytes(rx, a).to_vec());
                let reply: Vec<u8> = match version.as_deref() {
                    None | Some(b"2") if args.len() <= 2 => hello_reply(),
                    None | Some(b"2") => {
                        b"-ERR HELLO options are not supported by the proxy\r\n".to_vec()
                    }
                    _ => b"-NOPROTO unsupported protocol version\r\n".to_vec(),
                };
                self.local_reply(mid, &reply);
                false
            }
            Cmd::Command | Cmd::Lolwut => {
                self.forward_by_key(mid, rx, pidx, None, p.start, end);
                false
            }
            Cmd::Eval => {
                let numkeys = args.get(2).map(|a| parse_digits(self.arg_bytes(rx, a)));
                match numkeys {
                    Some(Some(n)) if n >= 1 && n as usize <= args.len() - 3 => {
                        self.forward_by_key(
                            mid,
                            rx,
                            pidx,
                            args.get(3).map(arg_range),
                            p.start,
                            end,
                        );
                    }
                    Some(Some(0)) => self.local_reply(
                        mid,
                        b"-ERR EVAL without keys cannot be routed by the proxy\r\n",
                    ),
                    Some(Some(_)) => self.local_reply(
                        mid,
                        b"-ERR Number of keys can't be greater than number of args\r\n",
                    ),
                    _ => self.local_reply(mid, b"-ERR value is not an integer or out of range\r\n"),
                }
                false
            }
            c if c.is_fragmentable() => {
                let step = if c == Cmd::Mset { 2 } else { 1 };
                if args.len() - 1 == step {
                    self.forward_by_key(mid, rx, pidx, args.get(1).map(arg_range), p.start, end);
                } else {
                    self.fragment(mid, rx, pidx, c, step);
                }
                false
            }
            _ => {
                self.forward_by_key(mid, rx, pidx, args.get(1).map(arg_range), p.start, end);
                false
            }
        }
    }

    /// Handles one parsed memcached request `p.start..end` (SPEC 7).
    fn memcache_request(&mut self, ck: usize, rx: &ClientRx, end: u64) {
        let p = &rx.mc;
        let Some(Conn::Client(c)) = self.conns.get(ck) else {
            return;
        };
        let pidx = c.pool;
        let mid = self.new_request(ck);
        self.hold(ck, mid, (end - p.start) as usize);
        if let Some(m) = self.msgs.get_mut(mid) {
            m.noreply = p.noreply;
        }
        match p.cmd {
            McCmd::Quit => {
                // memcached closes without a word.
                self.local_reply(mid, b"");
                self.close_after(ck, mid);
            }
            McCmd::Version => self.forward_by_key(mid, rx, pidx, None, p.start, end),
            // Recognised by the parser, not served yet: refused as before.
            McCmd::Gat | McCmd::Gats | McCmd::Stats | McCmd::FlushAll => {
                self.local_reply(mid, b"ERROR\r\n");
                self.close_after(ck, mid);
            }
            McCmd::Get | McCmd::Gets if p.keys.len() > 1 => self.mc_fragment(mid, rx, pidx),
            _ => self.forward_by_key(mid, rx, pidx, p.keys.first().map(key_range), p.start, end),
        }
    }

    /// Splits a multi-key get per server (SPEC 7.2): each fragment is
    /// `get ` + its keys, each followed by a space, + CRLF; keys are
    /// referenced in place.
    fn mc_fragment(&mut self, mid: MsgId, rx: &ClientRx, pidx: usize) {
        let p = &rx.mc;
        let verb: &[u8] = if p.cmd == McCmd::Gets {
            b"gets "
        } else {
            b"get "
        };
        let mut fs = std::mem::take(&mut self.frag_scratch);
        let mut frag = self.new_frag();
        fs.key_server.clear();
        for k in &p.keys {
            let (from, to) = key_range(k);
            let kb = rx.inbuf.bytes(&self.mbufs, from, to, &mut self.key_scratch);
            frag.key_bytes.extend_from_slice(kb);
            frag.key_ends.push(frag.key_bytes.len() as u32);
            match route(&mut self.pools, &self.servers, self.now, pidx, kb) {
                Ok(s) => fs.key_server.push(s),
                Err(errno) => {
                    self.frag_scratch = fs;
                    self.free_frag(frag);
                    self.fail_request(mid, errno);
                    return;
                }
            }
        }
        group_by_server(&fs.key_server, &mut fs.servers, &mut frag.key_child);
        frag.merge = Some(Merge::Values);
        fs.children.clear();
        for (ci, &s) in fs.servers.iter().enumerate() {
            let child = self.alloc_msg(None);
            let Some(m) = self.msgs.get_mut(child) else {
                continue;
            };
            self.mbufs.push_bytes(verb, &mut m.req);
            let mut len = verb.len();
            for (k, _) in p
                .keys
                .iter()
                .zip(&frag.key_child)
                .filter(|(_, &c)| c as usize == ci)
            {
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
            m.parent = Some(mid);
            fs.children.push((child, s));
        }
        self.start_fragments(mid, pidx, frag, &fs.children);
        self.frag_scratch = fs;
    }

    /// Hangs `frag` on the parent and sends its fragments.
    fn start_fragments(
        &mut self,
        mid: MsgId,
        pidx: usize,
        mut frag: Box<Frag>,
        children: &[(MsgId, usize)],
    ) {
        self.pools[pidx].stats.fragments += children.len() as i64;
        frag.pending = children.len() as u32;
        frag.children.extend(children.iter().map(|&(c, _)| c));
        if let Some(m) = self.msgs.get_mut(mid) {
            m.frag = Some(frag);
        }
        for &(child, s) in children {
            self.forward(child, s);
        }
    }

    fn arg_bytes<'a>(&'a mut self, rx: &ClientRx, a: &Arg) -> &'a [u8] {
        rx.inbuf.bytes(
            &self.mbufs,
            a.data,
            a.data + u64::from(a.len),
            &mut self.key_scratch,
        )
    }

    /// Routes by `key` (or `placeholder`) and forwards the whole request.
    fn forward_by_key(
        &mut self,
        mid: MsgId,
        rx: &ClientRx,
        pidx: usize,
        key: Option<(u64, u64)>,
        start: u64,
        end: u64,
    ) {
        let routed = match key {
            Some((from, to)) => {
                let k = rx.inbuf.bytes(&self.mbufs, from, to, &mut self.key_scratch);
                route(&mut self.pools, &self.servers, self.now, pidx, k)
            }
            None => route(&mut self.pools, &self.servers, self.now, pidx, PLACEHOLDER),
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
    fn fragment(&mut self, mid: MsgId, rx: &ClientRx, pidx: usize, cmd: Cmd, step: usize) {
        let args = &rx.redis.args;
        let nkeys = (args.len() - 1) / step;
        let mut fs = std::mem::take(&mut self.frag_scratch);
        fs.key_server.clear();
        for i in 0..nkeys {
            let Some(a) = args.get(1 + i * step) else {
                break;
            };
            let k = rx.inbuf.bytes(
                &self.mbufs,
                a.data,
                a.data + u64::from(a.len),
                &mut self.key_scratch,
            );
            match route(&mut self.pools, &self.servers, self.now, pidx, k) {
                Ok(s) => fs.key_server.push(s),
                Err(errno) => {
                    self.frag_scratch = fs;
                    self.fail_request(mid, errno);
                    return;
                }
            }
        }
        let mut frag = self.new_frag();
        group_by_server(&fs.key_server, &mut fs.servers, &mut frag.key_child);
        frag.merge = Some(match cmd {
            Cmd::Mget => Merge::Array,
            Cmd::Mset => Merge::Ok,
            _ => Merge::Sum,
        });
        fs.children.clear();
        for (ci, &s) in fs.servers.iter().enumerate() {
            let items = frag.key_child.iter().filter(|&&c| c as usize == ci).count() * step;
            // `*<n>\r\n$<len>\r\n<name>\r\n`, built without allocating.
            let name = cmd.frag_name();
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
            let child = self.alloc_msg(None);
            let Some(m) = self.msgs.get_mut(child) else {
                continue;
            };
            let mut len = 0;
            for part in parts {
                self.mbufs.push_bytes(part, &mut m.req);
                len += part.len();
            }
            for (i, _) in frag
                .key_child
                .iter()
                .enumerate()
                .filter(|(_, &c)| c as usize == ci)
            {
                let (Some(first), Some(last)) = (args.get(1 + i * step), args.get(i * step + step))
                else {
                    continue;
                };
                rx.inbuf
                    .segs(&mut self.mbufs, first.start, last.end(), &mut m.req);
                len += (last.end() - first.start) as usize;
            }
            m.req_len = len;
            m.parent = Some(mid);
            fs.children.push((child, s));
        }
        self.start_fragments(mid, pidx, frag, &fs.children);
        self.frag_scratch = fs;
    }

    /// Fails a request with `errno`; 0 (a backend that just closed) still
    /// fails it, with the text `unknown` as in 0.5.0.
    pub fn fail_request(&mut self, mid: MsgId, errno: i32) {
        if let Some(m) = self.msgs.get_mut(mid) {
            m.err = if errno == 0 { net::ERR_UNKNOWN } else { errno };
        }
        self.complete(mid);
    }

    /// A request got its reply or failed: a fragment reports to its parent,
    /// anything else becomes ready for its client.
    pub fn complete(&mut self, mid: MsgId) {
        let Some(m) = self.msgs.get_mut(mid) else {
            return;
        };
        m.done = true;
        if let Some(parent) = m.parent {
            let Some(f) = self.msgs.get_mut(parent).and_then(|p| p.frag.as_mut()) else {
                return;
            };
            f.pending = f.pending.saturating_sub(1);
            if f.pending == 0 {
                self.merge(parent);
                self.client_ready(parent);
            }
            return;
        }
        self.client_ready(mid);
    }

    fn client_ready(&mut self, mid: MsgId) {
        let Some(m) = self.msgs.get_mut(mid) else {
            return;
        };
        m.done = true;
        if m.internal {
            self.free_msg(mid);
            return;
        }
        let Some(ck) = m.owner else {
            self.free_msg(mid);
            return;
        };
        if m.err != 0 && m.rsp.is_empty() && !m.noreply {
            let errno = m.err;
            if let Some(Conn::Client(c)) = self.conns.get(ck) {
                let pidx = c.pool;
                self.pools[pidx].stats.forward_error += 1;
                let reply = if self.pools[pidx].conf.redis {
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
    fn hold(&mut self, ck: usize, mid: MsgId, bytes: usize) {
        if let Some(m) = self.msgs.get_mut(mid) {
            m.held += bytes;
        }
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            c.held += bytes;
        }
    }

    /// Writes the replies at the front of the out queue that are ready.
    pub fn client_flush(&mut self, ck: usize) {
        let mut iov = std::mem::take(&mut self.iov);
        let open = self.client_flush_with(ck, &mut iov);
        self.iov = iov;
        if !open {
            return;
        }
        if let Some(Conn::Client(c)) = self.conns.get(ck) {
            if c.eof && c.outq.is_empty() {
                self.client_close(ck, true);
            }
        }
    }

    /// The writing rounds of [`client_flush`]; false if the client closed.
    fn client_flush_with(&mut self, ck: usize, iov: &mut Vec<libc::iovec>) -> bool {
        loop {
            let Some(Conn::Client(c)) = self.conns.get(ck) else {
                return false;
            };
            gather(&self.msgs, &self.mbufs, &c.outq, c.wsent, Side::Reply, iov);
            let n = match c.sock.writev(iov) {
                IoStep::Done(n) => n,
                IoStep::WouldBlock | IoStep::Eof => return true,
                IoStep::Error(_) => {
                    self.client_close(ck, false);
                    return false;
                }
            };
            let wrote_all = self.client_advance(ck, n);
            if !matches!(self.conns.get(ck), Some(Conn::Client(_))) {
                return false;
            }
            if wrote_all || iov.is_empty() {
                return true;
            }
        }
    }

    /// Retires written replies; true when nothing ready is left to write.
    fn client_advance(&mut self, ck: usize, mut n: usize) -> bool {
        loop {
            let Some(Conn::Client(c)) = self.conns.get_mut(ck) else {
                return true;
            };
            let Some(&mid) = c.outq.front() else {
                return true;
            };
            let Some(m) = self.msgs.get(mid) else {
                c.outq.pop_front();
                continue;
            };
            if !m.done {
                return true;
            }
            let len = m.rsp_len();
            let left = len - c.wsent.min(len);
            if n < left {
                c.wsent += n;
                return false;
            }
            n -= left;
            c.wsent = 0;
            c.outq.pop_front();
            c.held = c.held.saturating_sub(m.held);
            if c.paused && c.held <= CLIENT_MAX_HELD / 2 && c.outq.len() <= CLIENT_MAX_QUEUED / 2 {
                c.paused = false;
                self.resume.push(ck);
            }
            let close = m.close_after;
            self.free_msg(mid);
            if close {
                self.client_close(ck, false);
                return true;
            }
        }
    }

    /// Closes a client. Requests still in flight stay with their servers,
    /// orphaned: their replies are discarded when they come.
    pub fn client_close(&mut self, ck: usize, eof: bool) {
        if !matches!(self.conns.get(ck), Some(Conn::Client(_))) {
            return;
        }
        let mut conn = self.conns.remove(ck);
        self.deregister(&mut conn);
        let Conn::Client(mut c) = conn else { return };
        c.rx.inbuf.clear(&mut self.mbufs);
        self.nclients = self.nclients.saturating_sub(1);
        let pool = &mut self.pools[c.pool];
        pool.nclients = pool.nclients.saturating_sub(1);
        pool.stats.client_connections -= 1;
        if eof {
            pool.stats.client_eof += 1;
        } else {
            pool.stats.client_err += 1;
        }
        for mid in c.outq.drain(..) {
            let Some(m) = self.msgs.get_mut(mid) else {
                continue;
            };
            if m.done {
                self.free_msg(mid);
            } else {
                m.owner = None;
            }
        }
    }
}

fn arg_range(a: &Arg) -> (u64, u64) {
    (a.data, a.data + u64::from(a.len))
}

fn key_range(k: &McKey) -> (u64, u64) {
    (k.start, k.start + u64::from(k.len))
}

fn hello_reply() -> Vec<u8> {
    let mut r = b"*14\r\n".to_vec();
    for (k, v) in [
        ("server", "redis"),
        ("version", "7.0.0"),
        ("proto", ""),
        ("id", ""),
        ("mode", "standalone"),
        ("role", "master"),
    ] {
        crate::proto::redis::write_bulk(&mut r, k.as_bytes());
        match k {
            "proto" => r.extend_from_slice(b":2\r\n"),
            "id" => r.extend_from_slice(b":0\r\n"),
            _ => crate::proto::redis::write_bulk(&mut r, v.as_bytes()),
        }
    }
    crate::proto::redis::write_bulk(&mut r, b"modules");
    r.extend_from_slice(b"*0\r\n");
    r
}

/// The distinct servers in order of first appearance (one fragment per
/// server) into `servers`, and for each key the index of its server in that
/// list into `key_child`.
fn group_by_server(key_server: &[usize], servers: &mut Vec<usize>, key_child: &mut Vec<u32>) {
    servers.clear();
    key_child.clear();
    for &s in key_server {
        let ci = match servers.iter().position(|&x| x == s) {
            Some(ci) => ci,
            None => {
                servers.push(s);
                servers.len() - 1
            }
        };
        key_child.push(ci as u32);
    }
}

/// Digits only (SPEC 1.1's number rule), bounded.
fn parse_digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// A name for an error message: printable ASCII kept, the rest escaped.
fn printable(b: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &c in b.iter().take(max) {
        if c.is_ascii_graphic() || c == b' ' {
            s.push(char::from(c));
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}
