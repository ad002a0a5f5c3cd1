//! A connection's input: the chain of mbufs holding bytes read but not yet
//! handed out as whole messages.
//!
//! Offsets are absolute positions in the connection's byte stream, the
//! coordinates the parsers report. Every chunk but the last is full, so
//! chunk `i` starts at `base + i * chunk_data`. When a message completes,
//! [`InBuf::segs`] hands out references to its bytes and [`InBuf::consume`]
//! lets go of the chunks that hold nothing more.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::mbuf::{MbufPool, Seg};
use crate::net::{IoStep, Stream};
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct InBuf {
    chain: VecDeque<u32>,
    /// Stream offset of the first byte of `chain[0]`.
    base: u64,
    /// Bytes filled in the last chunk.
    fill: usize,
    /// Stream offset where the unconsumed bytes (next message) begin.
    pub start: u64,
    /// Stream offset up to which the parser has seen the bytes.
    pub parsed: u64,
    /// The last read returned less than it asked for: the socket had no
    /// more, so another read would only say "would block" (a new edge
    /// comes when more arrives).
    pub drained: bool,
    /// The last read filled all the room it had: the next one reads ahead.
    streaming: bool,
}

/// Chunks a streaming read takes beyond the one it fills first.
pub const READ_AHEAD: usize = 3;

impl InBuf {
    /// Stream offset one past the last byte read.
    pub fn end(&self, cd: usize) -> u64 {
        match self.chain.len() {
            0 => self.base,
            n => self.base + ((n - 1) * cd) as u64 + self.fill as u64,
        }
    }

    pub fn has_partial(&self, cd: usize) -> bool {
        self.end(cd) > self.start
    }

    /// Reads once from `sock` into the chain, allocating a chunk if the last
    /// one is full. After a read that filled all the room it was given
    /// (more is likely waiting: a large reply or request streaming in),
    /// the read also takes [`READ_AHEAD`] fresh chunks, so a 160 KiB reply
    /// costs a few system calls rather than one per chunk; the chunks it
    /// leaves empty go straight back to the pool.
    pub fn read(&mut self, sock: &Stream, pool: &mut MbufPool) -> IoStep {
        let cd = pool.chunk_data();
        if self.chain.is_empty() || self.fill == cd {
            if self.chain.is_empty() {
                self.base = self.start;
            }
            self.chain.push_back(pool.alloc());
            self.fill = 0;
        }
        let Some(&id) = self.chain.back() else {
            return IoStep::WouldBlock;
        };
        let space = cd - self.fill;
        let (step, room) = if self.streaming {
            self.read_ahead(sock, pool, id)
        } else {
            let step = sock.read(pool.chunk_mut(id).get_mut(self.fill..).unwrap_or_default());
            if let IoStep::Done(n) = step {
                self.fill += n;
            }
            (step, space)
        };
        match step {
            IoStep::Done(n) => {
                self.drained = n < room;
                self.streaming = n == room;
            }
            _ if self.fill == 0 => {
                // Nothing came: an idle connection keeps no chunk.
                pool.release(id);
                self.chain.pop_back();
                self.fill = if self.chain.is_empty() { 0 } else { cd };
                self.streaming = false;
            }
            _ => self.streaming = false,
        }
        step
    }

    /// One vectored read into the rest of chunk `last` (the chain's last)
    /// and [`READ_AHEAD`] new chunks, keeping those that received bytes.
    /// Returns the outcome and the room that was offered.
    fn read_ahead(&mut self, sock: &Stream, pool: &mut MbufPool, last: u32) -> (IoStep, usize) {
        let cd = pool.chunk_data();
        let fresh: [u32; READ_AHEAD] = std::array::from_fn(|_| pool.alloc());
        let room = cd - self.fill + READ_AHEAD * cd;
        let mut ids = [last; READ_AHEAD + 1];
        for (slot, &f) in ids.iter_mut().skip(1).zip(fresh.iter()) {
            *slot = f;
        }
        let step = match pool.chunks_mut(ids) {
            Some(bufs) => {
                let mut bufs = bufs.map(std::io::IoSliceMut::new);
                if let Some(first) = bufs.first_mut() {
                    first.advance(self.fill);
                }
                sock.read_vectored(&mut bufs)
            }
            None => IoStep::Error(std::io::Error::other("mbuf chunks not distinct")),
        };
        let mut left = match step {
            IoStep::Done(n) => n,
            _ => 0,
        };
        let take = left.min(cd - self.fill);
        self.fill += take;
        left -= take;
        for f in fresh {
            if left == 0 {
                pool.release(f);
                continue;
            }
            let take = left.min(cd);
            self.chain.push_back(f);
            self.fill = take;
            left -= take;
        }
        (step, room)
    }

