//! The YAML configuration: raw text -> validated, sorted pools.
//!
//! Loading follows nutcracker 0.5.0's `nc_conf.c` stage by stage, because
//! users' files must be accepted or rejected exactly as before and the first
//! problem reported must be the same one (docs/compatibility.md §4):
//!
//! ```text
//!  bytes ──► reader (UTF-8, control characters)              err 2
//!        ──► YAML stream: scanner + parser, documents == 1   err 3/4/5, "only 1 document"
//!        ──► token kinds (no ---, %, flow, anchors, tags)    "... token (N) is disallowed"
//!        ──► structure (pool -> directives -> one sequence)  "'F' has ..."
//!        ──► directives in file order                        "directive "D" ..."
//!        ──► per pool: listen, defaults, servers sorted      "directive "listen:" is missing" ...
//!        ──► across pools: listen strings, pool names        "pools 'A' and 'B' ..."
//! ```
//!
//! Errors carry the 1-based line they are about, so `-t` and the start-up
//! log can say where the problem is (the C binary never did). The only
//! resolution done here is the `listen:` address; servers are resolved at
//! each connect by the proxy.

use crate::hashkit::{Distribution, HashKind};
use std::cmp::Ordering;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, ScanError, Scanner, Token, TokenType};

/// Where a pool listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `host:port`, resolved when the file is loaded (first getaddrinfo result).
    Tcp(SocketAddr),
    /// `/path [perm]`; `perm` 0 means no chmod.
    Unix { path: String, perm: u32 },
}

/// Where a backend server is; host names are resolved at each connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    Tcp { host: String, port: u16 },
    Unix { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConf {
    /// The ketama / stats name (docs/compatibility.md §4.4).
    pub name: String,
    /// The server line without ` name` (for logs).
    pub pname: String,
    pub addr: ServerAddr,
    pub weight: u32,
    /// 0-based position in the YAML `servers:` list.
    pub yaml_index: usize,
}

/// One `sentinels:` entry: a Redis Sentinel the pool asks where its masters
/// are (see `sentinel.rs`). Written `host:port:weight`; the weight is read
/// and ignored, as twemproxy's notes describe the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConf {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for SentinelConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConf {
    pub name: String,
    /// The `listen:` string as written (after YAML unquoting).
    pub listen_str: String,
    pub listen: Listen,
    pub hash: HashKind,
    pub hash_tag: Option<[u8; 2]>,
    pub distribution: Distribution,
    /// `None`: wait forever (absent or 0).
    pub timeout_ms: Option<u64>,
    pub backlog: u32,
    pub client_connections: u32,
    pub redis: bool,
    pub redis_auth: Option<String>,
    pub redis_db: u32,
    pub preconnect: bool,
    pub auto_eject_hosts: bool,
    pub server_connections: u32,
    pub server_retry_timeout_ms: u64,
    pub server_failure_limit: u32,
    /// Repair keys written while a server was ejected before it serves
    /// them again (`eject_repair`, default on with `auto_eject_hosts`).
    pub eject_repair: bool,
    /// Most keys remembered per ejected server (`eject_repair_keys`).
    pub eject_repair_keys: u32,
    pub tcpkeepalive: bool,
    pub reuseport: bool,
    /// Sorted by name, length first then bytes (docs/compatibility.md §4.5).
    pub servers: Vec<ServerConf>,
    /// Redis Sentinels that know the masters (empty: none). With any, each
    /// server's name is its master name and its address is only where to
    /// start until a sentinel answers.
    pub sentinels: Vec<SentinelConf>,
    /// AUTH on the sentinel connections.
    pub sentinel_auth: Option<String>,
    /// `migrate_from:`, the pool's previous servers (sorted like
    /// `servers`): keys whose owner differs there are moved (`migrate.rs`).
    /// Empty: no migration.
    pub migrate_from: Vec<ServerConf>,
    /// `migrate_rate:`, keys per second the background mover examines.
    pub migrate_rate: u32,
}

/// Keys per second the background mover examines when `migrate_rate:` is
/// not given: enough to finish a million keys in well under an hour while
/// leaving the backends to their clients.
pub const DEFAULT_MIGRATE_RATE: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conf {
    /// Sorted by name, length first then bytes (docs/compatibility.md §4.5).
    pub pools: Vec<PoolConf>,
}

// ---------------------------------------------------------------------------
// Errors

/// Why a configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    /// 1-based line of the YAML file the problem is on, when there is one.
    pub line: Option<usize>,
    /// The docs/compatibility.md §4.6 text without the `conf: ` prefix.
    pub message: String,
    /// A line nutcracker 0.5.0 logs just before `message` (today only the
    /// `address resolution of node 'H' service 'P' failed: ...` line that
    /// precedes `directive "listen" has an invalid value`).
    pub detail: Option<String>,
}

impl ConfError {
    fn at(line: usize, message: String) -> ConfError {
        ConfError {
            line: Some(line),
            message,
            detail: None,
        }
    }

    fn nowhere(message: String) -> ConfError {
        ConfError {
            line: None,
            message,
            detail: None,
        }
    }
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {})", self.message, line),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfError {}

/// The one line the CLI prints or logs for `err`:
/// `conf: <message>` plus ` (file 'F' line N)` when the line is known.
pub fn describe(err: &ConfError, path: &str) -> String {
    let text = match err.line {
        Some(line) => format!("conf: {} (file '{}' line {})", err.message, path, line),
        None => format!("conf: {}", err.message),
    };
    one_line(&text)
}

/// Escapes control characters, so that a name written with a YAML escape
/// (`"a\nb"`) cannot split a log line or `-t`'s answer into fake lines.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `strerror` text of an I/O error, without std's ` (os error N)` suffix.
fn strerror(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text.get(..at).unwrap_or(&text).to_string(),
        _ => text,
    }
}

/// libyaml's error classes, printed as `err N` by nutcracker.
const YAML_READER_ERROR: u32 = 2;
const YAML_SCANNER_ERROR: u32 = 3;
const YAML_PARSER_ERROR: u32 = 4;
const YAML_COMPOSER_ERROR: u32 = 5;

fn yaml_error(code: u32, line: Option<usize>, why: &str) -> ConfError {
    ConfError {
        line,
        message: format!("failed (err {code}) to get the next yaml document: {why}"),
        detail: None,
    }
}

// ---------------------------------------------------------------------------
// Public entry points

impl Conf {
    /// Reads and validates the file at `path`.
    pub fn load(path: &str) -> Result<Conf, ConfError> {
        let mut file = std::fs::File::open(path).map_err(|e| {
            ConfError::nowhere(format!(
                "failed to open configuration '{}': {}",
                path,
                strerror(&e)
            ))
        })?;
        let mut bytes = Vec::new();
        // fopen() of a directory succeeds in C and libyaml's first read then
        // fails, which nutcracker reports as a reader error.
        file.read_to_end(&mut bytes)
            .map_err(|e| yaml_error(YAML_READER_ERROR, None, &strerror(&e)))?;
        Conf::parse_bytes(&bytes, path)
    }

    /// Validates raw file contents; `path` is only used in messages.
    pub fn parse_bytes(bytes: &[u8], path: &str) -> Result<Conf, ConfError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Conf::parse_str(text, path),
            Err(e) => {
                let good = bytes.get(..e.valid_up_to()).unwrap_or(&[]);
                let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
                Err(yaml_error(
                    YAML_READER_ERROR,
                    Some(line),
                    "invalid UTF-8 octet",
                ))
            }
        }
    }

    /// Validates a configuration text; `path` is only used in messages.
    pub fn parse_str(text: &str, path: &str) -> Result<Conf, ConfError> {
        // libyaml consumes a leading byte order mark while detecting the encoding.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        check_characters(text)?;
        let (tokens, events) = read_yaml(text)?;
        check_documents(&events, path)?;
        check_tokens(&tokens)?;
        check_structure(&events, path)?;
        let pools = parse_pools(&events, path)?;
        finish(pools, path)
    }
}

// ---------------------------------------------------------------------------
// Stage 1: characters and the YAML stream

/// libyaml's reader refuses control characters (NUL included) anywhere.
fn check_characters(text: &str) -> Result<(), ConfError> {
    let mut line = 1;
    let mut prev = '\0';
    for c in text.chars() {
        let ok = matches!(c,
            '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{85}'
            | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}');
        if !ok {
            return Err(yaml_error(
                YAML_READER_ERROR,
                Some(line),
                "control characters are not allowed",
            ));
        }
        if c == '\n' || prev == '\r' {
            line += 1;
        }
        prev = c;
    }
    Ok(())
}

type Events = Vec<(Event, Marker)>;

/// Runs yaml-rust2's scanner and parser over the whole text. The scanner's
/// tokens feed the token-kind check; the parser's events feed everything else.
fn read_yaml(text: &str) -> Result<(Vec<Token>, Events), ConfError> {
    // Guarantees termination whatever the libraries do: no construct yields
    // more than a handful of tokens or events per input character.
    let limit = text.len().saturating_mul(8).saturating_add(64);
    let run = || {
        let mut scanner = Scanner::new(text.chars());
        let mut tokens = Vec::new();
        let mut scan_err = None;
        while tokens.len() <= limit {
            match scanner.next_token() {
                Ok(Some(tok)) => tokens.push(tok),
                Ok(None) => break,
                Err(e) => {
                    scan_err = Some(e);
                    break;
                }
            }
        }
        let mut parser = Parser::new_from_str(text);
        let mut events = Vec::new();
        let mut parse_err = None;
        while events.len() <= limit {
            match parser.next_token() {
                Ok((Event::StreamEnd, mark)) => {
                    events.push((Event::StreamEnd, mark));
                    break;
                }
                Ok(ev) => events.push(ev),
                Err(e) => {
                    parse_err = Some(e);
                    break;
                }
            }
        }
        (tokens, scan_err, events, parse_err)
    };
    // A panic inside the YAML library must not take the process down where
    // unwinding is available; report it as a YAML error instead.
    let (tokens, scan_err, events, parse_err) = std::panic::catch_unwind(run).map_err(|_| {
        yaml_error(
            YAML_SCANNER_ERROR,
            None,
            "the YAML library failed on this input",
        )
    })?;
    if let Some(err) = parse_err {
        return Err(classify(&err, scan_err.as_ref()));
    }
    if let Some(err) = scan_err {
        return Err(classify(&err, Some(&err)));
    }
    if !matches!(events.last(), Some((Event::StreamEnd, _))) {
        return Err(yaml_error(
            YAML_PARSER_ERROR,
            None,
            "the YAML stream did not end",
        ));
    }
    Ok((tokens, events))
}

