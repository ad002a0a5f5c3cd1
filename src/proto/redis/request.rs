//! Incremental parser of redis requests: RESP multibulk (docs/compatibility.md §7.1) and
//! inline commands, as redis itself reads them.
//!
//! The parser does no I/O and copies no multibulk payload: it is fed the
//! bytes of a connection's input stream piece by piece (each piece one
//! mbuf's worth) and records where every argument lies as absolute stream
//! offsets. The caller turns those offsets into mbuf segments. Only the
//! command name is copied (lower-cased, at most [`NAME_MAX`] bytes) to look
//! it up.
//!
//! Inline commands (`GET k\r\n`, what telnet, `redis-cli --pipe` files and
//! old scripts send) start with any byte but `*` and end at LF, a CR before
//! it stripped. Words are split as redis' `sdssplitargs` splits them:
//! blanks separate words; `"..."` may hold `\n \r \t \b \a \\ \" \xHH`
//! escapes (any other escaped byte stands for itself); `'...'` knows only
//! `\'`; a quote may open mid-word (`a"b c"` is `ab c`) but a closing quote
//! must be followed by a blank or the end of the line, and an unclosed
//! quote is an error; a NUL byte outside quotes ends the words (redis reads
//! the line as a C string). Errors are reported when the line ends, as
//! redis reports them. A line holding more than [`INLINE_MAX`] bytes before
//! its LF is refused ("too big inline request"). Because escapes change
//! bytes, an inline line is copied (bounded by [`INLINE_MAX`]) and, once
//! complete, re-encoded as the multibulk request redis executes for it:
//! [`ReqParser::inline_resp`]. That RESP form is what the proxy forwards
//! (redis runs it exactly as it would run the line) and what fragments are
//! cut from; [`ReqParser::args`] then index it, not the stream.
//!
//! Like redis, an empty inline line (blanks only), `*0` and `*-<n>` are
//! skipped: [`Progress::Skip`] reports the bytes consumed with no request,
//! so no reply is owed for them.
//!
//! Work is linear in the bytes received: headers are scanned byte by byte,
//! argument data is skipped in one step, and a message that arrives in many
//! reads resumes where the last read stopped.

use super::command::Cmd;

/// Longest command name we look up; longer names are simply unknown.
pub const NAME_MAX: usize = 24;
/// Argument slots kept between requests.
const KEEP_ARGS: usize = 1024;
/// Bytes of inline buffers kept between requests.
const KEEP_INLINE: usize = 4096;
/// Redis' own limit on the number of items of one request.
pub const MAX_ARGS: u64 = 1024 * 1024;
/// Redis' default `proto-max-bulk-len`: the largest argument we accept.
pub const MAX_BULK: u64 = 512 * 1024 * 1024;
/// Redis' `PROTO_INLINE_MAX_SIZE`: bytes an inline line may hold before
/// its LF (redis refuses a query buffer holding more without one).
pub const INLINE_MAX: u64 = 64 * 1024;

/// One argument: `start` is the offset of its `$`, `data` of its first data
/// byte; the item ends at `data + len + 2` (the CRLF). For an inline
/// request the offsets are into [`ReqParser::inline_resp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    pub start: u64,
    pub data: u64,
    pub len: u32,
}

impl Arg {
    /// The stream range of the item's bytes (without `$<len>` and CRLF).
    pub fn data_range(&self) -> (u64, u64) {
        (self.data, self.data + u64::from(self.len))
    }

    /// Offset one past the item's trailing CRLF.
    pub fn end(&self) -> u64 {
        self.data + u64::from(self.len) + 2
    }
}

/// Why a request could not be parsed. The connection cannot be resynced
/// after any of these, so the proxy replies with the message and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqError {
    BadMultibulkLen,
    ExpectedDollar(u8),
    BadBulkLen,
    /// Argument data not followed by CRLF.
    MissingCrlf,
    /// An inline line with an unclosed quote, or a closing quote followed
    /// by something other than a blank.
    UnbalancedQuotes,
    /// An inline line longer than [`INLINE_MAX`].
    InlineTooBig,
}

