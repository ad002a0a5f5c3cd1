//! Incremental parser of memcached ASCII requests (docs/compatibility.md §8.1).
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

const FLAGS: NumArg = NumArg {
    max: u32::MAX as u64,
    neg: false,
    len: false,
};
const EXPTIME: NumArg = NumArg {
    max: i32::MAX as u64,
    neg: false,
    len: false,
};
const TOUCH_EXPTIME: NumArg = NumArg {
    max: i32::MAX as u64,
    neg: true,
    len: false,
};
const BYTES: NumArg = NumArg {
    max: MAX_DATA,
    neg: false,
    len: true,
};
const CAS: NumArg = NumArg {
    max: u64::MAX,
    neg: false,
    len: false,
};
const DELTA: NumArg = NumArg {
    max: u64::MAX,
    neg: true,
    len: false,
};

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
            let step = match self.state {
                State::Idle => {
                    self.begin(pos);
                    continue;
                }
                State::Lead => {
                    if c == b' ' {
                        Ok(count_spaces(data.get(i..).unwrap_or_default(), room))
                    } else {
                        self.start = pos;
                        self.state = State::Word;
                        continue;
                    }
                }
                State::Word => self.word_byte(c).map(|()| 1),
                State::Spaces => {
                    if c == b' ' {
                        Ok(count_spaces(data.get(i..).unwrap_or_default(), room))
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
                    } else if c == b'\n' {
                        // memcached ends a line at a bare LF: a key holding
                        // one would smuggle a second command past the proxy.
                        Err(McReqError::BadLineEnd)
                    } else {
                        let rest = data.get(i..).unwrap_or_default();
                        let win = rest
                            .get(..rest.len().min(room).min(MAX_KEY + 1 - self.tok_len))
                            .unwrap_or_default();
                        let n = win
                            .iter()
                            .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
                            .unwrap_or(win.len());
                        if self.tok_len + n > MAX_KEY {
                            // Reported at the first byte past the limit, the
                            // same wherever the input was cut.
                            return (
                                i + MAX_KEY - self.tok_len,
                                Progress::Error(McReqError::KeyTooLong),
                            );
                        }
                        self.tok_len += n;
                        Ok(n)
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
                        self.state = if self.remaining == 0 {
                            State::DataCr
                        } else {
                            State::Data
                        };
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
        self.ntok = 0;
        self.keys.clear();
        self.noreply = false;
        self.line_end = 0;
        self.data_len = 0;
        self.state = State::Lead;
    }

    fn word_byte(&mut self, c: u8) -> Result<(), McReqError> {
        if c.is_ascii_lowercase() {
            let slot = self
                .word
                .get_mut(self.word_len)
                .ok_or(McReqError::UnknownCommand)?;
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
        self.keys.push(McKey {
            start: self.tok_start,
            len: self.tok_len as u32,
        });
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
    let win = bytes.get(..bytes.len().min(room)).unwrap_or_default();
    win.iter().position(|&b| b != b' ').unwrap_or(win.len())
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
        noreply: bool,
        line_end: u64,
        data: Option<Vec<u8>>,
        end: u64,
    }

    /// How the input ended after the last complete request.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Tail {
        Idle,
        Partial,
        Error(McReqError),
    }

    /// Feeds `input` in pieces ending at each of `cuts` (then at the end).
    fn parse_cuts(input: &[u8], cuts: &[usize]) -> (Vec<Req>, Tail) {
        let mut p = McReqParser::new();
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
                        out.push(Req {
                            cmd: p.cmd,
                            start: p.start,
                            keys: p.keys.clone(),
                            key_bytes: p
                                .keys
                                .iter()
                                .map(|k| slice(k.start, u64::from(k.len)))
                                .collect(),
                            noreply: p.noreply,
                            line_end: p.line_end,
                            data: p
                                .is_storage()
                                .then(|| slice(p.line_end, u64::from(p.data_len))),
                            end,
                        });
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
    fn parse(input: &[u8]) -> (Vec<Req>, Tail) {
        let whole = parse_cuts(input, &[]);
        for k in 1..input.len() {
            assert_eq!(parse_cuts(input, &[k]), whole, "split at {k}");
        }
        let ones: Vec<usize> = (1..input.len()).collect();
        assert_eq!(parse_cuts(input, &ones), whole, "1-byte pieces");
        whole
    }

    fn one(input: &[u8]) -> Req {
        let (reqs, tail) = parse(input);
        assert_eq!(tail, Tail::Idle, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(reqs.len(), 1);
        reqs.into_iter().next().unwrap()
    }

    fn err(input: &[u8]) -> McReqError {
        match parse(input).1 {
            Tail::Error(e) => e,
            t => panic!(
                "{:?}: expected an error, got {t:?}",
                String::from_utf8_lossy(input)
            ),
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
        assert_eq!(keys(&r), [b"k"]);

        // Keys are any bytes but space, CR and LF.
        let r = one(b"get a\tb \x01\xff\r\n");
        assert_eq!(keys(&r), [&b"a\tb"[..], b"\x01\xff"]);
        // A bare LF would end the line for memcached: refused in a key.
        assert_eq!(
            parse(b"get a\nversion\r\n").1,
            Tail::Error(McReqError::BadLineEnd)
        );
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
            assert!(!r.noreply);
        }
        let r = one(b"set k 0 0 0 noreply\r\n\r\n");
        assert!(r.noreply);
        assert_eq!(r.data.as_deref(), Some(&b""[..]));
        assert_eq!((r.line_end, r.end), (21, 23));

        let r = one(b"cas k 4294967295 2147483647 3 18446744073709551615\r\nxyz\r\n");
        assert_eq!(r.cmd, McCmd::Cas);
        assert_eq!(r.data.as_deref(), Some(&b"xyz"[..]));
        let r = one(b"cas  k  1  2  1  99   noreply  \r\nx\r\n");
        assert!(r.noreply);
        assert_eq!(r.data.as_deref(), Some(&b"x"[..]));
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
            (b"incr k -5\r\n", McCmd::Incr, false),
            (b"touch k 10\r\n", McCmd::Touch, false),
            (b"touch k -1 noreply\r\n", McCmd::Touch, true),
            (b"delete k\r\n", McCmd::Delete, false),
            (b"delete k noreply\r\n", McCmd::Delete, true),
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
        for (input, cmd) in [
            (&b"version\r\n"[..], McCmd::Version),
            (b"quit\r\n", McCmd::Quit),
            (b" version  \r\n", McCmd::Version),
        ] {
            let r = one(input);
            assert_eq!(r.cmd, cmd);
            assert!(r.keys.is_empty());
            assert_eq!(r.end as usize, input.len());
        }
    }

    #[test]
    fn pipeline() {
        let input = b"set a 1 2 3\r\nabc\r\nget a b\r\nincr a 1 noreply\r\n delete b\r\nversion\r\nquit\r\n";
        let (reqs, tail) = parse(input);
        assert_eq!(tail, Tail::Idle);
        let cmds: Vec<McCmd> = reqs.iter().map(|r| r.cmd).collect();
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
        assert_eq!(reqs[1].start, 18);
        assert_eq!(keys(&reqs[1]), [b"a", b"b"]);
        assert!(reqs[2].noreply);
        assert_eq!(reqs[3].start, reqs[2].end + 1);
        for w in reqs.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
    }

    #[test]
    fn incomplete_and_bare_lf() {
        for input in [
            &b"get a"[..],
            b"get a\r",
            b"set k 0 0 3\r\nab",
            b"set k 0 0 3\r\nabc\r",
            b"  ",
        ] {
            assert_eq!(
                parse(input),
                (vec![], Tail::Partial),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // A bare LF never ends a line, and is refused inside a key.
        assert_eq!(err(b"delete k\n\r\n"), McReqError::BadLineEnd);
        assert_eq!(err(b"get a\n"), McReqError::BadLineEnd);
        assert_eq!(err(b"version\n\r\n"), McReqError::UnknownCommand);
        assert_eq!(err(b"delete k noreply\n\r\n"), McReqError::ExtraToken);
        assert_eq!(err(b"incr k 1\n\r\n"), McReqError::BadNumber);
    }

    #[test]
    fn errors() {
        use McReqError::*;
        for (input, want) in [
            (&b"stats\r\n"[..], UnknownCommand),
            (b"flush_all\r\n", UnknownCommand),
            (b"verbosity 1\r\n", UnknownCommand),
            (b"gat 0 k\r\n", UnknownCommand),
            (b"GET k\r\n", UnknownCommand),
            (b"Get k\r\n", UnknownCommand),
            (b"\x80\x00\x00\x00", UnknownCommand),
            (b"\r\n", UnknownCommand),
            (b"  \r\n", UnknownCommand),
            (b"getx k\r\n", UnknownCommand),
            (b"versions\r\n", UnknownCommand),
            (b"get\r\n", MissingArgument),
            (b"get \r\n", MissingArgument),
            (b"gets   \r\n", MissingArgument),
            (b"set k 0 0\r\n", MissingArgument),
            (b"set\r\n", MissingArgument),
            (b"cas k 0 0 1\r\n", MissingArgument),
            (b"incr k\r\n", MissingArgument),
            (b"touch k \r\n", MissingArgument),
            (b"delete\r\n", MissingArgument),
            (b"delete k 0\r\n", ExtraToken),
            (b"delete k 0 noreply\r\n", ExtraToken),
            (b"delete k noreply x\r\n", ExtraToken),
            (b"delete k noreplyx\r\n", ExtraToken),
            (b"delete k norepl\r\n", ExtraToken),
            (b"set k 0 0 1 noreply x\r\nx\r\n", ExtraToken),
            (b"set k 0 0 1 2\r\nx\r\n", ExtraToken),
            (b"incr k 1 2\r\n", ExtraToken),
            (b"version x\r\n", ExtraToken),
            (b"quit now\r\n", ExtraToken),
            (b"set k x 0 1\r\n", BadNumber),
            (b"set k 0 -1 1\r\n", BadNumber),
            (b"set k 0 0 -1\r\n", BadNumber),
            (b"set k 1a 0 1\r\n", BadNumber),
            (b"set k 4294967296 0 1\r\n", BadNumber),
            (b"set k 0 2147483648 1\r\n", BadNumber),
            (b"set k 0 0 1073741825\r\n", BadNumber),
            (b"cas k 0 0 1 18446744073709551616\r\n", BadNumber),
            (b"incr k 18446744073709551616\r\n", BadNumber),
            (b"incr k - \r\n", BadNumber),
            (b"incr k --1\r\n", BadNumber),
            (b"incr k 1-\r\n", BadNumber),
            (b"touch k 99999999999\r\n", BadNumber),
            (b"get a\rb\r\n", BadLineEnd),
            (b"version\r\r\n", BadLineEnd),
            (b"set k 0 0 1\r\nab\r\n", BadDataChunk),
            (b"set k 0 0 1\r\na\rX", BadDataChunk),
            (b"set k 0 0 1\r\na\n\r\n", BadDataChunk),
            (b"set k 0 0 0\r\nx\r\n", BadDataChunk),
        ] {
            assert_eq!(err(input), want, "{:?}", String::from_utf8_lossy(input));
        }
        // Requests before the bad one still complete.
        let (reqs, tail) = parse(b"get a\r\nGET b\r\n");
        assert_eq!(reqs.len(), 1);
        assert_eq!(tail, Tail::Error(UnknownCommand));
    }

    #[test]
    fn replies() {
        use McReqError::*;
        assert_eq!(UnknownCommand.reply(), b"ERROR\r\n");
        assert_eq!(BadDataChunk.reply(), b"CLIENT_ERROR bad data chunk\r\n");
        for e in [
            BadNumber,
            KeyTooLong,
            MissingArgument,
            ExtraToken,
            LineTooLong,
            BadLineEnd,
        ] {
            assert_eq!(e.reply(), b"CLIENT_ERROR bad command line format\r\n");
            assert!(!e.reason().is_empty());
        }
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
            let bad = tmpl.replace("{}", &k251);
            assert_eq!(err(bad.as_bytes()), McReqError::KeyTooLong, "{tmpl}");
        }
        // The second key of a multi-get is checked too.
        assert_eq!(
            err(format!("get a {k251} b\r\n").as_bytes()),
            McReqError::KeyTooLong
        );
        // Detected without waiting for the end of the key.
        assert_eq!(
            parse_cuts(format!("get {k251}").as_bytes(), &[]).1,
            Tail::Error(McReqError::KeyTooLong)
        );
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
        // Leading spaces count.
        let lead = " ".repeat(MAX_LINE as usize + 1);
        assert_eq!(
            parse_cuts(lead.as_bytes(), &[7]).1,
            Tail::Error(McReqError::LineTooLong)
        );

        // Multi-gets may be much longer than MAX_LINE, up to MAX_GET_LINE.
        let key = "x".repeat(249);
        let mut get = b"get".to_vec();
        while get.len() < 100_000 {
            get.push(b' ');
            get.extend_from_slice(key.as_bytes());
        }
        get.extend_from_slice(b"\r\n");
        let (reqs, tail) = parse_cuts(&get, &[16336, 32672, 49008]);
        assert_eq!(tail, Tail::Idle);
        assert_eq!(reqs[0].keys.len(), 400);
        assert!(reqs[0].key_bytes.iter().all(|k| k == key.as_bytes()));
        get.truncate(get.len() - 2);
        while (get.len() as u64) < MAX_GET_LINE {
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
        let (reqs, tail) = parse_cuts(&input, &cuts);
        assert_eq!(tail, Tail::Idle);
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].line_end as usize, line);
        assert_eq!(reqs[0].data.as_ref().map(Vec::len), Some(len));
        assert!(reqs[0].noreply);
        assert_eq!(reqs[0].end as usize, line + len + 2);
        assert_eq!(keys(&reqs[1]), [b"big"]);

        // The data block is skipped in one step per piece.
        let mut p = McReqParser::new();
        let (n, prog) = p.feed(&input[..line + 10], 0);
        assert_eq!((n, prog), (line + 10, Progress::Incomplete));
        let (n, prog) = p.feed(&input[line + 10..line + len], (line + 10) as u64);
        assert_eq!((n, prog), (len - 10, Progress::Incomplete));
        let (n, prog) = p.feed(&input[line + len..], (line + len) as u64);
        assert_eq!((n, prog), (2, Progress::Complete((line + len + 2) as u64)));

        // Largest allowed length is accepted, then waits for the data.
        let max = format!("set k 0 0 {MAX_DATA}\r\n");
        assert_eq!(parse_cuts(max.as_bytes(), &[]).1, Tail::Partial);
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

    /// Random soups of protocol fragments: never a panic, and every split
    /// parses like the whole.
    #[test]
    fn random_inputs_agree() {
        let frags: &[&[u8]] = &[
            &b"get"[..],
            b"gets",
            b"set",
            b"cas",
            b"incr",
            b"decr",
            b"touch",
            b"delete",
            b"version",
            b"quit",
            b"GET",
            b" ",
            b"  ",
            b"\r\n",
            b"\r",
            b"\n",
            b"k",
            b"key",
            b"0",
            b"1",
            b"3",
            b"-",
            b"-1",
            b"99999999999",
            b"noreply",
            b"x",
            b"\xff",
            b"abc",
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
            let (ok, _) = parse(&input);
            completes += ok.len();
        }
        assert!(completes > 300, "only {completes} complete messages");
    }
}
