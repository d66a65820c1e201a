//! C symbols that the SQL of earlier versions names and the current SQL no longer uses.
//!
//! The library is replaced when the package is, before `ALTER EXTENSION echovalue UPDATE`
//! runs; until then the old version's functions call into the new library. And an update from
//! an old version runs each upgrade script in turn against the current library, where
//! `CREATE FUNCTION … LANGUAGE c` checks that its symbol exists (0.2.0→0.3.0 creates
//! `_caller_token` before 0.3.0→0.4.0 drops it). So each such symbol stays, doing what it did
//! for the SQL that calls it (`sql = false`: the current install script has none of them).

use std::ffi::CStr;

use pgrx::prelude::*;

/// `caller_token_wrapper`, the symbol of 0.3.0's `echovalue._caller_token(bigint)`: the
/// non-root token paying for this transaction's charges of `wallet`, read from the setting
/// `echovalue.caller_token` ('<wallet>:<token>') that 0.3.0's `_wallet_resolve` sets, or NULL.
/// 0.4.0 passes the caller as a value and no longer defines the setting, so it is read by name
/// (a placeholder, or unset).
#[pg_extern(sql = false)]
fn caller_token(p_wallet: i64) -> Option<i64> {
    // SAFETY: a valid C string; with missing_ok = true Postgres returns NULL for an unknown
    // setting, and the value lives until the next change of settings, after it is parsed here.
    let value = unsafe { pg_sys::GetConfigOption(c"echovalue.caller_token".as_ptr(), true, false) };
    if value.is_null() {
        return None;
    }
    // SAFETY: non-NULL, so a NUL-terminated string owned by the settings machinery.
    let value = unsafe { CStr::from_ptr(value) }.to_str().ok()?;
    let (wallet, token) = value.split_once(':')?;
    if wallet.parse() != Ok(p_wallet) {
        return None;
    }
    token.parse().ok()
}

/// `token_generate_wrapper`, the symbol of 0.8.0's `echovalue._token_generate()`: a new
/// token of 32 random characters, for 0.8.0's token_new and token_key_create until the update
/// (0.9.0's tokens carry their wallet's key instead, token.rs).
#[pg_extern(sql = false)]
fn token_generate() -> String {
    crate::token::generate_keyless().unwrap_or_else(|e| crate::token::random_failed(e))
}
