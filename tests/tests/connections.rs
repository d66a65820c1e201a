//! What one client can hold (issue 15, items 2 and 6): idle and half-sent connections are
//! closed at their deadline while other clients are served, connections are capped in all and
//! per address, and a call stuck behind a locked wallet gets a 503 within the lock and queue
//! timeouts, charged nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use echovalue_tests::{Admin, Reply, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// Connects from `from` (any 127.x.y.z address reaches the proxy on loopback).
async fn connect_from(from: IpAddr, to: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    Ok(socket.connect(to).await?)
}

/// Waits up to `within` for the peer to close: true when it did (EOF or reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An answer (a 408 for a half-sent head): keep reading until the close.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_are_closed_while_a_client_is_served() -> Result<()> {
    const IDLE: usize = 2000;
    let proxy = TestProxy::start_with(|c| {
        c.limits.header_timeout_secs = 2;
        c.limits.idle_timeout_secs = 2;
        c.limits.max_connections = IDLE + 100;
        c.limits.max_connections_per_address = 0;
    })
    .await?;
    let admin = Admin::connect().await?;
    let w = admin.new_wallet().await?;
    let start = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s = TcpStream::connect(proxy.addr).await?;
        // Nothing, half a request line, half an HTTP/2 preface, a head without its end.
        let partial: &[u8] = match i % 4 {
            0 => b"",
            1 => b"GET /token HT",
            2 => b"PRI * HTTP/2.0\r\n",
            _ => b"GET /token HTTP/1.1\r\nHost: x\r\n",
        };
        s.write_all(partial).await?;
        idle.push(s);
    }
    let opened = start.elapsed();

    // While they are open, a normal client is served.
    let r = proxy.api().get("/token", Some(&w.token)).await?;
    assert_eq!(r.status, 200, "{:?}", r.text());

    let mut closed = 0;
    for s in &mut idle {
        // The deadline is 2 s from each accept; all were accepted within `opened`.
        if closed_within(s, Duration::from_secs(4)).await {
            closed += 1;
        }
    }
    let all_closed = start.elapsed();
    assert_eq!(closed, IDLE, "idle connections left open");
    assert!(
        all_closed < opened + Duration::from_secs(6),
        "closing took {all_closed:?} (opened in {opened:?})"
    );
    println!("{IDLE} idle connections opened in {opened:?}, all closed after {all_closed:?}");

    // A keep-alive connection is closed once idle after its answer, not before.
    let mut s = TcpStream::connect(proxy.addr).await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await?;
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert!(!closed_within(&mut s, Duration::from_millis(1500)).await);
    assert!(closed_within(&mut s, Duration::from_secs(3)).await);

    let r = proxy.api().get("/token", Some(&w.token)).await?;
    assert_eq!(r.status, 200);
    Ok(())
}

#[tokio::test]
async fn connections_are_capped_in_all_and_per_address() -> Result<()> {
    let proxy = TestProxy::start_with(|c| {
        // Six of the test's own, and the test client's keep-alive connection from start-up.
        c.limits.max_connections = 7;
        c.limits.max_connections_per_address = 3;
    })
    .await?;
    let (a, b): (IpAddr, IpAddr) = ("127.0.0.7".parse()?, "127.0.0.8".parse()?);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(a, proxy.addr).await?);
    }
    // A fourth from the same address is closed at once; another address still gets in.
    let mut fourth = connect_from(a, proxy.addr).await?;
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).await);
    let mut other = connect_from(b, proxy.addr).await?;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut buf = [0u8; 256];
    let n = other.read(&mut buf).await?;
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    held.push(other);
    for _ in 0..2 {
        held.push(connect_from(b, proxy.addr).await?);
    }
    // Seven open: an eighth, from a third address, is refused too.
    let mut seventh = connect_from("127.0.0.9".parse()?, proxy.addr).await?;
    assert!(closed_within(&mut seventh, Duration::from_secs(2)).await);
    // The metrics request itself needs a place: free one first.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = proxy.api().get("/metrics", None).await?.text();
    assert!(
        text.contains("echovalue_proxy_connections_refused_total{cap=\"address\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("echovalue_proxy_connections_refused_total{cap=\"total\"} 1"),
        "{text}"
    );
    // Closing connections frees their places.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from(a, proxy.addr).await?;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let n = again.read(&mut buf).await?;
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    Ok(())
}

