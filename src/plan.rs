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
use crate::proto::redis::command::{
    client_sub, parse_count, parse_hello, parse_scan, parse_select, script_sub, ArgError,
    ClientSub, Cmd, Keys, ScriptSub, Spec,
};
use crate::proto::redis::reply::{self, Proto};
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
    Auth {
        ok: bool,
        reply: &'static [u8],
    },
    /// The whole request goes to the owner of the key at these input
    /// offsets, or (keyless) of [`PLACEHOLDER`].
    Forward(Option<(u64, u64)>),
    /// The whole request goes to the one server that owns every key at
    /// these argument positions; keys on different servers are refused
    /// (the request is never split or sent to the wrong server).
    ForwardKeys(Vec<usize>),
    /// One fragment per server, `step` arguments per key after the name,
    /// each fragment sent as command `name`, merged back by `merge`.
    Split {
        merge: Merge,
        step: usize,
        name: &'static [u8],
    },
    /// The same request to every server of the pool, merged by `merge`.
    FanOut(Merge),
    /// `INFO [section ...]`: the backends' INFO, merged into the proxy's.
    Info,
    /// `SCAN`: server `cursor % n` is asked for its cursor `cursor / n`.
    Scan {
        cursor: u64,
    },
    /// Local client state changes, answered with the reply.
    SetName(Option<Vec<u8>>),
    /// `HELLO` that switches to RESP2 or stays: answered locally.
    Hello2 {
        setname: Option<Vec<u8>>,
    },
    /// `HELLO 3`: asked of a backend on a RESP3 connection, so that a
    /// backend without RESP3 gets the client `NOPROTO`.
    Hello3 {
        setname: Option<Vec<u8>>,
    },
    /// Transactions (see `transaction.rs`).
    Multi,
    Exec,
    Discard,
    /// Inside MULTI: queued, to be sent with the whole block at EXEC; the
    /// argument positions of its keys.
    Queue(Vec<usize>),
    /// Inside MULTI, a command that cannot be part of a transaction on one
    /// server: the error, and the transaction is aborted.
    QueueError(Cow<'static, [u8]>),
    /// memcached `stats`: answered by the proxy (its own figures).
    McStats,
    /// memcached `gat`/`gats` of several keys: one server must own them
    /// all (the exptime between verb and keys keeps them from being split).
    McOneServer,
}

/// What the planner knows of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientState<'a> {
    pub authed: bool,
    pub proto: Proto,
    pub in_tx: bool,
    pub id: u64,
    pub name: Option<&'a [u8]>,
}

/// The arguments of a parsed request, as the planner reads them.
pub trait Args {
    fn count(&self) -> usize;
    /// The bytes of argument `i` (0 is the command name); empty if absent.
    fn bytes(&mut self, i: usize) -> &[u8];
    /// The input offsets of argument `i`'s data.
    fn range(&self, i: usize) -> Option<(u64, u64)>;
}

/// Copies of the first `n` arguments, for the argument parsers of the
/// commands the proxy answers itself (rare, and short).
fn owned(args: &mut dyn Args, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| args.bytes(i).to_vec()).collect()
}

fn err_reply(e: ArgError, v: &[Vec<u8>]) -> Plan {
    let refs: Vec<&[u8]> = v.iter().map(|a| a.as_slice()).collect();
    let mut r = Vec::new();
    e.write(&refs, &mut r);
    Plan::Reply(Cow::Owned(r))
}

fn status(text: &'static [u8]) -> Plan {
    Plan::Reply(Cow::Borrowed(text))
}

/// The positions of a request's keys (`None`: the request cannot hold
/// them; redis refuses it with its own error, so it is forwarded by its
/// first key and redis answers).
fn key_positions(spec: Spec, args: &mut dyn Args) -> Option<Vec<usize>> {
    let numkeys = match spec.keys.numkeys_at() {
        Some(at) => Some(parse_count(args.bytes(at))?),
        None => None,
    };
    Some(spec.keys.positions(args.count(), numkeys)?.collect())
}

