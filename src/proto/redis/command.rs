//! The one static command table of redis pools: which commands the proxy
//! accepts, how each is routed, how many arguments it must have, and where
//! its keys are.
//!
//! docs/compatibility.md §7.2-§7.4. A command missing here is answered with
//! `-ERR unsupported command` (docs/compatibility.md §13: the connection stays open).
//!
//! Each entry ([`Spec`]) has a routing class ([`Cmd`]), the positions of
//! its keys ([`Keys`]) and whether the engine serves it yet. The classes:
//!
//! * `Key0`..`Key3`, `KeyN`: routed by the first key, forwarded whole; the
//!   number is the exact count of arguments after the key (N: any).
//! * `Eval`: `EVAL script numkeys key...`, routed by the first key.
//! * `Mget`, `Del`, `Unlink`, `Touch`, `Exists`, `Mset`: split per server
//!   and merged (docs/compatibility.md §7.4).
//! * `Ping`, `Quit`, `Auth`, `Hello`: answered by the proxy.
//! * `Command`, `Lolwut`: keyless, forwarded to the `placeholder` server.
//! * `Multi`, `Exec`, `Discard`, `Watch`, `Unwatch`: transactions; to be
//!   served when every key of the transaction is on one server.
//! * `Script` (LOAD, EXISTS, FLUSH: fanned out to every server, see
//!   [`script_sub`]), `Scan` (cursor walking the servers in turn, see
//!   [`parse_scan`]), `Client` (SETINFO, SETNAME, GETNAME, ID answered
//!   locally, see [`client_sub`]), `Select` (db 0 only), `Echo`, `Info`
//!   (answered locally, see `reply::info`).
//!
//! Commands naming several keys that cannot be split (SDIFF, SMOVE, LMOVE,
//! COPY, RENAME, ZUNIONSTORE, EVAL with numkeys > 1, ...) keep their
//! first-key routing; [`Keys`] tells where all their keys are, so the
//! engine can refuse them when the keys live on different servers (0.5.0
//! silently sends them to the first key's server). SORT's `STORE` and
//! GEORADIUS' `STORE` destinations are options, not positions: only the
//! first key is listed for them.
//!
//! Entries with `served: false` (the blocking BLMOVE and BRPOPLPUSH, which
//! must not block a shared server connection) are not returned by
//! [`Cmd::lookup`], so the engine answers them as unsupported; [`spec`]
//! sees them.

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
    /// Transactions.
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    /// `SCRIPT LOAD|EXISTS|FLUSH`: sent to every server.
    Script,
    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]` across the servers.
    Scan,
    /// `CLIENT SETINFO|SETNAME|GETNAME|ID`, answered locally.
    Client,
    Select,
    Echo,
    Info,
}

/// Where a command's keys are, as positions in the request (the command
/// name is position 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    None,
    /// Position 1 only.
    First,
    /// Positions 1 and 2 (RENAME src dst, SMOVE, LMOVE, COPY, ...).
    Two,
    /// Every argument from position 1, each `step`-th (2 for MSET pairs).
    All {
        step: u8,
    },
    /// A count of keys at position `at`, the keys right after it; with
    /// `dest`, position 1 is a key too (ZUNIONSTORE dest numkeys key...).
    NumKeys {
        at: u8,
        dest: bool,
    },
}

const NONE: Keys = Keys::None;
const FIRST: Keys = Keys::First;
const TWO: Keys = Keys::Two;
const ALL: Keys = Keys::All { step: 1 };
const PAIRS: Keys = Keys::All { step: 2 };
const NUMKEYS_1: Keys = Keys::NumKeys { at: 1, dest: false };
const NUMKEYS_2: Keys = Keys::NumKeys { at: 2, dest: false };
const NUMKEYS_DEST: Keys = Keys::NumKeys { at: 2, dest: true };

impl Keys {
    /// The position of the key count the caller must read (and parse with
    /// [`parse_count`]) before [`positions`](Self::positions).
    pub fn numkeys_at(self) -> Option<usize> {
        match self {
            Keys::NumKeys { at, .. } => Some(usize::from(at)),
            _ => None,
        }
    }

    /// The key positions of a request of `nargs` items (`numkeys`: the
    /// value at [`numkeys_at`](Self::numkeys_at)). `None` when the request
    /// cannot hold them (too few items, no key count): redis refuses those
    /// itself, with its own error.
    pub fn positions(self, nargs: usize, numkeys: Option<u64>) -> Option<KeyPositions> {
        let (dest, from, end, step) = match self {
            Keys::None => (false, 1, 1, 1),
            Keys::First => (false, 1, nargs.min(2), 1),
            Keys::Two => {
                if nargs < 3 {
                    return None;
                }
                (false, 1, 3, 1)
            }
            Keys::All { step } => (false, 1, nargs, usize::from(step.max(1))),
            Keys::NumKeys { at, dest } => {
                let n = usize::try_from(numkeys?).ok()?;
                let from = usize::from(at) + 1;
                let end = from.checked_add(n)?;
                if end > nargs || (dest && nargs < 2) {
                    return None;
                }
                (dest, from, end, 1)
            }
        };
        Some(KeyPositions {
            dest,
            next: from,
            end: end.max(from),
            step,
        })
    }
}

/// Iterator over key positions, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPositions {
    dest: bool,
    next: usize,
    end: usize,
    step: usize,
}

impl Iterator for KeyPositions {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.dest {
            self.dest = false;
            return Some(1);
        }
        if self.next >= self.end {
            return None;
        }
        let at = self.next;
        self.next = self.next.saturating_add(self.step);
        Some(at)
    }
}

/// One command's entry in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub cmd: Cmd,
    pub keys: Keys,
    /// The engine serves it; `false`: answered as unsupported for now.
    pub served: bool,
}

/// The table entry of a lower-case command name, served or not.
pub fn spec(lower: &[u8]) -> Option<Spec> {
    let (cmd, keys, served) = match lower {
        b"del" => (Cmd::Del, ALL, true),
        b"get" => (Cmd::Key0, FIRST, true),
        b"set" => (Cmd::KeyN, FIRST, true),
        b"ttl" => (Cmd::Key0, FIRST, true),
        b"auth" => (Cmd::Auth, NONE, true),
        b"copy" => (Cmd::KeyN, TWO, true),
        b"decr" => (Cmd::Key0, FIRST, true),
        b"dump" => (Cmd::Key0, FIRST, true),
        b"echo" => (Cmd::Echo, NONE, true),
        b"eval" => (Cmd::Eval, NUMKEYS_2, true),
        b"exec" => (Cmd::Exec, NONE, true),
        b"hdel" => (Cmd::KeyN, FIRST, true),
        b"hget" => (Cmd::Key1, FIRST, true),
        b"hlen" => (Cmd::Key0, FIRST, true),
        b"hset" => (Cmd::KeyN, FIRST, true),
        b"incr" => (Cmd::Key0, FIRST, true),
        b"info" => (Cmd::Info, NONE, true),
        b"llen" => (Cmd::Key0, FIRST, true),
        b"lpop" => (Cmd::KeyN, FIRST, true),
        b"lpos" => (Cmd::KeyN, FIRST, true),
        b"lrem" => (Cmd::Key2, FIRST, true),
        b"lset" => (Cmd::Key2, FIRST, true),
        b"mget" => (Cmd::Mget, ALL, true),
        b"mset" => (Cmd::Mset, PAIRS, true),
        b"ping" => (Cmd::Ping, NONE, true),
        b"pttl" => (Cmd::Key0, FIRST, true),
        b"quit" => (Cmd::Quit, NONE, true),
        b"rpop" => (Cmd::KeyN, FIRST, true),
        b"sadd" => (Cmd::KeyN, FIRST, true),
        b"scan" => (Cmd::Scan, NONE, true),
        b"sort" => (Cmd::KeyN, FIRST, true),
        b"spop" => (Cmd::KeyN, FIRST, true),
        b"srem" => (Cmd::KeyN, FIRST, true),
        b"type" => (Cmd::Key0, FIRST, true),
        b"zadd" => (Cmd::KeyN, FIRST, true),
        b"zrem" => (Cmd::KeyN, FIRST, true),
        b"getex" => (Cmd::KeyN, FIRST, true),
        b"hello" => (Cmd::Hello, NONE, true),
        b"hkeys" => (Cmd::Key0, FIRST, true),
        b"hmget" => (Cmd::KeyN, FIRST, true),
        b"hmset" => (Cmd::KeyN, FIRST, true),
        b"hscan" => (Cmd::KeyN, FIRST, true),
        b"hvals" => (Cmd::Key0, FIRST, true),
        b"lmove" => (Cmd::Key3, TWO, true),
        b"lpush" => (Cmd::KeyN, FIRST, true),
        b"ltrim" => (Cmd::Key2, FIRST, true),
        b"multi" => (Cmd::Multi, NONE, true),
        b"pfadd" => (Cmd::KeyN, FIRST, true),
        b"rpush" => (Cmd::KeyN, FIRST, true),
        b"scard" => (Cmd::Key0, FIRST, true),
        b"sdiff" => (Cmd::KeyN, ALL, true),
        b"setex" => (Cmd::Key2, FIRST, true),
        b"setnx" => (Cmd::Key1, FIRST, true),
        b"smove" => (Cmd::Key2, TWO, true),
        b"sscan" => (Cmd::KeyN, FIRST, true),
        b"touch" => (Cmd::Touch, ALL, true),
        b"watch" => (Cmd::Watch, ALL, true),
        b"zcard" => (Cmd::Key0, FIRST, true),
        b"zdiff" => (Cmd::KeyN, NUMKEYS_1, true),
        b"zrank" => (Cmd::Key1, FIRST, true),
        b"zscan" => (Cmd::KeyN, FIRST, true),
        b"append" => (Cmd::Key1, FIRST, true),
        b"bitpos" => (Cmd::KeyN, FIRST, true),
        b"blmove" => (Cmd::KeyN, TWO, false),
        b"client" => (Cmd::Client, NONE, true),
        b"decrby" => (Cmd::Key1, FIRST, true),
        b"exists" => (Cmd::Exists, ALL, true),
        b"expire" => (Cmd::Key1, FIRST, true),
        b"geoadd" => (Cmd::KeyN, FIRST, true),
        b"geopos" => (Cmd::KeyN, FIRST, true),
        b"getbit" => (Cmd::Key1, FIRST, true),
        b"getdel" => (Cmd::Key0, FIRST, true),
        b"getset" => (Cmd::Key1, FIRST, true),
        b"hsetnx" => (Cmd::Key2, FIRST, true),
        b"incrby" => (Cmd::Key1, FIRST, true),
        b"lindex" => (Cmd::Key1, FIRST, true),
        b"lolwut" => (Cmd::Lolwut, NONE, true),
        b"lpushx" => (Cmd::KeyN, FIRST, true),
        b"lrange" => (Cmd::Key2, FIRST, true),
        b"msetnx" => (Cmd::KeyN, PAIRS, true),
        b"psetex" => (Cmd::Key2, FIRST, true),
        b"rename" => (Cmd::Key1, TWO, true),
        b"rpushx" => (Cmd::KeyN, FIRST, true),
        b"script" => (Cmd::Script, NONE, true),
        b"select" => (Cmd::Select, NONE, true),
        b"setbit" => (Cmd::Key2, FIRST, true),
        b"sinter" => (Cmd::KeyN, ALL, true),
        b"strlen" => (Cmd::Key0, FIRST, true),
        b"sunion" => (Cmd::KeyN, ALL, true),
        b"unlink" => (Cmd::Unlink, ALL, true),
        b"zcount" => (Cmd::Key2, FIRST, true),
        b"zinter" => (Cmd::KeyN, NUMKEYS_1, true),
        b"zrange" => (Cmd::KeyN, FIRST, true),
        b"zscore" => (Cmd::Key1, FIRST, true),
        b"zunion" => (Cmd::KeyN, NUMKEYS_1, true),
        b"command" => (Cmd::Command, NONE, true),
        b"discard" => (Cmd::Discard, NONE, true),
        b"evalsha" => (Cmd::Eval, NUMKEYS_2, true),
        b"geodist" => (Cmd::KeyN, FIRST, true),
        b"geohash" => (Cmd::KeyN, FIRST, true),
        b"hexists" => (Cmd::Key1, FIRST, true),
        b"hgetall" => (Cmd::Key0, FIRST, true),
        b"hincrby" => (Cmd::Key2, FIRST, true),
        b"hstrlen" => (Cmd::Key1, FIRST, true),
        b"linsert" => (Cmd::Key3, FIRST, true),
        b"persist" => (Cmd::Key0, FIRST, true),
        b"pexpire" => (Cmd::Key1, FIRST, true),
        b"pfcount" => (Cmd::KeyN, ALL, true),
        b"pfmerge" => (Cmd::KeyN, ALL, true),
        b"restore" => (Cmd::KeyN, FIRST, true),
        b"unwatch" => (Cmd::Unwatch, NONE, true),
        b"zincrby" => (Cmd::Key2, FIRST, true),
        b"zmscore" => (Cmd::KeyN, FIRST, true),
        b"zpopmax" => (Cmd::KeyN, FIRST, true),
        b"zpopmin" => (Cmd::KeyN, FIRST, true),
        b"bitcount" => (Cmd::KeyN, FIRST, true),
        b"bitfield" => (Cmd::KeyN, FIRST, true),
        b"expireat" => (Cmd::Key1, FIRST, true),
        b"getrange" => (Cmd::Key2, FIRST, true),
        b"renamenx" => (Cmd::Key1, TWO, true),
        b"setrange" => (Cmd::Key2, FIRST, true),
        b"smembers" => (Cmd::Key0, FIRST, true),
        b"zrevrank" => (Cmd::Key1, FIRST, true),
        b"georadius" => (Cmd::KeyN, FIRST, true),
        b"geosearch" => (Cmd::KeyN, FIRST, true),
        b"pexpireat" => (Cmd::Key1, FIRST, true),
        b"rpoplpush" => (Cmd::Key1, TWO, true),
        b"sismember" => (Cmd::Key1, FIRST, true),
        b"zlexcount" => (Cmd::Key2, FIRST, true),
        b"zrevrange" => (Cmd::KeyN, FIRST, true),
        b"brpoplpush" => (Cmd::Key2, TWO, false),
        b"hrandfield" => (Cmd::KeyN, FIRST, true),
        b"sdiffstore" => (Cmd::KeyN, ALL, true),
        b"smismember" => (Cmd::KeyN, FIRST, true),
        b"zdiffstore" => (Cmd::KeyN, NUMKEYS_DEST, true),
        b"incrbyfloat" => (Cmd::Key1, FIRST, true),
        b"sinterstore" => (Cmd::KeyN, ALL, true),
        b"srandmember" => (Cmd::KeyN, FIRST, true),
        b"sunionstore" => (Cmd::KeyN, ALL, true),
        b"zinterstore" => (Cmd::KeyN, NUMKEYS_DEST, true),
        b"zrandmember" => (Cmd::KeyN, FIRST, true),
        b"zrangebylex" => (Cmd::KeyN, FIRST, true),
        b"zrangestore" => (Cmd::KeyN, TWO, true),
        b"zunionstore" => (Cmd::KeyN, NUMKEYS_DEST, true),
        b"hincrbyfloat" => (Cmd::Key2, FIRST, true),
        b"zrangebyscore" => (Cmd::KeyN, FIRST, true),
        b"geosearchstore" => (Cmd::KeyN, TWO, true),
        b"zremrangebylex" => (Cmd::Key2, FIRST, true),
        b"zrevrangebylex" => (Cmd::KeyN, FIRST, true),
        b"zremrangebyrank" => (Cmd::Key2, FIRST, true),
        b"zremrangebyscore" => (Cmd::Key2, FIRST, true),
        b"zrevrangebyscore" => (Cmd::KeyN, FIRST, true),
        b"georadiusbymember" => (Cmd::KeyN, FIRST, true),
        _ => return None,
    };
    Some(Spec { cmd, keys, served })
}

impl Cmd {
    /// Looks up a lower-case command name among the commands served.
    pub fn lookup(lower: &[u8]) -> Option<Cmd> {
        spec(lower).filter(|s| s.served).map(|s| s.cmd)
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
            Cmd::Hello | Cmd::Lolwut | Cmd::Info => true,
            Cmd::Multi | Cmd::Exec | Cmd::Discard | Cmd::Unwatch => nargs == 1,
            Cmd::Watch | Cmd::Script | Cmd::Scan | Cmd::Client => nargs >= 2,
            Cmd::Select | Cmd::Echo => nargs == 2,
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

// ---------------------------------------------------------------------------
// Arguments of the commands the proxy answers itself. Each parser takes the
// request's items (`args[0]` is the command name) and answers as redis 7
// would, errors in its words.

/// Why the arguments of a command answered locally are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgError {
    /// The whole error line after `-` (code included).
    Text(&'static str),
    /// `HELLO` with an unknown option at this position.
    HelloOption(usize),
    /// `CLIENT SETINFO` with an unknown attribute at this position.
    SetInfoOption(usize),
}

impl ArgError {
    /// Appends the error reply (`-...\r\n`).
    pub fn write(&self, args: &[&[u8]], out: &mut Vec<u8>) {
        let arg = |i: usize| args.get(i).copied().unwrap_or_default();
        let text: Vec<u8> = match *self {
            ArgError::Text(t) => t.as_bytes().to_vec(),
            ArgError::HelloOption(i) => {
                [&b"ERR Syntax error in HELLO option '"[..], arg(i), b"'"].concat()
            }
            ArgError::SetInfoOption(i) => {
                [&b"ERR Unrecognized option '"[..], arg(i), b"'"].concat()
            }
        };
        super::reply::error(out, &text);
    }
}

const NOT_INTEGER: ArgError = ArgError::Text("ERR value is not an integer or out of range");
const SYNTAX: ArgError = ArgError::Text("ERR syntax error");

/// A number as redis' `string2ll` reads one: optional `-`, digits, no
/// leading zero, no overflow.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let first = *digits.first()?;
    if !first.is_ascii_digit() || (first == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        // Accumulated negative so that i64::MIN fits.
        n = n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if neg {
        Some(n)
    } else {
        n.checked_neg()
    }
}

/// A key count (`numkeys` of EVAL, ZUNIONSTORE, ...): a non-negative
/// [`parse_i64`].
pub fn parse_count(text: &[u8]) -> Option<u64> {
    parse_i64(text).and_then(|n| u64::try_from(n).ok())
}

/// A client or library name: no spaces, newlines or other bytes outside
/// `!`..`~`, as redis validates them.
fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

/// What `HELLO [protover [AUTH user pass] [SETNAME name]]` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// `None`: stay in the current protocol.
    pub proto: Option<super::reply::Proto>,
    /// Positions of the user name and password.
    pub auth: Option<(usize, usize)>,
    /// Position of the client name.
    pub setname: Option<usize>,
}

pub fn parse_hello(args: &[&[u8]]) -> Result<Hello, ArgError> {
    use super::reply::Proto;
    let mut h = Hello {
        proto: None,
        auth: None,
        setname: None,
    };
    let mut j = 1;
    if let Some(v) = args.get(1) {
        h.proto = Some(match parse_i64(v) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return Err(ArgError::Text("NOPROTO unsupported protocol version")),
            None => {
                return Err(ArgError::Text(
                    "ERR Protocol version is not an integer or out of range",
                ))
            }
        });
        j = 2;
    }
    while let Some(opt) = args.get(j) {
        let more = args.len() - j - 1;
        if opt.eq_ignore_ascii_case(b"auth") && more >= 2 {
            h.auth = Some((j + 1, j + 2));
            j += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && more >= 1 {
            if !args.get(j + 1).is_some_and(|n| valid_name(n)) {
                return Err(ArgError::Text(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            h.setname = Some(j + 1);
            j += 2;
        } else {
            return Err(ArgError::HelloOption(j));
        }
    }
    Ok(h)
}

/// `SCRIPT` subcommands the proxy fans out; `Other` for the rest (KILL,
/// DEBUG, HELP) and for a subcommand with the wrong arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptSub {
    /// `SCRIPT LOAD script`: the script is at position 2.
    Load,
    /// `SCRIPT EXISTS sha...`: one integer per sha, from position 2.
    Exists,
    /// `SCRIPT FLUSH [ASYNC|SYNC]`.
    Flush,
    Other,
}

pub fn script_sub(args: &[&[u8]]) -> ScriptSub {
    let Some(sub) = args.get(1) else {
        return ScriptSub::Other;
    };
    let n = args.len();
    if sub.eq_ignore_ascii_case(b"load") && n == 3 {
        ScriptSub::Load
    } else if sub.eq_ignore_ascii_case(b"exists") && n >= 3 {
        ScriptSub::Exists
    } else if sub.eq_ignore_ascii_case(b"flush")
        && (n == 2
            || (n == 3
                && args.get(2).is_some_and(|m| {
                    m.eq_ignore_ascii_case(b"async") || m.eq_ignore_ascii_case(b"sync")
                })))
    {
        ScriptSub::Flush
    } else {
        ScriptSub::Other
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]` (a repeated
/// option: the last one counts, as in redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub cursor: u64,
    /// Positions of the pattern and the type name.
    pub pattern: Option<usize>,
    pub count: Option<i64>,
    pub type_name: Option<usize>,
}

