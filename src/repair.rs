//! Ejection repair: no stale keys after an ejected server returns.
//!
//! While a server is ejected (`auto_eject_hosts`), its keys go to the
//! servers that remain. When it comes back it still holds the values from
//! before the outage, so every key written or deleted meanwhile would read
//! its old value again (twemproxy #604, #472, #249). With `eject_repair`
//! (on by default with `auto_eject_hosts`) the proxy prevents that:
//!
//! ```text
//!  ejected ──(writes routed away from it are recorded: key → fallback)──┐
//!     │                                                                 │
//!  probe passes (probe.rs) ── overflowed? redis: SCAN the others for    │
//!     │                       its keys; memcached: flush_all on it ─────┤
//!     ▼                                                                 │
//!  rejoins the table, every recorded key *pinned*: routed to its        │
//!  fallback, which holds the newest value, until repaired               │
//!     │  per batch: barrier (a PING behind every client request already │
//!     │  sent to the fallbacks), then per key:                          │
//!     │   redis     MIGRATE COPY REPLACE fallback → owner (or DUMP/PTTL │
//!     │             + RESTORE REPLACE), +NOKEY: DEL on the owner        │
//!     │   memcached delete on the owner                                 │
//!     │  then the key is unpinned (unless written again meanwhile: it   │
//!     │  goes round once more), and after the next barrier the          │
//!     │  fallback's copy is deleted                                     │
//!     ▼                                                                 │
//!  done: notice log line, `repaired_keys`, `repairing` back down ◄──────┘
//! ```
//!
//! Recording happens in [`crate::topology::Topology::route_for`]: a request
//! that is not a read ([`Access`]) and is routed to a server other than its
//! key's owner in the table of all servers ([`PoolRepair::full`]), while
//! that owner is tracked here, records the key for the owner. Nothing of
//! this exists while no server is ejected ([`crate::topology::Pool::repair`]
//! is `None`), so the steady state pays one `Option` test per route.
//!
//! At most `eject_repair_keys` keys are recorded per server; past that the
//! server is marked overflowed and the repair falls back to the SCAN or
//! `flush_all` above before the server rejoins; deletes not recorded are
//! counted in the rejoin log line (a redis key deleted and not recorded
//! can read its old value: a SCAN cannot find what is no longer there).
//!
//! The proxy's own requests travel on private connections
//! (`ServerConn::private`, see `server.rs`); the returning server's is the
//! probe's. The key move here is this module's own small step; issue 14's
//! data migration (`migrate.rs`) has its own, and the two are meant to be
//! unified.

use crate::conf::{PoolConf, ServerAddr};
use crate::core::Context;
use crate::hashkit::{self, Distribution, Selector, ServerSpec};
use crate::msg::{Internal, MsgId};
use crate::proto::memcache::request::McCmd;
use crate::timer::TimerEvent;
use crate::topology::ServerId;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Keys moved per batch (one barrier per batch).
const BATCH: usize = 256;
/// The COUNT of each SCAN page after an overflow.
const SCAN_COUNT: &[u8] = b"1000";
/// Most time between a failed repair step and the next attempt.
const RETRY_MAX_MS: u64 = 1000;

/// How a request uses its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Anything that may change the key (recorded during an outage).
    Write,
    /// A delete (also counted when it could not be recorded).
    Delete,
}

/// The access of a redis command by its lower-case name: a known read, a
/// delete, or (anything else, unknown commands included) a write.
pub fn redis_access(name: &[u8]) -> Access {
    const READS: &[&[u8]] = &[
        b"bitcount",
        b"bitfield_ro",
        b"bitpos",
        b"dump",
        b"exists",
        b"expiretime",
        b"geodist",
        b"geohash",
        b"geopos",
        b"georadius_ro",
        b"georadiusbymember_ro",
        b"geosearch",
        b"get",
        b"getbit",
        b"getrange",
        b"hexists",
        b"hget",
        b"hgetall",
        b"hkeys",
        b"hlen",
        b"hmget",
        b"hrandfield",
        b"hscan",
        b"hstrlen",
        b"hvals",
        b"lcs",
        b"lindex",
        b"llen",
        b"lpos",
        b"lrange",
        b"mget",
        b"pexpiretime",
        b"pfcount",
        b"pttl",
        b"scard",
        b"sdiff",
        b"sinter",
        b"sintercard",
        b"sismember",
        b"smembers",
        b"smismember",
        b"sort_ro",
        b"srandmember",
        b"sscan",
        b"strlen",
        b"substr",
        b"sunion",
        b"touch",
        b"ttl",
        b"type",
        b"xlen",
        b"xrange",
        b"xrevrange",
        b"zcard",
        b"zcount",
        b"zdiff",
        b"zinter",
        b"zintercard",
        b"zlexcount",
        b"zmscore",
        b"zrandmember",
        b"zrange",
        b"zrangebylex",
        b"zrangebyscore",
        b"zrank",
        b"zrevrange",
        b"zrevrangebylex",
        b"zrevrangebyscore",
        b"zrevrank",
        b"zscan",
        b"zscore",
        b"zunion",
    ];
    match name {
        b"del" | b"unlink" | b"getdel" => Access::Delete,
        _ if READS.binary_search(&name).is_ok() => Access::Read,
        _ => Access::Write,
    }
}

/// The access of a memcached command (`gat` and `touch` change the
/// expiry: writes).
pub fn mc_access(cmd: McCmd) -> Access {
    match cmd {
        McCmd::Get | McCmd::Gets | McCmd::Version | McCmd::Quit | McCmd::Stats => Access::Read,
        McCmd::FlushAll | McCmd::Verbosity => Access::Read,
        McCmd::Delete => Access::Delete,
        _ => Access::Write,
    }
}

