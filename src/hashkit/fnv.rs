//! The four FNV variants (docs/compatibility.md §6.6-§6.7), all with bytes widened as signed
//! chars. The `_64` ones only ever produce the low 32 bits, so they run in
//! 32 bits with the low halves of the 64-bit constants; `fnv1a_64` (the
//! default hash) is therefore not a truncated FNV-1a-64 over the same input.

use super::sx;

const FNV_64_INIT_LO: u32 = 0x8422_2325;
const FNV_64_PRIME_LO: u32 = 0x0000_01B3;
const FNV_32_INIT: u32 = 0x811C_9DC5;
const FNV_32_PRIME: u32 = 0x0100_0193;

/// Multiply, then xor.
fn fnv1(init: u32, prime: u32, key: &[u8]) -> u32 {
    key.iter().fold(init, |h, &b| h.wrapping_mul(prime) ^ sx(b))
}

/// Xor, then multiply.
fn fnv1a(init: u32, prime: u32, key: &[u8]) -> u32 {
    key.iter()
        .fold(init, |h, &b| (h ^ sx(b)).wrapping_mul(prime))
}

pub(crate) fn fnv1_64(key: &[u8]) -> u32 {
    fnv1(FNV_64_INIT_LO, FNV_64_PRIME_LO, key)
}

pub(crate) fn fnv1a_64(key: &[u8]) -> u32 {
    fnv1a(FNV_64_INIT_LO, FNV_64_PRIME_LO, key)
}

pub(crate) fn fnv1_32(key: &[u8]) -> u32 {
    fnv1(FNV_32_INIT, FNV_32_PRIME, key)
}

pub(crate) fn fnv1a_32(key: &[u8]) -> u32 {
    fnv1a(FNV_32_INIT, FNV_32_PRIME, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors_fnv1_64() {
        assert_eq!(fnv1_64(b"apple"), 473199127);
        assert_eq!(fnv1_64(b"a"), 2248259518);
        assert_eq!(fnv1_64(b"hello"), 3183334599);
        assert_eq!(fnv1_64(b"\x80"), 2046707807);
        assert_eq!(fnv1_64(b"\xff"), 2046707744);
    }

    #[test]
    fn fnv1_64_is_low_half_of_64_bit_loop() {
        let key = b"some key \xc3\xa9\xff";
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for &b in key.iter() {
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
            h ^= i64::from(b as i8) as u64;
        }
        assert_eq!(fnv1_64(key), h as u32);
    }

    #[test]
    fn spec_vectors_fnv1a_64() {
        assert_eq!(fnv1a_64(b"apple"), 1488911807);
        assert_eq!(fnv1a_64(b"a"), 2248273036);
        assert_eq!(fnv1a_64(b"hello"), 2158673163);
        assert_eq!(fnv1a_64(b"\x80"), 2046684255);
        assert_eq!(fnv1a_64(b"\xff"), 2046707310);
    }

    #[test]
    fn spec_vectors_fnv1_32() {
        assert_eq!(fnv1_32(b"apple"), 67176023);
        assert_eq!(fnv1_32(b"a"), 84696446);
        assert_eq!(fnv1_32(b"hello"), 3069866343);
        assert_eq!(fnv1_32(b"\x80"), 4210270879);
        assert_eq!(fnv1_32(b"\xff"), 4210270944);
    }

    #[test]
    fn spec_vectors_fnv1a_32() {
        assert_eq!(fnv1a_32(b"apple"), 280767167);
        assert_eq!(fnv1a_32(b"a"), 3826002220);
        assert_eq!(fnv1a_32(b"hello"), 1335831723);
        assert_eq!(fnv1a_32(b"\x80"), 83079839);
        assert_eq!(fnv1a_32(b"\xff"), 4193493326);
    }
}
