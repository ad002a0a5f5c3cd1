//! `crc16`: the CRC-16/XMODEM table driven through a 32-bit register that is
//! never masked, so the result keeps the shifted-out bits above bit 15
//! (docs/compatibility.md §6.3).

/// CRC-16/CCITT (XMODEM) byte table, polynomial 0x1021, non-reflected.
const TABLE: [u32; 256] = build_table();

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 8;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x1021
            } else {
                c << 1
            };
            bit += 1;
        }
        table[i] = c & 0xFFFF;
        i += 1;
    }
    table
}

pub(crate) fn hash(key: &[u8]) -> u32 {
    key.iter().fold(0u32, |c, &b| {
        (c << 8) ^ TABLE[(((c >> 8) ^ u32::from(b)) & 0xFF) as usize]
    })
}

#[cfg(test)]
mod tests {
    use super::{hash, TABLE};

    #[test]
    fn table_matches_xmodem() {
        assert_eq!(TABLE[1], 0x1021);
        assert_eq!(TABLE[255], 0x1EF0);
        // Low 16 bits are plain CRC-16/XMODEM ("123456789" -> 0x31C3).
        assert_eq!(hash(b"123456789") & 0xFFFF, 0x31C3);
    }

    #[test]
    fn spec_vectors() {
        assert_eq!(hash(b"apple"), 3662830516);
        assert_eq!(hash(b"a"), 31879);
        assert_eq!(hash(b"hello"), 1800389474);
        assert_eq!(hash(b"\x80"), 37256);
        assert_eq!(hash(b"\xff"), 7920);
    }
}
