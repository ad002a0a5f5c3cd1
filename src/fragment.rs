//! Reassembling a split multi-key request from its fragments' replies
//! (docs/compatibility.md §7.4 and §8.2, with §13's rule that a failed fragment fails
//! only that command).

use crate::core::Context;
use crate::msg::{slice_segs_at, Merge, MsgId, SegCursor};
use crate::proto::redis::response::RspKind;

/// Whether a fragment's redis reply has the shape its merge needs; an
/// error reply (`-WRONGTYPE`, `-NOAUTH`, ...) never does.
pub fn redis_reply_fits(merge: Option<Merge>, kind: RspKind, count: i64) -> bool {
    match merge {
        Some(Merge::Array) => kind == RspKind::Array && count >= 0,
        Some(Merge::Sum) => kind == RspKind::Integer,
        Some(Merge::Ok) => kind == RspKind::Status,
        Some(Merge::Same) | Some(Merge::Info) => {
            !matches!(kind, RspKind::Error | RspKind::BlobError)
        }
        Some(Merge::AllOf) => kind == RspKind::Array && count >= 0,
        Some(Merge::Scan) => kind == RspKind::Array && count == 2,
        Some(Merge::Values) | Some(Merge::McOk) | None => false,
    }
}

impl Context {
    /// All fragments of `parent` are in: build its reply, free them.
    /// False when the reply is too large for one turn: its merge goes on
    /// with [`merge_more`](Self::merge_more) in later turns (`split.rs`).
    pub fn merge(&mut self, parent: MsgId) -> bool {
        let Some(mut frag) = self.msgs.get_mut(parent).and_then(|p| p.frag.take()) else {
            return true;
        };
        let mut err = 0;
        let mut bad = false;
        for &c in &frag.children {
            if let Some(m) = self.msgs.get(c) {
                if m.err != 0 && err == 0 {
                    err = m.err;
                }
                bad |= m.bad_reply;
            }
        }
        // INFO answers with the servers that answered (it fails only when
        // none did, which `merge_info` tells).
        if frag.merge == Some(Merge::Info) {
            err = 0;
            bad = false;
        }
        // The parent's own (empty) vector, with the capacity of its last use.
        let mut rsp = match self.msgs.get_mut(parent) {
            Some(p) => std::mem::take(&mut p.rsp),
            None => Vec::new(),
        };
        self.mbufs.release_segs(&rsp);
        rsp.clear();
        if err == 0 && !bad {
            match frag.merge {
                Some(m @ (Merge::Array | Merge::Values)) => {
                    // Each fragment's reply is walked once, with a cursor
                    // (linear in keys and segments), a turn's worth of keys
                    // at a time.
                    frag.next.clear();
                    frag.next
                        .resize(frag.children.len(), crate::msg::Walk::default());
                    frag.progress = 0;
                    if m == Merge::Array {
                        self.mbufs.push_bytes(b"*", &mut rsp);
                        self.mbufs.push_bytes(
                            itoa::Buffer::new().format(frag.key_child.len()).as_bytes(),
                            &mut rsp,
                        );
                        self.mbufs.push_bytes(b"\r\n", &mut rsp);
                    }
                    if let Some(p) = self.msgs.get_mut(parent) {
                        p.rsp = rsp;
                        p.frag = Some(frag);
                        return self.merge_more(parent);
                    }
                    // The parent is gone: its fragments and bytes go too.
                    self.merge_done(parent, frag, rsp, 0);
                    return true;
                }
                Some(Merge::Sum) => {
                    let mut sum: i64 = 0;
                    for &c in &frag.children {
                        match self.msgs.get(c).and_then(|m| m.integer) {
                            Some(v) => sum = sum.saturating_add(v),
                            None => bad = true,
                        }
                    }
                    if !bad {
                        let mut b = b":".to_vec();
                        b.extend_from_slice(itoa::Buffer::new().format(sum).as_bytes());
                        b.extend_from_slice(b"\r\n");
                        self.mbufs.push_bytes(&b, &mut rsp);
                    }
                }
                Some(Merge::Ok) => {
                    bad = frag.children.iter().any(|&c| {
                        self.msgs.get(c).is_none_or(|m| {
                            m.rsp
                                .first()
                                .is_none_or(|s| self.mbufs.bytes(s).first() != Some(&b'+'))
                        })
                    });
                    if !bad {
                        self.mbufs.push_bytes(b"+OK\r\n", &mut rsp);
                    }
                }
                Some(Merge::Same) => bad = !self.merge_same(&frag.children, &mut rsp),
                Some(Merge::AllOf) => bad = !self.merge_all_of(&frag.children, &mut rsp),
                Some(Merge::Scan) => bad = !self.merge_scan(&frag, &mut rsp),
                Some(Merge::Info) => bad = !self.merge_info(parent, &frag, &mut rsp),
                Some(Merge::McOk) => {
                    bad = frag.children.iter().any(|&c| {
                        self.msgs
                            .get(c)
                            .is_none_or(|m| self.flat(&m.rsp).as_slice() != b"OK\r\n")
                    });
                    if !bad {
                        self.mbufs.push_bytes(b"OK\r\n", &mut rsp);
                    }
                }
                None => bad = true,
            }
        }
        if bad && err == 0 {
            err = libc::EINVAL;
        }
        self.merge_done(parent, frag, rsp, err);
        true
    }

