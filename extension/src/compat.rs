//! C symbols that the scripts of earlier versions name and the current SQL no longer uses.
//!
//! `CREATE FUNCTION … LANGUAGE c` checks that its symbol is in the library, and an update from
//! an old version runs every upgrade script in turn against the current library: 0.2.0→0.3.0
//! creates `_caller_token` before 0.3.0→0.4.0 drops it. So the library keeps each such symbol,
//! as a function that only refuses to run (`sql = false`: the current install script has none).

use pgrx::prelude::*;

/// `caller_token_wrapper`, the symbol of 0.3.0's `echovalue._caller_token(bigint)` (the
/// request state read back from a setting); 0.4.0 passes the caller as a value instead.
#[pg_extern(sql = false)]
fn caller_token(_p_wallet: i64) -> Option<i64> {
    error!("echovalue: _caller_token was removed in 0.4.0; run ALTER EXTENSION echovalue UPDATE")
}
