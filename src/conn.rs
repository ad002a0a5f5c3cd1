//! Connection objects kept in the context's slab: pool listeners, clients
//! and server connections. The slab key is the mio token.

use crate::inbuf::InBuf;
use crate::msg::MsgId;
use crate::net::{Listener, Stream};
use crate::proto::memcache::request::McReqParser;
use crate::proto::memcache::response::McRspParser;
use crate::proto::redis::request::ReqParser;
use crate::proto::redis::response::RspParser;
use std::collections::VecDeque;

pub enum Conn {
    Listener(ListenerConn),
    Client(ClientConn),
    Server(ServerConn),
}

pub struct ListenerConn {
    pub sock: Listener,
    pub pool: usize,
}

/// A client's read side, taken out of the connection while its bytes are
/// parsed so the context can be borrowed freely meanwhile.
#[derive(Debug, Default)]
pub struct ClientRx {
    pub inbuf: InBuf,
    pub redis: ReqParser,
    pub mc: McReqParser,
}

pub struct ClientConn {
    pub sock: Stream,
    pub pool: usize,
    pub rx: ClientRx,
    /// Requests in arrival order; replies are written in this order.
    pub outq: VecDeque<MsgId>,
    /// Bytes of the front message's reply already written.
    pub wsent: usize,
    /// The client closed its side: close once every reply is written.
    pub eof: bool,
    /// Stop reading: a QUIT or a protocol error is queued.
    pub closing: bool,
    pub authed: bool,
    /// Bytes of requests and replies this client holds (see `client.rs`).
    pub held: usize,
    /// Not read until `held` drains: it holds too much.
    pub paused: bool,
    /// The peer closed its side or the socket failed (seen in an event).
    pub hup: bool,
}

#[derive(Debug, Default)]
pub struct ServerRx {
    pub inbuf: InBuf,
    pub redis: RspParser,
    pub mc: McRspParser,
}

pub struct ServerConn {
    pub sock: Stream,
    /// Pool-global server index.
    pub server: usize,
    pub rx: ServerRx,
    /// Requests waiting to be written.
    pub inq: VecDeque<MsgId>,
    /// Requests written, awaiting their reply, in order.
    pub outq: VecDeque<MsgId>,
    /// Bytes of the front message of `inq` already written.
    pub wsent: usize,
    pub connected: bool,
}
