//! Moving keys when a pool's servers change (`migrate_from:`), and the
//! machinery any feature that must move one key between two servers uses.
//!
//! A pool with `migrate_from:` has two tables: the one of `servers:`, which
//! routes every request, and the one of the previous servers, kept in its
//! [`Migration`]. While the migration runs, a key whose owner differs
//! between the two may still sit on its old owner, so before a request on
//! it reaches the new owner the key is moved ([`Context::forward_moving`]):
//! the client's request stays in its client's out queue, unsent, while the
//! proxy's own requests move the key, and is forwarded when they are done.
//! A background mover ([`Context::migrate_tick`]) walks every old owner
//! (redis `SCAN`, memcached `lru_crawler metadump all`) at `migrate_rate`
//! keys per second and moves what it finds misplaced; when one full pass
//! over every old owner finds nothing to move, the migration is complete,
//! and from then on requests cost nothing more than the flag test.
//!
//! ```text
//!   request on k ─► route: N ─► old owner O ≠ N? ─no─► forward to N
//!                                  │yes
//!                                  ▼
//!        job(k, O → N): redis   MIGRATE (atomic)  or  DUMP+PTTL / RESTORE / DEL
//!                       memcached  mg / add / delete
//!                                  │ reply (or failure)
//!                                  ▼
//!                       every waiter of the job ─► forward to N
//! ```
//!
//! The API other features use: [`Context::move_key`] ("move key k of pool
//! p from server O to server N, then continue with `then`"). One job per
//! key and source is in flight at a time: a second request on the same key
//! waits on the first job rather than starting its own, so two moves of a
//! key never race inside one proxy. Nothing is ever deleted from the
//! source unless the destination acknowledged the key (or already held a
//! newer value, which always wins: no `REPLACE`, memcached `add`). A failed
//! step (a server down, a timeout) counts in `migrate_errors` and the
//! waiting request is forwarded as it would have been without the move.
//!
//! Every step is an internal message ([`Internal::Move`]) whose reply the
//! server code hands to [`Context::move_reply`] through `complete`, failure
//! included, so a job always finishes.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::conf::{ServerAddr, ServerConf};
use crate::conn::{Conn, ConnId};
use crate::core::Context;
use crate::hashkit::{self, Selector, ServerSpec};
use crate::id::{Arena, Id};
use crate::mbuf::Seg;
use crate::msg::{Internal, MsgId, Origin};
use crate::timer::TimerEvent;
use crate::topology::{same_server, PoolId, Server, ServerId};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often the background mover refills its budget and looks for work.
const TICK: Duration = Duration::from_millis(100);
/// Most keys one SCAN (or one batch of a memcached dump) asks for.
const MAX_BATCH: u64 = 1000;
/// Wait before asking a server that failed a scan again.
const SCAN_RETRY: Duration = Duration::from_secs(1);
/// Bytes of an error reply kept to recognise it.
const TEXT_MAX: usize = 512;

pub type JobId = Id<Job>;
type GateId = Id<Gate>;

/// A pool's migration off its previous servers.
pub struct Migration {
    /// What it was built from: a reload that changes none of these keeps
    /// the migration (and its progress) as it is.
    built_from: (Vec<ServerConf>, Vec<ServerConf>),
    /// The previous servers, in table (sorted name) order. A server in both
    /// lists is the same [`ServerId`] as in the pool's `servers`.
    pub servers: Vec<ServerId>,
    selector: Selector,
    pub complete: bool,
    started: Instant,
    moved_at_start: i64,
    /// MIGRATE was refused (renamed away, or the backends cannot reach
    /// each other): DUMP / RESTORE from now on.
    no_migrate: bool,
    /// The background mover's walk, one per previous server.
    scans: Vec<Scan>,
    /// Keys the mover may still examine (refilled every tick).
    tokens: f64,
    last_refill: Instant,
    /// This pass found something to move, or failed somewhere: another
    /// pass is needed.
    dirty: bool,
    tick_pending: bool,
    /// The mover is inside [`Context::mover_kick`]: a batch that ends
    /// meanwhile asks for another round instead of recursing.
    kicking: bool,
    rekick: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    /// Ready for the next batch.
    Idle,
    /// A batch is being read, or its keys moved.
    Busy,
    /// This pass reached the end of the server.
    Done,
}

struct Scan {
    /// redis: the SCAN cursor.
    cursor: u64,
    /// memcached: the keys of the server's dump still to examine.
    listed: Vec<Vec<u8>>,
    /// memcached: the dump of this pass was read.
    dumped: bool,
    state: ScanState,
    retry_at: Option<Instant>,
    /// Moves of the current batch still running.
    pending: u32,
    /// The current batch ends this pass over the server.
    last: bool,
    /// memcached: the connection the dumps are read on (memcached answers
    /// a metadump only when nothing else is pipelined with it).
    dump_conn: Option<ConnId>,
}

impl Scan {
    fn new() -> Scan {
        Scan {
            cursor: 0,
            listed: Vec::new(),
            dumped: false,
            state: ScanState::Idle,
            retry_at: None,
            pending: 0,
            last: false,
            dump_conn: None,
        }
    }
}

/// The engine's move state (a field of the context).
#[derive(Default)]
pub struct Moves {
    jobs: Arena<Job>,
    gates: Arena<Gate>,
    /// The job moving each key, so a second request on it waits for it.
    inflight: HashMap<Vec<u8>, JobId>,
    /// Fragments made but not yet sent, with the keys they carry (see
    /// [`Context::stage_move`]).
    staged: Vec<(MsgId, Vec<Vec<u8>>)>,
}

/// A request held until the moves of its keys are done.
pub struct Gate {
    mid: MsgId,
    to: ServerId,
    pending: u32,
}

/// What to do when a job is finished.
#[derive(Debug, Clone, Copy)]
pub enum Then {
    /// Release one key of a held request.
    Gate(GateId),
    /// One move of the background mover's batch on `migration.servers[i]`.
    Scan(PoolId, usize),
    /// Nothing (the caller only wanted the key moved).
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// redis MIGRATE of one key.
    Migrate,
    /// redis DUMP and PTTL, two replies.
    Dump,
    Restore,
    /// redis DEL (or memcached delete) on the source, once the destination
    /// has the key.
    Del,
    /// redis MIGRATE of a mover batch (`keys`).
    Batch,
    /// redis SCAN / memcached metadump of the mover on `from`.
    List(usize),
    /// memcached `mg k v f t` on the source.
    McGet,
    /// memcached `add` on the destination.
    McAdd,
}

