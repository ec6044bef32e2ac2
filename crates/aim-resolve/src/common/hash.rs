//! Hashes written into names and annotations: lower-case hex, two characters a byte.

use sha2::{Digest, Sha256};

pub(crate) use aim_discovery::hex;

/// The first `bytes` bytes (at most 32) of the SHA-256 of `data`, in hex.
pub(crate) fn sha256_hex(data: &[u8], bytes: usize) -> String {
    hex(&Sha256::digest(data)[..bytes])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_characters_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
        // sha256("") = e3b0c442…
        assert_eq!(sha256_hex(b"", 4), "e3b0c442");
    }
}
