//! What to do with a parsed request: one pure decision per request, made
//! from the command, its arguments and the pool's settings, and carried out
//! by `request.rs`. Nothing here touches a socket, a queue or a counter, so
//! every rule can be tested on its own (see the tests below).
//!
//! The decision is a [`Plan`]: a reply the proxy makes itself, a forward of
//! the whole request to the owner of one key, or a split into one fragment
//! per server, merged back into one reply. Placement of the key itself is
//! [`crate::topology::Topology::route`], the other pure half.

use crate::conf::PoolConf;
use crate::msg::Merge;
use crate::proto::memcache::request::McCmd;
use crate::proto::redis::command::Cmd;
use std::borrow::Cow;

/// The key keyless forwarded commands are routed by (docs/compatibility.md,
/// placement).
pub const PLACEHOLDER: &[u8] = b"placeholder";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The proxy answers with these bytes.
    Reply(Cow<'static, [u8]>),
    /// The proxy answers, then closes the client (QUIT).
    ReplyClose(&'static [u8]),
    /// AUTH checked against `redis_auth`: the reply, and whether the client
    /// is authenticated from now on.
    Auth { ok: bool, reply: &'static [u8] },
    /// The whole request goes to the owner of the key at these input
    /// offsets, or (keyless) of [`PLACEHOLDER`].
    Forward(Option<(u64, u64)>),
    /// One fragment per server, `step` arguments per key after the name,
    /// each fragment sent as command `name`, merged back by `merge`.
    Split {
        merge: Merge,
        step: usize,
        name: &'static [u8],
    },
}

/// The arguments of a parsed request, as the planner reads them.
pub trait Args {
    fn count(&self) -> usize;
    /// The bytes of argument `i` (0 is the command name); empty if absent.
    fn bytes(&mut self, i: usize) -> &[u8];
    /// The input offsets of argument `i`'s data.
    fn range(&self, i: usize) -> Option<(u64, u64)>;
}

/// The plan for a redis request whose command is `cmd` (`None`: not in the
/// command table).
pub fn redis(conf: &PoolConf, authed: bool, cmd: Option<Cmd>, args: &mut dyn Args) -> Plan {
    let Some(cmd) = cmd else {
        let name = printable(args.bytes(0), 64);
        crate::log_info!("parsed unsupported command '{}'", name);
        return reply(format!("-ERR unsupported command '{name}'\r\n"));
    };
    if conf.redis_auth.is_some() && !authed && !matches!(cmd, Cmd::Auth | Cmd::Quit) {
        return Plan::Reply(Cow::Borrowed(b"-NOAUTH Authentication required\r\n"));
    }
    let n = args.count();
    if !cmd.arity_ok(n) {
        let name = printable(args.bytes(0), 64).to_ascii_lowercase();
        return reply(format!(
            "-ERR wrong number of arguments for '{name}' command\r\n"
        ));
    }
    match cmd {
        Cmd::Ping => match n {
            1 => Plan::Reply(Cow::Borrowed(b"+PONG\r\n")),
            _ => {
                let mut r = Vec::new();
                crate::proto::redis::write_bulk(&mut r, args.bytes(1));
                Plan::Reply(Cow::Owned(r))
            }
        },
        Cmd::Quit => Plan::ReplyClose(b"+OK\r\n"),
        Cmd::Auth => {
            let given = args.bytes(1);
            let (ok, reply): (bool, &'static [u8]) = match &conf.redis_auth {
                None => (false, b"-ERR Client sent AUTH, but no password is set\r\n"),
                Some(pw) if pw.as_bytes() == given => (true, b"+OK\r\n"),
                Some(_) => (false, b"-ERR invalid password\r\n"),
            };
            Plan::Auth { ok, reply }
        }
        Cmd::Hello => match (n, args.bytes(1)) {
            (1, _) | (2, b"2") => Plan::Reply(Cow::Owned(hello_reply())),
            (_, b"2") => Plan::Reply(Cow::Borrowed(
                b"-ERR HELLO options are not supported by the proxy\r\n",
            )),
            _ => Plan::Reply(Cow::Borrowed(b"-NOPROTO unsupported protocol version\r\n")),
        },
        Cmd::Command | Cmd::Lolwut => Plan::Forward(None),
        Cmd::Eval => match parse_digits(args.bytes(2)) {
            Some(k) if k >= 1 && k as usize <= n.saturating_sub(3) => Plan::Forward(args.range(3)),
            Some(0) => Plan::Reply(Cow::Borrowed(
                b"-ERR EVAL without keys cannot be routed by the proxy\r\n",
            )),
            Some(_) => Plan::Reply(Cow::Borrowed(
                b"-ERR Number of keys can't be greater than number of args\r\n",
            )),
            None => Plan::Reply(Cow::Borrowed(
                b"-ERR value is not an integer or out of range\r\n",
            )),
        },
        c if c.is_fragmentable() => {
            let step = if c == Cmd::Mset { 2 } else { 1 };
            if n - 1 == step {
                Plan::Forward(args.range(1))
            } else {
                let merge = match c {
                    Cmd::Mget => Merge::Array,
                    Cmd::Mset => Merge::Ok,
                    _ => Merge::Sum,
                };
                Plan::Split {
                    merge,
                    step,
                    name: c.frag_name(),
                }
            }
        }
        _ => Plan::Forward(args.range(1)),
    }
}

/// The plan for a memcached request with `nkeys` keys, the first at
/// `first`.
pub fn memcache(cmd: McCmd, nkeys: usize, first: Option<(u64, u64)>) -> Plan {
    match cmd {
        // memcached closes without a word.
        McCmd::Quit => Plan::ReplyClose(b""),
        McCmd::Version => Plan::Forward(None),
        McCmd::Get if nkeys > 1 => Plan::Split {
            merge: Merge::Values,
            step: 1,
            name: b"get ",
        },
        McCmd::Gets if nkeys > 1 => Plan::Split {
            merge: Merge::Values,
            step: 1,
            name: b"gets ",
        },
        _ => Plan::Forward(first),
    }
}

fn reply(s: String) -> Plan {
    Plan::Reply(Cow::Owned(s.into_bytes()))
}

/// `HELLO` / `HELLO 2` as redis 7 answers it in RESP2.
fn hello_reply() -> Vec<u8> {
    let mut r = b"*14\r\n".to_vec();
    for (k, v) in [
        ("server", "redis"),
        ("version", "7.0.0"),
        ("proto", ""),
        ("id", ""),
        ("mode", "standalone"),
        ("role", "master"),
    ] {
        crate::proto::redis::write_bulk(&mut r, k.as_bytes());
        match k {
            "proto" => r.extend_from_slice(b":2\r\n"),
            "id" => r.extend_from_slice(b":0\r\n"),
            _ => crate::proto::redis::write_bulk(&mut r, v.as_bytes()),
        }
    }
    crate::proto::redis::write_bulk(&mut r, b"modules");
    r.extend_from_slice(b"*0\r\n");
    r
}

/// Digits only (the command line's number rule), bounded.
pub fn parse_digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// A name for an error message: printable ASCII kept, the rest escaped.
pub fn printable(b: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &c in b.iter().take(max) {
        if c.is_ascii_graphic() || c == b' ' {
            s.push(char::from(c));
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::Conf;

    /// Arguments held in memory, offsets made up as 100 * index.
    struct Words(Vec<Vec<u8>>);

    impl Args for Words {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn bytes(&mut self, i: usize) -> &[u8] {
            self.0.get(i).map_or(&[], |v| v.as_slice())
        }
        fn range(&self, i: usize) -> Option<(u64, u64)> {
            self.0
                .get(i)
                .map(|v| (100 * i as u64, 100 * i as u64 + v.len() as u64))
        }
    }

    fn pool(extra: &str) -> PoolConf {
        let yaml = format!(
            "a:\n  listen: 127.0.0.1:1\n  redis: true\n{extra}  servers:\n   - 127.0.0.1:2:1\n"
        );
        match Conf::parse_str(&yaml, "t.yml") {
            Ok(mut c) => c.pools.remove(0),
            Err(e) => panic!("{e:?}"),
        }
    }

    fn plan(conf: &PoolConf, authed: bool, words: &[&str]) -> Plan {
        let mut w = Words(words.iter().map(|s| s.as_bytes().to_vec()).collect());
        let lower = words[0].to_ascii_lowercase();
        redis(conf, authed, Cmd::lookup(lower.as_bytes()), &mut w)
    }

    fn bytes(p: &Plan) -> &[u8] {
        match p {
            Plan::Reply(b) => b,
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn local_replies() {
        let c = pool("");
        assert_eq!(bytes(&plan(&c, false, &["PING"])), b"+PONG\r\n");
        assert_eq!(bytes(&plan(&c, false, &["ping", "hi"])), b"$2\r\nhi\r\n");
        assert_eq!(plan(&c, false, &["quit"]), Plan::ReplyClose(b"+OK\r\n"));
        assert_eq!(
            bytes(&plan(&c, false, &["nosuch", "x"])),
            b"-ERR unsupported command 'nosuch'\r\n"
        );
        assert_eq!(
            bytes(&plan(&c, false, &["GET"])),
            b"-ERR wrong number of arguments for 'get' command\r\n"
        );
        assert_eq!(
            bytes(&plan(&c, false, &["hello", "3"])),
            b"-NOPROTO unsupported protocol version\r\n"
        );
        assert!(bytes(&plan(&c, false, &["hello"])).starts_with(b"*14\r\n"));
    }

    #[test]
    fn auth_gates_everything_but_auth_and_quit() {
        let c = pool("  redis_auth: pw\n");
        assert_eq!(
            bytes(&plan(&c, false, &["get", "k"])),
            b"-NOAUTH Authentication required\r\n"
        );
        assert_eq!(
            plan(&c, true, &["get", "k"]),
            Plan::Forward(Some((100, 101)))
        );
        assert_eq!(
            plan(&c, false, &["auth", "pw"]),
            Plan::Auth {
                ok: true,
                reply: b"+OK\r\n"
            }
        );
        assert!(matches!(
            plan(&c, false, &["auth", "no"]),
            Plan::Auth { ok: false, .. }
        ));
    }

    #[test]
    fn forwards_and_splits() {
        let c = pool("");
        assert_eq!(plan(&c, false, &["command"]), Plan::Forward(None));
        assert_eq!(
            plan(&c, false, &["mget", "a"]),
            Plan::Forward(Some((100, 101)))
        );
        assert_eq!(
            plan(&c, false, &["mget", "a", "b"]),
            Plan::Split {
                merge: Merge::Array,
                step: 1,
                name: b"mget"
            }
        );
        assert_eq!(
            plan(&c, false, &["mset", "a", "1", "b", "2"]),
            Plan::Split {
                merge: Merge::Ok,
                step: 2,
                name: b"mset"
            }
        );
        assert_eq!(
            plan(&c, false, &["eval", "s", "1", "k", "x"]),
            Plan::Forward(Some((300, 301)))
        );
        assert!(bytes(&plan(&c, false, &["eval", "s", "0", "x"])).starts_with(b"-ERR EVAL without"));
        assert_eq!(
            memcache(McCmd::Get, 3, Some((0, 1))),
            Plan::Split {
                merge: Merge::Values,
                step: 1,
                name: b"get "
            }
        );
        assert_eq!(
            memcache(McCmd::Get, 1, Some((0, 1))),
            Plan::Forward(Some((0, 1)))
        );
        assert_eq!(memcache(McCmd::Quit, 0, None), Plan::ReplyClose(b""));
    }
}