    /// The parent's reply is `rsp`, or the error `err`; its fragments go.
    fn merge_done(
        &mut self,
        parent: MsgId,
        frag: Box<crate::msg::Frag>,
        mut rsp: Vec<crate::mbuf::Seg>,
        err: i32,
    ) {
        if err != 0 {
            self.mbufs.release_segs(&rsp);
            rsp.clear();
        }
        self.free_frag(frag);
        match self.msgs.get_mut(parent) {
            Some(p) => {
                p.rsp = rsp;
                p.err = err;
                p.done = true;
            }
            None => self.mbufs.release_segs(&rsp),
        }
    }

    /// The next [`KEYS_PER_TURN`](crate::split::KEYS_PER_TURN) keys of an
    /// MGET or memcached get merge, appended to the parent's reply; true
    /// when the merge is over (the reply whole, or the request failed).
    pub fn merge_more(&mut self, parent: MsgId) -> bool {
        let Some(p) = self.msgs.get_mut(parent) else {
            return true;
        };
        let Some(mut frag) = p.frag.take() else {
            return true;
        };
        let mut rsp = std::mem::take(&mut p.rsp);
        let nkeys = frag.key_child.len();
        let stop = nkeys.min(frag.progress + crate::split::KEYS_PER_TURN);
        let ok = match frag.merge {
            Some(Merge::Array) => self.take_elements(&mut frag, stop, &mut rsp),
            Some(Merge::Values) => {
                self.take_values(&mut frag, stop, &mut rsp);
                true
            }
            _ => false,
        };
        frag.progress = stop;
        if !ok {
            self.merge_done(parent, frag, rsp, libc::EINVAL);
            return true;
        }
        if stop < nkeys {
            match self.msgs.get_mut(parent) {
                Some(p) => {
                    p.rsp = rsp;
                    p.frag = Some(frag);
                    return false;
                }
                None => {
                    self.merge_done(parent, frag, rsp, 0);
                    return true;
                }
            }
        }
        let mut err = 0;
        if frag.merge == Some(Merge::Values) {
            // Every block must be taken: one left over answers no
            // requested key (the server code already refuses such
            // replies; this is the backstop).
            let all_taken = frag
                .children
                .iter()
                .zip(frag.next.iter())
                .all(|(&c, w)| self.msgs.get(c).is_none_or(|m| w.elem >= m.elems.len()));
            if !all_taken {
                err = libc::EINVAL;
            }
            self.mbufs.push_bytes(b"END\r\n", &mut rsp);
        }
        self.merge_done(parent, frag, rsp, err);
        true
    }

    /// The bytes of a (small) reply, copied out of its segments: only for
    /// the rare replies the proxy rewrites (fan-outs, SCAN).
    fn flat(&self, segs: &[crate::mbuf::Seg]) -> Vec<u8> {
        let mut v = Vec::new();
        for s in segs {
            v.extend_from_slice(self.mbufs.bytes(s));
        }
        v
    }

