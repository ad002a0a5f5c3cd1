//! Transactions on one server: MULTI, the commands queued after it, EXEC
//! and DISCARD.
//!
//! Server connections are shared by many clients, so a client's MULTI
//! cannot simply be passed on. The proxy answers `MULTI` itself and keeps
//! each command that follows (its bytes stay in the mbufs, referenced, not
//! copied), answering `+QUEUED`, and notes which server each command's keys
//! belong to. At `EXEC` the whole block goes to that one server as one
//! contiguous run on one connection, `MULTI`, the commands, `EXEC`, so no
//! other client's request can land inside it; only EXEC's reply goes back
//! to the client. When the keys of the transaction live on different
//! servers, or a command was refused while queueing, EXEC answers
//! `-EXECABORT` and nothing runs. DISCARD, or the client going away, drops
//! the queue: no queued command ever runs unless EXEC succeeds.

use crate::conn::{ClientRx, Conn, ConnId};
use crate::core::Context;
use crate::mbuf::Seg;
use crate::msg::{Internal, MsgId, Origin};
use crate::plan::PLACEHOLDER;
use crate::topology::ServerId;

/// The most bytes and commands one transaction may queue; past either the
/// transaction is aborted (EXEC answers EXECABORT).
pub const TX_MAX_BYTES: usize = 64 * 1024 * 1024;
pub const TX_MAX_COMMANDS: usize = 100_000;

/// A client's open transaction.
#[derive(Debug, Default)]
pub struct Tx {
    /// Each queued command's bytes (segments retained) and length.
    pub cmds: Vec<(Vec<Seg>, usize)>,
    pub bytes: usize,
    /// The server of the keys seen so far.
    pub server: Option<ServerId>,
    /// Keys on more than one server.
    pub cross: bool,
    /// A command was refused while queueing.
    pub aborted: bool,
}

impl Context {
    /// `MULTI`: the client starts queueing.
    pub fn tx_begin(&mut self, ck: ConnId, mid: MsgId) {
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            c.tx = Some(Box::default());
        }
        self.local_reply(mid, b"+OK\r\n");
    }

    /// A command inside MULTI: kept, with the server of its keys.
    pub fn tx_queue(
        &mut self,
        ck: ConnId,
        mid: MsgId,
        rx: &ClientRx,
        keys: &[usize],
        start: u64,
        end: u64,
    ) {
        let Some(Conn::Client(c)) = self.conns.get(ck) else {
            return;
        };
        let pid = c.pool;
        let mut servers = Vec::with_capacity(keys.len());
        let mut failed = None;
        for &i in keys {
            let Some(a) = rx.redis.args.get(i) else {
                continue;
            };
            let (from, to) = a.data_range();
            let k = rx.inbuf.bytes(&self.mbufs, from, to, &mut self.key_scratch);
            match self.topo.route_for(pid, k, self.cur_access) {
                Ok(s) => servers.push(s),
                Err(e) => failed = Some(e),
            }
        }
        let mut segs = Vec::new();
        rx.inbuf.segs(&mut self.mbufs, start, end, &mut segs);
        let len = (end - start) as usize;
        let Some(Conn::Client(c)) = self.conns.get_mut(ck) else {
            self.mbufs.release_segs(&segs);
            return;
        };
        let Some(tx) = c.tx.as_mut() else {
            self.mbufs.release_segs(&segs);
            return;
        };
        if let Some(errno) = failed {
            tx.aborted = true;
            self.mbufs.release_segs(&segs);
            let reply = format!("-ERR {}\r\n", crate::net::strerror(errno));
            self.local_reply(mid, reply.as_bytes());
            return;
        }
        if tx.bytes + len > TX_MAX_BYTES || tx.cmds.len() >= TX_MAX_COMMANDS {
            tx.aborted = true;
            self.mbufs.release_segs(&segs);
            self.local_reply(mid, b"-ERR transaction too large for the proxy\r\n");
            return;
        }
        for s in servers {
            match tx.server {
                None => tx.server = Some(s),
                Some(t) if t != s => tx.cross = true,
                Some(_) => {}
            }
        }
        tx.bytes += len;
        tx.cmds.push((segs, len));
        self.local_reply(mid, b"+QUEUED\r\n");
    }

    /// A command refused inside MULTI: the transaction is aborted.
    pub fn tx_refuse(&mut self, ck: ConnId, mid: MsgId, reply: &[u8]) {
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            if let Some(tx) = c.tx.as_mut() {
                tx.aborted = true;
            }
        }
        self.local_reply(mid, reply);
    }

    /// `DISCARD`: the queue is dropped.
    pub fn tx_discard(&mut self, ck: ConnId, mid: MsgId) {
        self.tx_drop(ck);
        self.local_reply(mid, b"+OK\r\n");
    }

    /// Forgets a client's open transaction, releasing what it held.
    pub fn tx_drop(&mut self, ck: ConnId) {
        let tx = match self.conns.get_mut(ck) {
            Some(Conn::Client(c)) => c.tx.take(),
            _ => None,
        };
        if let Some(tx) = tx {
            for (segs, _) in &tx.cmds {
                self.mbufs.release_segs(segs);
            }
        }
    }

    /// `EXEC`: the block goes to the transaction's server, or nothing runs.
    pub fn tx_exec(&mut self, ck: ConnId, mid: MsgId) {
        let (tx, pid, proto) = match self.conns.get_mut(ck) {
            Some(Conn::Client(c)) => (c.tx.take(), c.pool, c.proto),
            _ => return,
        };
        let Some(tx) = tx else {
            self.local_reply(mid, b"-ERR EXEC without MULTI\r\n");
            return;
        };
        let refuse: Option<&[u8]> = if tx.aborted {
            Some(b"-EXECABORT Transaction discarded because of previous errors.\r\n")
        } else if tx.cross {
            Some(b"-EXECABORT Transaction discarded: its keys are on different servers of the pool (hash tags keep keys together)\r\n")
        } else if tx.cmds.is_empty() {
            Some(b"*0\r\n")
        } else {
            None
        };
        if let Some(reply) = refuse {
            for (segs, _) in &tx.cmds {
                self.mbufs.release_segs(segs);
            }
            self.local_reply(mid, reply);
            return;
        }
        let server = match tx.server {
            Some(s) => Ok(s),
            None => self.topo.route(pid, PLACEHOLDER),
        };
        let mut block = Vec::with_capacity(tx.cmds.len() + 2);
        block.push(self.internal_msg(&[b"MULTI"], Internal::TxStep));
        for (segs, len) in tx.cmds {
            let step = self.alloc_msg(Origin::Internal(Internal::TxStep));
            if let Some(m) = self.msgs.get_mut(step) {
                m.req = segs;
                m.req_len = len;
            }
            block.push(step);
        }
        self.set_request(mid, b"*1\r\n$4\r\nEXEC\r\n");
        block.push(mid);
        for &b in &block {
            if let Some(m) = self.msgs.get_mut(b) {
                m.proto = proto;
            }
        }
        match server {
            Ok(s) => self.forward_block(&block, s),
            Err(errno) => {
                for &b in &block {
                    self.fail_request(b, errno);
                }
            }
        }
    }
}
