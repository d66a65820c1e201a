//! Process settings of the mailhook, read from flags and `ECHOVALUE_*` environment variables.

use std::fmt;
use std::time::Duration;

use clap::Parser;

const DEFAULT_DATABASE_URL: &str =
    "host=/var/run/postgresql user=echovalue_mailhook dbname=postgres";
const DEFAULT_POLL_SECS: u64 = 30;
const DEFAULT_RECONNECT_MAX_SECS: u64 = 30;
const DEFAULT_LOG: &str = "info";

/// Settings of the mailhook worker. The SMTP and delivery settings arrive with the
/// Mail2Webhook work. Tests build one with `Config::default()` and override fields.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "echovalue-mailhook", version, about)]
pub struct Config {
    /// libpq connection string or URL of the echovalue database; the role must be a member of
    /// echovalue_worker.
    #[arg(long, env = "ECHOVALUE_DATABASE_URL", default_value = DEFAULT_DATABASE_URL,
          hide_env_values = true)]
    pub database_url: String,

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
            poll_secs: DEFAULT_POLL_SECS,
            reconnect_max_secs: DEFAULT_RECONNECT_MAX_SECS,
            log: DEFAULT_LOG.to_owned(),
            print_config: false,
        }
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
        writeln!(f, "ECHOVALUE_MAILHOOK_POLL_SECS={}", self.poll_secs)?;
        writeln!(
            f,
            "ECHOVALUE_MAILHOOK_RECONNECT_MAX_SECS={}",
            self.reconnect_max_secs
        )?;
        writeln!(f, "ECHOVALUE_LOG={}", self.log)
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
    use super::{redact_password, Config};
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
        assert!(printed.contains("ECHOVALUE_MAILHOOK_POLL_SECS=30"));
    }

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
