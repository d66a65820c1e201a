//! Every process setting of the proxy, read from flags and `ECHOVALUE_*` environment variables.

use std::fmt;
use std::net::SocketAddr;

use clap::{ArgAction, Parser};
use echovalue_common::redact::redact_password;

use crate::client::TrustedProxies;
use crate::limits::Limits;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DATABASE_URL: &str = "host=/var/run/postgresql user=echovalue_proxy dbname=postgres";
const DEFAULT_POOL_SIZE: usize = 16;
const DEFAULT_DB_TIMEOUT_SECS: u64 = 5;
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
// hyper refuses a read buffer below 8 KiB, so this is also the floor we accept.
const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
const DEFAULT_READ_TIMEOUT_SECS: u64 = 30;
const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
// The mailhook's delivery timeout (10 s) plus time for a worker to claim the test.
const DEFAULT_WEBHOOK_TEST_WAIT_SECS: u64 = 12;
const DEFAULT_LOG: &str = "info";
const DEFAULT_STRIPE_WEBHOOK_PATH: &str = "/stripe/webhook";
const DEFAULT_BATCH_MAX: usize = 64;
const MAX_BATCH_MAX: usize = 1000;

/// Settings of one proxy process. Tests build one with `Config::default()` and override fields.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "echovalue-proxy",
    version,
    about = "HTTP front for the echovalue Postgres extension"
)]
pub struct Config {
    /// Address to listen on (used by the binary; `run` takes an already bound listener).
    #[arg(long, env = "ECHOVALUE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// libpq key=value string or postgres:// URL; the role must be a member of echovalue_api.
    #[arg(long, env = "ECHOVALUE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// Maximum number of pooled database connections.
    #[arg(long, env = "ECHOVALUE_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE,
          value_parser = clap::value_parser!(usize))]
    pub pool_size: usize,

    /// Most queued calls run together in one transaction (group commit); 1 turns batching
    /// off.
    #[arg(long, env = "ECHOVALUE_BATCH_MAX", default_value_t = DEFAULT_BATCH_MAX,
          value_parser = parse_batch_max)]
    pub batch_max: usize,

    /// Transactions of token calls in the database at once (default: this machine's cores, at
    /// least 2, at most the pool size). Calls that find every slot taken wait, and run together
    /// in the next slot to come free (group commit).
    #[arg(long, env = "ECHOVALUE_BATCH_SLOTS", value_parser = clap::value_parser!(usize))]
    pub batch_slots: Option<usize>,

    /// Seconds to wait for a pooled connection (or to open one) before answering 503.
    #[arg(long, env = "ECHOVALUE_DB_TIMEOUT_SECS", default_value_t = DEFAULT_DB_TIMEOUT_SECS)]
    pub db_timeout_secs: u64,

    /// The proxies in front that may be believed about the client's address, from
    /// X-Forwarded-For: a hop count (each appends the address it saw; the client is that many
    /// entries from the right) or a comma list of their addresses and CIDR networks.
    /// Empty or 0: the socket peer is the client.
    #[arg(long, env = "ECHOVALUE_TRUSTED_PROXIES", default_value = "0")]
    pub trusted_proxies: TrustedProxies,

    /// Before ECHOVALUE_TRUSTED_PROXIES: `true` is one trusted hop (the right-most entry, no
    /// longer the left-most, which the client controls).
    #[arg(long, env = "ECHOVALUE_TRUST_FORWARDED", action = ArgAction::Set,
          default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub trust_forwarded: bool,

    /// Largest request body accepted; above it the answer is 413.
    #[arg(long, env = "ECHOVALUE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Largest request head (request line + headers) accepted; at least 8192.
    #[arg(long, env = "ECHOVALUE_MAX_HEADER_BYTES", default_value_t = DEFAULT_MAX_HEADER_BYTES,
          value_parser = parse_header_bytes)]
    pub max_header_bytes: usize,

    /// Seconds a client may take to send its headers, and then its body, so slow clients cannot pin connections.
    #[arg(long, env = "ECHOVALUE_READ_TIMEOUT_SECS", default_value_t = DEFAULT_READ_TIMEOUT_SECS)]
    pub read_timeout_secs: u64,

    /// Seconds a webhook test call waits for the worker's answer before it fails (`POST /webhook/{id}/test`).
    #[arg(long, env = "ECHOVALUE_WEBHOOK_TEST_WAIT_SECS", default_value_t = DEFAULT_WEBHOOK_TEST_WAIT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=120))]
    pub webhook_test_wait_secs: u64,

    /// Seconds in-flight requests may take to finish after a shutdown signal.
    #[arg(long, env = "ECHOVALUE_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// Path of the Stripe webhook endpoint (point the Stripe dashboard at `https://<host><path>`).
    #[arg(long, env = "ECHOVALUE_STRIPE_WEBHOOK_PATH", default_value = DEFAULT_STRIPE_WEBHOOK_PATH,
          value_parser = parse_webhook_path)]
    pub stripe_webhook_path: String,

    /// Signing secret of the Stripe webhook endpoint (`whsec_…`); unset, the endpoint answers 503.
    #[arg(long, env = "ECHOVALUE_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<Secret>,

    /// tracing-subscriber filter, e.g. `info` or `echovalue_proxy=debug`.
    #[arg(long, env = "ECHOVALUE_LOG", default_value = DEFAULT_LOG)]
    pub log: String,

    /// Connections, idle time, queues and statement time (the "Limits and abuse" settings).
    #[command(flatten)]
    pub limits: Limits,

    /// Print the effective configuration (password redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// A secret setting: its `Debug` never shows the value, so logging a `Config` cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Secret(s.to_owned()))
    }
}

