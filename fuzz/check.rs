//! Invariant checks shared by the fuzz targets (`fuzz/fuzz_targets/`) and
//! the crash regression test (`tests/fuzz_regressions.rs`), which both
//! include this file as a module: it is test tooling, not part of the
//! library's API, and it reaches the parsers through their public paths.
//!
//! Each public function takes arbitrary bytes, runs one parser over them
//! and **panics** with a description when the parser breaks a promise; a
//! parser panic propagates as is. That is the whole point of this module:
//! libFuzzer reports a panic as a crash, and the regression test reports it
//! as a failure. No proxy code calls it.
//!
//! The protocol checks drive a parser the way the proxy does (one piece per
//! mbuf, each piece fed at its absolute stream offset, the rest of a piece
//! fed again after a `Complete`) under several piece schedules derived from
//! the input itself, and require:
//!
//! 1. the same sequence of outcomes (each message's end and public fields,
//!    or the error and where it struck) whatever the schedule;
//! 2. every accepted message to be the exact bytes its fields describe
//!    (redis requests rebuilt from their arguments, replies whose array
//!    elements tile the body, memcached keys and data blocks in place), and
//!    to parse the same when fed alone to a fresh parser;
//! 3. offsets that grow, stay within the bytes fed, and never claim more
//!    bytes consumed than were given.
//!
//! The configuration check requires that the YAML loader never panics,
//! that what it accepts is sorted and complete, and that every error it
//! reports fits on one line.

use nutcracker::conf::{self, Conf, ConfError};
use nutcracker::proto::memcache::request::{self as mcreq, McCmd, McKey, McReqParser};
use nutcracker::proto::memcache::response::{self as mcrsp, McRspKind, McRspParser, McValue};
use nutcracker::proto::redis::command::Cmd;
use nutcracker::proto::redis::request::{self as req, Arg, ReqParser};
use nutcracker::proto::redis::response::{self as rsp, RspKind, RspParser};
use std::cmp::Ordering;
use std::fmt::Debug;

/// Which promises the protocol checks hold a parser to. Each field can be
/// turned off only so that a fuzzing run can look past a known, still-open
/// bug (its input kept in `tests/fuzz_regressions/`) to find others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// An error must be reported at the same stream offset whatever the
    /// piece schedule (its kind must always match). Name: `error-offsets`.
    pub error_offsets: bool,
    /// A memcached key must not hold `\n`. Name: `key-lf`.
    pub key_lf: bool,
    /// A configuration error must describe itself on one line. Name:
    /// `one-line-errors`.
    pub one_line_errors: bool,
}

impl Options {
    /// Every check: what the plain functions and the regression test use.
    pub const STRICT: Options = Options {
        error_offsets: true,
        key_lf: true,
        one_line_errors: true,
    };

    /// [`STRICT`](Self::STRICT) less the checks named, comma-separated, in
    /// `NUTCRACKER_FUZZ_ALLOW` (e.g. `error-offsets,key-lf`).
    ///
    /// # Panics
    /// On a name it does not know, so that a typo does not go unnoticed.
    pub fn from_env() -> Options {
        let mut opts = Options::STRICT;
        let allow = std::env::var("NUTCRACKER_FUZZ_ALLOW").unwrap_or_default();
        for name in allow.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "error-offsets" => opts.error_offsets = false,
                "key-lf" => opts.key_lf = false,
                "one-line-errors" => opts.one_line_errors = false,
                other => panic!("NUTCRACKER_FUZZ_ALLOW: unknown check {other:?}"),
            }
        }
        opts
    }
}

// ---------------------------------------------------------------------------
// The generic driver

/// What one `feed` call reported, parser-independent.
enum Step {
    Incomplete,
    Complete(u64),
    /// Bytes up to the offset consumed with no message, and why (a redis
    /// `*0` or empty line; a memcached line refused in place).
    Skip(u64, String),
    Error(String),
}

