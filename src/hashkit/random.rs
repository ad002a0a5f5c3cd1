//! The random distribution (docs/compatibility.md §5.5): one slot per live server, weights
//! ignored, and the key's hash unused. nutcracker seeds `random()` from the
//! clock once; placement is not reproducible, so any decent PRNG will do.
//! This one is xorshift64*, seeded from the clock and a process-wide counter
//! so that two tables built in the same instant do not march in step.

use super::ServerSpec;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One slot per live server, as `(0, server index)` rows.
pub(crate) fn build(servers: &[ServerSpec]) -> Vec<(u32, u32)> {
    servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.live)
        // Server counts come from a config file; they never approach 2^32.
        .map(|(index, _)| (0, index as u32))
        .collect()
}

pub(crate) fn dispatch(slots: &[(u32, u32)], rng: &Rng) -> Option<usize> {
    if slots.is_empty() {
        return None;
    }
    let pick = (rng.next() % slots.len() as u64) as usize;
    slots.get(pick).map(|&(_, owner)| owner as usize)
}

/// xorshift64*; the state is never zero. A `Cell`, so that routing can
/// take the table by shared reference.
#[derive(Debug, Clone)]
pub(crate) struct Rng(Cell<u64>);

impl Rng {
    pub(crate) fn from_clock() -> Rng {
        static BUILT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = BUILT.fetch_add(1, Ordering::Relaxed);
        Rng::seeded(nanos ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub(crate) fn seeded(seed: u64) -> Rng {
        // splitmix64 finaliser: spreads close seeds apart.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(Cell::new(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z }))
    }

    pub(crate) fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_per_live_server() {
        let servers = [
            ServerSpec {
                name: b"a",
                weight: 5,
                live: true,
            },
            ServerSpec {
                name: b"b",
                weight: 1,
                live: false,
            },
            ServerSpec {
                name: b"c",
                weight: 1,
                live: true,
            },
        ];
        assert_eq!(build(&servers), [(0, 0), (0, 2)]);
    }

    #[test]
    fn picks_every_slot_and_only_slots() {
        let slots = [(0, 3), (0, 5), (0, 9)];
        let rng = Rng::seeded(0);
        let mut seen = [0u32; 10];
        for _ in 0..3000 {
            let s = dispatch(&slots, &rng).unwrap_or(0);
            seen[s] += 1;
        }
        assert_eq!(seen.iter().sum::<u32>(), 3000);
        for (i, &n) in seen.iter().enumerate() {
            if [3, 5, 9].contains(&i) {
                assert!(n > 800, "server {i} picked {n} times of 3000");
            } else {
                assert_eq!(n, 0);
            }
        }
        assert_eq!(dispatch(&[], &rng), None);
    }

    #[test]
    fn seeds_differ() {
        assert_ne!(Rng::from_clock().next(), Rng::from_clock().next());
    }
}