/// Maps a yaml-rust2 error to libyaml's class: an error the scanner alone
/// also hits is a scanner error (3); an unknown alias is the composer's (5);
/// anything else is the parser's (4).
fn classify(err: &ScanError, scan_err: Option<&ScanError>) -> ConfError {
    let code = if scan_err == Some(err) {
        YAML_SCANNER_ERROR
    } else if err.info().contains("unknown anchor") {
        YAML_COMPOSER_ERROR
    } else {
        YAML_PARSER_ERROR
    };
    yaml_error(code, Some(err.marker().line()), err.info())
}

// ---------------------------------------------------------------------------
// Stage 2: documents and token kinds

fn check_documents(events: &[(Event, Marker)], path: &str) -> Result<(), ConfError> {
    let starts: Vec<usize> = events
        .iter()
        .filter(|(ev, _)| matches!(ev, Event::DocumentStart))
        .map(|(_, mark)| mark.line())
        .collect();
    let count = starts.len();
    let second = starts.get(1).copied();
    if count == 1 {
        return Ok(());
    }
    Err(ConfError {
        line: second,
        message: format!("'{path}' must contain only 1 document; found {count} documents"),
        detail: None,
    })
}

/// The first token of a kind nutcracker refuses, with libyaml's number for it.
fn check_tokens(tokens: &[Token]) -> Result<(), ConfError> {
    for Token(mark, kind) in tokens {
        let refused = match kind {
            TokenType::VersionDirective(..) => Some(("version directive", 3)),
            TokenType::TagDirective(..) => Some(("tag directive", 4)),
            TokenType::DocumentStart => Some(("document start", 5)),
            TokenType::DocumentEnd => Some(("document end", 6)),
            TokenType::FlowSequenceStart => Some(("flow sequence start", 10)),
            TokenType::FlowSequenceEnd => Some(("flow sequence end", 11)),
            TokenType::FlowMappingStart => Some(("flow mapping start", 12)),
            TokenType::FlowMappingEnd => Some(("flow mapping end", 13)),
            TokenType::FlowEntry => Some(("flow entry", 15)),
            TokenType::Alias(_) => Some(("alias", 18)),
            TokenType::Anchor(_) => Some(("anchor", 19)),
            TokenType::Tag(..) => Some(("tag", 20)),
            _ => None,
        };
        if let Some((name, number)) = refused {
            return Err(ConfError::at(
                mark.line(),
                format!("{name} token ({number}) is disallowed"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Stage 3: structure

/// Depth of the pools' directive mappings (`CONF_MAX_DEPTH`).
const MAX_DEPTH: usize = 2;
/// Depth of the pool names (`CONF_ROOT_DEPTH`).
const ROOT_DEPTH: usize = 1;

/// nutcracker's `conf_validate_structure`, event for event: a mapping of
/// pool names to mappings of directives, exactly one sequence per pool.
fn check_structure(events: &[(Event, Marker)], path: &str) -> Result<(), ConfError> {
    let mut depth = 0usize;
    let mut seq = false;
    // Our additions to the structure: a pool may have a `sentinels:` and a
    // `migrate_from:` sequence besides its `servers:` one, each once. `key`
    // is the directive name being read at depth 2.
    let mut key: Option<&str> = None;
    let mut sentinels_seq = false;
    let mut migrate_seq = false;
    let mut other_seq = false;
    // Inside a sequence now: a nested one is never allowed.
    let mut open_seq = false;
    let mut count = [0u32; MAX_DEPTH + 1];
    let mut pool_line = None;
    let err = |line: Option<usize>, what: String| ConfError {
        line,
        message: format!("'{path}' {what}"),
        detail: None,
    };
    for (ev, mark) in events {
        let line = Some(mark.line());
        let here = count.get(depth).copied().unwrap_or(0);
        match ev {
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
            Event::MappingStart(..) => {
                if depth == ROOT_DEPTH && here != 1 {
                    return Err(err(
                        line,
                        format!("has more than one \"key:value\" at depth {depth}"),
                    ));
                }
                if depth >= MAX_DEPTH {
                    return Err(err(line, format!("has a depth greater than {MAX_DEPTH}")));
                }
                depth += 1;
            }
            Event::MappingEnd => {
                if depth == MAX_DEPTH {
                    if !seq {
                        return Err(err(
                            pool_line,
                            format!("missing sequence directive at depth {depth}"),
                        ));
                    }
                    seq = false;
                    sentinels_seq = false;
                    other_seq = false;
                    migrate_seq = false;
                }
                depth = depth.saturating_sub(1);
                if let Some(c) = count.get_mut(depth) {
                    *c = 0;
                }
            }
            Event::SequenceStart(..) => {
                let named = if depth == MAX_DEPTH && here == 1 {
                    key
                } else {
                    None
                };
                let taken = match named {
                    Some("sentinels") => sentinels_seq,
                    Some("migrate_from") => migrate_seq,
                    _ => other_seq,
                };
                if seq && (taken || open_seq || depth != MAX_DEPTH) {
                    return Err(err(line, "has more than one sequence directive".into()));
                }
                if depth != MAX_DEPTH {
                    return Err(err(
                        line,
                        format!("has sequence at depth {depth} instead of {MAX_DEPTH}"),
                    ));
                }
                if here != 1 {
                    return Err(err(
                        line,
                        format!("has invalid \"key:value\" at depth {depth}"),
                    ));
                }
                seq = true;
                open_seq = true;
                match named {
                    Some("sentinels") => sentinels_seq = true,
                    Some("migrate_from") => migrate_seq = true,
                    _ => other_seq = true,
                }
            }
            Event::SequenceEnd => {
                open_seq = false;
                if let Some(c) = count.get_mut(depth) {
                    *c = 0;
                }
            }
            Event::Scalar(value, ..) => {
                if depth == 0 {
                    return Err(err(
                        line,
                        format!("has invalid empty \"key:\" at depth {depth}"),
                    ));
                }
                if depth == ROOT_DEPTH && here != 0 {
                    return Err(err(
                        line,
                        format!("has invalid mapping \"key:\" at depth {depth}"),
                    ));
                }
                if let Some(c) = count.get_mut(depth) {
                    // A "key: value" pair is complete: start the next one.
                    if depth == MAX_DEPTH && *c == 2 {
                        *c = 0;
                    }
                    *c += 1;
                    if depth == MAX_DEPTH && *c == 1 {
                        key = Some(value.as_str());
                    }
                }
                if depth == ROOT_DEPTH {
                    pool_line = line;
                }
            }
            // Refused by the token check already; kept for completeness.
            Event::Alias(_) => {
                return Err(ConfError::at(
                    mark.line(),
                    "alias token (18) is disallowed".into(),
                ))
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Stage 4: directives

/// A pool as written, before defaults; `line`s point at values for errors.
#[derive(Debug, Default)]
struct RawPool {
    name: String,
    line: usize,
    listen: Option<(String, Listen, usize)>,
    hash: Option<HashKind>,
    hash_tag: Option<[u8; 2]>,
    distribution: Option<Distribution>,
    timeout: Option<u32>,
    backlog: Option<u32>,
    client_connections: Option<u32>,
    redis: Option<bool>,
    redis_auth: Option<(String, usize)>,
    redis_db: Option<u32>,
    preconnect: Option<bool>,
    auto_eject_hosts: Option<bool>,
    server_connections: Option<(u32, usize)>,
    server_retry_timeout: Option<u32>,
    server_failure_limit: Option<u32>,
    eject_repair: Option<(bool, usize)>,
    eject_repair_keys: Option<(u32, usize)>,
    tcpkeepalive: Option<bool>,
    reuseport: Option<bool>,
    /// With the line each server was written on, and whether it was
    /// given a name.
    servers: Vec<(ServerConf, usize, bool)>,
    sentinels: Vec<(SentinelConf, usize)>,
    sentinel_auth: Option<(String, usize)>,
    migrate_from: Vec<(ServerConf, usize)>,
    migrate_rate: Option<(u32, usize)>,
}

/// Walks the (structurally valid) events and applies each directive in file
/// order; sequence items each apply their sequence's directive, as in C.
fn parse_pools(events: &[(Event, Marker)], path: &str) -> Result<Vec<RawPool>, ConfError> {
    let mut pools: Vec<RawPool> = Vec::new();
    let mut depth = 0usize;
    let mut seq = false;
    let mut key: Option<(String, usize)> = None;
    for (ev, mark) in events {
        let line = mark.line();
        match ev {
            Event::MappingStart(..) => depth += 1,
            Event::MappingEnd => {
                depth = depth.saturating_sub(1);
                key = None;
            }
            Event::SequenceStart(..) => seq = true,
            Event::SequenceEnd => {
                seq = false;
                key = None;
            }
            Event::Scalar(value, ..) => {
                if depth == ROOT_DEPTH {
                    if value.is_empty() {
                        return Err(ConfError::at(
                            line,
                            format!("'{path}' has an empty pool name"),
                        ));
                    }
                    pools.push(RawPool {
                        name: value.clone(),
                        line,
                        ..RawPool::default()
                    });
                    continue;
                }
                let pool = pools.last_mut().ok_or_else(|| {
                    ConfError::at(line, format!("'{path}' has a directive outside a pool"))
                })?;
                if seq {
                    let (name, key_line) = key.as_ref().ok_or_else(|| {
                        ConfError::at(line, format!("'{path}' has a sequence without a key"))
                    })?;
                    let at = if value.is_empty() { *key_line } else { line };
                    apply(pool, name, value, at)?;
                } else {
                    match key.take() {
                        None if value.is_empty() => {
                            return Err(ConfError::at(
                                line,
                                format!("'{path}' has an empty directive name"),
                            ))
                        }
                        None => key = Some((value.clone(), line)),
                        Some((name, key_line)) => {
                            let at = if value.is_empty() { key_line } else { line };
                            apply(pool, &name, value, at)?;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(pools)
}

const BAD_BOOL: &str = "is not \"true\" or \"false\"";
const BAD_NUMBER: &str = "is not a number";
const DUPLICATE: &str = "is a duplicate";

/// Applies `key: value` to `pool`. As in C, a repeated directive is refused
/// before its value is looked at.
fn apply(pool: &mut RawPool, key: &str, value: &str, line: usize) -> Result<(), ConfError> {
    let fail = |reason: &str| ConfError::at(line, format!("directive \"{key}\" {reason}"));
    if value.is_empty() {
        // nutcracker refuses empty scalars without saying anything.
        return Err(fail("has an empty value"));
    }
    fn once<T>(slot: &mut Option<T>, value: Result<T, &'static str>) -> Result<(), &'static str> {
        if slot.is_some() {
            return Err(DUPLICATE);
        }
        *slot = Some(value?);
        Ok(())
    }
    let number = || parse_number(value).ok_or(BAD_NUMBER);
    let boolean = || match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(BAD_BOOL),
    };
    let done = match key {
        "listen" => {
            if pool.listen.is_some() {
                return Err(fail(DUPLICATE));
            }
            let listen = parse_listen(value).map_err(|(reason, detail)| ConfError {
                detail: detail.map(|d| one_line(&d)),
                ..fail(reason)
            })?;
            pool.listen = Some((value.to_string(), listen, line));
            Ok(())
        }
        "hash" => once(
            &mut pool.hash,
            HashKind::from_name(value).ok_or("is not a valid hash"),
        ),
        "hash_tag" => once(
            &mut pool.hash_tag,
            match value.as_bytes() {
                &[a, b] => Ok([a, b]),
                _ => Err("is not a valid hash tag string with two characters"),
            },
        ),
        "distribution" => once(
            &mut pool.distribution,
            Distribution::from_name(value).ok_or("is not a valid distribution"),
        ),
        "timeout" => once(&mut pool.timeout, number()),
        "backlog" => once(&mut pool.backlog, number()),
        "client_connections" => once(&mut pool.client_connections, number()),
        "redis" => once(&mut pool.redis, boolean()),
        "tcpkeepalive" => once(&mut pool.tcpkeepalive, boolean()),
        "reuseport" => once(&mut pool.reuseport, boolean()),
        "redis_auth" => once(&mut pool.redis_auth, Ok((value.to_string(), line))),
        "redis_db" => once(&mut pool.redis_db, number()),
        "preconnect" => once(&mut pool.preconnect, boolean()),
        "auto_eject_hosts" => once(&mut pool.auto_eject_hosts, boolean()),
        "server_connections" => once(&mut pool.server_connections, number().map(|n| (n, line))),
        "server_retry_timeout" => once(&mut pool.server_retry_timeout, number()),
        "server_failure_limit" => once(&mut pool.server_failure_limit, number()),
        "eject_repair" => once(&mut pool.eject_repair, boolean().map(|b| (b, line))),
        "eject_repair_keys" => once(&mut pool.eject_repair_keys, number().map(|n| (n, line))),
        "servers" => {
            let yaml_index = pool.servers.len();
            let server = parse_server(value, yaml_index).map_err(fail)?;
            // `pname` is the line without its name, so shorter when named.
            let named = server.pname.len() < value.len();
            pool.servers.push((server, line, named));
            Ok(())
        }
        "sentinels" => {
            let sentinel = parse_sentinel(value).map_err(fail)?;
            pool.sentinels.push((sentinel, line));
            Ok(())
        }
        "sentinel_auth" => once(&mut pool.sentinel_auth, Ok((value.to_string(), line))),
        "migrate_from" => {
            let yaml_index = pool.migrate_from.len();
            let server = parse_server(value, yaml_index).map_err(fail)?;
            pool.migrate_from.push((server, line));
            Ok(())
        }
        "migrate_rate" => once(&mut pool.migrate_rate, number().map(|n| (n, line))),
        _ => Err("is unknown"),
    };
    done.map_err(fail)
}

/// nutcracker's `nc_atoi`: a non-empty run of ASCII digits that fits in a
/// 32-bit signed int (overflow is refused rather than wrapped).
fn parse_number(text: &str) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    let mut value: i32 = 0;
    for b in text.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i32::from(b - b'0'))?;
    }
    u32::try_from(value).ok()
}

fn parse_port(text: &str) -> Option<u16> {
    parse_number(text)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&p| p != 0)
}

/// `sizeof(sun_path)`: a unix socket path must be shorter.
const UNIX_PATH_MAX: usize = 108;

/// `listen:` per docs/compatibility.md §4.3. The error carries the resolver's complaint, which
/// nutcracker logs on the line before `has an invalid value`.
fn parse_listen(value: &str) -> Result<Listen, (&'static str, Option<String>)> {
    const INVALID: &str = "has an invalid value";
    if value.starts_with('/') {
        let (path, perm) = match value.rfind(' ') {
            Some(at) => (
                value.get(..at).unwrap_or(value),
                match strtol_octal(value.get(at + 1..).unwrap_or("")) {
                    // mode_t is 32 bits: C keeps the low bits of the long.
                    Some(perm) if (perm as u32) <= 0o777 => perm as u32,
                    _ => {
                        return Err((
                            "has an invalid file permission in \"socket_path permission\" format string",
                            None,
                        ))
                    }
                },
            ),
            None => (value, 0),
        };
        if path.len() >= UNIX_PATH_MAX {
            return Err((INVALID, None));
        }
        return Ok(Listen::Unix {
            path: path.to_string(),
            perm,
        });
    }
    let Some(colon) = value.rfind(':') else {
        return Err(("has an invalid \"hostname:port\" format string", None));
    };
    let port_text = value.get(colon + 1..).unwrap_or("");
    let Some(port) = parse_port(port_text) else {
        return Err((
            "has an invalid port in \"hostname:port\" format string",
            None,
        ));
    };
    let host = value.get(..colon).unwrap_or("");
    let why = match crate::resolver::system_lookup(host, port) {
        Ok(addr) => return Ok(Listen::Tcp(addr)),
        Err(why) => why,
    };
    Err((
        INVALID,
        Some(format!(
            "address resolution of node '{host}' service '{port}' failed: {why}"
        )),
    ))
}

/// C's `strtol(text, NULL, 8)`: leading white space, a sign, then octal
/// digits up to the first other byte (none gives 0). `None` when the value
/// does not fit in a long (ERANGE).
fn strtol_octal(text: &str) -> Option<i64> {
    let mut bytes = text
        .bytes()
        .skip_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
        .peekable();
    let negative = match bytes.peek() {
        Some(b'-') => {
            bytes.next();
            true
        }
        Some(b'+') => {
            bytes.next();
            false
        }
        _ => false,
    };
    let mut magnitude: u64 = 0;
    for b in bytes {
        if !(b'0'..=b'7').contains(&b) {
            break;
        }
        magnitude = magnitude.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    let signed = if negative {
        -i128::from(magnitude)
    } else {
        i128::from(magnitude)
    };
    i64::try_from(signed).ok()
}

const BAD_SERVER: &str = "has an invalid \"hostname:port:weight [name]\"or \"/path/unix_socket:weight [name]\" format string";

/// A `servers:` line per docs/compatibility.md §4.4, parsed from the right like `conf_add_server`.
fn parse_server(value: &str, yaml_index: usize) -> Result<ServerConf, &'static str> {
    let unix = value.starts_with('/');
    let (addr_part, name) = match value.rfind(' ') {
        Some(at) => (
            value.get(..at).unwrap_or(""),
            Some(value.get(at + 1..).unwrap_or("")),
        ),
        None => (value, None),
    };
    let colon = addr_part.rfind(':').ok_or(BAD_SERVER)?;
    let weight_text = addr_part.get(colon + 1..).unwrap_or("");
    let rest = addr_part.get(..colon).unwrap_or("");
    // C walks the delimiters " ", ":", ":", "\0" from the right and wants
    // exactly two (unix) or three (tcp) of them to be found.
    let (host, port_text) = if unix {
        if rest.contains(':') {
            return Err(BAD_SERVER);
        }
        (rest, "")
    } else {
        let colon = rest.rfind(':').ok_or(BAD_SERVER)?;
        let host = rest.get(..colon).unwrap_or("");
        if host.contains('\0') {
            return Err(BAD_SERVER);
        }
        (host, rest.get(colon + 1..).unwrap_or(""))
    };
    // A trailing space leaves an empty name, and then C keeps the whole line.
    let pname = match name {
        Some(n) if !n.is_empty() => addr_part,
        _ => value,
    };
    let weight = match parse_number(weight_text) {
        None => {
            return Err("has an invalid weight in \"hostname:port:weight [name]\" format string")
        }
        Some(0) => {
            return Err("has a zero weight in \"hostname:port:weight [name]\" format string")
        }
        Some(w) => w,
    };
    let (addr, default_name) = if unix {
        (
            ServerAddr::Unix {
                path: host.to_string(),
            },
            format!("{host}:"),
        )
    } else {
        let port = parse_port(port_text)
            .ok_or("has an invalid port in \"hostname:port:weight [name]\" format string")?;
        // libmemcached compatibility: the default port is not part of the name.
        let default_name = if port == 11211 {
            host.to_string()
        } else {
            format!("{host}:{port_text}")
        };
        (
            ServerAddr::Tcp {
                host: host.to_string(),
                port,
            },
            default_name,
        )
    };
    Ok(ServerConf {
        name: name.map_or(default_name, str::to_string),
        pname: pname.to_string(),
        addr,
        weight,
        yaml_index,
    })
}

const BAD_SENTINEL: &str = "has an invalid \"hostname:port:weight\" format string";

/// A `sentinels:` line: `host:port:weight`, parsed from the right like a
/// server line; the weight must be a number and is then ignored. Host
/// names are resolved at each connect, as for servers.
fn parse_sentinel(value: &str) -> Result<SentinelConf, &'static str> {
    if value.contains(char::is_whitespace) || value.starts_with('/') {
        return Err(BAD_SENTINEL);
    }
    let (rest, weight) = value.rsplit_once(':').ok_or(BAD_SENTINEL)?;
    let (host, port) = rest.rsplit_once(':').ok_or(BAD_SENTINEL)?;
    if host.is_empty() || host.contains('\0') {
        return Err(BAD_SENTINEL);
    }
    parse_number(weight)
        .ok_or("has an invalid weight in \"hostname:port:weight\" format string")?;
    let port =
        parse_port(port).ok_or("has an invalid port in \"hostname:port:weight\" format string")?;
    Ok(SentinelConf {
        host: host.to_string(),
        port,
    })
}

// ---------------------------------------------------------------------------
// Stage 5: per-pool and cross-pool validation

/// nutcracker's `string_compare`: shorter first, then bytes.
fn name_cmp(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

const DEFAULT_TIMEOUT_MS: Option<u64> = None;
const DEFAULT_BACKLOG: u32 = 512;
const DEFAULT_CLIENT_CONNECTIONS: u32 = 0;
const DEFAULT_REDIS_DB: u32 = 0;
const DEFAULT_SERVER_CONNECTIONS: u32 = 1;
const DEFAULT_SERVER_RETRY_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_SERVER_FAILURE_LIMIT: u32 = 2;
const DEFAULT_EJECT_REPAIR_KEYS: u32 = 1_000_000;

/// A validated pool and the lines its cross-pool checks may point at.
struct Checked {
    pool: PoolConf,
    name_line: usize,
    listen_line: usize,
}

fn check_pool(raw: RawPool) -> Result<Checked, ConfError> {
    let Some((listen_str, listen, listen_line)) = raw.listen else {
        return Err(ConfError::at(
            raw.line,
            "directive \"listen:\" is missing".into(),
        ));
    };
    let server_connections = match raw.server_connections {
        None => DEFAULT_SERVER_CONNECTIONS,
        Some((0, line)) => {
            return Err(ConfError::at(
                line,
                "directive \"server_connections:\" cannot be 0".into(),
            ))
        }
        Some((n, _)) => n,
    };
    let redis = raw.redis.unwrap_or(false);
    if let (false, Some((_, line))) = (redis, &raw.redis_auth) {
        return Err(ConfError::at(
            *line,
            "directive \"redis_auth:\" is only valid for a redis pool".into(),
        ));
    }
    check_sentinels(
        &raw.name,
        &raw.servers,
        &raw.sentinels,
        &raw.sentinel_auth,
        redis,
    )?;
    let auto_eject_hosts = raw.auto_eject_hosts.unwrap_or(false);
    if let (false, Some((true, line))) = (auto_eject_hosts, raw.eject_repair) {
        return Err(ConfError::at(
            line,
            "directive \"eject_repair:\" is only valid with \"auto_eject_hosts: true\"".into(),
        ));
    }
    if let Some((0, line)) = raw.eject_repair_keys {
        return Err(ConfError::at(
            line,
            "directive \"eject_repair_keys:\" cannot be 0".into(),
        ));
    }
    let migrate_from_lines = raw.migrate_from;
    let migrate_rate = match raw.migrate_rate {
        None => DEFAULT_MIGRATE_RATE,
        Some((0, line)) => {
            return Err(ConfError::at(
                line,
                "directive \"migrate_rate:\" cannot be 0".into(),
            ))
        }
        Some((n, _)) => n,
    };
    if let (Some(Distribution::Random), Some((_, line))) =
        (raw.distribution, migrate_from_lines.first())
    {
        // A random pool places nothing, so there is no previous owner.
        return Err(ConfError::at(
            *line,
            "directive \"migrate_from:\" needs a distribution that places keys (ketama or modula)"
                .into(),
        ));
    }
    let mut servers = raw.servers;
    if servers.is_empty() {
        // nutcracker 0.5.0 only logs this and runs a pool that fails every
        // request; refusing it is kinder.
        return Err(ConfError::at(
            raw.line,
            format!("pool '{}' has no servers", raw.name),
        ));
    }
    servers.sort_by(|(a, ..), (b, ..)| name_cmp(&a.name, &b.name));
    for pair in servers.windows(2) {
        if let [(a, a_line, _), (b, b_line, _)] = pair {
            if a.name == b.name {
                return Err(ConfError::at(
                    (*a_line).max(*b_line),
                    format!(
                        "pool '{}' has servers with same name '{}'",
                        raw.name, a.name
                    ),
                ));
            }
        }
    }
    let migrate_from = sorted_servers(&raw.name, migrate_from_lines)?;
    let pool = PoolConf {
        name: raw.name,
        listen_str,
        listen,
        hash: raw.hash.unwrap_or(HashKind::Fnv1a_64),
        hash_tag: raw.hash_tag,
        distribution: raw.distribution.unwrap_or(Distribution::Ketama),
        timeout_ms: match raw.timeout {
            None | Some(0) => DEFAULT_TIMEOUT_MS,
            Some(ms) => Some(u64::from(ms)),
        },
        backlog: raw.backlog.unwrap_or(DEFAULT_BACKLOG),
        // Kept (C resets it to 0): we enforce it, see docs/compatibility.md §13.
        client_connections: raw.client_connections.unwrap_or(DEFAULT_CLIENT_CONNECTIONS),
        redis,
        redis_auth: raw.redis_auth.map(|(auth, _)| auth),
        redis_db: raw.redis_db.unwrap_or(DEFAULT_REDIS_DB),
        preconnect: raw.preconnect.unwrap_or(false),
        auto_eject_hosts,
        server_connections,
        server_retry_timeout_ms: raw
            .server_retry_timeout
            .map_or(DEFAULT_SERVER_RETRY_TIMEOUT_MS, u64::from),
        server_failure_limit: raw
            .server_failure_limit
            .unwrap_or(DEFAULT_SERVER_FAILURE_LIMIT),
        eject_repair: raw.eject_repair.map_or(auto_eject_hosts, |(b, _)| b),
        eject_repair_keys: raw
            .eject_repair_keys
            .map_or(DEFAULT_EJECT_REPAIR_KEYS, |(n, _)| n),
        tcpkeepalive: raw.tcpkeepalive.unwrap_or(false),
        reuseport: raw.reuseport.unwrap_or(false),
        servers: servers.into_iter().map(|(server, ..)| server).collect(),
        sentinels: raw.sentinels.into_iter().map(|(s, _)| s).collect(),
        sentinel_auth: raw.sentinel_auth.map(|(auth, _)| auth),
        migrate_from,
        migrate_rate,
    };
    Ok(Checked {
        pool,
        name_line: raw.line,
        listen_line,
    })
}

/// `sentinels:` and `sentinel_auth:` (our additions): only in a redis pool,
/// no address twice, and every server named, since the name is the master
/// name the sentinels are asked about.
fn check_sentinels(
    pool: &str,
    servers: &[(ServerConf, usize, bool)],
    sentinels: &[(SentinelConf, usize)],
    auth: &Option<(String, usize)>,
    redis: bool,
) -> Result<(), ConfError> {
    if let (true, Some((_, line))) = (sentinels.is_empty(), auth) {
        return Err(ConfError::at(
            *line,
            "directive \"sentinel_auth:\" is only valid with \"sentinels:\"".into(),
        ));
    }
    let Some((_, first)) = sentinels.first() else {
        return Ok(());
    };
    if !redis {
        return Err(ConfError::at(
            *first,
            "directive \"sentinels:\" is only valid for a redis pool".into(),
        ));
    }
    for (i, (s, line)) in sentinels.iter().enumerate() {
        if sentinels.iter().take(i).any(|(t, _)| t == s) {
            return Err(ConfError::at(
                *line,
                format!("pool '{pool}' has sentinel '{s}' twice"),
            ));
        }
    }
    if let Some((s, line, _)) = servers.iter().find(|(.., named)| !named) {
        return Err(ConfError::at(
            *line,
            format!(
                "pool '{pool}' uses sentinels, so server '{}' needs a name: the master name the sentinels know (\"host:port:weight name\")",
                s.pname
            ),
        ));
    }
    Ok(())
}

/// A server list sorted by name (the table's index order), refusing two
/// servers of the same name: `servers:` and `migrate_from:` alike.
fn sorted_servers(
    pool: &str,
    mut servers: Vec<(ServerConf, usize)>,
) -> Result<Vec<ServerConf>, ConfError> {
    servers.sort_by(|(a, _), (b, _)| name_cmp(&a.name, &b.name));
    for pair in servers.windows(2) {
        if let [(a, a_line), (b, b_line)] = pair {
            if a.name == b.name {
                return Err(ConfError::at(
                    (*a_line).max(*b_line),
                    format!("pool '{}' has servers with same name '{}'", pool, a.name),
                ));
            }
        }
    }
    Ok(servers.into_iter().map(|(server, _)| server).collect())
}

fn finish(raw: Vec<RawPool>, path: &str) -> Result<Conf, ConfError> {
    if raw.is_empty() {
        return Err(ConfError::nowhere(format!("'{path}' has no pools")));
    }
    let mut pools = raw
        .into_iter()
        .map(check_pool)
        .collect::<Result<Vec<_>, _>>()?;
    // Stable sorts, like glibc's merge-sort qsort: equal keys keep file order.
    pools.sort_by(|a, b| name_cmp(&a.pool.listen_str, &b.pool.listen_str));
    for pair in pools.windows(2) {
        if let [a, b] = pair {
            if a.pool.listen_str == b.pool.listen_str {
                return Err(ConfError::at(
                    b.listen_line,
                    format!(
                        "pools '{}' and '{}' have the same listen address '{}'",
                        a.pool.name, b.pool.name, a.pool.listen_str
                    ),
                ));
            }
        }
    }
    pools.sort_by(|a, b| name_cmp(&a.pool.name, &b.pool.name));
    for pair in pools.windows(2) {
        if let [a, b] = pair {
            if a.pool.name == b.pool.name {
                return Err(ConfError::at(
                    a.name_line.max(b.name_line),
                    // The missing opening quote is nutcracker's.
                    format!("'{path}' has pools with same name {}'", a.pool.name),
                ));
            }
        }
    }
    Ok(Conf {
        pools: pools.into_iter().map(|c| c.pool).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "t.yml";

    fn parse(text: &str) -> Result<Conf, ConfError> {
        Conf::parse_str(text, F)
    }

    /// The error for `text`, as (line, message).
    fn fails(text: &str) -> (Option<usize>, String) {
        match parse(text) {
            Ok(conf) => panic!("accepted {text:?}: {conf:?}"),
            Err(e) => (e.line, e.message),
        }
    }

    /// A one-pool file: `extra` lines (already indented) go after listen (line 2),
    /// so the first extra line is line 3; the server list follows.
    fn pool(extra: &str) -> String {
        format!("p:\n  listen: 127.0.0.1:22121\n{extra}  servers:\n   - 127.0.0.1:6379:1\n")
    }

    fn one(extra: &str) -> PoolConf {
        match parse(&pool(extra)) {
            Ok(mut conf) if conf.pools.len() == 1 => conf.pools.remove(0),
            other => panic!("{extra:?}: {other:?}"),
        }
    }

    fn directive_error(extra: &str) -> (Option<usize>, String) {
        fails(&pool(extra))
    }

    #[test]
    fn eject_repair_defaults_and_validation() {
        let p = one("");
        assert!(!p.eject_repair, "off without auto_eject_hosts");
        assert_eq!(p.eject_repair_keys, 1_000_000);
        let p = one("  auto_eject_hosts: true\n");
        assert!(p.eject_repair, "on with auto_eject_hosts");
        let p = one("  auto_eject_hosts: true\n  eject_repair: false\n  eject_repair_keys: 5\n");
        assert!(!p.eject_repair);
        assert_eq!(p.eject_repair_keys, 5);
        assert_eq!(
            directive_error("  eject_repair: true\n"),
            (
                Some(3),
                "directive \"eject_repair:\" is only valid with \"auto_eject_hosts: true\"".into()
            )
        );
        assert!(!one("  eject_repair: false\n").eject_repair);
        assert_eq!(
            directive_error("  auto_eject_hosts: true\n  eject_repair_keys: 0\n"),
            (
                Some(4),
                "directive \"eject_repair_keys:\" cannot be 0".into()
            )
        );
        assert_eq!(
            directive_error("  eject_repair: yes\n").1,
            "directive \"eject_repair\" is not \"true\" or \"false\""
        );
        assert_eq!(
            directive_error("  eject_repair_keys: many\n").1,
            "directive \"eject_repair_keys\" is not a number"
        );
    }

    #[test]
    fn defaults() {
        let p = one("");
        assert_eq!(p.name, "p");
        assert_eq!(p.listen_str, "127.0.0.1:22121");
        assert_eq!(p.listen, Listen::Tcp("127.0.0.1:22121".parse().unwrap()));
        assert_eq!(p.hash, HashKind::Fnv1a_64);
        assert_eq!(p.hash_tag, None);
        assert_eq!(p.distribution, Distribution::Ketama);
        assert_eq!(p.timeout_ms, None);
        assert_eq!(p.backlog, 512);
        assert_eq!(p.client_connections, 0);
        assert!(!p.redis);
        assert_eq!(p.redis_auth, None);
        assert_eq!(p.redis_db, 0);
        assert!(!p.preconnect);
        assert!(!p.auto_eject_hosts);
        assert_eq!(p.server_connections, 1);
        assert_eq!(p.server_retry_timeout_ms, 30_000);
        assert_eq!(p.server_failure_limit, 2);
        assert!(!p.tcpkeepalive);
        assert!(!p.reuseport);
        assert_eq!(
            p.servers,
            vec![ServerConf {
                name: "127.0.0.1:6379".into(),
                pname: "127.0.0.1:6379:1".into(),
                addr: ServerAddr::Tcp {
                    host: "127.0.0.1".into(),
                    port: 6379
                },
                weight: 1,
                yaml_index: 0,
            }]
        );
    }

    #[test]
    fn every_directive_is_read() {
        let p = one(concat!(
            "  hash: murmur\n",
            "  hash_tag: \"{}\"\n",
            "  distribution: modula\n",
            "  timeout: 400\n",
            "  backlog: 1024\n",
            "  client_connections: 100\n",
            "  redis: true\n",
            "  redis_auth: secret\n",
            "  redis_db: 3\n",
            "  preconnect: true\n",
            "  auto_eject_hosts: true\n",
            "  server_connections: 4\n",
            "  server_retry_timeout: 2000\n",
            "  server_failure_limit: 5\n",
            "  tcpkeepalive: true\n",
            "  reuseport: true\n",
        ));
        assert_eq!(p.hash, HashKind::Murmur);
        assert_eq!(p.hash_tag, Some(*b"{}"));
        assert_eq!(p.distribution, Distribution::Modula);
        assert_eq!(p.timeout_ms, Some(400));
        assert_eq!(p.backlog, 1024);
        // Enforced by us (docs/compatibility.md §13), so kept rather than reset to 0.
        assert_eq!(p.client_connections, 100);
        assert!(p.redis);
        assert_eq!(p.redis_auth.as_deref(), Some("secret"));
        assert_eq!(p.redis_db, 3);
        assert!(p.preconnect);
        assert!(p.auto_eject_hosts);
        assert_eq!(p.server_connections, 4);
        assert_eq!(p.server_retry_timeout_ms, 2000);
        assert_eq!(p.server_failure_limit, 5);
        assert!(p.tcpkeepalive);
        assert!(p.reuseport);
    }

    #[test]
    fn migrate_from_is_a_second_server_list() {
        let text = concat!(
            "p:\n  listen: 127.0.0.1:22121\n  migrate_rate: 50\n",
            "  migrate_from:\n   - 127.0.0.1:3:1 c\n   - 127.0.0.1:2:1 b\n",
            "  servers:\n   - 127.0.0.1:2:1 b\n   - 127.0.0.1:4:1 d\n",
        );
        let p = parse(text).unwrap().pools.remove(0);
        let names = |v: &[ServerConf]| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&p.servers), ["b", "d"]);
        assert_eq!(names(&p.migrate_from), ["b", "c"]);
        assert_eq!(p.migrate_rate, 50);
        assert_eq!(one("").migrate_from, vec![]);
        assert_eq!(one("").migrate_rate, DEFAULT_MIGRATE_RATE);
    }

    #[test]
    fn migrate_from_is_validated_like_servers() {
        let base = "p:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:2:1\n";
        let (line, msg) = fails(&format!("{base}  migrate_from:\n   - 127.0.0.1:x:1\n"));
        assert_eq!(line, Some(6));
        assert!(
            msg.contains("directive \"migrate_from\" has an invalid port"),
            "{msg}"
        );
        let (_, msg) = fails(&format!(
            "{base}  migrate_from:\n   - 127.0.0.1:3:1 a\n   - 127.0.0.1:4:1 a\n"
        ));
        assert!(msg.contains("has servers with same name 'a'"), "{msg}");
        let (_, msg) = fails(&format!("{base}  migrate_from:\n   - 127.0.0.1:3:0\n"));
        assert!(msg.contains("zero weight"), "{msg}");
        let (_, msg) = fails(&format!("{base}  migrate_rate: 0\n"));
        assert!(msg.contains("\"migrate_rate:\" cannot be 0"), "{msg}");
        let (_, msg) = fails(&format!("{base}  migrate_rate: fast\n"));
        assert!(msg.contains("is not a number"), "{msg}");
        // Only migrate_from may add a sequence, and only once.
        let (_, msg) = fails(&format!(
            "{base}  migrate_from:\n   - 127.0.0.1:3:1\n  migrate_from:\n   - 127.0.0.1:4:1\n"
        ));
        assert!(msg.contains("more than one sequence"), "{msg}");
        let (_, msg) = fails(&format!("{base}  other:\n   - 127.0.0.1:3:1\n"));
        assert!(msg.contains("more than one sequence"), "{msg}");
        let (_, msg) = fails(&format!(
            "{base}  distribution: random\n  migrate_from:\n   - 127.0.0.1:3:1\n"
        ));
        assert!(
            msg.contains("needs a distribution that places keys"),
            "{msg}"
        );
    }

    #[test]
    fn every_hash_and_distribution_name() {
        let hashes = [
            ("one_at_a_time", HashKind::OneAtATime),
            ("md5", HashKind::Md5),
            ("crc16", HashKind::Crc16),
            ("crc32", HashKind::Crc32),
            ("crc32a", HashKind::Crc32a),
            ("fnv1_64", HashKind::Fnv1_64),
            ("fnv1a_64", HashKind::Fnv1a_64),
            ("fnv1_32", HashKind::Fnv1_32),
            ("fnv1a_32", HashKind::Fnv1a_32),
            ("hsieh", HashKind::Hsieh),
            ("murmur", HashKind::Murmur),
            ("jenkins", HashKind::Jenkins),
        ];
        for (name, kind) in hashes {
            assert_eq!(one(&format!("  hash: {name}\n")).hash, kind);
        }
        for (name, dist) in [
            ("ketama", Distribution::Ketama),
            ("modula", Distribution::Modula),
            ("random", Distribution::Random),
        ] {
            assert_eq!(one(&format!("  distribution: {name}\n")).distribution, dist);
        }
    }

    #[test]
    fn timeout_zero_means_none_and_directives_in_any_order() {
        assert_eq!(one("  timeout: 0\n").timeout_ms, None);
        let conf =
            parse("p:\n  servers:\n   - 127.0.0.1:1:1\n  listen: 127.0.0.1:22121\n  hash: md5\n")
                .unwrap();
        assert_eq!(conf.pools[0].hash, HashKind::Md5);
        assert_eq!(conf.pools[0].servers.len(), 1);
    }

    // ---- quirks (docs/compatibility.md §4.1, §4.4)

    #[test]
    fn quoted_values_behave_like_plain_ones() {
        let p = one("  redis: \"true\"\n  preconnect: 'false'\n  timeout: \"100\"\n");
        assert!(p.redis);
        assert!(!p.preconnect);
        assert_eq!(p.timeout_ms, Some(100));
        let conf =
            parse("\"p\":\n  'listen': \"127.0.0.1:22121\"\n  servers:\n   - '127.0.0.1:1:1 x'\n")
                .unwrap();
        assert_eq!(conf.pools[0].name, "p");
        assert_eq!(conf.pools[0].servers[0].name, "x");
    }

    #[test]
    fn hash_tag_may_repeat_a_byte_and_counts_bytes() {
        assert_eq!(one("  hash_tag: \"$$\"\n").hash_tag, Some(*b"$$"));
        // Two bytes, one character: C counts bytes.
        assert_eq!(one("  hash_tag: \"é\"\n").hash_tag, Some([0xc3, 0xa9]));
    }

    #[test]
    fn unquoted_braces_hash_tag_is_a_flow_mapping() {
        assert_eq!(
            directive_error("  hash_tag: {}\n"),
            (
                Some(3),
                "flow mapping start token (12) is disallowed".into()
            )
        );
    }

    #[test]
    fn port_11211_is_left_out_of_the_name() {
        let s = parse_server("10.0.0.1:11211:1", 0).unwrap();
        assert_eq!(s.name, "10.0.0.1");
        assert_eq!(s.pname, "10.0.0.1:11211:1");
        assert_eq!(
            s.addr,
            ServerAddr::Tcp {
                host: "10.0.0.1".into(),
                port: 11211
            }
        );
        // The number counts, not the text.
        assert_eq!(parse_server("h:011211:1", 0).unwrap().name, "h");
        assert_eq!(parse_server("h:11212:1", 0).unwrap().name, "h:11212");
        assert_eq!(parse_server("h:011212:1", 0).unwrap().name, "h:011212");
    }

    #[test]
    fn unnamed_unix_server_name_keeps_a_trailing_colon() {
        let s = parse_server("/tmp/redis-a.sock:1", 0).unwrap();
        assert_eq!(s.name, "/tmp/redis-a.sock:");
        assert_eq!(s.pname, "/tmp/redis-a.sock:1");
        assert_eq!(
            s.addr,
            ServerAddr::Unix {
                path: "/tmp/redis-a.sock".into()
            }
        );
        let s = parse_server("/tmp/redis-b.sock:2 sockb", 3).unwrap();
        assert_eq!((s.name.as_str(), s.weight, s.yaml_index), ("sockb", 2, 3));
        assert_eq!(s.pname, "/tmp/redis-b.sock:2");
    }

    #[test]
    fn named_servers_keep_their_weight() {
        let s = parse_server("127.0.0.1:31005:3 node10", 0).unwrap();
        assert_eq!((s.name.as_str(), s.weight), ("node10", 3));
        assert_eq!(s.pname, "127.0.0.1:31005:3");
    }

    #[test]
    fn server_lines_parse_from_the_right() {
        // The host may itself contain ':'.
        let s = parse_server("::1:6379:2", 0).unwrap();
        assert_eq!(
            s.addr,
            ServerAddr::Tcp {
                host: "::1".into(),
                port: 6379
            }
        );
        assert_eq!(s.name, "::1:6379");
        // A trailing space gives an empty name and C keeps the whole line as pname.
        let s = parse_server("127.0.0.1:6379:1 ", 0).unwrap();
        assert_eq!(s.name, "");
        assert_eq!(s.pname, "127.0.0.1:6379:1 ");
        // An empty host is accepted here; it fails at connect.
        assert_eq!(parse_server(":6379:1", 0).unwrap().name, ":6379");
        // Host names are kept as written, not resolved.
        let s = parse_server("cache-a.example.com:11211:2", 0).unwrap();
        assert_eq!((s.name.as_str(), s.weight), ("cache-a.example.com", 2));
    }

    #[test]
    fn servers_are_sorted_by_name_length_first() {
        let conf = parse(concat!(
            "p:\n",
            "  listen: 127.0.0.1:22121\n",
            "  servers:\n",
            "   - 127.0.0.1:31002:1 node5\n",
            "   - 127.0.0.1:31004:1 node1\n",
            "   - 127.0.0.1:31001:2 n3\n",
            "   - 127.0.0.1:31005:3 node10\n",
            "   - 127.0.0.1:31003:1 n2\n",
        ))
        .unwrap();
        let got: Vec<(&str, usize, u32)> = conf.pools[0]
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.yaml_index, s.weight))
            .collect();
        assert_eq!(
            got,
            vec![
                ("n2", 4, 1),
                ("n3", 2, 2),
                ("node1", 1, 1),
                ("node5", 0, 1),
                ("node10", 3, 3)
            ]
        );
    }

    #[test]
    fn pools_are_sorted_by_name_length_first() {
        let mut text = String::new();
        for (i, name) in ["zz", "b", "aaa", "a", "ab"].iter().enumerate() {
            text.push_str(&format!(
                "{name}:\n  listen: 127.0.0.1:{}\n  servers:\n   - 127.0.0.1:6379:1\n",
                22121 + i
            ));
        }
        let conf = parse(&text).unwrap();
        let names: Vec<&str> = conf.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "ab", "zz", "aaa"]);
        assert_eq!(conf.pools[0].listen_str, "127.0.0.1:22124");
    }

    #[test]
    fn same_address_under_different_names_is_allowed() {
        let conf = parse(
            "p:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:1:1 a\n   - 127.0.0.1:1:1 b\n",
        )
        .unwrap();
        assert_eq!(conf.pools[0].servers.len(), 2);
    }

    // ---- listen (docs/compatibility.md §4.3)

    #[test]
    fn listen_forms() {
        let p = one_listen("localhost:22121");
        assert!(matches!(p, Listen::Tcp(a) if a.port() == 22121 && a.ip().is_loopback()));
        assert_eq!(
            one_listen("::1:22121"),
            Listen::Tcp("[::1]:22121".parse().unwrap())
        );
        assert_eq!(
            one_listen("/tmp/nc.sock"),
            Listen::Unix {
                path: "/tmp/nc.sock".into(),
                perm: 0
            }
        );
        assert_eq!(
            one_listen("/tmp/nc.sock 0666"),
            Listen::Unix {
                path: "/tmp/nc.sock".into(),
                perm: 0o666
            }
        );
        // strtol is lenient: garbage is 0 (no chmod), trailing junk is ignored.
        for (text, perm) in [
            ("garbage", 0),
            ("644x", 0o644),
            ("+7", 7),
            ("", 0),
            ("8", 0),
        ] {
            assert_eq!(
                one_listen(&format!("/tmp/a b {text}")),
                Listen::Unix {
                    path: "/tmp/a b".into(),
                    perm
                },
                "{text:?}"
            );
        }
    }

    fn one_listen(listen: &str) -> Listen {
        let text = format!("p:\n  listen: \"{listen}\"\n  servers:\n   - 127.0.0.1:6379:1\n");
        match parse(&text) {
            Ok(conf) => conf.pools[0].listen.clone(),
            Err(e) => panic!("{listen:?}: {e}"),
        }
    }

    #[test]
    fn strtol_octal_matches_c() {
        assert_eq!(strtol_octal("0777"), Some(0o777));
        assert_eq!(strtol_octal(" \t-1"), Some(-1));
        assert_eq!(strtol_octal("x"), Some(0));
        assert_eq!(strtol_octal("7777777777777777777777"), None);
        assert_eq!(strtol_octal("-1000000000000000000000"), Some(i64::MIN));
    }

    #[test]
    fn numbers_are_digits_only_in_an_i32() {
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("007"), Some(7));
        assert_eq!(parse_number("2147483647"), Some(2_147_483_647));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.5",
            "2147483648",
            "4294967296",
            "x",
        ] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
    }

    // ---- docs/compatibility.md §4.6, one test per message, with its line

    fn directive(name: &str, reason: &str) -> String {
        format!("directive \"{name}\" {reason}")
    }

    #[test]
    fn msg_unknown() {
        assert_eq!(
            directive_error("  hash: md5\n  replicas: x\n"),
            (Some(4), directive("replicas", "is unknown"))
        );
        // A sequence of the wrong name is unknown too when it is the only one.
        assert_eq!(
            fails("p:\n  listen: 127.0.0.1:22121\n  replicas:\n   - 127.0.0.1:1:1\n"),
            (Some(4), directive("replicas", "is unknown"))
        );
    }

    #[test]
    fn msg_duplicate() {
        assert_eq!(
            directive_error("  hash: md5\n  hash: md5\n"),
            (Some(4), directive("hash", "is a duplicate"))
        );
        // Checked before the value: a bad second value is still a duplicate.
        assert_eq!(
            directive_error("  redis: true\n  redis: maybe\n"),
            (Some(4), directive("redis", "is a duplicate"))
        );
        assert_eq!(
            fails("p:\n  listen: 127.0.0.1:1\n  listen: 127.0.0.1:2\n  servers:\n   - a:1:1\n"),
            (Some(3), directive("listen", "is a duplicate"))
        );
    }

    #[test]
    fn msg_not_a_number() {
        for bad in ["-1", "abc", "2147483648", "1.0", "0x10"] {
            assert_eq!(
                directive_error(&format!("  timeout: {bad}\n")),
                (Some(3), directive("timeout", "is not a number")),
                "{bad}"
            );
        }
    }

    #[test]
    fn msg_not_true_or_false() {
        for bad in ["True", "yes", "1", "on"] {
            assert_eq!(
                directive_error(&format!("  redis: {bad}\n")),
                (Some(3), directive("redis", "is not \"true\" or \"false\"")),
                "{bad}"
            );
        }
    }

    #[test]
    fn msg_not_a_valid_hash() {
        assert_eq!(
            directive_error("  hash: FNV1A_64\n"),
            (Some(3), directive("hash", "is not a valid hash"))
        );
    }

    #[test]
    fn msg_not_a_valid_distribution() {
        assert_eq!(
            directive_error("  distribution: consistent\n"),
            (
                Some(3),
                directive("distribution", "is not a valid distribution")
            )
        );
    }

    #[test]
    fn msg_not_a_valid_hash_tag() {
        for bad in ["\"{\"", "\"{}}\"", "abc"] {
            assert_eq!(
                directive_error(&format!("  hash_tag: {bad}\n")),
                (
                    Some(3),
                    directive(
                        "hash_tag",
                        "is not a valid hash tag string with two characters"
                    )
                ),
                "{bad}"
            );
        }
    }

    fn listen_error(listen: &str) -> ConfError {
        let text = format!("p:\n  hash: md5\n  listen: {listen}\n  servers:\n   - a:1:1\n");
        match parse(&text) {
            Ok(_) => panic!("accepted {listen:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn msg_listen_invalid_value() {
        let e = listen_error("\"[::1]:22121\"");
        assert_eq!(e.line, Some(3));
        assert_eq!(e.message, directive("listen", "has an invalid value"));
        let detail = e.detail.unwrap_or_default();
        assert!(
            detail.starts_with("address resolution of node '[::1]' service '22121' failed: "),
            "{detail}"
        );
        // sun_path holds 108 bytes including the NUL.
        let long = format!("/{}", "x".repeat(107));
        assert_eq!(
            listen_error(&long).message,
            directive("listen", "has an invalid value")
        );
        assert!(
            one_listen(&format!("/{}", "x".repeat(106)))
                != Listen::Tcp("0.0.0.0:1".parse().unwrap())
        );
    }

    #[test]
    fn msg_listen_invalid_format() {
        let e = listen_error("localhost");
        assert_eq!(
            (e.line, e.message),
            (
                Some(3),
                directive("listen", "has an invalid \"hostname:port\" format string")
            )
        );
    }

    #[test]
    fn msg_listen_invalid_port() {
        for bad in [
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "\"127.0.0.1:\"",
            "127.0.0.1:x",
            "\"127.0.0.1:-1\"",
        ] {
            let e = listen_error(bad);
            assert_eq!(
                (e.line, e.message),
                (
                    Some(3),
                    directive(
                        "listen",
                        "has an invalid port in \"hostname:port\" format string"
                    )
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn msg_listen_invalid_permission() {
        for bad in ["/tmp/x 1000", "/tmp/x -1", "/tmp/x 77777777777777777777777"] {
            let e = listen_error(bad);
            assert_eq!(
                (e.line, e.message),
                (
                    Some(3),
                    directive(
                        "listen",
                        "has an invalid file permission in \"socket_path permission\" format string"
                    )
                ),
                "{bad}"
            );
        }
    }

    fn server_error(line: &str) -> (Option<usize>, String) {
        fails(&format!(
            "p:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:1:1 ok\n   - \"{line}\"\n"
        ))
    }

    #[test]
    fn msg_server_invalid_format() {
        let want = directive(
            "servers",
            "has an invalid \"hostname:port:weight [name]\"or \"/path/unix_socket:weight [name]\" format string",
        );
        for bad in [
            "127.0.0.1:6379",
            "127.0.0.1",
            "/tmp/a:b:1",
            "x:1 name",
            "a\\0b:1:1",
        ] {
            assert_eq!(server_error(bad), (Some(5), want.clone()), "{bad}");
        }
        // A NUL in a unix path is no delimiter problem in C.
        assert!(parse_server("/tmp/a\0b:1", 0).is_ok());
    }

    #[test]
    fn msg_server_invalid_weight() {
        let want = directive(
            "servers",
            "has an invalid weight in \"hostname:port:weight [name]\" format string",
        );
        for bad in [
            "127.0.0.1:1:x",
            "127.0.0.1:1:1 my name",
            "127.0.0.1:1:",
            "/tmp/s:-1",
        ] {
            assert_eq!(server_error(bad), (Some(5), want.clone()), "{bad}");
        }
    }

    #[test]
    fn msg_server_zero_weight() {
        assert_eq!(
            server_error("127.0.0.1:1:0"),
            (
                Some(5),
                directive(
                    "servers",
                    "has a zero weight in \"hostname:port:weight [name]\" format string"
                )
            )
        );
    }

    #[test]
    fn msg_server_invalid_port() {
        let want = directive(
            "servers",
            "has an invalid port in \"hostname:port:weight [name]\" format string",
        );
        for bad in [
            "127.0.0.1:0:1",
            "127.0.0.1:65536:1",
            "127.0.0.1::1",
            "h:p:1",
        ] {
            assert_eq!(server_error(bad), (Some(5), want.clone()), "{bad}");
        }
        // The weight is checked before the port.
        assert_eq!(
            server_error("127.0.0.1:0:0").1,
            directive(
                "servers",
                "has a zero weight in \"hostname:port:weight [name]\" format string"
            )
        );
    }

    #[test]
    fn msg_document_count() {
        assert_eq!(
            fails(""),
            (
                None,
                "'t.yml' must contain only 1 document; found 0 documents".into()
            )
        );
        assert_eq!(
            fails("# only a comment\n"),
            (
                None,
                "'t.yml' must contain only 1 document; found 0 documents".into()
            )
        );
        assert_eq!(
            fails(&format!("{}---\n{}", pool(""), pool(""))),
            (
                Some(5),
                "'t.yml' must contain only 1 document; found 2 documents".into()
            )
        );
    }

    #[test]
    fn msg_disallowed_tokens() {
        let cases = [
            ("%YAML 1.1\n---\n", 1, "version directive token (3)"),
            (
                "%TAG !e! tag:example.com,2000:\n---\n",
                1,
                "tag directive token (4)",
            ),
            ("---\n", 1, "document start token (5)"),
        ];
        for (head, line, what) in cases {
            assert_eq!(
                fails(&format!("{head}{}", pool(""))),
                (Some(line), format!("{what} is disallowed")),
                "{head:?}"
            );
        }
        assert_eq!(
            fails(&format!("{}...\n", pool(""))),
            (Some(5), "document end token (6) is disallowed".into())
        );
        assert_eq!(
            fails("p:\n  listen: 127.0.0.1:22121\n  servers: [127.0.0.1:1:1]\n"),
            (
                Some(3),
                "flow sequence start token (10) is disallowed".into()
            )
        );
        assert_eq!(
            directive_error("  hash: &h md5\n"),
            (Some(3), "anchor token (19) is disallowed".into())
        );
        assert_eq!(
            directive_error("  hash: !!str md5\n"),
            (Some(3), "tag token (20) is disallowed".into())
        );
        // An alias needs an anchor before it, which is refused first.
        assert_eq!(
            directive_error("  hash: &h md5\n  distribution: *h\n"),
            (Some(3), "anchor token (19) is disallowed".into())
        );
    }

    #[test]
    fn msg_yaml_errors() {
        let (line, msg) = fails("p:\n  listen: 127.0.0.1:22121\n  servers:\n\t- a:1:1\n");
        assert_eq!(line, Some(4));
        assert!(
            msg.starts_with("failed (err 3) to get the next yaml document"),
            "{msg}"
        );
        let (_, msg) = fails("p:\n  listen: 127.0.0.1:22121\n\tservers:\n   - a:1:1\n");
        assert!(
            msg.starts_with("failed (err 3) to get the next yaml document"),
            "{msg}"
        );
        let (line, msg) = directive_error("  hash: *nowhere\n");
        assert_eq!(line, Some(3));
        assert!(
            msg.starts_with("failed (err 5) to get the next yaml document"),
            "{msg}"
        );
        let (line, msg) = fails("p:\n  listen: 127.0.0.1:1\n- x\n");
        assert_eq!(line, Some(3));
        assert!(
            msg.starts_with("failed (err 4) to get the next yaml document"),
            "{msg}"
        );
        let (line, msg) = directive_error("  hash: md\x015\n");
        assert_eq!(line, Some(3));
        assert!(
            msg.starts_with("failed (err 2) to get the next yaml document"),
            "{msg}"
        );
        let e = Conf::parse_bytes(b"p:\n  hash: \xff\n", F).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e
            .message
            .starts_with("failed (err 2) to get the next yaml document"));
    }

    #[test]
    fn msg_invalid_empty_key_at_depth_0() {
        assert_eq!(
            fails("just a scalar\n"),
            (
                Some(1),
                "'t.yml' has invalid empty \"key:\" at depth 0".into()
            )
        );
    }

    #[test]
    fn msg_invalid_mapping_at_depth_1() {
        assert_eq!(
            fails(&format!("{}q: x\n", pool(""))),
            (
                Some(5),
                "'t.yml' has invalid mapping \"key:\" at depth 1".into()
            )
        );
        // A pool with no mapping at all: its value is an empty scalar.
        let (line, msg) = fails("q:\n");
        assert_eq!(msg, "'t.yml' has invalid mapping \"key:\" at depth 1");
        assert!(line.is_some());
    }

    #[test]
    fn msg_more_than_one_key_value_at_depth_1() {
        assert_eq!(
            fails("? a: b\n: c\n").1,
            "'t.yml' has more than one \"key:value\" at depth 1"
        );
    }

    #[test]
    fn msg_depth_greater_than_2() {
        assert_eq!(
            directive_error("  hash:\n    nested: md5\n"),
            (Some(4), "'t.yml' has a depth greater than 2".into())
        );
        assert_eq!(
            fails("p:\n  listen: 127.0.0.1:1\n  servers:\n   - a: 1\n"),
            (Some(4), "'t.yml' has a depth greater than 2".into())
        );
    }

    #[test]
    fn msg_sequence_at_wrong_depth() {
        assert_eq!(
            fails("- a\n- b\n"),
            (
                Some(1),
                "'t.yml' has sequence at depth 0 instead of 2".into()
            )
        );
        assert_eq!(
            fails("p:\n  - a:1:1\n"),
            (
                Some(2),
                "'t.yml' has sequence at depth 1 instead of 2".into()
            )
        );
    }

    #[test]
    fn msg_more_than_one_sequence() {
        assert_eq!(
            fails(&format!(
                "{}  replicas:\n   - 127.0.0.1:26379:1\n",
                pool("")
            )),
            (
                Some(6),
                "'t.yml' has more than one sequence directive".into()
            )
        );
        // `sentinels:` is the one sequence allowed besides `servers:`, once.
        let two = "  sentinels:\n   - 127.0.0.1:26379:1\n  sentinels:\n   - 127.0.0.1:26380:1\n";
        assert_eq!(
            fails(&format!("{}{two}", pool("  redis: true\n"))).1,
            "'t.yml' has more than one sequence directive"
        );
        assert_eq!(
            fails(
                "p:\n  listen: 127.0.0.1:1\n  sentinels:\n   - a\n   - sentinels\n   - - a:1:1\n"
            )
            .1,
            "'t.yml' has more than one sequence directive"
        );
        assert_eq!(
            fails("p:\n  listen: 127.0.0.1:1\n  servers:\n   - - a:1:1\n").1,
            "'t.yml' has more than one sequence directive"
        );
    }

    #[test]
    fn msg_missing_sequence() {
        let want = "'t.yml' missing sequence directive at depth 2".to_string();
        assert_eq!(
            fails("p:\n  listen: 127.0.0.1:1\n"),
            (Some(1), want.clone())
        );
        assert_eq!(
            fails(&format!(
                "{}\nq:\n  listen: 127.0.0.1:2\n  servers:\n",
                pool("")
            )),
            (Some(6), want.clone())
        );
        assert_eq!(
            fails("p:\n  listen: 127.0.0.1:1\n  servers: 127.0.0.1:1:1\n"),
            (Some(1), want)
        );
    }

    #[test]
    fn msg_listen_missing() {
        assert_eq!(
            fails(&format!(
                "{}\nq:\n  hash: md5\n  servers:\n   - a:1:1\n",
                pool("")
            )),
            (Some(6), "directive \"listen:\" is missing".into())
        );
    }

    #[test]
    fn msg_server_connections_zero() {
        assert_eq!(
            directive_error("  hash: md5\n  server_connections: 0\n"),
            (
                Some(4),
                "directive \"server_connections:\" cannot be 0".into()
            )
        );
    }

    #[test]
    fn msg_redis_auth_without_redis() {
        assert_eq!(
            directive_error("  redis_auth: pw\n"),
            (
                Some(3),
                "directive \"redis_auth:\" is only valid for a redis pool".into()
            )
        );
        assert_eq!(
            directive_error("  redis_auth: pw\n  redis: false\n").1,
            "directive \"redis_auth:\" is only valid for a redis pool"
        );
        assert_eq!(
            one("  redis_auth: pw\n  redis: true\n")
                .redis_auth
                .as_deref(),
            Some("pw")
        );
    }

    /// A redis pool with sentinels; `extra` goes between `redis:` and the
    /// lists (first extra line is line 4); servers are named.
    fn sentinel_pool(extra: &str, sentinels: &[&str]) -> String {
        let mut t = format!(
            "p:\n  listen: 127.0.0.1:22121\n  redis: true\n{extra}  servers:\n   - 127.0.0.1:6379:1 m1\n   - 127.0.0.1:6380:1 m2\n  sentinels:\n"
        );
        for s in sentinels {
            t.push_str(&format!("   - {s}\n"));
        }
        t
    }

    #[test]
    fn sentinels_are_read() {
        let conf = parse(&sentinel_pool(
            "  sentinel_auth: spw\n",
            &["127.0.0.1:26379:1", "localhost:26380:7"],
        ))
        .unwrap();
        let p = &conf.pools[0];
        assert_eq!(
            p.sentinels,
            vec![
                SentinelConf {
                    host: "127.0.0.1".into(),
                    port: 26379
                },
                SentinelConf {
                    host: "localhost".into(),
                    port: 26380
                }
            ]
        );
        assert_eq!(p.sentinel_auth.as_deref(), Some("spw"));
        assert_eq!(p.servers[0].name, "m1");
        assert_eq!(p.sentinels[1].to_string(), "localhost:26380");
        // Either list may come first; a lone scalar is one sentinel.
        let first = "p:\n  redis: true\n  sentinels:\n   - 127.0.0.1:26379:1\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:6379:1 m\n";
        assert_eq!(parse(first).unwrap().pools[0].sentinels.len(), 1);
        let scalar = "p:\n  redis: true\n  sentinels: 127.0.0.1:26379:1\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:6379:1 m\n";
        assert_eq!(parse(scalar).unwrap().pools[0].sentinels.len(), 1);
        // Without the key nothing changes.
        assert!(one("").sentinels.is_empty());
        assert_eq!(one("").sentinel_auth, None);
    }

    #[test]
    fn msg_sentinel_addresses() {
        let bad = directive(
            "sentinels",
            "has an invalid \"hostname:port:weight\" format string",
        );
        for addr in [
            "127.0.0.1:26379",
            "26379",
            ":26379:1",
            "/tmp/s:1",
            "\"a:1:1 x\"",
        ] {
            assert_eq!(
                fails(&sentinel_pool("", &[addr])),
                (Some(8), bad.clone()),
                "{addr}"
            );
        }
        assert_eq!(
            fails(&sentinel_pool("", &["127.0.0.1:0:1"])),
            (
                Some(8),
                directive(
                    "sentinels",
                    "has an invalid port in \"hostname:port:weight\" format string"
                )
            )
        );
        assert_eq!(
            fails(&sentinel_pool("", &["127.0.0.1:26379:x"])).1,
            directive(
                "sentinels",
                "has an invalid weight in \"hostname:port:weight\" format string"
            )
        );
        // The second occurrence is the one pointed at.
        assert_eq!(
            fails(&sentinel_pool(
                "",
                &[
                    "127.0.0.1:26379:1",
                    "127.0.0.1:26380:1",
                    "127.0.0.1:26379:2"
                ]
            )),
            (
                Some(10),
                "pool 'p' has sentinel '127.0.0.1:26379' twice".into()
            )
        );
    }

    #[test]
    fn msg_sentinel_misplaced() {
        let memcache = "p:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:6379:1 m\n  sentinels:\n   - 127.0.0.1:26379:1\n";
        assert_eq!(
            fails(memcache),
            (
                Some(6),
                "directive \"sentinels:\" is only valid for a redis pool".into()
            )
        );
        assert_eq!(
            directive_error("  redis: true\n  sentinel_auth: pw\n"),
            (
                Some(4),
                "directive \"sentinel_auth:\" is only valid with \"sentinels:\"".into()
            )
        );
        assert_eq!(
            fails(&sentinel_pool(
                "  sentinel_auth: a\n  sentinel_auth: b\n",
                &["h:1:1"]
            )),
            (Some(5), directive("sentinel_auth", "is a duplicate"))
        );
    }

    #[test]
    fn msg_sentinel_pool_needs_named_servers() {
        let text = "p:\n  listen: 127.0.0.1:1\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1 m\n   - 127.0.0.1:6380:1\n  sentinels:\n   - 127.0.0.1:26379:1\n";
        let (line, msg) = fails(text);
        assert_eq!(line, Some(6));
        assert!(
            msg.starts_with("pool 'p' uses sentinels, so server '127.0.0.1:6380:1' needs a name"),
            "{msg}"
        );
        // A trailing space is no name either.
        let text = text.replace("127.0.0.1:6380:1\n", "\"127.0.0.1:6380:1 \"\n");
        assert!(fails(&text).1.contains("needs a name"));
    }

    #[test]
    fn msg_servers_with_same_name() {
        assert_eq!(
            fails("p:\n  listen: 127.0.0.1:1\n  servers:\n   - h:1:1\n   - x:2:1\n   - h:1:2\n"),
            (Some(6), "pool 'p' has servers with same name 'h:1'".into())
        );
        assert_eq!(
            fails("p:\n  listen: 127.0.0.1:1\n  servers:\n   - h:1:1 a\n   - h:2:1 a\n").1,
            "pool 'p' has servers with same name 'a'"
        );
    }

    #[test]
    fn msg_same_listen_address() {
        let text = format!(
            "{}\nq:\n  listen: 127.0.0.1:22121\n  servers:\n   - a:1:1\n",
            pool("")
        );
        assert_eq!(
            fails(&text),
            (
                Some(7),
                "pools 'p' and 'q' have the same listen address '127.0.0.1:22121'".into()
            )
        );
        // Strings are compared, not addresses.
        let text = format!(
            "{}\nq:\n  listen: localhost:22121\n  servers:\n   - a:1:1\n",
            pool("")
        );
        assert_eq!(parse(&text).map(|c| c.pools.len()), Ok(2));
    }

    #[test]
    fn msg_pools_with_same_name() {
        let text = format!(
            "{}\np:\n  listen: 127.0.0.1:22122\n  servers:\n   - a:1:1\n",
            pool("")
        );
        assert_eq!(
            fails(&text),
            (Some(6), "'t.yml' has pools with same name p'".into())
        );
    }

    #[test]
    fn msg_no_servers() {
        // Only reachable when another directive is the pool's one sequence.
        assert_eq!(
            fails("p:\n  listen:\n   - 127.0.0.1:22121\n"),
            (Some(1), "pool 'p' has no servers".into())
        );
    }

    #[test]
    fn empty_scalars_are_refused() {
        assert_eq!(
            directive_error("  hash:\n  redis: true\n").1,
            directive("hash", "has an empty value")
        );
        assert_eq!(
            directive_error("  hash: \"\"\n"),
            (Some(3), directive("hash", "has an empty value"))
        );
        assert_eq!(
            directive_error("  \"\": md5\n"),
            (Some(3), "'t.yml' has an empty directive name".into())
        );
        assert_eq!(
            fails("\"\":\n  listen: 127.0.0.1:1\n  servers:\n   - a:1:1\n"),
            (Some(1), "'t.yml' has an empty pool name".into())
        );
    }

    #[test]
    fn validation_order() {
        // The first bad directive in file order wins, across pools.
        let text = "a:\n  listen: 127.0.0.1:1\n  hash: bad\n  servers:\n   - x:1:0\n\nb:\n  timeout: x\n  servers:\n   - a:1:1\n";
        assert_eq!(
            fails(text),
            (Some(3), directive("hash", "is not a valid hash"))
        );
        // Structure before directives.
        let text = "a:\n  hash: bad\n  servers:\n   - x:1:1\nb:\n  listen: 127.0.0.1:2\n";
        assert_eq!(
            fails(text).1,
            "'t.yml' missing sequence directive at depth 2"
        );
        // Per-pool checks before cross-pool ones.
        let text = format!(
            "{}\nq:\n  listen: 127.0.0.1:22121\n  servers:\n   - a:1:1\n   - a:1:2\n",
            pool("")
        );
        assert_eq!(fails(&text).1, "pool 'q' has servers with same name 'a:1'");
        // Listen strings before pool names.
        let text = format!(
            "{}\np:\n  listen: 127.0.0.1:22121\n  servers:\n   - a:1:1\n",
            pool("")
        );
        assert_eq!(
            fails(&text).1,
            "pools 'p' and 'p' have the same listen address '127.0.0.1:22121'"
        );
    }

    #[test]
    fn crlf_and_bom_are_read() {
        let text = pool("  hash: md5\n").replace('\n', "\r\n");
        let conf = parse(&text).unwrap();
        assert_eq!(conf.pools[0].hash, HashKind::Md5);
        assert_eq!(conf.pools[0].servers[0].pname, "127.0.0.1:6379:1");
        let text = pool("  hash: bad\n").replace('\n', "\r\n");
        assert_eq!(
            fails(&text),
            (Some(3), directive("hash", "is not a valid hash"))
        );
        let conf = parse(&format!("\u{feff}{}", pool(""))).unwrap();
        assert_eq!(conf.pools[0].name, "p");
    }

    #[test]
    fn describe_and_display() {
        let e = ConfError::at(7, directive("hash", "is not a valid hash"));
        assert_eq!(
            describe(&e, "conf/x.yml"),
            "conf: directive \"hash\" is not a valid hash (file 'conf/x.yml' line 7)"
        );
        assert_eq!(
            e.to_string(),
            "directive \"hash\" is not a valid hash (line 7)"
        );
        let e = ConfError::nowhere(
            "failed to open configuration 'x': No such file or directory".into(),
        );
        assert_eq!(
            describe(&e, "x"),
            "conf: failed to open configuration 'x': No such file or directory"
        );
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let inputs = [
            "",
            ":",
            "::",
            "- ",
            "? ",
            "p:\n  :\n",
            "p:\n  listen:\n",
            "[",
            "{",
            "]",
            "}",
            "&",
            "*",
            "!",
            "%",
            "'",
            "\"",
            "|",
            ">",
            "p: |\n  x\n",
            "p:\n  listen: |\n    /x\n  servers:\n   - >\n     a:1:1\n",
            "p:\n  servers:\n   -\n",
            "p:\n  servers:\n   - \n   - a:1:1\n",
            "\t",
            "\r",
            "\r\n\r\n",
            "a\0b",
            "p:\n  listen: /\n  servers:\n   - /:1\n",
            "p:\n  listen: \" \"\n  servers:\n   - \" \"\n",
            "p:\n  listen: \":\"\n  servers:\n   - \"::\"\n",
            "p:\n  listen: \"/ \"\n  servers:\n   - \"/: \"\n",
        ];
        for text in inputs {
            let _ = parse(text);
        }
        for len in 0..64 {
            let deep: String = "- ".repeat(len) + "x\n";
            let _ = parse(&deep);
            let deep: String = "[".repeat(len);
            let _ = parse(&deep);
        }
    }
}