/// A SCAN cursor: decimal digits (a `+` allowed, as `strtoull` reads it).
fn parse_cursor(text: &[u8]) -> Option<u64> {
    let digits = text.strip_prefix(b"+").unwrap_or(text);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

pub fn parse_scan(args: &[&[u8]]) -> Result<Scan, ArgError> {
    let cursor = args
        .get(1)
        .and_then(|c| parse_cursor(c))
        .ok_or(ArgError::Text("ERR invalid cursor"))?;
    let mut s = Scan {
        cursor,
        pattern: None,
        count: None,
        type_name: None,
    };
    let mut j = 2;
    while let Some(opt) = args.get(j) {
        let Some(value) = args.get(j + 1) else {
            return Err(SYNTAX);
        };
        if opt.eq_ignore_ascii_case(b"count") {
            let n = parse_i64(value).ok_or(NOT_INTEGER)?;
            if n < 1 {
                return Err(SYNTAX);
            }
            s.count = Some(n);
        } else if opt.eq_ignore_ascii_case(b"match") {
            s.pattern = Some(j + 1);
        } else if opt.eq_ignore_ascii_case(b"type") {
            s.type_name = Some(j + 1);
        } else {
            return Err(SYNTAX);
        }
        j += 2;
    }
    Ok(s)
}

/// `CLIENT SETINFO` attributes (redis 7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibAttr {
    LibName,
    LibVer,
}

