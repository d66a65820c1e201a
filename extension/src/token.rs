//! The token format: `ev_tok_sk_live_` + 32 random base36 characters + a 6-character
//! checksum (CRC-32 of the first 47 characters, mod 36^6, base36, zero-padded).
//!
//! The checksum lets the proxy and the database refuse a mistyped token without a lookup,
//! and the fixed prefix lets secret scanners recognise leaked tokens.

use pgrx::prelude::*;
use sha2::{Digest, Sha256};

const PREFIX: &str = "ev_tok_sk_live_";
const RANDOM_CHARS: usize = 32;
const CHECKSUM_CHARS: usize = 6;
const TOKEN_LEN: usize = PREFIX.len() + RANDOM_CHARS + CHECKSUM_CHARS;
const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Largest multiple of 36 that fits a byte: bytes at or above it are redrawn so every
/// character is equally likely.
const UNBIASED_LIMIT: u8 = 252;

/// The 6-character checksum of a token body.
fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes()) % 36u32.pow(CHECKSUM_CHARS as u32);
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE36[(n % 36) as usize];
        n /= 36;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Whether `token` has the token format and a matching checksum (no database lookup).
pub fn is_well_formed(token: &str) -> bool {
    if token.len() != TOKEN_LEN || !token.is_ascii() || !token.starts_with(PREFIX) {
        return false;
    }
    let body = &token[..PREFIX.len() + RANDOM_CHARS];
    let random = &body[PREFIX.len()..];
    random.bytes().all(|b| BASE36.contains(&b)) && checksum(body) == token[body.len()..]
}

/// A new token from the operating system's random source.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut body = String::with_capacity(TOKEN_LEN);
    body.push_str(PREFIX);
    let mut pool = [0u8; 64];
    while body.len() < PREFIX.len() + RANDOM_CHARS {
        getrandom::fill(&mut pool)?;
        for &b in pool.iter().filter(|&&b| b < UNBIASED_LIMIT) {
            if body.len() == PREFIX.len() + RANDOM_CHARS {
                break;
            }
            body.push(BASE36[(b % 36) as usize] as char);
        }
    }
    let sum = checksum(&body);
    body.push_str(&sum);
    Ok(body)
}

/// Whether a token is well formed (prefix, length, alphabet, checksum).
#[pg_extern(immutable, strict, parallel_safe)]
fn token_format_ok(token: &str) -> bool {
    is_well_formed(token)
}

/// `echovalue._token_hash(token)`: the SHA-256 a token is stored and looked up by, or NULL
/// for a malformed token, which then matches no token. (`_wallet_resolve` runs it on every
/// request; as SQL, the format check, `convert_to` and `sha256` were an expression set up
/// again in every transaction.)
#[pg_extern(immutable, strict, parallel_safe, name = "_token_hash")]
fn token_hash(token: &str) -> Option<Vec<u8>> {
    is_well_formed(token).then(|| Sha256::digest(token.as_bytes()).to_vec())
}

/// A new random token; the caller stores only its SHA-256.
#[pg_extern(volatile, parallel_safe, name = "_token_generate")]
fn token_generate() -> String {
    match generate() {
        Ok(token) => token,
        Err(e) => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
                format!("echovalue: operating system random source failed: {e}")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 53);
        assert!(is_well_formed(&a), "{a}");
        assert!(is_well_formed(&b), "{b}");
        assert_ne!(a, b);
    }

    #[test]
    fn checksum_is_zero_padded_base36_of_crc32() {
        let body = format!("{PREFIX}{}", "0".repeat(32));
        let n = crc32fast::hash(body.as_bytes()) % 2_176_782_336;
        let sum = checksum(&body);
        assert_eq!(sum.len(), 6);
        assert_eq!(u32::from_str_radix(&sum, 36).unwrap(), n);
    }

    #[test]
    fn rejects_bad_tokens() {
        let good = generate().unwrap();
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&good[..52]));
        assert!(!is_well_formed(&format!("{good}x")));
        assert!(!is_well_formed(&good.replacen("ev_tok", "ev_tik", 1)));
        assert!(!is_well_formed(&good.to_uppercase()));
        // One changed random character breaks the checksum.
        let mut chars: Vec<char> = good.chars().collect();
        chars[20] = if chars[20] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(!is_well_formed(&typo));
        // Multi-byte input of the right byte length must not panic on slicing.
        assert!(!is_well_formed(&format!(
            "{PREFIX}{}é{}",
            "a".repeat(30),
            "b".repeat(5)
        )));
    }
}