/// A pool's repair state, present while one of its servers is ejected or
/// being repaired.
pub struct PoolRepair {
    /// The table with every server live: a key's owner.
    full: Selector,
    /// Per position in the pool's server list.
    servers: Vec<Option<Box<ServerRepair>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Ejected (or being probed): writes of its keys are recorded.
    Outage,
    /// Passed its probe, still out: the SCAN or flush_all of an overflow.
    Preparing,
    /// Back in the table; its recorded keys are pinned to their fallbacks
    /// until repaired.
    Pinned,
}

struct Entry {
    /// Where the key's newest value is (the last server it was written to).
    fallback: ServerId,
    /// Servers it was written to before (a fallback ejected in turn): their
    /// copies are deleted too.
    older: Vec<ServerId>,
    /// Written since its repair step started: it goes round again.
    dirty: bool,
    /// A repair step for it is in flight.
    busy: bool,
}

/// What a request of the repair is for.
enum Step {
    /// A PING behind the client requests on one connection of a fallback.
    Barrier,
    /// MIGRATE ... COPY REPLACE from the fallback to the owner.
    Move { key: Box<[u8]>, from: ServerId },
    /// DUMP on the fallback; its PTTL follows as `pttl`.
    Dump { pttl: MsgId },
    Pttl {
        key: Box<[u8]>,
        from: ServerId,
        /// The DUMP's answer: `Some(None)` the key is absent.
        payload: Option<Option<Vec<u8>>>,
    },
    /// RESTORE ... REPLACE on the owner.
    Restore { key: Box<[u8]>, from: ServerId },
    /// The key is absent on the fallback (deleted in the outage), or the
    /// pool is memcached: deleted on the owner.
    DelOwner { key: Box<[u8]>, from: ServerId },
    /// The fallback's copy, deleted once the key is back.
    DelFallback { key: Box<[u8]>, from: ServerId },
    /// One SCAN page of a fallback (redis overflow).
    Scan { from: ServerId },
    /// flush_all on the owner (memcached overflow).
    Flush,
}

struct ServerRepair {
    phase: Phase,
    keys: HashMap<Box<[u8]>, Entry>,
    /// Pinned keys waiting for a step.
    todo: VecDeque<Box<[u8]>>,
    limit: usize,
    overflow: bool,
    lost_writes: u64,
    lost_deletes: u64,
    steps: HashMap<MsgId, Step>,
    barriers: u32,
    scans: u32,
    /// Keys whose steps wait for the barrier.
    batch: Vec<Box<[u8]>>,
    /// Fallback copies to delete after the next barrier, and those whose
    /// deletes wait for the current one.
    cleanup: Vec<(Box<[u8]>, ServerId)>,
    sending: Vec<(Box<[u8]>, ServerId)>,
    failed: bool,
    no_migrate: bool,
    moved: u64,
    deleted: u64,
    /// Counted in the pool's `repairing` gauge.
    counted: bool,
    since: Instant,
}

impl ServerRepair {
    fn new(limit: usize, now: Instant) -> ServerRepair {
        ServerRepair {
            phase: Phase::Outage,
            keys: HashMap::new(),
            todo: VecDeque::new(),
            limit,
            overflow: false,
            lost_writes: 0,
            lost_deletes: 0,
            steps: HashMap::new(),
            barriers: 0,
            scans: 0,
            batch: Vec::new(),
            cleanup: Vec::new(),
            sending: Vec::new(),
            failed: false,
            no_migrate: false,
            moved: 0,
            deleted: 0,
            counted: false,
            since: now,
        }
    }

    fn record(&mut self, key: &[u8], routed: ServerId, access: Access) {
        if let Some(e) = self.keys.get_mut(key) {
            e.dirty = true;
            if e.fallback != routed {
                if !e.older.contains(&e.fallback) {
                    e.older.push(e.fallback);
                }
                e.older.retain(|&o| o != routed);
                e.fallback = routed;
            }
            return;
        }
        match self.phase {
            // Back in the table: a key routed away from it now is not one
            // of its outage (modula moves keys of live servers too).
            Phase::Pinned => {}
            // Every key is found again by the SCAN but those written
            // during it: recorded whatever the limit.
            Phase::Preparing => self.insert(key, routed),
            Phase::Outage if self.keys.len() >= self.limit => {
                self.overflow = true;
                self.lost_writes += 1;
                if access == Access::Delete {
                    self.lost_deletes += 1;
                }
            }
            Phase::Outage => self.insert(key, routed),
        }
    }

    fn insert(&mut self, key: &[u8], routed: ServerId) {
        self.keys.insert(
            key.into(),
            Entry {
                fallback: routed,
                older: Vec::new(),
                dirty: true,
                busy: false,
            },
        );
    }

    fn idle(&self) -> bool {
        self.steps.is_empty() && self.barriers == 0 && self.batch.is_empty()
    }
}

impl PoolRepair {
    /// The fallback a pinned key of the server at `idx` is routed to.
    pub fn pinned(&self, idx: usize, key: &[u8]) -> Option<ServerId> {
        let r = self.servers.get(idx)?.as_ref()?;
        if r.phase != Phase::Pinned {
            return None;
        }
        r.keys.get(key).map(|e| e.fallback)
    }

