//! Wire protocols. Each parser is pure (no I/O) and resumable: fed the
//! bytes of a connection piece by piece, it reports absolute stream offsets.

pub mod memcache;
pub mod redis;
