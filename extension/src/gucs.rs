//! Every in-database tunable of echovalue, under the `echovalue.` prefix.
//!
//! The SQL functions read them with `current_setting('echovalue.x')::int`, so none has a unit
//! (a unit would make `current_setting` print `10s`). All are `SUSET` or stricter: the proxy's
//! role must not be able to raise its own limits with `SET`.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

pub static START_CREDITS: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static TOKEN_RATE_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static TOKEN_RATE_IPV4_PREFIX: GucSetting<i32> = GucSetting::<i32>::new(32);
pub static TOKEN_RATE_IPV6_PREFIX: GucSetting<i32> = GucSetting::<i32>::new(64);
pub static MAX_NAME_CHARS: GucSetting<i32> = GucSetting::<i32>::new(30);
pub static MAX_VALUE_CHARS: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static MAX_TTL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(2_592_000);
pub static LOGS_DEFAULT_N: GucSetting<i32> = GucSetting::<i32>::new(5);
pub static LOGS_MAX_N: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static KV_LIST_DEFAULT_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static KV_LIST_MAX_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static LOG_RETENTION_DAYS: GucSetting<i32> = GucSetting::<i32>::new(7);
pub static LOG_MAX_PATH_CHARS: GucSetting<i32> = GucSetting::<i32>::new(1024);
pub static REFUSAL_LOGS_PER_MINUTE: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static INACTIVE_DAYS: GucSetting<i32> = GucSetting::<i32>::new(730);
pub static MAINTENANCE_BATCH: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static MAINTENANCE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(60);
pub static MAX_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static REVOKED_TOKEN_DAYS: GucSetting<i32> = GucSetting::<i32>::new(30);
pub static WEBHOOK_MAX_URL_CHARS: GucSetting<i32> = GucSetting::<i32>::new(2048);
pub static WEBHOOK_MAX_HEADERS: GucSetting<i32> = GucSetting::<i32>::new(20);
pub static MAX_WEBHOOKS: GucSetting<i32> = GucSetting::<i32>::new(20);
pub static WEBHOOK_MAX_HEADER_VALUE_CHARS: GucSetting<i32> = GucSetting::<i32>::new(1024);
pub static WEBHOOK_ALLOW_INSECURE: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static MAIL_DOMAIN: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"localhost"));
pub static ATTACHMENT_RETENTION_HOURS: GucSetting<i32> = GucSetting::<i32>::new(48);
pub static MESSAGE_RETENTION_HOURS: GucSetting<i32> = GucSetting::<i32>::new(72);
pub static ATTACHMENT_URL_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(3600);
pub static MAIL_QUOTA_MB: GucSetting<i32> = GucSetting::<i32>::new(512);
pub static PUBLIC_URL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"http://127.0.0.1:8080"));
pub static MAINTENANCE_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// Longest TTL accepted as a setting: ten years, and below 10^9 so a 9-digit check in SQL
/// can reject longer strings without overflowing `int`.
const TTL_CEILING: i32 = 315_360_000;

/// An integer setting of the SQL functions: `SUSET`, no unit.
struct IntSetting {
    /// The full name, `echovalue.<name>`.
    name: &'static CStr,
    why: &'static CStr,
    setting: &'static GucSetting<i32>,
    min: i32,
    max: i32,
}

