//! Group commit across tokens (proxy/src/batch/): with every slot taken, the calls of
//! different tokens that wait run as one transaction, each answer exact, and a failing call
//! among them fails alone. Deterministic as in `batch.rs`: an admin session holds a wallet's
//! row lock while the others queue behind the one slot.

mod batch_support;

use anyhow::Result;
use batch_support::*;
use echovalue_tests::{Admin, Api, Reply, TestProxy, Wallet};
use tokio::task::JoinSet;

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
    if batching_off(api, &admin).await? {
        return Ok(());
    }

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
    if batching_off(api, &admin).await? {
        return Ok(());
    }
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
