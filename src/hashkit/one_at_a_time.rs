//! `one_at_a_time`: Bob Jenkins' one-at-a-time hash as nutcracker 0.5.0 builds
//! it, with every byte widened as a *signed* char (docs/compatibility.md §6.1).

use super::sx;

pub(crate) fn hash(key: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &b in key {
        h = h.wrapping_add(sx(b));
        h = h.wrapping_add(h << 10);
        h ^= h >> 6;
    }
    h = h.wrapping_add(h << 3);
    h ^= h >> 11;
    h.wrapping_add(h << 15)
}

#[cfg(test)]
mod tests {
    use super::hash;

    #[test]
    fn spec_vectors() {
        assert_eq!(hash(b"apple"), 2297466611);
        assert_eq!(hash(b"a"), 3392050242);
        assert_eq!(hash(b"hello"), 3372029979);
        assert_eq!(hash(b"\x80"), 3273477671);
        assert_eq!(hash(b"\xff"), 2925896852);
    }
}
