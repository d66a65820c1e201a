//! `echovalue`: a Postgres extension that holds all state and every rule of the echoValue
//! service (wallets, tokens with spending limits, TTL key-value, request logs, pricing,
//! Mail2Webhook, Stripe recharges, maintenance).
//!
//! Layout: the business rules are plpgsql in `src/sql/*.sql`, pulled into the install script
//! by [`extension_sql_file!`] in dependency order (tables first, grants last). Rust holds only
//! what SQL cannot do well: the token format with its checksum and hash (`token.rs`), random
//! bytes for secrets (`random.rs`), the settings (`gucs.rs`, registered when the library
//! loads), the maintenance background worker (`worker.rs`, registered only when the library is
//! in `shared_preload_libraries`), the small checks every request makes (`names.rs`,
//! the KV listing's cursors, `listing.rs`,
//! `_setting`: plpgsql sets each of its expressions up again in every transaction, which costs
//! more than these checks themselves), the webhook body formats and the custom template engine
//! (`format.rs`, `template.rs`), the text of wallet alerts (`alert.rs`), and the C symbols that the scripts of earlier versions name
//! (`compat.rs`).

use pgrx::prelude::*;

mod alert;
mod compat;
mod format;
mod gucs;
mod hmac;
mod listing;
mod names;
mod random;
mod schedule;
mod template;
mod token;
mod worker;

::pgrx::pg_module_magic!(name, version);

/// Registers the settings; when preloaded, also the worker and its postmaster-level settings
/// (Postgres forbids defining those after startup).
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    // SAFETY: a plain global flag set by the postmaster while it loads preload libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        gucs::init_worker();
        worker::register();
    }
}

extension_sql_file!("sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!(
    "sql/internals.sql",
    name = "internals",
    requires = ["schema"]
);
extension_sql_file!("sql/limits.sql", name = "limits", requires = ["internals"]);
extension_sql_file!(
    "sql/token.sql",
    name = "token_api",
    requires = ["internals"]
);
extension_sql_file!("sql/kv.sql", name = "kv_api", requires = ["internals"]);
extension_sql_file!(
    "sql/kv_list.sql",
    name = "kv_list_api",
    requires = [
        "kv_api",
        listing::cursor_sql,
        listing::cursor_after_sql,
        listing::prefix_end_sql
    ]
);
extension_sql_file!("sql/keys.sql", name = "keys_api", requires = ["internals"]);
extension_sql_file!("sql/logs.sql", name = "logs_api", requires = ["internals"]);
extension_sql_file!(
    "sql/recharge.sql",
    name = "recharge_api",
    requires = ["internals"]
);
extension_sql_file!(
    "sql/stripe.sql",
    name = "stripe_api",
    requires = ["internals"]
);
extension_sql_file!(
    "sql/refuse.sql",
    name = "refuse_api",
    requires = ["internals"]
);
extension_sql_file!(
    "sql/webhook.sql",
    name = "webhook_rules",
    requires = ["internals", random::random_bytes, token::wallet_key_text]
);
extension_sql_file!(
    "sql/webhook_fields.sql",
    name = "webhook_fields",
    requires = [
        "webhook_rules",
        format::template_error_sql,
        schedule::schedule_error,
        schedule::schedule_next
    ]
);
extension_sql_file!(
    "sql/webhook_api.sql",
    name = "webhook_api",
    requires = ["webhook_fields"]
);
extension_sql_file!(
    "sql/mail.sql",
    name = "mail_api",
    requires = ["webhook_api"]
);
extension_sql_file!(
    "sql/delivery.sql",
    name = "delivery_api",
    requires = [
        "mail_api",
        random::random_bytes,
        hmac::hmac_sha256,
        format::body_sql
    ]
);
extension_sql_file!(
    "sql/delivery_claim.sql",
    name = "delivery_claim_api",
    requires = ["delivery_api"]
);
extension_sql_file!(
    "sql/schedule.sql",
    name = "schedule_api",
    requires = [
        "delivery_claim_api",
        schedule::schedule_next,
        schedule::schedule_latest
    ]
);
extension_sql_file!(
    "sql/webhook_test.sql",
    name = "webhook_test_api",
    requires = ["schedule_api"]
);
extension_sql_file!(
    "sql/settings.sql",
    name = "settings_api",
    requires = ["webhook_test_api", format::body_sql, alert::alert_email_sql]
);
extension_sql_file!(
    "sql/restore.sql",
    name = "restore",
    requires = ["settings_api", "delivery_api"]
);
extension_sql_file!(
    "sql/maintenance.sql",
    name = "maintenance_api",
    requires = ["internals", "mail_api"]
);
extension_sql_file!(
    "sql/distribute.sql",
    name = "distribute",
    requires = ["maintenance_api"]
);
extension_sql_file!("sql/grants.sql", name = "grants", finalize);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
