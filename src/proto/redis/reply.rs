//! Writers of the replies the proxy makes itself, in RESP2 or RESP3.
//!
//! Each function appends one reply (or one aggregate header, whose
//! elements the caller appends next) to a caller-provided `Vec<u8>`, so a
//! reply costs no allocation beyond that buffer's growth. Where the two
//! protocols differ the function takes the client's [`Proto`]: RESP2 has no
//! null, boolean, double, map, set or verbatim type, so they are written as
//! redis writes them to a RESP2 client (`$-1`, `:1`, a bulk string, a flat
//! array of 2n, an array, a bulk string). Line replies (status, error) are
//! kept on one line: CR and LF in their text become spaces, as a reply
//! holding them would desynchronise the client.
//!
//! Two whole replies are built here too: [`hello`], the map redis 7
//! answers `HELLO` with, and [`info`], an `INFO` text (`# Section` headers,
//! `key:value` lines ending in CRLF, a blank line between sections, as
//! redis-py's and ioredis' parsers read it; ioredis' ready check waits for
//! `loading:0`, and clients gate features on `redis_version`).

/// The protocol a client speaks: RESP2 until it sends `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

impl Proto {
    /// The number `HELLO` takes and reports.
    pub fn version(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// `<c><n>\r\n`.
fn header(out: &mut Vec<u8>, c: u8, n: impl itoa::Integer) {
    out.push(c);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `<c><text>\r\n` with CR and LF in `text` turned into spaces.
fn line(out: &mut Vec<u8>, c: u8, text: &[u8]) {
    out.push(c);
    out.extend(text.iter().map(|&b| match b {
        b'\r' | b'\n' => b' ',
        other => other,
    }));
    out.extend_from_slice(b"\r\n");
}

/// `+<text>`.
pub fn simple(out: &mut Vec<u8>, text: &[u8]) {
    line(out, b'+', text);
}

/// `-<text>`; `text` starts with the error code (`ERR ...`, `NOPROTO ...`).
pub fn error(out: &mut Vec<u8>, text: &[u8]) {
    line(out, b'-', text);
}

/// `:<n>`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    header(out, b':', n);
}

/// `$<len>` and the bytes.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    header(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A missing value: `$-1` (RESP2) or `_`.
pub fn null(proto: Proto, out: &mut Vec<u8>) {
    out.extend_from_slice(match proto {
        Proto::Resp2 => b"$-1\r\n",
        Proto::Resp3 => b"_\r\n",
    });
}

/// A missing aggregate: `*-1` (RESP2) or `_`.
pub fn null_array(proto: Proto, out: &mut Vec<u8>) {
    out.extend_from_slice(match proto {
        Proto::Resp2 => b"*-1\r\n",
        Proto::Resp3 => b"_\r\n",
    });
}

/// `*<n>`: n elements follow.
pub fn array(out: &mut Vec<u8>, n: usize) {
    header(out, b'*', n);
}

/// n key/value pairs follow: `%<n>`, or a flat array `*<2n>` in RESP2.
pub fn map(proto: Proto, out: &mut Vec<u8>, n: usize) {
    match proto {
        Proto::Resp2 => header(out, b'*', n.saturating_mul(2)),
        Proto::Resp3 => header(out, b'%', n),
    }
}

/// n members follow: `~<n>`, or `*<n>` in RESP2.
pub fn set(proto: Proto, out: &mut Vec<u8>, n: usize) {
    match proto {
        Proto::Resp2 => header(out, b'*', n),
        Proto::Resp3 => header(out, b'~', n),
    }
}

/// `#t` / `#f`, or `:1` / `:0` in RESP2.
pub fn boolean(proto: Proto, out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(match (proto, b) {
        (Proto::Resp2, true) => b":1\r\n",
        (Proto::Resp2, false) => b":0\r\n",
        (Proto::Resp3, true) => b"#t\r\n",
        (Proto::Resp3, false) => b"#f\r\n",
    });
}

/// `,<x>`, or the same text as a bulk string in RESP2. The shortest text
/// that reads back as `x`; `inf`, `-inf` and `nan` as redis spells them.
pub fn double(proto: Proto, out: &mut Vec<u8>, x: f64) {
    use std::io::Write;
    let mut text = [0u8; 40];
    let n = if x.is_nan() {
        text.get_mut(..3).map_or(0, |t| {
            t.copy_from_slice(b"nan");
            3
        })
    } else {
        // Display of f64 writes `inf`/`-inf` and at most 25 bytes or so;
        // a failure (never seen) leaves an empty number.
        let mut cur = std::io::Cursor::new(text.as_mut_slice());
        match write!(cur, "{x}") {
            Ok(()) => cur.position() as usize,
            Err(_) => 0,
        }
    };
    let text = text.get(..n).unwrap_or_default();
    match proto {
        Proto::Resp2 => bulk(out, text),
        Proto::Resp3 => line(out, b',', text),
    }
}

/// A text with a three-letter format (`txt`, `mkd`): `=<len>` then
/// `fmt:text` in RESP3, a plain bulk string of the text in RESP2.
pub fn verbatim(proto: Proto, out: &mut Vec<u8>, format: &[u8; 3], text: &[u8]) {
    match proto {
        Proto::Resp2 => bulk(out, text),
        Proto::Resp3 => {
            header(out, b'=', text.len() + 4);
            out.extend_from_slice(format);
            out.push(b':');
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// What the proxy says about itself in its `HELLO` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloInfo<'a> {
    /// `redis`: clients look for it.
    pub server: &'a [u8],
    pub version: &'a [u8],
    /// The client connection's id.
    pub id: i64,
    /// `standalone`: the proxy is not a cluster to its clients.
    pub mode: &'a [u8],
    pub role: &'a [u8],
}

/// The reply to `HELLO` after switching to `proto`: server, version,
/// proto, id, mode, role, modules (none), as redis 7 orders them; a map in
/// RESP3, a flat array of 14 in RESP2.
pub fn hello(proto: Proto, out: &mut Vec<u8>, h: &HelloInfo<'_>) {
    map(proto, out, 7);
    bulk(out, b"server");
    bulk(out, h.server);
    bulk(out, b"version");
    bulk(out, h.version);
    bulk(out, b"proto");
    integer(out, proto.version());
    bulk(out, b"id");
    integer(out, h.id);
    bulk(out, b"mode");
    bulk(out, h.mode);
    bulk(out, b"role");
    bulk(out, h.role);
    bulk(out, b"modules");
    array(out, 0);
}

/// Keys of one database for the `# Keyspace` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbKeys {
    pub db: u32,
    pub keys: u64,
    pub expires: u64,
    pub avg_ttl: u64,
}

/// The facts of an `INFO` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info<'a> {
    /// The lowest version among the backends: what a client may rely on.
    pub redis_version: &'a [u8],
    /// `uname -srm`, as redis shows it.
    pub os: &'a [u8],
    pub process_id: u32,
    pub tcp_port: u16,
    pub uptime_in_seconds: u64,
    pub connected_clients: u64,
    /// Databases with keys; `None` leaves the section empty.
    pub keyspace: Option<&'a [DbKeys]>,
}

/// Sections of the proxy's `INFO`, in order.
const SECTIONS: [&[u8]; 3] = [b"server", b"clients", b"keyspace"];

/// Whether section `name` is asked for by `wanted` (the `INFO` arguments:
/// none, `default`, `all` and `everything` mean every section; names are
/// matched ASCII case-insensitively, unknown ones select nothing).
fn selected(name: &[u8], wanted: &[&[u8]]) -> bool {
    wanted.is_empty()
        || wanted.iter().any(|w| {
            w.eq_ignore_ascii_case(name)
                || [&b"default"[..], b"all", b"everything"]
                    .iter()
                    .any(|all| w.eq_ignore_ascii_case(all))
        })
}

fn field(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(key);
    out.push(b':');
    out.extend(value.iter().map(|&b| match b {
        b'\r' | b'\n' => b' ',
        other => other,
    }));
    out.extend_from_slice(b"\r\n");
}

fn number(out: &mut Vec<u8>, key: &[u8], n: impl itoa::Integer) {
    field(out, key, itoa::Buffer::new().format(n).as_bytes());
}

/// Appends the `INFO` text of the sections `wanted` asks for (see
/// [`selected`]): lines `key:value\r\n` under `# Name\r\n` headers, a blank
/// line before every section but the first, as redis writes it.
pub fn info_text(out: &mut Vec<u8>, info: &Info<'_>, wanted: &[&[u8]]) {
    let mut first = true;
    for name in SECTIONS {
        if !selected(name, wanted) {
            continue;
        }
        if !first {
            out.extend_from_slice(b"\r\n");
        }
        first = false;
        match name {
            b"server" => {
                out.extend_from_slice(b"# Server\r\n");
                field(out, b"redis_version", info.redis_version);
                field(out, b"redis_mode", b"proxy");
                field(out, b"os", info.os);
                number(out, b"process_id", info.process_id);
                number(out, b"tcp_port", info.tcp_port);
                number(out, b"uptime_in_seconds", info.uptime_in_seconds);
                number(out, b"uptime_in_days", info.uptime_in_seconds / 86400);
                field(out, b"loading", b"0");
            }
            b"clients" => {
                out.extend_from_slice(b"# Clients\r\n");
                number(out, b"connected_clients", info.connected_clients);
            }
            _ => {
                out.extend_from_slice(b"# Keyspace\r\n");
                for d in info.keyspace.unwrap_or_default() {
                    out.extend_from_slice(b"db");
                    out.extend_from_slice(itoa::Buffer::new().format(d.db).as_bytes());
                    out.extend_from_slice(b":keys=");
                    out.extend_from_slice(itoa::Buffer::new().format(d.keys).as_bytes());
                    out.extend_from_slice(b",expires=");
                    out.extend_from_slice(itoa::Buffer::new().format(d.expires).as_bytes());
                    out.extend_from_slice(b",avg_ttl=");
                    out.extend_from_slice(itoa::Buffer::new().format(d.avg_ttl).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }
}

/// The whole `INFO` reply: the text as a bulk string (RESP2) or a
/// verbatim `txt` string (RESP3), as redis 7 sends it. The text is written
/// in place and its header put in front of it afterwards (one move of the
/// text, no second buffer).
pub fn info(proto: Proto, out: &mut Vec<u8>, info: &Info<'_>, wanted: &[&[u8]]) {
    let mark = out.len();
    info_text(out, info, wanted);
    let len = out.len() - mark;
    let mut head = Vec::with_capacity(24);
    match proto {
        Proto::Resp2 => header(&mut head, b'$', len),
        Proto::Resp3 => {
            header(&mut head, b'=', len + 4);
            head.extend_from_slice(b"txt:");
        }
    }
    out.splice(mark..mark, head);
    out.extend_from_slice(b"\r\n");
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
    use crate::proto::redis::response::{Progress, RspKind, RspParser};

    const BOTH: [Proto; 2] = [Proto::Resp2, Proto::Resp3];

    /// Writes with `f` after some existing bytes, checks they are kept,
    /// that the reply parses as one whole reply of `kind`, and returns it.
    fn write(f: impl FnOnce(&mut Vec<u8>), kind: RspKind) -> Vec<u8> {
        let mut out = b"keep".to_vec();
        f(&mut out);
        assert_eq!(&out[..4], b"keep");
        let reply = out[4..].to_vec();
        let mut p = RspParser::new();
        let (n, prog) = p.feed(&reply, 0);
        assert_eq!(
            (n, prog),
            (reply.len(), Progress::Complete(reply.len() as u64)),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
        assert_eq!(p.kind, kind, "{:?}", String::from_utf8_lossy(&reply));
        reply
    }

    #[test]
    fn scalars_in_both_protocols() {
        assert_eq!(write(|o| simple(o, b"OK"), RspKind::Status), b"+OK\r\n");
        assert_eq!(
            write(|o| error(o, b"ERR bad\r\nthing"), RspKind::Error),
            b"-ERR bad  thing\r\n"
        );
        assert_eq!(write(|o| integer(o, -42), RspKind::Integer), b":-42\r\n");
        assert_eq!(
            write(|o| bulk(o, b"a\r\nb"), RspKind::Bulk),
            b"$4\r\na\r\nb\r\n"
        );
        assert_eq!(write(|o| bulk(o, b""), RspKind::Bulk), b"$0\r\n\r\n");
        assert_eq!(write(|o| null(Proto::Resp2, o), RspKind::Bulk), b"$-1\r\n");
        assert_eq!(write(|o| null(Proto::Resp3, o), RspKind::Null), b"_\r\n");
        assert_eq!(
            write(|o| null_array(Proto::Resp2, o), RspKind::Array),
            b"*-1\r\n"
        );
        assert_eq!(
            write(|o| null_array(Proto::Resp3, o), RspKind::Null),
            b"_\r\n"
        );
        assert_eq!(
            write(|o| boolean(Proto::Resp2, o, true), RspKind::Integer),
            b":1\r\n"
        );
        assert_eq!(
            write(|o| boolean(Proto::Resp2, o, false), RspKind::Integer),
            b":0\r\n"
        );
        assert_eq!(
            write(|o| boolean(Proto::Resp3, o, true), RspKind::Boolean),
            b"#t\r\n"
        );
        assert_eq!(
            write(|o| boolean(Proto::Resp3, o, false), RspKind::Boolean),
            b"#f\r\n"
        );
        for (x, text) in [
            (1.5, "1.5"),
            (-2.0, "-2"),
            (0.1, "0.1"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ] {
            let r2 = write(|o| double(Proto::Resp2, o, x), RspKind::Bulk);
            assert_eq!(r2, format!("${}\r\n{text}\r\n", text.len()).as_bytes());
            let r3 = write(|o| double(Proto::Resp3, o, x), RspKind::Double);
            assert_eq!(r3, format!(",{text}\r\n").as_bytes());
        }
        assert_eq!(
            write(|o| verbatim(Proto::Resp2, o, b"txt", b"hi"), RspKind::Bulk),
            b"$2\r\nhi\r\n"
        );
        assert_eq!(
            write(
                |o| verbatim(Proto::Resp3, o, b"txt", b"hi"),
                RspKind::Verbatim
            ),
            b"=6\r\ntxt:hi\r\n"
        );
    }

    #[test]
    fn aggregate_headers() {
        let two = |o: &mut Vec<u8>| {
            bulk(o, b"a");
            integer(o, 1);
        };
        let r = write(
            |o| {
                array(o, 2);
                two(o);
            },
            RspKind::Array,
        );
        assert_eq!(r, b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(write(|o| array(o, 0), RspKind::Array), b"*0\r\n");
        let m2 = write(
            |o| {
                map(Proto::Resp2, o, 1);
                two(o);
            },
            RspKind::Array,
        );
        assert!(m2.starts_with(b"*2\r\n"));
        let m3 = write(
            |o| {
                map(Proto::Resp3, o, 1);
                two(o);
            },
            RspKind::Map,
        );
        assert!(m3.starts_with(b"%1\r\n"));
        let s2 = write(
            |o| {
                set(Proto::Resp2, o, 2);
                two(o);
            },
            RspKind::Array,
        );
        assert!(s2.starts_with(b"*2\r\n"));
        let s3 = write(
            |o| {
                set(Proto::Resp3, o, 2);
                two(o);
            },
            RspKind::Set,
        );
        assert!(s3.starts_with(b"~2\r\n"));
    }

    #[test]
    fn hello_as_redis_7() {
        let h = HelloInfo {
            server: b"redis",
            version: b"7.2.4",
            id: 9,
            mode: b"standalone",
            role: b"master",
        };
        let body = b"$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.4\r\n$5\r\nproto\r\n:P\r\n\
$2\r\nid\r\n:9\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
        for proto in BOTH {
            let (kind, head) = match proto {
                Proto::Resp2 => (RspKind::Array, "*14\r\n"),
                Proto::Resp3 => (RspKind::Map, "%7\r\n"),
            };
            let r = write(|o| hello(proto, o, &h), kind);
            let want =
                String::from_utf8_lossy(body).replace(":P", &format!(":{}", proto.version()));
            assert_eq!(String::from_utf8_lossy(&r), format!("{head}{want}"));
        }
    }

    fn sample<'a>(keyspace: Option<&'a [DbKeys]>) -> Info<'a> {
        Info {
            redis_version: b"6.2.14",
            os: b"Linux 6.1.0 x86_64",
            process_id: 4242,
            tcp_port: 22121,
            uptime_in_seconds: 90061,
            connected_clients: 3,
            keyspace,
        }
    }

    /// `INFO` as redis-py's `parse_info` and ioredis' ready check read it:
    /// `key:value` on CRLF-ended lines, `#` comments, blank separators.
    fn parse_info(text: &str) -> Vec<(String, String)> {
        assert!(text.ends_with("\r\n") && !text.ends_with("\r\n\r\n"));
        text.split("\r\n")
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn info_sections() {
        let dbs = [DbKeys {
            db: 0,
            keys: 12,
            expires: 1,
            avg_ttl: 30,
        }];
        let mut text = Vec::new();
        info_text(&mut text, &sample(Some(&dbs)), &[]);
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("# Server\r\nredis_version:6.2.14\r\nredis_mode:proxy\r\n"));
        assert!(text.contains("\r\n\r\n# Clients\r\nconnected_clients:3\r\n\r\n# Keyspace\r\n"));
        assert!(text.ends_with("db0:keys=12,expires=1,avg_ttl=30\r\n"));
        let fields = parse_info(&text);
        for (k, v) in [
            ("redis_version", "6.2.14"),
            ("os", "Linux 6.1.0 x86_64"),
            ("process_id", "4242"),
            ("tcp_port", "22121"),
            ("uptime_in_seconds", "90061"),
            ("uptime_in_days", "1"),
            ("loading", "0"),
            ("connected_clients", "3"),
        ] {
            assert!(fields.contains(&(k.into(), v.into())), "{k}: {fields:?}");
        }
        // One section, any case; unknown sections give nothing.
        let mut one = Vec::new();
        info_text(&mut one, &sample(None), &[b"CLIENTS"]);
        assert_eq!(one, b"# Clients\r\nconnected_clients:3\r\n");
        let mut ks = Vec::new();
        info_text(&mut ks, &sample(None), &[b"keyspace"]);
        assert_eq!(ks, b"# Keyspace\r\n");
        let mut none = Vec::new();
        info_text(&mut none, &sample(None), &[b"replication"]);
        assert!(none.is_empty());
        let mut all = Vec::new();
        info_text(&mut all, &sample(Some(&dbs)), &[b"everything"]);
        assert_eq!(all, text.as_bytes());
    }

    #[test]
    fn info_replies() {
        let mut text = Vec::new();
        info_text(&mut text, &sample(None), &[b"server"]);
        let r2 = write(
            |o| info(Proto::Resp2, o, &sample(None), &[b"server"]),
            RspKind::Bulk,
        );
        let mut want = format!("${}\r\n", text.len()).into_bytes();
        want.extend_from_slice(&text);
        want.extend_from_slice(b"\r\n");
        assert_eq!(r2, want);
        let r3 = write(
            |o| info(Proto::Resp3, o, &sample(None), &[b"server"]),
            RspKind::Verbatim,
        );
        let mut want = format!("={}\r\ntxt:", text.len() + 4).into_bytes();
        want.extend_from_slice(&text);
        want.extend_from_slice(b"\r\n");
        assert_eq!(r3, want);
    }
}
