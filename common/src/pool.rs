//! The libpq settings of a binary and its pool of database connections. Connections open
//! lazily, so a binary starts while the database is down and reports it per request.

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

/// What differs between the pools of the binaries.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// `application_name` of the connections, unless the URL sets one.
    pub application_name: &'a str,
    /// Most connections open at once (at least 1).
    pub max_size: usize,
    /// Longest wait for a free connection, to open one, and to check one before reuse.
    pub timeout: Duration,
    /// Which waiting caller gets a connection that comes free, and which idle one is reused.
    pub queue_mode: QueueMode,
    /// Postgres `statement_timeout` and `lock_timeout` of every connection, in milliseconds
    /// (0: none), so no call holds a connection, a batch slot or a row lock without bound.
    pub statement_timeout_ms: u64,
    pub lock_timeout_ms: u64,
}

/// `database_url` (libpq key=value string or postgres:// URL) parsed, with
/// `application_name` set unless the URL sets one (so `pg_stat_activity` tells who is who).
pub fn pg_config(
    database_url: &str,
    application_name: &str,
) -> anyhow::Result<tokio_postgres::Config> {
    let mut pg: tokio_postgres::Config = database_url
        .parse()
        .context("the database URL is not a valid libpq connection string or URL")?;
    if pg.get_application_name().is_none() {
        pg.application_name(application_name);
    }
    Ok(pg)
}

/// A lazily connecting pool for `database_url`, without TLS; connections are checked before
/// reuse with the fast method (is the socket closed), not a query.
pub fn build(database_url: &str, settings: &Settings<'_>) -> anyhow::Result<Pool> {
    let mut pg = pg_config(database_url, settings.application_name)?;
    with_timeouts(
        &mut pg,
        settings.statement_timeout_ms,
        settings.lock_timeout_ms,
    );
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeout = Some(settings.timeout);
    Pool::builder(manager)
        .max_size(settings.max_size.max(1))
        .queue_mode(settings.queue_mode)
        .runtime(Runtime::Tokio1)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .build()
        .context("cannot build the database pool")
}

/// Adds `-c statement_timeout=… -c lock_timeout=…` to the connection's startup options, after
/// any options of the URL (so these win: the last `-c` of a name is the one Postgres keeps).
/// A 0 adds nothing, so the role's or database's own setting applies.
pub fn with_timeouts(pg: &mut tokio_postgres::Config, statement_ms: u64, lock_ms: u64) {
    let mut options = pg.get_options().unwrap_or_default().to_owned();
    for (name, ms) in [
        ("statement_timeout", statement_ms),
        ("lock_timeout", lock_ms),
    ] {
        if ms == 0 {
            continue;
        }
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c {name}={ms}"));
    }
    if !options.is_empty() {
        pg.options(&options);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::Host;

    fn settings(max_size: usize) -> Settings<'static> {
        Settings {
            application_name: "echovalue-test",
            max_size,
            timeout: Duration::from_secs(3),
            queue_mode: QueueMode::Lifo,
            statement_timeout_ms: 5000,
            lock_timeout_ms: 2000,
        }
    }

    #[test]
    fn reads_a_url_and_names_the_application() {
        let pg = pg_config("postgresql://u:p%40ss@db:6543/x?sslmode=disable", "me").unwrap();
        assert_eq!(pg.get_user(), Some("u"));
        assert_eq!(pg.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(pg.get_hosts(), [Host::Tcp("db".into())]);
        assert_eq!(pg.get_ports(), [6543]);
        assert_eq!(pg.get_dbname(), Some("x"));
        assert_eq!(pg.get_application_name(), Some("me"));
    }

    #[test]
    fn keeps_the_application_name_the_url_sets() {
        let pg = pg_config("host=/tmp user=u application_name=mine", "me").unwrap();
        assert_eq!(pg.get_application_name(), Some("mine"));
        let pg = pg_config("postgresql:///db?host=/tmp&application_name=mine", "me").unwrap();
        assert_eq!(pg.get_application_name(), Some("mine"));
    }

    #[test]
    fn refuses_a_bad_url() {
        for bad in ["port=notaport", "host=/tmp password='open", "nonsense"] {
            let e = pg_config(bad, "me").unwrap_err();
            assert!(e.to_string().contains("not a valid libpq"), "{bad}: {e}");
            assert!(build(bad, &settings(4)).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_follow_the_url_options() {
        let mut pg = pg_config("host=/tmp options='-c work_mem=8MB'", "me").unwrap();
        with_timeouts(&mut pg, 5000, 0);
        assert_eq!(
            pg.get_options(),
            Some("-c work_mem=8MB -c statement_timeout=5000")
        );
        let mut pg = pg_config("host=/tmp", "me").unwrap();
        with_timeouts(&mut pg, 0, 0);
        assert_eq!(pg.get_options(), None);
        let mut pg = pg_config("host=/tmp", "me").unwrap();
        with_timeouts(&mut pg, 1, 2);
        assert_eq!(
            pg.get_options(),
            Some("-c statement_timeout=1 -c lock_timeout=2")
        );
    }

    #[test]
    fn builds_without_connecting() {
        // Nothing listens here: building must not try.
        let pool = build("host=127.0.0.1 port=1 user=u dbname=d", &settings(4)).unwrap();
        let status = pool.status();
        assert_eq!((status.max_size, status.size), (4, 0));
        let timeouts = pool.timeouts();
        assert_eq!(timeouts.wait, Some(Duration::from_secs(3)));
        assert_eq!(timeouts.create, Some(Duration::from_secs(3)));
        assert_eq!(timeouts.recycle, Some(Duration::from_secs(3)));
        // A size of 0 would make every request wait for nothing.
        let pool = build("host=127.0.0.1 port=1", &settings(0)).unwrap();
        assert_eq!(pool.status().max_size, 1);
    }
}