    /// A write of `key` was routed to `routed`: recorded for the key's
    /// owner if that is a tracked server other than `routed`.
    pub fn record(
        &mut self,
        conf: &PoolConf,
        servers: &[ServerId],
        key: &[u8],
        routed: ServerId,
        access: Access,
    ) {
        let Some(idx) = self.owner(conf, servers.len(), key) else {
            return;
        };
        if servers.get(idx) == Some(&routed) {
            return;
        }
        if let Some(Some(r)) = self.servers.get_mut(idx) {
            r.record(key, routed, access);
        }
    }

    fn owner(&self, conf: &PoolConf, n: usize, key: &[u8]) -> Option<usize> {
        hashkit::select(&self.full, conf.hash, conf.hash_tag, key, n)
    }

    /// Servers being tracked or repaired now.
    pub fn active(&self) -> usize {
        self.servers.iter().flatten().count()
    }
}

/// `$<n>\r\n<data>\r\n` or `$-1\r\n` (absent); `None`: not a bulk reply.
fn parse_bulk(raw: &[u8]) -> Option<Option<&[u8]>> {
    let (head, at) = line(raw, 0)?;
    let n = head.strip_prefix(b"$")?;
    if n == b"-1" {
        return Some(None);
    }
    let len: usize = std::str::from_utf8(n).ok()?.parse().ok()?;
    raw.get(at..at.checked_add(len)?).map(Some)
}

/// `:<n>\r\n`.
fn parse_int(raw: &[u8]) -> Option<i64> {
    let (head, _) = line(raw, 0)?;
    std::str::from_utf8(head.strip_prefix(b":")?)
        .ok()?
        .parse()
        .ok()
}

/// A SCAN page: `*2`, the cursor, then an array of keys.
fn parse_scan(raw: &[u8]) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let (head, at) = line(raw, 0)?;
    if head != b"*2" {
        return None;
    }
    let (cursor, at) = bulk_at(raw, at)?;
    let (head, mut at) = line(raw, at)?;
    let n: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut keys = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let (k, next) = bulk_at(raw, at)?;
        keys.push(k.to_vec());
        at = next;
    }
    Some((cursor.to_vec(), keys))
}

/// The bulk string at `at` and the offset after it.
fn bulk_at(raw: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let (head, at) = line(raw, at)?;
    let len: usize = std::str::from_utf8(head.strip_prefix(b"$")?)
        .ok()?
        .parse()
        .ok()?;
    let end = at.checked_add(len)?;
    let data = raw.get(at..end)?;
    if raw.get(end..end.checked_add(2)?) != Some(b"\r\n") {
        return None;
    }
    Some((data, end + 2))
}

/// The line starting at `at` (without its CRLF) and the offset after it.
fn line(raw: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = raw.get(at..)?;
    let n = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((rest.get(..n)?, at + n + 2))
}

impl Context {
    /// Server `s`'s repair state, if it has one.
    fn repair_of(&mut self, s: ServerId) -> Option<&mut ServerRepair> {
        let pid = self.topo.server(s)?.pool;
        let pool = self.topo.pool_mut(pid)?;
        let idx = pool.servers.iter().position(|&x| x == s)?;
        pool.repair.as_mut()?.servers.get_mut(idx)?.as_deref_mut()
    }

    fn is_redis(&self, s: ServerId) -> bool {
        self.topo.server_pool(s).is_none_or(|p| p.conf.redis)
    }

    fn pname(&self, s: ServerId) -> String {
        self.topo
            .server(s)
            .map_or_else(String::new, |srv| srv.conf.pname.clone())
    }

    /// Server `s` was just ejected: from now on the writes of its keys are
    /// recorded (with `eject_repair`; not for `distribution: random`, where
    /// a key has no owner).
    pub fn repair_track(&mut self, s: ServerId) {
        let Some(pool) = self.topo.server_pool(s) else {
            return;
        };
        if !pool.conf.eject_repair || pool.conf.distribution == Distribution::Random {
            return;
        }
        let Some(idx) = pool.servers.iter().position(|&x| x == s) else {
            return;
        };
        let limit = pool.conf.eject_repair_keys as usize;
        let full = match pool.repair {
            Some(_) => None,
            None => {
                let specs: Vec<ServerSpec> = pool
                    .servers
                    .iter()
                    .filter_map(|&x| self.topo.server(x))
                    .map(|srv| ServerSpec {
                        name: srv.conf.name.as_bytes(),
                        weight: srv.conf.weight,
                        live: true,
                    })
                    .collect();
                Some(Selector::build(pool.conf.distribution, &specs))
            }
        };
        let n = pool.servers.len();
        let pid = pool_id(self, s);
        let now = self.now;
        let Some(pool) = pid.and_then(|p| self.topo.pool_mut(p)) else {
            return;
        };
        if let Some(full) = full {
            pool.repair = Some(Box::new(PoolRepair {
                full,
                servers: (0..n).map(|_| None).collect(),
            }));
        }
        let Some(slot) = pool.repair.as_mut().and_then(|r| r.servers.get_mut(idx)) else {
            return;
        };
        if slot.is_some() {
            self.repair_ejected_again(s);
        } else {
            *slot = Some(Box::new(ServerRepair::new(limit, now)));
        }
    }

