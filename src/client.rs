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
use crate::core::{gather, Side};
use crate::net::IoStep;
use crate::proto::memcache::request::Progress as McProgress;
use crate::proto::redis::request::Progress;

/// One parse step, whichever the protocol.
enum Step {
    Incomplete,
    Complete(u64),
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
/// The largest single request accepted (redis' own client query buffer
/// limit); a larger one is a protocol error.
pub const MAX_REQUEST_BYTES: u64 = 1024 * 1024 * 1024;

impl Context {
    pub fn client_read(&mut self, ck: ConnId, hup: bool) {
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
        if c.retiring && !c.paused && !c.closing {
            // Served to the end of what it sent (see `client_retire`).
            c.closing = true;
            c.eof = true;
            self.dirty_clients.push(ck);
        }
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
    fn client_parse(&mut self, ck: ConnId, rx: &mut ClientRx) -> bool {
        let redis = match self.conns.get(ck) {
            Some(Conn::Client(c)) => self.topo.pool(c.pool).is_some_and(|p| p.conf.redis),
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
                    McProgress::Error(e) => {
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
                        self.redis_request(ck, rx, end);
                        rx.redis.reset();
                    } else {
                        self.memcache_request(ck, rx, end);
                        rx.mc.reset();
                    }
                    rx.inbuf.consume(&mut self.mbufs, end);
                }
                Step::Error(reply) => {
                    self.protocol_error(ck, &reply);
                    return true;
                }
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
        loop {
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
        self.nclients = self.nclients.saturating_sub(1);
        if let Some(pool) = self.topo.pool_mut(c.pool) {
            pool.nclients = pool.nclients.saturating_sub(1);
            pool.stats.client_connections -= 1;
            if eof {
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
        // A paused client gets here again when it is resumed.
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            if !c.paused && !c.closing {
                c.closing = true;
                c.eof = true;
                self.dirty_clients.push(ck);
            }
        }
    }
}
