//! Client connections: read and parse requests, hand each one to
//! `request.rs`, and write replies back in request order; bound what one
//! client may hold; close.
//!
//! `client_read -> client_parse -> request (plan, carry out) -> ... ->
//! complete -> client_flush`: a request joins its client's `outq` the
//! moment it is parsed, so however its reply is produced, replies leave in
//! order.

use crate::conn::{ClientRx, Conn, ConnId};
use crate::core::Context;
use crate::core::{gather, queue_once, Side, WRITE_BUDGET, WRITE_CALLS};
use crate::net::IoStep;
use crate::proto::memcache::request::Progress as McProgress;
use crate::proto::redis::command::Cmd;
use crate::proto::redis::request::Progress;

/// How a parse round ended.
enum Parsed {
    /// Every whole request buffered is handled; read more.
    NeedMore,
    /// Stop reading: closing, or paused.
    Stop,
    /// The turn's budget is spent with input left: resume next iteration.
    Yield,
}

/// One parse step, whichever the protocol.
enum Step {
    Incomplete,
    Complete(u64),
    /// Bytes holding no request (redis `*0`, an empty inline line).
    Skip(u64),
    /// A memcached line refused in step: this reply (unless noreply), and
    /// the connection goes on after `end`.
    Refused(u64, &'static [u8]),
    /// The reply to send before closing.
    Error(Vec<u8>),
}
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
/// Bytes read from one client per turn (a loop iteration): sixteen
/// default mbufs. With the parse budget below this bounds the time one
/// busy client holds the loop to a fraction of a millisecond per turn.
pub const READ_BUDGET: usize = 256 * 1024;
/// Requests handled per turn, in units: a request is one unit plus one per
/// [`KEYS_PER_UNIT`] keys (splitting costs per key).
pub const PARSE_BUDGET: usize = 256;
pub const KEYS_PER_UNIT: usize = 16;
/// Default of the budget of bytes held in incomplete requests over all
/// clients: twice the largest request, so that one request of the largest
/// size still gets through while other clients send theirs.
pub const PARTIAL_BUDGET: u64 = 2 * MAX_REQUEST_BYTES;

/// The budget of bytes held in incomplete requests over all clients:
/// [`PARTIAL_BUDGET`], or the environment variable
/// `NUTCRACKER_REQUEST_MEMORY` (bytes, at least 1 MiB) when it is set.
pub fn partial_budget() -> u64 {
    std::env::var("NUTCRACKER_REQUEST_MEMORY")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(PARTIAL_BUDGET, |v| v.max(1024 * 1024))
}

/// The largest single request accepted (redis' own client query buffer
/// limit); a larger one is a protocol error.
pub const MAX_REQUEST_BYTES: u64 = 1024 * 1024 * 1024;

impl Context {
    /// One turn of reading and parsing: at most [`READ_BUDGET`] bytes read
    /// and [`PARSE_BUDGET`] units of requests handled, so one client
    /// sending at full speed cannot keep the loop from the others. A turn
    /// that ends on its budget with input left queues the client in
    /// `ready_again` (edge-triggered readiness would not tell again).
    pub fn client_read(&mut self, ck: ConnId, hup: bool) {
        let mut rx = match self.conns.get_mut(ck) {
            // A client whose request is being split reads again once the
            // split is over (`split.rs`).
            Some(Conn::Client(c)) if !c.closing && !c.paused && c.splitting.is_none() => {
                std::mem::take(&mut c.rx)
            }
            _ => return,
        };
        let mut eof = false;
        let mut error = false;
        let mut drained = false;
        let mut again = false;
        let mut bytes = READ_BUDGET;
        let mut units = PARSE_BUDGET;
        loop {
            // Bytes already buffered first: a resumed client has some.
            match self.client_parse(ck, &mut rx, &mut units) {
                Parsed::NeedMore => {}
                Parsed::Stop => break,
                Parsed::Yield => {
                    again = true;
                    break;
                }
            }
            if drained {
                break;
            }
            if bytes == 0 {
                again = true;
                break;
            }
            let Some(Conn::Client(c)) = self.conns.get(ck) else {
                rx.inbuf.clear(&mut self.mbufs);
                return;
            };
            match rx.inbuf.read(&c.sock, &mut self.mbufs) {
                IoStep::Done(n) => {
                    bytes = bytes.saturating_sub(n);
                    drained = rx.inbuf.drained && !hup;
                }
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
            again = false;
        }
        c.rx = rx;
        if again && !error && !eof {
            queue_once(&mut c.again, &mut self.ready_again, ck);
        } else if c.retiring && !c.paused && !c.closing && c.splitting.is_none() {
            // Served to the end of what it sent (see `client_retire`).
            c.closing = true;
            c.eof = true;
            queue_once(&mut c.dirty, &mut self.dirty_clients, ck);
        }
        // What the incomplete request now holds, in the global count (a
        // request being split is whole: not counted).
        let start = c.splitting.unwrap_or(c.rx.inbuf.start);
        let partial = c.rx.inbuf.end(cd).saturating_sub(start);
        self.partial_bytes = self.partial_bytes.saturating_sub(c.partial) + partial;
        c.partial = partial;
        if error {
            self.client_close(ck, false);
        } else if eof {
            c.eof = true;
            if c.rx.inbuf.has_partial(cd) {
                crate::log_info!("eof c {} discarding incomplete req", ck);
            }
            queue_once(&mut c.dirty, &mut self.dirty_clients, ck);
        }
        if self.partial_bytes > self.partial_budget {
            self.shed_partial();
        }
    }

    /// The clients together hold more than the budget in incomplete
    /// requests: the largest holders get an error and are closed (their
    /// bytes freed now) until the total is back under three quarters of
    /// the budget. Scanning the clients is linear, but it only happens
    /// when the budget is exceeded, and each scan frees a client's bytes.
    fn shed_partial(&mut self) {
        let cd = self.mbufs.chunk_data();
        while self.partial_bytes > self.partial_budget / 4 * 3 {
            let largest = self
                .conns
                .iter()
                .filter_map(|(k, c)| match c {
                    Conn::Client(c) if c.partial > 0 && c.splitting.is_none() => {
                        Some((c.partial, k))
                    }
                    _ => None,
                })
                .max_by_key(|&(p, _)| p);
            let Some((held, ck)) = largest else {
                return;
            };
            crate::log_warn!(
                "c {} closed: its incomplete request of {} bytes is the largest and the {} bytes of incomplete requests exceed the budget of {}",
                ck,
                held,
                self.partial_bytes,
                self.partial_budget
            );
            let redis = match self.conns.get(ck) {
                Some(Conn::Client(c)) => self.topo.pool(c.pool).is_none_or(|p| p.conf.redis),
                _ => true,
            };
            let reply: &[u8] = if redis {
                b"-ERR Protocol error: proxy request memory exhausted\r\n"
            } else {
                b"SERVER_ERROR out of memory storing object\r\n"
            };
            self.protocol_error(ck, reply);
            if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
                c.rx.inbuf.clear(&mut self.mbufs);
                c.rx.inbuf.start = c.rx.inbuf.end(cd);
                c.rx.redis.reset();
                c.rx.mc.reset();
                self.partial_bytes = self.partial_bytes.saturating_sub(c.partial);
                c.partial = 0;
            }
        }
    }

