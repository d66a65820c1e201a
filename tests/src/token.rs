//! The token format and hash of SPEC section 9, written again here from the contract so
//! the tests do not trust the implementation they check.

use rand::Rng;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "ev_tok_sk_live_";
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const BODY_LEN: usize = 32;
const CHECK_LEN: usize = 6;
pub const TOKEN_LEN: usize = PREFIX.len() + BODY_LEN + CHECK_LEN;

/// CRC-32 of everything before the checksum, mod 36^6, base36, zero-padded.
pub fn checksum(head: &str) -> String {
    let mut n = u64::from(crc32fast::hash(head.as_bytes())) % 36u64.pow(CHECK_LEN as u32);
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when `token` has the prefix, 32 base36 characters and the right checksum.
pub fn format_ok(token: &str) -> bool {
    if token.len() != TOKEN_LEN || !token.starts_with(PREFIX) {
        return false;
    }
    let (head, check) = token.split_at(PREFIX.len() + BODY_LEN);
    let body = &head[PREFIX.len()..];
    let base36 = |s: &str| s.bytes().all(|b| ALPHABET.contains(&b));
    base36(body) && base36(check) && checksum(head) == check
}

/// A well-formed token (valid checksum) that no wallet has: passes the proxy's format check
/// and must be refused by the database lookup.
pub fn random_unknown() -> String {
    let mut rng = rand::rng();
    let body: String = (0..BODY_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    let head = format!("{PREFIX}{body}");
    let check = checksum(&head);
    format!("{head}{check}")
}

/// The same token with its last checksum character changed.
pub fn with_bad_checksum(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last = if *last == b'0' { b'1' } else { b'0' };
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Lowercase hex SHA-256, the `hash` the API shows instead of the token.
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random private IPv4 address, so each test's token creation has its own rate-limit slot.
pub fn random_client_addr() -> String {
    let mut rng = rand::rng();
    format!(
        "10.{}.{}.{}",
        rng.random_range(0..=255u8),
        rng.random_range(0..=255u8),
        rng.random_range(1..=254u8)
    )
}
