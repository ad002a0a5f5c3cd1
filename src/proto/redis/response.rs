//! Incremental parser of redis replies: every RESP2 type and every RESP3
//! type a redis 7 server sends to a RESP3 client.
//!
//! Like the request parser it does no I/O and copies nothing but small
//! facts the proxy needs: the reply's type, the value of a top-level
//! integer (to sum DEL fragments), the first bytes of an error (to spot
//! -OOM/-BUSY/-LOADING), and where each top-level aggregate element lies
//! (to reassemble MGET in request order).
//!
//! RESP3 adds line types (`_` null, `#` boolean, `,` double, `(` big
//! number), length-prefixed ones (`!` blob error, `=` verbatim string) and
//! aggregates (`%` map of n pairs, `~` set, `>` push, `|` attribute). An
//! attribute is not a value: it annotates the value after it, at any
//! depth, and belongs to it (a top-level reply starts at its attribute; an
//! element includes the attribute before it). A top-level push is
//! out-of-band data, not the answer to a request: it is reported as
//! [`Progress::Push`]. Streamed strings and aggregates (`$?`, `*?`) are
//! not sent by redis and are refused. Nesting of every aggregate kind,
//! attributes included, is bounded by [`MAX_DEPTH`], sizes by
//! [`MAX_BULK`] and [`MAX_ELEMS`]. RESP2 input takes the same path as
//! before: the new types only add arms to the type dispatch.

/// Element slots kept between replies.
const KEEP_ELEMS: usize = 1024;
/// Deepest aggregate nesting accepted from a backend.
pub const MAX_DEPTH: usize = 512;
/// Bounds on announced sizes, as redis' own client protocol limits.
pub const MAX_BULK: i64 = 512 * 1024 * 1024;
/// The most elements an aggregate may announce: 128 Mi, two orders of
/// magnitude above the most items a request may have (1 Mi), and as many
/// as the smallest elements (`:1\r\n`) fit in the reply size limit the
/// proxy applies (1 GiB, `server.rs`). A backend announcing more
/// (`*2147483647`) is failed at once instead of being read for gigabytes.
pub const MAX_ELEMS: i64 = 128 * 1024 * 1024;
/// Bytes of an error/status line kept for inspection.
pub const PREFIX_MAX: usize = 16;

/// The type of a whole reply (of the value after a leading attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RspKind {
    Status,
    Error,
    Integer,
    Bulk,
    Array,
    /// RESP3 `_`.
    Null,
    /// RESP3 `#t` / `#f`.
    Boolean,
    /// RESP3 `,`.
    Double,
    /// RESP3 `(`.
    BigNumber,
    /// RESP3 `!<len>`: an error as a bulk string.
    BlobError,
    /// RESP3 `=<len>`: `txt:` or `mkd:` then the text.
    Verbatim,
    /// RESP3 `%<n>`: n key/value pairs (2n elements).
    Map,
    /// RESP3 `~<n>`.
    Set,
    /// RESP3 `><n>`: out-of-band (pub/sub, invalidation); see
    /// [`Progress::Push`].
    Push,
}

