//! Reassembling a split multi-key request from its fragments' replies
//! (SPEC 6.4 and 7.2, with section 0's rule that a failed fragment fails
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
        Some(Merge::Values) | None => false,
    }
}

impl Context {
    /// All fragments of `parent` are in: build its reply, free them.
    pub fn merge(&mut self, parent: MsgId) {
        let Some(frag) = self.msgs.get_mut(parent).and_then(|p| p.frag.take()) else {
            return;
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
        let mut rsp = Vec::new();
        if err == 0 && !bad {
            match frag.merge {
                Some(Merge::Array) => {
                    bad = !self.merge_array(&frag.children, &frag.key_child, &mut rsp)
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
                Some(Merge::Values) => bad = !self.merge_values(&frag, &mut rsp),
                None => bad = true,
            }
        }
        if bad && err == 0 {
            err = libc::EINVAL;
        }
        if err != 0 {
            self.mbufs.release_segs(&rsp);
            rsp.clear();
        }
        self.free_frag(frag);
        if let Some(p) = self.msgs.get_mut(parent) {
            p.rsp = rsp;
            p.err = err;
            p.done = true;
        }
    }

    /// MGET: `*<nkeys>` then, for each key in request order, the next
    /// element of the reply of the fragment that key went to. Each
    /// fragment's reply is walked once, with a cursor (linear in keys and
    /// segments); elements that sat together in one chunk stay one segment.
    fn merge_array(
        &mut self,
        children: &[MsgId],
        key_child: &[u32],
        out: &mut Vec<crate::mbuf::Seg>,
    ) -> bool {
        let mut next = std::mem::take(&mut self.frag_scratch.next);
        next.clear();
        next.resize(children.len(), (0, SegCursor::default()));
        self.mbufs.push_bytes(b"*", out);
        self.mbufs
            .push_bytes(itoa::Buffer::new().format(key_child.len()).as_bytes(), out);
        self.mbufs.push_bytes(b"\r\n", out);
        let ok = self.take_elements(children, key_child, &mut next, out);
        self.frag_scratch.next = next;
        ok
    }

    fn take_elements(
        &mut self,
        children: &[MsgId],
        key_child: &[u32],
        next: &mut [(usize, SegCursor)],
        out: &mut Vec<crate::mbuf::Seg>,
    ) -> bool {
        for &ci in key_child {
            let ci = ci as usize;
            let Some(m) = children.get(ci).and_then(|&c| self.msgs.get(c)) else {
                return false;
            };
            let Some((n, cur)) = next.get_mut(ci) else {
                return false;
            };
            let Some(&(a, b)) = m.elems.get(*n) else {
                return false;
            };
            *n += 1;
            let from = out.len();
            let added = slice_segs_at(&m.rsp, cur, a as usize, b as usize, out);
            for s in out.get(from..from + added).unwrap_or_default() {
                self.mbufs.retain(s.id);
            }
        }
        true
    }

    /// memcached get: each key's VALUE block in request order, then END.
    /// A fragment's blocks come in the order of its keys, misses left out,
    /// so a key takes its fragment's next block only if the keys match.
    /// Every block must be taken: one left over answers no requested key
    /// (the server code already refuses such replies; this is the backstop).
    fn merge_values(&mut self, frag: &crate::msg::Frag, out: &mut Vec<crate::mbuf::Seg>) -> bool {
        let mut next = std::mem::take(&mut self.frag_scratch.next);
        next.clear();
        next.resize(frag.children.len(), (0, SegCursor::default()));
        let mut key_from = 0usize;
        for (i, &ci) in frag.key_child.iter().enumerate() {
            let ci = ci as usize;
            let key_to = frag.key_ends.get(i).map_or(key_from, |&e| e as usize);
            let key = frag.key_bytes.get(key_from..key_to).unwrap_or(&[]);
            key_from = key_to;
            let Some(m) = frag.children.get(ci).and_then(|&c| self.msgs.get(c)) else {
                continue;
            };
            let Some((n, cur)) = next.get_mut(ci) else {
                continue;
            };
            let (Some(&(a, b)), Some(&(ka, kb))) = (m.elems.get(*n), m.val_keys.get(*n)) else {
                continue;
            };
            cur.seek(&m.rsp, a as usize);
            if !segs_equal(&self.mbufs, &m.rsp, *cur, ka as usize, kb as usize, key) {
                continue;
            }
            *n += 1;
            let from = out.len();
            let added = slice_segs_at(&m.rsp, cur, a as usize, b as usize, out);
            for s in out.get(from..from + added).unwrap_or_default() {
                self.mbufs.retain(s.id);
            }
        }
        let all_taken = frag
            .children
            .iter()
            .zip(next.iter())
            .all(|(&c, &(n, _))| self.msgs.get(c).is_none_or(|m| n >= m.elems.len()));
        self.frag_scratch.next = next;
        self.mbufs.push_bytes(b"END\r\n", out);
        all_taken
    }
}

/// Whether bytes `from..to` of the byte string `segs` spell equal `want`,
/// compared in place, starting the walk at `cur` (not past `from`).
fn segs_equal(
    mbufs: &crate::mbuf::MbufPool,
    segs: &[crate::mbuf::Seg],
    mut cur: SegCursor,
    from: usize,
    to: usize,
    want: &[u8],
) -> bool {
    if to - from != want.len() {
        return false;
    }
    cur.seek(segs, from);
    let mut pos = cur.pos;
    let mut rest = want;
    for seg in segs.get(cur.seg..).unwrap_or_default() {
        if pos >= to {
            break;
        }
        let bytes = mbufs.bytes(seg);
        let (a, b) = (pos, pos + bytes.len());
        pos = b;
        if b <= from || a >= to {
            continue;
        }
        let part = bytes
            .get(from.max(a) - a..to.min(b) - a)
            .unwrap_or_default();
        let Some(head) = rest.get(..part.len()) else {
            return false;
        };
        if head != part {
            return false;
        }
        rest = rest.get(part.len()..).unwrap_or_default();
    }
    rest.is_empty()
}
