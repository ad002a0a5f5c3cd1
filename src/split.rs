//! Splitting a multi-key request into one fragment per server (MGET, MSET,
//! DEL, UNLINK, TOUCH, EXISTS; memcached get/gets of several keys), and
//! the queue of split and merge work spread over loop turns.
//!
//! A split is two passes over the keys: routing (each key's server, and
//! so each fragment's key count, which its `*<n>` header needs first),
//! then building (each key's bytes referenced, in place, by its
//! fragment). A merge (`fragment.rs`) is one pass. Each pass does at most
//! [`KEYS_PER_TURN`] keys per turn; what is left is a [`Job`] in the
//! context's `work` list, resumed in the next loop iteration after every
//! other ready connection had its turn (`core.rs`, `take_work`). The
//! progress lives in the parent's [`Frag`].
//!
//! While its request is being split a client reads and parses nothing
//! more: the request's arguments stay where the parser left them, in the
//! client's input, and requests (so replies) stay in order. The fragments
//! are sent once the split is whole; the client gets the merged reply once
//! the merge is whole. Every request is routed under one topology: a
//! reload in the middle of a split starts it again under the new one,
//! unless its keys are all routed already, to servers the new one keeps
//! (then it goes where it was routed, as a request routed just before the
//! reload does). Reloads coming faster than a split's turns cannot starve
//! it: started a third time, it is done in one turn.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::conn::{ClientRx, Conn, ConnId};
use crate::core::Context;
use crate::msg::{Frag, Merge, MsgId, Origin};
use crate::repair::Access;
use crate::topology::{PoolId, ServerId};

/// Keys split (in each pass) or merged per turn of one request. Routing
/// a key already routed while the request was read (`client.rs`,
/// `preroute`) and referencing a key's bytes cost a few nanoseconds each,
/// so a turn of this many keys takes a fraction of a millisecond; hashing
/// keys not routed beforehand (after a reload, or writes while a server is
/// ejected) costs up to ~50 ns a key: still under ~2 ms. A million-key
/// MGET takes about a hundred turns, each a loop iteration that other
/// connections share.
pub const KEYS_PER_TURN: usize = 32 * 1024;

/// Split or merge work left for a later turn.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// The request being split or merged (generation-checked: a request
    /// freed meanwhile is never followed).
    pub parent: MsgId,
    pub kind: JobKind,
}

#[derive(Debug, Clone, Copy)]
pub enum JobKind {
    Split(Split),
    Merge,
}

/// How fragments are written.
#[derive(Debug, Clone, Copy)]
pub enum Form {
    /// `*<n>\r\n$<len>\r\n<name>\r\n` then the key (and value) items;
    /// `step` items per key (MSET: 2).
    Redis { step: usize, name: &'static [u8] },
    /// `<verb>` then each key followed by a space, then CRLF.
    Memcache { verb: &'static [u8] },
}

/// A split under way.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pid: PoolId,
    form: Form,
    /// How the request uses its keys (see `Context::cur_access`).
    access: Access,
    /// The end of the request in its client's input, consumed once the
    /// split is whole.
    end: u64,
    /// The topology generation the keys are routed under.
    generation: u64,
    /// Routing is done; building.
    building: bool,
    /// Times a reload made it start again.
    restarts: u8,
}

/// What one step of a split did.
enum Stepped {
    /// Keys are left for another turn.
    More,
    /// The fragments are built; they can be sent.
    Built,
    /// The request failed (its error reply is set); nothing to send.
    Failed,
}

impl Context {
    /// Splits request `mid` per server (docs/compatibility.md §7.4,
    /// §8.2): the first [`KEYS_PER_TURN`] keys now, the rest in later
    /// turns, during which the client parses nothing more (`client.rs`
    /// sees `splitting` and leaves the request in the input).
    #[allow(clippy::too_many_arguments)]
    pub fn split_start(
        &mut self,
        ck: ConnId,
        mid: MsgId,
        rx: &ClientRx,
        pid: PoolId,
        merge: Merge,
        form: Form,
        end: u64,
    ) {
        let mut frag = self.new_frag();
        frag.merge = Some(merge);
        match self.msgs.get_mut(mid) {
            Some(m) => m.frag = Some(frag),
            None => {
                self.free_frag(frag);
                return;
            }
        }
        let mut sp = Split {
            pid,
            form,
            access: self.cur_access,
            end,
            generation: self.topo.generation,
            building: false,
            restarts: 0,
        };
        loop {
            match self.split_step(mid, &mut sp, rx) {
                // An inline request's arguments live in a scratch input
                // that is gone after this call; it is small anyway.
                Stepped::More if rx.scratch => continue,
                Stepped::More => break,
                Stepped::Built => return self.split_send(mid, pid),
                Stepped::Failed => return,
            }
        }
        if let Some(Conn::Client(c)) = self.conns.get_mut(ck) {
            c.splitting = Some(end);
        }
        self.work.push(Job {
            parent: mid,
            kind: JobKind::Split(sp),
        });
    }

