//! Incremental parser of memcached ASCII requests (docs/compatibility.md §8.1), splitting
//! lines where memcached 1.6 splits them.
//!
//! Like the redis parser it does no I/O and copies no payload: it is fed
//! the bytes of a connection's input stream piece by piece and records
//! where the command, each key and the data block lie as absolute stream
//! offsets. Only the command word (at most 9 bytes) is copied, to look it
//! up; numbers are checked as they stream by and only their values are
//! kept.
//!
//! A line ends at LF; a CR right before it is dropped, any other CR is an
//! ordinary byte (memcached splits tokens at spaces only, so `get a\rb` is
//! a get of the key `a\rb`). Tokens are separated by spaces; a NUL byte
//! ends the tokens (memcached reads the line as a C string) but not the
//! line. Work is linear in the bytes received, and a command line is
//! bounded ([`MAX_LINE`], or [`MAX_GET_LINE`] for get/gets), so a client
//! cannot make us wait forever for a line end; memcached closes such a
//! connection too.
//!
//! Three outcomes besides `Incomplete`: [`Progress::Complete`] for a
//! request to serve; [`Progress::Refused`] for a line memcached answers
//! with an error while staying in step with the stream (an unknown
//! command, a bad argument): the engine answers [`McReqError::reply`]
//! (nothing when [`McReqParser::noreply`] is set, as memcached stays
//! silent then) and carries on after it; and [`Progress::Error`] when the
//! framing is lost (a line too long, a data block too large): reply and
//! close. After a refused storage line no data block is skipped, as in
//! memcached: the next line is read as a command.
//!
//! What memcached 1.6.18 was seen to do with each case, and the outcome
//! here (tests `memcached_verdicts` replays the table):
//!
//! | request | memcached | here |
//! | --- | --- | --- |
//! | `get k\n`, `version\n` (bare LF) | served | Complete |
//! | `get a\rb\r\n` | END (key `a\rb`) | Complete, key `a\rb` |
//! | `get a\0b\r\n` | key `a` only | Complete, key `a` |
//! | `get\r\n`, `gets\r\n`, `gat\r\n`, `incr k\r\n`, `touch k\r\n`, `set k 0 0\r\n` | ERROR | Refused(MissingArgument) |
//! | `set k 0 0 1 x y`, `incr k 1 noreply x`, `touch k 1 2 3`, `delete k 0 noreply x`, `flush_all 0 noreply x` | ERROR | Refused(ExtraToken) |
//! | `get <251 bytes>`, `set <251 bytes> 0 0 1` | CLIENT_ERROR bad command line format | Refused(KeyTooLong) |
//! | `delete k 0`, `delete k 0 noreply`, `delete k noreply` | DELETED / NOT_FOUND | Complete |
//! | `delete k 1`, `delete k x`, `delete k noreply 0` | CLIENT_ERROR bad command line format.  Usage: ... | Refused(BadDelete) |
//! | `gat 0 k`, `gats 0 k j`, `gat 0` | END | Complete (Gat/Gats) |
//! | `gat x k` | CLIENT_ERROR invalid exptime argument | Refused(BadExptime) |
//! | `set k 0 -1 1`, `set k 0 2147483648 1`, `set k 0 -2147483649 1` | STORED | Complete |
//! | `set k 4294967296 0 1`, `set k +1 0 1`, `set k 0 0 01`, `set k 0 0 +1`, `set k 0 0 -0` | STORED | Complete |
//! | `set k 0 0 1 bogus` | STORED (6th token ignored) | Complete |
//! | `set k x 0 1`, `set k 0 x 1`, `set k -1 0 1`, `set k 0 0 -1`, `set k 0 0 1x`, `set k 0 0 2147483646` | CLIENT_ERROR bad command line format, then the data read as a command | Refused(BadNumber) |
//! | `cas k 0 0 1 x`, `cas k 0 0 1 -1` | CLIENT_ERROR bad command line format | Refused(BadNumber) |
//! | `cas k 0 0 1 +1` | EXISTS | Complete |
//! | `incr k -1`, `incr k x`, `incr k 18446744073709551616` | CLIENT_ERROR invalid numeric delta argument | Refused(BadDelta) |
//! | `incr k +1`, `incr k 1 2` | served | Complete |
//! | `touch k -1`, `touch k +1`, `touch k 1 2` | served | Complete |
//! | `touch k x` | CLIENT_ERROR invalid exptime argument | Refused(BadExptime) |
//! | `set k 0 0 1\r\nxyz` | CLIENT_ERROR bad data chunk | Refused(BadDataChunk) |
//! | any CLIENT_ERROR above with a final `noreply` | silent | Refused, noreply set |
//! | `version x`, `quit x` | served | Complete |
//! | `stats`, `stats items`, `stats foo` | served / ERROR | Complete (Stats) |
//! | `flush_all`, `flush_all 0`, `flush_all -1`, `flush_all noreply`, `flush_all 10 noreply`, `flush_all 0 x` | OK / silent | Complete (FlushAll) |
//! | `flush_all x` | CLIENT_ERROR invalid exptime argument | Refused(BadExptime) |
//! | `verbosity 1`, `verbosity 1 noreply`, `verbosity 1 x`, `verbosity 99999999999` | OK / silent | Complete (Verbosity) |
//! | `verbosity x`, `verbosity -1` | CLIENT_ERROR bad command line format | Refused(BadNumber) |
//! | `verbosity`, `verbosity 1 2 3` | ERROR | Refused(MissingArgument / ExtraToken) |
//! | `GET k`, `foo`, `get\ta`, `\r\n`, `  \r\n`, `mn` | ERROR, MN | Refused(UnknownCommand) |
//! | 2048 bytes without LF (not get/gets) | connection closed | Error(LineTooLong) |
//! | 0x80 as the connection's first byte | binary protocol | Error(UnknownCommand) |

/// Longest key memcached accepts.
pub const MAX_KEY: usize = 250;
/// Longest command line (leading spaces and line end included) of every
/// command but get/gets; memcached itself gives up on such lines after
/// 2048 bytes.
pub const MAX_LINE: u64 = 2048;
/// Longest get/gets line: memcached (and 0.5.0) take multi-get lines of
/// any length, so only the limit on a whole request applies (a 1 GiB line
/// holds some 4 million keys; the split works through them in turns).
pub const MAX_GET_LINE: u64 = 1024 * 1024 * 1024;
/// Largest data block (memcached's `-I` maximum item size is 1 GiB).
pub const MAX_DATA: u64 = 1024 * 1024 * 1024;
/// Key vectors larger than this are released after a request.
const KEEP_KEYS: usize = 1024;
/// Longest command word ("flush_all").
const WORD_MAX: usize = 9;
const NOREPLY: &[u8] = b"noreply";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McCmd {
    Get,
    Gets,
    /// `gat <exptime> <key>*`: get and touch.
    Gat,
    Gats,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
    Incr,
    Decr,
    Touch,
    Delete,
    Version,
    Quit,
    /// `stats [args]`: [`McReqParser::args`] holds the arguments.
    Stats,
    /// `flush_all [delay] [noreply]`: [`McReqParser::delay`].
    FlushAll,
    /// `verbosity <level> [noreply]`.
    Verbosity,
}