/// `CLIENT` subcommands answered locally; `Other` for the rest (LIST,
/// KILL, TRACKING, ...) and for a subcommand with the wrong arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSub {
    /// The value is at position 3.
    SetInfo(LibAttr),
    /// The name is at position 2 (empty: clear the name).
    SetName,
    GetName,
    Id,
    Other,
}

pub fn client_sub(args: &[&[u8]]) -> Result<ClientSub, ArgError> {
    let Some(sub) = args.get(1) else {
        return Ok(ClientSub::Other);
    };
    let n = args.len();
    Ok(if sub.eq_ignore_ascii_case(b"setinfo") && n == 4 {
        let attr = args.get(2).copied().unwrap_or_default();
        let attr = if attr.eq_ignore_ascii_case(b"lib-name") {
            LibAttr::LibName
        } else if attr.eq_ignore_ascii_case(b"lib-ver") {
            LibAttr::LibVer
        } else {
            return Err(ArgError::SetInfoOption(2));
        };
        if !args.get(3).is_some_and(|v| valid_name(v)) {
            return Err(ArgError::Text(match attr {
                LibAttr::LibName => {
                    "ERR lib-name cannot contain spaces, newlines or special characters."
                }
                LibAttr::LibVer => {
                    "ERR lib-ver cannot contain spaces, newlines or special characters."
                }
            }));
        }
        ClientSub::SetInfo(attr)
    } else if sub.eq_ignore_ascii_case(b"setname") && n == 3 {
        if !args.get(2).is_some_and(|v| valid_name(v)) {
            return Err(ArgError::Text(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            ));
        }
        ClientSub::SetName
    } else if sub.eq_ignore_ascii_case(b"getname") && n == 2 {
        ClientSub::GetName
    } else if sub.eq_ignore_ascii_case(b"id") && n == 2 {
        ClientSub::Id
    } else {
        ClientSub::Other
    })
}

