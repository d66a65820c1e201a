//! Process settings of the mailhook, read from flags and `ECHOVALUE_*` environment variables.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use echovalue_common::redact::redact_password;

const DEFAULT_DATABASE_URL: &str =
    "host=/var/run/postgresql user=echovalue_mailhook dbname=postgres";
const DEFAULT_DB_POOL_SIZE: usize = 16;
const DEFAULT_DB_TIMEOUT_SECS: u64 = 5;
const DEFAULT_SMTP_PORT: u16 = 2525;
const DEFAULT_SMTP_HOSTNAME: &str = "localhost";
const DEFAULT_SMTP_MAX_BYTES: usize = 10 * 1024 * 1024;
const DEFAULT_SMTP_MAX_LINE_BYTES: usize = 64 * 1024;
const DEFAULT_SMTP_MAX_COMMANDS: usize = 1000;
const DEFAULT_SMTP_MAX_SESSIONS: usize = 1000;
// RFC 5321 suggests 300 s per command.
const DEFAULT_SMTP_TIMEOUT_SECS: u64 = 300;
const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
const DEFAULT_POLL_SECS: u64 = 30;
const DEFAULT_RECONNECT_MAX_SECS: u64 = 30;
const DEFAULT_LOG: &str = "info";
const DEFAULT_DELIVERY_CONCURRENCY: usize = 32;
const DEFAULT_DELIVERY_BATCH: usize = 50;
// SPEC §7: a webhook POST gets 10 s.
const DEFAULT_DELIVERY_TIMEOUT_SECS: u64 = 10;
const DEFAULT_DELIVERY_LEASE_SECS: u64 = 60;
// The submission port (RFC 6409), with STARTTLS.
const DEFAULT_RELAY_PORT: u16 = 587;
const DEFAULT_RELAY_TIMEOUT_SECS: u64 = 30;