impl McCmd {
    fn lookup(word: &[u8]) -> Option<McCmd> {
        Some(match word {
            b"get" => McCmd::Get,
            b"gets" => McCmd::Gets,
            b"gat" => McCmd::Gat,
            b"gats" => McCmd::Gats,
            b"set" => McCmd::Set,
            b"add" => McCmd::Add,
            b"replace" => McCmd::Replace,
            b"append" => McCmd::Append,
            b"prepend" => McCmd::Prepend,
            b"cas" => McCmd::Cas,
            b"incr" => McCmd::Incr,
            b"decr" => McCmd::Decr,
            b"touch" => McCmd::Touch,
            b"delete" => McCmd::Delete,
            b"version" => McCmd::Version,
            b"quit" => McCmd::Quit,
            b"stats" => McCmd::Stats,
            b"flush_all" => McCmd::FlushAll,
            b"verbosity" => McCmd::Verbosity,
            _ => return None,
        })
    }

    /// The command word as sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            McCmd::Get => "get",
            McCmd::Gets => "gets",
            McCmd::Gat => "gat",
            McCmd::Gats => "gats",
            McCmd::Set => "set",
            McCmd::Add => "add",
            McCmd::Replace => "replace",
            McCmd::Append => "append",
            McCmd::Prepend => "prepend",
            McCmd::Cas => "cas",
            McCmd::Incr => "incr",
            McCmd::Decr => "decr",
            McCmd::Touch => "touch",
            McCmd::Delete => "delete",
            McCmd::Version => "version",
            McCmd::Quit => "quit",
            McCmd::Stats => "stats",
            McCmd::FlushAll => "flush_all",
            McCmd::Verbosity => "verbosity",
        }
    }

    /// Commands followed by a data block.
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            McCmd::Set | McCmd::Add | McCmd::Replace | McCmd::Append | McCmd::Prepend | McCmd::Cas
        )
    }

    /// get / gets / gat / gats: any number of keys, answered by VALUE
    /// blocks and END.
    pub fn is_retrieval(self) -> bool {
        matches!(self, McCmd::Get | McCmd::Gets | McCmd::Gat | McCmd::Gats)
    }

    /// Tokens before the first key (gat's exptime).
    fn keys_from(self) -> usize {
        match self {
            McCmd::Gat | McCmd::Gats => 2,
            _ => 1,
        }
    }

    /// Commands that take no key.
    fn keyless(self) -> bool {
        matches!(
            self,
            McCmd::Version | McCmd::Quit | McCmd::Stats | McCmd::FlushAll | McCmd::Verbosity
        )
    }
}

/// One key: its bytes are `start .. start + len` in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McKey {
    pub start: u64,
    pub len: u32,
}

impl McKey {
    pub fn end(&self) -> u64 {
        self.start + u64::from(self.len)
    }

    /// The stream range of the key's bytes.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.end())
    }
}

/// Why a request is refused. See the module doc for which are
/// [`Progress::Refused`] (the stream goes on) and which [`Progress::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McReqError {
    /// Not a command the proxy knows (upper case, the binary protocol, an
    /// empty line, meta commands, ...).
    UnknownCommand,
    /// Fewer tokens than the command needs (`get` without a key too).
    MissingArgument,
    /// More tokens than memcached allows for the command.
    ExtraToken,
    /// A storage command's flags, exptime, length or cas unique, or the
    /// verbosity level, is not a number memcached reads.
    BadNumber,
    /// A key longer than [`MAX_KEY`].
    KeyTooLong,
    /// `delete <key>` followed by something other than `0` / `noreply`.
    BadDelete,
    /// The incr/decr delta is not an unsigned number.
    BadDelta,
    /// A touch/gat exptime or a flush_all delay is not a number.
    BadExptime,
    /// The data block is not followed by `\r\n`.
    BadDataChunk,
    /// No line end within [`MAX_LINE`] (or [`MAX_GET_LINE`]) bytes.
    LineTooLong,
    /// A data block longer than [`MAX_DATA`].
    TooLarge,
}

impl McReqError {
    /// The line memcached answers with.
    pub fn reply(&self) -> &'static [u8] {
        match self {
            McReqError::UnknownCommand | McReqError::MissingArgument | McReqError::ExtraToken => {
                b"ERROR\r\n"
            }
            McReqError::BadDataChunk => b"CLIENT_ERROR bad data chunk\r\n",
            McReqError::BadDelete => {
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
            }
            McReqError::BadDelta => b"CLIENT_ERROR invalid numeric delta argument\r\n",
            McReqError::BadExptime => b"CLIENT_ERROR invalid exptime argument\r\n",
            // memcached says `SERVER_ERROR object too large for cache` and
            // skips the block; the proxy closes instead and keeps the words
            // it has always used for this.
            McReqError::TooLarge
            | McReqError::BadNumber
            | McReqError::KeyTooLong
            | McReqError::LineTooLong => b"CLIENT_ERROR bad command line format\r\n",
        }
    }

    /// A short description for the log.
    pub fn reason(&self) -> &'static str {
        match self {
            McReqError::UnknownCommand => "unknown command",
            McReqError::MissingArgument => "missing argument",
            McReqError::ExtraToken => "unexpected token",
            McReqError::BadNumber => "bad number",
            McReqError::KeyTooLong => "key too long",
            McReqError::BadDelete => "bad delete argument",
            McReqError::BadDelta => "bad delta",
            McReqError::BadExptime => "bad exptime",
            McReqError::BadDataChunk => "data block not followed by CRLF",
            McReqError::LineTooLong => "command line too long",
            McReqError::TooLarge => "data block too large",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All given bytes consumed; the request continues in later bytes.
    Incomplete,
    /// A whole request ends at this absolute offset (exclusive).
    Complete(u64),
    /// The line (and data block, for a bad chunk) up to this offset is
    /// refused as memcached refuses it, staying in step: answer the
    /// error's reply (unless `noreply`), reset, and go on.
    Refused(u64, McReqError),
    /// The framing is lost: answer and close.
    Error(McReqError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No byte of the next request seen yet.
    Idle,
    /// Skipping leading spaces.
    Lead,
    Tok,
    /// Between tokens.
    Spaces,
    /// A CR: dropped if a LF follows, else a token byte.
    Cr,
    /// After a NUL: the rest of the line is not read.
    Ignore,
    Data,
    DataCr,
    DataLf,
}

/// A number token as `strtol`-like functions read it: an optional sign
/// then digits, nothing else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Num {
    neg: bool,
    digits: u32,
    /// Magnitude, `None` once it overflows u64.
    value: Option<u64>,
    bad: bool,
}

