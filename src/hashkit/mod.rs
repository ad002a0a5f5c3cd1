//! Key placement: the twelve hash functions of nutcracker 0.5.0 and the
//! three distributions (ketama, modula, random) that map a hash to a server.
//!
//! Placement must match the C binary bit for bit (docs/compatibility.md §5 and §6):
//! users' caches go cold otherwise. A request key flows through
//! [`key_hash`] (hash-tag reduction, empty key -> 0, then [`HashKind::hash`])
//! into [`Selector::dispatch`], which looks the hash up in the pool's table;
//! [`select`] does both plus the one-server rule. Tables are built by
//! [`Selector::build`] from the pool's servers in nutcracker's index order
//! (sorted by name), skipping servers that are not live, and rebuilt by the
//! caller whenever the live set changes.
//!
//! ```text
//!   key --tag--> bytes --hash--> u32 --ketama: lower bound on the circle-->  server index
//!                                    --modula: slot hash % slots ---------/
//!   (random ignores the key) --------------------------------------------/
//! ```

mod crc16;
mod crc32;
mod fnv;
mod hsieh;
mod jenkins;
mod ketama;
mod md5;
mod modula;
mod murmur;
mod one_at_a_time;
mod random;

/// The `hash:` directive values.
// The variant names mirror the directive names (`fnv1a_64`, ...).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    OneAtATime,
    Md5,
    Crc16,
    Crc32,
    Crc32a,
    Fnv1_64,
    Fnv1a_64,
    Fnv1_32,
    Fnv1a_32,
    Hsieh,
    Murmur,
    Jenkins,
}

/// The `distribution:` directive values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Ketama,
    Modula,
    Random,
}

/// Widens a byte as a signed C `char` would, then reinterprets it as
/// unsigned: several of the C hash functions do this by accident, and keys
/// with bytes >= 0x80 hash differently because of it.
#[inline]
fn sx(b: u8) -> u32 {
    b as i8 as i32 as u32
}

impl HashKind {
    /// Every hash, in the column order of `golden/hash-vectors.tsv`.
    pub const ALL: [HashKind; 12] = [
        HashKind::OneAtATime,
        HashKind::Md5,
        HashKind::Crc16,
        HashKind::Crc32,
        HashKind::Crc32a,
        HashKind::Fnv1_64,
        HashKind::Fnv1a_64,
        HashKind::Fnv1_32,
        HashKind::Fnv1a_32,
        HashKind::Hsieh,
        HashKind::Murmur,
        HashKind::Jenkins,
    ];

    /// The exact lower-case directive value; anything else is not a hash.
    pub fn from_name(name: &str) -> Option<HashKind> {
        HashKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            HashKind::OneAtATime => "one_at_a_time",
            HashKind::Md5 => "md5",
            HashKind::Crc16 => "crc16",
            HashKind::Crc32 => "crc32",
            HashKind::Crc32a => "crc32a",
            HashKind::Fnv1_64 => "fnv1_64",
            HashKind::Fnv1a_64 => "fnv1a_64",
            HashKind::Fnv1_32 => "fnv1_32",
            HashKind::Fnv1a_32 => "fnv1a_32",
            HashKind::Hsieh => "hsieh",
            HashKind::Murmur => "murmur",
            HashKind::Jenkins => "jenkins",
        }
    }

    /// The raw function, also defined for the empty key (which placement
    /// never hashes: see [`key_hash`]).
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashKind::OneAtATime => one_at_a_time::hash(key),
            HashKind::Md5 => md5::hash(key),
            HashKind::Crc16 => crc16::hash(key),
            HashKind::Crc32 => crc32::crc32(key),
            HashKind::Crc32a => crc32::crc32a(key),
            HashKind::Fnv1_64 => fnv::fnv1_64(key),
            HashKind::Fnv1a_64 => fnv::fnv1a_64(key),
            HashKind::Fnv1_32 => fnv::fnv1_32(key),
            HashKind::Fnv1a_32 => fnv::fnv1a_32(key),
            HashKind::Hsieh => hsieh::hash(key),
            HashKind::Murmur => murmur::hash(key),
            HashKind::Jenkins => jenkins::hash(key),
        }
    }
}

impl Distribution {
    pub const ALL: [Distribution; 3] = [
        Distribution::Ketama,
        Distribution::Modula,
        Distribution::Random,
    ];

