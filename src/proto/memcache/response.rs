//! Incremental parser of memcached ASCII replies (docs/compatibility.md §8.1, §8.2).
//!
//! Like the request parser it does no I/O and copies nothing but the first
//! word of each line: it reports the reply's kind and, for a get/gets
//! reply, where each `VALUE` block and its key lie (absolute offsets), so
//! the proxy can match blocks to requested keys and reassemble multi-gets.
//! Key bytes may span mbufs, hence offsets rather than bytes.
//!
//! Anything that is not a reply memcached sends is a protocol error: the
//! proxy then closes the server connection.

use super::request::{MAX_DATA, MAX_KEY};

/// VALUE block slots kept between replies.
const KEEP_VALUES: usize = 1024;

/// Longest reply line (CRLF included). Memcached's own lines are short;
/// the widest is a VALUE header with a 250-byte key.
pub const MAX_LINE: u64 = 4096;
/// Longest first word ("CLIENT_ERROR", "SERVER_ERROR").
const WORD_MAX: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McRspKind {
    /// `VALUE` blocks then `END` (a bare `END` is a miss).
    Values,
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    Touched,
    /// The new value after incr/decr.
    Number,
    Error,
    ClientError,
    ServerError,
    Version,
    Ok,
    /// A one-line meta reply (`EN`, `HD`, `NF`, `NS`, `EX`, flags after):
    /// only the proxy's own key moves send meta commands (`migrate.rs`).
    Meta,
    /// Meta `VA <len> <flags>` then the value block.
    MetaValue,
    /// `lru_crawler metadump`: `key=...` lines, then `END`.
    Dump,
}

/// One `VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McValue {
    /// Offset of the `V` of `VALUE`.
    pub start: u64,
    /// Offset just past the data's `\r\n`.
    pub end: u64,
    pub key_start: u64,
    pub key_len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Incomplete,
    /// A whole reply ends at this absolute offset (exclusive).
    Complete(u64),
    /// The server sent something that is not a memcached reply.
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No byte of the next reply seen yet.
    Idle,
    /// First byte of a line (of a reply, or the next line of a get reply).
    LineStart,
    Word,
    Number,
    /// Optional spaces, then `\r`.
    Crlf,
    /// Free text up to `\r` (error messages, version).
    Text,
    LineLf,
    /// Between the tokens of a VALUE line.
    ValSpaces,
    ValKey,
    ValNum,
    /// The length of a meta `VA` line.
    MetaLen,
    Data,
    DataCr,
    DataLf,
}

/// Resumable parser state for one server connection.
#[derive(Debug)]
pub struct McRspParser {
    state: State,
    line_begin: u64,
    word: [u8; WORD_MAX],
    word_len: usize,
    num: u64,
    /// Tokens of the current VALUE line finished so far (key, flags,
    /// bytes, cas).
    vtok: usize,
    /// The line being read is a VALUE header (a data block follows).
    value_line: bool,
    /// The value block being read is a meta `VA`'s: the reply ends with it.
    meta_value: bool,
    /// The line being read is a metadump line: another line follows.
    dump_line: bool,
    cur: McValue,
    remaining: u64,
    pub start: u64,
    pub kind: McRspKind,
    /// VALUE blocks of a get/gets reply, in arrival order.
    pub values: Vec<McValue>,
    /// Values: offset of the `END\r\n` line.
    pub end_line: u64,
}

impl Default for McRspParser {
    fn default() -> Self {
        McRspParser {
            state: State::Idle,
            line_begin: 0,
            word: [0; WORD_MAX],
            word_len: 0,
            num: 0,
            vtok: 0,
            value_line: false,
            meta_value: false,
            dump_line: false,
            cur: McValue {
                start: 0,
                end: 0,
                key_start: 0,
                key_len: 0,
            },
            remaining: 0,
            start: 0,
            kind: McRspKind::Values,
            values: Vec::new(),
            end_line: 0,
        }
    }
}

