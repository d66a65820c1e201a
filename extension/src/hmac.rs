//! HMAC-SHA256 for the signed attachment download URLs (`_attachment_sig` in delivery.sql):
//! Postgres core has SHA-256 but no HMAC (short of pgcrypto), so the `hmac` crate does it.

use hmac::{Hmac, KeyInit, Mac};
use pgrx::prelude::*;
use sha2::Sha256;

/// HMAC-SHA256 of `message` under `key` (RFC 2104).
#[pg_extern(immutable, strict, parallel_safe, name = "_hmac_sha256")]
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length, so new_from_slice cannot fail here.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "echovalue: HMAC-SHA256 refused its key"
        );
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}
