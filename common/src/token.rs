//! The token format (SPEC §9): `ev_tok_sk_live_`, 32 lowercase base36 characters, and a
//! 6-character checksum, CRC-32 (IEEE) of the first 47 characters mod 36^6 in base36,
//! zero-padded. The proxy checks it before any database round trip; the database re-checks
//! it (extension/src/token.rs, its own copy) and owns existence, revocation and rights.

/// Every token starts with this, so secret scanners can recognise leaks.
pub const PREFIX: &str = "ev_tok_sk_live_";
/// Random characters after the prefix.
pub const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// Total length of a well-formed token.
pub const TOKEN_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// The characters of the random part and of the checksum.
pub const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The 6-character checksum of `body` (prefix + random part).
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
    let random_ok = body[PREFIX.len()..].bytes().all(|b| ALPHABET.contains(&b));
    random_ok && checksum(body) == sum
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently with Python's zlib.crc32.
    const GOOD: [&str; 3] = [
        "ev_tok_sk_live_0000000000000000000000000000000006gywu",
        "ev_tok_sk_live_abcdefghijklmnopqrstuvwxyz012345hutu02",
        "ev_tok_sk_live_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzo4cmjo",
    ];

    #[test]
    fn known_tokens_are_well_formed() {
        for t in GOOD {
            assert_eq!(t.len(), TOKEN_LEN);
            assert!(is_well_formed(t), "{t}");
            assert_eq!(checksum(&t[..47]), t[47..], "{t}");
        }
    }

    #[test]
    fn checksum_is_crc32_mod_36_pow_6_base36() {
        // crc32("") = 0 → all zeros; crc32("a") = 0xe8b7be43 = 3904355907;
        // the reduction matters: 3904355907 mod 2176782336 = 1727573571.
        assert_eq!(checksum(""), "000000");
        assert_eq!(crc32fast::hash(b"a"), 0xe8b7_be43);
        assert_eq!(checksum("a"), "skjwar");
    }

    #[test]
    fn refuses_malformed_tokens() {
        let good = GOOD[1];
        assert!(!is_well_formed(""));
        assert!(!is_well_formed("mytoken"));
        // The placeholder the proxy's handler test sends.
        assert!(!is_well_formed("ev_tok_sk_live_bad"));
        assert!(!is_well_formed(&good[..52]));
        assert!(!is_well_formed(&format!("{good}0")));
        assert!(!is_well_formed(&good.to_uppercase()));
        assert!(!is_well_formed(&good.replacen(
            "ev_tok_sk_live_",
            "ev_tok_sk_test_",
            1
        )));
        // One mistyped character in the random part breaks the checksum.
        assert!(!is_well_formed(&good.replacen('a', "b", 1)));
        // The last checksum character changed, as tests/src/token.rs's `with_bad_checksum`.
        assert!(!is_well_formed(&format!("{}1", &good[..52])));
        // Uppercase in the random part is refused even with a checksum that matches it.
        let body = format!("{PREFIX}{}", "A".repeat(RANDOM_LEN));
        assert!(!is_well_formed(&format!("{body}{}", checksum(&body))));
        // Multi-byte characters of the right byte length must not make slicing panic.
        let tricky = format!("{PREFIX}{}é{}", "a".repeat(31), "b".repeat(5));
        assert_eq!(tricky.len(), TOKEN_LEN);
        assert!(!is_well_formed(&tricky));
        assert!(!is_well_formed(&"é".repeat(26)));
    }
}