/// One key (or one mover batch) being moved.
pub struct Job {
    pool: PoolId,
    from: ServerId,
    to: ServerId,
    key: Vec<u8>,
    keys: Vec<Vec<u8>>,
    step: Step,
    /// Replies still awaited for this step.
    outstanding: u32,
    /// Some step of it failed.
    failed: bool,
    /// redis DUMP: the reply (a bulk string, ready to be RESTORE's last
    /// argument); memcached mg: the value block.
    held: Vec<Seg>,
    /// redis PTTL / memcached remaining TTL; memcached flags.
    ttl: i64,
    flags: u32,
    /// The key does not exist on the source.
    missing: bool,
    /// A mover batch: how many of its keys the source held just before
    /// its MIGRATE (whose `+OK` only says at least one moved).
    present: Option<i64>,
    waiters: Vec<Then>,
    /// Registered in `inflight`.
    registered: bool,
}

impl Job {
    fn new(pool: PoolId, from: ServerId, to: ServerId, step: Step) -> Job {
        Job {
            pool,
            from,
            to,
            key: Vec::new(),
            keys: Vec::new(),
            step,
            outstanding: 0,
            failed: false,
            held: Vec::new(),
            ttl: 0,
            flags: 0,
            missing: false,
            present: None,
            waiters: Vec::new(),
            registered: false,
        }
    }
}

/// What a step's reply says, read from its bytes.
struct Answer {
    /// The request failed (connection, timeout): no reply at all.
    failed: bool,
    /// The first bytes of the reply.
    text: Vec<u8>,
}

impl Answer {
    fn is(&self, prefix: &[u8]) -> bool {
        self.text.starts_with(prefix)
    }

    fn contains(&self, word: &[u8]) -> bool {
        self.text.windows(word.len()).any(|w| w == word)
    }

    /// An error saying MIGRATE cannot be used at all between these
    /// backends: the fallback applies.
    fn migrate_unavailable(&self) -> bool {
        self.is(b"-") && (self.contains(b"unknown command") || self.contains(b"IOERR"))
            || self.is(b"-NOPERM")
    }
}

impl Context {
    /// True while pool `pid` has a migration that is not complete: the one
    /// test requests pay when no migration runs.
    pub fn migrating(&self, pid: PoolId) -> bool {
        self.topo
            .pool(pid)
            .and_then(|p| p.migration.as_ref())
            .is_some_and(|m| !m.complete)
    }

    /// The previous owner of `key`, when it differs from `to`.
    fn old_owner(&self, pid: PoolId, key: &[u8], to: ServerId) -> Option<ServerId> {
        let pool = self.topo.pool(pid)?;
        let m = pool.migration.as_ref().filter(|m| !m.complete)?;
        let idx = hashkit::select(
            &m.selector,
            pool.conf.hash,
            pool.conf.hash_tag,
            key,
            m.servers.len(),
        )?;
        m.servers.get(idx).copied().filter(|&o| o != to)
    }

    /// Forwards `mid` to `to` once every key in `keys` whose previous
    /// owner differs has been moved there (at once when none has to be).
    pub fn forward_moving(&mut self, mid: MsgId, pid: PoolId, to: ServerId, keys: Vec<Vec<u8>>) {
        let gate = self.moves.gates.insert(Gate {
            mid,
            to,
            // One guard, released below, so a move that finishes at once
            // (its server is down) cannot release the request early.
            pending: 1,
        });
        for key in keys {
            if let Some(from) = self.old_owner(pid, &key, to) {
                if let Some(g) = self.moves.gates.get_mut(gate) {
                    g.pending += 1;
                }
                self.move_key(pid, key, from, to, Then::Gate(gate));
            }
        }
        self.gate_release(gate);
    }

    /// Fragments of a split request are built (over several turns,
    /// `split.rs`) before they are sent; their keys are kept here, one by
    /// one, and their moves start when they are sent
    /// ([`Context::forward_staged`]).
    pub fn stage_move(&mut self, child: MsgId, key: Vec<u8>) {
        match self.moves.staged.iter_mut().find(|(c, _)| *c == child) {
            Some((_, keys)) => keys.push(key),
            None => self.moves.staged.push((child, vec![key])),
        }
    }

    /// Forgets the keys staged for fragments that will not be sent.
    pub fn unstage(&mut self, children: &[MsgId]) {
        if !self.moves.staged.is_empty() {
            self.moves.staged.retain(|(c, _)| !children.contains(c));
        }
    }

    /// Sends a fragment: after its staged moves, if it has any.
    pub fn forward_staged(&mut self, child: MsgId, pid: PoolId, to: ServerId) {
        if !self.moves.staged.is_empty() {
            if let Some(i) = self.moves.staged.iter().position(|(c, _)| *c == child) {
                let (_, keys) = self.moves.staged.swap_remove(i);
                self.forward_moving(child, pid, to, keys);
                return;
            }
        }
        self.forward(child, to);
    }

    fn gate_release(&mut self, gate: GateId) {
        let Some(g) = self.moves.gates.get_mut(gate) else {
            return;
        };
        g.pending = g.pending.saturating_sub(1);
        if g.pending > 0 {
            return;
        }
        let (mid, to) = (g.mid, g.to);
        self.moves.gates.remove(gate);
        if self.msgs.contains(mid) {
            self.forward(mid, to);
        }
    }

    /// Moves `key` of pool `pid` from server `from` to server `to`, then
    /// does `then`. A move of the same key from the same server already
    /// running is joined instead of repeated.
    pub fn move_key(
        &mut self,
        pid: PoolId,
        key: Vec<u8>,
        from: ServerId,
        to: ServerId,
        then: Then,
    ) {
        if let Some(&jid) = self.moves.inflight.get(&key) {
            if let Some(job) = self.moves.jobs.get_mut(jid) {
                if job.pool == pid && job.from == from && job.to == to {
                    job.waiters.push(then);
                    return;
                }
            }
        }
        let redis = self.topo.pool(pid).is_none_or(|p| p.conf.redis);
        let mut job = Job::new(
            pid,
            from,
            to,
            if redis { Step::Migrate } else { Step::McGet },
        );
        job.waiters.push(then);
        job.key = key.clone();
        let registered = !self.moves.inflight.contains_key(&key);
        job.registered = registered;
        let jid = self.moves.jobs.insert(job);
        if registered {
            self.moves.inflight.insert(key, jid);
        }
        if redis {
            if self.can_migrate(pid, to) {
                self.send_migrate(jid, false);
            } else {
                self.send_dump(jid);
            }
        } else {
            self.send_mc_get(jid);
        }
    }

