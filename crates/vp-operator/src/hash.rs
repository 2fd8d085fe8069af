//! A small stable hash (FNV-1a, 64 bit) for object names and change detection: the same input gives the same
//! name on every run and every machine, which keeps reconciles idempotent.

/// FNV-1a over the bytes.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `len` characters of base-36 (DNS-safe: digits and lowercase letters) of the hash.
pub fn short(bytes: &[u8], len: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut h = fnv1a(bytes);
    (0..len)
        .map(|_| {
            let d = DIGITS[(h % 36) as usize];
            h /= 36;
            d as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stable_and_dns_safe() {
        assert_eq!(super::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        let a = super::short(b"node-a", 5);
        assert_eq!(a, super::short(b"node-a", 5));
        assert_ne!(a, super::short(b"node-b", 5));
        assert!(
            a.len() == 5
                && a.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
