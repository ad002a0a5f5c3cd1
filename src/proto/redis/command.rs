//! The one static command table of redis pools: which commands the proxy
//! accepts, how each is routed, and how many arguments it must have.
//!
//! docs/compatibility.md §7.2-§7.4. A command missing here is answered with
//! `-ERR unsupported command` (docs/compatibility.md §13: the connection stays open).

/// Routing class of a command. The `KeyN` classes carry the exact number of
/// arguments after the key that 0.5.0 enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// Key and exactly 0, 1, 2 or 3 more arguments.
    Key0,
    Key1,
    Key2,
    Key3,
    /// Key and any number of further arguments; redis checks them.
    KeyN,
    /// `EVAL script numkeys key ...`: routed by the first key.
    Eval,
    /// Multi-key commands split per server and merged back.
    Mget,
    Del,
    Unlink,
    Touch,
    Exists,
    Mset,
    /// Answered by the proxy itself.
    Ping,
    Quit,
    Auth,
    Hello,
    /// Keyless, forwarded to the server of the key `placeholder`.
    Command,
    Lolwut,
}

impl Cmd {
    /// Looks up a lower-case command name.
    pub fn lookup(lower: &[u8]) -> Option<Cmd> {
        Some(match lower {
            b"del" => Cmd::Del,
            b"get" => Cmd::Key0,
            b"set" => Cmd::KeyN,
            b"ttl" => Cmd::Key0,
            b"auth" => Cmd::Auth,
            b"copy" => Cmd::KeyN,
            b"decr" => Cmd::Key0,
            b"dump" => Cmd::Key0,
            b"eval" => Cmd::Eval,
            b"hdel" => Cmd::KeyN,
            b"hget" => Cmd::Key1,
            b"hlen" => Cmd::Key0,
            b"hset" => Cmd::KeyN,
            b"incr" => Cmd::Key0,
            b"llen" => Cmd::Key0,
            b"lpop" => Cmd::KeyN,
            b"lpos" => Cmd::KeyN,
            b"lrem" => Cmd::Key2,
            b"lset" => Cmd::Key2,
            b"mget" => Cmd::Mget,
            b"mset" => Cmd::Mset,
            b"ping" => Cmd::Ping,
            b"pttl" => Cmd::Key0,
            b"quit" => Cmd::Quit,
            b"rpop" => Cmd::KeyN,
            b"sadd" => Cmd::KeyN,
            b"sort" => Cmd::KeyN,
            b"spop" => Cmd::KeyN,
            b"srem" => Cmd::KeyN,
            b"type" => Cmd::Key0,
            b"zadd" => Cmd::KeyN,
            b"zrem" => Cmd::KeyN,
            b"getex" => Cmd::KeyN,
            b"hello" => Cmd::Hello,
            b"hkeys" => Cmd::Key0,
            b"hmget" => Cmd::KeyN,
            b"hmset" => Cmd::KeyN,
            b"hscan" => Cmd::KeyN,
            b"hvals" => Cmd::Key0,
            b"lmove" => Cmd::Key3,
            b"lpush" => Cmd::KeyN,
            b"ltrim" => Cmd::Key2,
            b"pfadd" => Cmd::KeyN,
            b"rpush" => Cmd::KeyN,
            b"scard" => Cmd::Key0,
            b"sdiff" => Cmd::KeyN,
            b"setex" => Cmd::Key2,
            b"setnx" => Cmd::Key1,
            b"smove" => Cmd::Key2,
            b"sscan" => Cmd::KeyN,
            b"touch" => Cmd::Touch,
            b"zcard" => Cmd::Key0,
            b"zdiff" => Cmd::KeyN,
            b"zrank" => Cmd::Key1,
            b"zscan" => Cmd::KeyN,
            b"append" => Cmd::Key1,
            b"bitpos" => Cmd::KeyN,
            b"decrby" => Cmd::Key1,
            b"exists" => Cmd::Exists,
            b"expire" => Cmd::Key1,
            b"geoadd" => Cmd::KeyN,
            b"geopos" => Cmd::KeyN,
            b"getbit" => Cmd::Key1,
            b"getdel" => Cmd::Key0,
            b"getset" => Cmd::Key1,
            b"hsetnx" => Cmd::Key2,
            b"incrby" => Cmd::Key1,
            b"lindex" => Cmd::Key1,
            b"lolwut" => Cmd::Lolwut,
            b"lpushx" => Cmd::KeyN,
            b"lrange" => Cmd::Key2,
            b"psetex" => Cmd::Key2,
            b"rpushx" => Cmd::KeyN,
            b"setbit" => Cmd::Key2,
            b"sinter" => Cmd::KeyN,
            b"strlen" => Cmd::Key0,
            b"sunion" => Cmd::KeyN,
            b"unlink" => Cmd::Unlink,
            b"zcount" => Cmd::Key2,
            b"zinter" => Cmd::KeyN,
            b"zrange" => Cmd::KeyN,
            b"zscore" => Cmd::Key1,
            b"zunion" => Cmd::KeyN,
            b"command" => Cmd::Command,
            b"evalsha" => Cmd::Eval,
            b"geodist" => Cmd::KeyN,
            b"geohash" => Cmd::KeyN,
            b"hexists" => Cmd::Key1,
            b"hgetall" => Cmd::Key0,
            b"hincrby" => Cmd::Key2,
            b"hstrlen" => Cmd::Key1,
            b"linsert" => Cmd::Key3,
            b"persist" => Cmd::Key0,
            b"pexpire" => Cmd::Key1,
            b"pfcount" => Cmd::KeyN,
            b"pfmerge" => Cmd::KeyN,
            b"restore" => Cmd::KeyN,
            b"zincrby" => Cmd::Key2,
            b"zmscore" => Cmd::KeyN,
            b"zpopmax" => Cmd::KeyN,
            b"zpopmin" => Cmd::KeyN,
            b"bitcount" => Cmd::KeyN,
            b"bitfield" => Cmd::KeyN,
            b"expireat" => Cmd::Key1,
            b"getrange" => Cmd::Key2,
            b"setrange" => Cmd::Key2,
            b"smembers" => Cmd::Key0,
            b"zrevrank" => Cmd::Key1,
            b"georadius" => Cmd::KeyN,
            b"geosearch" => Cmd::KeyN,
            b"pexpireat" => Cmd::Key1,
            b"rpoplpush" => Cmd::Key1,
            b"sismember" => Cmd::Key1,
            b"zlexcount" => Cmd::Key2,
            b"zrevrange" => Cmd::KeyN,
            b"hrandfield" => Cmd::KeyN,
            b"sdiffstore" => Cmd::KeyN,
            b"smismember" => Cmd::KeyN,
            b"zdiffstore" => Cmd::KeyN,
            b"incrbyfloat" => Cmd::Key1,
            b"sinterstore" => Cmd::KeyN,
            b"srandmember" => Cmd::KeyN,
            b"sunionstore" => Cmd::KeyN,
            b"zinterstore" => Cmd::KeyN,
            b"zrandmember" => Cmd::KeyN,
            b"zrangebylex" => Cmd::KeyN,
            b"zrangestore" => Cmd::KeyN,
            b"zunionstore" => Cmd::KeyN,
            b"hincrbyfloat" => Cmd::Key2,
            b"zrangebyscore" => Cmd::KeyN,
            b"geosearchstore" => Cmd::KeyN,
            b"zremrangebylex" => Cmd::Key2,
            b"zrevrangebylex" => Cmd::KeyN,
            b"zremrangebyrank" => Cmd::Key2,
            b"zremrangebyscore" => Cmd::Key2,
            b"zrevrangebyscore" => Cmd::KeyN,
            b"georadiusbymember" => Cmd::KeyN,
            _ => return None,
        })
    }