impl ReqError {
    /// The text after `-ERR ` of the reply sent before closing (redis'
    /// own words).
    pub fn message(&self) -> String {
        match self {
            ReqError::BadMultibulkLen => "Protocol error: invalid multibulk length".into(),
            ReqError::ExpectedDollar(c) => {
                format!(
                    "Protocol error: expected '$', got '{}'",
                    char::from(*c).escape_default()
                )
            }
            ReqError::BadBulkLen => "Protocol error: invalid bulk length".into(),
            ReqError::MissingCrlf => "Protocol error: expected CRLF after argument".into(),
            ReqError::UnbalancedQuotes => "Protocol error: unbalanced quotes in request".into(),
            ReqError::InlineTooBig => "Protocol error: too big inline request".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All given bytes consumed; the request continues in later bytes.
    Incomplete,
    /// A whole request ends at this absolute offset (exclusive).
    Complete(u64),
    /// The bytes up to this offset hold no request (an empty inline line,
    /// `*0`, `*-1`): consume them, [`reset`](ReqParser::reset), reply
    /// nothing.
    Skip(u64),
    Error(ReqError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Count,
    CountLf,
    Dollar,
    Len,
    LenLf,
    Data,
    DataCr,
    DataLf,
    /// Inside an inline line (see [`Word`] for where in it).
    Inline,
}

/// Where an inline line's splitter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    /// Between words.
    Blank,
    /// In an unquoted part of a word.
    Bare,
    /// In `"..."`, after `\`, after `\x`, after `\x` and one hex digit.
    Dq,
    DqEsc,
    DqHex,
    DqHex1(u8),
    /// A CR in `"..."`: literal, unless it is the one before the LF.
    DqCr,
    /// In `'...'`, after `\`, after a CR.
    Sq,
    SqEsc,
    SqCr,
    /// Just after a closing quote: a blank or the end must follow.
    Closed,
    /// After a NUL: the rest of the line is not read (C string).
    Ignore,
    /// The line is bad: the error is reported at its LF, as redis does.
    Failed,
}

/// Resumable parser state for one connection.
#[derive(Debug)]
pub struct ReqParser {
    state: State,
    /// Accumulator for the number being read (count or length).
    num: u64,
    digits: u32,
    /// A `*-` count: the request is skipped.
    neg: bool,
    /// Items announced by `*<n>`.
    nargs: u64,
    /// Data bytes of the current argument still to skip.
    remaining: u64,
    cur_start: u64,
    cur_data: u64,
    pub start: u64,
    pub args: Vec<Arg>,
    name: [u8; NAME_MAX],
    name_len: usize,
    word: Word,
    /// The inline words decoded, back to back, and where each ends.
    words: Vec<u8>,
    word_ends: Vec<u32>,
    /// A word is open (possibly empty, like `""`).
    in_word: bool,
    /// The last complete request was inline; its RESP form.
    inline: bool,
    resp: Vec<u8>,
}

impl Default for ReqParser {
    fn default() -> Self {
        ReqParser {
            state: State::Start,
            num: 0,
            digits: 0,
            neg: false,
            nargs: 0,
            remaining: 0,
            cur_start: 0,
            cur_data: 0,
            start: 0,
            args: Vec::new(),
            name: [0; NAME_MAX],
            name_len: 0,
            word: Word::Blank,
            words: Vec::new(),
            word_ends: Vec::new(),
            in_word: false,
            inline: false,
            resp: Vec::new(),
        }
    }
}

/// Blanks between inline words: C `isspace`.
fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl ReqParser {
    pub fn new() -> ReqParser {
        ReqParser::default()
    }

    /// Forgets the finished request (keeps the argument vector's capacity).
    pub fn reset(&mut self) {
        self.state = State::Start;
        self.args.clear();
        // A request with a million arguments must not pin their positions
        // on the connection for good.
        if self.args.capacity() > KEEP_ARGS {
            self.args.shrink_to(KEEP_ARGS);
        }
        self.name_len = 0;
        self.num = 0;
        self.digits = 0;
        self.inline = false;
        for v in [&mut self.words, &mut self.resp] {
            v.clear();
            if v.capacity() > KEEP_INLINE {
                v.shrink_to(KEEP_INLINE);
            }
        }
        self.word_ends.clear();
        if self.word_ends.capacity() > KEEP_ARGS {
            self.word_ends.shrink_to(KEEP_ARGS);
        }
    }

    /// True when no byte of a next request has been seen.
    pub fn is_idle(&self) -> bool {
        self.state == State::Start
    }

    /// The completed request was an inline command: its arguments index
    /// [`inline_resp`](Self::inline_resp), and `start..end` in the stream
    /// is the line itself.
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// The multibulk form of a completed inline request (empty for a
    /// multibulk one): what the proxy sends in its place. Fed alone to a
    /// fresh parser it gives the same arguments at the same offsets.
    pub fn inline_resp(&self) -> &[u8] {
        &self.resp
    }

    /// The lower-cased command name (cut at [`NAME_MAX`] bytes).
    pub fn name(&self) -> &[u8] {
        self.name
            .get(..self.name_len.min(NAME_MAX))
            .unwrap_or_default()
    }

    /// The table entry of a completed request's command, if it is served.
    pub fn spec(&self) -> Option<super::command::Spec> {
        if self.name_len > NAME_MAX {
            return None;
        }
        super::command::spec(self.name()).filter(|s| s.served)
    }

    /// The command of a completed request, `None` if unknown.
    pub fn command(&self) -> Option<Cmd> {
        if self.name_len > NAME_MAX {
            return None;
        }
        Cmd::lookup(self.name())
    }

    /// Feeds `data`, which starts at absolute stream offset `base`. Returns
    /// how many bytes were consumed: on `Complete` (or `Skip`) the rest
    /// belongs to the next request and must be fed again after
    /// [`reset`](Self::reset).
    pub fn feed(&mut self, data: &[u8], base: u64) -> (usize, Progress) {
        let mut i = 0;
        while i < data.len() {
            let Some(&c) = data.get(i) else {
                break;
            };
            let pos = base + i as u64;
            match self.state {
                State::Start => {
                    self.start = pos;
                    self.args.clear();
                    self.name_len = 0;
                    self.inline = false;
                    if c != b'*' {
                        // Redis reads anything else as an inline command.
                        self.begin_inline();
                        continue;
                    }
                    self.begin_number();
                    self.neg = false;
                    self.state = State::Count;
                }
                State::Count => {
                    if c == b'\r' {
                        // `*0`, `*-1` are skipped; `*-0` is not a number
                        // to redis (nor is `*`).
                        if self.digits == 0 || (self.neg && self.num == 0) {
                            return (i, Progress::Error(ReqError::BadMultibulkLen));
                        }
                        self.nargs = self.num;
                        self.state = State::CountLf;
                    } else if c == b'-' && self.digits == 0 && !self.neg {
                        self.neg = true;
                    } else {
                        // Any negative count is skipped by redis, so it is
                        // only bounded to stay an i64.
                        let max = if self.neg { i64::MAX as u64 } else { MAX_ARGS };
                        if !self.push_digit(c, max) {
                            return (i, Progress::Error(ReqError::BadMultibulkLen));
                        }
                    }
                }
                State::CountLf => {
                    if c != b'\n' {
                        return (i, Progress::Error(ReqError::BadMultibulkLen));
                    }
                    if self.neg || self.nargs == 0 {
                        self.state = State::Start;
                        return (i + 1, Progress::Skip(pos + 1));
                    }
                    self.state = State::Dollar;
                }
                State::Dollar => {
                    if c != b'$' {
                        return (i, Progress::Error(ReqError::ExpectedDollar(c)));
                    }
                    self.cur_start = pos;
                    self.begin_number();
                    self.state = State::Len;
                }
                State::Len => {
                    if c == b'\r' {
                        if self.digits == 0 {
                            return (i, Progress::Error(ReqError::BadBulkLen));
                        }
                        self.remaining = self.num;
                        self.state = State::LenLf;
                    } else if !self.push_digit(c, MAX_BULK) {
                        return (i, Progress::Error(ReqError::BadBulkLen));
                    }
                }
                State::LenLf => {
                    if c != b'\n' {
                        return (i, Progress::Error(ReqError::BadBulkLen));
                    }
                    self.cur_data = pos + 1;
                    self.state = if self.remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let avail = (data.len() - i) as u64;
                    let n = avail.min(self.remaining) as usize;
                    if self.args.is_empty() {
                        self.copy_name(data.get(i..i + n).unwrap_or_default());
                    }
                    self.remaining -= n as u64;
                    i += n;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if c != b'\r' {
                        return (i, Progress::Error(ReqError::MissingCrlf));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if c != b'\n' {
                        return (i, Progress::Error(ReqError::MissingCrlf));
                    }
                    self.args.push(Arg {
                        start: self.cur_start,
                        data: self.cur_data,
                        len: (pos - 1 - self.cur_data) as u32,
                    });
                    if self.args.len() as u64 == self.nargs {
                        self.state = State::Start;
                        return (i + 1, Progress::Complete(pos + 1));
                    }
                    self.state = State::Dollar;
                }
                State::Inline => {
                    let rest = data.get(i..).unwrap_or_default();
                    // Bytes this line may still take before its LF.
                    let seen = pos - self.start;
                    let room = usize::try_from(INLINE_MAX - seen.min(INLINE_MAX) + 1)
                        .unwrap_or(usize::MAX);
                    let win = rest.get(..rest.len().min(room)).unwrap_or_default();
                    let lf = win.iter().position(|&b| b == b'\n');
                    let body = win.get(..lf.unwrap_or(win.len())).unwrap_or_default();
                    for &b in body {
                        self.split_byte(b);
                    }
                    i += body.len();
                    match lf {
                        Some(_) => return self.inline_done(i, pos + body.len() as u64),
                        None if body.len() == room => {
                            return (i - 1, Progress::Error(ReqError::InlineTooBig));
                        }
                        None => {}
                    }
                    continue;
                }
            }
            i += 1;
        }
        (i, Progress::Incomplete)
    }

    fn begin_number(&mut self) {
        self.num = 0;
        self.digits = 0;
    }

    /// Accumulates one decimal digit; false for a non-digit or a value
    /// above `max`.
    fn push_digit(&mut self, c: u8, max: u64) -> bool {
        // Redis refuses leading zeros ("$01"): a request it would reject
        // must not reach a shared server connection.
        if !c.is_ascii_digit() || (self.digits == 1 && self.num == 0) {
            return false;
        }
        match self
            .num
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(c - b'0')))
        {
            Some(n) if n <= max => {
                self.num = n;
                self.digits += 1;
                true
            }
            _ => false,
        }
    }

    fn copy_name(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.name_len < NAME_MAX {
                if let Some(slot) = self.name.get_mut(self.name_len) {
                    *slot = b.to_ascii_lowercase();
                }
            }
            self.name_len = self.name_len.saturating_add(1);
        }
    }