    /// The exact lower-case directive value.
    pub fn from_name(name: &str) -> Option<Distribution> {
        Distribution::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }
}

/// The bytes that get hashed (docs/compatibility.md §5.1): with tag `a b`, the bytes
/// strictly between the first `a` and the first `b` after it, when there is
/// at least one; otherwise the whole key.
pub fn hash_tag_slice(hash_tag: Option<[u8; 2]>, key: &[u8]) -> &[u8] {
    let Some([open, close]) = hash_tag else {
        return key;
    };
    let Some(start) = key.iter().position(|&b| b == open) else {
        return key;
    };
    let inner = &key[start + 1..];
    match inner.iter().position(|&b| b == close) {
        Some(end) if end > 0 => &inner[..end],
        _ => key,
    }
}

/// docs/compatibility.md §5.1: hash-tag reduction, then 0 for an empty (reduced)
/// key, else `kind.hash()`. Does not apply the one-server rule ([`select`]
/// does).
pub fn key_hash(kind: HashKind, hash_tag: Option<[u8; 2]>, key: &[u8]) -> u32 {
    let bytes = hash_tag_slice(hash_tag, key);
    if bytes.is_empty() {
        0
    } else {
        kind.hash(bytes)
    }
}

/// One server as the table builder sees it. Servers are passed in sorted
/// name order, which is nutcracker's index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSpec<'a> {
    /// The ketama name (docs/compatibility.md §4.4).
    pub name: &'a [u8],
    pub weight: u32,
    pub live: bool,
}

/// The selection table of a pool: the continuum for ketama, the slot table
/// for modula and random.
#[derive(Debug, Clone)]
pub struct Selector {
    dist: Distribution,
    /// `(value, server index)`: ascending values for ketama; slot order
    /// with value 0 for modula and random.
    table: Vec<(u32, u32)>,
    /// Ketama only: see [`ketama::Buckets`].
    buckets: ketama::Buckets,
    rng: random::Rng,
}

impl Selector {
    /// Builds the table from the live servers (docs/compatibility.md §5.3-§5.5). With no live
    /// server the table is empty; nutcracker then keeps using the previous
    /// table, which is the caller's business.
    pub fn build(dist: Distribution, servers: &[ServerSpec]) -> Selector {
        let table = match dist {
            Distribution::Ketama => ketama::build(servers),
            Distribution::Modula => modula::build(servers),
            Distribution::Random => random::build(servers),
        };
        let rng = match dist {
            Distribution::Random => random::Rng::from_clock(),
            _ => random::Rng::seeded(0),
        };
        let buckets = match dist {
            Distribution::Ketama => ketama::Buckets::build(&table),
            _ => ketama::Buckets::default(),
        };
        Selector {
            dist,
            table,
            buckets,
            rng,
        }
    }