    /// MIGRATE is not known to be refused and the destination has an
    /// address another server can reach.
    fn can_migrate(&self, pid: PoolId, to: ServerId) -> bool {
        let refused = self
            .topo
            .pool(pid)
            .and_then(|p| p.migration.as_ref())
            .is_some_and(|m| m.no_migrate);
        !refused
            && self
                .topo
                .server(to)
                .is_some_and(|s| matches!(s.conf.addr, ServerAddr::Tcp { .. }))
    }

    /// Queues one step's request on `server`.
    fn send(&mut self, jid: JobId, server: ServerId, wire: &[u8]) {
        let mid = self.alloc_msg(Origin::Internal(Internal::Move(jid)));
        self.set_request(mid, wire);
        self.forward(mid, server);
    }

    fn redis_send(&mut self, jid: JobId, server: ServerId, args: &[&[u8]]) {
        let mut wire = Vec::new();
        crate::proto::redis::write_command(&mut wire, args);
        self.send(jid, server, &wire);
    }

    /// `MIGRATE host port "" db timeout [AUTH pw] KEYS k...` on the source.
    fn send_migrate(&mut self, jid: JobId, batch: bool) {
        let Some(job) = self.moves.jobs.get_mut(jid) else {
            return;
        };
        job.step = if batch { Step::Batch } else { Step::Migrate };
        job.outstanding = if batch { 2 } else { 1 };
        job.present = None;
        let (pid, from, to) = (job.pool, job.from, job.to);
        let keys: Vec<Vec<u8>> = if batch {
            job.keys.clone()
        } else {
            vec![job.key.clone()]
        };
        let (Some(pool), Some(dst)) = (self.topo.pool(pid), self.topo.server(to)) else {
            self.job_failed(jid);
            return;
        };
        let ServerAddr::Tcp { host, port } = &dst.conf.addr else {
            self.job_failed(jid);
            return;
        };
        let port = port.to_string();
        let db = pool.conf.redis_db.to_string();
        let timeout = pool.conf.timeout_ms.unwrap_or(5000).max(1000).to_string();
        let auth = pool.conf.redis_auth.clone();
        let host = host.clone();
        let mut args: Vec<&[u8]> = vec![
            b"MIGRATE",
            host.as_bytes(),
            port.as_bytes(),
            b"",
            db.as_bytes(),
            timeout.as_bytes(),
        ];
        if let Some(pw) = &auth {
            args.push(b"AUTH");
            args.push(pw.as_bytes());
        }
        args.push(b"KEYS");
        args.extend(keys.iter().map(|k| k.as_slice()));
        if !batch {
            self.redis_send(jid, from, &args);
            return;
        }
        // EXISTS right before, on the same connection: nothing this proxy
        // sends can come between, so it counts what the MIGRATE moves.
        let mut exists: Vec<&[u8]> = vec![b"EXISTS"];
        exists.extend(keys.iter().map(|k| k.as_slice()));
        let count = self.internal_msg(&exists, Internal::Move(jid));
        let migrate = self.internal_msg(&args, Internal::Move(jid));
        self.forward_block(&[count, migrate], from);
    }

    /// `DUMP k` and `PTTL k` on the source, one after the other on one
    /// connection.
    fn send_dump(&mut self, jid: JobId) {
        let Some(job) = self.moves.jobs.get_mut(jid) else {
            return;
        };
        job.step = Step::Dump;
        job.outstanding = 2;
        job.missing = false;
        let (from, key) = (job.from, job.key.clone());
        let dump = self.internal_msg(&[b"DUMP", &key], Internal::Move(jid));
        let pttl = self.internal_msg(&[b"PTTL", &key], Internal::Move(jid));
        self.forward_block(&[dump, pttl], from);
    }

    fn send_del(&mut self, jid: JobId) {
        let Some(job) = self.moves.jobs.get_mut(jid) else {
            return;
        };
        job.step = Step::Del;
        job.outstanding = 1;
        let (from, key) = (job.from, job.key.clone());
        let redis = self.topo.pool(job.pool).is_none_or(|p| p.conf.redis);
        if redis {
            self.redis_send(jid, from, &[b"DEL", &key]);
        } else {
            let mut wire = b"delete ".to_vec();
            wire.extend_from_slice(&key);
            wire.extend_from_slice(b"\r\n");
            self.send(jid, from, &wire);
        }
    }

    /// `RESTORE k ttl <DUMP's reply>` on the destination: DUMP's reply is a
    /// bulk string, which is how RESTORE's last argument is written, so its
    /// bytes are sent as they came, uncopied.
    fn send_restore(&mut self, jid: JobId) {
        let Some(job) = self.moves.jobs.get_mut(jid) else {
            return;
        };
        job.step = Step::Restore;
        job.outstanding = 1;
        let payload = std::mem::take(&mut job.held);
        let (to, ttl) = (job.to, job.ttl.max(0));
        let mut head = b"*4\r\n".to_vec();
        crate::proto::redis::write_bulk(&mut head, b"RESTORE");
        crate::proto::redis::write_bulk(&mut head, &job.key);
        crate::proto::redis::write_bulk(&mut head, itoa::Buffer::new().format(ttl).as_bytes());
        let mid = self.alloc_msg(Origin::Internal(Internal::Move(jid)));
        let len: usize = payload.iter().map(|s| s.len()).sum();
        self.set_request(mid, &head);
        if let Some(m) = self.msgs.get_mut(mid) {
            m.req.extend_from_slice(&payload);
            m.req_len += len;
        } else {
            self.mbufs.release_segs(&payload);
        }
        self.forward(mid, to);
    }

    /// memcached `mg <key> v f t`: value, flags and remaining TTL.
    fn send_mc_get(&mut self, jid: JobId) {
        let Some(job) = self.moves.jobs.get_mut(jid) else {
            return;
        };
        job.step = Step::McGet;
        job.outstanding = 1;
        let (from, mut wire) = (job.from, b"mg ".to_vec());
        wire.extend_from_slice(&job.key);
        wire.extend_from_slice(b" v f t\r\n");
        self.send(jid, from, &wire);
    }

