//! Incremental parser of memcached ASCII requests (SPEC 7.1).
//!
//! Like the redis parser it does no I/O and copies no payload: it is fed
//! the bytes of a connection's input stream piece by piece and records
//! where the command, each key and the data block lie as absolute stream
//! offsets. Only the command word (at most 7 bytes) is copied, to look it
//! up; numbers are checked as they stream by and only the data length is
//! kept.
//!
//! Work is linear in the bytes received: runs of spaces and key bytes are
//! found with one position search per piece, the data block is skipped in
//! one step, and a request that arrives in many reads resumes where the
//! last read stopped. A command line is bounded ([`MAX_LINE`], or
//! [`MAX_GET_LINE`] for a multi-get), so a client cannot make us wait
//! forever for a `\r\n` (a bare `\n` is not a line end, as in nutcracker).

/// Longest key memcached accepts.
pub const MAX_KEY: usize = 250;
/// Longest command line (leading spaces and CRLF included) of every
/// command but get/gets; memcached itself gives up on such lines after
/// 2048 bytes.
pub const MAX_LINE: u64 = 2048;
/// Longest get/gets line: multi-gets are legitimately long, but the key
/// list must stay bounded.
pub const MAX_GET_LINE: u64 = 1024 * 1024;
/// Largest data block (memcached's `-I` maximum item size is 1 GiB).
pub const MAX_DATA: u64 = 1024 * 1024 * 1024;
/// Key vectors larger than this are released after a request.
const KEEP_KEYS: usize = 1024;
/// Longest command word ("prepend", "replace", "version").
const WORD_MAX: usize = 7;
const NOREPLY: &[u8] = b"noreply";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McCmd {
    Get,
    Gets,
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
}

/// How one numeric argument is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NumArg {
    max: u64,
    /// nutcracker lets a leading `-` through (memcached then rejects it).
    neg: bool,
    /// This argument is the data block length.
    len: bool,
}

const FLAGS: NumArg = NumArg { max: u32::MAX as u64, neg: false, len: false };
const EXPTIME: NumArg = NumArg { max: i32::MAX as u64, neg: false, len: false };
const TOUCH_EXPTIME: NumArg = NumArg { max: i32::MAX as u64, neg: true, len: false };
const BYTES: NumArg = NumArg { max: MAX_DATA, neg: false, len: true };
const CAS: NumArg = NumArg { max: u64::MAX, neg: false, len: false };
const DELTA: NumArg = NumArg { max: u64::MAX, neg: true, len: false };

impl McCmd {
    fn lookup(word: &[u8]) -> Option<McCmd> {
        Some(match word {
            b"get" => McCmd::Get,
            b"gets" => McCmd::Gets,
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
            _ => return None,
        })
    }

    /// The command word as sent on the wire.
    pub fn name(self) -> &'static str {
        match self {
            McCmd::Get => "get",
            McCmd::Gets => "gets",
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
        }
    }

    /// Commands followed by a data block.
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            McCmd::Set | McCmd::Add | McCmd::Replace | McCmd::Append | McCmd::Prepend | McCmd::Cas
        )
    }

    /// get / gets: any number of keys, answered by VALUE blocks and END.
    pub fn is_retrieval(self) -> bool {
        matches!(self, McCmd::Get | McCmd::Gets)
    }

    /// Commands that take no key.
    fn keyless(self) -> bool {
        matches!(self, McCmd::Version | McCmd::Quit)
    }

    /// The numeric arguments that follow the key.
    fn num_args(self) -> &'static [NumArg] {
        match self {
            McCmd::Set | McCmd::Add | McCmd::Replace | McCmd::Append | McCmd::Prepend => {
                &[FLAGS, EXPTIME, BYTES]
            }
            McCmd::Cas => &[FLAGS, EXPTIME, BYTES, CAS],
            McCmd::Incr | McCmd::Decr => &[DELTA],
            McCmd::Touch => &[TOUCH_EXPTIME],
            McCmd::Get | McCmd::Gets | McCmd::Delete | McCmd::Version | McCmd::Quit => &[],
        }
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
}