    /// Gives every job of `jobs` (queued by the last iteration) its next
    /// turn, then empties the list; jobs not finished are queued again.
    pub fn take_work(&mut self, jobs: &mut Vec<Job>) {
        for job in jobs.drain(..) {
            match job.kind {
                JobKind::Split(sp) => self.split_resume(job.parent, sp),
                JobKind::Merge => self.merge_resume(job.parent),
            }
        }
    }

    /// The next turn of a split: its client's input is taken for the
    /// step, given back, and consumed once the split is over.
    fn split_resume(&mut self, mid: MsgId, mut sp: Split) {
        let Some(client) = self.msgs.get(mid).map(|m| m.client()) else {
            return;
        };
        let taken = match client.map(|ck| (ck, self.conns.get_mut(ck))) {
            Some((ck, Some(Conn::Client(c)))) if c.splitting.is_some() => {
                Some((ck, std::mem::take(&mut c.rx)))
            }
            _ => None,
        };
        let Some((ck, rx)) = taken else {
            // The client went away: the request is an orphan with nothing
            // sent; its fragments and bytes go now.
            self.split_discard(mid);
            self.free_msg(mid);
            return;
        };
        match self.split_step(mid, &mut sp, &rx) {
            Stepped::More => {
                match self.conns.get_mut(ck) {
                    Some(Conn::Client(c)) => c.rx = rx,
                    _ => {
                        let mut rx = rx;
                        rx.inbuf.clear(&mut self.mbufs);
                    }
                }
                self.work.push(Job {
                    parent: mid,
                    kind: JobKind::Split(sp),
                });
            }
            Stepped::Built => {
                // The client first: sending can fail fragments, which can
                // complete the request and close the client.
                self.split_release(ck, rx, sp.end);
                self.split_send(mid, sp.pid);
            }
            Stepped::Failed => self.split_release(ck, rx, sp.end),
        }
    }

    /// The split of the client's current request is over: the request
    /// leaves its input, and the client reads again in the next turn.
    fn split_release(&mut self, ck: ConnId, mut rx: ClientRx, end: u64) {
        rx.redis.reset();
        rx.mc.reset();
        rx.clear_routed();
        rx.inbuf.consume(&mut self.mbufs, end);
        match self.conns.get_mut(ck) {
            Some(Conn::Client(c)) => {
                c.rx = rx;
                c.splitting = None;
                crate::core::queue_once(&mut c.again, &mut self.ready_again, ck);
            }
            _ => rx.inbuf.clear(&mut self.mbufs),
        }
    }

    /// One turn of a split: routing, then building, while the budget
    /// lasts.
    fn split_step(&mut self, mid: MsgId, sp: &mut Split, rx: &ClientRx) -> Stepped {
        let Some(mut frag) = self.msgs.get_mut(mid).and_then(|m| m.frag.take()) else {
            return Stepped::Failed;
        };
        if sp.generation != self.topo.generation {
            // A reload came in between. Keys all routed, to servers that
            // are still there: the request goes where it was routed, as
            // one routed just before the reload would. Else routed again,
            // all of it, under the new topology.
            let live = frag.servers.iter().all(|&s| self.topo.server(s).is_some());
            sp.generation = self.topo.generation;
            if !(sp.building && live) {
                self.split_reset(&mut frag);
                sp.building = false;
                sp.restarts = sp.restarts.saturating_add(1);
            }
        }
        let nkeys = match sp.form {
            Form::Redis { step, .. } => rx.redis.args.len().saturating_sub(1) / step.max(1),
            Form::Memcache { .. } => rx.mc.keys.len(),
        };
        // Reloads coming faster than the split's turns would start it
        // again forever: after the second start it is done in one turn.
        let mut budget = if sp.restarts > 1 {
            usize::MAX
        } else {
            KEYS_PER_TURN
        };
        if !sp.building {
            if let Err(errno) = self.split_route(mid, sp, rx, &mut frag, nkeys, &mut budget) {
                self.split_reset(&mut frag);
                self.free_frag(frag);
                self.fail_request(mid, errno);
                return Stepped::Failed;
            }
            if frag.progress < nkeys {
                return self.split_keep(mid, frag);
            }
            frag.slot_child.clear();
            frag.progress = 0;
            sp.building = true;
            self.split_heads(sp, &frag);
        }
        self.split_build(sp, rx, &mut frag, nkeys, &mut budget);
        if frag.progress < nkeys {
            return self.split_keep(mid, frag);
        }
        if let Form::Memcache { .. } = sp.form {
            for &c in &frag.children {
                if let Some(m) = self.msgs.get_mut(c) {
                    self.mbufs.push_bytes(b"\r\n", &mut m.req);
                    m.req_len += 2;
                }
            }
        }
        self.split_hang(mid, frag, Stepped::Built)
    }

