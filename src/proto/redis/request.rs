//! Incremental parser of redis requests (RESP multibulk only, docs/compatibility.md §7.1).
//!
//! The parser does no I/O and copies no payload: it is fed the bytes of a
//! connection's input stream piece by piece (each piece one mbuf's worth)
//! and records where every argument lies as absolute stream offsets. The
//! caller turns those offsets into mbuf segments. Only the command name is
//! copied (lower-cased, at most [`NAME_MAX`] bytes) to look it up.
//!
//! Work is linear in the bytes received: headers are scanned byte by byte,
//! argument data is skipped in one step, and a message that arrives in many
//! reads resumes where the last read stopped.

use super::command::Cmd;

/// Longest command name we look up; longer names are simply unknown.
pub const NAME_MAX: usize = 24;
/// Argument slots kept between requests.
const KEEP_ARGS: usize = 1024;
/// Redis' own limit on the number of items of one request.
pub const MAX_ARGS: u64 = 1024 * 1024;
/// Redis' default `proto-max-bulk-len`: the largest argument we accept.
pub const MAX_BULK: u64 = 512 * 1024 * 1024;

/// One argument: `start` is the offset of its `$`, `data` of its first data
/// byte; the item ends at `data + len + 2` (the CRLF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    pub start: u64,
    pub data: u64,
    pub len: u32,
}

impl Arg {
    /// Offset one past the item's trailing CRLF.
    pub fn end(&self) -> u64 {
        self.data + u64::from(self.len) + 2
    }
}

/// Why a request could not be parsed. The connection cannot be resynced
/// after any of these, so the proxy replies with the message and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqError {
    /// First byte of a request is not `*` (inline commands are not proxied).
    ExpectedStar(u8),
    BadMultibulkLen,
    ExpectedDollar(u8),
    BadBulkLen,
    /// Argument data not followed by CRLF.
    MissingCrlf,
}

impl ReqError {
    /// The text after `-ERR ` of the reply sent before closing.
    pub fn message(&self) -> String {
        match self {
            ReqError::ExpectedStar(c) => {
                format!(
                    "Protocol error: expected '*', got '{}'",
                    char::from(*c).escape_default()
                )
            }
            ReqError::BadMultibulkLen => "Protocol error: invalid multibulk length".into(),
            ReqError::ExpectedDollar(c) => {
                format!(
                    "Protocol error: expected '$', got '{}'",
                    char::from(*c).escape_default()
                )
            }
            ReqError::BadBulkLen => "Protocol error: invalid bulk length".into(),
            ReqError::MissingCrlf => "Protocol error: expected CRLF after argument".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All given bytes consumed; the request continues in later bytes.
    Incomplete,
    /// A whole request ends at this absolute offset (exclusive).
    Complete(u64),
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
}

/// Resumable parser state for one connection.
#[derive(Debug)]
pub struct ReqParser {
    state: State,
    /// Accumulator for the number being read (count or length).
    num: u64,
    digits: u32,
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
}

impl Default for ReqParser {
    fn default() -> Self {
        ReqParser {
            state: State::Start,
            num: 0,
            digits: 0,
            nargs: 0,
            remaining: 0,
            cur_start: 0,
            cur_data: 0,
            start: 0,
            args: Vec::new(),
            name: [0; NAME_MAX],
            name_len: 0,
        }
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
    }

    /// True when no byte of a next request has been seen.
    pub fn is_idle(&self) -> bool {
        self.state == State::Start
    }

    /// The lower-cased command name (cut at [`NAME_MAX`] bytes).
    pub fn name(&self) -> &[u8] {
        self.name
            .get(..self.name_len.min(NAME_MAX))
            .unwrap_or_default()
    }

    /// The command of a completed request, `None` if unknown.
    pub fn command(&self) -> Option<Cmd> {
        if self.name_len > NAME_MAX {
            return None;
        }
        Cmd::lookup(self.name())
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
            match self.state {
                State::Start => {
                    if c != b'*' {
                        return (i, Progress::Error(ReqError::ExpectedStar(c)));
                    }
                    self.start = pos;
                    self.args.clear();
                    self.name_len = 0;
                    self.begin_number();
                    self.state = State::Count;
                }
                State::Count => {
                    if c == b'\r' {
                        if self.digits == 0 || self.num == 0 {
                            return (i, Progress::Error(ReqError::BadMultibulkLen));
                        }
                        self.nargs = self.num;
                        self.state = State::CountLf;
                    } else if !self.push_digit(c, MAX_ARGS) {
                        return (i, Progress::Error(ReqError::BadMultibulkLen));
                    }
                }
                State::CountLf => {
                    if c != b'\n' {
                        return (i, Progress::Error(ReqError::BadMultibulkLen));
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
        self.num = self.num * 10 + u64::from(c - b'0');
        self.digits += 1;
        self.num <= max
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

    /// Parses `input` fed in pieces of `step` bytes; returns each complete
    /// request's (command name, args as byte strings, end) or the error.
    type Parsed = (Vec<u8>, Vec<Vec<u8>>, u64);

    fn parse_all(input: &[u8], step: usize) -> Result<Vec<Parsed>, ReqError> {
        let mut p = ReqParser::new();
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < input.len() {
            let limit = (pos + step).min(input.len());
            let (n, prog) = p.feed(&input[pos..limit], pos as u64);
            pos += n;
            match prog {
                Progress::Incomplete => {}
                Progress::Complete(end) => {
                    assert_eq!(end, pos as u64);
                    let args = p
                        .args
                        .iter()
                        .map(|a| input[a.data as usize..a.data as usize + a.len as usize].to_vec())
                        .collect();
                    out.push((p.name().to_vec(), args, end));
                    p.reset();
                }
                Progress::Error(e) => return Err(e),
            }
        }
        Ok(out)
    }

    #[test]
    fn whole_and_split_agree() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nget\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n";
        let whole = parse_all(input, input.len()).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].0, b"set");
        assert_eq!(whole[0].1[2], b"hello");
        assert_eq!(whole[1].1[1], b"");
        for step in 1..input.len() {
            assert_eq!(parse_all(input, step).unwrap(), whole, "step {step}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse_all(b"GET k\r\n", 100),
            Err(ReqError::ExpectedStar(b'G'))
        );
        assert_eq!(parse_all(b"*0\r\n", 100), Err(ReqError::BadMultibulkLen));
        assert_eq!(parse_all(b"*-1\r\n", 100), Err(ReqError::BadMultibulkLen));
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
    }

    #[test]
    fn long_names_are_unknown() {
        let name = "x".repeat(100);
        let input = format!("*1\r\n${}\r\n{}\r\n", name.len(), name);
        let mut p = ReqParser::new();
        let (_, prog) = p.feed(input.as_bytes(), 0);
        assert!(matches!(prog, Progress::Complete(_)));
        assert_eq!(p.command(), None);
    }
}
