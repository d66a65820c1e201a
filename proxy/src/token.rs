//! The token format check (SPEC §9), so a missing or mistyped token is refused without a
//! database round trip. The database re-checks and owns existence, revocation and rights.

/// Every token starts with this, so secret scanners can recognise leaks.
pub const PREFIX: &str = "ev_tok_sk_live_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// Total length of a well-formed token.
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The 6-character checksum of `body` (prefix + random part): CRC-32 (IEEE) mod 36^6 in
/// lowercase base36, zero-padded.
pub fn checksum(body: &str) -> String {
    let mut n = u64::from(crc32fast::hash(body.as_bytes())) % 36u64.pow(CHECKSUM_LEN as u32);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        // n % 36 < 36, so the index is always in range.
        *slot = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// True when `token` has the prefix, 32 lowercase base36 characters and a matching checksum.
pub fn is_well_formed(token: &str) -> bool {
    // ASCII first: it makes the byte slicing below land on character boundaries.
    if !token.is_ascii() || token.len() != TOKEN_LEN || !token.starts_with(PREFIX) {
        return false;
    }
    let (body, sum) = token.split_at(PREFIX.len() + RANDOM_LEN);
    let random_ok = body[PREFIX.len()..]
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    random_ok && checksum(body) == sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn generate() -> String {
        let mut rng = rand::rng();
        let random: String = (0..RANDOM_LEN)
            .map(|_| char::from(ALPHABET[rng.random_range(0..36)]))
            .collect();
        let body = format!("{PREFIX}{random}");
        let sum = checksum(&body);
        format!("{body}{sum}")
    }

    #[test]
    fn generated_tokens_are_well_formed() {
        for _ in 0..200 {
            let t = generate();
            assert_eq!(t.len(), 53);
            assert!(is_well_formed(&t), "{t}");
        }
    }

    #[test]
    fn checksum_is_crc32_mod_36_pow_6_base36() {
        // crc32("") = 0 → all zeros; crc32("a") = 0xe8b7be43 = 3904355907;
        // the reduction matters: 3904355907 mod 2176782336 = 1727573571.
        assert_eq!(checksum(""), "000000");
        assert_eq!(crc32fast::hash(b"a"), 0xe8b7_be43);
        // Expected value computed independently with Python's zlib.crc32.
        assert_eq!(checksum("a"), "skjwar");
    }

    #[test]
    fn refuses_malformed_tokens() {
        let good = generate();
        assert!(!is_well_formed(""));
        assert!(!is_well_formed("mytoken"));
        assert!(!is_well_formed(&good[..52]));
        assert!(!is_well_formed(&format!("{good}0")));
        assert!(!is_well_formed(&good.to_uppercase()));
        assert!(!is_well_formed(&good.replacen(
            "ev_tok_sk_live_",
            "ev_tok_sk_test_",
            1
        )));
        // One mistyped character in the random part breaks the checksum.
        let mut bytes = good.clone().into_bytes();
        bytes[20] = if bytes[20] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        assert!(!is_well_formed(&typo));
        // Uppercase in the random part is refused even with a checksum that matches it.
        let body = format!("{PREFIX}{}", "A".repeat(32));
        assert!(!is_well_formed(&format!("{body}{}", checksum(&body))));
        // Multi-byte characters must not make slicing panic.
        assert!(!is_well_formed(
            &"é"
                .repeat(26)
                .chars()
                .chain("x".chars())
                .collect::<String>()
        ));
        let tricky = format!("{PREFIX}{}é{}", "a".repeat(31), "b".repeat(5));
        assert_eq!(tricky.len(), 53);
        assert!(!is_well_formed(&tricky));
    }
}