    pub fn distribution(&self) -> Distribution {
        self.dist
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Server index (position in the slice given to [`Selector::build`]) for
    /// a hash; `None` if the table is empty. Random ignores the hash.
    pub fn dispatch(&self, hash: u32) -> Option<usize> {
        match self.dist {
            Distribution::Ketama => self.buckets.dispatch(&self.table, hash),
            Distribution::Modula => modula::dispatch(&self.table, hash),
            Distribution::Random => random::dispatch(&self.table, &self.rng),
        }
    }

    /// The table rows `(value, server index)` in table order, for tests and
    /// diagnostics.
    pub fn points(&self) -> Vec<(u32, usize)> {
        self.table
            .iter()
            .map(|&(value, owner)| (value, owner as usize))
            .collect()
    }
}

/// Picks the server for a request key: a pool of exactly one server
/// (`nservers`, counting dead ones too) uses hash 0, as nutcracker does;
/// otherwise [`key_hash`]. Then [`Selector::dispatch`].
pub fn select(
    sel: &Selector,
    kind: HashKind,
    tag: Option<[u8; 2]>,
    key: &[u8],
    nservers: usize,
) -> Option<usize> {
    let hash = if nservers == 1 {
        0
    } else {
        key_hash(kind, tag, key)
    };
    sel.dispatch(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in HashKind::ALL {
            assert_eq!(HashKind::from_name(kind.name()), Some(kind));
        }
        for dist in Distribution::ALL {
            assert_eq!(Distribution::from_name(dist.name()), Some(dist));
        }
        assert_eq!(HashKind::from_name("fnv1a_64"), Some(HashKind::Fnv1a_64));
        assert_eq!(HashKind::from_name("MD5"), None);
        assert_eq!(HashKind::from_name("md5 "), None);
        assert_eq!(HashKind::from_name(""), None);
        assert_eq!(Distribution::from_name("Ketama"), None);
        assert_eq!(Distribution::from_name("vnode"), None);
    }

    #[test]
    fn signed_char_widening() {
        assert_eq!(sx(0x7F), 0x7F);
        assert_eq!(sx(0x80), 0xFFFF_FF80);
        assert_eq!(sx(0xFF), 0xFFFF_FFFF);
    }

    #[test]
    fn hash_tag_examples() {
        let curly = Some(*b"{}");
        let cases: [(&[u8], &[u8]); 9] = [
            (b"{user1}:a", b"user1"),
            (b"x{y}z", b"y"),
            (b"{}x", b"{}x"),
            (b"{a", b"{a"),
            (b"}{a}", b"a"),
            (b"{a}{b}", b"a"),
            (b"{{a}}", b"{a"),
            (b"{}", b"{}"),
            (b"plain", b"plain"),
        ];
        for (key, want) in cases {
            assert_eq!(hash_tag_slice(curly, key), want, "key {key:?}");
        }
        let dollar = Some(*b"$$");
        assert_eq!(hash_tag_slice(dollar, b"$a$b$"), b"a");
        assert_eq!(hash_tag_slice(dollar, b"$$x"), b"$$x");
        assert_eq!(hash_tag_slice(None, b"{a}b"), b"{a}b");
    }

    #[test]
    fn key_hash_rules() {
        let kind = HashKind::Md5;
        assert_eq!(key_hash(kind, None, b""), 0);
        assert_ne!(kind.hash(b""), 0);
        assert_eq!(key_hash(kind, Some(*b"{}"), b"{u}:a"), kind.hash(b"u"));
        assert_eq!(key_hash(kind, Some(*b"{}"), b"{}"), kind.hash(b"{}"));
        assert_eq!(key_hash(kind, None, b"apple"), 3195025439);
    }

    fn specs<'a>(names: &[&'a [u8]], live: &[bool]) -> Vec<ServerSpec<'a>> {
        names
            .iter()
            .zip(live)
            .map(|(&name, &live)| ServerSpec {
                name,
                weight: 1,
                live,
            })
            .collect()
    }

    #[test]
    fn empty_when_nothing_live() {
        let servers = specs(&[b"a", b"b"], &[false, false]);
        for dist in Distribution::ALL {
            let sel = Selector::build(dist, &servers);
            assert!(sel.is_empty());
            assert_eq!(sel.dispatch(123), None);
            assert!(sel.points().is_empty());
            assert_eq!(sel.distribution(), dist);
        }
    }

    #[test]
    fn one_server_pool_uses_hash_zero() {
        let servers = specs(&[b"only"], &[true]);
        let sel = Selector::build(Distribution::Ketama, &servers);
        assert_eq!(select(&sel, HashKind::Md5, None, b"k", 1), Some(0));
        // Two servers, one dead: the key is hashed, but only the live one owns points.
        let servers = specs(&[b"a", b"b"], &[false, true]);
        let sel = Selector::build(Distribution::Modula, &servers);
        for key in [&b"x"[..], b"y", b"zz", b""] {
            assert_eq!(select(&sel, HashKind::Fnv1a_64, None, key, 2), Some(1));
        }
    }

    #[test]
    fn random_picks_every_live_server_and_no_dead_one() {
        let names: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
        let sel = Selector::build(Distribution::Random, &specs(&names, &[true; 4]));
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            if let Some(i) = sel.dispatch(0) {
                seen[i] += 1;
            }
        }
        assert_eq!(seen.iter().sum::<usize>(), 4000);
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");

        let sel = Selector::build(
            Distribution::Random,
            &specs(&names, &[true, false, true, false]),
        );
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            if let Some(i) = sel.dispatch(7) {
                seen[i] += 1;
            }
        }
        assert_eq!(seen[0] + seen[2], 4000, "{seen:?}");
        assert!(seen[0] > 0 && seen[2] > 0, "{seen:?}");
    }
}
