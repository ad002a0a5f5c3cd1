//! Connection objects kept in the context's arena: pool listeners, clients,
//! server connections and sentinel connections (`sentinel.rs`). A connection's [`ConnId`] is also its mio token.

use crate::id::Id;
use crate::inbuf::InBuf;
use crate::msg::MsgId;
use crate::net::{Listener, Stream};
use crate::proto::memcache::request::McReqParser;
use crate::proto::memcache::response::McRspParser;
use crate::proto::redis::reply::Proto;
use crate::proto::redis::request::ReqParser;
use crate::proto::redis::response::RspParser;
use crate::topology::{PoolId, ServerId};
use std::collections::VecDeque;

pub type ConnId = Id<Conn>;

pub enum Conn {
    Listener(ListenerConn),
    Client(ClientConn),
    Server(ServerConn),
    Sentinel(crate::sentinel::SentinelConn),
}

pub struct ListenerConn {
    pub sock: Listener,
    pub pool: PoolId,
    /// An accept retry is already scheduled (after EMFILE): one per
    /// listener, however many accepts failed.
    pub retry_pending: bool,
    /// The back-off episode under way (descriptors ran out), if any: logged
    /// once when it starts and once when it ends, not per failed accept.
    pub backoff: Option<Backoff>,
    /// In the context's `ready_again` list: the turn's accept budget ran
    /// out with connections maybe still in the backlog.
    pub again: bool,
}

/// One episode of accepts failing for lack of descriptors.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub since: std::time::Instant,
    /// Accepts that failed (one per retry) during the episode.
    pub failures: u64,
    /// Connections accepted and closed at once, over the open-file limit.
    pub refused: u64,
}

/// A client's read side, taken out of the connection while its bytes are
/// parsed so the context can be borrowed freely meanwhile.
#[derive(Debug, Default)]
pub struct ClientRx {
    pub inbuf: InBuf,
    pub redis: ReqParser,
    pub mc: McReqParser,
    /// The servers of the keys of the multi-key request being read, routed
    /// as its arguments arrive (`client.rs`, `preroute`), so splitting a
    /// million keys does not hash them all in one turn; valid for topology
    /// generation `routed_gen`.
    pub routed: Vec<ServerId>,
    pub routed_gen: u64,
    /// A scratch input made for one request (an inline request's RESP
    /// form), gone once that request is handled: its split is never left
    /// for a later turn.
    pub scratch: bool,
}

/// Routed-key slots kept between requests (see `client.rs`, `preroute`).
const KEEP_ROUTED: usize = 1024;

impl ClientRx {
    /// Forgets the keys routed for the request just handled.
    pub fn clear_routed(&mut self) {
        self.routed.clear();
        if self.routed.capacity() > KEEP_ROUTED {
            self.routed.shrink_to(KEEP_ROUTED);
        }
    }
}

pub struct ClientConn {
    pub sock: Stream,
    pub pool: PoolId,
    pub rx: ClientRx,
    /// Requests in arrival order; replies are written in this order.
    pub outq: VecDeque<MsgId>,
    /// How much of the front message's reply is written.
    pub wsent: crate::msg::WriteCursor,
    /// The client closed its side: close once every reply is written.
    pub eof: bool,
    /// Stop reading: a QUIT or a protocol error is queued, or the client's
    /// pool went away or moved in a reload.
    pub closing: bool,
    /// It sent QUIT: however the connection then ends, it counts as the
    /// client's end (`client_eof`), not an error, as in 0.5.0.
    pub quit: bool,
    pub authed: bool,
    /// Bytes of requests and replies this client holds (see `client.rs`).
    pub held: usize,
    /// Not read until `held` drains: it holds too much.
    pub paused: bool,
    /// The peer closed its side or the socket failed (seen in an event).
    pub hup: bool,
    /// Its pool was removed or moved by a reload: read what it sent so
    /// far, then close after the replies.
    pub retiring: bool,
    /// RESP2 until `HELLO 3`.
    pub proto: Proto,
    /// `CLIENT SETNAME` / `HELLO ... SETNAME`, kept by the proxy (server
    /// connections are shared, so it is never sent on).
    pub name: Option<Vec<u8>>,
    /// `CLIENT ID`: unique for the life of the process.
    pub id: u64,
    /// Commands queued since MULTI.
    pub tx: Option<Box<crate::transaction::Tx>>,
    /// In the context's `ready_again` list: its turn ended on the work
    /// budget with input left (see `core.rs`).
    pub again: bool,
    /// In the context's `dirty_clients` list (see `Context::dirty_client`).
    pub dirty: bool,
    /// In the context's `deferred_clients` list: its write is put off (see
    /// `Context::flush_dirty`).
    pub deferred: bool,
    /// Since when its write is put off.
    pub defer_since: Option<std::time::Instant>,
    /// Bytes of the incomplete request it holds, as counted in the
    /// context's `partial_bytes` (see `client.rs`, the request budget).
    pub partial: u64,
    /// Its current request is being split over several turns
    /// (`split.rs`); it ends at this offset of the input. Nothing more is
    /// parsed until the split is over.
    pub splitting: Option<u64>,
}

#[derive(Debug, Default)]
pub struct ServerRx {
    pub inbuf: InBuf,
    pub redis: RspParser,
    pub mc: McRspParser,
}

pub struct ServerConn {
    /// `None` while its server's host name is being resolved
    /// (`resolver.rs`).
    pub sock: Option<Stream>,
    pub server: ServerId,
    pub rx: ServerRx,
    /// Requests waiting to be written.
    pub inq: VecDeque<MsgId>,
    /// Requests written, awaiting their reply, in order.
    pub outq: VecDeque<MsgId>,
    /// How much of the front message of `inq` is written.
    pub wsent: crate::msg::WriteCursor,
    pub connected: bool,
    /// Takes no new request (its server left the pool, or the settings it
    /// was set up with changed): closed once its queues are empty.
    pub draining: bool,
    /// The protocol it was set up with (`HELLO 3` for RESP3 clients).
    pub proto: Proto,
    /// The peer closed its side or the socket failed (seen in an event):
    /// a turn resumed from `ready_again` reads on to the end.
    pub hup: bool,
    /// In the context's `ready_again` list (see `core.rs`).
    pub again: bool,
    /// In the context's `dirty_servers` list (see `Context::dirty_server`).
    pub dirty: bool,
    /// Reserved for the proxy's own requests (the probe of an ejected
    /// server, repair steps): never given a client's request, and its
    /// failure fails only those requests (no failure of the server is
    /// counted for it).
    pub private: bool,
}

impl ServerConn {
    pub fn idle(&self) -> bool {
        self.inq.is_empty() && self.outq.is_empty()
    }
}
