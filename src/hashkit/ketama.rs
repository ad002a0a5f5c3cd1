//! The ketama continuum (docs/compatibility.md §5.3): each live server owns `4 * k` points on
//! a 32-bit circle, derived from MD5 digests of `name-i`; a hash goes to the
//! owner of the first point at or after it, wrapping to the lowest point.
//!
//! The point count `k` is computed in IEEE single precision in the exact
//! order of the C code, because exact arithmetic gives different counts for
//! some weights (20,10,2,2,16 -> 28 points, not 32, for a weight-2 server),
//! and a different count moves keys.

use super::md5;
use super::ServerSpec;

/// Points per server when all weights are equal.
const POINTS_PER_SERVER: f32 = 160.0;
/// Each MD5 digest yields four points.
const POINTS_PER_HASH: usize = 4;
/// The C code formats `name-i` into a fixed buffer; longer strings are cut.
const MAX_LABEL_LEN: usize = 272;

/// Number of point groups (of 4 points) for a server of `weight` among
/// `nlive` live servers whose weights sum to `total`.
pub(crate) fn groups(weight: u32, total: u64, nlive: usize) -> u32 {
    if total == 0 {
        return 0;
    }
    let pct = weight as f32 / total as f32;
    let x = ((pct * POINTS_PER_SERVER) / 4.0) * nlive as f32;
    // The C expression adds a double epsilon, then floorf() narrows to float.
    let x = (f64::from(x) + 0.000_000_000_1) as f32;
    // pct <= 1, so x <= 40 * nlive: the cast cannot saturate in practice.
    x.floor() as u32
}

/// Builds the sorted continuum `(value, server index)` from the live
/// servers.
pub(crate) fn build(servers: &[ServerSpec]) -> Vec<(u32, u32)> {
    let nlive = servers.iter().filter(|s| s.live).count();
    let total: u64 = servers
        .iter()
        .filter(|s| s.live)
        .map(|s| u64::from(s.weight))
        .sum();
    let mut points = Vec::new();
    let mut label: Vec<u8> = Vec::with_capacity(MAX_LABEL_LEN + 12);
    let mut digits = itoa::Buffer::new();
    for (index, server) in servers.iter().enumerate() {
        if !server.live {
            continue;
        }
        // Server counts come from a config file; they never approach 2^32.
        let owner = index as u32;
        let k = groups(server.weight, total, nlive);
        points.reserve(k as usize * POINTS_PER_HASH);
        for group in 0..k {
            label.clear();
            label.extend_from_slice(server.name);
            label.push(b'-');
            label.extend_from_slice(digits.format(group).as_bytes());
            label.truncate(MAX_LABEL_LEN);
            let d = md5::digest(&label);
            for w in 0..POINTS_PER_HASH {
                points.push((md5::word(&d, w), owner));
            }
        }
    }
    // Stable, like glibc's merge-sort qsort: equal values keep emission order.
    points.sort_by_key(|&(value, _)| value);
    points
}

/// Owner of the first point with value >= `hash`, wrapping to the first point.
pub(crate) fn dispatch(points: &[(u32, u32)], hash: u32) -> Option<usize> {
    let i = points.partition_point(|&(value, _)| value < hash);
    points
        .get(i)
        .or_else(|| points.first())
        .map(|&(_, owner)| owner as usize)
}

/// Bits of the hash that pick a bucket of the continuum.
const BUCKET_BITS: u32 = 12;

/// An index over the continuum: for each of the `2^BUCKET_BITS` equal
/// ranges of hash values, the first point at or past the range's start.
/// The point a hash lands on then lies between its bucket's entry and the
/// next one's (inclusive), so the search runs over the one or two points
/// of that range instead of all of them (160 per server): a binary search
/// over the whole continuum was a visible part of a GET's cost.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buckets {
    first: Vec<u32>,
}

impl Buckets {
    pub(crate) fn build(points: &[(u32, u32)]) -> Buckets {
        let n = 1usize << BUCKET_BITS;
        let mut first = Vec::with_capacity(n + 1);
        let mut i = 0usize;
        for b in 0..n {
            let start = (b as u64) << (32 - BUCKET_BITS);
            while points.get(i).is_some_and(|&(v, _)| u64::from(v) < start) {
                i += 1;
            }
            first.push(i as u32);
        }
        first.push(points.len() as u32);
        Buckets { first }
    }

