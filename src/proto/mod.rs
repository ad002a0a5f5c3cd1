//! Wire protocols. Each parser is pure (no I/O) and resumable: fed the
//! bytes of a connection piece by piece, it reports absolute stream offsets.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod memcache;
pub mod redis;