/// Settings of the mailhook worker: the database, the SMTP receiver and the LISTEN-driven
/// workers. Tests build one with `Config::default()` and override fields.
#[derive(Clone, PartialEq, Eq, Parser)]
#[command(name = "echovalue-mailhook", version, about)]
pub struct Config {
    /// libpq connection string or URL of the echovalue database; the role must be a member of
    /// echovalue_worker.
    #[arg(long, env = "ECHOVALUE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL,
          hide_env_values = true)]
    pub database_url: String,

    /// Maximum number of pooled database connections.
    #[arg(long, env = "ECHOVALUE_DB_POOL_SIZE", default_value_t = DEFAULT_DB_POOL_SIZE)]
    pub db_pool_size: usize,

    /// Seconds to wait for a database connection before answering 451.
    #[arg(long, env = "ECHOVALUE_DB_TIMEOUT_SECS", default_value_t = DEFAULT_DB_TIMEOUT_SECS)]
    pub db_timeout_secs: u64,

    /// Address the SMTP receiver listens on.
    #[arg(long, env = "ECHOVALUE_SMTP_LISTEN", default_value = "127.0.0.1:2525")]
    pub smtp_listen: SocketAddr,

    /// Host name in the SMTP greeting and EHLO reply.
    #[arg(long, env = "ECHOVALUE_SMTP_HOSTNAME", default_value = DEFAULT_SMTP_HOSTNAME)]
    pub smtp_hostname: String,

    /// Largest message accepted (bytes of DATA after dot-unstuffing); above it, 552.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_BYTES", default_value_t = DEFAULT_SMTP_MAX_BYTES)]
    pub smtp_max_bytes: usize,

    /// Longest line of message text accepted (bytes, CRLF included); a longer one fails the message with 552.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_LINE_BYTES", default_value_t = DEFAULT_SMTP_MAX_LINE_BYTES)]
    pub smtp_max_line_bytes: usize,

    /// Commands one session may send before it is closed with 421.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_COMMANDS", default_value_t = DEFAULT_SMTP_MAX_COMMANDS)]
    pub smtp_max_commands: usize,

    /// Sessions served at once; more connections get 421 and are closed.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_SESSIONS", default_value_t = DEFAULT_SMTP_MAX_SESSIONS)]
    pub smtp_max_sessions: usize,

    /// Seconds the client has to send each command or line of message text (RFC 5321 suggests 300).
    #[arg(long, env = "ECHOVALUE_SMTP_TIMEOUT_SECS", default_value_t = DEFAULT_SMTP_TIMEOUT_SECS)]
    pub smtp_timeout_secs: u64,

    /// On SIGTERM, seconds open sessions may take to finish before the process exits.
    #[arg(long, env = "ECHOVALUE_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// Seconds between two scans for pending work even without a NOTIFY (a missed wake-up is
    /// caught up by then).
    #[arg(long, env = "ECHOVALUE_MAILHOOK_POLL_SECS", default_value_t = DEFAULT_POLL_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub poll_secs: u64,

    /// Longest wait between two attempts to reconnect the LISTEN connection.
    #[arg(long, env = "ECHOVALUE_MAILHOOK_RECONNECT_MAX_SECS", default_value_t = DEFAULT_RECONNECT_MAX_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub reconnect_max_secs: u64,

    /// tracing-subscriber filter, e.g. `info` or `echovalue_mailhook=debug`.
    #[arg(long, env = "ECHOVALUE_LOG", default_value = DEFAULT_LOG)]
    pub log: String,

    /// Webhook deliveries in flight at once; 0 runs the SMTP receiver only (no dispatcher).
    #[arg(long, env = "ECHOVALUE_DELIVERY_CONCURRENCY", default_value_t = DEFAULT_DELIVERY_CONCURRENCY)]
    pub delivery_concurrency: usize,

    /// Most deliveries claimed with one query.
    #[arg(long, env = "ECHOVALUE_DELIVERY_BATCH", default_value_t = DEFAULT_DELIVERY_BATCH)]
    pub delivery_batch: usize,

    /// Seconds one webhook POST may take, connecting included.
    #[arg(long, env = "ECHOVALUE_DELIVERY_TIMEOUT_SECS", default_value_t = DEFAULT_DELIVERY_TIMEOUT_SECS)]
    pub delivery_timeout_secs: u64,

    /// Seconds a claimed delivery stays leased to this process; after that another dispatcher
    /// may send it again. Raised to the timeout plus 20 s when lower.
    #[arg(long, env = "ECHOVALUE_DELIVERY_LEASE_SECS", default_value_t = DEFAULT_DELIVERY_LEASE_SECS)]
    pub delivery_lease_secs: u64,

    /// SMTP relay that alert emails are sent through (SPEC §14); empty: none, and wallets
    /// cannot set an alert email.
    #[arg(long, env = "ECHOVALUE_RELAY_HOST", default_value = "")]
    pub relay_host: String,

    /// Port of the relay.
    #[arg(long, env = "ECHOVALUE_RELAY_PORT", default_value_t = DEFAULT_RELAY_PORT)]
    pub relay_port: u16,

    /// How the connection to the relay is secured: `starttls` (required), `tls` (implicit
    /// TLS, usually port 465) or `none` (only for a relay on this machine or network).
    #[arg(long, env = "ECHOVALUE_RELAY_TLS", default_value = "starttls",
          value_parser = ["starttls", "tls", "none"])]
    pub relay_tls: String,

    /// User name for the relay; empty: no authentication.
    #[arg(long, env = "ECHOVALUE_RELAY_USER", default_value = "")]
    pub relay_user: String,

    /// Password for the relay.
    #[arg(
        long,
        env = "ECHOVALUE_RELAY_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub relay_password: String,

    /// From address of alert emails; required with a relay.
    #[arg(long, env = "ECHOVALUE_RELAY_FROM", default_value = "")]
    pub relay_from: String,

    /// Seconds one alert email may take to send, connecting included.
    #[arg(long, env = "ECHOVALUE_RELAY_TIMEOUT_SECS", default_value_t = DEFAULT_RELAY_TIMEOUT_SECS)]
    pub relay_timeout_secs: u64,

    /// SMTP sessions, DATA, message complexity and statement time ("Limits and abuse").
    #[command(flatten)]
    pub bounds: crate::bounds::Bounds,

    /// Print the effective configuration (password hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Config {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_secs.max(1))
    }

    pub fn reconnect_max(&self) -> Duration {
        Duration::from_secs(self.reconnect_max_secs.max(1))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            db_pool_size: DEFAULT_DB_POOL_SIZE,
            db_timeout_secs: DEFAULT_DB_TIMEOUT_SECS,
            smtp_listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_SMTP_PORT)),
            smtp_hostname: DEFAULT_SMTP_HOSTNAME.to_owned(),
            smtp_max_bytes: DEFAULT_SMTP_MAX_BYTES,
            smtp_max_line_bytes: DEFAULT_SMTP_MAX_LINE_BYTES,
            smtp_max_commands: DEFAULT_SMTP_MAX_COMMANDS,
            smtp_max_sessions: DEFAULT_SMTP_MAX_SESSIONS,
            smtp_timeout_secs: DEFAULT_SMTP_TIMEOUT_SECS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            poll_secs: DEFAULT_POLL_SECS,
            reconnect_max_secs: DEFAULT_RECONNECT_MAX_SECS,
            log: DEFAULT_LOG.to_owned(),
            delivery_concurrency: DEFAULT_DELIVERY_CONCURRENCY,
            delivery_batch: DEFAULT_DELIVERY_BATCH,
            delivery_timeout_secs: DEFAULT_DELIVERY_TIMEOUT_SECS,
            delivery_lease_secs: DEFAULT_DELIVERY_LEASE_SECS,
            relay_host: String::new(),
            relay_port: DEFAULT_RELAY_PORT,
            relay_tls: "starttls".to_owned(),
            relay_user: String::new(),
            relay_password: String::new(),
            relay_from: String::new(),
            relay_timeout_secs: DEFAULT_RELAY_TIMEOUT_SECS,
            bounds: crate::bounds::Bounds::default(),
            print_config: false,
        }
    }
}