    /// [`dispatch`], through the index when it was built for `points`.
    pub(crate) fn dispatch(&self, points: &[(u32, u32)], hash: u32) -> Option<usize> {
        let b = (hash >> (32 - BUCKET_BITS)) as usize;
        let (Some(&lo), Some(&hi)) = (self.first.get(b), self.first.get(b + 1)) else {
            return dispatch(points, hash);
        };
        let (lo, hi) = (lo as usize, hi as usize);
        let Some(range) = points.get(lo..hi) else {
            return dispatch(points, hash);
        };
        let i = lo + range.partition_point(|&(value, _)| value < hash);
        points
            .get(i)
            .or_else(|| points.first())
            .map(|&(_, owner)| owner as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &[u8], weight: u32) -> ServerSpec<'_> {
        ServerSpec {
            name,
            weight,
            live: true,
        }
    }

    #[test]
    fn buckets_agree_with_the_full_search() {
        let specs = [spec(b"a:1", 1), spec(b"b:1", 3), spec(b"c:1", 1)];
        let points = build(&specs);
        let idx = Buckets::build(&points);
        let mut h: u32 = 0x9E37_79B9;
        let mut probes: Vec<u32> = vec![0, 1, u32::MAX, u32::MAX - 1];
        probes.extend(
            points
                .iter()
                .flat_map(|&(v, _)| [v, v.wrapping_sub(1), v.wrapping_add(1)]),
        );
        for _ in 0..100_000 {
            h ^= h << 13;
            h ^= h >> 17;
            h ^= h << 5;
            probes.push(h);
        }
        for &p in &probes {
            assert_eq!(idx.dispatch(&points, p), dispatch(&points, p), "hash {p}");
        }
        let empty = Buckets::build(&[]);
        assert_eq!(empty.dispatch(&[], 7), None);
    }

    #[test]
    fn float32_group_counts() {
        let total = 20 + 10 + 2 + 2 + 16;
        assert_eq!(groups(20, total, 5), 80);
        assert_eq!(groups(10, total, 5), 40);
        assert_eq!(groups(2, total, 5), 7);
        assert_eq!(groups(16, total, 5), 63);
        assert_eq!(groups(1, 5, 5), 40);
        // Weights 1,1,3,1 after losing a weight-2 server: 104 and 320 points.
        assert_eq!(groups(1, 6, 4), 26);
        assert_eq!(groups(3, 6, 4), 80);
        assert_eq!(groups(1, 0, 0), 0);
    }

    #[test]
    fn points_come_from_name_dash_group() {
        let servers = [spec(b"node10", 1)];
        let points = build(&servers);
        assert_eq!(points.len(), 160);
        for v in [3345668631, 51714872, 737473091, 3162357712] {
            assert!(points.contains(&(v, 0)), "missing point {v}");
        }
        let servers = [spec(b"server1", 1), spec(b"other", 1)];
        let points = build(&servers);
        for v in [3853726576, 1491449930, 639619849, 2667054752] {
            assert!(points.contains(&(v, 0)), "missing point {v}");
        }
    }

    #[test]
    fn long_names_are_cut() {
        let long = [b'x'; 300];
        let points = build(&[spec(&long, 1)]);
        let d = md5::digest(&long[..MAX_LABEL_LEN]);
        // Every group label is cut to the same 272 bytes of the name.
        assert_eq!(points.len(), 160);
        assert!(points
            .iter()
            .all(|&(v, _)| (0..4).any(|w| md5::word(&d, w) == v)));
    }

    #[test]
    fn skips_dead_servers_and_recounts() {
        let servers = [
            spec(b"a", 1),
            ServerSpec {
                name: b"b",
                weight: 2,
                live: false,
            },
            spec(b"c", 3),
        ];
        let points = build(&servers);
        assert!(points.iter().all(|&(_, s)| s != 1));
        assert_eq!(points.iter().filter(|&&(_, s)| s == 0).count(), 80);
        assert_eq!(points.iter().filter(|&&(_, s)| s == 2).count(), 240);
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn lookup_is_lower_bound_with_wrap() {
        let points = [(10, 0), (20, 1), (30, 2)];
        assert_eq!(dispatch(&points, 0), Some(0));
        assert_eq!(dispatch(&points, 10), Some(0));
        assert_eq!(dispatch(&points, 11), Some(1));
        assert_eq!(dispatch(&points, 30), Some(2));
        assert_eq!(dispatch(&points, 31), Some(0));
        assert_eq!(dispatch(&points, u32::MAX), Some(0));
        assert_eq!(dispatch(&[], 5), None);
    }
}