/// Why a request could not be parsed. The stream cannot be resynced after
/// any of these, so the proxy sends [`reply`](Self::reply) and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McReqError {
    /// Not one of the supported commands (includes upper case, the binary
    /// protocol and an empty line).
    UnknownCommand,
    /// A number with a non-digit, no digit, or out of range.
    BadNumber,
    /// A key longer than [`MAX_KEY`].
    KeyTooLong,
    /// Fewer arguments than the command needs (`get` without a key too).
    MissingArgument,
    /// A token other than `noreply` after the fixed arguments
    /// (`delete k 0` included).
    ExtraToken,
    /// No `\r\n` within [`MAX_LINE`] (or [`MAX_GET_LINE`]) bytes.
    LineTooLong,
    /// A `\r` in the command line not followed by `\n`.
    BadLineEnd,
    /// The data block is not followed by `\r\n`.
    BadDataChunk,
}

impl McReqError {
    /// The line the proxy sends before closing, as memcached would say it.
    pub fn reply(&self) -> &'static [u8] {
        match self {
            McReqError::UnknownCommand => b"ERROR\r\n",
            McReqError::BadDataChunk => b"CLIENT_ERROR bad data chunk\r\n",
            McReqError::BadNumber
            | McReqError::KeyTooLong
            | McReqError::MissingArgument
            | McReqError::ExtraToken
            | McReqError::LineTooLong
            | McReqError::BadLineEnd => b"CLIENT_ERROR bad command line format\r\n",
        }
    }

    /// A short description for the log.
    pub fn reason(&self) -> &'static str {
        match self {
            McReqError::UnknownCommand => "unknown command",
            McReqError::BadNumber => "bad number",
            McReqError::KeyTooLong => "key too long",
            McReqError::MissingArgument => "missing argument",
            McReqError::ExtraToken => "unexpected token",
            McReqError::LineTooLong => "command line too long",
            McReqError::BadLineEnd => "CR not followed by LF",
            McReqError::BadDataChunk => "data block not followed by CRLF",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All given bytes consumed; the request continues in later bytes.
    Incomplete,
    /// A whole request ends at this absolute offset (exclusive).
    Complete(u64),
    Error(McReqError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No byte of the next request seen yet.
    Idle,
    /// Skipping leading spaces.
    Lead,
    Word,
    /// Between tokens.
    Spaces,
    Key,
    Num,
    Noreply,
    LineLf,
    Data,
    DataCr,
    DataLf,
}

/// Resumable parser state for one client connection.
#[derive(Debug)]
pub struct McReqParser {
    state: State,
    /// Offset of the line's first byte (leading spaces included).
    line_begin: u64,
    line_limit: u64,
    word: [u8; WORD_MAX],
    word_len: usize,
    /// Tokens after the command word finished so far.
    ntok: usize,
    tok_start: u64,
    tok_len: usize,
    num: u64,
    digits: u32,
    neg: bool,
    /// Data bytes still to skip.
    remaining: u64,
    pub cmd: McCmd,
    /// Offset of the command word (after any leading spaces).
    pub start: u64,
    pub keys: Vec<McKey>,
    pub noreply: bool,
    /// Offset just past the command line's `\r\n`.
    pub line_end: u64,
    /// Storage commands: length of the data block at `line_end`.
    pub data_len: u32,
}

impl Default for McReqParser {
    fn default() -> Self {
        McReqParser {
            state: State::Idle,
            line_begin: 0,
            line_limit: MAX_LINE,
            word: [0; WORD_MAX],
            word_len: 0,
            ntok: 0,
            tok_start: 0,
            tok_len: 0,
            num: 0,
            digits: 0,
            neg: false,
            remaining: 0,
            cmd: McCmd::Get,
            start: 0,
            keys: Vec::new(),
            noreply: false,
            line_end: 0,
            data_len: 0,
        }
    }
}

/// What the next token after the command word must be.
enum Expect {
    Key,
    Num(NumArg),
    Noreply,
    Nothing,
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
    }

    /// True when no byte of a next request has been seen.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// The completed request is followed by a data block.
    pub fn is_storage(&self) -> bool {
        self.cmd.is_storage()
    }

    /// Feeds `data`, which starts at absolute stream offset `base`. Returns
    /// how many bytes were consumed: on `Complete` the rest belongs to the
    /// next request and must be fed again after [`reset`](Self::reset).
    pub fn feed(&mut self, data: &[u8], base: u64) -> (usize, Progress) {
        let mut i = 0;
        while i < data.len() {
            let c = data[i];
            let pos = base + i as u64;
            if self.in_line() && pos - self.line_begin >= self.line_limit {
                return (i, Progress::Error(McReqError::LineTooLong));
            }
            // Bytes of this piece that may still belong to the line.
            let room = (self.line_limit - (pos - self.line_begin.min(pos))).min(usize::MAX as u64) as usize;
            let step = match self.state {
                State::Idle => {
                    self.begin(pos);
                    continue;
                }
                State::Lead => {
                    if c == b' ' {
                        Ok(count_spaces(&data[i..], room))
                    } else {
                        self.start = pos;
                        self.state = State::Word;
                        continue;
                    }
                }
                State::Word => self.word_byte(c).map(|()| 1),
                State::Spaces => {
                    if c == b' ' {
                        Ok(count_spaces(&data[i..], room))
                    } else if c == b'\r' {
                        self.line_cr().map(|()| 1)
                    } else {
                        match self.begin_token(pos) {
                            // Reprocess this byte as the token's first.
                            Ok(()) => continue,
                            Err(e) => Err(e),
                        }
                    }
                }
                State::Key => {
                    if c == b' ' || c == b'\r' {
                        self.end_key();
                        self.token_end(c).map(|()| 1)
                    } else {
                        let rest = &data[i..];
                        let win = &rest[..rest.len().min(room).min(MAX_KEY + 1 - self.tok_len)];
                        let n = win.iter().position(|&b| b == b' ' || b == b'\r').unwrap_or(win.len());
                        self.tok_len += n;
                        if self.tok_len > MAX_KEY {
                            Err(McReqError::KeyTooLong)
                        } else {
                            Ok(n)
                        }
                    }
                }
                State::Num => self.num_byte(c).map(|()| 1),
                State::Noreply => self.noreply_byte(c).map(|()| 1),
                State::LineLf => {
                    if c != b'\n' {
                        Err(McReqError::BadLineEnd)
                    } else {
                        self.line_end = pos + 1;
                        if !self.cmd.is_storage() {
                            self.state = State::Idle;
                            return (i + 1, Progress::Complete(pos + 1));
                        }
                        self.remaining = u64::from(self.data_len);
                        self.state = if self.remaining == 0 { State::DataCr } else { State::Data };
                        Ok(1)
                    }
                }
                State::Data => {
                    let n = ((data.len() - i) as u64).min(self.remaining) as usize;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    Ok(n)
                }
                State::DataCr => {
                    if c != b'\r' {
                        Err(McReqError::BadDataChunk)
                    } else {
                        self.state = State::DataLf;
                        Ok(1)
                    }
                }
                State::DataLf => {
                    if c != b'\n' {
                        Err(McReqError::BadDataChunk)
                    } else {
                        self.state = State::Idle;
                        return (i + 1, Progress::Complete(pos + 1));
                    }
                }
            };
            match step {
                Ok(n) => i += n,
                Err(e) => return (i, Progress::Error(e)),
            }
        }
        (i, Progress::Incomplete)
    }

    /// States where the bytes belong to the command line.
    fn in_line(&self) -> bool {
        !matches!(self.state, State::Idle | State::Data | State::DataCr | State::DataLf)
    }

    fn begin(&mut self, pos: u64) {
        self.line_begin = pos;
        self.line_limit = MAX_LINE;
        self.start = pos;
        self.word_len = 0;
        self.ntok = 0;
        self.keys.clear();
        self.noreply = false;
        self.line_end = 0;
        self.data_len = 0;
        self.state = State::Lead;
    }

    fn word_byte(&mut self, c: u8) -> Result<(), McReqError> {
        if c.is_ascii_lowercase() {
            let slot = self.word.get_mut(self.word_len).ok_or(McReqError::UnknownCommand)?;
            *slot = c;
            self.word_len += 1;
            return Ok(());
        }
        if c != b' ' && c != b'\r' {
            return Err(McReqError::UnknownCommand);
        }
        let word = self.word.get(..self.word_len).unwrap_or_default();
        self.cmd = McCmd::lookup(word).ok_or(McReqError::UnknownCommand)?;
        if self.cmd.is_retrieval() {
            self.line_limit = MAX_GET_LINE;
        }
        self.state = State::Spaces;
        if c == b'\r' {
            self.line_cr()?;
        }
        Ok(())
    }

    fn expect(&self) -> Expect {
        if self.cmd.keyless() {
            return Expect::Nothing;
        }
        if self.cmd.is_retrieval() || self.ntok == 0 {
            return Expect::Key;
        }
        let args = self.cmd.num_args();
        match args.get(self.ntok - 1) {
            Some(&a) => Expect::Num(a),
            None if self.ntok - 1 == args.len() => Expect::Noreply,
            None => Expect::Nothing,
        }
    }

    /// Every argument the command needs has been read.
    fn satisfied(&self) -> bool {
        if self.cmd.keyless() {
            true
        } else {
            self.ntok > self.cmd.num_args().len()
        }
    }

    fn begin_token(&mut self, pos: u64) -> Result<(), McReqError> {
        self.tok_start = pos;
        self.tok_len = 0;
        self.state = match self.expect() {
            Expect::Key => State::Key,
            Expect::Num(_) => {
                self.num = 0;
                self.digits = 0;
                self.neg = false;
                State::Num
            }
            Expect::Noreply => State::Noreply,
            Expect::Nothing => return Err(McReqError::ExtraToken),
        };
        Ok(())
    }

    /// A token ended with `c` (a space or `\r`).
    fn token_end(&mut self, c: u8) -> Result<(), McReqError> {
        self.ntok += 1;
        self.state = State::Spaces;
        if c == b'\r' {
            self.line_cr()?;
        }
        Ok(())
    }

    /// The `\r` ending the command line.
    fn line_cr(&mut self) -> Result<(), McReqError> {
        if !self.satisfied() {
            return Err(McReqError::MissingArgument);
        }
        self.state = State::LineLf;
        Ok(())
    }

    fn end_key(&mut self) {
        // tok_len <= MAX_KEY here, so the cast is exact.
        self.keys.push(McKey { start: self.tok_start, len: self.tok_len as u32 });
    }

    fn num_byte(&mut self, c: u8) -> Result<(), McReqError> {
        let Expect::Num(arg) = self.expect() else {
            return Err(McReqError::ExtraToken);
        };
        if c.is_ascii_digit() {
            self.num = self
                .num
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .filter(|&v| v <= arg.max)
                .ok_or(McReqError::BadNumber)?;
            self.digits += 1;
            return Ok(());
        }
        if c == b'-' && arg.neg && !self.neg && self.digits == 0 {
            self.neg = true;
            return Ok(());
        }
        if (c != b' ' && c != b'\r') || self.digits == 0 {
            return Err(McReqError::BadNumber);
        }
        if arg.len {
            // Bounded by MAX_DATA, which fits in u32.
            self.data_len = u32::try_from(self.num).map_err(|_| McReqError::BadNumber)?;
        }
        self.token_end(c)
    }

    fn noreply_byte(&mut self, c: u8) -> Result<(), McReqError> {
        if c == b' ' || c == b'\r' {
            if self.tok_len != NOREPLY.len() {
                return Err(McReqError::ExtraToken);
            }
            self.noreply = true;
            return self.token_end(c);
        }
        if NOREPLY.get(self.tok_len) != Some(&c) {
            return Err(McReqError::ExtraToken);
        }
        self.tok_len += 1;
        Ok(())
    }
}

/// Leading spaces of `bytes` (which starts with one), at most `room`.
fn count_spaces(bytes: &[u8], room: usize) -> usize {
    let win = &bytes[..bytes.len().min(room)];
    win.iter().position(|&b| b != b' ').unwrap_or(win.len())
}
