//! Random tokens (session ids, CSRF tokens) and their comparison.

/// 256 random bits as 64 lowercase hex characters. `rand::random` draws
/// from the thread-local ChaCha generator, seeded from the OS and reseeded
/// periodically, which is suitable for secrets.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    let mut out = String::with_capacity(64);
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Compares two secrets in time that depends only on their lengths, so a
/// guesser cannot learn a token byte by byte from response times. Empty
/// never matches: an absent token must not equal an absent cookie.
pub fn tokens_match(presented: &[u8], expected: &[u8]) -> bool {
    if presented.is_empty() || presented.len() != expected.len() {
        return false;
    }
    let difference = presented
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_chars_and_differ() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn tokens_match_only_when_equal_and_non_empty() {
        assert!(tokens_match(b"abc123", b"abc123"));
        assert!(!tokens_match(b"abc124", b"abc123"));
        assert!(!tokens_match(b"abc12", b"abc123"));
        assert!(!tokens_match(b"", b""));
        assert!(!tokens_match(b"", b"abc"));
    }
}