impl Num {
    fn push(&mut self, b: u8, first: bool) {
        if first && (b == b'+' || b == b'-') {
            self.neg = b == b'-';
            self.value = Some(0);
            return;
        }
        if !b.is_ascii_digit() {
            self.bad = true;
            return;
        }
        if self.digits == 0 && self.value.is_none() {
            self.value = Some(0);
        }
        self.digits = self.digits.saturating_add(1);
        self.value = self
            .value
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(u64::from(b - b'0')));
    }

    fn ok(&self) -> bool {
        !self.bad && self.digits > 0
    }

    /// `strtoull` refusing a minus, as memcached's `safe_strtoull`.
    fn unsigned(&self) -> Option<u64> {
        if self.ok() && !self.neg {
            self.value
        } else {
            None
        }
    }

    /// `strtol` on 64 bits.
    fn signed(&self) -> Option<i64> {
        if !self.ok() {
            return None;
        }
        let v = self.value?;
        if self.neg {
            0i64.checked_sub_unsigned(v)
        } else {
            i64::try_from(v).ok()
        }
    }
}

/// One argument token (not a retrieval key) with what was read of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tok {
    at: McKey,
    num: Num,
    noreply: bool,
}

/// Resumable parser state for one client connection.
#[derive(Debug)]
pub struct McReqParser {
    state: State,
    /// Offset of the line's first byte (leading spaces included).
    line_begin: u64,
    line_limit: u64,
    /// [`MAX_GET_LINE`]; smaller in tests, which build such lines.
    get_line_limit: u64,
    word: [u8; WORD_MAX],
    word_len: usize,
    /// The command word is known (or unknown: `None`).
    word_done: bool,
    cmd_found: Option<McCmd>,
    /// Tokens finished so far, the command word included.
    ntok: usize,
    tok_start: u64,
    tok_len: u64,
    tok_num: Num,
    /// The token so far matches a prefix of `noreply`.
    tok_nr: bool,
    /// The CR in `Cr` came inside a token.
    cr_in_tok: bool,
    toks: Vec<Tok>,
    long_key: bool,
    /// Data bytes still to skip.
    remaining: u64,
    bad_chunk: bool,
    pub cmd: McCmd,
    /// Offset of the command word (after any leading spaces).
    pub start: u64,
    pub keys: Vec<McKey>,
    pub noreply: bool,
    /// Offset just past the command line's LF.
    pub line_end: u64,
    /// Storage commands: length of the data block at `line_end`.
    pub data_len: u32,
    /// `flush_all`: the delay given (`None`: none).
    pub delay: Option<i64>,
}

impl Default for McReqParser {
    fn default() -> Self {
        McReqParser {
            state: State::Idle,
            line_begin: 0,
            line_limit: MAX_LINE,
            get_line_limit: MAX_GET_LINE,
            word: [0; WORD_MAX],
            word_len: 0,
            word_done: false,
            cmd_found: None,
            ntok: 0,
            tok_start: 0,
            tok_len: 0,
            tok_num: Num::default(),
            tok_nr: true,
            cr_in_tok: false,
            toks: Vec::new(),
            long_key: false,
            remaining: 0,
            bad_chunk: false,
            cmd: McCmd::Get,
            start: 0,
            keys: Vec::new(),
            noreply: false,
            line_end: 0,
            data_len: 0,
            delay: None,
        }
    }
}

impl McReqParser {
    pub fn new() -> McReqParser {
        McReqParser::default()
    }

