//! `murmur`: MurmurHash2 with a seed derived from the key length
//! (docs/compatibility.md §6.9). All bytes unsigned.

const M: u32 = 0x5BD1_E995;

pub(crate) fn hash(key: &[u8]) -> u32 {
    // The C code truncates the length to 32 bits before using it.
    let len = key.len() as u32;
    let mut h = 0xDEAD_BEEFu32.wrapping_mul(len) ^ len;
    let mut blocks = key.chunks_exact(4);
    for p in &mut blocks {
        let mut k = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&b0) = tail.first() {
        h ^= u32::from(b0);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use super::hash;

    #[test]
    fn spec_vectors() {
        assert_eq!(hash(b"apple"), 4142305122);
        assert_eq!(hash(b"a"), 1262581116);
        assert_eq!(hash(b"hello"), 1377504255);
        assert_eq!(hash(b"\x80"), 2421514821);
        assert_eq!(hash(b"\xff"), 3679652508);
    }
}