    /// Server `s` is out again (ejected during its repair, or a failed
    /// probe or preparation): back to recording. Keys whose fallback copy
    /// was not deleted yet are recorded again, so the next repair moves
    /// them (the fallback receives their writes again meanwhile).
    pub fn repair_ejected_again(&mut self, s: ServerId) {
        let pid = pool_id(self, s);
        let Some(r) = self.repair_of(s) else {
            return;
        };
        r.phase = Phase::Outage;
        r.todo.clear();
        for key in std::mem::take(&mut r.batch) {
            if let Some(e) = r.keys.get_mut(&key) {
                e.busy = false;
            }
        }
        let pending: Vec<(Box<[u8]>, ServerId)> =
            r.cleanup.drain(..).chain(r.sending.drain(..)).collect();
        for (key, from) in pending {
            if !r.keys.contains_key(&key) {
                r.insert(&key, from);
            }
        }
        let counted = std::mem::replace(&mut r.counted, false);
        if let (true, Some(p)) = (counted, pid.and_then(|p| self.topo.pool_mut(p))) {
            p.stats.repairing -= 1;
        }
    }

    /// Server `s` passed its probe: it rejoins, after the SCAN or flush of
    /// an overflow, with its recorded keys pinned until repaired.
    pub fn repair_rejoin(&mut self, s: ServerId) {
        let redis = self.is_redis(s);
        let pid = pool_id(self, s);
        let now = self.now;
        let Some(r) = self.repair_of(s) else {
            self.rejoin(s, "");
            self.drain_private(s);
            return;
        };
        if r.keys.is_empty() && !r.overflow && r.steps.is_empty() {
            self.repair_forget(s);
            self.rejoin(s, "");
            self.drain_private(s);
            return;
        }
        r.since = now;
        r.counted = true;
        let overflow = std::mem::replace(&mut r.overflow, false);
        if let Some(p) = pid.and_then(|p| self.topo.pool_mut(p)) {
            p.stats.repairing += 1;
        }
        if !overflow {
            self.repair_pinned(s);
            return;
        }
        if let Some(r) = self.repair_of(s) {
            r.phase = Phase::Preparing;
        }
        let pname = self.pname(s);
        if redis {
            crate::log_notice!(
                "server '{}' recorded more than eject_repair_keys keys in its ejection: scanning the other servers for its keys before it rejoins",
                pname
            );
            self.repair_scan_all(s);
        } else {
            crate::log_notice!(
                "server '{}' recorded more than eject_repair_keys keys in its ejection: flush_all on it before it rejoins",
                pname
            );
            let sent = self.repair_send(s, s, &[], b"flush_all\r\n", Step::Flush);
            if !sent {
                self.probe_failed(s, "flush_all could not be sent");
                if let Some(r) = self.repair_of(s) {
                    r.overflow = true;
                }
            }
        }
    }

    /// Back in the table, with the server's `why` in the log.
    fn rejoin(&mut self, s: ServerId, why: &str) {
        let Some(srv) = self.topo.server_mut(s) else {
            return;
        };
        srv.next_retry = None;
        srv.failures = 0;
        let pid = srv.pool;
        let pname = srv.conf.pname.clone();
        crate::log_notice!("server '{}' passed its probe and rejoins{}", pname, why);
        self.rebuild_pool(pid);
    }

    /// Rejoins with the recorded keys pinned, and starts moving them.
    fn repair_pinned(&mut self, s: ServerId) {
        let Some(r) = self.repair_of(s) else {
            return;
        };
        r.phase = Phase::Pinned;
        r.todo = r.keys.keys().cloned().collect();
        let n = r.todo.len();
        self.rejoin(
            s,
            &format!(", {n} keys written during its ejection to repair"),
        );
        self.repair_next(s);
    }

    /// The next batch of server `s`'s repair (a `RepairNext` timer, or the
    /// end of the last batch).
    pub fn repair_next(&mut self, s: ServerId) {
        let Some(r) = self.repair_of(s) else {
            return;
        };
        if r.phase != Phase::Pinned || !r.idle() {
            return;
        }
        if r.todo.is_empty() {
            // Every key not in flight is waiting in `todo`; rebuilt here so
            // that a key can never be left pinned for good.
            r.todo = r
                .keys
                .iter()
                .filter(|(_, e)| !e.busy)
                .map(|(k, _)| k.clone())
                .collect();
        }
        while r.batch.len() < BATCH {
            let Some(key) = r.todo.pop_front() else {
                break;
            };
            let Some(e) = r.keys.get_mut(&key) else {
                continue;
            };
            if e.busy {
                continue;
            }
            e.busy = true;
            e.dirty = false;
            r.batch.push(key);
        }
        r.sending = std::mem::take(&mut r.cleanup);
        if r.batch.is_empty() && r.sending.is_empty() {
            if r.keys.is_empty() {
                self.repair_finish(s);
            }
            return;
        }
        let mut fallbacks: Vec<ServerId> = r
            .batch
            .iter()
            .filter_map(|k| r.keys.get(k).map(|e| e.fallback))
            .chain(r.sending.iter().map(|&(_, f)| f))
            .collect();
        fallbacks.sort_unstable();
        fallbacks.dedup();
        for f in fallbacks {
            self.repair_barrier(s, f);
        }
        if self.repair_of(s).is_some_and(|r| r.barriers == 0) {
            self.repair_after_barrier(s);
        }
    }

    /// A PING (memcached: `version`) behind every client request already
    /// queued to fallback `f`, on each of its client connections: once all
    /// are answered, everything routed to `f` before is done.
    fn repair_barrier(&mut self, s: ServerId, f: ServerId) {
        let redis = self.is_redis(s);
        let Some(srv) = self.topo.server(f) else {
            return;
        };
        let conns: Vec<crate::conn::ConnId> = srv
            .conns
            .iter()
            .copied()
            .filter(
                |&k| matches!(self.conns.get(k), Some(crate::conn::Conn::Server(c)) if !c.private),
            )
            .collect();
        for sk in conns {
            let kind = Internal::Repair(s);
            let mid = if redis {
                self.internal_msg(&[b"PING"], kind)
            } else {
                self.internal_raw(b"version\r\n", kind)
            };
            // No deadline of its own: the client requests ahead of it have
            // theirs, and closing the connection on its account would fail
            // them.
            self.queue_internal(sk, f, mid, None);
            if let Some(r) = self.repair_of(s) {
                r.steps.insert(mid, Step::Barrier);
                r.barriers += 1;
            }
        }
    }