    /// memcached `add <key> <flags> <exptime> <bytes>` with the value read
    /// from the source: a value already on the destination is newer and
    /// stays (NOT_STORED).
    fn send_mc_add(&mut self, jid: JobId) {
        let Some(job) = self.moves.jobs.get_mut(jid) else {
            return;
        };
        job.step = Step::McAdd;
        job.outstanding = 1;
        let value = std::mem::take(&mut job.held);
        let len: usize = value.iter().map(|s| s.len()).sum();
        // Relative up to 30 days; beyond that memcached reads an absolute
        // time, so the remaining TTL is turned into one.
        let exptime = match job.ttl {
            t if t <= 0 => 0,
            t if t <= 2_592_000 => t,
            t => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                now + t
            }
        };
        let mut head = b"add ".to_vec();
        head.extend_from_slice(&job.key);
        head.extend_from_slice(format!(" {} {} {}\r\n", job.flags, exptime, len).as_bytes());
        let to = job.to;
        let mid = self.alloc_msg(Origin::Internal(Internal::Move(jid)));
        self.set_request(mid, &head);
        if let Some(m) = self.msgs.get_mut(mid) {
            m.req.extend_from_slice(&value);
            m.req_len += len;
        } else {
            self.mbufs.release_segs(&value);
        }
        self.set_request(mid, b"\r\n");
        self.forward(mid, to);
    }

    /// A step's reply, or its failure: drives the job on. The message is
    /// freed here.
    pub fn move_reply(&mut self, mid: MsgId, jid: JobId) {
        let Some(m) = self.msgs.get_mut(mid) else {
            return;
        };
        let failed = m.err != 0 || m.rsp.is_empty();
        let rsp = std::mem::take(&mut m.rsp);
        let step = self.moves.jobs.get(jid).map(|j| j.step);
        let limit = match step {
            Some(Step::List(_)) => usize::MAX,
            _ => TEXT_MAX,
        };
        let mut text = Vec::new();
        for s in &rsp {
            if text.len() >= limit {
                break;
            }
            let b = self.mbufs.bytes(s);
            text.extend_from_slice(b.get(..b.len().min(limit - text.len())).unwrap_or_default());
        }
        let ans = Answer { failed, text };
        let mut rsp = Some(rsp);
        if let Some(job) = self.moves.jobs.get_mut(jid) {
            job.outstanding = job.outstanding.saturating_sub(1);
            match job.step {
                // DUMP's reply is kept for RESTORE; mg's value for add.
                Step::Dump if job.outstanding == 1 && !failed => {
                    if ans.is(b"$-1") || !ans.is(b"$") {
                        job.missing = true;
                    } else {
                        job.held = rsp.take().unwrap_or_default();
                    }
                }
                Step::McGet if !failed && ans.is(b"VA ") => {
                    job.held = rsp.take().unwrap_or_default();
                }
                _ => {}
            }
        }
        if let Some(rsp) = rsp {
            self.mbufs.release_segs(&rsp);
        }
        self.free_msg(mid);
        let Some(step) = step else {
            return;
        };
        match step {
            Step::Migrate => self.migrate_answered(jid, &ans),
            Step::Batch => self.batch_answered(jid, &ans),
            Step::Dump => self.dump_answered(jid, &ans),
            Step::Restore => self.restore_answered(jid, &ans),
            Step::Del => {
                if ans.failed || ans.is(b"-") || ans.is(b"SERVER_ERROR") || ans.is(b"ERROR") {
                    self.job_failed(jid);
                } else {
                    self.finish(jid);
                }
            }
            Step::List(idx) => self.list_answered(jid, idx, &ans),
            Step::McGet => self.mc_get_answered(jid, &ans),
            Step::McAdd => {
                if ans.is(b"STORED") {
                    self.count_moved(jid, 1);
                    self.send_del(jid);
                } else if ans.is(b"NOT_STORED") {
                    // The destination has a newer value: the old copy goes.
                    self.send_del(jid);
                } else {
                    self.job_failed(jid);
                }
            }
        }
    }

    fn migrate_answered(&mut self, jid: JobId, ans: &Answer) {
        if ans.failed {
            self.job_failed(jid);
        } else if ans.is(b"+NOKEY") {
            self.finish(jid);
        } else if ans.is(b"+") {
            self.count_moved(jid, 1);
            self.finish(jid);
        } else if ans.contains(b"BUSYKEY") {
            // The destination already has a newer value.
            self.send_del(jid);
        } else if ans.migrate_unavailable() {
            self.refuse_migrate(jid, ans);
            self.send_dump(jid);
        } else {
            self.log_move_error(jid, ans);
            self.job_failed(jid);
        }
    }

    /// A mover batch: on success every key moved (or was gone already);
    /// on any error each key is moved on its own, which tells them apart.
    fn batch_answered(&mut self, jid: JobId, ans: &Answer) {
        if let Some(job) = self.moves.jobs.get_mut(jid) {
            if job.outstanding == 1 {
                // EXISTS's reply; MIGRATE's is next.
                job.present = if ans.failed {
                    None
                } else {
                    parse_integer(&ans.text)
                };
                return;
            }
        }
        if ans.failed {
            self.job_failed(jid);
            return;
        }
        if ans.is(b"+NOKEY") {
            self.finish(jid);
            return;
        }
        if ans.is(b"+") {
            let n = self.moves.jobs.get(jid).map_or(0, |j| {
                let all = j.keys.len() as i64;
                j.present.map_or(all, |p| p.clamp(0, all))
            });
            self.count_moved(jid, n);
            self.finish(jid);
            return;
        }
        if ans.migrate_unavailable() {
            self.refuse_migrate(jid, ans);
        }
        let Some(job) = self.moves.jobs.get_mut(jid) else {
            return;
        };
        let keys = std::mem::take(&mut job.keys);
        let (pid, from, to) = (job.pool, job.from, job.to);
        let scan = job.waiters.iter().find_map(|w| match w {
            Then::Scan(p, i) => Some((*p, *i)),
            _ => None,
        });
        if let Some((p, i)) = scan {
            if let Some(sc) = self.scan_mut(p, i) {
                sc.pending += keys.len() as u32;
            }
        }
        for key in keys {
            let then = scan.map_or(Then::Nothing, |(p, i)| Then::Scan(p, i));
            self.move_key(pid, key, from, to, then);
        }
        self.finish(jid);
    }

    fn dump_answered(&mut self, jid: JobId, ans: &Answer) {
        let Some(job) = self.moves.jobs.get_mut(jid) else {
            return;
        };
        if ans.failed {
            job.failed = true;
        }
        if job.outstanding == 1 {
            // DUMP's reply; PTTL's is next.
            return;
        }
        // PTTL: -2 the key is gone, -1 no expiry (RESTORE's 0).
        if !ans.failed {
            match parse_integer(&ans.text) {
                Some(-2) => job.missing = true,
                Some(t) => job.ttl = if t < 0 { 0 } else { t },
                None => job.failed = true,
            }
        }
        if job.failed {
            self.job_failed(jid);
        } else if job.missing || job.held.is_empty() {
            self.finish(jid);
        } else {
            self.send_restore(jid);
        }
    }

    fn restore_answered(&mut self, jid: JobId, ans: &Answer) {
        if ans.failed {
            self.job_failed(jid);
        } else if ans.is(b"+") {
            self.count_moved(jid, 1);
            self.send_del(jid);
        } else if ans.contains(b"BUSYKEY") {
            self.send_del(jid);
        } else {
            self.log_move_error(jid, ans);
            self.job_failed(jid);
        }
    }

    /// `VA <len> f<flags> t<ttl>` then the value, or `EN` (a miss).
    fn mc_get_answered(&mut self, jid: JobId, ans: &Answer) {
        if ans.failed {
            self.job_failed(jid);
            return;
        }
        if ans.is(b"EN") {
            self.finish(jid);
            return;
        }
        let head = parse_mc_value_head(&ans.text);
        let Some(job) = self.moves.jobs.get_mut(jid) else {
            return;
        };
        let Some((header_len, len, flags, ttl)) = head else {
            let held = std::mem::take(&mut job.held);
            self.mbufs.release_segs(&held);
            self.log_move_error(jid, ans);
            self.job_failed(jid);
            return;
        };
        // Keep only the value bytes of the block.
        let held = std::mem::take(&mut job.held);
        let mut value = Vec::new();
        crate::msg::slice_segs(&held, header_len, header_len + len, &mut value);
        for s in &value {
            self.mbufs.retain(s.id);
        }
        self.mbufs.release_segs(&held);
        if let Some(job) = self.moves.jobs.get_mut(jid) {
            job.held = value;
            job.flags = flags;
            job.ttl = ttl;
        }
        self.send_mc_add(jid);
    }

    /// MIGRATE cannot be used in this pool: remembered, logged once.
    fn refuse_migrate(&mut self, jid: JobId, ans: &Answer) {
        let Some(pid) = self.moves.jobs.get(jid).map(|j| j.pool) else {
            return;
        };
        let Some(pool) = self.topo.pool_mut(pid) else {
            return;
        };
        if let Some(m) = pool.migration.as_mut() {
            if !m.no_migrate {
                m.no_migrate = true;
                crate::log_warn!(
                    "pool '{}': MIGRATE unavailable ({}), moving keys with DUMP and RESTORE",
                    pool.conf.name,
                    String::from_utf8_lossy(&ans.text).trim_end()
                );
            }
        }
    }

    fn log_move_error(&self, jid: JobId, ans: &Answer) {
        if let Some(job) = self.moves.jobs.get(jid) {
            let name = self
                .topo
                .pool(job.pool)
                .map_or("", |p| p.conf.name.as_str());
            crate::log_info!(
                "pool '{}': moving a key failed: {}",
                name,
                String::from_utf8_lossy(&ans.text).trim_end()
            );
        }
    }

    fn count_moved(&mut self, jid: JobId, n: i64) {
        if let Some(pid) = self.moves.jobs.get(jid).map(|j| j.pool) {
            if let Some(p) = self.topo.pool_mut(pid) {
                p.stats.migrate_moved += n;
            }
        }
    }

    /// A step failed: counted; nothing more is done to the key (it stays
    /// where it is) and the waiters go on.
    fn job_failed(&mut self, jid: JobId) {
        if let Some(job) = self.moves.jobs.get(jid) {
            let pid = job.pool;
            if let Some(p) = self.topo.pool_mut(pid) {
                p.stats.migrate_errors += 1;
                if let Some(m) = p.migration.as_mut() {
                    m.dirty = true;
                }
            }
        }
        self.finish(jid);
    }

    fn finish(&mut self, jid: JobId) {
        let Some(job) = self.moves.jobs.remove(jid) else {
            return;
        };
        self.mbufs.release_segs(&job.held);
        if job.registered && self.moves.inflight.get(&job.key) == Some(&jid) {
            self.moves.inflight.remove(&job.key);
        }
        for w in job.waiters {
            match w {
                Then::Gate(g) => self.gate_release(g),
                Then::Scan(pid, idx) => self.scan_move_done(pid, idx),
                Then::Nothing => {}
            }
        }
    }

    // ------------------------------------------------------------------
    // Configuration

    /// Sets up the migrations of every pool at start-up.
    pub fn migrate_start_all(&mut self) {
        for pid in self.topo.order.clone() {
            self.migrate_configure(pid);
        }
    }

    /// After a pool was created or reloaded: starts, keeps, rebuilds or
    /// ends its migration to match `migrate_from:`.
    pub fn migrate_configure(&mut self, pid: PoolId) {
        let Some(pool) = self.topo.pool(pid) else {
            return;
        };
        let want = (pool.conf.migrate_from.clone(), pool.conf.servers.clone());
        if let Some(m) = &pool.migration {
            if m.built_from == want {
                return;
            }
        }
        let dist = pool.conf.distribution;
        let current: Vec<ServerId> = pool.servers.clone();
        let previous: Vec<ServerId> = pool
            .migration
            .as_ref()
            .map(|m| m.servers.clone())
            .unwrap_or_default();
        let name = pool.conf.name.clone();
        let mut servers = Vec::with_capacity(want.0.len());
        for sc in &want.0 {
            let found = current.iter().chain(previous.iter()).copied().find(|&s| {
                self.topo
                    .server(s)
                    .is_some_and(|srv| same_server(&srv.conf, sc))
            });
            let id = match found {
                Some(s) => {
                    if let Some(srv) = self.topo.server_mut(s) {
                        srv.detached = false;
                    }
                    s
                }
                None => self.topo.servers.insert(Server::new(pid, sc.clone())),
            };
            servers.push(id);
        }
        // Previous servers of an earlier migration no longer used go.
        for s in previous {
            if !servers.contains(&s) && !current.contains(&s) {
                self.retire_server(s);
            }
        }
        let ended = self.topo.pool_mut(pid).and_then(|p| p.migration.take());
        if let Some(old) = &ended {
            self.close_dump_conns(old);
        }
        if want.0.is_empty() {
            if let Some(p) = self.topo.pool_mut(pid) {
                p.stats.migrating = 0;
            }
            return;
        }
        let specs: Vec<ServerSpec> = want
            .0
            .iter()
            .map(|sc| ServerSpec {
                name: sc.name.as_bytes(),
                weight: sc.weight,
                live: true,
            })
            .collect();
        let selector = Selector::build(dist, &specs);
        let now = self.now;
        let nscans = servers.len();
        let moved = self.topo.pool(pid).map_or(0, |p| p.stats.migrate_moved);
        let m = Migration {
            built_from: want,
            servers,
            selector,
            complete: false,
            started: now,
            moved_at_start: moved,
            no_migrate: false,
            scans: (0..nscans).map(|_| Scan::new()).collect(),
            tokens: 0.0,
            last_refill: now,
            dirty: false,
            tick_pending: true,
            kicking: false,
            rekick: false,
        };
        let old_pending = ended.as_ref().is_some_and(|m| m.tick_pending);
        if let Some(p) = self.topo.pool_mut(pid) {
            p.migration = Some(Box::new(m));
            p.stats.migrating = 1;
        }
        crate::log_notice!(
            "pool '{}': migration from {} previous servers started",
            name,
            nscans
        );
        // A tick already scheduled for the previous migration serves.
        if !old_pending {
            self.timers.schedule(now, TimerEvent::MigrateTick(pid));
        }
    }

    /// The mover's own connections of a migration that ended are closed
    /// once idle.
    fn close_dump_conns(&mut self, m: &Migration) {
        for sk in m.scans.iter().filter_map(|sc| sc.dump_conn) {
            let idle = match self.conns.get_mut(sk) {
                Some(Conn::Server(c)) => {
                    c.draining = true;
                    c.idle()
                }
                _ => false,
            };
            if idle {
                self.server_close(sk, 0, false);
            }
        }
    }

    /// A previous server no longer needed: it takes no new work and goes
    /// once its connections are idle.
    fn retire_server(&mut self, s: ServerId) {
        let in_pool = self
            .topo
            .server(s)
            .and_then(|srv| self.topo.pool(srv.pool))
            .is_some_and(|p| p.servers.contains(&s));
        if in_pool {
            return;
        }
        if let Some(srv) = self.topo.server_mut(s) {
            srv.detached = true;
        }
        self.drain_server(s, 0);
    }

    // ------------------------------------------------------------------
    // The background mover

    fn scan_mut(&mut self, pid: PoolId, idx: usize) -> Option<&mut Scan> {
        self.topo
            .pool_mut(pid)?
            .migration
            .as_mut()?
            .scans
            .get_mut(idx)
    }

    /// Refills the mover's budget and starts what it allows.
    pub fn migrate_tick(&mut self, pid: PoolId) {
        let now = self.now;
        let Some(pool) = self.topo.pool_mut(pid) else {
            return;
        };
        let retired = pool.retired;
        let rate = f64::from(pool.conf.migrate_rate.max(1));
        let Some(m) = pool.migration.as_mut() else {
            return;
        };
        m.tick_pending = false;
        if m.complete {
            return;
        }
        if retired {
            // The pool left the configuration: its previous servers go.
            let Some(old) = pool.migration.take() else {
                return;
            };
            self.close_dump_conns(&old);
            for &s in &old.servers {
                self.retire_server(s);
            }
            return;
        }
        let dt = now.saturating_duration_since(m.last_refill).as_secs_f64();
        m.last_refill = now;
        // At most a second's worth banked, and always room for one batch.
        m.tokens = (m.tokens + rate * dt).min(rate.max(1.0));
        m.tick_pending = true;
        self.timers
            .schedule(now + TICK, TimerEvent::MigrateTick(pid));
        self.mover_kick(pid);
    }

    /// Starts a batch on every previous server that is ready, within the
    /// budget; ends the pass when every server is done. Batches that end
    /// while it runs (their moves failed at once) ask for another round,
    /// taken here in a loop rather than by recursion.
    fn mover_kick(&mut self, pid: PoolId) {
        let Some(m) = self.topo.pool_mut(pid).and_then(|p| p.migration.as_mut()) else {
            return;
        };
        if m.kicking {
            m.rekick = true;
            return;
        }
        m.kicking = true;
        loop {
            if let Some(m) = self.topo.pool_mut(pid).and_then(|p| p.migration.as_mut()) {
                m.rekick = false;
            }
            self.mover_round(pid);
            let Some(m) = self.topo.pool_mut(pid).and_then(|p| p.migration.as_mut()) else {
                return;
            };
            if !m.rekick || m.complete {
                m.kicking = false;
                return;
            }
        }
    }

    fn mover_round(&mut self, pid: PoolId) {
        let now = self.now;
        let Some(pool) = self.topo.pool_mut(pid) else {
            return;
        };
        let redis = pool.conf.redis;
        let Some(m) = pool.migration.as_mut() else {
            return;
        };
        if m.complete {
            return;
        }
        if m.scans.iter().all(|s| s.state == ScanState::Done) {
            if m.dirty {
                m.dirty = false;
                for s in &mut m.scans {
                    let conn = s.dump_conn;
                    *s = Scan::new();
                    s.dump_conn = conn;
                }
            } else {
                self.migration_complete(pid);
                return;
            }
        }
        let mut start = Vec::new();
        let ready = m
            .scans
            .iter()
            .filter(|s| s.state == ScanState::Idle && s.retry_at.is_none_or(|t| t <= now))
            .count()
            .max(1);
        for (i, sc) in m.scans.iter_mut().enumerate() {
            if m.tokens < 1.0 {
                break;
            }
            if sc.state != ScanState::Idle || sc.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            sc.retry_at = None;
            let count = ((m.tokens / ready as f64) as u64).clamp(1, MAX_BATCH);
            sc.state = ScanState::Busy;
            if !redis && sc.dumped {
                // Keys listed already: the next slice of them.
                let n = (count as usize).min(sc.listed.len());
                let keys: Vec<Vec<u8>> = sc.listed.drain(..n).collect();
                m.tokens -= n as f64;
                start.push((i, None, keys, sc.listed.is_empty()));
            } else {
                start.push((i, Some((sc.cursor, count)), Vec::new(), false));
            }
        }
        let servers = m.servers.clone();
        for (i, list, keys, last) in start {
            let Some(&from) = servers.get(i) else {
                continue;
            };
            match list {
                Some((cursor, count)) => {
                    let jid = self
                        .moves
                        .jobs
                        .insert(Job::new(pid, from, from, Step::List(i)));
                    if let Some(j) = self.moves.jobs.get_mut(jid) {
                        j.outstanding = 1;
                    }
                    if redis {
                        let c = cursor.to_string();
                        let n = count.to_string();
                        self.redis_send(
                            jid,
                            from,
                            &[b"SCAN", c.as_bytes(), b"COUNT", n.as_bytes()],
                        );
                    } else {
                        let mid = self.alloc_msg(Origin::Internal(Internal::Move(jid)));
                        self.set_request(mid, b"lru_crawler metadump all\r\n");
                        let conn = self.scan_mut(pid, i).and_then(|sc| sc.dump_conn);
                        let used = self.forward_private(mid, from, conn);
                        if let Some(sc) = self.scan_mut(pid, i) {
                            sc.dump_conn = used;
                        }
                    }
                }
                None => self.examine(pid, i, from, keys, last),
            }
        }
    }

    /// A SCAN or metadump reply.
    fn list_answered(&mut self, jid: JobId, idx: usize, ans: &Answer) {
        let Some(job) = self.moves.jobs.remove(jid) else {
            return;
        };
        let (pid, from) = (job.pool, job.from);
        let redis = self.topo.pool(pid).is_none_or(|p| p.conf.redis);
        let parsed = if ans.failed {
            None
        } else if redis {
            parse_scan_reply(&ans.text).map(|(c, keys)| (Some(c), keys))
        } else {
            parse_metadump(&ans.text).map(|keys| (None, keys))
        };
        let Some((cursor, keys)) = parsed else {
            let now = self.now;
            if let Some(p) = self.topo.pool_mut(pid) {
                p.stats.migrate_errors += 1;
                if let Some(m) = p.migration.as_mut() {
                    m.dirty = true;
                }
                if !ans.failed {
                    crate::log_info!(
                        "pool '{}': listing keys failed: {}",
                        p.conf.name,
                        String::from_utf8_lossy(
                            ans.text
                                .get(..ans.text.len().min(TEXT_MAX))
                                .unwrap_or_default()
                        )
                        .trim_end()
                    );
                }
            }
            if let Some(sc) = self.scan_mut(pid, idx) {
                sc.state = ScanState::Idle;
                sc.retry_at = Some(now + SCAN_RETRY);
            }
            return;
        };
        match cursor {
            Some(c) => {
                if let Some(p) = self.topo.pool_mut(pid) {
                    if let Some(m) = p.migration.as_mut() {
                        m.tokens -= keys.len() as f64;
                    }
                }
                if let Some(sc) = self.scan_mut(pid, idx) {
                    sc.cursor = c;
                }
                self.examine(pid, idx, from, keys, c == 0);
            }
            None => {
                // memcached: the whole dump at once, examined in slices.
                if let Some(sc) = self.scan_mut(pid, idx) {
                    sc.listed = keys;
                    sc.dumped = true;
                    sc.state = ScanState::Idle;
                    if sc.listed.is_empty() {
                        sc.state = ScanState::Done;
                    }
                }
                self.mover_kick(pid);
            }
        }
    }

    /// Keys found on previous server `from`: those whose owner is now
    /// another server are moved there. `last`: the pass over `from` ends
    /// with this batch.
    fn examine(&mut self, pid: PoolId, idx: usize, from: ServerId, keys: Vec<Vec<u8>>, last: bool) {
        let Some(pool) = self.topo.pool_mut(pid) else {
            return;
        };
        pool.stats.migrate_scanned += keys.len() as i64;
        let redis = pool.conf.redis;
        let mut groups: Vec<(ServerId, bool, Vec<Vec<u8>>)> = Vec::new();
        let mut unplaced = false;
        for key in keys {
            match self.topo.route(pid, &key) {
                Ok(to) if to == from => {}
                Ok(to) => match groups.iter_mut().find(|(s, _, _)| *s == to) {
                    Some((_, _, v)) => v.push(key),
                    None => {
                        let batch = redis && self.can_migrate(pid, to);
                        groups.push((to, batch, vec![key]));
                    }
                },
                Err(_) => unplaced = true,
            }
        }
        let njobs: usize = groups
            .iter()
            .map(|(_, batch, v)| if *batch { 1 } else { v.len() })
            .sum();
        if let Some(m) = self.topo.pool_mut(pid).and_then(|p| p.migration.as_mut()) {
            if !groups.is_empty() || unplaced {
                m.dirty = true;
            }
        }
        let Some(sc) = self.scan_mut(pid, idx) else {
            return;
        };
        // One extra, released below, so moves that finish at once do not
        // end the batch before all have started.
        sc.pending = njobs as u32 + 1;
        sc.state = ScanState::Busy;
        sc.last = last;
        for (to, batch, keys) in groups {
            if batch {
                let mut job = Job::new(pid, from, to, Step::Batch);
                job.keys = keys;
                job.waiters.push(Then::Scan(pid, idx));
                let jid = self.moves.jobs.insert(job);
                self.send_migrate(jid, true);
            } else {
                for key in keys {
                    self.move_key(pid, key, from, to, Then::Scan(pid, idx));
                }
            }
        }
        self.scan_move_done(pid, idx);
    }

    /// One move of a mover batch finished; when the batch is done the
    /// server is ready for the next one (or done with this pass).
    fn scan_move_done(&mut self, pid: PoolId, idx: usize) {
        let Some(sc) = self.scan_mut(pid, idx) else {
            return;
        };
        sc.pending = sc.pending.saturating_sub(1);
        if sc.pending > 0 || sc.state != ScanState::Busy {
            return;
        }
        sc.state = if sc.last {
            ScanState::Done
        } else {
            ScanState::Idle
        };
        self.mover_kick(pid);
    }

    fn migration_complete(&mut self, pid: PoolId) {
        let now = self.now;
        let Some(pool) = self.topo.pool_mut(pid) else {
            return;
        };
        let Some(m) = pool.migration.as_mut() else {
            return;
        };
        m.complete = true;
        pool.stats.migrating = 0;
        let moved = pool.stats.migrate_moved - m.moved_at_start;
        let secs = now.saturating_duration_since(m.started).as_secs_f64();
        crate::log_notice!(
            "pool '{}': migration complete, {} keys moved in {:.1} s",
            pool.conf.name,
            moved,
            secs
        );
        let servers = m.servers.clone();
        let conns: Vec<ConnId> = m
            .scans
            .iter_mut()
            .filter_map(|sc| sc.dump_conn.take())
            .collect();
        for s in servers {
            self.retire_server(s);
        }
        for sk in conns {
            let idle = match self.conns.get_mut(sk) {
                Some(Conn::Server(c)) => {
                    c.draining = true;
                    c.idle()
                }
                _ => false,
            };
            if idle {
                self.server_close(sk, 0, false);
            }
        }
    }
}

