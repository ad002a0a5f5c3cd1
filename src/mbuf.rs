//! The mbuf allocator: fixed-size chunks of `-m` bytes, reference counted,
//! with a reuse pool.
//!
//! Every byte read from a socket lands in a chunk and is never copied again:
//! a message is a list of [`Seg`]s (chunk id + byte range) that point into
//! chunks, and a chunk returns to the free list when the last segment or
//! reader holding it lets go. Many small pipelined requests therefore share
//! one chunk, and forwarding them is one `writev` over their segments.
//!
//! Bytes the proxy makes itself (fragment headers, local replies) are
//! appended to a shared "scratch" chunk and referenced the same way, so the
//! writer never has to know where a segment came from.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

/// The header the C binary keeps inside each chunk; usable data per chunk
/// is `size - MBUF_HEADER` so that `-m` means the same memory as in 0.5.0.
pub const MBUF_HEADER: usize = 48;
pub const MBUF_MIN_SIZE: usize = 512;
pub const MBUF_MAX_SIZE: usize = 16 * 1024 * 1024;
pub const MBUF_DEFAULT_SIZE: usize = 16384;

/// A reference to `start..end` of chunk `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub id: u32,
    pub start: u32,
    pub end: u32,
}

impl Seg {
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Counters for stats and leak tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MbufCounts {
    /// Chunks ever created (they are never given back to the OS).
    pub allocated: usize,
    /// Chunks in the reuse pool.
    pub free: usize,
    /// Usable bytes per chunk.
    pub chunk_data: usize,
}

pub struct MbufPool {
    chunk_data: usize,
    bufs: Vec<Box<[u8]>>,
    refs: Vec<u32>,
    free: Vec<u32>,
    /// Chunk currently used for proxy-made bytes, and how much of it is used.
    scratch: Option<(u32, usize)>,
}

impl MbufPool {
    /// `size` is the `-m` value; it is clamped to the allowed range.
    pub fn new(size: usize) -> MbufPool {
        let size = size.clamp(MBUF_MIN_SIZE, MBUF_MAX_SIZE);
        MbufPool {
            chunk_data: size - MBUF_HEADER,
            bufs: Vec::new(),
            refs: Vec::new(),
            free: Vec::new(),
            scratch: None,
        }
    }

    pub fn chunk_data(&self) -> usize {
        self.chunk_data
    }

    pub fn counts(&self) -> MbufCounts {
        MbufCounts {
            allocated: self.bufs.len(),
            free: self.free.len(),
            chunk_data: self.chunk_data,
        }
    }

    /// Chunks in use: neither free nor the scratch chunk.
    pub fn in_use(&self) -> usize {
        self.bufs.len() - self.free.len() - usize::from(self.scratch.is_some())
    }

    /// A chunk with one reference held by the caller.
    pub fn alloc(&mut self) -> u32 {
        if let Some(id) = self.free.pop() {
            if let Some(r) = self.refs.get_mut(id as usize) {
                *r = 1;
            }
            return id;
        }
        let id = self.bufs.len() as u32;
        self.bufs
            .push(vec![0u8; self.chunk_data].into_boxed_slice());
        self.refs.push(1);
        id
    }

    // Ids only ever come from `alloc`, so the lookups below cannot miss;
    // they are checked anyway so that a bug shows as a wrong byte count in
    // the stats, never as a crash.
    pub fn retain(&mut self, id: u32) {
        if let Some(r) = self.refs.get_mut(id as usize) {
            *r += 1;
        }
    }

    pub fn release(&mut self, id: u32) {
        let Some(r) = self.refs.get_mut(id as usize) else {
            return;
        };
        debug_assert!(*r > 0, "mbuf {id} released too often");
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r == 0 {
            self.free.push(id);
        }
    }

    /// Takes a reference for a new segment of chunk `id`.
    pub fn seg(&mut self, id: u32, start: usize, end: usize) -> Seg {
        self.retain(id);
        Seg {
            id,
            start: start as u32,
            end: end as u32,
        }
    }

    pub fn release_segs(&mut self, segs: &[Seg]) {
        for s in segs {
            self.release(s.id);
        }
    }

    pub fn bytes(&self, seg: &Seg) -> &[u8] {
        self.chunk(seg.id)
            .get(seg.start as usize..seg.end as usize)
            .unwrap_or_default()
    }

    pub fn chunk(&self, id: u32) -> &[u8] {
        self.bufs.get(id as usize).map_or(&[], |b| &**b)
    }

    pub fn chunk_mut(&mut self, id: u32) -> &mut [u8] {
        self.bufs.get_mut(id as usize).map_or(&mut [], |b| &mut **b)
    }

    /// Copies proxy-made bytes into scratch chunks and appends referencing
    /// segments to `out`. Large inputs span several chunks.
    pub fn push_bytes(&mut self, mut data: &[u8], out: &mut Vec<Seg>) {
        while !data.is_empty() {
            let (id, used) = match self.scratch {
                Some((id, used)) if used < self.chunk_data => (id, used),
                other => {
                    if let Some((old, _)) = other {
                        self.release(old);
                    }
                    let id = self.alloc();
                    self.scratch = Some((id, 0));
                    (id, 0)
                }
            };
            let n = data.len().min(self.chunk_data - used);
            let (head, rest) = data.split_at(n);
            if let Some(dst) = self.chunk_mut(id).get_mut(used..used + n) {
                dst.copy_from_slice(head);
            }
            out.push(self.seg(id, used, used + n));
            self.scratch = Some((id, used + n));
            data = rest;
        }
    }
}
