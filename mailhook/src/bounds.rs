//! The settings that bound what one SMTP client can hold or cost: sessions per address, how
//! long a session and its DATA may take, how many bytes all sessions may buffer, how complex a
//! message may be, and how long a database statement may run or wait for a lock. Flattened
//! into [`crate::Config`].

use std::fmt;
use std::time::Duration;

use clap::Args;

// As Postfix's smtpd_client_connection_count_limit.
const DEFAULT_MAX_SESSIONS_PER_ADDRESS: usize = 50;
const DEFAULT_SESSION_TIMEOUT_SECS: u64 = 600;
const DEFAULT_DATA_TIMEOUT_SECS: u64 = 60;
const DEFAULT_MIN_DATA_RATE: u64 = 16 * 1024;
const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 * 1024 * 1024;
const DEFAULT_MAX_PARTS: usize = 250;
const DEFAULT_MAX_MULTIPARTS: usize = 25;
const DEFAULT_MAX_ATTACHMENTS: usize = 100;
const DEFAULT_MAX_DEPTH: usize = 10;
const DEFAULT_PARSE_TIMEOUT_SECS: u64 = 10;
const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_LOCK_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Bounds {
    /// Most SMTP sessions open at once from one address (0: no cap); one more is told 421.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_SESSIONS_PER_ADDRESS", default_value_t = DEFAULT_MAX_SESSIONS_PER_ADDRESS)]
    pub smtp_max_sessions_per_address: usize,

    /// Seconds an SMTP session may last in all, however busy; then it is told 421 and closed.
    #[arg(long, env = "ECHOVALUE_SMTP_SESSION_TIMEOUT_SECS", default_value_t = DEFAULT_SESSION_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub smtp_session_timeout_secs: u64,

    /// Seconds the DATA of one message may take, plus one second per
    /// ECHOVALUE_SMTP_MIN_DATA_RATE bytes received: a client slower than that rate is cut off.
    #[arg(long, env = "ECHOVALUE_SMTP_DATA_TIMEOUT_SECS", default_value_t = DEFAULT_DATA_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub smtp_data_timeout_secs: u64,

    /// Bytes per second a client must keep up in DATA once the base DATA time is used.
    #[arg(long, env = "ECHOVALUE_SMTP_MIN_DATA_RATE", default_value_t = DEFAULT_MIN_DATA_RATE,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub smtp_min_data_rate: u64,

    /// Bytes of message text all sessions together may hold in memory; a message that would
    /// go beyond it is refused with 452 (try later).
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_BUFFERED_BYTES", default_value_t = DEFAULT_MAX_BUFFERED_BYTES)]
    pub smtp_max_buffered_bytes: usize,

    /// Most MIME parts in a message (Content-Type headers, and parts once parsed); over it
    /// 552 5.3.4, nothing stored or charged.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_PARTS", default_value_t = DEFAULT_MAX_PARTS)]
    pub smtp_max_parts: usize,

    /// Most multipart/* containers in a message: each costs the parser a scan of the rest of
    /// the message when its boundary is missing, so this bounds the parse time; over it 552.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_MULTIPARTS", default_value_t = DEFAULT_MAX_MULTIPARTS)]
    pub smtp_max_multiparts: usize,

    /// Most attachments in a message; over it 552.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_ATTACHMENTS", default_value_t = DEFAULT_MAX_ATTACHMENTS)]
    pub smtp_max_attachments: usize,

    /// Deepest nesting of MIME parts (and attached messages) in a message; over it 552.
    #[arg(long, env = "ECHOVALUE_SMTP_MAX_DEPTH", default_value_t = DEFAULT_MAX_DEPTH)]
    pub smtp_max_depth: usize,

    /// Seconds the parse of one message may take (it runs off the async runtime, at most one
    /// per core at once; the time counts once the parse has its place, and a message that
    /// waited that long for one gets 451, try later); over it 552.
    #[arg(long, env = "ECHOVALUE_SMTP_PARSE_TIMEOUT_SECS", default_value_t = DEFAULT_PARSE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub smtp_parse_timeout_secs: u64,

    /// Postgres `statement_timeout` of the mailhook's connections, in milliseconds (0: none).
    #[arg(long, env = "ECHOVALUE_STATEMENT_TIMEOUT_MS", default_value_t = DEFAULT_STATEMENT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub statement_timeout_ms: u64,

    /// Postgres `lock_timeout` of the mailhook's connections, in milliseconds (0: none).
    #[arg(long, env = "ECHOVALUE_LOCK_TIMEOUT_MS", default_value_t = DEFAULT_LOCK_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub lock_timeout_ms: u64,
}

impl Bounds {
    pub fn session_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp_session_timeout_secs)
    }

    /// When DATA that started at `start` and has received `bytes` so far must be done.
    pub fn data_deadline(&self, start: tokio::time::Instant, bytes: usize) -> tokio::time::Instant {
        let earned = u64::try_from(bytes).unwrap_or(u64::MAX) / self.smtp_min_data_rate.max(1);
        // Never past a day, so the addition cannot overflow.
        let secs = self
            .smtp_data_timeout_secs
            .saturating_add(earned)
            .min(86_400);
        start + Duration::from_secs(secs)
    }

    pub fn parse_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp_parse_timeout_secs)
    }
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            smtp_max_sessions_per_address: DEFAULT_MAX_SESSIONS_PER_ADDRESS,
            smtp_session_timeout_secs: DEFAULT_SESSION_TIMEOUT_SECS,
            smtp_data_timeout_secs: DEFAULT_DATA_TIMEOUT_SECS,
            smtp_min_data_rate: DEFAULT_MIN_DATA_RATE,
            smtp_max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            smtp_max_parts: DEFAULT_MAX_PARTS,
            smtp_max_multiparts: DEFAULT_MAX_MULTIPARTS,
            smtp_max_attachments: DEFAULT_MAX_ATTACHMENTS,
            smtp_max_depth: DEFAULT_MAX_DEPTH,
            smtp_parse_timeout_secs: DEFAULT_PARSE_TIMEOUT_SECS,
            statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
            lock_timeout_ms: DEFAULT_LOCK_TIMEOUT_MS,
        }
    }
}

/// The `--print-config` lines of these settings.
impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        echovalue_common::print_config::lines(
            f,
            &[
                (
                    "SMTP_MAX_SESSIONS_PER_ADDRESS",
                    &self.smtp_max_sessions_per_address,
                ),
                ("SMTP_SESSION_TIMEOUT_SECS", &self.smtp_session_timeout_secs),
                ("SMTP_DATA_TIMEOUT_SECS", &self.smtp_data_timeout_secs),
                ("SMTP_MIN_DATA_RATE", &self.smtp_min_data_rate),
                ("SMTP_MAX_BUFFERED_BYTES", &self.smtp_max_buffered_bytes),
                ("SMTP_MAX_PARTS", &self.smtp_max_parts),
                ("SMTP_MAX_MULTIPARTS", &self.smtp_max_multiparts),
                ("SMTP_MAX_ATTACHMENTS", &self.smtp_max_attachments),
                ("SMTP_MAX_DEPTH", &self.smtp_max_depth),
                ("SMTP_PARSE_TIMEOUT_SECS", &self.smtp_parse_timeout_secs),
                ("STATEMENT_TIMEOUT_MS", &self.statement_timeout_ms),
                ("LOCK_TIMEOUT_MS", &self.lock_timeout_ms),
            ],
        )
    }
}