    /// The barrier is passed: the fallback copies of the last batch are
    /// deleted, and this batch's keys moved.
    fn repair_after_barrier(&mut self, s: ServerId) {
        let redis = self.is_redis(s);
        let Some(r) = self.repair_of(s) else {
            return;
        };
        let sending = std::mem::take(&mut r.sending);
        let batch = std::mem::take(&mut r.batch);
        for (key, from) in sending {
            let wire = mc_line(b"delete ", &key);
            let step = Step::DelFallback {
                key: key.clone(),
                from,
            };
            if !self.repair_send(s, from, &[b"DEL", &key], &wire, step) {
                if let Some(r) = self.repair_of(s) {
                    r.cleanup.push((key, from));
                    r.failed = true;
                }
            }
        }
        for key in batch {
            let Some(from) = self
                .repair_of(s)
                .and_then(|r| r.keys.get(&key).map(|e| e.fallback))
            else {
                continue;
            };
            if redis {
                self.repair_move(s, key, from);
            } else {
                self.repair_del_owner(s, key, from);
            }
        }
        self.repair_step_done(s);
    }

    /// Sends one repair request to server `to` (the redis command `args`,
    /// or the memcached line `wire`) on a private connection.
    fn repair_send(
        &mut self,
        s: ServerId,
        to: ServerId,
        args: &[&[u8]],
        wire: &[u8],
        step: Step,
    ) -> bool {
        let Ok(sk) = self.private_conn(to) else {
            return false;
        };
        let kind = Internal::Repair(s);
        let mid = if self.is_redis(s) {
            self.internal_msg(args, kind)
        } else {
            self.internal_raw(wire, kind)
        };
        let after = self.own_timeout(s);
        self.queue_internal(sk, to, mid, Some(after));
        match self.repair_of(s) {
            Some(r) => {
                r.steps.insert(mid, step);
                true
            }
            None => false,
        }
    }

    /// redis: the key's newest value copied from its fallback to the owner
    /// (REPLACE), by MIGRATE while the fallback can, else DUMP/PTTL and
    /// RESTORE.
    fn repair_move(&mut self, s: ServerId, key: Box<[u8]>, from: ServerId) {
        let no_migrate = self.repair_of(s).is_none_or(|r| r.no_migrate);
        let target = match self.topo.server(s).map(|srv| &srv.conf.addr) {
            Some(ServerAddr::Tcp { host, port }) => Some((host.clone(), port.to_string())),
            _ => None,
        };
        let Some(pool) = self.topo.server_pool(s) else {
            return;
        };
        let (db, auth) = (pool.conf.redis_db.to_string(), pool.conf.redis_auth.clone());
        let timeout = self.own_timeout(s).as_millis().to_string();
        if let (false, Some((host, port))) = (no_migrate, target) {
            let mut args: Vec<&[u8]> = vec![
                b"MIGRATE",
                host.as_bytes(),
                port.as_bytes(),
                b"",
                db.as_bytes(),
                timeout.as_bytes(),
                b"COPY",
                b"REPLACE",
            ];
            if let Some(pw) = &auth {
                args.extend([b"AUTH" as &[u8], pw.as_bytes()]);
            }
            args.extend([b"KEYS" as &[u8], &key]);
            let step = Step::Move {
                key: key.clone(),
                from,
            };
            if !self.repair_send(s, from, &args, &[], step) {
                self.repair_key_failed(s, &key);
            }
            return;
        }
        self.repair_dump(s, key, from);
    }

    fn repair_dump(&mut self, s: ServerId, key: Box<[u8]>, from: ServerId) {
        let Ok(sk) = self.private_conn(from) else {
            self.repair_key_failed(s, &key);
            return;
        };
        let kind = Internal::Repair(s);
        let dump = self.internal_msg(&[b"DUMP", &key], kind);
        let pttl = self.internal_msg(&[b"PTTL", &key], kind);
        let after = self.own_timeout(s);
        self.queue_internal(sk, from, dump, Some(after));
        self.queue_internal(sk, from, pttl, Some(after));
        if let Some(r) = self.repair_of(s) {
            r.steps.insert(dump, Step::Dump { pttl });
            r.steps.insert(
                pttl,
                Step::Pttl {
                    key,
                    from,
                    payload: None,
                },
            );
        }
    }

    fn repair_del_owner(&mut self, s: ServerId, key: Box<[u8]>, from: ServerId) {
        let wire = mc_line(b"delete ", &key);
        let step = Step::DelOwner {
            key: key.clone(),
            from,
        };
        if !self.repair_send(s, s, &[b"DEL", &key], &wire, step) {
            self.repair_key_failed(s, &key);
        }
    }