    /// Whether `nargs` items (command name included) fit this command.
    pub fn arity_ok(self, nargs: usize) -> bool {
        match self {
            Cmd::Key0 => nargs == 2,
            Cmd::Key1 => nargs == 3,
            Cmd::Key2 => nargs == 4,
            Cmd::Key3 => nargs == 5,
            Cmd::KeyN | Cmd::Mget | Cmd::Del | Cmd::Unlink | Cmd::Touch | Cmd::Exists => nargs >= 2,
            Cmd::Eval => nargs >= 4,
            Cmd::Mset => nargs >= 3 && nargs % 2 == 1,
            Cmd::Ping => nargs <= 2,
            Cmd::Quit | Cmd::Command => nargs == 1,
            Cmd::Auth => nargs == 2,
            Cmd::Hello | Cmd::Lolwut => true,
        }
    }

    /// Commands split per server when they name more than one key.
    pub fn is_fragmentable(self) -> bool {
        matches!(
            self,
            Cmd::Mget | Cmd::Del | Cmd::Unlink | Cmd::Touch | Cmd::Exists | Cmd::Mset
        )
    }

    /// The lower-case name used in fragment sub-requests.
    pub fn frag_name(self) -> &'static [u8] {
        match self {
            Cmd::Mget => b"mget",
            Cmd::Del => b"del",
            Cmd::Unlink => b"unlink",
            Cmd::Touch => b"touch",
            Cmd::Exists => b"exists",
            Cmd::Mset => b"mset",
            _ => b"",
        }
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
    fn lookup_and_arity() {
        assert_eq!(Cmd::lookup(b"get"), Some(Cmd::Key0));
        assert_eq!(Cmd::lookup(b"zremrangebyscore"), Some(Cmd::Key2));
        assert_eq!(Cmd::lookup(b"keys"), None);
        assert_eq!(Cmd::lookup(b"select"), None);
        assert!(Cmd::Mset.arity_ok(5));
        assert!(!Cmd::Mset.arity_ok(4));
        assert!(!Cmd::Key1.arity_ok(4));
        assert!(Cmd::Eval.arity_ok(4));
        assert!(!Cmd::Eval.arity_ok(3));
    }
}