    /// The next unparsed bytes, up to the end of the chunk that holds them,
    /// and their stream offset. Parsing until this is empty sees every
    /// byte read.
    pub fn unparsed<'a>(&self, pool: &'a MbufPool) -> (&'a [u8], u64) {
        let cd = pool.chunk_data();
        let rel = self.parsed.saturating_sub(self.base);
        let idx = (rel / cd.max(1) as u64) as usize;
        let Some(&id) = self.chain.get(idx) else {
            return (&[], self.parsed);
        };
        let from = (rel % cd.max(1) as u64) as usize;
        let filled = if idx + 1 == self.chain.len() {
            self.fill
        } else {
            cd
        };
        let chunk = pool.chunk(id);
        (chunk.get(from..filled).unwrap_or(&[]), self.parsed)
    }

    /// Appends segments covering stream range `from..to` (retaining chunks).
    /// A range that continues the last segment of `out` in the same chunk
    /// extends it: the keys of a fragment that sat together in the request
    /// stay one segment, so a split costs iovecs per chunk, not per key.
    pub fn segs(&self, pool: &mut MbufPool, from: u64, to: u64, out: &mut Vec<Seg>) {
        let cd = pool.chunk_data() as u64;
        let mut pos = from;
        while pos < to {
            let idx = ((pos - self.base) / cd) as usize;
            let Some(&id) = self.chain.get(idx) else {
                return;
            };
            let cbase = self.base + idx as u64 * cd;
            let end = to.min(cbase + cd);
            let piece = Seg {
                id,
                start: (pos - cbase) as u32,
                end: (end - cbase) as u32,
            };
            if crate::msg::push_coalesced(out, piece) {
                pool.retain(id);
            }
            pos = end;
        }
    }

    /// The bytes of `from..to`: borrowed when in one chunk, else copied into
    /// `scratch` (keys spanning chunks; never payloads).
    pub fn bytes<'a>(
        &self,
        pool: &'a MbufPool,
        from: u64,
        to: u64,
        scratch: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        let cd = pool.chunk_data() as u64;
        if to <= from {
            return &[];
        }
        let first = ((from - self.base) / cd) as usize;
        let last = ((to - 1 - self.base) / cd) as usize;
        if first == last {
            let Some(&id) = self.chain.get(first) else {
                return &[];
            };
            let cbase = self.base + first as u64 * cd;
            return pool
                .chunk(id)
                .get((from - cbase) as usize..(to - cbase) as usize)
                .unwrap_or(&[]);
        }
        scratch.clear();
        let mut pos = from;
        while pos < to {
            let idx = ((pos - self.base) / cd) as usize;
            let Some(&id) = self.chain.get(idx) else {
                break;
            };
            let cbase = self.base + idx as u64 * cd;
            let end = to.min(cbase + cd);
            if let Some(b) = pool
                .chunk(id)
                .get((pos - cbase) as usize..(end - cbase) as usize)
            {
                scratch.extend_from_slice(b);
            }
            pos = end;
        }
        scratch
    }

    /// Marks everything before `to` as handed out and drops chunks that
    /// hold nothing after it. A chunk with no unconsumed byte is released
    /// even when it has room left, so an idle connection holds no memory.
    pub fn consume(&mut self, pool: &mut MbufPool, to: u64) {
        let cd = pool.chunk_data();
        self.start = to;
        if self.parsed < to {
            self.parsed = to;
        }
        while let Some(&id) = self.chain.front() {
            let chunk_end = self.base + cd as u64;
            let last = self.chain.len() == 1;
            let drop_it = if last {
                self.end(cd) <= to
            } else {
                chunk_end <= to
            };
            if !drop_it {
                break;
            }
            pool.release(id);
            self.chain.pop_front();
            self.base = if last { to } else { chunk_end };
        }
        if self.chain.is_empty() {
            self.fill = 0;
            self.base = to;
        }
    }

    /// Fills an empty buffer with `bytes` at stream offset 0, all parsed: a
    /// request the proxy made itself (an inline command's RESP form).
    pub fn load(&mut self, pool: &mut MbufPool, bytes: &[u8]) {
        let cd = pool.chunk_data();
        self.base = 0;
        self.fill = 0;
        for piece in bytes.chunks(cd.max(1)) {
            let id = pool.alloc();
            if let Some(dst) = pool.chunk_mut(id).get_mut(..piece.len()) {
                dst.copy_from_slice(piece);
            }
            self.chain.push_back(id);
            self.fill = piece.len();
        }
        self.start = 0;
        self.parsed = bytes.len() as u64;
    }

    /// Releases every chunk (connection closing).
    pub fn clear(&mut self, pool: &mut MbufPool) {
        for id in self.chain.drain(..) {
            pool.release(id);
        }
        self.fill = 0;
        self.streaming = false;
    }
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

    #[test]
    fn segs_and_consume_across_chunks() {
        let mut pool = MbufPool::new(512);
        let cd = pool.chunk_data();
        let mut ib = InBuf::default();
        // Simulate reads by writing into chunks directly.
        for round in 0..3u8 {
            let id = pool.alloc();
            pool.chunk_mut(id).fill(round);
            ib.chain.push_back(id);
            ib.fill = cd;
        }
        ib.fill = 10;
        let total = ib.end(cd);
        assert_eq!(total, (2 * cd + 10) as u64);
        let mut segs = Vec::new();
        ib.segs(&mut pool, 5, total - 2, &mut segs);
        assert_eq!(segs.len(), 3);
        let n: usize = segs.iter().map(|s| s.len()).sum();
        assert_eq!(n as u64, total - 7);
        let mut scratch = Vec::new();
        let b = ib
            .bytes(&pool, cd as u64 - 2, cd as u64 + 2, &mut scratch)
            .to_vec();
        assert_eq!(b, vec![0, 0, 1, 1]);
        ib.consume(&mut pool, total - 2);
        assert_eq!(ib.chain.len(), 1);
        pool.release_segs(&segs);
        ib.consume(&mut pool, total);
        assert!(ib.chain.is_empty());
        assert_eq!(pool.in_use(), 0);
    }

    /// A stream larger than several chunks, read through the read-ahead
    /// path: the chain holds every byte in order, every chunk but the last
    /// is full, parsing chunk by chunk with `unparsed` sees each byte once,
    /// and no chunk is left behind.
    #[test]
    fn read_ahead_fills_chunks_in_order() {
        use std::io::Write;
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        rx.set_nonblocking(true).unwrap();
        let sock = Stream::Unix(mio::net::UnixStream::from_std(rx));
        let mut pool = MbufPool::new(512);
        let cd = pool.chunk_data();
        let total = cd * 11 + 7;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        tx.write_all(&data).unwrap();
        let mut ib = InBuf::default();
        let mut seen = Vec::new();
        let mut reads = 0;
        while ib.end(cd) < total as u64 {
            reads += 1;
            assert!(reads < 100, "read loop does not progress");
            match ib.read(&sock, &mut pool) {
                IoStep::Done(_) => {}
                other => panic!("unexpected {other:?}"),
            }
            loop {
                let (bytes, at) = ib.unparsed(&pool);
                if bytes.is_empty() {
                    break;
                }
                assert_eq!(at, seen.len() as u64);
                seen.extend_from_slice(bytes);
                ib.parsed = at + bytes.len() as u64;
            }
        }
        assert_eq!(seen, data);
        // One read for the first chunk, then four chunks a read.
        assert!(reads <= 4, "{reads} reads for 12 chunks");
        assert_eq!(ib.chain.len(), 12);
        assert_eq!(ib.fill, 7);
        assert_eq!(pool.in_use(), 12);
        // Nothing more: the read says so and keeps no chunk it took.
        assert!(matches!(ib.read(&sock, &mut pool), IoStep::WouldBlock));
        assert_eq!(pool.in_use(), 12);
        let mut scratch = Vec::new();
        assert_eq!(ib.bytes(&pool, 0, total as u64, &mut scratch), &data[..]);
        ib.consume(&mut pool, total as u64);
        assert!(ib.chain.is_empty());
        assert_eq!(pool.in_use(), 0);
    }
}
