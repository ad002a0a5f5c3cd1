//! `hsieh`: Paul Hsieh's SuperFastHash (docs/compatibility.md §6.8). The third byte of a
//! 3-byte tail is widened as a signed char; every other byte is unsigned.

use super::sx;

fn g16(p: &[u8], i: usize) -> u32 {
    u32::from(p[i]) | (u32::from(p[i + 1]) << 8)
}

pub(crate) fn hash(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut h: u32 = 0;
    let mut blocks = key.chunks_exact(4);
    for p in &mut blocks {
        h = h.wrapping_add(g16(p, 0));
        let t = (g16(p, 2) << 11) ^ h;
        h = (h << 16) ^ t;
        h = h.wrapping_add(h >> 11);
    }
    match *blocks.remainder() {
        [b0, b1, b2] => {
            h = h.wrapping_add(u32::from(b0) | (u32::from(b1) << 8));
            h ^= h << 16;
            h ^= sx(b2) << 18;
            h = h.wrapping_add(h >> 11);
        }
        [b0, b1] => {
            h = h.wrapping_add(u32::from(b0) | (u32::from(b1) << 8));
            h ^= h << 11;
            h = h.wrapping_add(h >> 17);
        }
        [b0] => {
            h = h.wrapping_add(u32::from(b0));
            h ^= h << 10;
            h = h.wrapping_add(h >> 1);
        }
        _ => {}
    }
    h ^= h << 3;
    h = h.wrapping_add(h >> 5);
    h ^= h << 4;
    h = h.wrapping_add(h >> 17);
    h ^= h << 25;
    h.wrapping_add(h >> 6)
}

#[cfg(test)]
mod tests {
    use super::hash;

    #[test]
    fn spec_vectors() {
        assert_eq!(hash(b""), 0);
        assert_eq!(hash(b"apple"), 3738850110);
        assert_eq!(hash(b"a"), 2472816263);
        assert_eq!(hash(b"hello"), 327428805);
        assert_eq!(hash(b"\x80"), 3606367026);
        assert_eq!(hash(b"\xff"), 44489640);
    }
}