    fn begin_inline(&mut self) {
        self.state = State::Inline;
        self.word = Word::Blank;
        self.in_word = false;
        self.words.clear();
        self.word_ends.clear();
    }

    fn push(&mut self, b: u8) {
        self.words.push(b);
    }

    fn end_word(&mut self) {
        if self.in_word {
            // At most INLINE_MAX bytes: fits.
            self.word_ends.push(self.words.len() as u32);
            self.in_word = false;
        }
    }

    /// One byte of an inline line (not its LF): `sdssplitargs` as a state
    /// machine, so that the line may arrive in any pieces.
    fn split_byte(&mut self, c: u8) {
        self.word = match self.word {
            Word::Blank => match c {
                0 => Word::Ignore,
                _ if is_blank(c) => Word::Blank,
                b'"' => {
                    self.in_word = true;
                    Word::Dq
                }
                b'\'' => {
                    self.in_word = true;
                    Word::Sq
                }
                _ => {
                    self.in_word = true;
                    self.push(c);
                    Word::Bare
                }
            },
            Word::Bare => match c {
                // Only these end a bare word; `\v` and `\f` belong to it.
                b' ' | b'\t' | b'\r' => {
                    self.end_word();
                    Word::Blank
                }
                0 => {
                    self.end_word();
                    Word::Ignore
                }
                b'"' => Word::Dq,
                b'\'' => Word::Sq,
                _ => {
                    self.push(c);
                    Word::Bare
                }
            },
            Word::Dq => self.dq_byte(c),
            Word::DqEsc => match c {
                b'x' => Word::DqHex,
                0 => Word::Failed,
                // An escaped CR stands for itself, unless it is the one
                // stripped before the LF (then the quote is unclosed).
                b'\r' => Word::DqCr,
                _ => {
                    self.push(match c {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    Word::Dq
                }
            },
            Word::DqHex => match hex_value(c) {
                Some(_) => Word::DqHex1(c),
                None => {
                    // `\x` without two hex digits is a plain `x`.
                    self.push(b'x');
                    self.dq_byte(c)
                }
            },
            Word::DqHex1(h) => match (hex_value(h), hex_value(c)) {
                (Some(hi), Some(lo)) => {
                    self.push(hi * 16 + lo);
                    Word::Dq
                }
                _ => {
                    self.push(b'x');
                    self.push(h);
                    self.dq_byte(c)
                }
            },
            Word::DqCr => {
                self.push(b'\r');
                self.dq_byte(c)
            }
            Word::Sq => self.sq_byte(c),
            Word::SqEsc => {
                if c == b'\'' {
                    self.push(b'\'');
                    Word::Sq
                } else {
                    self.push(b'\\');
                    self.sq_byte(c)
                }
            }
            Word::SqCr => {
                self.push(b'\r');
                self.sq_byte(c)
            }
            Word::Closed => match c {
                0 => {
                    self.end_word();
                    Word::Ignore
                }
                _ if is_blank(c) => {
                    self.end_word();
                    Word::Blank
                }
                _ => Word::Failed,
            },
            Word::Ignore => Word::Ignore,
            Word::Failed => Word::Failed,
        };
    }

    fn dq_byte(&mut self, c: u8) -> Word {
        match c {
            b'\\' => Word::DqEsc,
            b'"' => Word::Closed,
            0 => Word::Failed,
            b'\r' => Word::DqCr,
            _ => {
                self.push(c);
                Word::Dq
            }
        }
    }

    fn sq_byte(&mut self, c: u8) -> Word {
        match c {
            b'\\' => Word::SqEsc,
            b'\'' => Word::Closed,
            0 => Word::Failed,
            b'\r' => Word::SqCr,
            _ => {
                self.push(c);
                Word::Sq
            }
        }
    }

    /// The LF of an inline line is at stream offset `lf`, `i` in the piece.
    fn inline_done(&mut self, i: usize, lf: u64) -> (usize, Progress) {
        let ok = match self.word {
            Word::Blank | Word::Bare | Word::Closed | Word::Ignore => true,
            Word::Dq
            | Word::DqEsc
            | Word::DqHex
            | Word::DqHex1(_)
            | Word::DqCr
            | Word::Sq
            | Word::SqEsc
            | Word::SqCr
            | Word::Failed => false,
        };
        if !ok {
            return (i, Progress::Error(ReqError::UnbalancedQuotes));
        }
        self.end_word();
        self.state = State::Start;
        if self.word_ends.is_empty() {
            return (i + 1, Progress::Skip(lf + 1));
        }
        self.encode_inline();
        self.inline = true;
        (i + 1, Progress::Complete(lf + 1))
    }

    /// Builds the RESP form of the inline words and their [`Arg`]s in it.
    fn encode_inline(&mut self) {
        let mut resp = std::mem::take(&mut self.resp);
        resp.clear();
        self.args.clear();
        resp.push(b'*');
        resp.extend_from_slice(itoa::Buffer::new().format(self.word_ends.len()).as_bytes());
        resp.extend_from_slice(b"\r\n");
        let mut from = 0usize;
        for &end in &self.word_ends {
            let word = self.words.get(from..end as usize).unwrap_or_default();
            let start = resp.len() as u64;
            resp.push(b'$');
            resp.extend_from_slice(itoa::Buffer::new().format(word.len()).as_bytes());
            resp.extend_from_slice(b"\r\n");
            let data = resp.len() as u64;
            resp.extend_from_slice(word);
            resp.extend_from_slice(b"\r\n");
            self.args.push(Arg {
                start,
                data,
                len: word.len() as u32,
            });
            from = end as usize;
        }
        let first = self.word_ends.first().map_or(0, |&e| e as usize);
        let name = std::mem::take(&mut self.words);
        self.copy_name(name.get(..first).unwrap_or_default());
        self.words = name;
        self.resp = resp;
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

    /// A complete request: (command name, args as byte strings, end,
    /// inline); a skip is `(b"", [], end, false)` marked by an empty name.
    type Parsed = (Vec<u8>, Vec<Vec<u8>>, u64, bool);

    /// Parses `input` fed in pieces of `step` bytes.
    fn parse_all(input: &[u8], step: usize) -> Result<Vec<Parsed>, ReqError> {
        let mut p = ReqParser::new();
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < input.len() {
            let limit = (pos + step).min(input.len());
            let (n, prog) = p.feed(&input[pos..limit], pos as u64);
            pos += n;
            match prog {
                Progress::Incomplete => assert_eq!(pos, limit),
                Progress::Complete(end) => {
                    assert_eq!(end, pos as u64);
                    let src: &[u8] = if p.is_inline() {
                        p.inline_resp()
                    } else {
                        input
                    };
                    let args = p
                        .args
                        .iter()
                        .map(|a| src[a.data as usize..a.data as usize + a.len as usize].to_vec())
                        .collect();
                    out.push((p.name().to_vec(), args, end, p.is_inline()));
                    p.reset();
                }
                Progress::Skip(end) => {
                    assert_eq!(end, pos as u64);
                    out.push((Vec::new(), Vec::new(), end, false));
                    p.reset();
                }
                Progress::Error(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Parses whole and at every piece size; all must agree.
    fn parse_every(input: &[u8]) -> Result<Vec<Parsed>, ReqError> {
        let whole = parse_all(input, input.len().max(1));
        for step in 1..input.len() {
            assert_eq!(parse_all(input, step), whole, "step {step}");
        }
        whole
    }

    /// The words of one inline line.
    fn words(line: &[u8]) -> Result<Vec<Vec<u8>>, ReqError> {
        let got = parse_every(line)?;
        assert!(got.len() <= 1, "{got:?}");
        Ok(got.into_iter().next().map(|p| p.1).unwrap_or_default())
    }

    fn w(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn whole_and_split_agree() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nget\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n";
        let whole = parse_every(input).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].0, b"set");
        assert_eq!(whole[0].1[2], b"hello");
        assert_eq!(whole[1].1[1], b"");
        assert!(!whole[0].3);
    }

    #[test]
    fn errors() {
        assert_eq!(parse_all(b"*-0\r\n", 100), Err(ReqError::BadMultibulkLen));
        assert_eq!(parse_all(b"*\r\n", 100), Err(ReqError::BadMultibulkLen));
        assert_eq!(parse_all(b"*--1\r\n", 100), Err(ReqError::BadMultibulkLen));
        assert_eq!(parse_all(b"*1-\r\n", 100), Err(ReqError::BadMultibulkLen));
        assert_eq!(
            parse_all(b"*1\r\nx", 100),
            Err(ReqError::ExpectedDollar(b'x'))
        );
        assert_eq!(parse_all(b"*1\r\n$a\r\n", 100), Err(ReqError::BadBulkLen));
        assert_eq!(
            parse_all(b"*1\r\n$1\r\nab\r\n", 100),
            Err(ReqError::MissingCrlf)
        );
        assert_eq!(
            parse_all(b"*99999999999\r\n", 100),
            Err(ReqError::BadMultibulkLen)
        );
        assert_eq!(
            parse_all(b"*1\r\n$999999999999\r\n", 100),
            Err(ReqError::BadBulkLen)
        );
        assert_eq!(parse_all(b"*01\r\n", 100), Err(ReqError::BadMultibulkLen));
        assert_eq!(
            parse_all(b"*1\r\n$04\r\nPING\r\n", 100),
            Err(ReqError::BadBulkLen)
        );
        assert_eq!(
            parse_all(b"*-99999999999999999999\r\n", 100),
            Err(ReqError::BadMultibulkLen)
        );
        for e in [ReqError::UnbalancedQuotes, ReqError::InlineTooBig] {
            assert!(e.message().starts_with("Protocol error: "));
        }
    }

    #[test]
    fn empty_requests_are_skipped() {
        let input = b"*0\r\n*-1\r\n*-12345\r\n\r\n\n \t \r\n*1\r\n$4\r\nPING\r\n";
        let got = parse_every(input).unwrap();
        let ends: Vec<u64> = got.iter().map(|p| p.2).collect();
        assert_eq!(ends, [4, 9, 18, 20, 21, 26, 40]);
        assert!(got[..6].iter().all(|p| p.0.is_empty() && p.1.is_empty()));
        assert_eq!(got[6].0, b"ping");
    }

    #[test]
    fn inline_words() {
        assert_eq!(words(b"GET k\r\n").unwrap(), w(&["GET", "k"]));
        assert_eq!(words(b"get k\n").unwrap(), w(&["get", "k"]));
        assert_eq!(words(b"  set\t k  v \r\n").unwrap(), w(&["set", "k", "v"]));
        // Quotes, escapes, empty words, quotes opening mid-word.
        assert_eq!(
            words(b"set \"a b\" 'c d' \"\" ''\r\n").unwrap(),
            w(&["set", "a b", "c d", "", ""])
        );
        assert_eq!(
            words(b"x \"\\n\\r\\t\\b\\a\\\\\\\"\\q\"\n").unwrap(),
            w(&["x", "\n\r\t\x08\x07\\\"q"])
        );
        assert_eq!(
            words(b"x \"\\x41\\x4a\\xff\\x4\\xZZ\\x\"\n").unwrap(),
            vec![b"x".to_vec(), b"AJ\xffx4xZZx".to_vec()]
        );
        assert_eq!(
            words(b"x 'it\\'s \\n' a\"b c\"d\"\"\r\n"),
            Err(ReqError::UnbalancedQuotes)
        );
        assert_eq!(
            words(b"x 'it\\'s \\n' a\"b c\" d'e'\r\n").unwrap(),
            w(&["x", "it's \\n", "ab c", "de"])
        );
        // \v and \f separate words but do not end a bare one.
        assert_eq!(
            words(b"\x0bx\x0c a\x0bb\r\n").unwrap(),
            w(&["x\x0c", "a\x0bb"])
        );
        // CR: stripped before the LF, a separator between bare words,
        // literal inside quotes.
        assert_eq!(words(b"a\rb\r\r\n").unwrap(), w(&["a", "b"]));
        assert_eq!(words(b"\"a\rb\" '\r'\r\n").unwrap(), w(&["a\rb", "\r"]));
        assert_eq!(words(b"\"a\\\rb\"\n").unwrap(), w(&["a\rb"]));
        // A NUL ends the words (redis reads a C string) but not the line.
        let got = parse_every(b"get k\0ignored\r\nPING\r\n").unwrap();
        assert_eq!(got[0].1, w(&["get", "k"]));
        assert_eq!(got[1].1, w(&["PING"]));
        assert_eq!(words(b"\"a\"\0x\n").unwrap(), w(&["a"]));
        assert_eq!(words(b"\0 x\n").unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn inline_errors_at_the_line_end() {
        for line in [
            &b"get \"k\r\n"[..],
            b"get 'k\n",
            b"get \"k\"x\n",
            b"get 'k'x\n",
            b"get \"k\\\"\n",
            b"get \"k\\\r\n",
            b"get \"k\r\r\n",
            b"get 'k\\\n",
            b"get \"\0\"\n",
            b"get '\0'\n",
            b"get \"\\x4\r\n",
        ] {
            assert_eq!(
                words(line),
                Err(ReqError::UnbalancedQuotes),
                "{:?}",
                String::from_utf8_lossy(line)
            );
            // Without its LF the line just waits, as redis does.
            let open = &line[..line.len() - 1];
            let mut p = ReqParser::new();
            assert_eq!(p.feed(open, 0), (open.len(), Progress::Incomplete));
        }
        // The error is reported at the LF: requests before it complete.
        let got = parse_all(b"PING\r\nget \"k\r\n", 3);
        assert_eq!(got, Err(ReqError::UnbalancedQuotes));
        let mut p = ReqParser::new();
        assert_eq!(p.feed(b"PING\r\nget \"", 0), (6, Progress::Complete(6)));
    }

    #[test]
    fn inline_resp_form() {
        let mut p = ReqParser::new();
        let line = b"MGET a \"b c\" '\\x41'\r\n";
        assert_eq!(p.feed(line, 100), (line.len(), Progress::Complete(121)));
        assert!(p.is_inline());
        assert_eq!(p.start, 100);
        assert_eq!(p.name(), b"mget");
        assert_eq!(p.command(), Some(Cmd::Mget));
        let resp = p.inline_resp().to_vec();
        assert_eq!(
            resp,
            b"*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$3\r\nb c\r\n$4\r\n\\x41\r\n"
        );
        // The RESP form parses alone to the same arguments.
        let args = p.args.clone();
        let mut q = ReqParser::new();
        assert_eq!(
            q.feed(&resp, 0),
            (resp.len(), Progress::Complete(resp.len() as u64))
        );
        assert!(!q.is_inline());
        assert_eq!(q.args, args);
        assert_eq!(args[2].end() as usize, resp.len() - 10);
        // reset forgets the inline request.
        p.reset();
        assert!(!p.is_inline() && p.inline_resp().is_empty());
        assert_eq!(p.feed(b"*1\r\n$4\r\nPING\r\n", 0).1, Progress::Complete(14));
        assert!(!p.is_inline());
    }

    #[test]
    fn inline_length_limit() {
        let max = INLINE_MAX as usize;
        // Exactly INLINE_MAX bytes before the LF is fine.
        let mut ok = b"ECHO ".to_vec();
        ok.resize(max, b'x');
        ok.push(b'\n');
        for cuts in [ok.len(), 1000, 16384, 7] {
            let got = parse_all(&ok, cuts).unwrap();
            assert_eq!(got[0].1[1].len(), max - 5);
        }
        // One more byte without a LF is refused at that byte.
        let mut long = ok.clone();
        long.pop();
        long.push(b'x');
        for step in [long.len(), 1000, 16384, 7] {
            assert_eq!(parse_all(&long, step), Err(ReqError::InlineTooBig));
        }
        let mut p = ReqParser::new();
        assert_eq!(
            p.feed(&long, 0),
            (max, Progress::Error(ReqError::InlineTooBig))
        );
        // A blank line too.
        let blank = vec![b' '; max + 1];
        assert_eq!(parse_all(&blank, 4096), Err(ReqError::InlineTooBig));
    }

    #[test]
    fn long_names_are_unknown() {
        let name = "x".repeat(100);
        let input = format!("*1\r\n${}\r\n{}\r\n", name.len(), name);
        let mut p = ReqParser::new();
        let (_, prog) = p.feed(input.as_bytes(), 0);
        assert!(matches!(prog, Progress::Complete(_)));
        assert_eq!(p.command(), None);
        p.reset();
        let (_, prog) = p.feed(format!("{name} k\r\n").as_bytes(), 0);
        assert!(matches!(prog, Progress::Complete(_)));
        assert_eq!(p.command(), None);
        assert_eq!(p.name().len(), NAME_MAX);
    }
}
