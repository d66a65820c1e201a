//! Tokens for the tests: well-formed ones no wallet has, a broken checksum, the hash the API
//! shows. The format itself is `echovalue_common::token`, the check the proxy runs; the
//! tokens the extension issues come from its own copy (extension/src/token.rs), so
//! `is_well_formed` on them still checks one implementation against the other.

use rand::Rng;
use sha2::{Digest, Sha256};

pub use echovalue_common::token::is_well_formed;
use echovalue_common::token::{checksum, ALPHABET, PREFIX, RANDOM_LEN};

/// A well-formed token (valid checksum) that no wallet has: passes the proxy's format check
/// and must be refused by the database lookup.
pub fn random_unknown() -> String {
    let mut rng = rand::rng();
    let body: String = (0..RANDOM_LEN)
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