    /// Hangs the frag back on its request for the next turn.
    fn split_keep(&mut self, mid: MsgId, frag: Box<Frag>) -> Stepped {
        self.split_hang(mid, frag, Stepped::More)
    }

    /// Hangs the frag on its request, which is then at step `at`; a
    /// request gone meanwhile takes its fragments with it.
    fn split_hang(&mut self, mid: MsgId, mut frag: Box<Frag>, at: Stepped) -> Stepped {
        match self.msgs.get_mut(mid) {
            Some(m) => {
                m.frag = Some(frag);
                at
            }
            None => {
                self.split_reset(&mut frag);
                self.free_frag(frag);
                Stepped::Failed
            }
        }
    }

    /// Routes keys `frag.progress..` while the budget lasts: each key's
    /// fragment (one per server, in order of first appearance, found
    /// through the server's slot: linear in keys whatever the number of
    /// servers) into `key_child`, and each fragment's key count into its
    /// `reply_elems`.
    fn split_route(
        &mut self,
        mid: MsgId,
        sp: &Split,
        rx: &ClientRx,
        frag: &mut Frag,
        nkeys: usize,
        budget: &mut usize,
    ) -> Result<(), i32> {
        // Keys routed while the request was read (client.rs, `preroute`),
        // with `route`: a write while a server is out must go through
        // `route_for`, which remembers it for repair.
        let routed = rx.routed.len() == nkeys
            && rx.routed_gen == self.topo.generation
            && sp.access == Access::Read;
        let stop = nkeys.min(frag.progress.saturating_add(*budget));
        for i in frag.progress..stop {
            let range = match sp.form {
                Form::Redis { step, .. } => rx.redis.args.get(1 + i * step).map(|a| a.data_range()),
                Form::Memcache { .. } => rx.mc.keys.get(i).map(|k| k.range()),
            };
            let Some((from, to)) = range else {
                return Err(libc::EINVAL);
            };
            let s = match rx.routed.get(i) {
                Some(&s) if routed => s,
                _ => {
                    let k = rx.inbuf.bytes(&self.mbufs, from, to, &mut self.key_scratch);
                    self.topo.route_for(sp.pid, k, sp.access)?
                }
            };
            let ci = self.child_for(mid, frag, s);
            frag.key_child.push(ci);
            if let Some(m) = frag
                .children
                .get(ci as usize)
                .and_then(|&c| self.msgs.get_mut(c))
            {
                m.reply_elems += 1;
            }
        }
        *budget -= stop - frag.progress;
        frag.progress = stop;
        Ok(())
    }

    /// The index of the fragment for server `s`, made now if `s` has none.
    fn child_for(&mut self, mid: MsgId, frag: &mut Frag, s: ServerId) -> u32 {
        let slot = s.index();
        if frag.slot_child.len() <= slot {
            frag.slot_child.resize(slot + 1, 0);
        }
        if let Some(&c) = frag.slot_child.get(slot).filter(|&&c| c > 0) {
            return c - 1;
        }
        let child = self.alloc_msg(Origin::Fragment(mid));
        frag.children.push(child);
        frag.servers.push(s);
        let c = frag.children.len() as u32;
        if let Some(e) = frag.slot_child.get_mut(slot) {
            *e = c;
        }
        c - 1
    }

    /// Each fragment's head, once its key count is known.
    fn split_heads(&mut self, sp: &Split, frag: &Frag) {
        for &c in &frag.children {
            let Some(m) = self.msgs.get_mut(c) else {
                continue;
            };
            match sp.form {
                Form::Redis { step, name } => {
                    let items = m.reply_elems as usize * step;
                    // Built without allocating.
                    let mut n = itoa::Buffer::new();
                    let mut l = itoa::Buffer::new();
                    let parts: [&[u8]; 7] = [
                        b"*",
                        n.format(items + 1).as_bytes(),
                        b"\r\n$",
                        l.format(name.len()).as_bytes(),
                        b"\r\n",
                        name,
                        b"\r\n",
                    ];
                    for part in parts {
                        self.mbufs.push_bytes(part, &mut m.req);
                        m.req_len += part.len();
                    }
                }
                Form::Memcache { verb } => {
                    self.mbufs.push_bytes(verb, &mut m.req);
                    m.req_len += verb.len();
                }
            }
        }
    }