    /// A repair request's reply (`raw`, the whole reply).
    pub fn repair_reply(&mut self, s: ServerId, mid: MsgId, raw: &[u8]) {
        let redis = self.is_redis(s);
        let Some(step) = self.repair_of(s).and_then(|r| r.steps.remove(&mid)) else {
            return;
        };
        match step {
            Step::Barrier => self.repair_barrier_done(s),
            Step::Move { key, from } => {
                if raw.starts_with(b"+NOKEY") {
                    self.repair_del_owner(s, key, from);
                } else if raw.first() == Some(&b'+') {
                    self.repair_key_back(s, key, from, true, false);
                } else {
                    crate::log_warn!(
                        "MIGRATE from '{}' to '{}' refused ({}): DUMP and RESTORE instead",
                        self.pname(from),
                        self.pname(s),
                        String::from_utf8_lossy(raw).trim_end()
                    );
                    if let Some(r) = self.repair_of(s) {
                        r.no_migrate = true;
                    }
                    self.repair_dump(s, key, from);
                }
            }
            Step::Dump { pttl } => {
                let payload = parse_bulk(raw).map(|p| p.map(<[u8]>::to_vec));
                if let Some(Some(Step::Pttl { payload: slot, .. })) =
                    self.repair_of(s).map(|r| r.steps.get_mut(&pttl))
                {
                    // `None` (an error reply) leaves the PTTL step to fail
                    // the key.
                    *slot = payload;
                }
            }
            Step::Pttl { key, from, payload } => match (payload, parse_int(raw)) {
                (Some(Some(p)), Some(ttl)) if ttl != -2 => {
                    let ttl = ttl.max(0).to_string();
                    let step = Step::Restore {
                        key: key.clone(),
                        from,
                    };
                    let args: [&[u8]; 5] = [b"RESTORE", &key, ttl.as_bytes(), &p, b"REPLACE"];
                    if !self.repair_send(s, s, &args, &[], step) {
                        self.repair_key_failed(s, &key);
                    }
                }
                (Some(_), Some(_)) => self.repair_del_owner(s, key, from),
                _ => self.repair_key_failed(s, &key),
            },
            Step::Restore { key, from } => {
                if raw.first() == Some(&b'+') {
                    self.repair_key_back(s, key, from, true, false);
                } else {
                    crate::log_warn!(
                        "RESTORE on '{}' failed: {}",
                        self.pname(s),
                        String::from_utf8_lossy(raw).trim_end()
                    );
                    self.repair_key_failed(s, &key);
                }
            }
            Step::DelOwner { key, from } => {
                let ok = if redis {
                    raw.first() == Some(&b':')
                } else {
                    raw.starts_with(b"DELETED") || raw.starts_with(b"NOT_FOUND")
                };
                if ok {
                    // memcached: the fallback's copy goes too; redis: the
                    // fallback has none (that is why it was deleted).
                    self.repair_key_back(s, key, from, !redis, true);
                } else {
                    self.repair_key_failed(s, &key);
                }
            }
            Step::DelFallback { .. } => {}
            Step::Scan { from } => self.repair_scan_page(s, from, raw),
            Step::Flush => {
                if raw.starts_with(b"OK") {
                    self.repair_pinned(s);
                } else {
                    self.repair_prepare_failed(s, "flush_all refused");
                }
            }
        }
        self.repair_step_done(s);
    }

    /// A repair request failed with its connection (or its deadline).
    pub fn repair_lost(&mut self, s: ServerId, mid: MsgId) {
        let Some(step) = self.repair_of(s).and_then(|r| r.steps.remove(&mid)) else {
            return;
        };
        match step {
            // The connection is gone, and with it every request routed
            // there: that barrier is passed.
            Step::Barrier => self.repair_barrier_done(s),
            Step::Dump { .. } => {}
            Step::Move { key, .. }
            | Step::Pttl { key, .. }
            | Step::Restore { key, .. }
            | Step::DelOwner { key, .. } => self.repair_key_failed(s, &key),
            Step::DelFallback { key, from } => {
                if let Some(r) = self.repair_of(s) {
                    r.cleanup.push((key, from));
                    r.failed = true;
                }
            }
            Step::Scan { from } => {
                crate::log_warn!(
                    "SCAN of '{}' for the keys of '{}' failed: those keys stay as they are",
                    self.pname(from),
                    self.pname(s)
                );
                self.repair_scan_done(s);
            }
            Step::Flush => self.repair_prepare_failed(s, "flush_all got no answer"),
        }
        self.repair_step_done(s);
    }

    fn repair_barrier_done(&mut self, s: ServerId) {
        let Some(r) = self.repair_of(s) else {
            return;
        };
        r.barriers = r.barriers.saturating_sub(1);
        if r.barriers == 0 && r.phase == Phase::Pinned {
            self.repair_after_barrier(s);
        }
    }

    /// The key is back on its owner (`moved`: copied; else deleted there):
    /// unpinned unless written meanwhile, its fallback copy (with
    /// `cleanup_from`) and older copies deleted after the next barrier.
    fn repair_key_back(
        &mut self,
        s: ServerId,
        key: Box<[u8]>,
        from: ServerId,
        cleanup_from: bool,
        deleted: bool,
    ) {
        let pid = pool_id(self, s);
        let Some(r) = self.repair_of(s) else {
            return;
        };
        let Some(e) = r.keys.get_mut(&key) else {
            return;
        };
        e.busy = false;
        if r.phase != Phase::Pinned {
            return;
        }
        if e.dirty {
            r.todo.push_back(key);
            return;
        }
        let Some(e) = r.keys.remove(&key) else {
            return;
        };
        if cleanup_from {
            r.cleanup.push((key.clone(), from));
        }
        for o in e.older {
            r.cleanup.push((key.clone(), o));
        }
        if deleted {
            r.deleted += 1;
        } else {
            r.moved += 1;
        }
        if let Some(p) = pid.and_then(|p| self.topo.pool_mut(p)) {
            p.stats.repaired_keys += 1;
        }
    }

