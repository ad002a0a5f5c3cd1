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
//!
//! Memory is given back after a burst, in two steps:
//!
//! - The reuse pool is bounded ([`pool_limit_from_env`], default
//!   [`DEFAULT_POOL_BYTES`]), by the working set rather than at every
//!   release: free chunks beyond the bound that stayed unused for a whole
//!   [`TRIM_WINDOW`] (the fewest free chunks seen during it were still more
//!   than the bound) are freed. A steady load whose demand swings within a
//!   second keeps its chunks and never touches malloc (freeing at release
//!   time cost up to 10-22% more CPU per request on 16 KiB values, from
//!   malloc plus zeroing each new chunk), while the tail of a burst goes
//!   within about two windows. A freed chunk's id stays (segments name
//!   chunks by index) and is handed out again by the next allocation that
//!   finds the pool empty.
//! - Freed chunks go back to malloc, and glibc keeps 16 KiB blocks (below
//!   its mmap threshold) in the heap: only the top of the heap shrinks by
//!   itself. So when at least [`TRIM_MIN_BYTES`] were freed, `malloc_trim(0)`
//!   hands every free page of the heap back to the kernel (after a burst of
//!   90 MiB of replies, RSS stayed at 80 MiB without it, 7 MiB with it).
//!
//! [`MbufPool::idle_trim`] does both; the event loop calls it once per
//! iteration, and while the pool is within its bound that is one comparison.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

/// The header the C binary keeps inside each chunk; usable data per chunk
/// is `size - MBUF_HEADER` so that `-m` means the same memory as in 0.5.0.
pub const MBUF_HEADER: usize = 48;
pub const MBUF_MIN_SIZE: usize = 512;
pub const MBUF_MAX_SIZE: usize = 16 * 1024 * 1024;
pub const MBUF_DEFAULT_SIZE: usize = 16384;

/// The environment variable that bounds the reuse pool, in bytes of chunk
/// data (`0`: no pool, every released chunk is freed).
pub const POOL_BYTES_ENV: &str = "NUTCRACKER_MBUF_POOL_BYTES";
/// Default bound of the reuse pool: 4 MiB, 256 chunks of the default size.
/// Enough to absorb the swings of a steady pipelined load of small requests
/// without touching malloc; a burst beyond it is given back.
pub const DEFAULT_POOL_BYTES: usize = 4 * 1024 * 1024;
/// Bytes freed since the last trim before a trim (which walks the whole
/// heap) is worth its cost.
pub const TRIM_MIN_BYTES: usize = 1024 * 1024;
/// How long free chunks beyond the bound must stay unused before they are
/// freed.
pub const TRIM_WINDOW: Duration = Duration::from_secs(1);

/// The reuse pool bound from [`POOL_BYTES_ENV`]: the default when unset,
/// `Err` with the reason when it is not a number of bytes.
pub fn pool_limit_from_env() -> Result<usize, String> {
    match std::env::var_os(POOL_BYTES_ENV) {
        None => Ok(DEFAULT_POOL_BYTES),
        Some(v) => parse_pool_bytes(&v.to_string_lossy()),
    }
}

/// A byte count, decimal, surrounding blanks allowed.
fn parse_pool_bytes(v: &str) -> Result<usize, String> {
    v.trim()
        .parse::<usize>()
        .map_err(|_| format!("{POOL_BYTES_ENV} '{v}' is not a number of bytes"))
}

/// Hands free heap pages back to the kernel (glibc only; other C libraries
/// either return memory by themselves or have no such call).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has
    // no preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

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
    /// Chunks holding memory now (in use and free).
    pub allocated: usize,
    /// Chunks in the reuse pool.
    pub free: usize,
    /// Usable bytes per chunk.
    pub chunk_data: usize,
}

pub struct MbufPool {
    chunk_data: usize,
    /// Indexed by chunk id; a vacant id holds an empty slice.
    bufs: Vec<Box<[u8]>>,
    refs: Vec<u32>,
    free: Vec<u32>,
    /// Ids whose memory was given back, for the next allocation to reuse.
    vacant: Vec<u32>,
    /// Most chunks kept in `free`.
    max_free: usize,
    /// Chunk currently used for proxy-made bytes, and how much of it is used.
    scratch: Option<(u32, usize)>,
    /// Bytes freed since the last trim.
    untrimmed: usize,
    /// While the pool holds more than `max_free`: when the current window
    /// ends, and the fewest free chunks seen since it began.
    window_end: Option<Instant>,
    min_free: usize,
    /// Trims done, for tests.
    trims: u64,
}

