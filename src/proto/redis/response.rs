//! Incremental parser of redis replies (every RESP2 type, nested arrays).
//!
//! Like the request parser it does no I/O and copies nothing but small
//! facts the proxy needs: the reply's type, the value of a top-level
//! integer (to sum DEL fragments), the first bytes of an error (to spot
//! -OOM/-BUSY/-LOADING), and where each top-level array element lies (to
//! reassemble MGET in request order).

/// Element slots kept between replies.
const KEEP_ELEMS: usize = 1024;
/// Deepest array nesting accepted from a backend.
pub const MAX_DEPTH: usize = 512;
/// Bounds on announced sizes. A bulk as redis' own `proto-max-bulk-len`.
pub const MAX_BULK: i64 = 512 * 1024 * 1024;
/// The most elements an array may announce: 128 Mi, two orders of
/// magnitude above the most items a request may have (1 Mi), and as many
/// as the smallest elements (`:1\r\n`) fit in the reply size limit the
/// proxy applies (1 GiB, `server.rs`). A backend announcing more
/// (`*2147483647`) is failed at once instead of being read for gigabytes.
pub const MAX_ELEMS: i64 = 128 * 1024 * 1024;
/// Bytes of an error/status line kept for inspection.
pub const PREFIX_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RspKind {
    Status,
    Error,
    Integer,
    Bulk,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Incomplete,
    Complete(u64),
    /// The backend sent something that is not RESP2.
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

#[derive(Debug)]
pub struct RspParser {
    state: State,
    /// Type byte of the value being read (any depth).
    cur: u8,
    neg: bool,
    num: i64,
    digits: u32,
    remaining: u64,
    /// Remaining elements of each open array, innermost last.
    stack: Vec<i64>,
    elem_start: u64,
    pub start: u64,
    pub kind: RspKind,
    /// Value of a top-level integer reply, if it was a valid number.
    pub integer: Option<i64>,
    /// Element count of a top-level array (-1: null array).
    pub count: i64,
    /// Top-level array elements as (start, end) offsets, recorded only
    /// while [`want_elems`](Self::want_elems) is set: only a fragment's
    /// reply is taken apart, and an unsplit reply of millions of elements
    /// should cost its bytes, not 16 more per element.
    pub elems: Vec<(u64, u64)>,
    pub want_elems: bool,
    /// The most elements the top-level array may announce (a fragment's
    /// reply has one per key asked); more is refused as [`Progress::Error`].
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
        self.elems.clear();
        // A huge array reply must not pin its element positions for good.
        if self.elems.capacity() > KEEP_ELEMS {
            self.elems.shrink_to(KEEP_ELEMS);
        }
    }

    pub fn is_idle(&self) -> bool {
        self.state == State::Type && self.stack.is_empty()
    }

    /// The first bytes of a top-level status or error line (without `-`).
    pub fn prefix(&self) -> &[u8] {
        self.prefix.get(..self.prefix_len).unwrap_or_default()
    }

    /// A top-level error that 0.5.0 treats as a server failure (SPEC 6.6).
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
                    if self.top() {
                        self.start = pos;
                        self.elems.clear();
                        self.integer = None;
                        self.count = 0;
                        self.prefix_len = 0;
                        self.line_ok = true;
                        self.kind = match c {
                            b'+' => RspKind::Status,
                            b'-' => RspKind::Error,
                            b':' => RspKind::Integer,
                            b'$' => RspKind::Bulk,
                            b'*' => RspKind::Array,
                            _ => return (i, Progress::Error),
                        };
                    } else if self.stack.len() == 1 {
                        self.elem_start = pos;
                    }
                    self.cur = c;
                    self.neg = false;
                    self.num = 0;
                    self.digits = 0;
                    self.state = match c {
                        b'+' | b'-' | b':' => State::Line,
                        b'$' | b'*' => State::Len,
                        _ => return (i, Progress::Error),
                    };
                }
                State::Line => {
                    let rest = data.get(i..).unwrap_or_default();
                    let n = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
                    if self.top() {
                        self.note_line(rest.get(..n).unwrap_or_default());
                    } else if self.cur == b':' {
                        // Integers inside arrays are validated, not kept.
                        for &b in rest.get(..n).unwrap_or_default() {
                            self.integer_digit(b);
                        }
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
                    if self.cur == b':' && (!self.line_ok || self.digits == 0) {
                        return (i, Progress::Error);
                    }
                    if self.cur == b':' && self.top() {
                        self.integer = Some(if self.neg { -self.num } else { self.num });
                    }
                    if let Some(end) = self.value_done(pos + 1) {
                        return (i + 1, Progress::Complete(end));
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
                        let max = if self.cur == b'$' {
                            MAX_BULK
                        } else {
                            MAX_ELEMS
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
                    if self.neg && !(self.num == 1 && self.digits == 1) {
                        return (i, Progress::Error);
                    }
                    let n = if self.neg { -1 } else { self.num };
                    if self.cur == b'*' {
                        if self.top() {
                            if n > self.max_count {
                                return (i, Progress::Error);
                            }
                            self.count = n;
                        }
                        if n > 0 {
                            if self.stack.len() >= MAX_DEPTH {
                                return (i, Progress::Error);
                            }
                            self.stack.push(n);
                            self.state = State::Type;
                        } else if let Some(end) = self.value_done(pos + 1) {
                            return (i + 1, Progress::Complete(end));
                        }
                    } else if n < 0 {
                        if let Some(end) = self.value_done(pos + 1) {
                            return (i + 1, Progress::Complete(end));
                        }
                    } else {
                        self.remaining = n as u64;
                        self.state = if n == 0 { State::DataCr } else { State::Data };
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
                    if let Some(end) = self.value_done(pos + 1) {
                        return (i + 1, Progress::Complete(end));
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

    /// A value ended at `end`; closes finished arrays. Returns the end of
    /// the whole reply when the top-level value is complete.
    fn value_done(&mut self, end: u64) -> Option<u64> {
        self.state = State::Type;
        loop {
            let depth = self.stack.len();
            if depth == 0 {
                return Some(end);
            }
            if depth == 1 && self.want_elems {
                self.elems.push((self.elem_start, end));
            }
            let top = self.stack.last_mut()?;
            *top -= 1;
            if *top > 0 {
                return None;
            }
            self.stack.pop();
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
                Progress::Complete(end) => {
                    assert_eq!(end, pos as u64);
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
}