/// A webhook path is an absolute path without query, so it can be compared with the request's.
fn parse_webhook_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s.contains(['?', '#']) || s.chars().any(char::is_whitespace) {
        return Err("must be an absolute path like /stripe/webhook, without query".into());
    }
    Ok(s.to_owned())
}

fn parse_batch_max(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if !(1..=MAX_BATCH_MAX).contains(&n) {
        return Err(format!("must be 1 (off) to {MAX_BATCH_MAX}"));
    }
    Ok(n)
}

fn parse_header_bytes(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n < 8192 {
        return Err("must be at least 8192".into());
    }
    Ok(n)
}

impl Config {
    /// The trusted proxies, ECHOVALUE_TRUST_FORWARDED=true counting as one hop.
    pub fn trusted(&self) -> TrustedProxies {
        match (&self.trusted_proxies, self.trust_forwarded) {
            (TrustedProxies::None, true) => TrustedProxies::Hops(1),
            (t, _) => t.clone(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            batch_max: DEFAULT_BATCH_MAX,
            batch_slots: None,
            db_timeout_secs: DEFAULT_DB_TIMEOUT_SECS,
            trusted_proxies: TrustedProxies::None,
            trust_forwarded: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            read_timeout_secs: DEFAULT_READ_TIMEOUT_SECS,
            webhook_test_wait_secs: DEFAULT_WEBHOOK_TEST_WAIT_SECS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            stripe_webhook_path: DEFAULT_STRIPE_WEBHOOK_PATH.to_owned(),
            stripe_webhook_secret: None,
            log: DEFAULT_LOG.to_owned(),
            limits: Limits::default(),
            print_config: false,
        }
    }
}

impl Config {
    /// `ECHOVALUE_BATCH_SLOTS`, or its default: the cores of this machine (at least 2), which
    /// is the database's when it runs here; never more than the pool, never 0.
    pub fn batch_slots(&self) -> usize {
        let cores = || {
            std::thread::available_parallelism()
                .map_or(2, std::num::NonZero::get)
                .max(2)
        };
        self.batch_slots
            .unwrap_or_else(cores)
            .clamp(1, self.pool_size.max(1))
    }
}

/// `--print-config` output: one `ECHOVALUE_*=value` line per setting, ready for an env file.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ECHOVALUE_LISTEN={}", self.listen)?;
        writeln!(
            f,
            "ECHOVALUE_DATABASE_URL={}",
            redact_password(&self.database_url)
        )?;
        writeln!(f, "ECHOVALUE_POOL_SIZE={}", self.pool_size)?;
        writeln!(f, "ECHOVALUE_BATCH_MAX={}", self.batch_max)?;
        writeln!(f, "ECHOVALUE_BATCH_SLOTS={}", self.batch_slots())?;
        writeln!(f, "ECHOVALUE_DB_TIMEOUT_SECS={}", self.db_timeout_secs)?;
        writeln!(f, "ECHOVALUE_TRUSTED_PROXIES={}", self.trusted())?;
        writeln!(f, "ECHOVALUE_MAX_BODY_BYTES={}", self.max_body_bytes)?;
        writeln!(f, "ECHOVALUE_MAX_HEADER_BYTES={}", self.max_header_bytes)?;
        writeln!(f, "ECHOVALUE_READ_TIMEOUT_SECS={}", self.read_timeout_secs)?;
        writeln!(
            f,
            "ECHOVALUE_WEBHOOK_TEST_WAIT_SECS={}",
            self.webhook_test_wait_secs
        )?;
        writeln!(
            f,
            "ECHOVALUE_SHUTDOWN_GRACE_SECS={}",
            self.shutdown_grace_secs
        )?;
        writeln!(
            f,
            "ECHOVALUE_STRIPE_WEBHOOK_PATH={}",
            self.stripe_webhook_path
        )?;
        // Whether it is set, never what it is.
        writeln!(
            f,
            "ECHOVALUE_STRIPE_WEBHOOK_SECRET={}",
            if self.stripe_webhook_secret.is_some() {
                "***"
            } else {
                ""
            }
        )?;
        write!(f, "{}", self.limits)?;
        writeln!(f, "ECHOVALUE_LOG={}", self.log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_clap_defaults() {
        // Env vars would leak in here; the test environment does not set ECHOVALUE_*.
        let parsed = Config::try_parse_from(["echovalue-proxy"]).unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(parsed.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(parsed.max_body_bytes, 65536);
    }

    #[test]
    fn batch_slots_default_to_the_cores_within_the_pool() {
        let mut c = Config::default();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        assert_eq!(c.batch_slots(), cores.clamp(2, c.pool_size));
        c.pool_size = 1;
        assert_eq!(c.batch_slots(), 1);
        c.pool_size = 8;
        c.batch_slots = Some(3);
        assert_eq!(c.batch_slots(), 3);
        c.batch_slots = Some(50);
        assert_eq!(c.batch_slots(), 8);
        c.batch_slots = Some(0);
        assert_eq!(c.batch_slots(), 1);
    }

    #[test]
    fn flags_override() {
        let c = Config::try_parse_from([
            "echovalue-proxy",
            "--listen",
            "0.0.0.0:9000",
            "--pool-size",
            "4",
            "--trust-forwarded",
            "--max-body-bytes",
            "10",
            "--shutdown-grace-secs",
            "1",
            "--batch-max",
            "1",
        ])
        .unwrap();
        assert_eq!(c.batch_max, 1);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.pool_size, 4);
        assert!(c.trust_forwarded);
        assert_eq!(c.max_body_bytes, 10);
        assert_eq!(c.shutdown_grace_secs, 1);
        let c = Config::try_parse_from(["echovalue-proxy", "--trust-forwarded", "false"]).unwrap();
        assert!(!c.trust_forwarded);
        assert_eq!(c.trusted(), TrustedProxies::None);
        // the old switch is one hop; the new setting wins over it
        let c = Config::try_parse_from(["x", "--trust-forwarded"]).unwrap();
        assert_eq!(c.trusted(), TrustedProxies::Hops(1));
        let c =
            Config::try_parse_from(["x", "--trust-forwarded", "--trusted-proxies", "10.0.0.0/8"])
                .unwrap();
        assert_eq!(c.trusted().to_string(), "10.0.0.0/8");
        assert!(Config::try_parse_from(["x", "--trusted-proxies", "nope"]).is_err());
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Config::try_parse_from(["x", "--listen", "nope"]).is_err());
        assert!(Config::try_parse_from(["x", "--max-header-bytes", "100"]).is_err());
        assert!(Config::try_parse_from(["x", "--pool-size", "-1"]).is_err());
        assert!(Config::try_parse_from(["x", "--batch-max", "0"]).is_err());
        assert!(Config::try_parse_from(["x", "--batch-max", "1001"]).is_err());
    }