/// The `--print-config` lines: the database and relay passwords hidden.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_string().lines()).finish()
    }
}

/// `--print-config` output: one `ECHOVALUE_*=value` line per setting, ready for an env file.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ECHOVALUE_DATABASE_URL={}",
            redact_password(&self.database_url)
        )?;
        writeln!(f, "ECHOVALUE_DB_POOL_SIZE={}", self.db_pool_size)?;
        writeln!(f, "ECHOVALUE_DB_TIMEOUT_SECS={}", self.db_timeout_secs)?;
        writeln!(f, "ECHOVALUE_SMTP_LISTEN={}", self.smtp_listen)?;
        writeln!(f, "ECHOVALUE_SMTP_HOSTNAME={}", self.smtp_hostname)?;
        writeln!(f, "ECHOVALUE_SMTP_MAX_BYTES={}", self.smtp_max_bytes)?;
        writeln!(
            f,
            "ECHOVALUE_SMTP_MAX_LINE_BYTES={}",
            self.smtp_max_line_bytes
        )?;
        writeln!(f, "ECHOVALUE_SMTP_MAX_COMMANDS={}", self.smtp_max_commands)?;
        writeln!(f, "ECHOVALUE_SMTP_MAX_SESSIONS={}", self.smtp_max_sessions)?;
        writeln!(f, "ECHOVALUE_SMTP_TIMEOUT_SECS={}", self.smtp_timeout_secs)?;
        writeln!(
            f,
            "ECHOVALUE_SHUTDOWN_GRACE_SECS={}",
            self.shutdown_grace_secs
        )?;
        writeln!(f, "ECHOVALUE_MAILHOOK_POLL_SECS={}", self.poll_secs)?;
        writeln!(
            f,
            "ECHOVALUE_MAILHOOK_RECONNECT_MAX_SECS={}",
            self.reconnect_max_secs
        )?;
        writeln!(f, "ECHOVALUE_LOG={}", self.log)?;
        writeln!(
            f,
            "ECHOVALUE_DELIVERY_CONCURRENCY={}",
            self.delivery_concurrency
        )?;
        writeln!(f, "ECHOVALUE_DELIVERY_BATCH={}", self.delivery_batch)?;
        writeln!(
            f,
            "ECHOVALUE_DELIVERY_TIMEOUT_SECS={}",
            self.delivery_timeout_secs
        )?;
        writeln!(
            f,
            "ECHOVALUE_DELIVERY_LEASE_SECS={}",
            self.delivery_lease_secs
        )?;
        writeln!(f, "ECHOVALUE_RELAY_HOST={}", self.relay_host)?;
        writeln!(f, "ECHOVALUE_RELAY_PORT={}", self.relay_port)?;
        writeln!(f, "ECHOVALUE_RELAY_TLS={}", self.relay_tls)?;
        writeln!(f, "ECHOVALUE_RELAY_USER={}", self.relay_user)?;
        let password = if self.relay_password.is_empty() {
            ""
        } else {
            "***"
        };
        writeln!(f, "ECHOVALUE_RELAY_PASSWORD={password}")?;
        writeln!(f, "ECHOVALUE_RELAY_FROM={}", self.relay_from)?;
        writeln!(
            f,
            "ECHOVALUE_RELAY_TIMEOUT_SECS={}",
            self.relay_timeout_secs
        )?;
        write!(f, "{}", self.bounds)
    }
}

