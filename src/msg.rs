//! Messages: a request and, once it has one, its reply.
//!
//! Every message has one [`Origin`]: who consumes its reply. A client's
//! request is born when the client's parser completes it; it is held by
//! the client's out queue (which keeps reply order) and, while forwarded,
//! by a server connection's in queue (to send) or out queue (sent, awaiting
//! the reply). It is freed when neither holds it. A multi-key request that
//! spans servers becomes a parent whose fragments (origin
//! [`Origin::Fragment`]) are the messages that travel; the parent is done
//! when every fragment is. The proxy's own requests (AUTH and SELECT on a
//! new server connection, and the later probes and data moves) have origin
//! [`Origin::Internal`]: the engine consumes their replies itself.
//! `request.rs` owns the lifecycle: what happens when a message completes
//! depends only on its origin.
//!
//! Bytes are never owned by a message: `req` and `rsp` are segments into
//! reference-counted mbufs (see `mbuf.rs`).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::conn::ConnId;
use crate::id::Id;
use crate::mbuf::Seg;
use crate::proto::redis::reply::Proto;
use crate::topology::ServerId;
use std::time::Instant;

pub type MsgId = Id<Msg>;

/// Who waits for a message's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client; the message sits in its out queue.
    Client(ConnId),
    /// One fragment of a split request: the parent message.
    Fragment(MsgId),
    /// The proxy's own request; the engine consumes the reply.
    Internal(Internal),
    /// Its client went away: the reply, when it comes, is dropped.
    Orphan,
}

/// A step between a reply's arrival and its delivery to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// `HELLO 3` asked of a backend: an error becomes `NOPROTO`, success
    /// switches the client to RESP3.
    Hello3,
}

/// The kinds of request the proxy sends for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    /// `redis_auth` on a new server connection.
    Auth,
    /// `redis_db` on a new server connection (its failure is logged).
    Select,
    /// `HELLO 3` on a new server connection for RESP3 clients.
    Hello,
    /// MULTI and the queued commands of a transaction: only EXEC's reply
    /// goes to the client.
    TxStep,
    /// One step of a key move (`migrate.rs`): its reply, or its failure,
    /// drives the move on.
    Move(crate::migrate::JobId),
}

/// What the client gets back for a multi-key request split over servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// MGET: one array element per requested key, in request order.
    Array,
    /// DEL / UNLINK / TOUCH / EXISTS: the sum of integer replies.
    Sum,
    /// MSET: `+OK`.
    Ok,
    /// memcached get/gets: the VALUE blocks in request order, then END.
    Values,
    /// SCRIPT LOAD on every server: each must answer the same; that reply.
    Same,
    /// SCRIPT EXISTS on every server: per element, 1 only if all say 1.
    AllOf,
    /// INFO of every server: the proxy's INFO with their lowest version.
    Info,
    /// SCAN on one server: its cursor re-encoded with the server's index.
    Scan,
    /// memcached flush_all on every server: `OK` when all say `OK`.
    McOk,
}

#[derive(Debug, Default)]
pub struct Frag {
    pub merge: Option<Merge>,
    /// Fragments still awaiting a reply.
    pub pending: u32,
    /// The fragments, in the order they were made.
    pub children: Vec<MsgId>,
    /// For each requested key (request order), the index into `children`.
    pub key_child: Vec<u32>,
    /// memcached get: the requested keys, concatenated, and where each
    /// ends, to put VALUE blocks back in request order.
    pub key_bytes: Vec<u8>,
    pub key_ends: Vec<u32>,
    /// SCAN: the index of the server asked and the number of servers.
    pub index: u32,
    pub count: u32,
}