/// A parser under test. `Snap` captures the public fields of a completed
/// message, so that two runs can be compared.
trait Harness {
    type Snap: PartialEq + Debug + Clone;
    fn fresh() -> Self;
    fn feed(&mut self, data: &[u8], base: u64) -> (usize, Step);
    fn snapshot(&self) -> Self::Snap;
    /// Offset where the completed message's own bytes begin (after any
    /// bytes the parser may skip before it).
    fn start(&self) -> u64;
    fn reset(&mut self);
    fn is_idle(&self) -> bool;
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome<S> {
    Complete {
        end: u64,
        snap: S,
    },
    Skip {
        end: u64,
        what: String,
    },
    Error {
        at: u64,
        what: String,
    },
    /// Input ran out; `idle` is false when a message had begun.
    End {
        idle: bool,
    },
}

/// Deterministic pseudo-random numbers (splitmix64), seeded from the input
/// so that a crash reproduces from its file alone.
struct Rng(u64);

impl Rng {
    fn new(data: &[u8], salt: u64) -> Rng {
        // FNV-1a over the input.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `1..=max` (`max` >= 1).
    fn piece(&mut self, max: usize) -> usize {
        1 + (self.next() % max.max(1) as u64) as usize
    }
}

/// Piece boundaries: the end offset of each piece, last one `len`.
fn cuts(len: usize, mut size: impl FnMut() -> usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        at = (at + size()).min(len);
        out.push(at);
    }
    out
}

/// The schedules every protocol input is run under: whole, random pieces,
/// tiny-mbuf pieces of 1..=7 bytes, and one byte at a time.
fn schedules(data: &[u8]) -> Vec<(&'static str, Vec<usize>)> {
    let len = data.len();
    let mut random = Rng::new(data, 1);
    let mut tiny = Rng::new(data, 2);
    vec![
        ("whole", cuts(len, || len)),
        ("random", cuts(len, || random.piece(len))),
        ("tiny", cuts(len, || tiny.piece(7))),
        ("bytewise", cuts(len, || 1)),
    ]
}

/// Feeds `data` (which sits at stream offset `base`) through a fresh parser
/// cut at `cut_points` (relative to `data`), checking invariant 3 on every
/// call. `poke_empty` also feeds an empty piece before each real one.
fn drive<H: Harness>(
    data: &[u8],
    base: u64,
    cut_points: &[usize],
    poke_empty: bool,
    label: &str,
    opts: Options,
) -> Vec<Outcome<H::Snap>> {
    let mut p = H::fresh();
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut last_end = base;
    for &cut in cut_points {
        // A piece is fed again from where the last Complete stopped, until
        // the parser has consumed all of it (bounded: every round either
        // consumes a byte or leaves the loop).
        while pos < cut {
            if poke_empty {
                let (n, step) = p.feed(&[], base + pos as u64);
                assert!(
                    n == 0 && matches!(step, Step::Incomplete),
                    "{label}: empty piece at {pos} consumed {n} bytes or did not report Incomplete"
                );
            }
            let piece = &data[pos..cut];
            let at = base + pos as u64;
            let (n, step) = p.feed(piece, at);
            assert!(
                n <= piece.len(),
                "{label}: consumed {n} of a {}-byte piece at {at}",
                piece.len()
            );
            match step {
                Step::Incomplete => {
                    assert_eq!(
                        n,
                        piece.len(),
                        "{label}: Incomplete but only {n} of {} bytes consumed at {at}",
                        piece.len()
                    );
                    pos += n;
                }
                Step::Complete(end) => {
                    assert!(
                        n >= 1,
                        "{label}: Complete({end}) without consuming a byte at {at}"
                    );
                    assert_eq!(
                        end,
                        at + n as u64,
                        "{label}: Complete({end}) but consumed {n} bytes from {at}"
                    );
                    let start = p.start();
                    assert!(
                        last_end <= start && start < end,
                        "{label}: message start {start} outside {last_end}..{end}"
                    );
                    out.push(Outcome::Complete {
                        end,
                        snap: p.snapshot(),
                    });
                    last_end = end;
                    pos += n;
                    p.reset();
                    assert!(p.is_idle(), "{label}: not idle after reset at {end}");
                }
                Step::Skip(end, what) => {
                    assert!(
                        n >= 1 && end == at + n as u64,
                        "{label}: Skip({end}, {what}) after consuming {n} bytes from {at}"
                    );
                    out.push(Outcome::Skip { end, what });
                    last_end = end;
                    pos += n;
                    p.reset();
                    assert!(p.is_idle(), "{label}: not idle after reset at {end}");
                }
                Step::Error(what) => {
                    assert!(
                        n < piece.len(),
                        "{label}: error {what} points past the piece ({n} of {} at {at})",
                        piece.len()
                    );
                    out.push(Outcome::Error {
                        // 0 stands for "not compared".
                        at: if opts.error_offsets { at + n as u64 } else { 0 },
                        what,
                    });
                    return out;
                }
            }
        }
    }
    out.push(Outcome::End { idle: p.is_idle() });
    out
}

/// Invariants 1 and 3, plus "each message parses alone the same": returns
/// the agreed outcomes for message-specific checks.
fn split_equivalence<H: Harness>(data: &[u8], opts: Options) -> Vec<Outcome<H::Snap>> {
    let mut reference: Option<(&str, Vec<Outcome<H::Snap>>)> = None;
    for (name, cut_points) in schedules(data) {
        let got = drive::<H>(data, 0, &cut_points, name == "bytewise", name, opts);
        match &reference {
            None => reference = Some((name, got)),
            Some((ref_name, want)) => {
                if let Some(i) = (0..want.len().max(got.len())).find(|&i| want.get(i) != got.get(i))
                {
                    panic!(
                        "schedules '{ref_name}' and '{name}' disagree at outcome {i}:\n  {ref_name}: {:?}\n  {name}: {:?}\n  cuts: {:?}",
                        want.get(i),
                        got.get(i),
                        &cut_points[..cut_points.len().min(64)]
                    );
                }
            }
        }
    }
    let outcomes = reference.map(|(_, o)| o).unwrap_or_default();
    refeed_alone::<H>(data, &outcomes, opts);
    outcomes
}

/// Each outcome must be reproduced by a fresh parser fed only the bytes
/// from the previous message's end (this also catches state that `reset`
/// forgets to clear).
fn refeed_alone<H: Harness>(data: &[u8], outcomes: &[Outcome<H::Snap>], opts: Options) {
    let mut from = 0usize;
    for outcome in outcomes {
        let upto = match outcome {
            Outcome::Complete { end, .. } | Outcome::Skip { end, .. } => *end as usize,
            Outcome::Error { .. } | Outcome::End { .. } => data.len(),
        };
        let bytes = &data[from..upto];
        let got = drive::<H>(bytes, from as u64, &[bytes.len()], false, "alone", opts);
        let first = got.first();
        assert!(
            first == Some(outcome),
            "fed alone from {from}, a fresh parser gives {first:?} instead of {outcome:?}"
        );
        match outcome {
            Outcome::Complete { end, .. } | Outcome::Skip { end, .. } => from = *end as usize,
            _ => return,
        }
    }
}

/// Bytes `start..end` of the input as a slice (offsets checked already).
fn range(data: &[u8], start: u64, end: u64) -> &[u8] {
    let (s, e) = (start as usize, end as usize);
    assert!(
        s <= e && e <= data.len(),
        "range {s}..{e} outside the {}-byte input",
        data.len()
    );
    &data[s..e]
}

/// Appends `c`, `n` zero-padded to `width` digits, and CRLF.
fn header(out: &mut Vec<u8>, c: u8, n: u64, width: usize) {
    out.push(c);
    out.extend_from_slice(format!("{n:0width$}").as_bytes());
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------------------
// redis requests

#[derive(Debug, Clone, PartialEq)]
struct ReqSnap {
    start: u64,
    args: Vec<Arg>,
    name: Vec<u8>,
    command: Option<Cmd>,
    inline: bool,
    resp: Vec<u8>,
}

impl Harness for ReqParser {
    type Snap = ReqSnap;
    fn fresh() -> Self {
        ReqParser::new()
    }
    fn feed(&mut self, data: &[u8], base: u64) -> (usize, Step) {
        let (n, p) = ReqParser::feed(self, data, base);
        let step = match p {
            req::Progress::Incomplete => Step::Incomplete,
            req::Progress::Complete(end) => Step::Complete(end),
            req::Progress::Skip(end) => Step::Skip(end, "Skip".into()),
            req::Progress::Error(e) => Step::Error(format!("{e:?}")),
        };
        (n, step)
    }
    fn snapshot(&self) -> ReqSnap {
        ReqSnap {
            start: self.start,
            args: self.args.clone(),
            name: self.name().to_vec(),
            command: self.command(),
            inline: self.is_inline(),
            resp: self.inline_resp().to_vec(),
        }
    }
    fn start(&self) -> u64 {
        self.start
    }
    fn reset(&mut self) {
        ReqParser::reset(self)
    }
    fn is_idle(&self) -> bool {
        ReqParser::is_idle(self)
    }
}

/// Checks the redis request parser on `data` (see the module doc).
pub fn redis_request(data: &[u8]) {
    redis_request_with(data, Options::STRICT)
}

/// [`redis_request`] with a choice of checks.
pub fn redis_request_with(data: &[u8], opts: Options) {
    let mut prev_end = 0;
    for outcome in split_equivalence::<ReqParser>(data, opts) {
        match outcome {
            Outcome::Complete { end, snap } => {
                assert_eq!(
                    snap.start, prev_end,
                    "a request must start where the last one ended"
                );
                if snap.inline {
                    check_inline_request(data, end, &snap);
                } else {
                    assert!(snap.resp.is_empty(), "a multibulk request has a RESP form");
                    check_redis_request(data, snap.start, end, &snap);
                }
                prev_end = end;
            }
            Outcome::Skip { end, .. } => {
                check_redis_skip(range(data, prev_end, end));
                prev_end = end;
            }
            Outcome::Error { at, what } => {
                if what == "InlineTooBig" && opts.error_offsets {
                    let line = range(data, prev_end, at + 1);
                    assert!(
                        line.len() as u64 == req::INLINE_MAX + 1 && !line.contains(&b'\n'),
                        "too big inline request after {} bytes",
                        line.len()
                    );
                }
            }
            Outcome::End { .. } => {}
        }
    }
}

/// Skipped bytes are `*0`, `*-<n>` (n > 0) or an inline line with no word.
fn check_redis_skip(bytes: &[u8]) {
    if let Some(count) = bytes.strip_prefix(b"*") {
        let n = count.strip_suffix(b"\r\n").and_then(strict_i64);
        assert!(
            matches!(n, Some(n) if n <= 0) && !count.starts_with(b"-0"),
            "skipped {:?}",
            String::from_utf8_lossy(bytes)
        );
    } else {
        let line = bytes
            .strip_suffix(b"\n")
            .unwrap_or_else(|| panic!("skipped bytes {bytes:?} do not end a line"));
        assert_eq!(
            split_args(line),
            Some(Vec::new()),
            "skipped an inline line with words: {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// Redis' `sdssplitargs` written plainly over a whole line (LF removed):
/// the reference the incremental splitter must agree with. `None` for
/// unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Redis reads the line as a C string.
    let s = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut p = 0;
    loop {
        while at(p) != 0 && space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Some(out);
        }
        let (mut inq, mut insq) = (false, false);
        let mut cur = Vec::new();
        loop {
            let c = at(p);
            if inq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && hex(at(p + 2)).is_some()
                    && hex(at(p + 3)).is_some()
                {
                    cur.push(hex(at(p + 2))? * 16 + hex(at(p + 3))?);
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    cur.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        o => o,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else if insq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !space(at(p + 1)) {
                        return None;
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        if c != 0 {
                            p += 1;
                        }
                        break;
                    }
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    _ => cur.push(c),
                }
            }
            p += 1;
        }
        out.push(cur);
    }
}

/// An inline request: the line (up to its LF) splits into the arguments,
/// and the RESP form is their multibulk encoding, which parses alone to
/// the same arguments.
fn check_inline_request(data: &[u8], end: u64, snap: &ReqSnap) {
    let bytes = range(data, snap.start, end);
    assert!(
        bytes.first() != Some(&b'*') && bytes.last() == Some(&b'\n'),
        "inline request {:?} does not start with a non-* byte and end at LF",
        String::from_utf8_lossy(bytes)
    );
    let line = &bytes[..bytes.len() - 1];
    assert!(!line.contains(&b'\n'), "LF inside an inline line");
    assert!(line.len() as u64 <= req::INLINE_MAX, "inline line too long");
    let want = split_args(line).unwrap_or_else(|| {
        panic!(
            "accepted an unbalanced inline line {:?}",
            String::from_utf8_lossy(line)
        )
    });
    let got: Vec<Vec<u8>> = snap
        .args
        .iter()
        .map(|a| range(&snap.resp, a.data, a.data + u64::from(a.len)).to_vec())
        .collect();
    assert_eq!(
        got,
        want,
        "inline words of {:?}",
        String::from_utf8_lossy(line)
    );
    let mut alone = ReqParser::new();
    let (n, prog) = alone.feed(&snap.resp, 0);
    assert!(
        n == snap.resp.len() && prog == req::Progress::Complete(n as u64),
        "the RESP form of an inline request parses as {prog:?} after {n} bytes"
    );
    assert_eq!(alone.args, snap.args, "arguments of the RESP form");
    assert_eq!(alone.name(), snap.name.as_slice(), "name of the RESP form");
    check_redis_request(&snap.resp, 0, n as u64, snap);
}

/// Invariant 2: `*<n>\r\n` + each argument as `$<len>\r\n<data>\r\n`,
/// numbers written with as many digits as the client used (leading zeros
/// are digits, docs/compatibility.md §7.1), rebuilds `start..end` exactly.
fn check_redis_request(data: &[u8], start: u64, end: u64, snap: &ReqSnap) {
    let args = &snap.args;
    let first = args
        .first()
        .unwrap_or_else(|| panic!("request ending at {end} has no argument"));
    let mut rebuilt = Vec::new();
    let width = (first.start.saturating_sub(start + 3)) as usize;
    header(&mut rebuilt, b'*', args.len() as u64, width);
    for a in args {
        assert!(
            a.start < a.data && a.end() <= end,
            "argument {a:?} outside ..{end}"
        );
        let width = (a.data - a.start).saturating_sub(3) as usize;
        header(&mut rebuilt, b'$', u64::from(a.len), width);
        rebuilt.extend_from_slice(range(data, a.data, a.data + u64::from(a.len)));
        rebuilt.extend_from_slice(b"\r\n");
    }
    let original = range(data, start, end);
    assert!(
        rebuilt == original,
        "request {}..{end} is not its arguments re-serialised:\n  input:   {:?}\n  rebuilt: {:?}",
        start,
        String::from_utf8_lossy(original),
        String::from_utf8_lossy(&rebuilt)
    );
    let name: Vec<u8> = range(data, first.data, first.data + u64::from(first.len))
        .iter()
        .map(u8::to_ascii_lowercase)
        .collect();
    let cut = &name[..name.len().min(req::NAME_MAX)];
    assert_eq!(
        snap.name, cut,
        "command name is not the first argument lower-cased"
    );
    let want = if name.len() > req::NAME_MAX {
        None
    } else {
        Cmd::lookup(&name)
    };
    assert_eq!(
        snap.command, want,
        "command() disagrees with the table for {name:?}"
    );
}

// ---------------------------------------------------------------------------
// redis replies

#[derive(Debug, Clone, PartialEq)]
struct RspSnap {
    start: u64,
    kind: RspKind,
    integer: Option<i64>,
    count: i64,
    elems: Vec<(u64, u64)>,
    prefix: Vec<u8>,
    transient: bool,
    /// Reported as `Progress::Push` rather than `Complete`.
    push: bool,
}

/// The reply parser and whether its last outcome was a push.
struct RspH {
    p: RspParser,
    push: bool,
}

impl Harness for RspH {
    type Snap = RspSnap;
    fn fresh() -> Self {
        RspH {
            p: RspParser::new(),
            push: false,
        }
    }
    fn feed(&mut self, data: &[u8], base: u64) -> (usize, Step) {
        let (n, p) = self.p.feed(data, base);
        self.push = matches!(p, rsp::Progress::Push(_));
        let step = match p {
            rsp::Progress::Incomplete => Step::Incomplete,
            rsp::Progress::Complete(end) | rsp::Progress::Push(end) => Step::Complete(end),
            rsp::Progress::Error => Step::Error("Error".into()),
        };
        (n, step)
    }
    fn snapshot(&self) -> RspSnap {
        let p = &self.p;
        RspSnap {
            start: p.start,
            kind: p.kind,
            integer: p.integer,
            count: p.count,
            elems: p.elems.clone(),
            prefix: p.prefix().to_vec(),
            transient: p.is_transient_error(),
            push: self.push,
        }
    }
    fn start(&self) -> u64 {
        self.p.start
    }
    fn reset(&mut self) {
        self.p.reset()
    }
    fn is_idle(&self) -> bool {
        self.p.is_idle()
    }
}

/// Checks the redis reply parser on `data` (see the module doc).
pub fn redis_response(data: &[u8]) {
    redis_response_with(data, Options::STRICT)
}

/// [`redis_response`] with a choice of checks.
pub fn redis_response_with(data: &[u8], opts: Options) {
    let mut prev_end = 0;
    for outcome in split_equivalence::<RspH>(data, opts) {
        let Outcome::Complete { end, snap } = outcome else {
            continue;
        };
        assert_eq!(
            snap.start, prev_end,
            "a reply must start where the last one ended"
        );
        check_redis_reply(data, end, &snap);
        prev_end = end;
    }
}

/// Offset just past the first CRLF at or after `from` (before `end`).
fn line_end(data: &[u8], from: u64, end: u64) -> u64 {
    let bytes = range(data, from, end);
    let at = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or_else(|| panic!("no CRLF in {from}..{end}"));
    from + at as u64 + 2
}

/// Where the value starting at `from` ends, parsed alone by a fresh parser
/// (it must be one whole value before `end`).
fn value_end(data: &[u8], from: u64, end: u64) -> u64 {
    let alone = drive::<RspH>(
        range(data, from, end),
        from,
        &[(end - from) as usize],
        false,
        "value",
        Options::STRICT,
    );
    match alone.first() {
        Some(Outcome::Complete { end: e, .. }) => *e,
        other => panic!("value at {from} alone parses as {other:?}"),
    }
}

/// Invariant 2 for replies: after any attributes (each a header and 2n
/// whole values), the type byte, the line or length header, and for
/// aggregates elements that tile the body, each a complete reply alone.
fn check_redis_reply(data: &[u8], end: u64, snap: &RspSnap) {
    let mut at = snap.start;
    while range(data, at, end).first() == Some(&b'|') {
        let body = line_end(data, at, end);
        let n = strict_i64(range(data, at + 1, body - 2))
            .filter(|&n| n >= 0)
            .unwrap_or_else(|| panic!("attribute size at {at} accepted"));
        at = body;
        for _ in 0..2 * n {
            at = value_end(data, at, end);
        }
    }
    let whole = range(data, at, end);
    let kind = match whole.first() {
        Some(b'+') => RspKind::Status,
        Some(b'-') => RspKind::Error,
        Some(b':') => RspKind::Integer,
        Some(b'$') => RspKind::Bulk,
        Some(b'*') => RspKind::Array,
        Some(b'_') => RspKind::Null,
        Some(b'#') => RspKind::Boolean,
        Some(b',') => RspKind::Double,
        Some(b'(') => RspKind::BigNumber,
        Some(b'!') => RspKind::BlobError,
        Some(b'=') => RspKind::Verbatim,
        Some(b'%') => RspKind::Map,
        Some(b'~') => RspKind::Set,
        Some(b'>') => RspKind::Push,
        other => panic!("reply value at {at} starts with {other:?}"),
    };
    assert_eq!(snap.kind, kind, "kind of the reply at {}", snap.start);
    assert_eq!(
        snap.push,
        kind == RspKind::Push,
        "push outcome of a {kind:?}"
    );
    let body = line_end(data, at, end);
    let line = range(data, at + 1, body - 2);
    let aggregate = matches!(
        kind,
        RspKind::Array | RspKind::Map | RspKind::Set | RspKind::Push
    );
    let bulk = matches!(kind, RspKind::Bulk | RspKind::BlobError | RspKind::Verbatim);
    if !aggregate && !bulk {
        assert_eq!(body, end, "a one-line reply must end at its first CRLF");
        let keep = &line[..line.len().min(rsp::PREFIX_MAX)];
        assert_eq!(snap.prefix, keep, "prefix of the line at {}", snap.start);
        let valid = match kind {
            RspKind::Null => line.is_empty(),
            RspKind::Boolean => line == b"t" || line == b"f",
            RspKind::BigNumber => {
                let digits = line.strip_prefix(b"-").unwrap_or(line);
                !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
            }
            RspKind::Double => {
                !line.is_empty()
                    && line
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
            }
            _ => true,
        };
        assert!(valid, "{kind:?} line {line:?} accepted");
    }
    if kind == RspKind::Integer {
        assert_eq!(snap.integer, strict_i64(line), "integer value of {line:?}");
    }
    if bulk {
        let n = strict_i64(line).unwrap_or_else(|| panic!("bulk length {line:?} accepted"));
        let want = if n < 0 { body } else { body + n as u64 + 2 };
        assert!(
            n >= 0 || (n == -1 && kind == RspKind::Bulk),
            "{kind:?} length {n} accepted"
        );
        assert_eq!(want, end, "bulk reply of length {n} ends elsewhere");
        if n >= 0 {
            assert_eq!(
                range(data, end - 2, end),
                b"\r\n",
                "bulk data not followed by CRLF"
            );
        }
    }
    if aggregate {
        let n = strict_i64(line).unwrap_or_else(|| panic!("aggregate size {line:?} accepted"));
        assert!(
            n >= 0 || (n == -1 && kind == RspKind::Array),
            "{kind:?} size {n} accepted"
        );
        assert_eq!(snap.count, n, "count of the aggregate at {}", snap.start);
        let values = if kind == RspKind::Map { 2 * n } else { n };
        if values <= 0 {
            assert!(
                snap.elems.is_empty(),
                "an empty or null aggregate has elements"
            );
            assert_eq!(body, end, "an empty or null aggregate ends at its header");
        } else {
            assert_eq!(
                snap.elems.len() as i64,
                values,
                "element count of the aggregate"
            );
            let mut at = body;
            for &(s, e) in &snap.elems {
                assert_eq!(s, at, "elements do not tile the aggregate body");
                assert!(s < e, "empty element {s}..{e}");
                assert_eq!(value_end(data, s, e), e, "element {s}..{e} alone");
                at = e;
            }
            assert_eq!(at, end, "the last element does not end the aggregate");
        }
    } else {
        assert_eq!(snap.count, 0, "count set on a non-aggregate");
        assert!(
            snap.elems.is_empty(),
            "elements recorded on a non-aggregate"
        );
    }
    if kind != RspKind::Integer {
        assert_eq!(snap.integer, None, "integer set on a non-integer reply");
    }
    let transient = kind == RspKind::Error
        && [&b"OOM"[..], b"BUSY", b"LOADING"]
            .iter()
            .any(|w| line.starts_with(w) && line.get(w.len()).is_none_or(|&b| b == b' '));
    assert_eq!(
        snap.transient, transient,
        "transient-error flag of {line:?}"
    );
}

/// A RESP integer: an optional `-` then one or more digits, no overflow.
fn strict_i64(text: &[u8]) -> Option<i64> {
    let (neg, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if neg { -n } else { n })
}

// ---------------------------------------------------------------------------
// memcached requests

#[derive(Debug, Clone, PartialEq)]
struct McReqSnap {
    cmd: McCmd,
    start: u64,
    keys: Vec<McKey>,
    noreply: bool,
    line_end: u64,
    data_len: u32,
}

impl Harness for McReqParser {
    type Snap = McReqSnap;
    fn fresh() -> Self {
        McReqParser::new()
    }
    fn feed(&mut self, data: &[u8], base: u64) -> (usize, Step) {
        let (n, p) = McReqParser::feed(self, data, base);
        let step = match p {
            mcreq::Progress::Incomplete => Step::Incomplete,
            mcreq::Progress::Complete(end) => Step::Complete(end),
            mcreq::Progress::Refused(end, e) => Step::Skip(end, format!("{e:?}")),
            mcreq::Progress::Error(e) => Step::Error(format!("{e:?}")),
        };
        (n, step)
    }
    fn snapshot(&self) -> McReqSnap {
        McReqSnap {
            cmd: self.cmd,
            start: self.start,
            keys: self.keys.clone(),
            noreply: self.noreply,
            line_end: self.line_end,
            data_len: if self.is_storage() { self.data_len } else { 0 },
        }
    }
    fn start(&self) -> u64 {
        self.start
    }
    fn reset(&mut self) {
        McReqParser::reset(self)
    }
    fn is_idle(&self) -> bool {
        McReqParser::is_idle(self)
    }
}

/// Checks the memcached request parser on `data` (see the module doc).
pub fn memcache_request(data: &[u8]) {
    memcache_request_with(data, Options::STRICT)
}

/// [`memcache_request`] with a choice of checks.
pub fn memcache_request_with(data: &[u8], opts: Options) {
    let mut prev_end = 0;
    for outcome in split_equivalence::<McReqParser>(data, opts) {
        match outcome {
            Outcome::Complete { end, snap } => {
                check_memcache_request(data, prev_end, end, &snap, opts);
                prev_end = end;
            }
            Outcome::Skip { end, what } => {
                // A refused line ends at its first LF (a bad data chunk
                // ends len + 2 bytes after its line, not checked here).
                if what != "BadDataChunk" {
                    let bytes = range(data, prev_end, end);
                    assert!(
                        bytes.iter().position(|&b| b == b'\n') == Some(bytes.len() - 1),
                        "refused ({what}) {:?} is not one line",
                        String::from_utf8_lossy(bytes)
                    );
                }
                prev_end = end;
            }
            _ => {}
        }
    }
}

/// The tokens of a memcached command line (LF removed) with their offsets,
/// as memcached 1.6 splits it: one CR before the LF dropped, the line cut
/// at its first NUL, tokens separated by spaces.
fn memcached_tokens(line: &[u8], base: u64) -> Vec<(u64, &[u8])> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let mut out = Vec::new();
    let mut at = 0;
    for tok in line.split(|&b| b == b' ') {
        if !tok.is_empty() {
            out.push((base + at as u64, tok));
        }
        at += tok.len() + 1;
    }
    out
}

/// Invariant 2 for memcached: only spaces before the command word, which is
/// the command's name; the keys are exactly the key tokens memcached would
/// read from the line (each 1..=250 bytes); the line ends at `line_end`
/// with its first LF; a storage command's data block and its CRLF end
/// exactly at `end`, and any other command ends with its line.
fn check_memcache_request(data: &[u8], prev_end: u64, end: u64, snap: &McReqSnap, opts: Options) {
    let lead = range(data, prev_end, snap.start);
    assert!(
        lead.iter().all(|&b| b == b' '),
        "bytes before the command word: {lead:?}"
    );
    assert!(
        snap.start < snap.line_end && snap.line_end <= end,
        "line end {} outside {}..{end}",
        snap.line_end,
        snap.start
    );
    let line = range(data, snap.start, snap.line_end);
    assert!(
        line.iter().position(|&b| b == b'\n') == Some(line.len() - 1),
        "line {:?} does not end at its first LF",
        String::from_utf8_lossy(line)
    );
    let toks = memcached_tokens(&line[..line.len() - 1], snap.start);
    let name = snap.cmd.name().as_bytes();
    assert_eq!(
        toks.first().map(|t| t.1),
        Some(name),
        "command word at {}",
        snap.start
    );
    let want: Vec<McKey> = toks
        .iter()
        .enumerate()
        .filter(|&(i, _)| match snap.cmd {
            McCmd::Get | McCmd::Gets => i >= 1,
            McCmd::Gat | McCmd::Gats => i >= 2,
            McCmd::Version | McCmd::Quit | McCmd::Stats | McCmd::FlushAll | McCmd::Verbosity => {
                false
            }
            _ => i == 1,
        })
        .map(|(_, &(at, tok))| McKey {
            start: at,
            len: tok.len() as u32,
        })
        .collect();
    assert_eq!(
        snap.keys,
        want,
        "keys of {:?}",
        String::from_utf8_lossy(line)
    );
    for k in &snap.keys {
        assert!(
            (1..=mcreq::MAX_KEY as u32).contains(&k.len),
            "key length {} at {}",
            k.len,
            k.start
        );
        let key = range(data, k.start, k.end());
        // A LF would end the line for memcached: a key holding one would
        // smuggle a second command past the proxy.
        assert!(
            !key.iter()
                .any(|&b| b == b' ' || b == 0 || (b == b'\n' && opts.key_lf)),
            "key {:?} holds a space, NUL or LF",
            String::from_utf8_lossy(key)
        );
    }
    if matches!(snap.cmd, McCmd::Get | McCmd::Gets) {
        assert!(!snap.keys.is_empty(), "get without a key");
    }
    if snap.cmd.is_storage() {
        let data_end = snap.line_end + u64::from(snap.data_len) + 2;
        assert_eq!(
            data_end, end,
            "data block of {} bytes + CRLF does not end the request",
            snap.data_len
        );
        assert_eq!(
            range(data, end - 2, end),
            b"\r\n",
            "data block not followed by CRLF"
        );
    } else {
        assert_eq!(
            snap.line_end,
            end,
            "a {} request must end with its line",
            snap.cmd.name()
        );
    }
    if snap.noreply {
        assert_eq!(
            toks.last().map(|t| t.1),
            Some(&b"noreply"[..]),
            "noreply flag without a final noreply token: {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

// ---------------------------------------------------------------------------
// memcached replies

#[derive(Debug, Clone, PartialEq)]
struct McRspSnap {
    start: u64,
    kind: McRspKind,
    values: Vec<McValue>,
    end_line: u64,
}

impl Harness for McRspParser {
    type Snap = McRspSnap;
    fn fresh() -> Self {
        McRspParser::new()
    }
    fn feed(&mut self, data: &[u8], base: u64) -> (usize, Step) {
        let (n, p) = McRspParser::feed(self, data, base);
        let step = match p {
            mcrsp::Progress::Incomplete => Step::Incomplete,
            mcrsp::Progress::Complete(end) => Step::Complete(end),
            mcrsp::Progress::Error => Step::Error("Error".into()),
        };
        (n, step)
    }
    fn snapshot(&self) -> McRspSnap {
        McRspSnap {
            start: self.start,
            kind: self.kind,
            values: self.values.clone(),
            end_line: self.end_line,
        }
    }
    fn start(&self) -> u64 {
        self.start
    }
    fn reset(&mut self) {
        McRspParser::reset(self)
    }
    fn is_idle(&self) -> bool {
        McRspParser::is_idle(self)
    }
}

/// Checks the memcached reply parser on `data` (see the module doc).
pub fn memcache_response(data: &[u8]) {
    memcache_response_with(data, Options::STRICT)
}

/// [`memcache_response`] with a choice of checks.
pub fn memcache_response_with(data: &[u8], opts: Options) {
    let mut prev_end = 0;
    for outcome in split_equivalence::<McRspParser>(data, opts) {
        let Outcome::Complete { end, snap } = outcome else {
            continue;
        };
        assert_eq!(
            snap.start, prev_end,
            "a reply must start where the last one ended"
        );
        check_memcache_reply(data, end, &snap);
        prev_end = end;
    }
}

/// Invariant 2 for memcached replies: a get reply is VALUE blocks that
/// tile it up to the `END` line, each block's data as long as its header
/// says; any other reply is one line that starts with its kind's word.
fn check_memcache_reply(data: &[u8], end: u64, snap: &McRspSnap) {
    let first_line_end = line_end(data, snap.start, end);
    if matches!(snap.kind, McRspKind::MetaValue | McRspKind::Dump) {
        // Replies to the proxy's own key moves: several lines.
        assert!(
            snap.values.is_empty(),
            "VALUE blocks in a {:?} reply",
            snap.kind
        );
        return;
    }
    if snap.kind != McRspKind::Values {
        assert!(
            snap.values.is_empty(),
            "VALUE blocks in a {:?} reply",
            snap.kind
        );
        assert_eq!(
            first_line_end, end,
            "a {:?} reply must be one line",
            snap.kind
        );
        let line = range(data, snap.start, end - 2);
        let word: &[u8] = match snap.kind {
            McRspKind::Stored => b"STORED",
            McRspKind::NotStored => b"NOT_STORED",
            McRspKind::Exists => b"EXISTS",
            McRspKind::NotFound => b"NOT_FOUND",
            McRspKind::Deleted => b"DELETED",
            McRspKind::Touched => b"TOUCHED",
            McRspKind::Ok => b"OK",
            McRspKind::Error => b"ERROR",
            McRspKind::ClientError => b"CLIENT_ERROR",
            McRspKind::ServerError => b"SERVER_ERROR",
            McRspKind::Version => b"VERSION",
            McRspKind::Number
            | McRspKind::Values
            | McRspKind::Meta
            | McRspKind::MetaValue
            | McRspKind::Dump => b"",
        };
        assert!(line.starts_with(word), "{:?} reply is {line:?}", snap.kind);
        let rest = &line[word.len()..];
        if snap.kind == McRspKind::Number {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            assert!(digits >= 1, "number reply {line:?} without digits");
            assert!(
                rest[digits..].iter().all(|&b| b == b' '),
                "number reply {line:?}"
            );
        } else {
            assert!(
                rest.is_empty() || rest[0] == b' ',
                "{:?} reply word runs on: {line:?}",
                snap.kind
            );
        }
        return;
    }
    let mut at = snap.start;
    for v in &snap.values {
        assert_eq!(v.start, at, "VALUE blocks do not tile the reply");
        let header_end = line_end(data, v.start, v.end);
        let header = range(data, v.start, header_end - 2);
        assert!(header.starts_with(b"VALUE "), "block header {header:?}");
        let key = range(data, v.key_start, v.key_start + u64::from(v.key_len));
        assert!(
            (1..=mcreq::MAX_KEY).contains(&key.len()),
            "VALUE key of {} bytes",
            key.len()
        );
        assert!(
            v.key_start > v.start + 5 && v.key_start + u64::from(v.key_len) < header_end - 2,
            "VALUE key outside its header"
        );
        assert!(
            !key.contains(&b' ') && !key.contains(&b'\r'),
            "VALUE key {key:?}"
        );
        let tokens: Vec<&[u8]> = header
            .split(|&b| b == b' ')
            .filter(|t| !t.is_empty())
            .collect();
        assert!(
            (4..=5).contains(&tokens.len()) && tokens[1] == key,
            "VALUE header {:?} (key {key:?})",
            String::from_utf8_lossy(header)
        );
        let bytes = strict_i64(tokens[3]).unwrap_or(-1);
        assert!(bytes >= 0, "VALUE length {:?}", tokens[3]);
        assert_eq!(
            header_end + bytes as u64 + 2,
            v.end,
            "VALUE data of {bytes} bytes ends elsewhere"
        );
        assert_eq!(
            range(data, v.end - 2, v.end),
            b"\r\n",
            "VALUE data not followed by CRLF"
        );
        at = v.end;
    }
    assert_eq!(
        snap.end_line, at,
        "END line does not follow the last VALUE block"
    );
    let tail = range(data, at, end);
    assert!(tail.starts_with(b"END"), "get reply ends with {tail:?}");
    assert!(
        tail[3..tail.len() - 2].iter().all(|&b| b == b' ') && tail.ends_with(b"\r\n"),
        "END line {tail:?}"
    );
}

// ---------------------------------------------------------------------------
// configuration

/// The path the configuration check names in messages.
const CONF_PATH: &str = "fuzz.yml";

/// Checks the configuration loader on `data`. Note: a `listen:` host name
/// is resolved, so run the fuzzer where name lookups fail fast (the
/// `fuzz/README.md` recipe uses a network namespace with no network).
pub fn config(data: &[u8]) {
    config_with(data, Options::STRICT)
}

/// [`config`] with a choice of checks.
pub fn config_with(data: &[u8], opts: Options) {
    let from_bytes = Conf::parse_bytes(data, CONF_PATH);
    let lossy = String::from_utf8_lossy(data);
    let from_str = Conf::parse_str(&lossy, CONF_PATH);
    if std::str::from_utf8(data).is_ok() {
        assert_eq!(
            from_bytes, from_str,
            "parse_bytes and parse_str disagree on UTF-8 input"
        );
    }
    for result in [&from_bytes, &from_str] {
        match result {
            Ok(conf) => check_conf(conf),
            Err(err) => check_conf_error(err, opts),
        }
    }
}

/// nutcracker's name order: shorter first, then bytes.
fn name_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

fn check_conf(conf: &Conf) {
    assert!(
        !conf.pools.is_empty(),
        "accepted a configuration without pools"
    );
    for pair in conf.pools.windows(2) {
        if let [a, b] = pair {
            assert_eq!(
                name_order(&a.name, &b.name),
                Ordering::Less,
                "pools {:?} and {:?} not sorted by name, or duplicated",
                a.name,
                b.name
            );
        }
    }
    for pool in &conf.pools {
        assert!(
            !pool.servers.is_empty(),
            "pool {:?} accepted without servers",
            pool.name
        );
        for pair in pool.servers.windows(2) {
            if let [a, b] = pair {
                assert_eq!(
                    name_order(&a.name, &b.name),
                    Ordering::Less,
                    "servers {:?} and {:?} of pool {:?} not sorted, or duplicated",
                    a.name,
                    b.name,
                    pool.name
                );
            }
        }
        let mut seen: Vec<usize> = pool.servers.iter().map(|s| s.yaml_index).collect();
        seen.sort_unstable();
        assert!(
            seen.iter().enumerate().all(|(i, &y)| i == y),
            "pool {:?}: yaml indexes {seen:?} are not 0..{}",
            pool.name,
            pool.servers.len()
        );
    }
}

fn check_conf_error(err: &ConfError, opts: Options) {
    let line = conf::describe(err, CONF_PATH);
    if let Some(n) = err.line {
        assert!(n >= 1, "error line numbers are 1-based: {line:?}");
    }
    if !opts.one_line_errors {
        return;
    }
    assert!(
        !line.contains(['\n', '\r']),
        "describe() is not a single line: {line:?}"
    );
    if let Some(detail) = &err.detail {
        assert!(
            !detail.contains(['\n', '\r']),
            "error detail is not a single line: {detail:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_tile_the_input() {
        for len in [0usize, 1, 7, 100] {
            let data = vec![b'x'; len];
            for (name, points) in schedules(&data) {
                let mut prev = 0;
                for &p in &points {
                    assert!(p > prev, "{name}: empty piece");
                    if name == "tiny" {
                        assert!(p - prev <= 7, "tiny piece of {}", p - prev);
                    }
                    prev = p;
                }
                assert_eq!(prev, len, "{name}");
            }
        }
    }

    #[test]
    fn strict_integers() {
        assert_eq!(strict_i64(b"0"), Some(0));
        assert_eq!(strict_i64(b"-12"), Some(-12));
        assert_eq!(strict_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [&b""[..], b"-", b"+1", b"1a", b"--1", b"9223372036854775808"] {
            assert_eq!(strict_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn well_formed_streams_pass() {
        redis_request(
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*02\r\n$003\r\nset\r\n$0\r\n\r\n*1\r\n$4\r\nPI",
        );
        redis_response(
            b"+OK\r\n:-3\r\n$-1\r\n*2\r\n*1\r\n:1\r\n$2\r\nab\r\n*-1\r\n-OOM x\r\n*3\r\n",
        );
        memcache_request(
            b"  get a b\r\nset k 0 0 2 noreply\r\nab\r\nincr n -1\r\nversion\r\ngarbage\r\n",
        );
        memcache_response(
            b"VALUE a 0 1\r\nx\r\nEND\r\nSTORED\r\n42 \r\nSERVER_ERROR oops\r\nEND\r\n",
        );
        config(b"p:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:2:1 b\n   - 127.0.0.1:1:1 a\n");
        config(b"p: [\n");
    }

    #[test]
    fn inline_and_skipped_requests_pass() {
        redis_request(b"SET \"a b\" 'c\\'d' \"\\x41\\n\"\r\nGET k\n\r\n*0\r\n*-3\r\nPING\r\n");
        redis_request(b"GET k\0 \"junk\r\nMGET a\x0bb \"\r\" c\r\nGET \"k");
        redis_request(b"GET \"k\"x y\r\n");
        assert_eq!(
            split_args(b"a \"b\\x4\" 'c'\r"),
            Some(vec![b"a".to_vec(), b"bx4".to_vec(), b"c".to_vec()])
        );
        assert_eq!(split_args(b"a \"b"), None);
        assert_eq!(split_args(b" \0 \"b"), Some(vec![]));
    }

    /// Random soups of inline and multibulk fragments hold every invariant
    /// (the reference splitter included).
    #[test]
    fn random_redis_requests_pass() {
        let frags: &[&[u8]] = &[
            b"GET",
            b" ",
            b"\t",
            b"\"",
            b"'",
            b"\\",
            b"x",
            b"41",
            b"\\x",
            b"\r",
            b"\n",
            b"\r\n",
            b"\0",
            b"\x0b",
            b"*0\r\n",
            b"*-1\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"k",
            b"n",
            b"MGET a b\r\n",
        ];
        let mut rng = Rng(7);
        for _ in 0..2000 {
            let mut input = Vec::new();
            for _ in 0..rng.next() % 12 {
                input.extend_from_slice(frags[(rng.next() % frags.len() as u64) as usize]);
            }
            redis_request(&input);
        }
    }

    /// Ends a "message" wherever a piece ends: the kind of bug the split
    /// check exists for.
    struct PieceBound {
        start: u64,
    }

    impl Harness for PieceBound {
        type Snap = u64;
        fn fresh() -> Self {
            PieceBound { start: 0 }
        }
        fn feed(&mut self, data: &[u8], base: u64) -> (usize, Step) {
            self.start = base;
            match data.len() {
                0 => (0, Step::Incomplete),
                n => (n, Step::Complete(base + n as u64)),
            }
        }
        fn snapshot(&self) -> u64 {
            self.start
        }
        fn start(&self) -> u64 {
            self.start
        }
        fn reset(&mut self) {}
        fn is_idle(&self) -> bool {
            true
        }
    }

    #[test]
    #[should_panic(expected = "disagree")]
    fn split_dependence_is_caught() {
        split_equivalence::<PieceBound>(b"0123456789", Options::STRICT);
    }

    #[test]
    fn loose_options_ignore_only_error_offsets() {
        let data = b"set "
            .iter()
            .chain(&[b'k'; 2100])
            .copied()
            .collect::<Vec<u8>>();
        let outcomes = split_equivalence::<McReqParser>(
            &data,
            Options {
                error_offsets: false,
                ..Options::STRICT
            },
        );
        assert!(
            matches!(outcomes.first(), Some(Outcome::Error { what, .. }) if what == "LineTooLong")
        );
    }
}
