//! Hot-token batching (proxy/src/batch.rs): calls of one token that arrive while one of its
//! calls is in flight run together in one transaction, and every answer is what it would have
//! been alone: exact balances, complete logs, and one failing call never fails the others.
//!
//! The tests make batching deterministic by holding the wallet's row lock from an admin
//! session: the first request blocks on it in the database, the others queue in the proxy,
//! and releasing the lock lets the queue run as one batch.

mod batch_support;

use anyhow::Result;
use batch_support::*;
use echovalue_tests::{Admin, TestProxy, Wallet};
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_calls_of_a_token_commit_as_one_batch() -> Result<()> {
    const N: usize = 10;
    let proxy = TestProxy::start().await?;
    let admin = Admin::connect().await?;
    if batching_off(proxy.api(), &admin).await? {
        return Ok(());
    }
    let w = admin.new_wallet_with(100).await?;
    let (rows_before, charged_before) = admin.log_counts(&w).await?;
    let api = proxy.api();

    let mut set = JoinSet::new();
    let (locker, pid) = lock_and_lead(&proxy, &w, &mut set, "b").await?;
    let keys: Vec<String> = (1..N).map(|i| format!("k{i:02}")).collect();
    spawn_sets(&mut set, api, &w, "b", &keys);
    wait_queued(api, N - 1).await?;
    // Queued calls hold no connection and take no lock: only the first one waits on the row.
    assert_eq!(admin.sessions_blocked_by(pid).await?, 1);
    locker.commit().await?;

    let replies = collect(&mut set).await?;
    let mut balances = Vec::new();
    for (key, r) in &replies {
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        assert_eq!(r.cost(), Some(1), "{key}");
        balances.push(r.balance().unwrap_or(-1));
    }
    // Each call saw the ones before it: N distinct balances, 99 down to 100 - N.
    balances.sort_unstable();
    assert_eq!(balances, (100 - N as i64..100).collect::<Vec<_>>());
    assert_eq!(admin.balance(&w).await?, 100 - N as i64);
    let (rows, charged) = admin.log_counts(&w).await?;
    assert_eq!(
        (rows - rows_before, charged - charged_before),
        (N as i64, N as i64)
    );
    // Two transactions: the first call's and the batch's (`now()` is a transaction's start,
    // so a log entry's time tells its transaction). In each, entries follow arrival order.
    let entries = admin.log_entries(&w).await?;
    let entries = &entries[entries.len() - N..];
    assert_eq!(entries[0].1, 99, "the first call is logged first");
    let batch_time = &entries[1].0;
    assert_ne!(batch_time, &entries[0].0, "{entries:?}");
    assert!(
        entries[1..].iter().all(|(t, _)| t == batch_time),
        "{entries:?}"
    );
    assert!(
        entries.windows(2).all(|e| e[1].1 == e[0].1 - 1),
        "{entries:?}"
    );
    let mut all_keys = keys.clone();
    all_keys.push("lead".into());
    all_keys.sort();
    assert_eq!(admin.kv_keys(&w, "b").await?, all_keys);

    // The first call ran alone; the N - 1 that waited ran as one transaction.
    assert_eq!(api.metric(BATCHES).await?, 1.0);
    assert_eq!(api.metric(BATCHED).await?, (N - 1) as f64);
    assert_eq!(api.metric(FALLBACKS).await?, 0.0);
    assert_eq!(api.metric(QUEUED).await?, 0.0);

    // The token is idle again: the next call runs alone, not in a batch.
    let r = api.get("/token", w.t()).await?;
    assert_eq!((r.status, r.balance()), (200, Some(100 - N as i64 - 1)));
    assert_eq!(api.metric(BATCHES).await?, 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_call_fails_alone_and_costs_nothing() -> Result<()> {
    const N: usize = 8;
    let proxy = TestProxy::start().await?;
    let admin = Admin::connect().await?;
    if batching_off(proxy.api(), &admin).await? {
        return Ok(());
    }
    let w = admin.new_wallet_with(100).await?;
    admin.fail_kv_writes_of("boom").await?;
    let outcome = failing_call_in_a_batch(&proxy, &admin, &w, N).await;
    admin.drop_kv_failure("boom").await?;
    outcome
}

async fn failing_call_in_a_batch(
    proxy: &TestProxy,
    admin: &Admin,
    w: &Wallet,
    n: usize,
) -> Result<()> {
    let (rows_before, _) = admin.log_counts(w).await?;
    let api = proxy.api();
    let mut set = JoinSet::new();
    let (locker, _) = lock_and_lead(proxy, w, &mut set, "iso").await?;
    // The failing call sits in the middle of the queue.
    let mut keys: Vec<String> = (1..n).map(|i| format!("k{i:02}")).collect();
    keys[n / 2] = "boom".into();
    let (front, back) = keys.split_at(n / 2);
    spawn_sets(&mut set, api, w, "iso", front);
    wait_queued(api, front.len()).await?;
    spawn_sets(&mut set, api, w, "iso", &back[..1]);
    wait_queued(api, front.len() + 1).await?;
    spawn_sets(&mut set, api, w, "iso", &back[1..]);
    wait_queued(api, n - 1).await?;
    locker.commit().await?;

    let mut balances = Vec::new();
    for (key, r) in collect(&mut set).await? {
        if key == "boom" {
            assert_eq!(r.status, 500, "{}", r.text());
            assert_eq!(r.text(), "Internal Server Error");
        } else {
            assert_eq!(r.status, 200, "{key}: {}", r.text());
            balances.push(r.balance().unwrap_or(-1));
        }
    }
    // n - 1 successes with exact balances; the failed call was neither charged nor logged.
    balances.sort_unstable();
    let paid = n as i64 - 1;
    assert_eq!(balances, (100 - paid..100).collect::<Vec<_>>());
    assert_eq!(admin.balance(w).await?, 100 - paid);
    assert_eq!(admin.log_counts(w).await?.0 - rows_before, paid);
    assert!(!admin.kv_keys(w, "iso").await?.contains(&"boom".to_owned()));
    assert_eq!(admin.kv_keys(w, "iso").await?.len(), n - 1);
    assert_eq!(api.metric(BATCHES).await?, 1.0);
    assert_eq!(api.metric(BATCHED).await?, (n - 1) as f64);
    assert_eq!(api.metric(FALLBACKS).await?, 1.0);
    Ok(())
}

/// SPEC section 4 through batches: a first wave queues behind a held lock (so batches surely
/// happen, mixing successes and 402s), a second wave races with it.
async fn exact_under_load(batch_max: usize) -> Result<()> {
    const WAVE: usize = 100;
    const CREDITS: i64 = 30;
    const POOL: usize = 16;
    let proxy = TestProxy::start_with(|c| {
        c.pool_size = POOL;
        c.batch_max = batch_max;
    })
    .await?;
    let admin = Admin::connect().await?;
    let w = admin.new_wallet_with(CREDITS).await?;
    let (rows_before, charged_before) = admin.log_counts(&w).await?;
    let api = proxy.api();
    // (on a distributed install the proxy does not batch, whatever ECHOVALUE_BATCH_MAX says)
    let batched = batch_max > 1 && grouping(api, &admin).await?;

    let mut set = JoinSet::new();
    let (locker, _) = lock_and_lead(&proxy, &w, &mut set, "load").await?;
    let first: Vec<String> = (1..WAVE).map(|i| format!("a{i}")).collect();
    spawn_sets(&mut set, api, &w, "load", &first);
    if batched {
        wait_queued(api, WAVE - 1).await?;
    } else {
        // Unbatched, every pooled connection waits on the row and the rest wait for one.
        wait_until(
            "the other requests wait for a pooled connection",
            || async {
                Ok(api.metric("echovalue_proxy_db_pool_waiting").await? == (WAVE - POOL) as f64)
            },
        )
        .await?;
    }
    locker.commit().await?;
    let second: Vec<String> = (0..WAVE).map(|i| format!("b{i}")).collect();
    spawn_sets(&mut set, api, &w, "load", &second);

    let (mut ok, mut refused, mut other) = (0, 0, Vec::new());
    let mut balances = Vec::new();
    for (key, r) in collect(&mut set).await? {
        match r.status {
            200 => {
                ok += 1;
                assert_eq!(r.cost(), Some(1), "{key}");
                balances.push(r.balance().unwrap_or(-1));
            }
            402 => {
                refused += 1;
                assert_eq!(r.cost(), Some(0), "{key}");
                assert_eq!(r.text(), "Insufficient credits");
            }
            s => other.push((key, s, r.text())),
        }
    }
    assert!(other.is_empty(), "unexpected statuses: {other:?}");
    assert_eq!(
        (ok, refused),
        (CREDITS as usize, 2 * WAVE - CREDITS as usize)
    );
    balances.sort_unstable();
    assert_eq!(balances, (0..CREDITS).collect::<Vec<_>>());
    assert_eq!(admin.balance(&w).await?, 0);
    let (rows, charged) = admin.log_counts(&w).await?;
    assert_eq!(
        charged - charged_before,
        CREDITS,
        "every charge logged once"
    );
    let refusals_logged = rows - rows_before - CREDITS;
    assert!(
        Admin::refusals_logged_ok(refusals_logged, refused),
        "{refusals_logged} of {refused} refusals logged"
    );
    assert_eq!(admin.kv_keys(&w, "load").await?.len(), CREDITS as usize);

    let batches = api.metric(BATCHES).await?;
    if batched {
        // 99 queued calls in batches of at most 64.
        assert!(batches >= 2.0, "{batches} batches");
        assert!(api.metric(BATCHED).await? >= (WAVE - 1) as f64);
    } else {
        assert_eq!(batches, 0.0);
    }
    assert_eq!(api.metric(QUEUED).await?, 0.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_calls_never_overspend() -> Result<()> {
    exact_under_load(64).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unbatched_calls_never_overspend() -> Result<()> {
    exact_under_load(1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_first_call_still_hands_its_queue_on() -> Result<()> {
    let proxy = TestProxy::start().await?;
    let admin = Admin::connect().await?;
    if batching_off(proxy.api(), &admin).await? {
        return Ok(());
    }
    let w = admin.new_wallet_with(100).await?;
    let api = proxy.api();
    let mut lead = JoinSet::new();
    let (locker, _) = lock_and_lead(&proxy, &w, &mut lead, "c").await?;
    let mut set = JoinSet::new();
    let keys: Vec<String> = (1..4).map(|i| format!("k{i}")).collect();
    spawn_sets(&mut set, api, &w, "c", &keys);
    wait_queued(api, 3).await?;
    // The first client gives up: the proxy drops its request while its statement still
    // waits in the database, and the queue must not wait for an answer nobody reads.
    lead.abort_all();
    while lead.join_next().await.is_some() {}
    locker.commit().await?;

    let mut balances = Vec::new();
    for (key, r) in collect(&mut set).await? {
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        balances.push(r.balance().unwrap_or(-1));
    }
    // The abandoned statement itself ran (it was in the database already) before the batch.
    balances.sort_unstable();
    assert_eq!(balances, vec![96, 97, 98]);
    assert_eq!(api.metric(BATCHES).await?, 1.0);
    // The proxy did drop the first request: only the three others were answered.
    let answered = r#"echovalue_proxy_http_requests_total{route="/kv/{group}/{key}",method="POST",status="200"}"#;
    assert_eq!(api.metric(answered).await?, 3.0);
    // The token is idle again and nothing is left queued.
    assert_eq!(api.metric(QUEUED).await?, 0.0);
    let r = api.get("/token", w.t()).await?;
    assert_eq!((r.status, r.balance()), (200, Some(95)));
    Ok(())
}

/// Group commit follows the extension (`echovalue.group_commit()`): on one Postgres the calls
/// that waited for a token's call run as one batch; on a distributed install (Citus) none waits
/// in the proxy, every call goes to the database alone (so Citus runs it on its wallet's node),
/// and they queue on the wallet's row there instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_follows_the_database() -> Result<()> {
    const N: usize = 6;
    // (a connection for every call: unbatched, each waits in the database, not for the pool)
    let proxy = TestProxy::start_with(|c| c.pool_size = N + 2).await?;
    let admin = Admin::connect().await?;
    let api = proxy.api();
    let batched = grouping(api, &admin).await?;
    assert_eq!(
        batched,
        !admin.on_citus().await?,
        "group commit exactly off the cluster"
    );
    let w = admin.new_wallet_with(100).await?;
    let mut set = JoinSet::new();
    let (locker, pid) = lock_and_lead(&proxy, &w, &mut set, "g").await?;
    let keys: Vec<String> = (1..N).map(|i| format!("k{i}")).collect();
    spawn_sets(&mut set, api, &w, "g", &keys);
    // the proxy's connections in use: each call in the database holds one
    let in_use = || async {
        anyhow::Ok(
            api.metric("echovalue_proxy_db_pool_size").await?
                - api.metric("echovalue_proxy_db_pool_available").await?,
        )
    };
    if batched {
        wait_queued(api, N - 1).await?;
        assert_eq!(admin.sessions_blocked_by(pid).await?, 1);
    } else {
        wait_until(
            "every call waits on the wallet's row in the database",
            // (at least: the proxy's ask of group_commit() may hold one more a moment)
            || async { Ok(in_use().await? >= N as f64) },
        )
        .await?;
        assert_eq!(api.metric(QUEUED).await?, 0.0);
    }
    locker.commit().await?;
    for (key, r) in collect(&mut set).await? {
        assert_eq!(r.status, 200, "{key}: {}", r.text());
    }
    assert_eq!(admin.balance(&w).await?, 100 - N as i64);
    let batches = api.metric(BATCHES).await?;
    assert_eq!(batches, if batched { 1.0 } else { 0.0 });
    Ok(())
}
