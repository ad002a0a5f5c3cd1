//! The figures the engine publishes: a [`Snapshot`] of absolute values,
//! one per pool and server in table order (see `metrics.rs`), and the mbuf
//! pool's counts.

use super::*;

/// Counters of one server, values in [`SERVER_METRICS`] order (13 values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSnap {
    pub name: String,
    pub values: Vec<i64>,
}

/// One pool: values in [`POOL_METRICS`] order, servers in the
/// order given (the engine gives them in the C order, docs/compatibility.md §10.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSnap {
    pub name: String,
    pub values: Vec<i64>,
    pub servers: Vec<ServerSnap>,
}

/// mbuf pool figures, to size `-m` (see the module docs for where they go).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MbufSnap {
    pub chunk_size: usize,
    /// Chunks holding memory now (in use plus free; chunks beyond the reuse
    /// pool's bound are given back, see `mbuf.rs`).
    pub allocated: usize,
    /// Chunks on the reuse list.
    pub free: usize,
}

/// Everything the stats documents show, as absolute values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub pools: Vec<PoolSnap>,
    pub total_connections: u64,
    pub curr_connections: u64,
    pub mbuf: MbufSnap,
    /// Configuration reloads that took effect, and those refused.
    pub reloads: u64,
    pub reload_failures: u64,
}

impl ServerSnap {
    /// A server with every metric at 0.
    pub fn zeroed(name: &str) -> ServerSnap {
        ServerSnap {
            name: name.to_string(),
            values: vec![0; SERVER_METRICS.len()],
        }
    }
}

impl PoolSnap {
    /// A pool and its servers with every metric at 0.
    pub fn zeroed(name: &str, servers: &[&str]) -> PoolSnap {
        PoolSnap {
            name: name.to_string(),
            values: vec![0; POOL_METRICS.len()],
            servers: servers.iter().map(|s| ServerSnap::zeroed(s)).collect(),
        }
    }
}

/// A missing value (a short `values` vector) reads as 0, so a caller's
/// mistake cannot break the document's layout.
pub(super) fn value(values: &[i64], i: usize) -> i64 {
    values.get(i).copied().unwrap_or(0)
}

/// Bytes held in allocated chunks.
pub(super) fn mbuf_bytes(m: &MbufSnap) -> u64 {
    (m.allocated as u64).saturating_mul(m.chunk_size as u64)
}