/// The value of an integer reply `:<n>\r\n`.
fn parse_integer(b: &[u8]) -> Option<i64> {
    let rest = b.strip_prefix(b":")?;
    let end = rest.iter().position(|&c| c == b'\r')?;
    std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()
}

/// Reads a `$<len>\r\n` header at `at`: the length and where the data
/// starts.
fn bulk_at(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let rest = b.get(at..)?.strip_prefix(b"$")?;
    let end = rest.iter().position(|&c| c == b'\r')?;
    let len: usize = std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()?;
    let data = at + 1 + end + 2;
    if b.len() < data.checked_add(len)?.checked_add(2)? {
        return None;
    }
    Some((len, data))
}

/// SCAN's reply `*2 $cursor *n $key...`: the next cursor and the keys.
/// `None` for anything else (an error, or a backend that lies).
pub fn parse_scan_reply(b: &[u8]) -> Option<(u64, Vec<Vec<u8>>)> {
    let rest = b.strip_prefix(b"*2\r\n")?;
    let base = b.len() - rest.len();
    let (clen, cdata) = bulk_at(b, base)?;
    let cursor: u64 = std::str::from_utf8(b.get(cdata..cdata + clen)?)
        .ok()?
        .parse()
        .ok()?;
    let mut at = cdata + clen + 2;
    let head = b.get(at..)?.strip_prefix(b"*")?;
    let end = head.iter().position(|&c| c == b'\r')?;
    let n: usize = std::str::from_utf8(head.get(..end)?).ok()?.parse().ok()?;
    at += 1 + end + 2;
    let mut keys = Vec::with_capacity(n.min(MAX_BATCH as usize * 4));
    for _ in 0..n {
        let (len, data) = bulk_at(b, at)?;
        keys.push(b.get(data..data + len)?.to_vec());
        at = data + len + 2;
    }
    Some((cursor, keys))
}