async fn timed_get(proxy: &TestProxy, token: &str, path: &str) -> Result<(Reply, Duration)> {
    let start = Instant::now();
    let r = proxy.api().get(path, Some(token)).await?;
    Ok((r, start.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_behind_a_held_row_lock_gets_503_within_the_timeouts_charged_nothing() -> Result<()>
{
    let admin = Admin::connect().await?;
    // On Citus the wallet's row is on a worker, where the proxy's lock_timeout (a setting of
    // its session on the coordinator) does not reach: there the role's lock_timeout holds
    // (tests/citus.sh: 2 s, as the README asks), below the proxy's statement timeout. A
    // statement timeout on the coordinator first would leave the worker's statement to run
    // once the lock is gone (Citus's cancel of it is not certain: seen here, one call of five
    // charged after its 503). Every call has a connection, so each waits for the lock alone.
    let citus = admin.on_citus().await?;
    let proxy = TestProxy::start_with(|c| {
        c.limits.lock_timeout_ms = 800;
        c.limits.queue_timeout_ms = 400;
        c.pool_size = 6;
    })
    .await?;
    let locker = Admin::connect().await?;
    let w = admin.new_wallet_with(50).await?;
    let before = admin.log_counts(&w).await?;
    locker.lock_wallet(&w).await?;

    // The first call waits for the row in the database until lock_timeout; the calls of the
    // same token behind it wait in the proxy's queue until the queue timeout.
    let mut set = JoinSet::new();
    for i in 0..5 {
        let (api, token) = (proxy.api().clone(), w.token.clone());
        set.spawn(async move {
            let start = Instant::now();
            let r = api.get(&format!("/kv/g/k{i}"), Some(&token)).await?;
            anyhow::Ok((r, start.elapsed()))
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answers = Vec::new();
    while let Some(joined) = set.join_next().await {
        answers.push(joined??);
    }
    for (r, took) in &answers {
        assert_eq!(r.status, 503, "{:?}", r.text());
        assert_eq!(r.text(), "Service Unavailable");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.cost().is_none(), "a 503 names no cost");
        let most = Duration::from_secs(if citus { 4 } else { 3 });
        if *took > most {
            bail!("a blocked call took {took:?}");
        }
    }
    locker.commit().await?;
    assert_eq!(admin.balance(&w).await?, 50, "nothing charged");
    assert_eq!(admin.log_counts(&w).await?, before, "nothing logged");
    // Released, the wallet is served again.
    let (r, _) = timed_get(&proxy, &w.token, "/kv/g/k0").await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.balance(), Some(49));
    Ok(())
}

#[tokio::test]
async fn full_queues_answer_503_at_once() -> Result<()> {
    let proxy = TestProxy::start_with(|c| {
        c.limits.queue_max = 2;
    })
    .await?;
    let admin = Admin::connect().await?;
    if !admin.group_commit().await? {
        // (the queues are group commit's, which a distributed install turns off)
        eprintln!("skipped: no group commit on a distributed install");
        return Ok(());
    }
    let locker = Admin::connect().await?;
    let w = admin.new_wallet_with(50).await?;
    let pid = locker.lock_wallet(&w).await?;
    let mut set = JoinSet::new();
    for i in 0..3 {
        let (api, token) = (proxy.api().clone(), w.token.clone());
        set.spawn(async move { api.get(&format!("/kv/g/q{i}"), Some(&token)).await });
        // The first waits on the row in the database, then two wait in the queue.
        if i == 0 {
            while admin.sessions_blocked_by(pid).await? == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            while proxy.api().metric("echovalue_proxy_batch_queued").await? < i as f64 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let (r, took) = timed_get(&proxy, &w.token, "/kv/g/over").await?;
    assert_eq!(r.status, 503, "{:?}", r.text());
    assert!(took < Duration::from_secs(1), "{took:?}");
    locker.commit().await?;
    while let Some(joined) = set.join_next().await {
        assert_eq!(joined??.status, 404);
    }
    assert_eq!(
        admin.balance(&w).await?,
        47,
        "the three that ran, and not the refused one"
    );
    Ok(())
}