    /// Bytes `a..b` of a child's reply.
    fn element(&self, m: &crate::msg::Msg, (a, b): (u32, u32)) -> Vec<u8> {
        self.flat(&m.rsp)
            .get(a as usize..b as usize)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// SCRIPT LOAD: every server must answer the same (the sha); that
    /// reply is the client's.
    fn merge_same(&mut self, children: &[MsgId], out: &mut Vec<crate::mbuf::Seg>) -> bool {
        let mut first: Option<Vec<u8>> = None;
        for &c in children {
            let Some(m) = self.msgs.get(c) else {
                return false;
            };
            let b = self.flat(&m.rsp);
            match &first {
                None => first = Some(b),
                Some(f) if *f == b => {}
                Some(_) => return false,
            }
        }
        match first {
            Some(b) => {
                self.mbufs.push_bytes(&b, out);
                true
            }
            None => false,
        }
    }

    /// SCRIPT EXISTS: one integer per sha, 1 only where every server says 1.
    fn merge_all_of(&mut self, children: &[MsgId], out: &mut Vec<crate::mbuf::Seg>) -> bool {
        let mut all: Option<Vec<bool>> = None;
        for &c in children {
            let Some(m) = self.msgs.get(c) else {
                return false;
            };
            let these: Vec<bool> = m
                .elems
                .iter()
                .map(|&e| self.element(m, e).as_slice() == b":1\r\n")
                .collect();
            all = Some(match all {
                None => these,
                Some(prev) if prev.len() == these.len() => {
                    prev.iter().zip(&these).map(|(a, b)| *a && *b).collect()
                }
                Some(_) => return false,
            });
        }
        let Some(all) = all else {
            return false;
        };
        let mut r = Vec::with_capacity(8 + all.len() * 4);
        crate::proto::redis::reply::array(&mut r, all.len());
        for yes in all {
            crate::proto::redis::reply::integer(&mut r, i64::from(yes));
        }
        self.mbufs.push_bytes(&r, out);
        true
    }

    /// SCAN: the server's reply with its cursor re-encoded (see
    /// `request.rs`, `scan`).
    fn merge_scan(&mut self, frag: &crate::msg::Frag, out: &mut Vec<crate::mbuf::Seg>) -> bool {
        let Some(m) = frag.children.first().and_then(|&c| self.msgs.get(c)) else {
            return false;
        };
        let (Some(&cur), Some(&(ka, kb))) = (m.elems.first(), m.elems.get(1)) else {
            return false;
        };
        let bulk = self.element(m, cur);
        // `$<len>\r\n<digits>\r\n`
        let digits = bulk
            .iter()
            .position(|&b| b == b'\n')
            .and_then(|i| bulk.get(i + 1..bulk.len().saturating_sub(2)))
            .unwrap_or_default();
        let Some(next) = crate::plan::parse_digits(digits).or((digits == b"0").then_some(0)) else {
            return false;
        };
        let (i, n) = (u64::from(frag.index), u64::from(frag.count.max(1)));
        let cursor = if next == 0 {
            if i + 1 < n {
                i + 1
            } else {
                0
            }
        } else {
            match next.checked_mul(n).and_then(|c| c.checked_add(i)) {
                Some(c) => c,
                None => return false,
            }
        };
        let mut head = Vec::with_capacity(32);
        crate::proto::redis::reply::array(&mut head, 2);
        crate::proto::redis::reply::bulk(&mut head, cursor.to_string().as_bytes());
        self.mbufs.push_bytes(&head, out);
        let mut cur = SegCursor::default();
        let added = slice_segs_at(&m.rsp, &mut cur, ka as usize, kb as usize, out);
        for s in out.get(out.len() - added..).unwrap_or_default() {
            self.mbufs.retain(s.id);
        }
        true
    }

    /// INFO: the proxy's own INFO text, with the lowest `redis_version` of
    /// the servers that answered and their keyspace summed.
    fn merge_info(
        &mut self,
        parent: MsgId,
        frag: &crate::msg::Frag,
        out: &mut Vec<crate::mbuf::Seg>,
    ) -> bool {
        use crate::proto::redis::reply::{self, DbKeys, Info};
        let mut lowest: Option<(Vec<u64>, String)> = None;
        let mut dbs: Vec<DbKeys> = Vec::new();
        let mut answered = 0;
        for &c in &frag.children {
            let Some(m) = self.msgs.get(c) else {
                continue;
            };
            if m.err != 0 || m.bad_reply {
                continue;
            }
            answered += 1;
            let text = String::from_utf8_lossy(&self.flat(&m.rsp)).into_owned();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("redis_version:") {
                    let v = v.trim().to_string();
                    let key: Vec<u64> = v.split('.').map(|p| p.parse().unwrap_or(0)).collect();
                    if lowest.as_ref().is_none_or(|(k, _)| key < *k) {
                        lowest = Some((key, v));
                    }
                } else if let Some(d) = parse_db_line(line) {
                    match dbs.iter_mut().find(|x| x.db == d.db) {
                        Some(x) => {
                            x.keys += d.keys;
                            x.expires += d.expires;
                            x.avg_ttl = x.avg_ttl.max(d.avg_ttl);
                        }
                        None => dbs.push(d),
                    }
                }
            }
        }
        if answered == 0 {
            return false;
        }
        dbs.sort_by_key(|d| d.db);
        let (proto, ck) = match self.msgs.get(parent) {
            Some(m) => (m.proto, m.client()),
            None => return false,
        };
        let (port, clients) = match ck.and_then(|c| match self.conns.get(c) {
            Some(crate::conn::Conn::Client(c)) => self.topo.pool(c.pool),
            _ => None,
        }) {
            Some(p) => (
                match &p.conf.listen {
                    crate::conf::Listen::Tcp(a) => a.port(),
                    crate::conf::Listen::Unix { .. } => 0,
                },
                p.nclients as u64,
            ),
            None => (0, 0),
        };
        let wanted_text = frag.sections.clone();
        let wanted: Vec<&[u8]> = wanted_text
            .split(|&b| b == b' ')
            .filter(|w| !w.is_empty())
            .collect();
        let (sysname, release, machine) = crate::daemon::uname();
        let os = format!("{sysname} {release} {machine}");
        let version = lowest.map_or_else(|| "0.0.0".to_string(), |(_, v)| v);
        let info = Info {
            redis_version: version.as_bytes(),
            os: os.as_bytes(),
            process_id: std::process::id(),
            tcp_port: port,
            uptime_in_seconds: self.started.elapsed().as_secs(),
            connected_clients: clients,
            keyspace: Some(&dbs),
        };
        let mut r = Vec::new();
        reply::info(proto, &mut r, &info, &wanted);
        self.mbufs.push_bytes(&r, out);
        true
    }

