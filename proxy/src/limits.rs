//! The settings that bound what one client can hold: connections, how long a connection may
//! stay open without a request, how long and how many calls may wait for the database, and how
//! long a statement may run or wait for a lock. Flattened into [`crate::Config`].

use std::fmt;
use std::time::Duration;

use clap::Args;

const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 5000;
const DEFAULT_QUEUE_MAX: usize = 10_000;
pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_LOCK_TIMEOUT_MS: u64 = 2000;

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Limits {
    /// Seconds a new connection has to send its first complete request head (HTTP/1 or
    /// HTTP/2, including the bytes that tell which); then it is closed.
    #[arg(long, env = "ECHOVALUE_HEADER_TIMEOUT_SECS", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,

    /// Seconds a connection may stay open with no request in flight after its last answer
    /// (HTTP/1 keep-alive and HTTP/2 alike); then it is closed.
    #[arg(long, env = "ECHOVALUE_IDLE_TIMEOUT_SECS", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_secs: u64,

    /// Most connections open at once; a connection beyond it is closed at accept.
    #[arg(long, env = "ECHOVALUE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(usize))]
    pub max_connections: usize,

    /// Most connections open at once from one address (the socket peer; trusted proxies'
    /// networks are exempt); 0: no cap. A connection beyond it is closed at accept.
    #[arg(long, env = "ECHOVALUE_MAX_CONNECTIONS_PER_ADDRESS",
          default_value_t = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, value_parser = clap::value_parser!(usize))]
    pub max_connections_per_address: usize,

    /// Milliseconds a call may wait in the batch queues before it is answered 503 with
    /// Retry-After (it never ran, so nothing is charged).
    #[arg(long, env = "ECHOVALUE_QUEUE_TIMEOUT_MS", default_value_t = DEFAULT_QUEUE_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub queue_timeout_ms: u64,

    /// Most calls waiting in the batch queues at once; a call beyond it is answered 503 at once.
    #[arg(long, env = "ECHOVALUE_QUEUE_MAX", default_value_t = DEFAULT_QUEUE_MAX,
          value_parser = clap::value_parser!(usize))]
    pub queue_max: usize,

    /// Postgres `statement_timeout` of the proxy's connections, in milliseconds (0: none). A
    /// call cancelled by it is answered 503, and its transaction rolled back.
    #[arg(long, env = "ECHOVALUE_STATEMENT_TIMEOUT_MS", default_value_t = DEFAULT_STATEMENT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub statement_timeout_ms: u64,

    /// Postgres `lock_timeout` of the proxy's connections, in milliseconds (0: none): a call
    /// that waits longer for a row lock (a wallet another session holds) is answered 503.
    #[arg(long, env = "ECHOVALUE_LOCK_TIMEOUT_MS", default_value_t = DEFAULT_LOCK_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    pub lock_timeout_ms: u64,
}

impl Limits {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout_secs: DEFAULT_HEADER_TIMEOUT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            queue_timeout_ms: DEFAULT_QUEUE_TIMEOUT_MS,
            queue_max: DEFAULT_QUEUE_MAX,
            statement_timeout_ms: DEFAULT_STATEMENT_TIMEOUT_MS,
            lock_timeout_ms: DEFAULT_LOCK_TIMEOUT_MS,
        }
    }
}

/// The `--print-config` lines of these settings.
impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        echovalue_common::print_config::lines(
            f,
            &[
                ("HEADER_TIMEOUT_SECS", &self.header_timeout_secs),
                ("IDLE_TIMEOUT_SECS", &self.idle_timeout_secs),
                ("MAX_CONNECTIONS", &self.max_connections),
                (
                    "MAX_CONNECTIONS_PER_ADDRESS",
                    &self.max_connections_per_address,
                ),
                ("QUEUE_TIMEOUT_MS", &self.queue_timeout_ms),
                ("QUEUE_MAX", &self.queue_max),
                ("STATEMENT_TIMEOUT_MS", &self.statement_timeout_ms),
                ("LOCK_TIMEOUT_MS", &self.lock_timeout_ms),
            ],
        )
    }
}