/// `lru_crawler metadump all`: one `key=<uri-encoded key> exp=... ...`
/// line per item (ended by a bare `\n`), then `END`. The keys, decoded. `None` for an error reply.
pub fn parse_metadump(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut ended = false;
    for line in b.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line == b"END" {
            ended = true;
            break;
        }
        let field = line.split(|&c| c == b' ').next()?;
        let enc = field.strip_prefix(b"key=")?;
        keys.push(uri_decode(enc)?);
    }
    ended.then_some(keys)
}

fn uri_decode(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Some(out)
}

/// The header of `mg`'s hit `VA <len> f<flags> t<ttl>\r\n`: its length,
/// the value's length, the flags and the remaining TTL (-1: none).
fn parse_mc_value_head(b: &[u8]) -> Option<(usize, usize, u32, i64)> {
    let end = b.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(b.get(..end)?).ok()?;
    let mut words = line.split(' ');
    if words.next()? != "VA" {
        return None;
    }
    let len: usize = words.next()?.parse().ok()?;
    let (mut flags, mut ttl) = (0u32, -1i64);
    for w in words {
        if let Some(f) = w.strip_prefix('f') {
            flags = f.parse().ok()?;
        } else if let Some(t) = w.strip_prefix('t') {
            ttl = t.parse().ok()?;
        }
    }
    Some((end + 2, len, flags, ttl))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn scan_replies() {
        let r = b"*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$3\r\nb\0c\r\n";
        assert_eq!(
            parse_scan_reply(r),
            Some((17, vec![b"a".to_vec(), b"b\0c".to_vec()]))
        );
        assert_eq!(
            parse_scan_reply(b"*2\r\n$1\r\n0\r\n*0\r\n"),
            Some((0, vec![]))
        );
        // Lies and errors are refused, never trusted.
        assert_eq!(parse_scan_reply(b"-ERR no\r\n"), None);
        assert_eq!(
            parse_scan_reply(b"*2\r\n$1\r\n0\r\n*3\r\n$1\r\na\r\n"),
            None
        );
        assert_eq!(parse_scan_reply(b"*2\r\n$9\r\n0\r\n*0\r\n"), None);
        assert_eq!(parse_scan_reply(b"*2\r\n$1\r\nx\r\n*0\r\n"), None);
        for cut in 0..r.len() {
            assert_eq!(parse_scan_reply(&r[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn metadump_lines() {
        let d =
            b"key=a%20b exp=-1 la=1 cas=2 fetch=no cls=1 size=60\r\nkey=c exp=5 la=1\r\nEND\r\n";
        assert_eq!(
            parse_metadump(d),
            Some(vec![b"a b".to_vec(), b"c".to_vec()])
        );
        assert_eq!(parse_metadump(b"END\r\n"), Some(vec![]));
        assert_eq!(parse_metadump(b"BUSY currently processing\r\n"), None);
        assert_eq!(parse_metadump(b"key=a%2\r\nEND\r\n"), None);
    }

    #[test]
    fn meta_value_header() {
        assert_eq!(
            parse_mc_value_head(b"VA 3 f7 t120\r\nabc\r\n"),
            Some((14, 3, 7, 120))
        );
        assert_eq!(
            parse_mc_value_head(b"VA 3 f0 t-1\r\nabc\r\n"),
            Some((13, 3, 0, -1))
        );
        assert_eq!(parse_mc_value_head(b"EN\r\n"), None);
        assert_eq!(parse_mc_value_head(b"VA x\r\n"), None);
    }

    #[test]
    fn integers() {
        assert_eq!(parse_integer(b":-2\r\n"), Some(-2));
        assert_eq!(parse_integer(b":1500\r\n"), Some(1500));
        assert_eq!(parse_integer(b"$1\r\n"), None);
    }
}