/// The database of `SELECT db`, as redis reads it.
pub fn parse_select(args: &[&[u8]]) -> Result<i64, ArgError> {
    let db = args.get(1).and_then(|d| parse_i64(d)).ok_or(NOT_INTEGER)?;
    if db < 0 || db > i64::from(i32::MAX) {
        return Err(ArgError::Text("ERR DB index is out of range"));
    }
    Ok(db)
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
    use crate::proto::redis::reply::Proto;

    #[test]
    fn lookup_and_arity() {
        assert_eq!(Cmd::lookup(b"get"), Some(Cmd::Key0));
        assert_eq!(Cmd::lookup(b"zremrangebyscore"), Some(Cmd::Key2));
        assert_eq!(Cmd::lookup(b"keys"), None);
        assert_eq!(Cmd::lookup(b"select"), Some(Cmd::Select));
        assert!(Cmd::Mset.arity_ok(5));
        assert!(!Cmd::Mset.arity_ok(4));
        assert!(!Cmd::Key1.arity_ok(4));
        assert!(Cmd::Eval.arity_ok(4));
        assert!(!Cmd::Eval.arity_ok(3));
        assert!(Cmd::Multi.arity_ok(1) && !Cmd::Multi.arity_ok(2));
        assert!(Cmd::Watch.arity_ok(3) && !Cmd::Watch.arity_ok(1));
        assert!(Cmd::Select.arity_ok(2) && !Cmd::Select.arity_ok(3));
        assert!(Cmd::Info.arity_ok(1) && Cmd::Info.arity_ok(4));
    }

    /// Only the blocking two-key commands stay unserved: they would hold
    /// a shared server connection.
    #[test]
    fn served_and_unserved_classes() {
        for (name, cmd, keys) in [
            (&b"multi"[..], Cmd::Multi, Keys::None),
            (b"exec", Cmd::Exec, Keys::None),
            (b"discard", Cmd::Discard, Keys::None),
            (b"watch", Cmd::Watch, ALL),
            (b"unwatch", Cmd::Unwatch, Keys::None),
            (b"script", Cmd::Script, Keys::None),
            (b"scan", Cmd::Scan, Keys::None),
            (b"client", Cmd::Client, Keys::None),
            (b"select", Cmd::Select, Keys::None),
            (b"echo", Cmd::Echo, Keys::None),
            (b"info", Cmd::Info, Keys::None),
            (b"rename", Cmd::Key1, Keys::Two),
            (b"renamenx", Cmd::Key1, Keys::Two),
            (b"msetnx", Cmd::KeyN, PAIRS),
        ] {
            let s = spec(name).unwrap();
            assert_eq!((s.cmd, s.keys, s.served), (cmd, keys, true), "{name:?}");
            assert_eq!(Cmd::lookup(name), Some(cmd));
        }
        for (name, cmd) in [(&b"blmove"[..], Cmd::KeyN), (b"brpoplpush", Cmd::Key2)] {
            let s = spec(name).unwrap();
            assert_eq!((s.cmd, s.served), (cmd, false), "{name:?}");
            assert_eq!(Cmd::lookup(name), None);
        }
        // Served commands keep their routing class.
        for (name, cmd) in [
            (&b"hello"[..], Cmd::Hello),
            (b"sdiff", Cmd::KeyN),
            (b"smove", Cmd::Key2),
            (b"rpoplpush", Cmd::Key1),
            (b"lmove", Cmd::Key3),
            (b"eval", Cmd::Eval),
            (b"exists", Cmd::Exists),
        ] {
            assert_eq!(Cmd::lookup(name), Some(cmd), "{name:?}");
            assert!(spec(name).unwrap().served);
        }
    }

    fn keys_of(name: &[u8], args: &[&str]) -> Option<Vec<usize>> {
        let s = spec(name).unwrap();
        let numkeys = s
            .keys
            .numkeys_at()
            .and_then(|at| args.get(at))
            .and_then(|n| parse_count(n.as_bytes()));
        s.keys.positions(args.len(), numkeys).map(|p| p.collect())
    }

    #[test]
    fn key_positions() {
        assert_eq!(keys_of(b"get", &["get", "k"]), Some(vec![1]));
        assert_eq!(keys_of(b"ping", &["ping"]), Some(vec![]));
        assert_eq!(
            keys_of(b"mget", &["mget", "a", "b", "c"]),
            Some(vec![1, 2, 3])
        );
        assert_eq!(
            keys_of(b"mset", &["mset", "a", "1", "b", "2"]),
            Some(vec![1, 3])
        );
        assert_eq!(
            keys_of(b"msetnx", &["msetnx", "a", "1", "b", "2"]),
            Some(vec![1, 3])
        );
        assert_eq!(
            keys_of(b"sinterstore", &["sinterstore", "d", "a", "b"]),
            Some(vec![1, 2, 3])
        );
        for name in ["rename", "renamenx", "smove", "rpoplpush", "copy"] {
            let args = [name, "src", "dst", "x"];
            assert_eq!(keys_of(name.as_bytes(), &args), Some(vec![1, 2]), "{name}");
        }
        assert_eq!(
            keys_of(b"lmove", &["lmove", "a", "b", "LEFT", "RIGHT"]),
            Some(vec![1, 2])
        );
        assert_eq!(
            keys_of(b"blmove", &["blmove", "a", "b", "LEFT", "RIGHT", "0"]),
            Some(vec![1, 2])
        );
        assert_eq!(keys_of(b"rename", &["rename", "a"]), None);
        assert_eq!(
            keys_of(
                b"zunionstore",
                &["zunionstore", "d", "2", "a", "b", "WEIGHTS", "1", "2"]
            ),
            Some(vec![1, 3, 4])
        );
        assert_eq!(
            keys_of(b"zinter", &["zinter", "2", "a", "b"]),
            Some(vec![2, 3])
        );
        assert_eq!(
            keys_of(b"eval", &["eval", "return 1", "2", "a", "b", "arg"]),
            Some(vec![3, 4])
        );
        assert_eq!(keys_of(b"evalsha", &["evalsha", "sha", "0"]), Some(vec![]));
        // More keys announced than given, or no count: redis refuses it.
        assert_eq!(keys_of(b"eval", &["eval", "s", "3", "a", "b"]), None);
        assert_eq!(keys_of(b"eval", &["eval", "s", "x", "a"]), None);
        assert_eq!(keys_of(b"eval", &["eval", "s", "-1", "a"]), None);
        assert_eq!(keys_of(b"watch", &["watch", "a", "b"]), Some(vec![1, 2]));
    }

    #[test]
    fn strict_numbers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1x",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
        assert_eq!(parse_count(b"3"), Some(3));
        assert_eq!(parse_count(b"-3"), None);
    }

    fn err_text(e: ArgError, args: &[&[u8]]) -> String {
        let mut out = Vec::new();
        e.write(args, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hello_arguments() {
        let ok = |args: &[&[u8]]| parse_hello(args).unwrap();
        assert_eq!(
            ok(&[b"HELLO"]),
            Hello {
                proto: None,
                auth: None,
                setname: None
            }
        );
        assert_eq!(ok(&[b"hello", b"2"]).proto, Some(Proto::Resp2));
        let h = ok(&[b"hello", b"3", b"auth", b"u", b"p", b"SETNAME", b"app"]);
        assert_eq!(
            h,
            Hello {
                proto: Some(Proto::Resp3),
                auth: Some((3, 4)),
                setname: Some(6)
            }
        );
        let h = ok(&[b"hello", b"3", b"setname", b"a", b"AUTH", b"u", b"p"]);
        assert_eq!((h.auth, h.setname), (Some((5, 6)), Some(3)));
        for (args, want) in [
            (
                &[&b"hello"[..], b"4"][..],
                "-NOPROTO unsupported protocol version\r\n",
            ),
            (
                &[b"hello", b"1"],
                "-NOPROTO unsupported protocol version\r\n",
            ),
            (
                &[b"hello", b"x"],
                "-ERR Protocol version is not an integer or out of range\r\n",
            ),
            (
                &[b"hello", b"3", b"auth", b"u"],
                "-ERR Syntax error in HELLO option 'auth'\r\n",
            ),
            (
                &[b"hello", b"3", b"bogus"],
                "-ERR Syntax error in HELLO option 'bogus'\r\n",
            ),
            (
                &[b"hello", b"3", b"setname"],
                "-ERR Syntax error in HELLO option 'setname'\r\n",
            ),
            (
                &[b"hello", b"3", b"setname", b"a b"],
                "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
            ),
        ] {
            assert_eq!(
                err_text(parse_hello(args).unwrap_err(), args),
                want,
                "{args:?}"
            );
        }
    }

    #[test]
    fn script_subcommands() {
        use ScriptSub::*;
        for (args, want) in [
            (&[&b"script"[..], b"LOAD", b"return 1"][..], Load),
            (&[b"script", b"load"], Other),
            (&[b"script", b"load", b"a", b"b"], Other),
            (&[b"script", b"exists", b"a", b"b"], Exists),
            (&[b"script", b"exists"], Other),
            (&[b"script", b"flush"], Flush),
            (&[b"script", b"FLUSH", b"async"], Flush),
            (&[b"script", b"flush", b"SYNC"], Flush),
            (&[b"script", b"flush", b"later"], Other),
            (&[b"script", b"kill"], Other),
            (&[b"script"], Other),
        ] {
            assert_eq!(script_sub(args), want, "{args:?}");
        }
    }

    #[test]
    fn scan_arguments() {
        let s = parse_scan(&[b"scan", b"0"]).unwrap();
        assert_eq!(
            s,
            Scan {
                cursor: 0,
                pattern: None,
                count: None,
                type_name: None
            }
        );
        let s = parse_scan(&[
            b"scan",
            b"18446744073709551615",
            b"MATCH",
            b"k*",
            b"count",
            b"10",
            b"TYPE",
            b"string",
            b"count",
            b"20",
        ])
        .unwrap();
        assert_eq!(
            s,
            Scan {
                cursor: u64::MAX,
                pattern: Some(3),
                count: Some(20),
                type_name: Some(7)
            }
        );
        assert_eq!(parse_scan(&[b"scan", b"+7"]).unwrap().cursor, 7);
        for (args, want) in [
            (&[&b"scan"[..], b"x"][..], "-ERR invalid cursor\r\n"),
            (&[b"scan", b"-1"], "-ERR invalid cursor\r\n"),
            (
                &[b"scan", b"18446744073709551616"],
                "-ERR invalid cursor\r\n",
            ),
            (&[b"scan", b"0", b"count"], "-ERR syntax error\r\n"),
            (&[b"scan", b"0", b"count", b"0"], "-ERR syntax error\r\n"),
            (
                &[b"scan", b"0", b"count", b"x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&[b"scan", b"0", b"limit", b"1"], "-ERR syntax error\r\n"),
        ] {
            assert_eq!(
                err_text(parse_scan(args).unwrap_err(), args),
                want,
                "{args:?}"
            );
        }
    }

    #[test]
    fn client_subcommands() {
        use ClientSub::*;
        for (args, want) in [
            (
                &[&b"client"[..], b"SETINFO", b"LIB-NAME", b"redis-py"][..],
                SetInfo(LibAttr::LibName),
            ),
            (
                &[b"client", b"setinfo", b"lib-ver", b"5.0.1"],
                SetInfo(LibAttr::LibVer),
            ),
            (&[b"client", b"setname", b"app"], SetName),
            (&[b"client", b"setname", b""], SetName),
            (&[b"client", b"getname"], GetName),
            (&[b"client", b"ID"], Id),
            (&[b"client", b"id", b"x"], Other),
            (&[b"client", b"list"], Other),
            (&[b"client"], Other),
        ] {
            assert_eq!(client_sub(args), Ok(want), "{args:?}");
        }
        for (args, want) in [
            (
                &[&b"client"[..], b"setinfo", b"lib-x", b"v"][..],
                "-ERR Unrecognized option 'lib-x'\r\n",
            ),
            (
                &[b"client", b"setinfo", b"lib-name", b"a b"],
                "-ERR lib-name cannot contain spaces, newlines or special characters.\r\n",
            ),
            (
                &[b"client", b"setname", b"a\nb"],
                "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
            ),
        ] {
            assert_eq!(
                err_text(client_sub(args).unwrap_err(), args),
                want,
                "{args:?}"
            );
        }
    }

    #[test]
    fn select_arguments() {
        assert_eq!(parse_select(&[b"select", b"0"]), Ok(0));
        assert_eq!(parse_select(&[b"select", b"15"]), Ok(15));
        let e = parse_select(&[b"select", b"x"]).unwrap_err();
        assert_eq!(
            err_text(e, &[]),
            "-ERR value is not an integer or out of range\r\n"
        );
        let e = parse_select(&[b"select", b"-1"]).unwrap_err();
        assert_eq!(err_text(e, &[]), "-ERR DB index is out of range\r\n");
    }
}