    /// Parses and handles the whole requests buffered, while `units` of
    /// budget last (see [`PARSE_BUDGET`]). Stops when the client is
    /// closing, or paused because it holds too much (see
    /// [`CLIENT_MAX_HELD`]).
    fn client_parse(&mut self, ck: ConnId, rx: &mut ClientRx, units: &mut usize) -> Parsed {
        let redis = match self.conns.get(ck) {
            Some(Conn::Client(c)) => self.topo.pool(c.pool).is_some_and(|p| p.conf.redis),
            _ => return Parsed::Stop,
        };
        loop {
            match self.conns.get_mut(ck) {
                Some(Conn::Client(c)) => {
                    if c.closing {
                        return Parsed::Stop;
                    }
                    if c.held > CLIENT_MAX_HELD || c.outq.len() > CLIENT_MAX_QUEUED {
                        c.paused = true;
                        return Parsed::Stop;
                    }
                }
                _ => return Parsed::Stop,
            }
            let (data, base) = rx.inbuf.unparsed(&self.mbufs);
            if data.is_empty() {
                return Parsed::NeedMore;
            }
            if *units == 0 {
                return Parsed::Yield;
            }
            let offered = data.len();
            let step = if redis {
                let (n, prog) = rx.redis.feed(data, base);
                self.preroute(ck, rx);
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
                self.preroute_mc(ck, rx);
                let step = match prog {
                    McProgress::Incomplete => Step::Incomplete,
                    McProgress::Complete(end) => Step::Complete(end),
                    McProgress::Refused(end, e) => {
                        crate::log_info!("c {} refused req: {}", ck, e.reason());
                        Step::Refused(end, if rx.mc.noreply { b"" } else { e.reply() })
                    }
                    McProgress::Error(e) => {
                        crate::log_info!("c {} parsed bad req: {}", ck, e.reason());
                        Step::Error(e.reply().to_vec())
                    }
                };
                (n, step)
            };
            rx.inbuf.parsed = base + step.0 as u64;
            let whole = step.0 == offered;
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
                        return Parsed::Stop;
                    }
                    // A read ahead may have filled later chunks too.
                    if whole && rx.inbuf.parsed < rx.inbuf.end(cd) {
                        continue;
                    }
                    return Parsed::NeedMore;
                }
                Step::Complete(end) => {
                    let keys = if redis {
                        let keys = rx.redis.args.len();
                        if rx.redis.is_inline() {
                            self.redis_inline_request(ck, rx);
                        } else {
                            self.redis_request(ck, rx, end);
                        }
                        keys
                    } else {
                        let keys = rx.mc.keys.len();
                        self.memcache_request(ck, rx, end);
                        keys
                    };
                    if matches!(self.conns.get(ck), Some(Conn::Client(c)) if c.splitting.is_some())
                    {
                        // Split over the next turns: the request stays in
                        // the input (its arguments are read from there)
                        // until the split consumes it (`split.rs`).
                        return Parsed::Stop;
                    }
                    rx.redis.reset();
                    rx.mc.reset();
                    rx.clear_routed();
                    rx.inbuf.consume(&mut self.mbufs, end);
                    *units = units.saturating_sub(1 + keys / KEYS_PER_UNIT);
                }
                Step::Skip(end) => {
                    rx.redis.reset();
                    rx.inbuf.consume(&mut self.mbufs, end);
                }
                Step::Refused(end, reply) => {
                    let mid = self.new_request(ck);
                    self.local_reply(mid, reply);
                    rx.mc.reset();
                    rx.clear_routed();
                    rx.inbuf.consume(&mut self.mbufs, end);
                }
                Step::Error(reply) => {
                    self.protocol_error(ck, &reply);
                    return Parsed::Stop;
                }
            }
        }
    }

    /// An inline request goes the way of any other as the multibulk form
    /// the parser made of it (what redis executes for the line): loaded at
    /// offset 0 of a scratch input and parsed again, so routing, local
    /// replies and fragments read its arguments from there.
    fn redis_inline_request(&mut self, ck: ConnId, rx: &ClientRx) {
        let resp = rx.redis.inline_resp();
        let mut irx = ClientRx {
            scratch: true,
            ..ClientRx::default()
        };
        irx.inbuf.load(&mut self.mbufs, resp);
        if let (_, Progress::Complete(end)) = irx.redis.feed(resp, 0) {
            self.redis_request(ck, &irx, end);
        }
        irx.inbuf.clear(&mut self.mbufs);
    }

    /// Routes the keys of a multi-key redis request (the commands `plan.rs`
    /// splits) that the parser completed since the last call, into
    /// `rx.routed`: the hashing is then spread over the turns that read
    /// the request, and `request.rs` finds the keys routed when it splits.
    /// Stops at the first key that cannot be routed (the split routes
    /// again and fails the request as usual).
    fn preroute(&mut self, ck: ConnId, rx: &mut ClientRx) {
        let args = &rx.redis.args;
        // An inline request's arguments point into its own RESP form, not
        // into the input: it is routed when it is handled.
        if args.len() < 2 || rx.redis.is_inline() {
            return;
        }
        let Some(cmd) = rx.redis.command().filter(|c| c.is_fragmentable()) else {
            return;
        };
        // As `plan::redis`: MSET's items are key-value pairs.
        let step = if cmd == Cmd::Mset { 2 } else { 1 };
        self.route_ahead(ck, rx, |rx, i| {
            rx.redis.args.get(1 + i * step).map(|a| a.data_range())
        });
    }

    /// [`preroute`](Self::preroute) for the keys of a memcached get/gets
    /// (the retrievals `plan.rs` splits), as the parser completes them.
    fn preroute_mc(&mut self, ck: ConnId, rx: &mut ClientRx) {
        if !rx.mc.is_multi_get() || rx.mc.keys.len() <= rx.routed.len() {
            return;
        }
        self.route_ahead(ck, rx, |rx, i| rx.mc.keys.get(i).map(|k| k.range()));
    }

    /// Routes keys `rx.routed.len()..` (key `i` at the stream range
    /// `range(rx, i)` gives) into `rx.routed`, under the topology the first
    /// was routed with; stops at the last key parsed or the first that
    /// cannot be routed.
    fn route_ahead(
        &mut self,
        ck: ConnId,
        rx: &mut ClientRx,
        range: impl Fn(&ClientRx, usize) -> Option<(u64, u64)>,
    ) {
        let Some(Conn::Client(c)) = self.conns.get(ck) else {
            return;
        };
        let pid = c.pool;
        if rx.routed.is_empty() {
            rx.routed_gen = self.topo.generation;
        } else if rx.routed_gen != self.topo.generation {
            // A reload came in between: the split routes afresh.
            return;
        }
        while let Some((from, to)) = range(rx, rx.routed.len()) {
            let k = rx.inbuf.bytes(&self.mbufs, from, to, &mut self.key_scratch);
            match self.topo.route(pid, k) {
                Ok(s) => rx.routed.push(s),
                Err(_) => return,
            }
        }
    }

    /// Queues `reply` after the replies already owed, then closes.
    fn protocol_error(&mut self, ck: ConnId, reply: &[u8]) {
        crate::log_info!(
            "c {} protocol error: {}",
            ck,
            String::from_utf8_lossy(reply).trim_end()
        );
        let mid = self.new_request(ck);
        self.local_reply(mid, reply);
        self.close_after(ck, mid);
    }

    /// Writes the replies at the front of the out queue that are ready.
    pub fn client_flush(&mut self, ck: ConnId) {
        let open = self.client_flush_with(ck);
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
    fn client_flush_with(&mut self, ck: ConnId) -> bool {
        let (mut bytes, mut calls) = (0, 0);
        loop {
            if bytes >= WRITE_BUDGET || calls >= WRITE_CALLS {
                self.write_again.push(ck);
                return true;
            }
            let Some(Conn::Client(c)) = self.conns.get(ck) else {
                return false;
            };
            let mut iov = self.iov.start();
            gather(
                &self.msgs,
                &self.mbufs,
                &c.outq,
                c.wsent,
                Side::Reply,
                &mut iov,
            );
            let empty = iov.is_empty();
            let step = c.sock.writev(&iov);
            drop(iov);
            let n = match step {
                IoStep::Done(n) => n,
                IoStep::WouldBlock | IoStep::Eof => return true,
                IoStep::Error(_) => {
                    self.client_close(ck, false);
                    return false;
                }
            };
            bytes += n;
            calls += 1;
            let wrote_all = self.client_advance(ck, n);
            if !matches!(self.conns.get(ck), Some(Conn::Client(_))) {
                return false;
            }
            if wrote_all || empty {
                return true;
            }
        }
    }

    /// Retires written replies; true when nothing ready is left to write.
    fn client_advance(&mut self, ck: ConnId, mut n: usize) -> bool {
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
            if !c.wsent.advance(&m.rsp, &mut n) {
                return false;
            }
            c.wsent = Default::default();
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
    pub fn client_close(&mut self, ck: ConnId, eof: bool) {
        if !matches!(self.conns.get(ck), Some(Conn::Client(_))) {
            return;
        }
        let Some(mut conn) = self.conns.remove(ck) else {
            return;
        };
        self.deregister(&mut conn);
        let Conn::Client(mut c) = conn else { return };
        c.rx.inbuf.clear(&mut self.mbufs);
        if let Some(tx) = c.tx.take() {
            for (segs, _) in &tx.cmds {
                self.mbufs.release_segs(segs);
            }
        }
        self.partial_bytes = self.partial_bytes.saturating_sub(c.partial);
        self.nclients = self.nclients.saturating_sub(1);
        if let Some(pool) = self.topo.pool_mut(c.pool) {
            pool.nclients = pool.nclients.saturating_sub(1);
            pool.stats.client_connections -= 1;
            // It closed its side first (seen as the end of its input), or
            // said QUIT: its end, however the close then comes about.
            if eof || c.eof || c.quit {
                pool.stats.client_eof += 1;
            } else {
                pool.stats.client_err += 1;
            }
        }
        for mid in c.outq.drain(..) {
            let Some(m) = self.msgs.get_mut(mid) else {
                continue;
            };
            if m.done {
                self.free_msg(mid);
            } else {
                m.origin = crate::msg::Origin::Orphan;
            }
        }
        self.pool_gone_check(c.pool);
    }

    /// A reload retired the client's pool, or moved its listener: the
    /// client is served to the end of what it has sent, then closed. What
    /// already arrived is read and parsed now; nothing more is read after
    /// that; the connection closes once the last reply is written (at once
    /// when nothing is owed).
    pub fn client_retire(&mut self, ck: ConnId) {
        let hup = match self.conns.get_mut(ck) {
            Some(Conn::Client(c)) => {
                c.retiring = true;
                c.hup
            }
            _ => return,
        };
        self.client_read(ck, hup);
        // A paused client gets here again when it is resumed, one with
        // input left at the end of a later turn (see `client_read`).
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            if !c.paused && !c.closing && !c.again && c.splitting.is_none() {
                c.closing = true;
                c.eof = true;
                self.dirty_client(ck);
            }
        }
    }
}
