//! Hot-token batching (proxy/src/batch.rs): calls of one token that arrive while one of its
//! calls is in flight run together in one transaction, and every answer is what it would have
//! been alone: exact balances, complete logs, and one failing call never fails the others.
//!
//! The tests make batching deterministic by holding the wallet's row lock from an admin
//! session: the first request blocks on it in the database, the others queue in the proxy,
//! and releasing the lock lets the queue run as one batch.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Result};
use echovalue_tests::{Admin, Api, Reply, TestProxy, Wallet};
use tokio::task::JoinSet;

const QUEUED: &str = "echovalue_proxy_batch_queued";
const BATCHES: &str = "echovalue_proxy_batches_total";
const BATCHED: &str = "echovalue_proxy_batched_requests_total";
const FALLBACKS: &str = "echovalue_proxy_batch_fallbacks_total";

/// Polls `check` until it holds (20 s at most).
async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    for _ in 0..1000 {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("timed out waiting until {what}")
}

/// `POST /kv/{grp}/{key}` for each key, all at once; replies keyed by key.
fn spawn_sets(
    set: &mut JoinSet<Result<(String, Reply)>>,
    api: &Api,
    w: &Wallet,
    grp: &str,
    keys: &[String],
) {
    for key in keys {
        let (api, token, path, key) = (
            api.clone(),
            w.token.clone(),
            format!("/kv/{grp}/{key}"),
            key.clone(),
        );
        set.spawn(async move {
            let r = api.post(&path, Some(&token), format!("v-{key}")).await?;
            Ok((key, r))
        });
    }
}

async fn collect(set: &mut JoinSet<Result<(String, Reply)>>) -> Result<Vec<(String, Reply)>> {
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        out.push(joined??);
    }
    Ok(out)
}

/// Starts one request on a locked wallet and waits until it blocks in the database; the
/// returned admin session (and its backend pid) holds the lock until `commit`.
async fn lock_and_lead(
    proxy: &TestProxy,
    w: &Wallet,
    set: &mut JoinSet<Result<(String, Reply)>>,
    grp: &str,
) -> Result<(Admin, i32)> {
    let locker = Admin::connect().await?;
    let pid = locker.lock_wallet(w).await?;
    spawn_sets(set, proxy.api(), w, grp, &["lead".to_owned()]);
    wait_until(
        "the first request waits for the wallet's row lock",
        || async { Ok(locker.sessions_blocked_by(pid).await? == 1) },
    )
    .await?;
    Ok((locker, pid))
}

