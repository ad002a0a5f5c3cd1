//! `md5`: the first little-endian word of the key's MD5 digest (docs/compatibility.md §6.2).
//! The full digest is also what ketama derives its points from (docs/compatibility.md §5.3).

use ::md5::{Digest, Md5};

/// The 16-byte MD5 digest of `data`.
pub(crate) fn digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// Little-endian 32-bit word `word` (0..=3) of a digest.
pub(crate) fn word(d: &[u8; 16], word: usize) -> u32 {
    let i = word * 4;
    u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]])
}

pub(crate) fn hash(key: &[u8]) -> u32 {
    word(&digest(key), 0)
}

#[cfg(test)]
mod tests {
    use super::{digest, hash, word};

    #[test]
    fn spec_vectors() {
        assert_eq!(hash(b"apple"), 3195025439);
        assert_eq!(hash(b"a"), 3111502092);
        assert_eq!(hash(b"hello"), 708854109);
        assert_eq!(hash(b"\x80"), 2128427405);
        assert_eq!(hash(b"\xff"), 3561969920);
    }

    #[test]
    fn digest_words() {
        let d = digest(b"127.0.0.1:31001-0");
        let words: Vec<u32> = (0..4).map(|i| word(&d, i)).collect();
        assert_eq!(words, [81145421, 840452161, 3997477776, 725824661]);
    }
}