    /// A step for `key` failed: the key stays pinned and is tried again
    /// after a pause.
    fn repair_key_failed(&mut self, s: ServerId, key: &[u8]) {
        let Some(r) = self.repair_of(s) else {
            return;
        };
        r.failed = true;
        let Some((k, e)) = r.keys.get_key_value(key) else {
            return;
        };
        let k = k.clone();
        let busy = e.busy;
        if let Some(e) = r.keys.get_mut(key) {
            e.busy = false;
        }
        if busy && r.phase == Phase::Pinned {
            r.todo.push_back(k);
        }
    }

    /// After each reply or loss: when the batch is over, the next one (at
    /// once, or after a pause if a step failed).
    fn repair_step_done(&mut self, s: ServerId) {
        let retry = self
            .topo
            .server_pool(s)
            .map_or(RETRY_MAX_MS, |p| p.conf.server_retry_timeout_ms)
            .clamp(1, RETRY_MAX_MS);
        let now = self.now;
        let Some(r) = self.repair_of(s) else {
            return;
        };
        if r.phase != Phase::Pinned || !r.idle() {
            return;
        }
        let at = if std::mem::replace(&mut r.failed, false) {
            now + Duration::from_millis(retry)
        } else {
            now
        };
        // Through the timer, so a batch never starts inside the reply
        // handling of the last one.
        self.timers.schedule(at, TimerEvent::RepairNext(s));
    }

    /// redis overflow: every other server is scanned for the keys `s` owns.
    fn repair_scan_all(&mut self, s: ServerId) {
        let others: Vec<ServerId> = self
            .topo
            .server_pool(s)
            .map(|p| p.servers.iter().copied().filter(|&x| x != s).collect())
            .unwrap_or_default();
        for f in others {
            if self
                .topo
                .server(f)
                .is_some_and(|srv| srv.next_retry.is_some())
            {
                crate::log_warn!(
                    "server '{}' is ejected: not scanned for the keys of '{}'",
                    self.pname(f),
                    self.pname(s)
                );
                continue;
            }
            if self.repair_send(
                s,
                f,
                &[b"SCAN", b"0", b"COUNT", SCAN_COUNT],
                &[],
                Step::Scan { from: f },
            ) {
                if let Some(r) = self.repair_of(s) {
                    r.scans += 1;
                }
            }
        }
        if self.repair_of(s).is_some_and(|r| r.scans == 0) {
            self.repair_pinned(s);
        }
    }

    fn repair_scan_page(&mut self, s: ServerId, from: ServerId, raw: &[u8]) {
        let Some((cursor, keys)) = parse_scan(raw) else {
            crate::log_warn!(
                "SCAN of '{}' refused: {}",
                self.pname(from),
                String::from_utf8_lossy(raw.get(..raw.len().min(80)).unwrap_or(raw)).trim_end()
            );
            self.repair_scan_done(s);
            return;
        };
        let Some(pid) = pool_id(self, s) else {
            return;
        };
        if let Some(pool) = self.topo.pool_mut(pid) {
            let conf = &pool.conf;
            let servers = &pool.servers;
            if let Some(rep) = pool.repair.as_mut() {
                let idx = servers.iter().position(|&x| x == s);
                for k in keys {
                    let owner = rep.owner(conf, servers.len(), &k);
                    if owner.is_none() || owner != idx {
                        continue;
                    }
                    if let Some(Some(r)) = idx.and_then(|i| rep.servers.get_mut(i)) {
                        if !r.keys.contains_key(k.as_slice()) {
                            r.insert(&k, from);
                        }
                    }
                }
            }
        }
        if cursor == b"0" {
            self.repair_scan_done(s);
            return;
        }
        let step = Step::Scan { from };
        if !self.repair_send(
            s,
            from,
            &[b"SCAN", &cursor, b"COUNT", SCAN_COUNT],
            &[],
            step,
        ) {
            self.repair_scan_done(s);
        }
    }

    fn repair_scan_done(&mut self, s: ServerId) {
        let Some(r) = self.repair_of(s) else {
            return;
        };
        r.scans = r.scans.saturating_sub(1);
        if r.scans == 0 && r.phase == Phase::Preparing {
            self.repair_pinned(s);
        }
    }

    /// The flush before rejoining failed: the server stays out, and the
    /// next probe tries the whole thing again.
    fn repair_prepare_failed(&mut self, s: ServerId, why: &str) {
        self.probe_failed(s, why);
        if let Some(r) = self.repair_of(s) {
            r.overflow = true;
        }
    }

    /// Every recorded key is back: the state goes, with a notice.
    fn repair_finish(&mut self, s: ServerId) {
        let Some(pid) = pool_id(self, s) else {
            return;
        };
        let now = self.now;
        let pname = self.pname(s);
        let Some(pool) = self.topo.pool_mut(pid) else {
            return;
        };
        let Some(idx) = pool.servers.iter().position(|&x| x == s) else {
            return;
        };
        let Some(r) = pool
            .repair
            .as_mut()
            .and_then(|rep| rep.servers.get_mut(idx))
            .and_then(Option::take)
        else {
            return;
        };
        if r.counted {
            pool.stats.repairing -= 1;
        }
        let lost = if r.lost_writes > 0 {
            format!(
                "; {} writes ({} deletes) over eject_repair_keys were not recorded",
                r.lost_writes, r.lost_deletes
            )
        } else {
            String::new()
        };
        crate::log_notice!(
            "server '{}' repaired after its ejection: {} keys moved back, {} deleted, in {} ms{}",
            pname,
            r.moved,
            r.deleted,
            now.saturating_duration_since(r.since).as_millis(),
            lost
        );
        self.repair_forget(s);
    }