    /// MGET: after `*<nkeys>`, for each key in request order (keys
    /// `frag.progress..stop`), the next element of the reply of the
    /// fragment that key went to; elements that sat together in one chunk
    /// stay one segment.
    fn take_elements(
        &mut self,
        frag: &mut crate::msg::Frag,
        stop: usize,
        out: &mut Vec<crate::mbuf::Seg>,
    ) -> bool {
        let keys = frag.key_child.get(frag.progress..stop).unwrap_or_default();
        for &ci in keys {
            let ci = ci as usize;
            let Some(m) = frag.children.get(ci).and_then(|&c| self.msgs.get(c)) else {
                return false;
            };
            let Some(w) = frag.next.get_mut(ci) else {
                return false;
            };
            let Some(&(a, b)) = m.elems.get(w.elem) else {
                return false;
            };
            w.elem += 1;
            let from = out.len();
            let added = slice_segs_at(&m.rsp, &mut w.cur, a as usize, b as usize, out);
            for s in out.get(from..from + added).unwrap_or_default() {
                self.mbufs.retain(s.id);
            }
        }
        true
    }

    /// memcached get: each key's VALUE block in request order (keys
    /// `frag.progress..stop`); END comes when all are in. A fragment's
    /// blocks come in the order of its keys, misses left out, and each
    /// block already names which of the fragment's keys it answers
    /// (`val_keys`), so a key takes its fragment's next block only if
    /// that block answers it: no key is compared again here, where the
    /// reply's bytes have long left the cache.
    fn take_values(
        &mut self,
        frag: &mut crate::msg::Frag,
        stop: usize,
        out: &mut Vec<crate::mbuf::Seg>,
    ) {
        for i in frag.progress..stop {
            let Some(ci) = frag.key_child.get(i).map(|&ci| ci as usize) else {
                break;
            };
            let Some(m) = frag.children.get(ci).and_then(|&c| self.msgs.get(c)) else {
                continue;
            };
            let Some(w) = frag.next.get_mut(ci) else {
                continue;
            };
            let key = w.keys;
            w.keys += 1;
            let (Some(&(a, b)), Some(&answers)) = (m.elems.get(w.elem), m.val_keys.get(w.elem))
            else {
                continue;
            };
            if answers != key {
                continue;
            }
            w.elem += 1;
            let from = out.len();
            let added = slice_segs_at(&m.rsp, &mut w.cur, a as usize, b as usize, out);
            for s in out.get(from..from + added).unwrap_or_default() {
                self.mbufs.retain(s.id);
            }
        }
    }
}

/// `db0:keys=1,expires=0,avg_ttl=0` of an INFO keyspace section.
fn parse_db_line(line: &str) -> Option<crate::proto::redis::reply::DbKeys> {
    let (db, rest) = line.strip_prefix("db")?.split_once(':')?;
    let mut d = crate::proto::redis::reply::DbKeys {
        db: db.parse().ok()?,
        keys: 0,
        expires: 0,
        avg_ttl: 0,
    };
    for kv in rest.trim().split(',') {
        let (k, v) = kv.split_once('=')?;
        let v: u64 = v.parse().unwrap_or(0);
        match k {
            "keys" => d.keys = v,
            "expires" => d.expires = v,
            "avg_ttl" => d.avg_ttl = v,
            _ => {}
        }
    }
    Some(d)
}