impl RspKind {
    /// The kind announced by a type byte (`|` is not a kind of its own).
    fn of(c: u8) -> Option<RspKind> {
        Some(match c {
            b'+' => RspKind::Status,
            b'-' => RspKind::Error,
            b':' => RspKind::Integer,
            b'$' => RspKind::Bulk,
            b'*' => RspKind::Array,
            b'_' => RspKind::Null,
            b'#' => RspKind::Boolean,
            b',' => RspKind::Double,
            b'(' => RspKind::BigNumber,
            b'!' => RspKind::BlobError,
            b'=' => RspKind::Verbatim,
            b'%' => RspKind::Map,
            b'~' => RspKind::Set,
            b'>' => RspKind::Push,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Incomplete,
    /// A reply ends at this offset (exclusive).
    Complete(u64),
    /// A top-level push frame ends at this offset: data the server sent
    /// on its own, to be consumed without answering any request.
    Push(u64),
    /// The backend sent something that is not RESP.
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Type,
    Line,
    LineLf,
    Len,
    LenLf,
    Data,
    DataCr,
    DataLf,
}

/// One open aggregate: values still to come, and whether it is an
/// attribute (whose values are not elements of anything).
#[derive(Debug, Clone, Copy)]
struct Frame {
    left: i64,
    attr: bool,
}

#[derive(Debug)]
pub struct RspParser {
    state: State,
    /// Type byte of the value being read (any depth).
    cur: u8,
    neg: bool,
    num: i64,
    digits: u32,
    remaining: u64,
    /// Open aggregates, innermost last.
    stack: Vec<Frame>,
    /// An attribute just ended: the value it annotates comes next and
    /// keeps the attribute's start.
    after_attr: bool,
    elem_start: u64,
    pub start: u64,
    pub kind: RspKind,
    /// Value of a top-level integer reply, if it was a valid number.
    pub integer: Option<i64>,
    /// Announced size of a top-level aggregate (-1: null array; pairs for
    /// a map).
    pub count: i64,
    /// Top-level aggregate elements as (start, end) offsets (2n for a map:
    /// keys and values alternate).
    pub elems: Vec<(u64, u64)>,
    /// Record `elems`: only a fragment's reply is taken apart, and an
    /// unsplit reply of millions of elements should cost its bytes, not 16
    /// more per element.
    pub want_elems: bool,
    /// The most elements the top-level aggregate may announce (a
    /// fragment's reply has one per key asked); more is refused as
    /// [`Progress::Error`].
    pub max_count: i64,
    prefix: [u8; PREFIX_MAX],
    prefix_len: usize,
    line_ok: bool,
}

impl Default for RspParser {
    fn default() -> Self {
        RspParser {
            state: State::Type,
            cur: 0,
            neg: false,
            num: 0,
            digits: 0,
            remaining: 0,
            stack: Vec::new(),
            after_attr: false,
            elem_start: 0,
            start: 0,
            kind: RspKind::Status,
            integer: None,
            count: 0,
            elems: Vec::new(),
            want_elems: true,
            max_count: MAX_ELEMS,
            prefix: [0; PREFIX_MAX],
            prefix_len: 0,
            line_ok: true,
        }
    }
}

impl RspParser {
    pub fn new() -> RspParser {
        RspParser::default()
    }

    pub fn reset(&mut self) {
        self.state = State::Type;
        self.stack.clear();
        self.after_attr = false;
        self.elems.clear();
        // A huge array reply must not pin its element positions for good.
        if self.elems.capacity() > KEEP_ELEMS {
            self.elems.shrink_to(KEEP_ELEMS);
        }
    }

    pub fn is_idle(&self) -> bool {
        self.state == State::Type && self.stack.is_empty() && !self.after_attr
    }

    /// The first bytes of a top-level status or error line (without `-`).
    pub fn prefix(&self) -> &[u8] {
        self.prefix.get(..self.prefix_len).unwrap_or_default()
    }

    /// A top-level error that 0.5.0 treats as a server failure (docs/compatibility.md §7.6).
    pub fn is_transient_error(&self) -> bool {
        if self.kind != RspKind::Error {
            return false;
        }
        let p = self.prefix();
        [&b"OOM"[..], b"BUSY", b"LOADING"]
            .iter()
            .any(|w| p.starts_with(w) && p.get(w.len()).is_none_or(|&b| b == b' '))
    }

    fn top(&self) -> bool {
        self.stack.is_empty()
    }

    pub fn feed(&mut self, data: &[u8], base: u64) -> (usize, Progress) {
        let mut i = 0;
        while i < data.len() {
            let Some(&c) = data.get(i) else {
                break;
            };
            let pos = base + i as u64;
            match self.state {
                State::Type => {
                    let kind = RspKind::of(c);
                    if kind.is_none() && c != b'|' {
                        return (i, Progress::Error);
                    }
                    if self.top() {
                        if !self.after_attr {
                            self.start = pos;
                        }
                        self.elems.clear();
                        self.integer = None;
                        self.count = 0;
                        self.prefix_len = 0;
                        self.line_ok = true;
                        if let Some(k) = kind {
                            self.kind = k;
                        }
                    } else if self.stack.len() == 1
                        && !self.after_attr
                        && self.stack.first().is_some_and(|f| !f.attr)
                    {
                        self.elem_start = pos;
                    }
                    self.after_attr = false;
                    self.cur = c;
                    self.neg = false;
                    self.num = 0;
                    self.digits = 0;
                    self.line_ok = true;
                    self.state = match c {
                        b'$' | b'*' | b'!' | b'=' | b'%' | b'~' | b'>' | b'|' => State::Len,
                        _ => State::Line,
                    };
                }
                State::Line => {
                    let rest = data.get(i..).unwrap_or_default();
                    let n = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
                    let line = rest.get(..n).unwrap_or_default();
                    if self.top() {
                        self.note_line(line);
                    }
                    match self.cur {
                        // Statuses and errors are taken as they come.
                        b'+' | b'-' => {}
                        // Integers are validated at any depth, kept at the
                        // top (in note_line).
                        b':' if self.top() => {}
                        b':' => {
                            for &b in line {
                                self.integer_digit(b);
                            }
                        }
                        _ => self.resp3_line(line),
                    }
                    i += n;
                    if n < rest.len() {
                        self.state = State::LineLf;
                        i += 1;
                    }
                    continue;
                }
                State::LineLf => {
                    if c != b'\n' {
                        return (i, Progress::Error);
                    }
                    if !self.line_done() {
                        return (i, Progress::Error);
                    }
                    if self.cur == b':' && self.top() {
                        self.integer = Some(if self.neg { -self.num } else { self.num });
                    }
                    if let Some(p) = self.value_done(pos + 1) {
                        return (i + 1, p);
                    }
                }
                State::Len => {
                    if c == b'\r' {
                        if self.digits == 0 && !self.neg {
                            return (i, Progress::Error);
                        }
                        self.state = State::LenLf;
                    } else if c == b'-' && self.digits == 0 && !self.neg {
                        self.neg = true;
                    } else if c.is_ascii_digit() {
                        self.num = self.num * 10 + i64::from(c - b'0');
                        self.digits += 1;
                        let max = match self.cur {
                            b'$' | b'!' | b'=' => MAX_BULK,
                            _ => MAX_ELEMS,
                        };
                        if self.num > max {
                            return (i, Progress::Error);
                        }
                    } else {
                        return (i, Progress::Error);
                    }
                }
                State::LenLf => {
                    if c != b'\n' {
                        return (i, Progress::Error);
                    }
                    // Only RESP2's null bulk and null array are negative.
                    if self.neg
                        && !(self.num == 1 && self.digits == 1 && matches!(self.cur, b'$' | b'*'))
                    {
                        return (i, Progress::Error);
                    }
                    let n = if self.neg { -1 } else { self.num };
                    match self.cur {
                        b'$' | b'!' | b'=' => {
                            if n < 0 {
                                if let Some(p) = self.value_done(pos + 1) {
                                    return (i + 1, p);
                                }
                            } else {
                                self.remaining = n as u64;
                                self.state = if n == 0 { State::DataCr } else { State::Data };
                            }
                        }
                        agg => {
                            let attr = agg == b'|';
                            if self.top() && !attr {
                                if n > self.max_count {
                                    return (i, Progress::Error);
                                }
                                self.count = n;
                            }
                            // Maps and attributes hold n pairs.
                            let values = if matches!(agg, b'%' | b'|') { 2 * n } else { n };
                            if values > 0 {
                                if self.stack.len() >= MAX_DEPTH {
                                    return (i, Progress::Error);
                                }
                                self.stack.push(Frame { left: values, attr });
                                self.state = State::Type;
                            } else if attr {
                                // An empty attribute still annotates what
                                // follows.
                                self.state = State::Type;
                                self.after_attr = true;
                            } else if let Some(p) = self.value_done(pos + 1) {
                                return (i + 1, p);
                            }
                        }
                    }
                }
                State::Data => {
                    let n = ((data.len() - i) as u64).min(self.remaining) as usize;
                    self.remaining -= n as u64;
                    i += n;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if c != b'\r' {
                        return (i, Progress::Error);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if c != b'\n' {
                        return (i, Progress::Error);
                    }
                    if let Some(p) = self.value_done(pos + 1) {
                        return (i + 1, p);
                    }
                }
            }
            i += 1;
        }
        (i, Progress::Incomplete)
    }

    fn note_line(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.prefix_len < PREFIX_MAX {
                if let Some(slot) = self.prefix.get_mut(self.prefix_len) {
                    *slot = b;
                }
                self.prefix_len += 1;
            }
            if self.cur == b':' {
                self.integer_digit(b);
            }
        }
    }

    /// Validates bytes of a RESP3 line value as they stream by (`digits`
    /// counts them).
    fn resp3_line(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let ok = match self.cur {
                b'#' => self.digits == 0 && (b == b't' || b == b'f'),
                b'(' => b.is_ascii_digit() || (b == b'-' && self.digits == 0 && !self.neg),
                // Digits, sign, point, exponent, `inf`, `nan`.
                b',' => b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'),
                _ => false,
            };
            if !ok {
                self.line_ok = false;
            }
            if b == b'-' && self.cur == b'(' && self.digits == 0 {
                self.neg = true;
            } else {
                self.digits = self.digits.saturating_add(1);
            }
        }
    }

    /// The line of the current value is whole: is it valid for its type?
    fn line_done(&self) -> bool {
        match self.cur {
            b':' | b'(' | b'#' | b',' => self.line_ok && self.digits > 0,
            b'_' => self.digits == 0 && self.line_ok && !self.neg,
            _ => true,
        }
    }

    fn integer_digit(&mut self, b: u8) {
        if b == b'-' && self.digits == 0 && !self.neg {
            self.neg = true;
        } else if b.is_ascii_digit() {
            match self
                .num
                .checked_mul(10)
                .and_then(|v| v.checked_add(i64::from(b - b'0')))
            {
                Some(v) => self.num = v,
                None => self.line_ok = false,
            }
            self.digits += 1;
        } else {
            self.line_ok = false;
        }
    }

    /// A value ended at `end`; closes finished aggregates. Returns the
    /// outcome when the top-level value is complete.
    fn value_done(&mut self, end: u64) -> Option<Progress> {
        self.state = State::Type;
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Some(if self.kind == RspKind::Push {
                    Progress::Push(end)
                } else {
                    Progress::Complete(end)
                });
            };
            let attr = top.attr;
            top.left -= 1;
            let open = top.left > 0;
            if self.stack.len() == 1 && !attr && self.want_elems {
                self.elems.push((self.elem_start, end));
            }
            if open {
                return None;
            }
            self.stack.pop();
            if attr {
                // Not a value: the one it annotates comes next.
                self.after_attr = true;
                return None;
            }
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

    type Parsed = (RspKind, Option<i64>, i64, Vec<(u64, u64)>, u64);

    /// Every reply's start and end, and whether it was a push.
    fn frames(input: &[u8], step: usize) -> Result<Vec<(u64, u64, bool)>, usize> {
        let mut p = RspParser::new();
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < input.len() {
            let limit = (pos + step).min(input.len());
            let (n, prog) = p.feed(&input[pos..limit], pos as u64);
            pos += n;
            match prog {
                Progress::Incomplete => assert_eq!(pos, limit),
                Progress::Complete(end) | Progress::Push(end) => {
                    assert_eq!(end, pos as u64);
                    out.push((p.start, end, matches!(prog, Progress::Push(_))));
                    p.reset();
                }
                Progress::Error => return Err(pos),
            }
        }
        if !p.is_idle() {
            return Err(usize::MAX);
        }
        Ok(out)
    }

    /// Parses every reply whole and at every piece size; all must agree.
    fn every(input: &[u8]) -> Result<Vec<Parsed>, usize> {
        let whole = parse_all(input, input.len());
        for step in 1..input.len() {
            assert_eq!(parse_all(input, step), whole, "step {step}");
        }
        whole
    }

    fn parse_all(input: &[u8], step: usize) -> Result<Vec<Parsed>, usize> {
        let mut p = RspParser::new();
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < input.len() {
            let limit = (pos + step).min(input.len());
            let (n, prog) = p.feed(&input[pos..limit], pos as u64);
            pos += n;
            match prog {
                Progress::Incomplete => {}
                Progress::Complete(end) | Progress::Push(end) => {
                    assert_eq!(end, pos as u64);
                    assert_eq!(matches!(prog, Progress::Push(_)), p.kind == RspKind::Push);
                    out.push((p.kind, p.integer, p.count, p.elems.clone(), end));
                    p.reset();
                }
                Progress::Error => return Err(pos),
            }
        }
        if !p.is_idle() {
            return Err(usize::MAX);
        }
        Ok(out)
    }

    #[test]
    fn every_type_and_split() {
        let input: &[u8] =
            b"+OK\r\n-ERR bad thing\r\n:42\r\n:-7\r\n$5\r\nhello\r\n$-1\r\n$0\r\n\r\n*-1\r\n*0\r\n\
*3\r\n$1\r\na\r\n$-1\r\n*2\r\n:1\r\n*1\r\n+x\r\n";
        let whole = parse_all(input, input.len()).unwrap();
        assert_eq!(whole.len(), 10);
        assert_eq!(whole[2].1, Some(42));
        assert_eq!(whole[3].1, Some(-7));
        assert_eq!(whole[7].2, -1);
        let last = &whole[9];
        assert_eq!(last.0, RspKind::Array);
        assert_eq!(last.2, 3);
        assert_eq!(last.3.len(), 3);
        let (s, e) = last.3[2];
        assert_eq!(&input[s as usize..e as usize], b"*2\r\n:1\r\n*1\r\n+x\r\n");
        for step in 1..input.len() {
            assert_eq!(parse_all(input, step).unwrap(), whole, "step {step}");
        }
    }

    #[test]
    fn transient_errors() {
        for (line, want) in [
            (&b"-OOM command not allowed\r\n"[..], true),
            (b"-BUSY Redis is busy\r\n", true),
            (b"-LOADING loading\r\n", true),
            (b"-BUSYKEY exists\r\n", false),
            (b"-ERR x\r\n", false),
        ] {
            let mut p = RspParser::new();
            let (_, prog) = p.feed(line, 0);
            assert!(matches!(prog, Progress::Complete(_)));
            assert_eq!(
                p.is_transient_error(),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn announced_counts_are_bounded() {
        // More than any reply may announce: refused on the header.
        assert!(parse_all(b"*2147483647\r\n:1\r\n", 100).is_err());
        assert!(parse_all(format!("*{}\r\n", MAX_ELEMS + 1).as_bytes(), 100).is_err());
        // A fragment's reply may announce at most the keys it asked.
        let mut p = RspParser::new();
        p.max_count = 2;
        assert_eq!(p.feed(b"*3\r\n", 0).1, Progress::Error);
        let mut p = RspParser::new();
        p.max_count = 2;
        let (_, prog) = p.feed(b"*2\r\n:1\r\n:2\r\n", 0);
        assert_eq!(prog, Progress::Complete(12));
        assert_eq!(p.elems.len(), 2);
        // Elements are recorded only when asked for.
        let mut p = RspParser::new();
        p.want_elems = false;
        let (_, prog) = p.feed(b"*2\r\n:1\r\n:2\r\n", 0);
        assert_eq!(prog, Progress::Complete(12));
        assert!(p.elems.is_empty());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_all(b"hello\r\n", 100).is_err());
        assert!(parse_all(b":abc\r\n", 100).is_err());
        assert!(parse_all(b"$-2\r\n", 100).is_err());
        assert!(parse_all(b"$3\r\nabcd\r\n", 100).is_err());
    }

    #[test]
    fn resp3_scalars() {
        use RspKind::*;
        let input: &[u8] = b"_\r\n#t\r\n#f\r\n,3.14\r\n,-1e10\r\n,inf\r\n,-inf\r\n,nan\r\n\
(3492890328409238509324850943850943825024385\r\n(-1\r\n!21\r\nSYNTAX invalid syntax\r\n\
=15\r\ntxt:Some string\r\n!0\r\n\r\n";
        let got = every(input).unwrap();
        let kinds: Vec<RspKind> = got.iter().map(|p| p.0).collect();
        assert_eq!(
            kinds,
            [
                Null, Boolean, Boolean, Double, Double, Double, Double, Double, BigNumber,
                BigNumber, BlobError, Verbatim, BlobError
            ]
        );
        assert!(got
            .iter()
            .all(|p| p.1.is_none() && p.2 == 0 && p.3.is_empty()));
        for bad in [
            &b"_x\r\n"[..],
            b"#\r\n",
            b"#x\r\n",
            b"#tt\r\n",
            b",\r\n",
            b",1 2\r\n",
            b"(\r\n",
            b"(-\r\n",
            b"(--1\r\n",
            b"(1a\r\n",
            b"!-1\r\n",
            b"=-1\r\n",
            b"%-1\r\n",
            b"~-1\r\n",
            b">-1\r\n",
            b"|-1\r\n",
            b"$?\r\n",
            b"*?\r\n",
            b"!3\r\nabcd\r\n",
        ] {
            assert!(every(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn resp3_aggregates() {
        let input: &[u8] = b"%2\r\n+first\r\n:1\r\n$6\r\nsecond\r\n*2\r\n_\r\n#f\r\n\
~3\r\n+a\r\n,1.5\r\n%1\r\n+k\r\n+v\r\n%0\r\n~0\r\n";
        let got = every(input).unwrap();
        assert_eq!(got.len(), 4);
        let (kind, _, count, elems, end) = &got[0];
        assert_eq!((*kind, *count, elems.len()), (RspKind::Map, 2, 4));
        let (s, e) = elems[3];
        assert_eq!(&input[s as usize..e as usize], b"*2\r\n_\r\n#f\r\n");
        assert_eq!(e, *end);
        assert_eq!((got[1].0, got[1].2, got[1].3.len()), (RspKind::Set, 3, 3));
        assert_eq!((got[2].0, got[2].2, got[2].3.len()), (RspKind::Map, 0, 0));
        assert_eq!((got[3].0, got[3].2), (RspKind::Set, 0));
    }

    #[test]
    fn attributes_belong_to_the_value_after_them() {
        // A top-level attribute: the reply starts at it and has the kind
        // and elements of the value it annotates.
        let input: &[u8] =
            b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.19\r\n$1\r\nb\r\n,0.05\r\n\
*2\r\n:2039123\r\n:9543892\r\n\
*2\r\n|1\r\n+ttl\r\n:3600\r\n:1\r\n:2\r\n\
|0\r\n:7\r\n\
|1\r\n+a\r\n|1\r\n+b\r\n+c\r\n+d\r\n$1\r\nx\r\n";
        let got = every(input).unwrap();
        assert_eq!(got.len(), 4);
        let (kind, integer, count, elems, _) = &got[0];
        assert_eq!((*kind, *integer, *count), (RspKind::Array, None, 2));
        assert_eq!(elems.len(), 2);
        let (s, e) = elems[0];
        assert_eq!(&input[s as usize..e as usize], b":2039123\r\n");
        // An attribute before an element is part of that element.
        let (kind, _, count, elems, end) = &got[1];
        assert_eq!((*kind, *count), (RspKind::Array, 2));
        let (s, e) = elems[0];
        assert_eq!(
            &input[s as usize..e as usize],
            b"|1\r\n+ttl\r\n:3600\r\n:1\r\n"
        );
        assert_eq!(elems[1].1, *end);
        assert_eq!((got[2].0, got[2].1), (RspKind::Integer, Some(7)));
        assert_eq!(got[3].0, RspKind::Bulk);
        let starts: Vec<u64> = frames(input, input.len())
            .unwrap()
            .iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(starts[0], 0);
        assert_eq!(input[starts[2] as usize], b'|');
        // An attribute alone is not a reply yet.
        let mut p = RspParser::new();
        assert_eq!(p.feed(b"|1\r\n+a\r\n+b\r\n", 0), (12, Progress::Incomplete));
        assert!(!p.is_idle());
    }

    #[test]
    fn pushes_are_their_own_outcome() {
        let input: &[u8] = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n:1\r\n\
|1\r\n+a\r\n+b\r\n>2\r\n+invalidate\r\n*1\r\n$1\r\nk\r\n*1\r\n>1\r\n+x\r\n";
        let got = frames(input, input.len()).unwrap();
        let push: Vec<bool> = got.iter().map(|f| f.2).collect();
        // A push nested in an array is only an element.
        assert_eq!(push, [true, false, true, false]);
        for step in 1..input.len() {
            assert_eq!(frames(input, step).unwrap(), got, "step {step}");
        }
        let whole = every(input).unwrap();
        assert_eq!(
            (whole[0].0, whole[0].2, whole[0].3.len()),
            (RspKind::Push, 3, 3)
        );
    }

    #[test]
    fn nesting_is_bounded_for_every_aggregate() {
        for open in [&b"*1\r\n"[..], b"%1\r\n", b"~1\r\n", b">1\r\n", b"|1\r\n"] {
            let mut deep = open.repeat(MAX_DEPTH);
            deep.extend_from_slice(open);
            let mut p = RspParser::new();
            let (n, prog) = p.feed(&deep, 0);
            assert_eq!(prog, Progress::Error, "{:?}", String::from_utf8_lossy(open));
            assert_eq!(n, deep.len() - 1);
        }
        let mut ok = b"*1\r\n".repeat(MAX_DEPTH);
        ok.extend_from_slice(b"_\r\n");
        assert_eq!(frames(&ok, 4096).unwrap().len(), 1);
    }
}
