//! `jenkins`: Bob Jenkins' lookup3 `hashlittle` with initval 13
//! (docs/compatibility.md §6.10). Byte order is fixed little-endian, so the result does not
//! depend on the key's alignment as the C fast paths might suggest.

fn le32(p: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]])
}

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn final_mix(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c.wrapping_sub(b.rotate_left(24))
}

pub(crate) fn hash(key: &[u8]) -> u32 {
    const INITVAL: u32 = 13;
    let init = 0xDEAD_BEEFu32
        .wrapping_add(key.len() as u32)
        .wrapping_add(INITVAL);
    let (mut a, mut b, mut c) = (init, init, init);
    if key.is_empty() {
        return c;
    }
    let mut rest = key;
    // Strictly more than 12: a final whole block goes through `final` only.
    while rest.len() > 12 {
        a = a.wrapping_add(le32(rest, 0));
        b = b.wrapping_add(le32(rest, 4));
        c = c.wrapping_add(le32(rest, 8));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(le32(&tail, 0));
    b = b.wrapping_add(le32(&tail, 4));
    c = c.wrapping_add(le32(&tail, 8));
    final_mix(a, b, c)
}

#[cfg(test)]
mod tests {
    use super::hash;

    #[test]
    fn spec_vectors() {
        assert_eq!(hash(b"apple"), 1442444624);
        assert_eq!(hash(b"a"), 3768813200);
        assert_eq!(hash(b"hello"), 772589811);
        assert_eq!(hash(b"\x80"), 2976898632);
        assert_eq!(hash(b"\xff"), 3784723880);
    }

    #[test]
    fn empty_key_is_unmixed_init() {
        assert_eq!(hash(b""), 0xDEAD_BEEFu32.wrapping_add(13));
    }
}