    #[test]
    fn print_config_redacts_password() {
        let c = Config {
            database_url: "host=/tmp user=u password=s3cret dbname=postgres".into(),
            ..Config::default()
        };
        let printed = c.to_string();
        assert!(!printed.contains("s3cret"));
        assert!(printed
            .contains("ECHOVALUE_DATABASE_URL=host=/tmp user=u password=*** dbname=postgres"));
        assert!(printed.contains("ECHOVALUE_LISTEN=127.0.0.1:8080"));
        assert!(printed.contains("ECHOVALUE_BATCH_MAX=64\n"));
    }

    #[test]
    fn stripe_settings() {
        let c = Config::try_parse_from([
            "x",
            "--stripe-webhook-secret",
            "whsec_s3cret",
            "--stripe-webhook-path",
            "/hooks/stripe",
        ])
        .unwrap();
        assert_eq!(c.stripe_webhook_path, "/hooks/stripe");
        assert_eq!(
            c.stripe_webhook_secret.as_ref().map(Secret::expose),
            Some("whsec_s3cret")
        );
        let printed = c.to_string();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("ECHOVALUE_STRIPE_WEBHOOK_SECRET=***"));
        assert!(printed.contains("ECHOVALUE_STRIPE_WEBHOOK_PATH=/hooks/stripe"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Config::default()
            .to_string()
            .contains("ECHOVALUE_STRIPE_WEBHOOK_SECRET=\n"));
        for bad in ["stripe", "/a?b", "/a b"] {
            assert!(
                Config::try_parse_from(["x", "--stripe-webhook-path", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(Config::try_parse_from(["x", "--stripe-webhook-secret", ""]).is_err());
    }
}