impl MbufPool {
    /// `size` is the `-m` value; it is clamped to the allowed range. The
    /// reuse pool is bounded by [`POOL_BYTES_ENV`] (a bad value is reported
    /// in the log and the default used).
    pub fn new(size: usize) -> MbufPool {
        let limit = pool_limit_from_env().unwrap_or_else(|e| {
            crate::log_warn!("{e}, using the default {DEFAULT_POOL_BYTES}");
            DEFAULT_POOL_BYTES
        });
        MbufPool::with_pool_limit(size, limit)
    }

    /// Like [`MbufPool::new`], with the reuse pool bounded to `pool_bytes`
    /// of chunk data (rounded down to whole chunks).
    pub fn with_pool_limit(size: usize, pool_bytes: usize) -> MbufPool {
        let size = size.clamp(MBUF_MIN_SIZE, MBUF_MAX_SIZE);
        let chunk_data = size - MBUF_HEADER;
        MbufPool {
            chunk_data,
            bufs: Vec::new(),
            refs: Vec::new(),
            free: Vec::new(),
            vacant: Vec::new(),
            max_free: pool_bytes / chunk_data,
            scratch: None,
            untrimmed: 0,
            window_end: None,
            min_free: 0,
            trims: 0,
        }
    }

    /// How many times [`MbufPool::idle_trim`] trimmed the heap.
    pub fn trims(&self) -> u64 {
        self.trims
    }

    pub fn chunk_data(&self) -> usize {
        self.chunk_data
    }

    pub fn counts(&self) -> MbufCounts {
        MbufCounts {
            allocated: self.bufs.len() - self.vacant.len(),
            free: self.free.len(),
            chunk_data: self.chunk_data,
        }
    }

    /// Chunks in use: neither free nor the scratch chunk.
    pub fn in_use(&self) -> usize {
        self.bufs.len() - self.vacant.len() - self.free.len() - usize::from(self.scratch.is_some())
    }

