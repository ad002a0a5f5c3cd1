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
    /// `PING` / `version` asked of an ejected server before it may rejoin
    /// (`probe.rs`).
    Probe,
    /// One step of the repair of the keys owned by this server that were
    /// written elsewhere while it was ejected (`repair.rs`).
    Repair(ServerId),
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
    /// INFO: the sections asked for, space-separated.
    pub sections: Vec<u8>,
    /// SCAN: the index of the server asked and the number of servers.
    pub index: u32,
    pub count: u32,
    /// The server of each fragment, while a split is under way.
    pub servers: Vec<ServerId>,
    /// By server slot: the index + 1 of its fragment (0: none yet), while
    /// a split routes its keys.
    pub slot_child: Vec<u32>,
    /// Per fragment, while merging: where the walk of its reply stands.
    pub next: Vec<Walk>,
    /// Keys done by the current pass of a split or merge spread over
    /// turns (`split.rs`).
    pub progress: usize,
}

/// Where a merge stands in one fragment's reply.
#[derive(Debug, Default, Clone, Copy)]
pub struct Walk {
    /// The next reply element (or VALUE block) to take.
    pub elem: usize,
    /// Where in the reply's segments that element is sought from.
    pub cur: SegCursor,
    /// memcached get: how many of the fragment's keys were passed.
    pub keys: u32,
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
    /// memcached get fragments: for each VALUE block in `elems`, the
    /// index among this fragment's keys of the key it answers (matched
    /// while the reply was read, see `server.rs`, `values_asked`).
    pub val_keys: Vec<u32>,
    /// A fragment: the most elements its reply's array may announce (the
    /// keys it asked for); a backend announcing more is failed.
    pub reply_elems: u32,
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
    /// Close the client once this message's reply is written (QUIT, a
    /// protocol error).
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
        self.sections.clear();
        self.index = 0;
        self.count = 0;
        self.servers.clear();
        self.slot_child.clear();
        self.next.clear();
        self.progress = 0;
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
            reply_elems: 0,
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
    slice_segs_at(segs, &mut SegCursor::default(), from, to, out);
}

/// A position in a byte string spelled by segments: the index of a segment
/// and the offset of that segment's first byte. Walking a reply's elements
/// in order with one cursor costs the segments once in all, where a walk
/// from the start for each element costs elements x segments (the
/// quadratic merge of a million-key MGET).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SegCursor {
    pub seg: usize,
    pub pos: usize,
}

impl SegCursor {
    /// Moves forward to the segment holding offset `at` (never back).
    pub fn seek(&mut self, segs: &[Seg], at: usize) {
        while let Some(s) = segs.get(self.seg) {
            if self.pos + s.len() > at {
                return;
            }
            self.pos += s.len();
            self.seg += 1;
        }
    }
}

/// [`slice_segs`] from `cur`, which must not be past `from`; leaves `cur`
/// at the segment holding `from`. A piece that continues the last segment
/// of `out` in the same chunk extends it instead of adding one, so the
/// pieces of a reply that sat together stay one segment (and one iovec).
/// Returns how many segments were added (the caller retains those).
pub fn slice_segs_at(
    segs: &[Seg],
    cur: &mut SegCursor,
    from: usize,
    to: usize,
    out: &mut Vec<Seg>,
) -> usize {
    cur.seek(segs, from);
    let mut added = 0;
    let mut pos = cur.pos;
    for s in segs.get(cur.seg..).unwrap_or_default() {
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
        let piece = Seg {
            id: s.id,
            start: s.start + lo as u32,
            end: s.start + hi as u32,
        };
        if push_coalesced(out, piece) {
            added += 1;
        }
    }
    added
}

/// Appends `piece`, or extends the last segment when `piece` continues it
/// in the same chunk. True when a segment was added (it needs a reference
/// of its own); false when the last one grew (it already holds one).
pub fn push_coalesced(out: &mut Vec<Seg>, piece: Seg) -> bool {
    if let Some(last) = out.last_mut() {
        if last.id == piece.id && last.end == piece.start {
            last.end = piece.end;
            return false;
        }
    }
    out.push(piece);
    true
}

/// How far the writing of a queue's front message has come: the segment
/// being written and the bytes of it already written. Kept as a position,
/// not a byte count, so each `writev` starts where the last one stopped
/// instead of skipping the written bytes segment by segment again (which
/// made writing a million-segment reply quadratic).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteCursor {
    pub seg: usize,
    pub off: usize,
}

impl WriteCursor {
    /// Accounts `n` more bytes written of `segs` (taking them from `n`);
    /// true when the whole of `segs` is written, `n` then holding what
    /// belongs to the messages after it.
    pub fn advance(&mut self, segs: &[Seg], n: &mut usize) -> bool {
        while let Some(s) = segs.get(self.seg) {
            let left = s.len().saturating_sub(self.off);
            if *n < left {
                self.off += *n;
                *n = 0;
                return false;
            }
            *n -= left;
            self.seg += 1;
            self.off = 0;
        }
        true
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

    fn seg(id: u32, start: u32, end: u32) -> Seg {
        Seg { id, start, end }
    }

    #[test]
    fn cursor_slicing_matches_and_coalesces() {
        // Two pieces of chunk 1 that touch, then chunk 2.
        let segs = [seg(1, 0, 4), seg(1, 4, 8), seg(2, 0, 8)];
        let mut cur = SegCursor::default();
        let mut out = Vec::new();
        assert_eq!(slice_segs_at(&segs, &mut cur, 2, 6, &mut out), 1);
        assert_eq!(out, vec![seg(1, 2, 6)]);
        // Continues the last piece: extended, nothing added.
        assert_eq!(slice_segs_at(&segs, &mut cur, 6, 10, &mut out), 1);
        assert_eq!(out, vec![seg(1, 2, 8), seg(2, 0, 2)]);
        assert_eq!(cur, SegCursor { seg: 1, pos: 4 });
        let mut w = WriteCursor::default();
        let mut n = 5;
        assert!(!w.advance(&segs, &mut n));
        assert_eq!((w, n), (WriteCursor { seg: 1, off: 1 }, 0));
        let mut n = 20;
        assert!(w.advance(&segs, &mut n));
        assert_eq!(n, 9);
    }

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