/// The plan for a redis request whose table entry is `spec` (`None`: not
/// in the table, or not served).
pub fn redis(
    conf: &PoolConf,
    client: ClientState,
    spec: Option<Spec>,
    args: &mut dyn Args,
) -> Plan {
    let Some(spec) = spec else {
        let name = printable(args.bytes(0), 64);
        crate::log_info!("parsed unsupported command '{}'", name);
        return reply(format!("-ERR unsupported command '{name}'\r\n"));
    };
    let cmd = spec.cmd;
    if conf.redis_auth.is_some()
        && !client.authed
        && !matches!(cmd, Cmd::Auth | Cmd::Quit | Cmd::Hello)
    {
        return status(b"-NOAUTH Authentication required\r\n");
    }
    let n = args.count();
    if !cmd.arity_ok(n) {
        let name = printable(args.bytes(0), 64).to_ascii_lowercase();
        let r = format!("-ERR wrong number of arguments for '{name}' command\r\n");
        return if client.in_tx {
            Plan::QueueError(Cow::Owned(r.into_bytes()))
        } else {
            reply(r)
        };
    }
    if client.in_tx {
        return queue(spec, args);
    }
    match cmd {
        Cmd::Ping => match n {
            1 => status(b"+PONG\r\n"),
            _ => {
                let mut r = Vec::new();
                reply::bulk(&mut r, args.bytes(1));
                Plan::Reply(Cow::Owned(r))
            }
        },
        Cmd::Echo => {
            let mut r = Vec::new();
            reply::bulk(&mut r, args.bytes(1));
            Plan::Reply(Cow::Owned(r))
        }
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
        Cmd::Hello => hello(conf, client, args),
        Cmd::Select => {
            let v = owned(args, n);
            let refs: Vec<&[u8]> = v.iter().map(|a| a.as_slice()).collect();
            match parse_select(&refs) {
                Ok(db) if db == 0 || db == i64::from(conf.redis_db) => status(b"+OK\r\n"),
                Ok(_) => reply(format!(
                    "-ERR SELECT is not supported by the proxy: pool '{}' uses database {} (its redis_db)\r\n",
                    conf.name, conf.redis_db
                )),
                Err(e) => err_reply(e, &v),
            }
        }
        Cmd::Client => client_cmd(client, args),
        Cmd::Info => Plan::Info,
        Cmd::Script => {
            let v = owned(args, n.min(3));
            let refs: Vec<&[u8]> = v.iter().map(|a| a.as_slice()).collect();
            match script_sub(&refs) {
                ScriptSub::Load => Plan::FanOut(Merge::Same),
                ScriptSub::Exists => Plan::FanOut(Merge::AllOf),
                ScriptSub::Flush => Plan::FanOut(Merge::Ok),
                ScriptSub::Other => reply(format!(
                    "-ERR SCRIPT {} is not supported by the proxy (LOAD, EXISTS and FLUSH are)\r\n",
                    printable(args.bytes(1), 32).to_ascii_uppercase()
                )),
            }
        }
        Cmd::Scan => {
            let v = owned(args, n);
            let refs: Vec<&[u8]> = v.iter().map(|a| a.as_slice()).collect();
            match parse_scan(&refs) {
                Ok(s) => Plan::Scan { cursor: s.cursor },
                Err(e) => err_reply(e, &v),
            }
        }
        Cmd::Multi => Plan::Multi,
        Cmd::Exec => status(b"-ERR EXEC without MULTI\r\n"),
        Cmd::Discard => status(b"-ERR DISCARD without MULTI\r\n"),
        Cmd::Watch => {
            status(b"-ERR WATCH is not supported by the proxy (server connections are shared)\r\n")
        }
        Cmd::Unwatch => status(b"+OK\r\n"),
        Cmd::Command | Cmd::Lolwut => Plan::Forward(None),
        Cmd::Eval => match parse_digits(args.bytes(2)) {
            Some(0) => status(b"-ERR EVAL without keys cannot be routed by the proxy\r\n"),
            Some(k) if k as usize <= n.saturating_sub(3) => match key_positions(spec, args) {
                Some(keys) if keys.len() > 1 => Plan::ForwardKeys(keys),
                _ => Plan::Forward(args.range(3)),
            },
            Some(_) => status(b"-ERR Number of keys can't be greater than number of args\r\n"),
            None => status(b"-ERR value is not an integer or out of range\r\n"),
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
        _ => match spec.keys {
            Keys::None | Keys::First => Plan::Forward(args.range(1)),
            _ => match key_positions(spec, args) {
                Some(keys) if keys.len() > 1 => Plan::ForwardKeys(keys),
                _ => Plan::Forward(args.range(1)),
            },
        },
    }
}

/// A command inside MULTI.
fn queue(spec: Spec, args: &mut dyn Args) -> Plan {
    match spec.cmd {
        Cmd::Multi => Plan::QueueError(Cow::Borrowed(b"-ERR MULTI calls can not be nested\r\n")),
        Cmd::Exec => Plan::Exec,
        Cmd::Discard => Plan::Discard,
        Cmd::Watch => {
            Plan::QueueError(Cow::Borrowed(b"-ERR WATCH inside MULTI is not allowed\r\n"))
        }
        Cmd::Ping | Cmd::Echo | Cmd::Command => Plan::Queue(Vec::new()),
        Cmd::Quit
        | Cmd::Auth
        | Cmd::Hello
        | Cmd::Select
        | Cmd::Client
        | Cmd::Info
        | Cmd::Script
        | Cmd::Scan
        | Cmd::Lolwut
        | Cmd::Unwatch => {
            let name = printable(args.bytes(0), 32).to_ascii_uppercase();
            Plan::QueueError(Cow::Owned(
                format!("-ERR {name} inside MULTI is not supported by the proxy\r\n").into_bytes(),
            ))
        }
        Cmd::Eval if parse_digits(args.bytes(2)) == Some(0) => Plan::QueueError(Cow::Borrowed(
            b"-ERR EVAL without keys cannot be routed by the proxy\r\n",
        )),
        _ => match key_positions(spec, args) {
            Some(keys) => Plan::Queue(keys),
            None => Plan::Queue(vec![1]),
        },
    }
}

fn hello(conf: &PoolConf, client: ClientState, args: &mut dyn Args) -> Plan {
    let n = args.count();
    let v = owned(args, n);
    let refs: Vec<&[u8]> = v.iter().map(|a| a.as_slice()).collect();
    let h = match parse_hello(&refs) {
        Ok(h) => h,
        Err(e) => return err_reply(e, &v),
    };
    if let Some((_, pass)) = h.auth {
        let given = v.get(pass).map(|p| p.as_slice()).unwrap_or_default();
        match &conf.redis_auth {
            Some(pw) if pw.as_bytes() == given => {}
            Some(_) => {
                return status(
                    b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                )
            }
            None => return status(b"-ERR Client sent AUTH, but no password is set\r\n"),
        }
    } else if conf.redis_auth.is_some() && !client.authed {
        return status(b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n");
    }
    let setname = h.setname.and_then(|i| v.get(i).cloned());
    match h.proto.unwrap_or(client.proto) {
        Proto::Resp3 => Plan::Hello3 { setname },
        Proto::Resp2 => Plan::Hello2 { setname },
    }
}

fn client_cmd(client: ClientState, args: &mut dyn Args) -> Plan {
    let n = args.count().min(4);
    let v = owned(args, n);
    let refs: Vec<&[u8]> = v.iter().map(|a| a.as_slice()).collect();
    match client_sub(&refs) {
        Err(e) => err_reply(e, &v),
        Ok(ClientSub::SetInfo(_)) => status(b"+OK\r\n"),
        Ok(ClientSub::SetName) => {
            let name = v.get(2).cloned().unwrap_or_default();
            Plan::SetName((!name.is_empty()).then_some(name))
        }
        Ok(ClientSub::GetName) => {
            let mut r = Vec::new();
            match client.name {
                Some(n) => reply::bulk(&mut r, n),
                None => reply::null(client.proto, &mut r),
            }
            Plan::Reply(Cow::Owned(r))
        }
        Ok(ClientSub::Id) => {
            let mut r = Vec::new();
            reply::integer(&mut r, i64::try_from(client.id).unwrap_or(i64::MAX));
            Plan::Reply(Cow::Owned(r))
        }
        Ok(ClientSub::Other) => reply(format!(
            "-ERR CLIENT {} is not supported by the proxy\r\n",
            printable(v.get(1).map(|a| a.as_slice()).unwrap_or_default(), 32).to_ascii_uppercase()
        )),
    }
}

/// The plan for a memcached request with `nkeys` keys, the first at
/// `first`.
pub fn memcache(cmd: McCmd, nkeys: usize, first: Option<(u64, u64)>) -> Plan {
    match cmd {
        // memcached closes without a word.
        McCmd::Quit => Plan::ReplyClose(b""),
        McCmd::Version => Plan::Forward(None),
        McCmd::Stats => Plan::McStats,
        McCmd::FlushAll | McCmd::Verbosity => Plan::FanOut(Merge::McOk),
        McCmd::Gat | McCmd::Gats if nkeys > 1 => Plan::McOneServer,
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
        plan_in(conf, authed, false, words)
    }

    fn plan_in(conf: &PoolConf, authed: bool, in_tx: bool, words: &[&str]) -> Plan {
        let mut w = Words(words.iter().map(|s| s.as_bytes().to_vec()).collect());
        let lower = words[0].to_ascii_lowercase();
        let client = ClientState {
            authed,
            proto: Proto::Resp2,
            in_tx,
            id: 7,
            name: None,
        };
        let spec = crate::proto::redis::command::spec(lower.as_bytes()).filter(|s| s.served);
        redis(conf, client, spec, &mut w)
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
            plan(&c, false, &["hello", "3"]),
            Plan::Hello3 { setname: None }
        );
        assert_eq!(
            plan(&c, false, &["hello", "2", "setname", "me"]),
            Plan::Hello2 {
                setname: Some(b"me".to_vec())
            }
        );
        assert_eq!(
            bytes(&plan(&c, false, &["hello", "4"])),
            b"-NOPROTO unsupported protocol version\r\n"
        );
        assert_eq!(bytes(&plan(&c, false, &["echo", "x"])), b"$1\r\nx\r\n");
        assert_eq!(bytes(&plan(&c, false, &["select", "0"])), b"+OK\r\n");
        assert!(bytes(&plan(&c, false, &["select", "2"])).starts_with(b"-ERR SELECT"));
        assert_eq!(bytes(&plan(&c, false, &["client", "getname"])), b"$-1\r\n");
        assert_eq!(bytes(&plan(&c, false, &["client", "id"])), b":7\r\n");
        assert_eq!(
            plan(&c, false, &["client", "setname", "n"]),
            Plan::SetName(Some(b"n".to_vec()))
        );
        assert_eq!(
            bytes(&plan(&c, false, &["client", "setinfo", "lib-name", "x"])),
            b"+OK\r\n"
        );
        assert_eq!(plan(&c, false, &["info"]), Plan::Info);
        assert_eq!(
            plan(&c, false, &["script", "load", "return 1"]),
            Plan::FanOut(Merge::Same)
        );
        assert_eq!(
            plan(&c, false, &["scan", "12", "count", "5"]),
            Plan::Scan { cursor: 12 }
        );
        assert!(bytes(&plan(&c, false, &["watch", "k"])).starts_with(b"-ERR WATCH"));
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
    fn transactions() {
        let c = pool("");
        assert_eq!(plan(&c, false, &["multi"]), Plan::Multi);
        assert!(bytes(&plan(&c, false, &["exec"])).starts_with(b"-ERR EXEC without MULTI"));
        assert_eq!(plan_in(&c, false, true, &["exec"]), Plan::Exec);
        assert_eq!(plan_in(&c, false, true, &["discard"]), Plan::Discard);
        assert_eq!(
            plan_in(&c, false, true, &["set", "k", "v"]),
            Plan::Queue(vec![1])
        );
        assert_eq!(
            plan_in(&c, false, true, &["mset", "a", "1", "b", "2"]),
            Plan::Queue(vec![1, 3])
        );
        assert_eq!(plan_in(&c, false, true, &["ping"]), Plan::Queue(vec![]));
        assert!(matches!(
            plan_in(&c, false, true, &["multi"]),
            Plan::QueueError(_)
        ));
        assert!(matches!(
            plan_in(&c, false, true, &["get"]),
            Plan::QueueError(_)
        ));
        assert!(matches!(
            plan_in(&c, false, true, &["select", "0"]),
            Plan::QueueError(_)
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
        assert_eq!(
            plan(&c, false, &["eval", "s", "2", "k", "j", "x"]),
            Plan::ForwardKeys(vec![3, 4])
        );
        assert_eq!(
            plan(&c, false, &["lmove", "a", "b", "left", "right"]),
            Plan::ForwardKeys(vec![1, 2])
        );
        assert_eq!(
            plan(&c, false, &["rename", "a", "b"]),
            Plan::ForwardKeys(vec![1, 2])
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