async fn wait_queued(api: &Api, n: usize) -> Result<()> {
    wait_until(&format!("{n} requests are queued"), || async {
        Ok(api.metric(QUEUED).await? == n as f64)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_calls_of_a_token_commit_as_one_batch() -> Result<()> {
    const N: usize = 10;
    let proxy = TestProxy::start().await?;
    let admin = Admin::connect().await?;
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

    let mut set = JoinSet::new();
    let (locker, _) = lock_and_lead(&proxy, &w, &mut set, "load").await?;
    let first: Vec<String> = (1..WAVE).map(|i| format!("a{i}")).collect();
    spawn_sets(&mut set, api, &w, "load", &first);
    if batch_max > 1 {
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
    assert_eq!(charged - charged_before, CREDITS, "charged log rows");
    assert_eq!(
        rows - rows_before,
        2 * WAVE as i64,
        "every request logged once"
    );
    assert_eq!(admin.kv_keys(&w, "load").await?.len(), CREDITS as usize);

    let batches = api.metric(BATCHES).await?;
    if batch_max > 1 {
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

/// Starts `POST /kv/{grp}/{key}` on each wallet, one request per wallet, all at once.
fn spawn_one_set_per_wallet(
    set: &mut JoinSet<Result<(String, Reply)>>,
    api: &Api,
    wallets: &[Wallet],
    grp: &str,
    key_of: impl Fn(usize) -> String,
) {
    for (i, w) in wallets.iter().enumerate() {
        let (api, token, key) = (api.clone(), w.token.clone(), key_of(i));
        let path = format!("/kv/{grp}/{key}");
        set.spawn(async move {
            let r = api.post(&path, Some(&token), format!("v-{key}")).await?;
            Ok((format!("{i}:{key}"), r))
        });
    }
}

/// A proxy with one slot, a lead wallet of 100 credits and `n` more wallets, wallet i holding
/// `credits(i)`.
async fn one_slot(
    n: usize,
    credits: impl Fn(usize) -> i64,
) -> Result<(TestProxy, Admin, Wallet, Vec<Wallet>)> {
    let proxy = TestProxy::start_with(|c| c.batch_slots = Some(1)).await?;
    let admin = Admin::connect().await?;
    let lead = admin.new_wallet_with(100).await?;
    let mut wallets = Vec::with_capacity(n);
    for i in 0..n {
        wallets.push(admin.new_wallet_with(credits(i)).await?);
    }
    Ok((proxy, admin, lead, wallets))
}

/// Group commit across tokens: with the one slot taken by a call stuck on a row lock, calls of
/// other tokens wait in the proxy, then run as ONE transaction with exact answers each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_of_different_tokens_share_a_transaction_when_every_slot_is_taken() -> Result<()> {
    const N: usize = 6;
    let (proxy, admin, lead_wallet, wallets) = one_slot(N, |i| 10 + i as i64).await?;
    let api = proxy.api();

    let mut lead = JoinSet::new();
    let (locker, pid) = lock_and_lead(&proxy, &lead_wallet, &mut lead, "x").await?;
    let mut set = JoinSet::new();
    spawn_one_set_per_wallet(&mut set, api, &wallets, "x", |i| format!("k{i}"));
    wait_queued(api, N).await?;
    // They wait in the proxy, not on a connection: only the lead is in the database.
    assert_eq!(admin.sessions_blocked_by(pid).await?, 1);
    locker.commit().await?;
    let (_, r) = collect(&mut lead).await?.remove(0);
    assert_eq!((r.status, r.balance()), (200, Some(99)));

    for (key, r) in collect(&mut set).await? {
        let i: usize = key.split(':').next().unwrap_or_default().parse()?;
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        assert_eq!(
            (r.cost(), r.balance()),
            (Some(1), Some(9 + i as i64)),
            "{key}"
        );
    }
    // One transaction: every wallet's entry has the batch's start time.
    let mut times = Vec::new();
    for (i, w) in wallets.iter().enumerate() {
        assert_eq!(admin.balance(w).await?, 9 + i as i64);
        assert_eq!(admin.kv_keys(w, "x").await?, vec![format!("k{i}")]);
        let entries = admin.log_entries(w).await?;
        assert_eq!(
            entries.len(),
            2,
            "the wallet's creation and the request: {entries:?}"
        );
        times.push(entries[1].0.clone());
    }
    assert!(times.iter().all(|t| t == &times[0]), "{times:?}");
    assert_eq!(api.metric(BATCHES).await?, 1.0);
    assert_eq!(api.metric(BATCHED).await?, N as f64);
    assert_eq!(api.metric(QUEUED).await?, 0.0);

    // The slot is free again: a lone call runs alone.
    let r = api.get("/token", wallets[0].t()).await?;
    assert_eq!((r.status, r.balance()), (200, Some(8)));
    assert_eq!(api.metric(BATCHES).await?, 1.0);
    Ok(())
}

/// A failing call in a transaction of several tokens rolls it back; every call then runs
/// alone, so the others still succeed, each charged once, and the failed one costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_call_among_other_tokens_fails_alone() -> Result<()> {
    const N: usize = 5;
    let (proxy, admin, lead_wallet, wallets) = one_slot(N, |_| 20).await?;
    let api = proxy.api();
    admin.fail_kv_writes_of("boom-x").await?;
    let outcome = async {
        let mut lead = JoinSet::new();
        let (locker, _) = lock_and_lead(&proxy, &lead_wallet, &mut lead, "y").await?;
        let mut set = JoinSet::new();
        let key_of = |i: usize| {
            if i == 2 {
                "boom-x".to_owned()
            } else {
                format!("k{i}")
            }
        };
        spawn_one_set_per_wallet(&mut set, api, &wallets, "y", key_of);
        wait_queued(api, N).await?;
        locker.commit().await?;
        collect(&mut lead).await?;
        collect(&mut set).await
    }
    .await;
    admin.drop_kv_failure("boom-x").await?;
    for (key, r) in outcome? {
        let i: usize = key.split(':').next().unwrap_or_default().parse()?;
        if i == 2 {
            assert_eq!(
                (r.status, r.text()),
                (500, "Internal Server Error".to_owned())
            );
        } else {
            assert_eq!(
                (r.status, r.balance()),
                (200, Some(19)),
                "{key}: {}",
                r.text()
            );
        }
    }
    for (i, w) in wallets.iter().enumerate() {
        // (every wallet has one entry from its creation)
        let (charged, rows) = if i == 2 { (0, 1) } else { (1, 2) };
        assert_eq!(admin.balance(w).await?, 20 - charged, "wallet {i}");
        assert_eq!(admin.log_counts(w).await?.0, rows, "wallet {i}");
    }
    assert_eq!(api.metric(BATCHES).await?, 1.0);
    assert_eq!(api.metric(FALLBACKS).await?, 1.0);
    assert_eq!(api.metric(QUEUED).await?, 0.0);
    Ok(())
}