#[derive(Debug)]
pub struct Msg {
    /// Request bytes as sent to the server (empty for local and parent).
    pub req: Vec<Seg>,
    pub req_len: usize,
    /// Reply bytes for the client (from the server, or made by the proxy).
    pub rsp: Vec<Seg>,
    /// Offsets inside `rsp` of the reply's top-level elements (fragments).
    pub elems: Vec<(u32, u32)>,
    /// memcached fragments: the key of each VALUE block in `elems`.
    pub val_keys: Vec<(u32, u32)>,
    /// Integer value of a fragment's reply (DEL and friends).
    pub integer: Option<i64>,
    /// The reply is not what a fragment of this kind expects.
    pub bad_reply: bool,
    pub origin: Origin,
    /// Server connection while queued or in flight there.
    pub server_conn: Option<ConnId>,
    /// The server this request was routed to.
    pub server: Option<ServerId>,
    /// The topology generation the request was routed under.
    pub generation: u64,
    /// The protocol of the client it is for: a RESP3 client's requests go
    /// on RESP3 server connections.
    pub proto: Proto,
    /// What to do with the reply before the client gets it.
    pub after: After,
    pub frag: Option<Box<Frag>>,
    /// Reply attached (or error set): ready to be written to the client.
    pub done: bool,
    /// errno of a forwarding failure; 0 when none.
    pub err: i32,
    /// memcached `noreply`: nothing is written back.
    pub noreply: bool,
    /// Close the client once this message's reply is written (QUIT,
    /// protocol error, MGET fragment failure).
    pub close_after: bool,
    pub deadline: Option<Instant>,
    /// Bytes counted in the owner's `held` for this message.
    pub held: usize,
}

impl Frag {
    /// Empties it for reuse, keeping the vectors' capacity.
    pub fn clear(&mut self) {
        self.merge = None;
        self.pending = 0;
        self.children.clear();
        self.key_child.clear();
        self.key_bytes.clear();
        self.key_ends.clear();
        self.index = 0;
        self.count = 0;
    }
}

impl Default for Msg {
    fn default() -> Msg {
        Msg::new()
    }
}

impl Msg {
    pub fn new() -> Msg {
        Msg {
            req: Vec::new(),
            req_len: 0,
            rsp: Vec::new(),
            elems: Vec::new(),
            val_keys: Vec::new(),
            integer: None,
            bad_reply: false,
            origin: Origin::Orphan,
            server_conn: None,
            server: None,
            generation: 0,
            proto: Proto::Resp2,
            after: After::Nothing,
            frag: None,
            done: false,
            err: 0,
            noreply: false,
            close_after: false,
            deadline: None,
            held: 0,
        }
    }

    /// Back to a fresh message, keeping the vectors' capacity (segments
    /// must have been released).
    pub fn reset(&mut self) {
        let mut req = std::mem::take(&mut self.req);
        let mut rsp = std::mem::take(&mut self.rsp);
        let mut elems = std::mem::take(&mut self.elems);
        let mut val_keys = std::mem::take(&mut self.val_keys);
        req.clear();
        rsp.clear();
        elems.clear();
        val_keys.clear();
        *self = Msg {
            req,
            rsp,
            elems,
            val_keys,
            ..Msg::new()
        };
    }

    /// The client waiting for this message, if a client does.
    pub fn client(&self) -> Option<ConnId> {
        match self.origin {
            Origin::Client(c) => Some(c),
            _ => None,
        }
    }

    /// The parent of a fragment.
    pub fn parent(&self) -> Option<MsgId> {
        match self.origin {
            Origin::Fragment(p) => Some(p),
            _ => None,
        }
    }

    pub fn is_internal(&self) -> bool {
        matches!(self.origin, Origin::Internal(_))
    }

    pub fn rsp_len(&self) -> usize {
        self.rsp.iter().map(|s| s.len()).sum()
    }
}

/// Appends segments covering `from..to` of the byte string that `segs`
/// spell (offsets relative to its start); the caller retains the chunks.
pub fn slice_segs(segs: &[Seg], from: usize, to: usize, out: &mut Vec<Seg>) {
    let mut pos = 0usize;
    for s in segs {
        let (a, b) = (pos, pos + s.len());
        pos = b;
        if b <= from {
            continue;
        }
        if a >= to {
            break;
        }
        let lo = from.max(a) - a;
        let hi = to.min(b) - a;
        out.push(Seg {
            id: s.id,
            start: s.start + lo as u32,
            end: s.start + hi as u32,
        });
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    #[test]
    fn slicing() {
        let segs = [
            Seg {
                id: 1,
                start: 10,
                end: 20,
            },
            Seg {
                id: 2,
                start: 0,
                end: 5,
            },
            Seg {
                id: 3,
                start: 100,
                end: 110,
            },
        ];
        let mut out = Vec::new();
        slice_segs(&segs, 8, 17, &mut out);
        assert_eq!(
            out,
            vec![
                Seg {
                    id: 1,
                    start: 18,
                    end: 20
                },
                Seg {
                    id: 2,
                    start: 0,
                    end: 5
                },
                Seg {
                    id: 3,
                    start: 100,
                    end: 102
                }
            ]
        );
    }
}
