//! Random bytes from the operating system for the secrets SQL makes (mailbox ids, webhook
//! signing secrets): Postgres core has no CSPRNG function short of pgcrypto, and
//! `gen_random_uuid` carries fixed version bits.

use pgrx::prelude::*;

/// Most bytes one call may ask for; secrets are tens of bytes.
const MAX_BYTES: i32 = 1024;

/// `n` random bytes (1 to 1024) from the operating system's random source.
#[pg_extern(volatile, parallel_safe, name = "_random_bytes")]
fn random_bytes(n: i32) -> Vec<u8> {
    if !(1..=MAX_BYTES).contains(&n) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("echovalue: _random_bytes takes 1 to {MAX_BYTES} bytes, not {n}")
        );
    }
    let mut out = vec![0u8; n as usize];
    if let Err(e) = getrandom::fill(&mut out) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
            format!("echovalue: operating system random source failed: {e}")
        );
    }
    out
}