    /// Forgets the finished request. The key vector keeps a modest
    /// capacity; one grown by a huge multi-get is released.
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.keys.clear();
        if self.keys.capacity() > KEEP_KEYS {
            self.keys.shrink_to(KEEP_KEYS);
        }
        self.toks.clear();
    }

    /// True when no byte of a next request has been seen.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// The completed request is followed by a data block.
    pub fn is_storage(&self) -> bool {
        self.cmd.is_storage()
    }

    /// The request being parsed is a get or gets, whose keys are split
    /// per server: known once its command word is read.
    pub fn is_multi_get(&self) -> bool {
        self.word_done && matches!(self.cmd_found, Some(McCmd::Get | McCmd::Gets))
    }

    /// Where the arguments after the command word lie (keys of a
    /// retrieval excepted): `stats` arguments, for instance.
    pub fn args(&self) -> impl Iterator<Item = McKey> + '_ {
        self.toks.iter().map(|t| t.at)
    }

    /// Feeds `data`, which starts at absolute stream offset `base`. Returns
    /// how many bytes were consumed: on `Complete` or `Refused` the rest
    /// belongs to the next request and must be fed again after
    /// [`reset`](Self::reset).
    pub fn feed(&mut self, data: &[u8], base: u64) -> (usize, Progress) {
        let mut i = 0;
        while i < data.len() {
            let Some(&c) = data.get(i) else {
                break;
            };
            let pos = base + i as u64;
            // Bytes from here on that may still belong to the command line.
            let room = self
                .line_limit
                .saturating_sub(pos.saturating_sub(self.line_begin));
            if room == 0 && self.in_line() {
                return (i, Progress::Error(McReqError::LineTooLong));
            }
            let room = usize::try_from(room).unwrap_or(usize::MAX);
            let rest = data.get(i..).unwrap_or_default();
            let win = rest.get(..rest.len().min(room)).unwrap_or_default();
            match self.state {
                State::Idle => {
                    // memcached takes a connection opening with 0x80 for
                    // the binary protocol, which has no line to recover.
                    if pos == 0 && c == 0x80 {
                        return (i, Progress::Error(McReqError::UnknownCommand));
                    }
                    self.begin(pos);
                    continue;
                }
                State::Lead | State::Spaces => match c {
                    b' ' => {
                        i += win.iter().position(|&b| b != b' ').unwrap_or(win.len());
                        continue;
                    }
                    b'\n' => {
                        if let Some(r) = self.line_done(i, pos) {
                            return r;
                        }
                    }
                    b'\r' => {
                        if self.state == State::Lead {
                            self.start = pos;
                        }
                        self.cr_in_tok = false;
                        self.state = State::Cr;
                    }
                    0 => self.state = State::Ignore,
                    _ => {
                        if self.state == State::Lead {
                            self.start = pos;
                        }
                        self.begin_token(pos);
                        continue;
                    }
                },
                State::Tok => {
                    let n = win
                        .iter()
                        .position(|&b| matches!(b, b' ' | b'\r' | b'\n' | 0))
                        .unwrap_or(win.len());
                    self.token_bytes(win.get(..n).unwrap_or_default());
                    i += n;
                    match win.get(n) {
                        Some(b' ') => {
                            self.end_token();
                            self.state = State::Spaces;
                        }
                        Some(0) => {
                            self.end_token();
                            self.state = State::Ignore;
                        }
                        Some(b'\r') => {
                            self.cr_in_tok = true;
                            self.state = State::Cr;
                        }
                        Some(_) => {
                            self.end_token();
                            if let Some(r) = self.line_done(i, base + i as u64) {
                                return r;
                            }
                        }
                        None => continue,
                    }
                }
                State::Cr => {
                    if c == b'\n' {
                        if self.cr_in_tok {
                            self.end_token();
                        }
                        if let Some(r) = self.line_done(i, pos) {
                            return r;
                        }
                        i += 1;
                        continue;
                    }
                    // The CR was a token byte after all.
                    if !self.cr_in_tok {
                        self.begin_token(pos - 1);
                    }
                    self.token_bytes(b"\r");
                    self.state = State::Tok;
                    continue;
                }
                State::Ignore => {
                    match win.iter().position(|&b| b == b'\n') {
                        Some(n) => {
                            if let Some(r) = self.line_done(i + n, pos + n as u64) {
                                return r;
                            }
                            i += n + 1;
                        }
                        None => i += win.len(),
                    }
                    continue;
                }
                State::Data => {
                    let n = ((data.len() - i) as u64).min(self.remaining) as usize;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    i += n;
                    continue;
                }
                State::DataCr => {
                    self.bad_chunk = c != b'\r';
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    self.state = State::Idle;
                    if self.bad_chunk || c != b'\n' {
                        return (i + 1, Progress::Refused(pos + 1, McReqError::BadDataChunk));
                    }
                    return (i + 1, Progress::Complete(pos + 1));
                }
            }
            i += 1;
        }
        (i, Progress::Incomplete)
    }

    /// States where the bytes belong to the command line.
    fn in_line(&self) -> bool {
        !matches!(
            self.state,
            State::Idle | State::Data | State::DataCr | State::DataLf
        )
    }

    fn begin(&mut self, pos: u64) {
        self.line_begin = pos;
        self.line_limit = MAX_LINE;
        self.start = pos;
        self.word_len = 0;
        self.word_done = false;
        self.cmd_found = None;
        self.ntok = 0;
        self.keys.clear();
        self.toks.clear();
        self.long_key = false;
        self.noreply = false;
        self.line_end = 0;
        self.data_len = 0;
        self.delay = None;
        self.state = State::Lead;
    }

    fn begin_token(&mut self, pos: u64) {
        self.tok_start = pos;
        self.tok_len = 0;
        self.tok_num = Num::default();
        self.tok_nr = true;
        self.state = State::Tok;
    }

    /// Is the current token a retrieval key (whose bytes are not read)?
    fn in_key(&self) -> bool {
        self.word_done
            && self
                .cmd_found
                .is_some_and(|c| c.is_retrieval() && self.ntok >= c.keys_from())
    }

    fn token_bytes(&mut self, bytes: &[u8]) {
        if !self.word_done {
            for &b in bytes {
                if let Some(slot) = self.word.get_mut(self.word_len) {
                    *slot = b;
                }
                self.word_len = self.word_len.saturating_add(1);
            }
        } else if self.cmd_found.is_some() && !self.in_key() {
            for &b in bytes {
                let at = self.tok_len as usize;
                self.tok_num.push(b, self.tok_len == 0);
                self.tok_nr = self.tok_nr && NOREPLY.get(at) == Some(&b);
                self.tok_len += 1;
            }
            return;
        }
        self.tok_len += bytes.len() as u64;
    }

    fn end_token(&mut self) {
        // Bounded by the line limit, so the cast is exact.
        let at = McKey {
            start: self.tok_start,
            len: self.tok_len as u32,
        };
        if !self.word_done {
            self.word_done = true;
            let word = self.word.get(..self.word_len).unwrap_or_default();
            self.cmd_found = if self.word_len <= WORD_MAX {
                McCmd::lookup(word)
            } else {
                None
            };
            if matches!(self.cmd_found, Some(McCmd::Get | McCmd::Gets)) {
                self.line_limit = self.get_line_limit;
            }
        } else if self.cmd_found.is_some() {
            if self.in_key() {
                self.long_key |= at.len as usize > MAX_KEY;
                self.keys.push(at);
            } else {
                self.toks.push(Tok {
                    at,
                    num: self.tok_num,
                    noreply: self.tok_nr && at.len as usize == NOREPLY.len(),
                });
            }
        }
        self.ntok += 1;
    }

    /// The LF of the command line is at `pos` (`i` in the piece). `None`:
    /// a data block follows, parsing goes on after the LF.
    fn line_done(&mut self, i: usize, pos: u64) -> Option<(usize, Progress)> {
        self.line_end = pos + 1;
        self.state = State::Idle;
        match self.check_line() {
            Err(McReqError::TooLarge) => Some((i, Progress::Error(McReqError::TooLarge))),
            Err(e) => Some((i + 1, Progress::Refused(pos + 1, e))),
            Ok(()) if self.cmd.is_storage() => {
                self.remaining = u64::from(self.data_len);
                self.state = if self.remaining == 0 {
                    State::DataCr
                } else {
                    State::Data
                };
                None
            }
            Ok(()) => Some((i + 1, Progress::Complete(pos + 1))),
        }
    }

    /// The token counts and values memcached requires of the command.
    fn check_line(&mut self) -> Result<(), McReqError> {
        use McReqError::*;
        let cmd = self.cmd_found.ok_or(UnknownCommand)?;
        self.cmd = cmd;
        if cmd.is_retrieval() {
            if cmd == McCmd::Gat || cmd == McCmd::Gats {
                let t = self.toks.first().ok_or(MissingArgument)?;
                t.num.signed().ok_or(BadExptime)?;
            } else if self.keys.is_empty() {
                return Err(MissingArgument);
            }
            return if self.long_key {
                Err(KeyTooLong)
            } else {
                Ok(())
            };
        }
        let n = self.toks.len();
        let last_noreply = self.toks.last().is_some_and(|t| t.noreply);
        // (fewest, most) tokens after the word, as memcached dispatches.
        let (min, max) = match cmd {
            McCmd::Set | McCmd::Add | McCmd::Replace | McCmd::Append | McCmd::Prepend => (4, 5),
            McCmd::Cas => (5, 6),
            McCmd::Incr | McCmd::Decr | McCmd::Touch => (2, 3),
            McCmd::Delete => (1, 3),
            McCmd::FlushAll => (0, 2),
            McCmd::Verbosity => (1, 2),
            _ => (0, usize::MAX),
        };
        if n < min {
            return Err(MissingArgument);
        }
        if n > max {
            return Err(ExtraToken);
        }
        if matches!(cmd, McCmd::Version | McCmd::Quit | McCmd::Stats) {
            return Ok(());
        }
        // From here memcached honours a final `noreply`, errors included.
        self.noreply = last_noreply;
        if !cmd.keyless() {
            let key = self.toks.first().map(|t| t.at).ok_or(MissingArgument)?;
            self.keys.push(key);
            if key.len as usize > MAX_KEY {
                return Err(KeyTooLong);
            }
        }
        let num = |i: usize| self.toks.get(i).map(|t| t.num).unwrap_or_default();
        match cmd {
            McCmd::Set
            | McCmd::Add
            | McCmd::Replace
            | McCmd::Append
            | McCmd::Prepend
            | McCmd::Cas => {
                num(1).unsigned().ok_or(BadNumber)?;
                num(2).signed().ok_or(BadNumber)?;
                let len = num(3).signed().ok_or(BadNumber)?;
                if cmd == McCmd::Cas {
                    num(4).unsigned().ok_or(BadNumber)?;
                }
                // memcached adds 2 (the CRLF) to an int.
                if !(0..=i64::from(i32::MAX) - 2).contains(&len) {
                    return Err(BadNumber);
                }
                if len as u64 > MAX_DATA {
                    // Not refused in step: memcached would swallow it,
                    // the proxy will not hold it.
                    return Err(TooLarge);
                }
                self.data_len = len as u32;
            }
            McCmd::Incr | McCmd::Decr => {
                num(1).unsigned().ok_or(BadDelta)?;
            }
            McCmd::Touch => {
                num(1).signed().ok_or(BadExptime)?;
            }
            McCmd::Delete => {
                let zero = |i: usize| {
                    self.toks.get(i).is_some_and(|t| {
                        t.at.len == 1 && t.num.value == Some(0) && t.num.ok() && !t.num.neg
                    })
                };
                let ok = match n {
                    1 => true,
                    2 => zero(1) || last_noreply,
                    _ => zero(1) && last_noreply,
                };
                if !ok {
                    return Err(BadDelete);
                }
            }
            McCmd::Verbosity => {
                num(0).unsigned().ok_or(BadNumber)?;
            }
            McCmd::FlushAll => {
                let delay = self.toks.first().filter(|t| !(t.noreply && n == 1));
                if let Some(t) = delay {
                    self.delay = Some(t.num.signed().ok_or(BadExptime)?);
                }
            }
            _ => {}
        }
        Ok(())
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

    /// What a completed request looks like, with keys and data as bytes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Req {
        cmd: McCmd,
        start: u64,
        keys: Vec<McKey>,
        key_bytes: Vec<Vec<u8>>,
        args: Vec<Vec<u8>>,
        noreply: bool,
        line_end: u64,
        data: Option<Vec<u8>>,
        delay: Option<i64>,
        end: u64,
    }

    /// One outcome: a request, or a line refused in step.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Out {
        Req(Req),
        Refused(u64, McReqError, bool),
    }

    /// How the input ended after the last outcome.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Tail {
        Idle,
        Partial,
        Error(McReqError),
    }

    /// Feeds `input` in pieces ending at each of `cuts` (then at the end).
    /// The get/gets line limit in these tests (the real one is too large
    /// to build lines of).
    const TEST_GET_LINE: u64 = 1024 * 1024;

    fn parse_cuts(input: &[u8], cuts: &[usize]) -> (Vec<Out>, Tail) {
        let mut p = McReqParser {
            get_line_limit: TEST_GET_LINE,
            ..McReqParser::new()
        };
        let mut out = Vec::new();
        let mut from = 0usize;
        for &to in cuts.iter().chain(std::iter::once(&input.len())) {
            let mut pos = from;
            while pos < to {
                let (n, prog) = p.feed(&input[pos..to], pos as u64);
                pos += n;
                match prog {
                    Progress::Incomplete => assert_eq!(pos, to, "incomplete must consume all"),
                    Progress::Complete(end) => {
                        assert_eq!(end, pos as u64);
                        let slice = |s: u64, l: u64| input[s as usize..(s + l) as usize].to_vec();
                        out.push(Out::Req(Req {
                            cmd: p.cmd,
                            start: p.start,
                            keys: p.keys.clone(),
                            key_bytes: p
                                .keys
                                .iter()
                                .map(|k| slice(k.start, u64::from(k.len)))
                                .collect(),
                            args: p.args().map(|k| slice(k.start, u64::from(k.len))).collect(),
                            noreply: p.noreply,
                            line_end: p.line_end,
                            data: p
                                .is_storage()
                                .then(|| slice(p.line_end, u64::from(p.data_len))),
                            delay: p.delay,
                            end,
                        }));
                        p.reset();
                    }
                    Progress::Refused(end, e) => {
                        assert_eq!(end, pos as u64);
                        out.push(Out::Refused(end, e, p.noreply));
                        p.reset();
                    }
                    Progress::Error(e) => return (out, Tail::Error(e)),
                }
            }
            from = to;
        }
        let tail = if p.is_idle() {
            Tail::Idle
        } else {
            Tail::Partial
        };
        (out, tail)
    }

    /// Parses `input` whole, split in two at every offset and in 1-byte
    /// pieces; all must agree. Returns the whole parse.
    fn parse(input: &[u8]) -> (Vec<Out>, Tail) {
        let whole = parse_cuts(input, &[]);
        for k in 1..input.len() {
            assert_eq!(parse_cuts(input, &[k]), whole, "split at {k}");
        }
        let ones: Vec<usize> = (1..input.len()).collect();
        assert_eq!(parse_cuts(input, &ones), whole, "1-byte pieces");
        whole
    }

    fn reqs(input: &[u8]) -> Vec<Req> {
        let (outs, tail) = parse(input);
        assert_eq!(tail, Tail::Idle, "{:?}", String::from_utf8_lossy(input));
        outs.into_iter()
            .map(|o| match o {
                Out::Req(r) => r,
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
            })
            .collect()
    }

    fn one(input: &[u8]) -> Req {
        let mut r = reqs(input);
        assert_eq!(r.len(), 1);
        r.remove(0)
    }

    /// The single line refused, and its noreply flag.
    fn refused(input: &[u8]) -> (McReqError, bool) {
        match parse(input) {
            (outs, Tail::Idle) if outs.len() == 1 => match outs[0] {
                Out::Refused(end, e, nr) => {
                    assert_eq!(end as usize, input.len());
                    (e, nr)
                }
                ref other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
            },
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn keys(r: &Req) -> Vec<&[u8]> {
        r.key_bytes.iter().map(|k| k.as_slice()).collect()
    }

    #[test]
    fn retrieval() {
        let r = one(b"get foo\r\n");
        assert_eq!(r.cmd, McCmd::Get);
        assert_eq!(r.keys, vec![McKey { start: 4, len: 3 }]);
        assert_eq!(
            (r.start, r.line_end, r.end, r.noreply, r.data),
            (0, 9, 9, false, None)
        );
        let r = one(b"gets a bb  ccc \r\n");
        assert_eq!(r.cmd, McCmd::Gets);
        assert_eq!(keys(&r), [&b"a"[..], b"bb", b"ccc"]);
        assert_eq!(r.keys[2], McKey { start: 11, len: 3 });
        // `noreply` is just a key for get.
        let r = one(b"get a noreply\r\n");
        assert_eq!(keys(&r), [&b"a"[..], b"noreply"]);
        assert!(!r.noreply);
        // Leading spaces are skipped; start is the command word.
        let r = one(b"   get k\r\n");
        assert_eq!(r.start, 3);
        // Keys are any bytes but space and NUL; a CR only ends the line
        // right before the LF.
        let r = one(b"get a\tb \x01\xff a\rb\r\n");
        assert_eq!(keys(&r), [&b"a\tb"[..], b"\x01\xff", b"a\rb"]);
        let r = one(b"get a\r\r\n");
        assert_eq!(keys(&r), [&b"a\r"[..]]);
        // Bare LF ends a line, as memcached reads it.
        let got = reqs(b"get a\nversion\n");
        assert_eq!((got[0].cmd, got[0].end), (McCmd::Get, 6));
        assert_eq!(keys(&got[0]), [b"a"]);
        assert_eq!(got[1].cmd, McCmd::Version);
        // NUL ends the tokens, not the line.
        let r = one(b"get a\0b c\r\n");
        assert_eq!(keys(&r), [b"a"]);
        // gat / gats: exptime, then keys (none is fine for memcached).
        let r = one(b"gat 10 a b\r\n");
        assert_eq!((r.cmd, keys(&r)), (McCmd::Gat, vec![&b"a"[..], b"b"]));
        assert_eq!(r.args, [b"10"]);
        let r = one(b"gats -1 a\r\n");
        assert_eq!(r.cmd, McCmd::Gats);
        assert!(one(b"gat 0\r\n").keys.is_empty());
    }

    #[test]
    fn storage() {
        for (word, cmd) in [
            ("set", McCmd::Set),
            ("add", McCmd::Add),
            ("replace", McCmd::Replace),
            ("append", McCmd::Append),
            ("prepend", McCmd::Prepend),
        ] {
            let input = format!("{word} key 5 100 7\r\nab\r\ncde\r\n");
            let r = one(input.as_bytes());
            assert_eq!(r.cmd, cmd);
            assert!(cmd.is_storage() && !cmd.is_retrieval());
            assert_eq!(cmd.name(), word);
            assert_eq!(keys(&r), [b"key"]);
            assert_eq!(r.line_end as usize, word.len() + 14);
            assert_eq!(r.data.as_deref(), Some(&b"ab\r\ncde"[..]));
            assert_eq!(r.end as usize, input.len());
        }
        let r = one(b"set k 0 0 0 noreply\r\n\r\n");
        assert!(r.noreply);
        assert_eq!((r.line_end, r.end), (21, 23));
        let r = one(b"set k 0 0 1\nx\r\n");
        assert_eq!((r.line_end, r.data.as_deref()), (12, Some(&b"x"[..])));
        let r = one(b"cas k 4294967295 2147483647 3 18446744073709551615\r\nxyz\r\n");
        assert_eq!(r.cmd, McCmd::Cas);
        let r = one(b"cas  k  1  2  1  99   noreply  \r\nx\r\n");
        assert!(r.noreply);
        // The 6th token is ignored unless it is noreply.
        let r = one(b"set k 0 0 1 bogus\r\nx\r\n");
        assert!(!r.noreply);
    }

    #[test]
    fn other_commands() {
        for (input, cmd, noreply) in [
            (&b"incr k 1\r\n"[..], McCmd::Incr, false),
            (
                b"decr k 18446744073709551615 noreply\r\n",
                McCmd::Decr,
                true,
            ),
            (b"incr k +5 7\r\n", McCmd::Incr, false),
            (b"touch k 10\r\n", McCmd::Touch, false),
            (b"touch k -1 noreply\r\n", McCmd::Touch, true),
            (b"delete k\r\n", McCmd::Delete, false),
            (b"delete k noreply\r\n", McCmd::Delete, true),
            (b"delete k 0\r\n", McCmd::Delete, false),
            (b"delete k 0 noreply\r\n", McCmd::Delete, true),
            (b"delete k   \r\n", McCmd::Delete, false),
        ] {
            let r = one(input);
            assert_eq!(
                (r.cmd, r.noreply),
                (cmd, noreply),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(keys(&r), [b"k"]);
            assert_eq!(r.end as usize, input.len());
            assert_eq!(r.data, None);
        }
        for (input, cmd, args) in [
            (&b"version\r\n"[..], McCmd::Version, vec![]),
            (b"quit\r\n", McCmd::Quit, vec![]),
            (b" version  x\r\n", McCmd::Version, vec![&b"x"[..]]),
            (b"stats\r\n", McCmd::Stats, vec![]),
            (
                b"stats slabs  items\r\n",
                McCmd::Stats,
                vec![&b"slabs"[..], b"items"],
            ),
        ] {
            let r = one(input);
            assert_eq!(r.cmd, cmd);
            assert!(r.keys.is_empty());
            assert_eq!(r.args, args);
            assert_eq!(r.end as usize, input.len());
        }
        for (input, delay, noreply) in [
            (&b"flush_all\r\n"[..], None, false),
            (b"flush_all 0\r\n", Some(0), false),
            (b"flush_all -1\r\n", Some(-1), false),
            (b"flush_all noreply\r\n", None, true),
            (b"flush_all 10 noreply\r\n", Some(10), true),
            (b"flush_all 0 x\r\n", Some(0), false),
        ] {
            let r = one(input);
            assert_eq!(
                (r.cmd, r.delay, r.noreply),
                (McCmd::FlushAll, delay, noreply)
            );
        }
        for (input, noreply) in [
            (&b"verbosity 1\r\n"[..], false),
            (b"verbosity 1 noreply\r\n", true),
            (b"verbosity 1 x\r\n", false),
            (b"verbosity 99999999999\r\n", false),
        ] {
            let r = one(input);
            assert_eq!((r.cmd, r.noreply), (McCmd::Verbosity, noreply));
            assert!(r.keys.is_empty());
            assert_eq!(r.end as usize, input.len());
        }
    }

    /// The module doc's table, case by case.
    #[test]
    fn memcached_verdicts() {
        use McReqError::*;
        let k251 = "k".repeat(251);
        let long_get = format!("get {k251}\r\n");
        let long_set = format!("set {k251} 0 0 1\r\n");
        let long_set_nr = format!("set {k251} 0 0 1 noreply\r\n");
        for (input, want, noreply) in [
            (&b"get\r\n"[..], MissingArgument, false),
            (b"gets\r\n", MissingArgument, false),
            (b"gat\r\n", MissingArgument, false),
            (b"incr k\r\n", MissingArgument, false),
            (b"touch k\r\n", MissingArgument, false),
            (b"set k 0 0\r\n", MissingArgument, false),
            (b"cas k 0 0 1\r\n", MissingArgument, false),
            (b"delete\r\n", MissingArgument, false),
            (b"set k 0 0 1 x y\r\n", ExtraToken, false),
            (b"set k 0 0 1 noreply x\r\n", ExtraToken, false),
            (b"incr k 1 noreply x\r\n", ExtraToken, false),
            (b"touch k 1 2 3\r\n", ExtraToken, false),
            (b"delete k 0 noreply x\r\n", ExtraToken, false),
            (b"flush_all 0 noreply x\r\n", ExtraToken, false),
            (long_get.as_bytes(), KeyTooLong, false),
            (long_set.as_bytes(), KeyTooLong, false),
            (long_set_nr.as_bytes(), KeyTooLong, true),
            (b"delete k 1\r\n", BadDelete, false),
            (b"delete k x\r\n", BadDelete, false),
            (b"delete k noreply 0\r\n", BadDelete, false),
            (b"delete k 1 noreply\r\n", BadDelete, true),
            (b"gat x k\r\n", BadExptime, false),
            (b"set k x 0 1\r\n", BadNumber, false),
            (b"set k 0 x 1\r\n", BadNumber, false),
            (b"set k -1 0 1\r\n", BadNumber, false),
            (b"set k 0 0 -1\r\n", BadNumber, false),
            (b"set k 0 0 1x\r\n", BadNumber, false),
            (b"set k 0 0 2147483646\r\n", BadNumber, false),
            (b"set k 0 0 x noreply\r\n", BadNumber, true),
            (b"cas k 0 0 1 x\r\n", BadNumber, false),
            (b"cas k 0 0 1 -1\r\n", BadNumber, false),
            (b"incr k -1\r\n", BadDelta, false),
            (b"incr k x\r\n", BadDelta, false),
            (b"incr k 18446744073709551616\r\n", BadDelta, false),
            (b"incr k x noreply\r\n", BadDelta, true),
            (b"touch k x\r\n", BadExptime, false),
            (b"touch k x noreply\r\n", BadExptime, true),
            (b"flush_all x\r\n", BadExptime, false),
            (b"flush_all x noreply\r\n", BadExptime, true),
            (b"GET k\r\n", UnknownCommand, false),
            (b"foo\r\n", UnknownCommand, false),
            (b"get\ta\r\n", UnknownCommand, false),
            (b"\r\n", UnknownCommand, false),
            (b"\n", UnknownCommand, false),
            (b"  \r\n", UnknownCommand, false),
            (b"verbosity\r\n", MissingArgument, false),
            (b"verbosity 1 2 3\r\n", ExtraToken, false),
            (b"verbosity x\r\n", BadNumber, false),
            (b"verbosity -1\r\n", BadNumber, false),
            (b"verbosity noreply\r\n", BadNumber, true),
            (b"verbosity x noreply\r\n", BadNumber, true),
            (b"verbositx 1\r\n", UnknownCommand, false),
            (b"mn\r\n", UnknownCommand, false),
            (b"version\r\r\n", UnknownCommand, false),
            (b"flush_allx\r\n", UnknownCommand, false),
            (b"\x81\x00\x00\x00\n", UnknownCommand, false),
        ] {
            assert_eq!(
                refused(input),
                (want, noreply),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        for input in [
            &b"set k 0 -1 1\r\nx\r\n"[..],
            b"set k 0 2147483648 1\r\nx\r\n",
            b"set k 0 -2147483649 1\r\nx\r\n",
            b"set k 4294967296 0 1\r\nx\r\n",
            b"set k +1 0 1\r\nx\r\n",
            b"set k 0 0 01\r\nx\r\n",
            b"set k 0 0 +1\r\nx\r\n",
            b"set k 0 0 -0\r\n\r\n",
            b"set k 0 0 1 bogus\r\nx\r\n",
            b"cas k 0 0 1 +1\r\nx\r\n",
            b"incr k +1\r\n",
            b"incr k 1 2\r\n",
            b"touch k +1\r\n",
            b"touch k 1 2\r\n",
            b"version x\r\n",
            b"quit x\r\n",
            b"stats foo\r\n",
        ] {
            assert_eq!(reqs(input).len(), 1, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn refused_lines_keep_the_stream_in_step() {
        // A refused storage line skips no data: the block is read as a
        // command line, as memcached reads it.
        let (outs, tail) = parse(b"set k x 0 1\r\nx\r\nget a\r\n");
        assert_eq!(tail, Tail::Idle);
        assert_eq!(outs.len(), 3);
        assert_eq!(outs[0], Out::Refused(13, McReqError::BadNumber, false));
        assert_eq!(outs[1], Out::Refused(16, McReqError::UnknownCommand, false));
        assert!(matches!(&outs[2], Out::Req(r) if r.cmd == McCmd::Get && r.start == 16));
        // A bad data chunk is refused after len + 2 bytes.
        let (outs, tail) = parse(b"set k 0 0 1\r\nxyz\r\nset j 0 0 1 noreply\r\nx\nget a\r\n");
        assert_eq!(tail, Tail::Idle);
        assert_eq!(outs[0], Out::Refused(16, McReqError::BadDataChunk, false));
        assert_eq!(outs[1], Out::Refused(18, McReqError::UnknownCommand, false));
        assert_eq!(outs[2], Out::Refused(42, McReqError::BadDataChunk, true));
        assert!(matches!(
            &outs[3],
            Out::Refused(48, McReqError::UnknownCommand, false)
        ));
        for e in [
            McReqError::UnknownCommand,
            McReqError::MissingArgument,
            McReqError::ExtraToken,
        ] {
            assert_eq!(e.reply(), b"ERROR\r\n");
        }
        assert_eq!(
            McReqError::BadDataChunk.reply(),
            b"CLIENT_ERROR bad data chunk\r\n"
        );
        assert!(McReqError::BadDelete
            .reply()
            .starts_with(b"CLIENT_ERROR bad command line format.  Usage"));
    }

    #[test]
    fn pipeline() {
        let input = b"set a 1 2 3\r\nabc\r\nget a b\r\nincr a 1 noreply\r\n delete b\r\nversion\r\nquit\r\n";
        let got = reqs(input);
        let cmds: Vec<McCmd> = got.iter().map(|r| r.cmd).collect();
        assert_eq!(
            cmds,
            [
                McCmd::Set,
                McCmd::Get,
                McCmd::Incr,
                McCmd::Delete,
                McCmd::Version,
                McCmd::Quit
            ]
        );
        assert_eq!(got[1].start, 18);
        assert!(got[2].noreply);
        assert_eq!(got[3].start, got[2].end + 1);
    }

    #[test]
    fn incomplete() {
        for input in [
            &b"get a"[..],
            b"get a\r",
            b"set k 0 0 3\r\nab",
            b"set k 0 0 3\r\nabc\r",
            b"  ",
            b"get a\0b",
        ] {
            assert_eq!(
                parse(input),
                (vec![], Tail::Partial),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn fatal_errors() {
        assert_eq!(
            parse(b"\x80\x00\x00\x01a\x00").1,
            Tail::Error(McReqError::UnknownCommand)
        );
        // Only at the start of the stream.
        let mut p = McReqParser::new();
        assert_eq!(
            p.feed(b"\x80\r\n", 5),
            (3, Progress::Refused(8, McReqError::UnknownCommand))
        );
        let max = format!("set k 0 0 {MAX_DATA}\r\n");
        assert_eq!(parse_cuts(max.as_bytes(), &[]).1, Tail::Partial);
        let big = format!("set k 0 0 {}\r\n", MAX_DATA + 1);
        assert_eq!(parse(big.as_bytes()).1, Tail::Error(McReqError::TooLarge));
        assert_eq!(
            McReqError::TooLarge.reply(),
            b"CLIENT_ERROR bad command line format\r\n"
        );
    }

    #[test]
    fn key_length() {
        let k250 = "k".repeat(250);
        let k251 = "k".repeat(251);
        for (tmpl, data) in [
            ("get {}\r\n", false),
            ("set {} 0 0 1\r\nx\r\n", true),
            ("delete {} noreply\r\n", false),
        ] {
            let ok = tmpl.replace("{}", &k250);
            let r = one(ok.as_bytes());
            assert_eq!(r.keys[0].len, 250);
            assert_eq!(r.data.is_some(), data);
        }
        let (outs, _) = parse(format!("get a {k251} b\r\n").as_bytes());
        assert_eq!(outs, [Out::Refused(261, McReqError::KeyTooLong, false)]);
    }

    #[test]
    fn line_limits() {
        // A whole line of exactly MAX_LINE bytes is accepted, one more is not.
        let pad = |n: usize| format!("delete k{}\r\n", " ".repeat(n));
        let fixed = pad(0).len();
        let ok = pad(MAX_LINE as usize - fixed);
        assert_eq!(ok.len() as u64, MAX_LINE);
        assert_eq!(parse_cuts(ok.as_bytes(), &[]).1, Tail::Idle);
        let long = pad(MAX_LINE as usize - fixed + 1);
        assert_eq!(
            parse_cuts(long.as_bytes(), &[100, 1000]).1,
            Tail::Error(McReqError::LineTooLong)
        );
        let lead = " ".repeat(MAX_LINE as usize + 1);
        assert_eq!(
            parse_cuts(lead.as_bytes(), &[7]).1,
            Tail::Error(McReqError::LineTooLong)
        );
        let nul = format!("get a\0{}", "x".repeat(TEST_GET_LINE as usize));
        assert_eq!(
            parse_cuts(nul.as_bytes(), &[16384]).1,
            Tail::Error(McReqError::LineTooLong)
        );
        // Multi-gets may be much longer than MAX_LINE, up to their limit.
        let key = "x".repeat(249);
        let mut get = b"get".to_vec();
        while get.len() < 100_000 {
            get.push(b' ');
            get.extend_from_slice(key.as_bytes());
        }
        get.extend_from_slice(b"\r\n");
        let (outs, tail) = parse_cuts(&get, &[16336, 32672, 49008]);
        assert_eq!(tail, Tail::Idle);
        let Out::Req(r) = &outs[0] else { panic!() };
        assert_eq!(r.keys.len(), 400);
        get.truncate(get.len() - 2);
        while (get.len() as u64) < TEST_GET_LINE {
            get.push(b' ');
            get.extend_from_slice(key.as_bytes());
        }
        let cuts: Vec<usize> = (1..get.len() / 16336).map(|n| n * 16336).collect();
        assert_eq!(
            parse_cuts(&get, &cuts).1,
            Tail::Error(McReqError::LineTooLong)
        );
    }

    #[test]
    fn big_value_in_mbuf_pieces() {
        let len = 1024 * 1024 + 7;
        let mut input = format!("set big 1 0 {len} noreply\r\n").into_bytes();
        let line = input.len();
        input.extend((0..len).map(|i| (i % 251) as u8));
        input.extend_from_slice(b"\r\nget big\r\n");
        let cuts: Vec<usize> = (1..=input.len() / 16384).map(|n| n * 16384).collect();
        let (outs, tail) = parse_cuts(&input, &cuts);
        assert_eq!(tail, Tail::Idle);
        assert_eq!(outs.len(), 2);
        let Out::Req(r) = &outs[0] else { panic!() };
        assert_eq!(r.line_end as usize, line);
        assert_eq!(r.data.as_ref().map(Vec::len), Some(len));
        // The data block is skipped in one step per piece.
        let mut p = McReqParser::new();
        let (n, prog) = p.feed(&input[..line + 10], 0);
        assert_eq!((n, prog), (line + 10, Progress::Incomplete));
        let (n, prog) = p.feed(&input[line + 10..line + len], (line + 10) as u64);
        assert_eq!((n, prog), (len - 10, Progress::Incomplete));
        let (n, prog) = p.feed(&input[line + len..], (line + len) as u64);
        assert_eq!((n, prog), (2, Progress::Complete((line + len + 2) as u64)));
    }

    #[test]
    fn reset_mid_stream_and_reuse() {
        let mut p = McReqParser::new();
        assert!(p.is_idle());
        let (n, prog) = p.feed(b"get a b c\r\nget d\r\n", 1000);
        assert_eq!((n, prog), (11, Progress::Complete(1011)));
        assert_eq!(p.keys.len(), 3);
        assert_eq!(p.keys[0].start, 1004);
        p.reset();
        let (n, prog) = p.feed(b"get d\r\n", 1011);
        assert_eq!((n, prog), (7, Progress::Complete(1018)));
        assert_eq!(
            p.keys,
            vec![McKey {
                start: 1015,
                len: 1
            }]
        );
        assert_eq!(p.keys[0].end(), 1016);
    }

    /// Random soups of protocol fragments: never a panic, every split
    /// parses like the whole, and the fuzz invariants hold.
    #[test]
    fn random_inputs_agree() {
        let frags: &[&[u8]] = &[
            &b"get"[..],
            b"gets",
            b"gat",
            b"set",
            b"cas",
            b"incr",
            b"touch",
            b"delete",
            b"version",
            b"quit",
            b"stats",
            b"flush_all",
            b"GET",
            b" ",
            b"  ",
            b"\r\n",
            b"\r",
            b"\n",
            b"\0",
            b"k",
            b"key",
            b"0",
            b"1",
            b"3",
            b"-",
            b"+",
            b"-1",
            b"99999999999",
            b"noreply",
            b"x",
            b"\xff",
            b"get k\r\n",
            b"set k 0 0 1\r\nx\r\n",
            b"delete k noreply\r\n",
            b"incr k 5\r\n",
            b"cas k 1 2 0 3\r\n\r\n",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut completes = 0;
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..next() % 16 {
                input.extend_from_slice(frags[(next() % frags.len() as u64) as usize]);
            }
            let (outs, _) = parse(&input);
            completes += outs.iter().filter(|o| matches!(o, Out::Req(_))).count();
        }
        assert!(completes > 300, "only {completes} complete messages");
    }
}