    /// Drops `s`'s state (if any), and the pool's when nothing is tracked
    /// any more, closing the private connections the repair used.
    fn repair_forget(&mut self, s: ServerId) {
        let Some(pid) = pool_id(self, s) else {
            return;
        };
        let Some(pool) = self.topo.pool_mut(pid) else {
            return;
        };
        let idx = pool.servers.iter().position(|&x| x == s);
        if let Some(rep) = pool.repair.as_mut() {
            if let Some(slot) = idx.and_then(|i| rep.servers.get_mut(i)) {
                *slot = None;
            }
            if rep.active() == 0 {
                pool.repair = None;
                for x in pool.servers.clone() {
                    if self.topo.server(x).is_some_and(|srv| srv.probe.is_none()) {
                        self.drain_private(x);
                    }
                }
            }
        }
    }

    /// A reload changed the pool's servers: the owners recorded no longer
    /// mean the same; the repair state is dropped (logged).
    pub fn repair_reset(&mut self, pid: crate::topology::PoolId) {
        let Some(pool) = self.topo.pool_mut(pid) else {
            return;
        };
        let Some(rep) = pool.repair.take() else {
            return;
        };
        let keys: usize = rep.servers.iter().flatten().map(|r| r.keys.len()).sum();
        let counted = rep.servers.iter().flatten().filter(|r| r.counted).count();
        pool.stats.repairing -= counted as i64;
        crate::log_warn!(
            "pool '{}' changed its servers: the repair of {} keys written during ejections is abandoned",
            pool.conf.name,
            keys
        );
    }
}

fn pool_id(ctx: &Context, s: ServerId) -> Option<crate::topology::PoolId> {
    ctx.topo.server(s).map(|srv| srv.pool)
}

/// `<verb><key>\r\n` (memcached keys hold no spaces or control bytes).
fn mc_line(verb: &[u8], key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(verb.len() + key.len() + 2);
    v.extend_from_slice(verb);
    v.extend_from_slice(key);
    v.extend_from_slice(b"\r\n");
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_sorted_and_classified() {
        assert_eq!(redis_access(b"get"), Access::Read);
        assert_eq!(redis_access(b"zscore"), Access::Read);
        assert_eq!(redis_access(b"set"), Access::Write);
        assert_eq!(redis_access(b"georadius"), Access::Write);
        assert_eq!(redis_access(b"unknowncmd"), Access::Write);
        assert_eq!(redis_access(b"del"), Access::Delete);
        assert_eq!(mc_access(McCmd::Get), Access::Read);
        assert_eq!(mc_access(McCmd::Gat), Access::Write);
        assert_eq!(mc_access(McCmd::Delete), Access::Delete);
    }

    #[test]
    fn reply_parsers() {
        assert_eq!(parse_bulk(b"$-1\r\n"), Some(None));
        assert_eq!(parse_bulk(b"$3\r\nabc\r\n"), Some(Some(&b"abc"[..])));
        assert_eq!(parse_bulk(b"-ERR x\r\n"), None);
        assert_eq!(parse_bulk(b"$9\r\nabc\r\n"), None);
        assert_eq!(parse_int(b":-2\r\n"), Some(-2));
        assert_eq!(parse_int(b"+OK\r\n"), None);
        let page = b"*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$2\r\nb\n\r\n";
        assert_eq!(
            parse_scan(page),
            Some((b"17".to_vec(), vec![b"a".to_vec(), b"b\n".to_vec()]))
        );
        assert_eq!(
            parse_scan(b"*2\r\n$1\r\n0\r\n*0\r\n"),
            Some((b"0".to_vec(), vec![]))
        );
        assert_eq!(parse_scan(b"*2\r\n$1\r\n0\r\n*1\r\n"), None);
        assert_eq!(parse_scan(b"-ERR\r\n"), None);
    }

    #[test]
    fn recording_is_bounded() {
        let mut arena: crate::id::Arena<crate::topology::Server> = crate::id::Arena::new();
        let conf = match crate::conf::Conf::parse_str(
            "a:\n  listen: 127.0.0.1:1\n  servers:\n   - 127.0.0.1:2:1\n",
            "t.yml",
        ) {
            Ok(c) => c.pools,
            Err(e) => panic!("{e:?}"),
        };
        let pid = crate::id::Arena::<crate::topology::Pool>::new().insert(crate::topology::Pool {
            conf: conf[0].clone(),
            servers: Vec::new(),
            selector: Selector::build(Distribution::Ketama, &[]),
            listener: None,
            nclients: 0,
            stats: Default::default(),
            retired: false,
            repair: None,
            migration: None,
        });
        let f = arena.insert(crate::topology::Server::new(
            pid,
            conf[0].servers[0].clone(),
        ));
        let mut r = ServerRepair::new(2, Instant::now());
        r.record(b"a", f, Access::Write);
        r.record(b"b", f, Access::Delete);
        r.record(b"a", f, Access::Write);
        assert_eq!(r.keys.len(), 2);
        assert!(!r.overflow);
        r.record(b"c", f, Access::Delete);
        assert!(r.overflow);
        assert_eq!((r.lost_writes, r.lost_deletes), (1, 1));
        r.phase = Phase::Preparing;
        r.record(b"d", f, Access::Write);
        assert_eq!(r.keys.len(), 3, "recorded beyond the limit while scanning");
        r.phase = Phase::Pinned;
        r.record(b"e", f, Access::Write);
        assert_eq!(r.keys.len(), 3, "a live owner records nothing new");
    }
}