/// Every integer setting the SQL functions read: [`init`] defines them, `_setting` reads them.
static INT_SETTINGS: [IntSetting; 26] = [
    // Free credits of a new wallet: enough to try every endpoint (seed 002).
    IntSetting {
        name: c"echovalue.start_credits",
        why: c"Credits a new wallet starts with.",
        setting: &START_CREDITS,
        min: 0,
        max: i32::MAX,
    },
    // Stops wallet farming for free credits; per client address, enforced in the database.
    IntSetting {
        name: c"echovalue.token_rate_seconds",
        why: c"Minimum seconds between two token creations from one client address.",
        setting: &TOKEN_RATE_SECONDS,
        min: 0,
        max: 86_400,
    },
    // Group and key names are path segments: keep them short.
    IntSetting {
        name: c"echovalue.max_name_chars",
        why: c"Maximum characters of a key-value group or key name.",
        setting: &MAX_NAME_CHARS,
        min: 1,
        max: 1000,
    },
    // The store is for small values, not files.
    IntSetting {
        name: c"echovalue.max_value_chars",
        why: c"Maximum characters of a stored value.",
        setting: &MAX_VALUE_CHARS,
        min: 0,
        max: 1_000_000,
    },
    // Also the TTL when none is given, so nothing lives forever.
    IntSetting {
        name: c"echovalue.max_ttl_seconds",
        why: c"Maximum and default time-to-live of a key, in seconds.",
        setting: &MAX_TTL_SECONDS,
        min: 1,
        max: TTL_CEILING,
    },
    // A logs request without n returns a few entries, not a costly page.
    IntSetting {
        name: c"echovalue.logs_default_n",
        why: c"Entries a logs request returns when n is not given.",
        setting: &LOGS_DEFAULT_N,
        min: 1,
        max: 10_000,
    },
    // Bounds the work and the body of one logs request.
    IntSetting {
        name: c"echovalue.logs_max_n",
        why: c"Most entries one logs request returns; larger n is cut to this.",
        setting: &LOGS_MAX_N,
        min: 1,
        max: 10_000,
    },
    // A KV listing page costs O(limit): these bound the work and the body of one page.
    IntSetting {
        name: c"echovalue.kv_list_default_limit",
        why: c"Keys or groups a KV listing page holds when limit is not given.",
        setting: &KV_LIST_DEFAULT_LIMIT,
        min: 1,
        max: 10_000,
    },
    IntSetting {
        name: c"echovalue.kv_list_max_limit",
        why: c"Most keys or groups one KV listing page may hold; a larger limit is refused.",
        setting: &KV_LIST_MAX_LIMIT,
        min: 1,
        max: 10_000,
    },
    // Logs are for debugging recent calls; old ones are purged by maintenance.
    IntSetting {
        name: c"echovalue.log_retention_days",
        why: c"Days a request log entry is kept.",
        setting: &LOG_RETENTION_DAYS,
        min: 1,
        max: 3650,
    },
    // One creation per address and period: an IPv6 client usually has a whole /64, so it
    // counts as one address; IPv4 addresses count one by one.
    IntSetting {
        name: c"echovalue.token_rate_ipv4_prefix",
        why: c"IPv4 addresses in one network of this prefix length share one token creation rate limit.",
        setting: &TOKEN_RATE_IPV4_PREFIX,
        min: 8,
        max: 32,
    },
    IntSetting {
        name: c"echovalue.token_rate_ipv6_prefix",
        why: c"IPv6 addresses in one network of this prefix length share one token creation rate limit.",
        setting: &TOKEN_RATE_IPV6_PREFIX,
        min: 16,
        max: 128,
    },
    // A path is logged as sent, up to the proxy's header limit; a log row stays small.
    IntSetting {
        name: c"echovalue.log_max_path_chars",
        why: c"Longest request path a log entry keeps; a longer one is cut.",
        setting: &LOG_MAX_PATH_CHARS,
        min: 16,
        max: 65_536,
    },
    // Refusals that cost nothing (a 402, a free operation's error) are logged, but not at any
    // rate: a client could otherwise fill the logs for free.
    IntSetting {
        name: c"echovalue.refusal_logs_per_minute",
        why: c"Log entries a wallet gets per minute for refusals that charge nothing; more are not logged.",
        setting: &REFUSAL_LOGS_PER_MINUTE,
        min: 0,
        max: 1_000_000,
    },
    // Abandoned wallets and their data are deleted (seed 002: two years).
    IntSetting {
        name: c"echovalue.inactive_days",
        why: c"Days without a request after which a wallet and all its data are deleted.",
        setting: &INACTIVE_DAYS,
        min: 1,
        max: 36_500,
    },
    // Keeps each purge transaction short so it never holds many row locks.
    IntSetting {
        name: c"echovalue.maintenance_batch",
        why: c"Rows purged per table per maintenance transaction.",
        setting: &MAINTENANCE_BATCH,
        min: 1,
        max: 1_000_000,
    },
    // Each token is a credential to audit; a wallet needs a handful, not thousands.
    IntSetting {
        name: c"echovalue.max_tokens",
        why: c"Most live (not revoked) tokens a wallet may have, its root token included.",
        setting: &MAX_TOKENS,
        min: 1,
        max: 100_000,
    },
    // Revoked tokens stay listed for a while so their owner sees what was revoked and when.
    IntSetting {
        name: c"echovalue.revoked_token_days",
        why: c"Days a revoked token stays listed before maintenance deletes it.",
        setting: &REVOKED_TOKEN_DAYS,
        min: 1,
        max: 3650,
    },
    // Browsers and servers commonly cap URLs near 2 KiB; longer ones are abuse, not webhooks.
    IntSetting {
        name: c"echovalue.webhook_max_url_chars",
        why: c"Maximum characters of a webhook URL.",
        setting: &WEBHOOK_MAX_URL_CHARS,
        min: 16,
        max: 65_536,
    },
    // Custom headers are for an auth header or two; each one is sent with every delivery.
    IntSetting {
        name: c"echovalue.webhook_max_headers",
        why: c"Maximum number of custom headers of a webhook.",
        setting: &WEBHOOK_MAX_HEADERS,
        min: 0,
        max: 100,
    },
    // A webhook per destination (a Slack channel, a pager, a CI hook), not one per message.
    IntSetting {
        name: c"echovalue.max_webhooks",
        why: c"Maximum number of webhooks of a wallet.",
        setting: &MAX_WEBHOOKS,
        min: 1,
        max: 1000,
    },
    // Bounds what every delivery carries; a bearer token or API key fits easily.
    IntSetting {
        name: c"echovalue.webhook_max_header_value_chars",
        why: c"Maximum characters of one custom webhook header value.",
        setting: &WEBHOOK_MAX_HEADER_VALUE_CHARS,
        min: 1,
        max: 8192,
    },
    // Attachments are downloaded by the webhook receiver soon after delivery; keeping them
    // longer than the retry window only costs space.
    IntSetting {
        name: c"echovalue.attachment_retention_hours",
        why: c"Hours a received attachment is kept before maintenance purges it.",
        setting: &ATTACHMENT_RETENTION_HOURS,
        min: 1,
        max: 87_600,
    },
    // A message (and its delivery row) is kept past the ~1 day retry window so its log
    // entries can be matched with it; only finished deliveries are purged.
    IntSetting {
        name: c"echovalue.message_retention_hours",
        why: c"Hours a received message with a finished delivery is kept before maintenance purges it.",
        setting: &MESSAGE_RETENTION_HOURS,
        min: 1,
        max: 87_600,
    },
    // Download URLs in a payload are bearer credentials: short-lived (seed 002: 1 hour).
    IntSetting {
        name: c"echovalue.attachment_url_seconds",
        why: c"Seconds an attachment download URL in a webhook payload stays valid.",
        setting: &ATTACHMENT_URL_SECONDS,
        min: 60,
        max: 604_800,
    },
    // Stored mail is the one thing a stranger can make a wallet keep (anyone may send to its
    // address): bounded per wallet, so one mailbox cannot fill the database.
    IntSetting {
        name: c"echovalue.mail_quota_mb",
        why: c"MiB of received mail (raw size) a wallet may have stored; more is refused with 452 until maintenance purges old mail. 0: no quota.",
        setting: &MAIL_QUOTA_MB,
        min: 0,
        max: 1_048_576,
    },
];

