//! `crc32a` (standard CRC-32, as zlib) and `crc32` (libmemcached's variant:
//! 15 bits of it), docs/compatibility.md §6.4 and §6.5.

pub(crate) fn crc32a(key: &[u8]) -> u32 {
    crc32fast::hash(key)
}

/// Only 0..=32767: with ketama nearly every key lands on the lowest point,
/// which is what nutcracker 0.5.0 does too.
pub(crate) fn crc32(key: &[u8]) -> u32 {
    (crc32a(key) >> 16) & 0x7FFF
}

#[cfg(test)]
mod tests {
    use super::{crc32, crc32a};

    #[test]
    fn spec_vectors_crc32() {
        assert_eq!(crc32(b"apple"), 10542);
        assert_eq!(crc32(b"a"), 26807);
        assert_eq!(crc32(b"hello"), 13840);
        assert_eq!(crc32(b"\x80"), 16314);
        assert_eq!(crc32(b"\xff"), 32512);
    }

    #[test]
    fn spec_vectors_crc32a() {
        assert_eq!(crc32a(b"apple"), 2838417488);
        assert_eq!(crc32a(b"a"), 3904355907);
        assert_eq!(crc32a(b"hello"), 907060870);
        assert_eq!(crc32a(b"\x80"), 1069182125);
        assert_eq!(crc32a(b"\xff"), 4278190080);
    }
}