impl McRspParser {
    pub fn new() -> McRspParser {
        McRspParser::default()
    }

    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.values.clear();
        // A huge multi-get reply must not pin its block positions for good.
        if self.values.capacity() > KEEP_VALUES {
            self.values.shrink_to(KEEP_VALUES);
        }
    }

    /// True when no byte of a next reply has been seen.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// Feeds `data`, which starts at absolute stream offset `base`. Returns
    /// how many bytes were consumed: on `Complete` the rest belongs to the
    /// next reply and must be fed again after [`reset`](Self::reset).
    pub fn feed(&mut self, data: &[u8], base: u64) -> (usize, Progress) {
        let mut i = 0;
        while i < data.len() {
            let Some(&c) = data.get(i) else {
                break;
            };
            let pos = base + i as u64;
            let room = MAX_LINE.saturating_sub(pos.saturating_sub(self.line_begin));
            if room == 0 && self.in_line() {
                return (i, Progress::Error);
            }
            let room = usize::try_from(room).unwrap_or(usize::MAX);
            let step = match self.state {
                State::Idle => {
                    self.start = pos;
                    self.values.clear();
                    self.kind = McRspKind::Values;
                    self.end_line = 0;
                    self.state = State::LineStart;
                    continue;
                }
                State::LineStart => {
                    self.line_begin = pos;
                    self.word_len = 0;
                    self.value_line = false;
                    self.meta_value = false;
                    self.num = 0;
                    // A metadump line (`key=...`): first, or after another.
                    if c == b'k'
                        && self.values.is_empty()
                        && (pos == self.start || self.kind == McRspKind::Dump)
                    {
                        self.kind = McRspKind::Dump;
                        self.dump_line = true;
                        self.state = State::Text;
                        continue;
                    }
                    // Only a reply's first line may be a number; within
                    // a get reply only VALUE and END may follow.
                    self.state = if c.is_ascii_digit() && self.values.is_empty() {
                        State::Number
                    } else {
                        State::Word
                    };
                    continue;
                }
                State::Word => self.word_byte(c),
                State::Number => {
                    if c.is_ascii_digit() {
                        self.push_digit(c, u64::MAX).map(|()| 1)
                    } else {
                        self.kind = McRspKind::Number;
                        self.state = State::Crlf;
                        continue;
                    }
                }
                State::Crlf => match c {
                    b' ' => Some(1),
                    b'\r' => {
                        self.state = State::LineLf;
                        Some(1)
                    }
                    _ => None,
                },
                State::Text => {
                    let rest = data.get(i..).unwrap_or_default();
                    let win = rest.get(..rest.len().min(room)).unwrap_or_default();
                    // Metadump lines end with a bare `\n`.
                    let stop = if self.dump_line { b'\n' } else { b'\r' };
                    match win.iter().position(|&b| b == stop) {
                        Some(n) if self.dump_line => {
                            self.dump_line = false;
                            self.state = State::LineStart;
                            Some(n + 1)
                        }
                        Some(n) => {
                            self.state = State::LineLf;
                            Some(n + 1)
                        }
                        None => Some(win.len()),
                    }
                }
                State::LineLf => {
                    if c != b'\n' {
                        return (i, Progress::Error);
                    }
                    if !self.value_line {
                        self.state = State::Idle;
                        return (i + 1, Progress::Complete(pos + 1));
                    } else {
                        self.state = if self.remaining == 0 {
                            State::DataCr
                        } else {
                            State::Data
                        };
                        Some(1)
                    }
                }
                State::MetaLen => {
                    if c.is_ascii_digit() {
                        self.push_digit(c, MAX_DATA).map(|()| 1)
                    } else if c == b' ' || c == b'\r' {
                        // The flags after the length are free text.
                        self.remaining = self.num;
                        self.value_line = true;
                        self.meta_value = true;
                        self.state = State::Text;
                        continue;
                    } else {
                        None
                    }
                }

                State::ValSpaces => match c {
                    b' ' => {
                        let rest = data.get(i..).unwrap_or_default();
                        let win = rest.get(..rest.len().min(room)).unwrap_or_default();
                        Some(win.iter().position(|&b| b != b' ').unwrap_or(win.len()))
                    }
                    // Key, flags and bytes are required; cas is optional.
                    b'\r' if self.vtok >= 3 => {
                        self.value_line = true;
                        self.state = State::LineLf;
                        Some(1)
                    }
                    b'\r' => None,
                    _ => {
                        self.num = 0;
                        self.state = match self.vtok {
                            0 => {
                                self.cur.key_start = pos;
                                self.cur.key_len = 0;
                                State::ValKey
                            }
                            1..=3 => State::ValNum,
                            _ => return (i, Progress::Error),
                        };
                        continue;
                    }
                },
                // A CR is a key byte, as memcached takes it in a request
                // (a VALUE line goes on after its key, so the key never
                // ends the line); a bare LF would have ended the line.
                State::ValKey => {
                    if c == b' ' {
                        self.vtok = 1;
                        self.state = State::ValSpaces;
                        Some(1)
                    } else if c == b'\n' {
                        None
                    } else {
                        let rest = data.get(i..).unwrap_or_default();
                        let have = self.cur.key_len as usize;
                        let win = rest
                            .get(..rest.len().min(room).min(MAX_KEY + 1 - have))
                            .unwrap_or_default();
                        let n = win
                            .iter()
                            .position(|&b| b == b' ' || b == b'\n')
                            .unwrap_or(win.len());
                        if have + n > MAX_KEY {
                            // At the first byte past the limit, the same
                            // wherever the input was cut.
                            return (i + MAX_KEY - have, Progress::Error);
                        }
                        // At most MAX_KEY, so the cast is exact.
                        self.cur.key_len += n as u32;
                        Some(n)
                    }
                }
                State::ValNum => {
                    if c.is_ascii_digit() {
                        let max = match self.vtok {
                            1 => u64::from(u32::MAX),
                            2 => MAX_DATA,
                            _ => u64::MAX,
                        };
                        self.push_digit(c, max).map(|()| 1)
                    } else if c == b' ' || c == b'\r' {
                        if self.vtok == 2 {
                            self.remaining = self.num;
                        }
                        self.vtok += 1;
                        self.state = State::ValSpaces;
                        continue;
                    } else {
                        None
                    }
                }
                State::Data => {
                    let n = ((data.len() - i) as u64).min(self.remaining) as usize;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    Some(n)
                }
                State::DataCr => {
                    if c != b'\r' {
                        return (i, Progress::Error);
                    }
                    self.state = State::DataLf;
                    Some(1)
                }
                State::DataLf => {
                    if c != b'\n' {
                        return (i, Progress::Error);
                    }
                    if self.meta_value {
                        self.state = State::Idle;
                        return (i + 1, Progress::Complete(pos + 1));
                    }
                    self.cur.end = pos + 1;
                    self.values.push(self.cur);
                    self.state = State::LineStart;
                    Some(1)
                }
            };
            match step {
                Some(n) => i += n,
                None => return (i, Progress::Error),
            }
        }
        (i, Progress::Incomplete)
    }

    /// States where the bytes belong to a reply line.
    fn in_line(&self) -> bool {
        !matches!(
            self.state,
            State::Idle | State::LineStart | State::Data | State::DataCr | State::DataLf
        )
    }

    fn push_digit(&mut self, c: u8, max: u64) -> Option<()> {
        self.num = self
            .num
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
            .filter(|&v| v <= max)?;
        Some(())
    }

    /// One byte of a line's first word; at its end, decides the kind.
    fn word_byte(&mut self, c: u8) -> Option<usize> {
        if c.is_ascii_uppercase() || c == b'_' {
            *self.word.get_mut(self.word_len)? = c;
            self.word_len += 1;
            return Some(1);
        }
        if c != b' ' && c != b'\r' {
            return None;
        }
        let word = self.word.get(..self.word_len)?;
        let in_values = !self.values.is_empty();
        if word == b"VALUE" {
            if c != b' ' {
                return None;
            }
            self.kind = McRspKind::Values;
            self.cur.start = self.line_begin;
            self.vtok = 0;
            self.state = State::ValSpaces;
            return Some(1);
        }
        if word == b"VA" && !in_values && self.kind != McRspKind::Dump {
            if c != b' ' {
                return None;
            }
            self.kind = McRspKind::MetaValue;
            self.num = 0;
            self.state = State::MetaLen;
            return Some(1);
        }
        if word == b"END" {
            if self.kind != McRspKind::Dump {
                self.kind = McRspKind::Values;
            }
            self.end_line = self.line_begin;
            self.state = State::Crlf;
            return Some(0);
        }
        if in_values || self.kind == McRspKind::Dump {
            return None;
        }
        let (kind, text) = match word {
            b"STORED" => (McRspKind::Stored, false),
            b"NOT_STORED" => (McRspKind::NotStored, false),
            b"EXISTS" => (McRspKind::Exists, false),
            b"NOT_FOUND" => (McRspKind::NotFound, false),
            b"DELETED" => (McRspKind::Deleted, false),
            b"TOUCHED" => (McRspKind::Touched, false),
            b"OK" => (McRspKind::Ok, false),
            b"ERROR" => (McRspKind::Error, true),
            b"CLIENT_ERROR" => (McRspKind::ClientError, true),
            b"SERVER_ERROR" => (McRspKind::ServerError, true),
            b"VERSION" => (McRspKind::Version, true),
            b"EN" | b"HD" | b"NF" | b"NS" | b"EX" => (McRspKind::Meta, true),
            // lru_crawler refusing while it crawls.
            b"BUSY" | b"BADCLASS" => (McRspKind::ServerError, true),
            _ => return None,
        };
        self.kind = kind;
        self.state = if text { State::Text } else { State::Crlf };
        // The terminator is read again by the new state.
        Some(0)
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

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Rsp {
        kind: McRspKind,
        start: u64,
        values: Vec<McValue>,
        keys: Vec<Vec<u8>>,
        end_line: u64,
        end: u64,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Tail {
        Idle,
        Partial,
        Error,
    }

    fn parse_cuts(input: &[u8], cuts: &[usize]) -> (Vec<Rsp>, Tail) {
        let mut p = McRspParser::new();
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
                        let keys = p
                            .values
                            .iter()
                            .map(|v| {
                                input[v.key_start as usize
                                    ..(v.key_start + u64::from(v.key_len)) as usize]
                                    .to_vec()
                            })
                            .collect();
                        out.push(Rsp {
                            kind: p.kind,
                            start: p.start,
                            values: p.values.clone(),
                            keys,
                            end_line: if p.kind == McRspKind::Values {
                                p.end_line
                            } else {
                                0
                            },
                            end,
                        });
                        p.reset();
                    }
                    Progress::Error => return (out, Tail::Error),
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

    /// Whole, split in two at every offset, and in 1-byte pieces: all agree.
    fn parse(input: &[u8]) -> (Vec<Rsp>, Tail) {
        let whole = parse_cuts(input, &[]);
        for k in 1..input.len() {
            assert_eq!(parse_cuts(input, &[k]), whole, "split at {k}");
        }
        let ones: Vec<usize> = (1..input.len()).collect();
        assert_eq!(parse_cuts(input, &ones), whole, "1-byte pieces");
        whole
    }

    fn one(input: &[u8]) -> Rsp {
        let (rsps, tail) = parse(input);
        assert_eq!(tail, Tail::Idle, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(rsps.len(), 1, "{:?}", String::from_utf8_lossy(input));
        rsps.into_iter().next().unwrap()
    }

    fn bad(input: &[u8]) {
        assert_eq!(
            parse(input).1,
            Tail::Error,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn meta_and_dump_replies_of_key_moves() {
        let r = one(b"VA 5 f3 t-1\r\nab\r\nc\r\n");
        assert_eq!(
            (r.kind, r.end, r.values.len()),
            (McRspKind::MetaValue, 20, 0)
        );
        assert_eq!(one(b"VA 0\r\n\r\n").kind, McRspKind::MetaValue);
        assert_eq!(one(b"EN\r\n").kind, McRspKind::Meta);
        assert_eq!(one(b"HD f1\r\n").kind, McRspKind::Meta);
        let d = one(b"key=a exp=-1 la=1\nkey=b%20c exp=3\nEND\r\n");
        assert_eq!((d.kind, d.end), (McRspKind::Dump, 39));
        assert_eq!(
            one(b"BUSY currently processing crawler request\r\n").kind,
            McRspKind::ServerError
        );
        // Two replies back to back: a dump, then a meta miss.
        let (rsps, tail) = parse(b"key=a\nEND\r\nEN\r\n");
        assert_eq!(tail, Tail::Idle);
        assert_eq!(rsps.len(), 2);
        bad(b"VA x\r\n");
        bad(b"VALUE a 0 1\r\nx\r\nkey=a\nEND\r\n");
        bad(b"key=a\nVA 1\r\nx\r\n");
    }

    #[test]
    fn single_lines() {
        use McRspKind::*;
        for (line, kind) in [
            (&b"STORED\r\n"[..], Stored),
            (b"NOT_STORED\r\n", NotStored),
            (b"EXISTS\r\n", Exists),
            (b"NOT_FOUND\r\n", NotFound),
            (b"DELETED\r\n", Deleted),
            (b"TOUCHED\r\n", Touched),
            (b"OK\r\n", Ok),
            (b"STORED \r\n", Stored),
            (b"0\r\n", Number),
            (b"18446744073709551615\r\n", Number),
            (b"42 \r\n", Number),
            (b"ERROR\r\n", Error),
            (b"ERROR unknown command\r\n", Error),
            (b"CLIENT_ERROR bad data chunk\r\n", ClientError),
            (
                b"SERVER_ERROR out of memory storing object\r\n",
                ServerError,
            ),
            (b"SERVER_ERROR a\nb\r\n", ServerError),
            (b"VERSION 1.6.18\r\n", Version),
            (b"VERSION\r\n", Version),
        ] {
            let r = one(line);
            assert_eq!(r.kind, kind, "{:?}", String::from_utf8_lossy(line));
            assert_eq!((r.start, r.end as usize), (0, line.len()));
            assert!(r.values.is_empty());
        }
    }

    #[test]
    fn values() {
        let r = one(b"END\r\n");
        assert_eq!((r.kind, r.end_line, r.end), (McRspKind::Values, 0, 5));
        assert!(r.values.is_empty());

        let input = b"VALUE foo 0 3\r\nbar\r\nVALUE k2 4294967295 5 12345\r\na\r\nbc\r\nVALUE e 1 0\r\n\r\nEND\r\n";
        let r = one(input);
        assert_eq!(r.kind, McRspKind::Values);
        assert_eq!(r.keys, [&b"foo"[..], b"k2", b"e"]);
        assert_eq!(
            r.values[0],
            McValue {
                start: 0,
                end: 20,
                key_start: 6,
                key_len: 3
            }
        );
        assert_eq!(r.values[1].start, 20);
        let v = r.values[1];
        assert_eq!(
            &input[v.start as usize..v.end as usize],
            b"VALUE k2 4294967295 5 12345\r\na\r\nbc\r\n"
        );
        assert_eq!(r.values[2].end, r.end_line);
        assert_eq!(&input[r.end_line as usize..], b"END\r\n");
        assert_eq!(r.end as usize, input.len());
    }

    #[test]
    fn pipeline() {
        let input = b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\nEND\r\n7\r\nDELETED\r\nVERSION 1.6\r\nSERVER_ERROR busy\r\n";
        let (rsps, tail) = parse(input);
        assert_eq!(tail, Tail::Idle);
        let kinds: Vec<McRspKind> = rsps.iter().map(|r| r.kind).collect();
        use McRspKind::*;
        assert_eq!(
            kinds,
            [
                Stored,
                Values,
                Values,
                Number,
                Deleted,
                Version,
                ServerError
            ]
        );
        assert_eq!(rsps[1].start, 8);
        assert_eq!(rsps[1].end_line, 24);
        assert_eq!(rsps[2].start, 29);
        assert_eq!(rsps[2].end_line, 29);
        for w in rsps.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
    }

    #[test]
    fn incomplete() {
        for input in [
            &b"STORED"[..],
            b"STORED\r",
            b"VALUE a 0 3\r\nab",
            b"VALUE a 0 1\r\nx\r\n",
            b"VALUE a 0 1\r\nx\r\nEN",
            b"1",
            b"ERROR x\n",
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
    fn errors() {
        for input in [
            &b"hello\r\n"[..],
            b"stored\r\n",
            b"STORED x\r\n",
            b"STOREDX\r\n",
            b"STORED\rX",
            b"STORED\n",
            b"FOO\r\n",
            b" STORED\r\n",
            b"\r\n",
            b"-1\r\n",
            b"18446744073709551616\r\n",
            b"12a\r\n",
            b"CLIENT_ERRORS x\r\n",
            b"VALUE\r\n",
            b"VALUE a\r\n",
            b"VALUE a 0\r\n",
            b"VALUE a x 1\r\n",
            b"VALUE a 0 1 2 3\r\n",
            b"VALUE a 4294967296 1\r\n",
            b"VALUE a 0 1073741825\r\n",
            b"VALUE a 0 1 18446744073709551616\r\n",
            b"VALUE a 0 1\r\nab\r\n",
            b"VALUE a 0 1\r\na\rX",
            b"VALUE a 0 1\r\na\r\nSTORED\r\n",
            b"VALUE a 0 1\r\na\r\n5\r\n",
            b"VALUE a 0 1\r\na\r\nEND x\r\n",
            b"\x81\x00",
        ] {
            bad(input);
        }
        // Replies before the bad one still complete.
        let (rsps, tail) = parse(b"STORED\r\nBOGUS\r\n");
        assert_eq!((rsps.len(), tail), (1, Tail::Error));
    }

    #[test]
    fn limits() {
        let k250 = "k".repeat(250);
        let r = one(format!("VALUE {k250} 0 1\r\nx\r\nEND\r\n").as_bytes());
        assert_eq!(r.values[0].key_len, 250);
        let k251 = "k".repeat(251);
        bad(format!("VALUE {k251} 0 1\r\nx\r\nEND\r\n").as_bytes());
        // A line without CRLF cannot grow forever.
        let long = format!("SERVER_ERROR {}", "x".repeat(MAX_LINE as usize));
        assert_eq!(parse_cuts(long.as_bytes(), &[100, 3000]).1, Tail::Error);
        let ok = format!("SERVER_ERROR {}\r\n", "x".repeat(MAX_LINE as usize - 15));
        assert_eq!(ok.len() as u64, MAX_LINE);
        assert_eq!(parse_cuts(ok.as_bytes(), &[100, 3000]).0.len(), 1);
    }

    #[test]
    fn big_value_in_mbuf_pieces() {
        let len = 1024 * 1024 + 3;
        let mut input = format!("VALUE big 7 {len} 99\r\n").into_bytes();
        let header = input.len();
        input.extend((0..len).map(|i| (i % 253) as u8));
        input.extend_from_slice(b"\r\nVALUE b 0 0\r\n\r\nEND\r\nSTORED\r\n");
        let cuts: Vec<usize> = (1..=input.len() / 16384).map(|n| n * 16384).collect();
        let (rsps, tail) = parse_cuts(&input, &cuts);
        assert_eq!(tail, Tail::Idle);
        assert_eq!(rsps.len(), 2);
        assert_eq!(rsps[0].keys, [&b"big"[..], b"b"]);
        assert_eq!(rsps[0].values[0].end as usize, header + len + 2);
        assert_eq!(rsps[1].kind, McRspKind::Stored);

        // The data block is skipped in one step per piece.
        let mut p = McRspParser::new();
        assert_eq!(
            p.feed(&input[..header + 1], 0),
            (header + 1, Progress::Incomplete)
        );
        let rest = &input[header + 1..header + len];
        assert_eq!(
            p.feed(rest, (header + 1) as u64),
            (rest.len(), Progress::Incomplete)
        );
    }

    /// Random soups of protocol fragments: never a panic, and every split
    /// parses like the whole.
    #[test]
    fn random_inputs_agree() {
        let frags: &[&[u8]] = &[
            &b"VALUE"[..],
            b"END",
            b"STORED",
            b"NOT_FOUND",
            b"ERROR",
            b"SERVER_ERROR",
            b"VERSION",
            b" ",
            b"  ",
            b"\r\n",
            b"\r",
            b"\n",
            b"k",
            b"0",
            b"1",
            b"3",
            b"12",
            b"-",
            b"x",
            b"\xff",
            b"abc",
            b"OK",
            b"STORED\r\n",
            b"VALUE k 0 1\r\nx\r\n",
            b"VALUE k 0 0 5\r\n\r\n",
            b"END\r\n",
            b"42\r\n",
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