impl Config {
    /// The SMTP receiver's limits, with zero values raised to the smallest that work.
    pub fn smtp_limits(&self) -> crate::smtp::Limits {
        crate::smtp::Limits {
            hostname: self.smtp_hostname.clone(),
            max_bytes: self.smtp_max_bytes.max(1),
            max_line_bytes: self.smtp_max_line_bytes.max(80),
            max_commands: self.smtp_max_commands.max(1),
            max_sessions: self.smtp_max_sessions.max(1),
            timeout: Duration::from_secs(self.smtp_timeout_secs.max(1)),
            bounds: self.bounds.clone(),
        }
    }
}

impl Config {
    /// The relay alert emails go through, or None when none is configured.
    pub fn relay(&self) -> anyhow::Result<Option<crate::alert_mail::Relay>> {
        if self.relay_host.is_empty() {
            return Ok(None);
        }
        if self.relay_from.is_empty() {
            anyhow::bail!("ECHOVALUE_RELAY_HOST is set: ECHOVALUE_RELAY_FROM must be too");
        }
        let tls = match self.relay_tls.as_str() {
            "tls" => crate::alert_mail::RelayTls::Implicit,
            "none" => crate::alert_mail::RelayTls::None,
            _ => crate::alert_mail::RelayTls::StartTls,
        };
        Ok(Some(crate::alert_mail::Relay {
            host: self.relay_host.clone(),
            port: self.relay_port,
            tls,
            credentials: (!self.relay_user.is_empty())
                .then(|| (self.relay_user.clone(), self.relay_password.clone())),
            from: self.relay_from.clone(),
            timeout: Duration::from_secs(self.relay_timeout_secs.max(1)),
        }))
    }
}

impl Config {
    /// The dispatcher's settings, or None when delivery is off; zero values raised to the
    /// smallest that work, the lease kept above the timeout.
    pub fn delivery(&self) -> Option<crate::delivery::dispatch::Settings> {
        if self.delivery_concurrency == 0 {
            return None;
        }
        let timeout = Duration::from_secs(self.delivery_timeout_secs.max(1));
        Some(crate::delivery::dispatch::Settings {
            concurrency: self.delivery_concurrency,
            batch: self.delivery_batch.max(1),
            poll: self.poll_interval(),
            timeout,
            lease: Duration::from_secs(self.delivery_lease_secs)
                .max(timeout + Duration::from_secs(20)),
            grace: Duration::from_secs(self.shutdown_grace_secs)
                .min(timeout + Duration::from_secs(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Config;
    use clap::Parser;

    #[test]
    fn defaults_match_clap_defaults() {
        // The test environment does not set ECHOVALUE_*.
        let parsed = Config::try_parse_from(["echovalue-mailhook"]).unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(parsed.poll_secs, 30);
    }

    #[test]
    fn flags_override_and_ranges_hold() {
        let c =
            Config::try_parse_from(["x", "--poll-secs", "2", "--reconnect-max-secs", "5"]).unwrap();
        assert_eq!(c.poll_interval().as_secs(), 2);
        assert_eq!(c.reconnect_max().as_secs(), 5);
        assert!(Config::try_parse_from(["x", "--poll-secs", "0"]).is_err());
        assert!(Config::try_parse_from(["x", "--reconnect-max-secs", "-1"]).is_err());
    }

    #[test]
    fn print_config_hides_the_password() {
        let c = Config {
            database_url: "host=/tmp user=echovalue_mailhook password=s3cret".into(),
            ..Config::default()
        };
        let printed = c.to_string();
        assert!(!printed.contains("s3cret"), "{printed}");
        let c = Config {
            relay_host: "smtp.example.com".into(),
            relay_user: "alerts".into(),
            relay_password: "relay-s3cret".into(),
            ..Config::default()
        };
        let printed = c.to_string();
        assert!(!printed.contains("relay-s3cret"), "{printed}");
        assert!(
            printed.contains("ECHOVALUE_RELAY_PASSWORD=***"),
            "{printed}"
        );
        assert!(printed.contains("ECHOVALUE_RELAY_USER=alerts"), "{printed}");
        assert!(!format!("{c:?}").contains("relay-s3cret"));
        assert!(printed.contains("ECHOVALUE_MAILHOOK_POLL_SECS=30"));
    }
}
