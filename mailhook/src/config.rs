//! Process settings of the mailhook, read from flags and `ECHOVALUE_*` environment variables.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Settings of the mailhook worker: the database, the SMTP receiver and webhook delivery.
#[derive(Debug, Clone, Parser)]
#[command(name = "echovalue-mailhook", version, about)]
pub struct Config {
    /// libpq connection string or URL of the echovalue database.
    #[arg(
        long,
        env = "ECHOVALUE_DATABASE_URL",
        default_value = "",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Maximum number of pooled database connections.
    #[arg(long, env = "ECHOVALUE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,

    /// Seconds to wait for a database connection before answering 451.
    #[arg(long, env = "ECHOVALUE_DB_TIMEOUT_SECS", default_value_t = 5)]
    pub db_timeout_secs: u64,

    /// Address the SMTP receiver listens on.
    #[arg(long, env = "ECHOVALUE_SMTP_LISTEN", default_value = "127.0.0.1:2525")]
    pub smtp_listen: SocketAddr,

    /// Host name in the SMTP greeting and EHLO reply.
    #[arg(long, env = "ECHOVALUE_SMTP_HOSTNAME", default_value = "localhost")]
    pub smtp_hostname: String,

    /// Largest message accepted (bytes of DATA after dot-unstuffing); above it, 552.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub smtp_max_bytes: usize,

    /// Longest line of message text accepted (bytes, CRLF included); a longer one fails the message with 552.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_LINE_BYTES", default_value_t = 64 * 1024)]
    pub smtp_max_line_bytes: usize,

    /// Commands one session may send before it is closed with 421.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_COMMANDS", default_value_t = 1000)]
    pub smtp_max_commands: usize,

    /// Sessions served at once; more connections get 421 and are closed.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_SESSIONS", default_value_t = 1000)]
    pub smtp_max_sessions: usize,

    /// Seconds the client has to send each command or line of message text (RFC 5321 suggests 300).
    #[arg(long, env = "ECHOVALUE_SMTP_TIMEOUT_SECS", default_value_t = 300)]
    pub smtp_timeout_secs: u64,

    /// On SIGTERM, seconds open sessions may take to finish before the process exits.
    #[arg(long, env = "ECHOVALUE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Webhook deliveries in flight at once; 0 runs the SMTP receiver only (no dispatcher).
    #[arg(long, env = "ECHOVALUE_DELIVERY_CONCURRENCY", default_value_t = 32)]
    pub delivery_concurrency: usize,

    /// Most deliveries claimed with one query.
    #[arg(long, env = "ECHOVALUE_DELIVERY_BATCH", default_value_t = 50)]
    pub delivery_batch: usize,

    /// Seconds between scans of the queue when no notification arrives.
    #[arg(long, env = "ECHOVALUE_DELIVERY_POLL_SECS", default_value_t = 5)]
    pub delivery_poll_secs: u64,

    /// Seconds one webhook POST may take, connecting included.
    #[arg(long, env = "ECHOVALUE_DELIVERY_TIMEOUT_SECS", default_value_t = 10)]
    pub delivery_timeout_secs: u64,

    /// Seconds a claimed delivery stays leased to this process; after that another dispatcher
    /// may send it again. Raised to the timeout plus 20 s when lower.
    #[arg(long, env = "ECHOVALUE_DELIVERY_LEASE_SECS", default_value_t = 60)]
    pub delivery_lease_secs: u64,

    /// Deliver to plain http and loopback URLs too (local testing only; never in production).
    #[arg(long, env = "ECHOVALUE_DELIVERY_ALLOW_INSECURE", default_value_t = false, action = clap::ArgAction::Set)]
    pub delivery_allow_insecure: bool,

    /// Print the effective configuration (password hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
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
        writeln!(
            f,
            "ECHOVALUE_DELIVERY_CONCURRENCY={}",
            self.delivery_concurrency
        )?;
        writeln!(f, "ECHOVALUE_DELIVERY_BATCH={}", self.delivery_batch)?;
        writeln!(
            f,
            "ECHOVALUE_DELIVERY_POLL_SECS={}",
            self.delivery_poll_secs
        )?;
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
        writeln!(
            f,
            "ECHOVALUE_DELIVERY_ALLOW_INSECURE={}",
            self.delivery_allow_insecure
        )
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
        }
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
            poll: Duration::from_secs(self.delivery_poll_secs.max(1)),
            timeout,
            lease: Duration::from_secs(self.delivery_lease_secs)
                .max(timeout + Duration::from_secs(20)),
            allow_insecure: self.delivery_allow_insecure,
            grace: Duration::from_secs(self.shutdown_grace_secs)
                .min(timeout + Duration::from_secs(1)),
        })
    }
}

/// Hides the password of a `postgres://user:pw@host/db` URL or a `password=…` keyword.
fn redact_password(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (head, rest) = url.split_at(scheme_end + 3);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!("{head}{}:***{}", &rest[..colon], &rest[at..]);
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn hides_url_password() {
        assert_eq!(
            redact_password("postgresql://u:secret@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert_eq!(
            redact_password("postgresql://u@h/db"),
            "postgresql://u@h/db"
        );
    }

    #[test]
    fn hides_keyword_password() {
        assert_eq!(
            redact_password("host=/tmp user=u password=secret dbname=d"),
            "host=/tmp user=u password=*** dbname=d"
        );
    }
}
