//! The two connection strings the tests need, with a message that says how to get them.

use anyhow::{bail, Result};

/// Superuser connection to a database with the extension installed.
pub const ADMIN_URL: &str = "ECHOVALUE_TEST_ADMIN_URL";
/// Connection as `echovalue_proxy`, a member of `echovalue_api`.
pub const PROXY_URL: &str = "ECHOVALUE_TEST_PROXY_URL";
/// Connection as `echovalue_mailhook`, a member of `echovalue_worker`.
pub const MAILHOOK_URL: &str = "ECHOVALUE_TEST_MAILHOOK_URL";
/// The built `echovalue-mailhook` binary (tests that kill the worker process run it).
pub const MAILHOOK_BIN: &str = "ECHOVALUE_TEST_MAILHOOK_BIN";

fn read(name: &str) -> Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => bail!(
            "{name} is not set: these tests need a Postgres cluster with the echovalue \
             extension; run them with `bash tests/run.sh` (it starts a throwaway cluster \
             and exports {ADMIN_URL}, {PROXY_URL}, {MAILHOOK_URL} and {MAILHOOK_BIN})"
        ),
    }
}

pub fn admin_url() -> Result<String> {
    read(ADMIN_URL)
}

pub fn proxy_url() -> Result<String> {
    read(PROXY_URL)
}

pub fn mailhook_url() -> Result<String> {
    read(MAILHOOK_URL)
}

pub fn mailhook_bin() -> Result<String> {
    read(MAILHOOK_BIN)
}