    /// Appends keys `frag.progress..` to their fragments while the budget
    /// lasts, referenced in place in the client's input (segments that
    /// continue one another in a chunk stay one).
    fn split_build(
        &mut self,
        sp: &Split,
        rx: &ClientRx,
        frag: &mut Frag,
        nkeys: usize,
        budget: &mut usize,
    ) {
        let stop = nkeys.min(frag.progress.saturating_add(*budget));
        let migrating = self.migrating(sp.pid);
        for i in frag.progress..stop {
            let Some(child) = frag
                .key_child
                .get(i)
                .and_then(|&ci| frag.children.get(ci as usize))
                .copied()
            else {
                continue;
            };
            let Some(m) = self.msgs.get_mut(child) else {
                continue;
            };
            let key = match sp.form {
                Form::Redis { step, .. } => {
                    let (Some(first), Some(last)) = (
                        rx.redis.args.get(1 + i * step),
                        rx.redis.args.get(i * step + step),
                    ) else {
                        continue;
                    };
                    rx.inbuf
                        .segs(&mut self.mbufs, first.start, last.end(), &mut m.req);
                    m.req_len += (last.end() - first.start) as usize;
                    first.data_range()
                }
                Form::Memcache { .. } => {
                    let Some(k) = rx.mc.keys.get(i) else {
                        continue;
                    };
                    let (from, to) = k.range();
                    // The key's trailing space is usually right after it.
                    let next = rx
                        .inbuf
                        .bytes(&self.mbufs, to, to + 1, &mut self.key_scratch)
                        .first()
                        .copied();
                    if next == Some(b' ') {
                        rx.inbuf.segs(&mut self.mbufs, from, to + 1, &mut m.req);
                    } else {
                        rx.inbuf.segs(&mut self.mbufs, from, to, &mut m.req);
                        self.mbufs.push_bytes(b" ", &mut m.req);
                    }
                    m.req_len += (to - from) as usize + 1;
                    (from, to)
                }
            };
            if migrating {
                // The keys may still be on their previous owners
                // (`migrate.rs`): staged with the fragment, moved first.
                let k = rx
                    .inbuf
                    .bytes(&self.mbufs, key.0, key.1, &mut self.key_scratch)
                    .to_vec();
                self.stage_move(child, k);
            }
        }
        *budget -= stop - frag.progress;
        frag.progress = stop;
    }

    /// Sends the fragments of a whole split.
    fn split_send(&mut self, mid: MsgId, pid: PoolId) {
        if let Some(frag) = self.msgs.get_mut(mid).and_then(|m| m.frag.take()) {
            self.start_fragments(mid, pid, frag);
        }
    }

    /// Back to no key routed: the fragments made so far are freed (none
    /// was sent), with the keys staged for them.
    fn split_reset(&mut self, frag: &mut Frag) {
        self.unstage(&frag.children);
        for c in frag.children.drain(..) {
            self.free_msg(c);
        }
        frag.servers.clear();
        frag.slot_child.clear();
        frag.key_child.clear();
        frag.progress = 0;
    }

    /// Forgets the unfinished split of `mid`, if it has one.
    fn split_discard(&mut self, mid: MsgId) {
        if let Some(mut frag) = self.msgs.get_mut(mid).and_then(|m| m.frag.take()) {
            self.split_reset(&mut frag);
            self.free_frag(frag);
        }
    }

    /// After a turn of merging: a whole reply is the client's; the rest
    /// of one is merged on the next turn.
    pub fn merge_went(&mut self, parent: MsgId, whole: bool) {
        if whole {
            self.client_ready(parent);
        } else {
            self.work.push(Job {
                parent,
                kind: JobKind::Merge,
            });
        }
    }

    /// The next turn of a merge: the reply is the client's once whole; a
    /// request whose client went away is freed with its fragments.
    fn merge_resume(&mut self, parent: MsgId) {
        match self.msgs.get(parent) {
            None => {}
            Some(m) if m.client().is_none() => self.free_msg(parent),
            Some(_) => {
                let whole = self.merge_more(parent);
                self.merge_went(parent, whole);
            }
        }
    }
}
