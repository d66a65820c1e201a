//! Graceful shutdown: a request in flight when the signal arrives still completes, idle
//! connections do not hold the process, and afterwards the port is closed.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use echovalue_tests::{Admin, TestProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_completes_after_shutdown_signal() -> Result<()> {
    let mut proxy = TestProxy::start_with(|c| c.shutdown_grace_secs = 20).await?;
    let admin = Admin::connect().await?;
    let locker = Admin::connect().await?;
    let w = admin.new_wallet().await?;
    let locker_pid = locker.lock_wallet(&w).await?;

    let api = proxy.api().clone();
    let token = w.token.clone();
    let in_flight = tokio::spawn(async move { api.get("/token", Some(&token)).await });

    // Wait until the proxy's session is really queued behind the row lock.
    let start = Instant::now();
    while admin.sessions_blocked_by(locker_pid).await? == 0 {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the request never blocked on the wallet row");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    proxy.trigger_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !in_flight.is_finished(),
        "the request ended while the row was still locked"
    );

    locker.commit().await?;
    let r = in_flight.await??;
    assert_eq!(r.status, 200, "{:?}", r.text());
    assert_eq!(r.balance(), Some(99));
    assert_eq!(admin.balance(&w).await?, 99);

    tokio::time::timeout(Duration::from_secs(10), proxy.join()).await??;
    let refused = tokio::net::TcpStream::connect(proxy.addr).await;
    assert!(
        refused.is_err(),
        "the port still accepts connections after shutdown"
    );
    Ok(())
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_delay_shutdown() -> Result<()> {
    let mut proxy = TestProxy::start_with(|c| c.shutdown_grace_secs = 30).await?;
    // The client keeps its connection open in its pool after this.
    assert_eq!(proxy.api().get("/healthz", None).await?.status, 200);
    proxy.trigger_shutdown();
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), proxy.join()).await??;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err());
    Ok(())
}