/// Settings read by the SQL functions; safe to define whenever the library loads.
pub fn init() {
    for s in &INT_SETTINGS {
        GucRegistry::define_int_guc(
            s.name,
            s.why,
            c"",
            s.setting,
            s.min,
            s.max,
            GucContext::Suset,
            GucFlags::default(),
        );
    }
    webhook_and_mail();
}

/// The other settings of Mail2Webhook: insecure webhooks for tests, the inbound mail domain and
/// the public URL (its bounds and retentions are in [`INT_SETTINGS`]).
fn webhook_and_mail() {
    // Off in production: webhooks must be HTTPS on a public address. Test set-ups turn it on
    // to deliver to a receiver on this machine; superuser-only so no API caller can flip it.
    GucRegistry::define_bool_guc(
        c"echovalue.webhook_allow_insecure",
        c"Allow plain http and loopback webhook URLs (local testing only).",
        c"",
        &WEBHOOK_ALLOW_INSECURE,
        GucContext::Suset,
        GucFlags::default(),
    );
    // The domain of every wallet's inbound address (<mailbox>@<domain>); RCPT checks compare
    // against it, so it must be the domain whose MX points at the mailhook.
    GucRegistry::define_string_guc(
        c"echovalue.mail_domain",
        c"Domain of the inbound Mail2Webhook addresses.",
        c"",
        &MAIL_DOMAIN,
        GucContext::Suset,
        GucFlags::default(),
    );
    // Payloads carry absolute download URLs; the database cannot know how the proxy is reached.
    GucRegistry::define_string_guc(
        c"echovalue.public_url",
        c"Public base URL of the proxy, used in attachment download URLs.",
        c"",
        &PUBLIC_URL,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// Settings of the background worker; only definable while preloading.
pub fn init_worker() {
    // The worker connects once, at start; one database per cluster holds echovalue.
    GucRegistry::define_string_guc(
        c"echovalue.maintenance_database",
        c"Database the maintenance worker connects to.",
        c"",
        &MAINTENANCE_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    // Purges are cheap and bounded, so a minute keeps expired data short-lived.
    GucRegistry::define_int_guc(
        c"echovalue.maintenance_interval",
        c"Seconds between two maintenance runs of the background worker.",
        c"",
        &MAINTENANCE_INTERVAL,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

/// The database the worker should connect to, as UTF-8.
pub fn maintenance_database() -> String {
    MAINTENANCE_DATABASE
        .get()
        .and_then(|s| s.into_string().ok())
        .unwrap_or_else(|| "postgres".to_owned())
}

/// The integer setting `echovalue.<name>` of [`INT_SETTINGS`].
fn int_setting(name: &str) -> Option<&'static GucSetting<i32>> {
    INT_SETTINGS
        .iter()
        .find(|s| s.name.to_bytes().strip_prefix(b"echovalue.") == Some(name.as_bytes()))
        .map(|s| s.setting)
}

/// `echovalue._setting(name)`: the integer setting `echovalue.<name>`, for the SQL functions.
/// A C function, so calling it loads the library and the setting is always defined; and it is
/// cheap enough for every request (it replaced a plpgsql helper on the request path). The
/// settings defined in [`init`] are read from their variables, which Postgres keeps current
/// (`SET`, `set_config`, reloads); any other name through Postgres's own look-up, which raises
/// an error for an unknown one.
#[pg_extern(stable, parallel_safe, name = "_setting")]
fn setting(p_name: &str) -> i32 {
    if let Some(s) = int_setting(p_name) {
        return s.get();
    }
    let Ok(name) = CString::new(format!("echovalue.{p_name}")) else {
        error!("echovalue: setting name {p_name:?} holds a NUL character");
    };
    // SAFETY: `name` is a valid C string; with missing_ok = false Postgres raises an ERROR
    // (never returns NULL) for an unknown setting, and the result lives until the next GUC
    // change, which cannot happen before it is parsed here.
    let value = unsafe { CStr::from_ptr(pg_sys::GetConfigOption(name.as_ptr(), false, false)) };
    match value.to_str().ok().and_then(|v| v.parse::<i32>().ok()) {
        Some(v) => v,
        None => error!("echovalue: setting echovalue.{p_name} is not an integer"),
    }
}