    /// A chunk with one reference held by the caller.
    pub fn alloc(&mut self) -> u32 {
        if let Some(id) = self.free.pop() {
            self.min_free = self.min_free.min(self.free.len());
            if let Some(r) = self.refs.get_mut(id as usize) {
                *r = 1;
            }
            return id;
        }
        let buf = vec![0u8; self.chunk_data].into_boxed_slice();
        if let Some(id) = self.vacant.pop() {
            if let (Some(b), Some(r)) = (
                self.bufs.get_mut(id as usize),
                self.refs.get_mut(id as usize),
            ) {
                *b = buf;
                *r = 1;
                return id;
            }
        }
        let id = self.bufs.len() as u32;
        self.bufs.push(buf);
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

    /// Frees the chunks beyond the pool's bound that stayed unused for a
    /// whole [`TRIM_WINDOW`], and trims the heap when enough was freed.
    /// Called by the event loop on every iteration with its clock; returns
    /// how long until it wants to be called again (to bound the loop's
    /// sleep), `None` while the pool is within its bound.
    pub fn idle_trim(&mut self, now: Instant) -> Option<Duration> {
        if self.free.len() <= self.max_free {
            self.window_end = None;
            return None;
        }
        let Some(end) = self.window_end else {
            self.window_end = Some(now + TRIM_WINDOW);
            self.min_free = self.free.len();
            return Some(TRIM_WINDOW);
        };
        if now < end {
            return Some(end - now);
        }
        // The fewest free chunks of the window were never needed during
        // it; the coldest (the bottom of the LIFO list) go.
        let excess = self.min_free.saturating_sub(self.max_free);
        let excess = excess.min(self.free.len());
        for id in self.free.drain(..excess) {
            if let Some(b) = self.bufs.get_mut(id as usize) {
                *b = Box::default();
                self.vacant.push(id);
                self.untrimmed += self.chunk_data;
            }
        }
        if self.untrimmed >= TRIM_MIN_BYTES {
            trim_heap();
            self.untrimmed = 0;
            self.trims += 1;
        }
        if self.free.len() <= self.max_free {
            self.window_end = None;
            return None;
        }
        // Still over the bound (the chunks were in use at some moment):
        // watch the next window.
        self.window_end = Some(now + TRIM_WINDOW);
        self.min_free = self.free.len();
        Some(TRIM_WINDOW)
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

    /// Distinct chunks, mutable at once (the targets of one vectored
    /// read); `None` if an id repeats or is unknown.
    pub fn chunks_mut<const N: usize>(&mut self, ids: [u32; N]) -> Option<[&mut [u8]; N]> {
        let bufs = self.bufs.get_disjoint_mut(ids.map(|id| id as usize)).ok()?;
        Some(bufs.map(|b| &mut **b))
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const SIZE: usize = 1024;
    const DATA: usize = SIZE - MBUF_HEADER;

    /// Allocates `n` chunks and releases them all: the pool then holds `n`.
    fn burst(p: &mut MbufPool, n: usize) {
        let ids: Vec<u32> = (0..n).map(|_| p.alloc()).collect();
        for id in ids {
            p.release(id);
        }
    }

    #[test]
    fn chunks_beyond_the_bound_unused_for_a_window_are_freed() {
        // Room for 2 free chunks.
        let mut p = MbufPool::with_pool_limit(SIZE, 2 * DATA + DATA / 2);
        let t0 = Instant::now();
        burst(&mut p, 5);
        assert_eq!((p.counts().allocated, p.counts().free), (5, 5));
        assert_eq!(p.idle_trim(t0), Some(TRIM_WINDOW), "a window starts");
        let half = TRIM_WINDOW / 2;
        assert_eq!(p.idle_trim(t0 + half), Some(TRIM_WINDOW - half));
        assert_eq!(p.idle_trim(t0 + TRIM_WINDOW), None);
        let c = p.counts();
        assert_eq!((c.allocated, c.free), (2, 2));
        assert_eq!(p.in_use(), 0);
        assert_eq!(p.idle_trim(t0 + 5 * TRIM_WINDOW), None, "within the bound");
    }

    #[test]
    fn chunks_needed_during_the_window_are_kept() {
        let mut p = MbufPool::with_pool_limit(SIZE, 0);
        let t0 = Instant::now();
        burst(&mut p, 6);
        assert_eq!(p.idle_trim(t0), Some(TRIM_WINDOW));
        // A steady load uses 4 of the 6 at some moment of the window.
        burst(&mut p, 4);
        assert_eq!(p.idle_trim(t0 + TRIM_WINDOW), Some(TRIM_WINDOW));
        assert_eq!(p.counts().allocated, 4, "only the 2 never used went");
        // The load stops: the rest goes one window later.
        assert_eq!(p.idle_trim(t0 + 2 * TRIM_WINDOW), None);
        assert_eq!(p.counts().allocated, 0);
    }

    #[test]
    fn vacant_ids_are_reused_with_fresh_memory() {
        let mut p = MbufPool::with_pool_limit(SIZE, 0);
        let t0 = Instant::now();
        let a = p.alloc();
        let b = p.alloc();
        p.chunk_mut(a)[0] = 7;
        p.release(a);
        p.idle_trim(t0);
        p.idle_trim(t0 + TRIM_WINDOW);
        assert_eq!(p.counts().allocated, 1);
        assert!(p.chunk(a).is_empty(), "its memory is gone");
        let c = p.alloc();
        assert_eq!(c, a, "the vacant id is handed out again");
        assert_eq!(p.chunk(c).len(), DATA);
        assert_eq!(p.chunk(c)[0], 0, "new memory, not the old bytes");
        assert_eq!(p.counts().allocated, 2);
        p.release(b);
        p.release(c);
        assert_eq!(
            p.counts(),
            MbufCounts {
                allocated: 2,
                free: 2,
                chunk_data: DATA
            }
        );
    }

    #[test]
    fn trim_only_once_enough_was_freed() {
        let mut p = MbufPool::with_pool_limit(SIZE, 0);
        let t0 = Instant::now();
        let n = TRIM_MIN_BYTES / DATA;
        burst(&mut p, n);
        p.idle_trim(t0);
        p.idle_trim(t0 + TRIM_WINDOW);
        assert_eq!(p.trims(), 0, "{} bytes freed", n * DATA);
        burst(&mut p, 1);
        p.idle_trim(t0 + 2 * TRIM_WINDOW);
        p.idle_trim(t0 + 3 * TRIM_WINDOW);
        assert_eq!(p.trims(), 1);
        assert_eq!(p.counts().allocated, 0);
    }

    #[test]
    fn pool_bound_values() {
        assert_eq!(parse_pool_bytes("0"), Ok(0));
        assert_eq!(parse_pool_bytes(" 1048576\n"), Ok(1 << 20));
        for bad in ["", "-1", "4M", "1e6", "x"] {
            let e = parse_pool_bytes(bad).unwrap_err();
            assert!(e.starts_with(POOL_BYTES_ENV), "{e}");
        }
    }
}
