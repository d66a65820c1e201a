//! What the batching tests share: the batch metrics' names, waiting for the proxy's queue, and
//! requests sent in parallel while an admin session holds a wallet's row lock.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Result};
use echovalue_tests::{Admin, Api, Reply, TestProxy, Wallet};
use tokio::task::JoinSet;

pub const QUEUED: &str = "echovalue_proxy_batch_queued";
pub const BATCHES: &str = "echovalue_proxy_batches_total";
pub const BATCHED: &str = "echovalue_proxy_batched_requests_total";
pub const FALLBACKS: &str = "echovalue_proxy_batch_fallbacks_total";
pub const GROUP_COMMIT: &str = "echovalue_proxy_group_commit";

/// Whether the proxy (default ECHOVALUE_BATCH_MAX) batches on this database: what the
/// extension says (`echovalue.group_commit()`, false once distributed on Citus), once the proxy
/// has taken the answer.
pub async fn grouping(api: &Api, admin: &Admin) -> Result<bool> {
    let allowed = admin.group_commit().await?;
    wait_until("the proxy follows the database on group commit", || async {
        Ok(api.metric(GROUP_COMMIT).await? == f64::from(u8::from(allowed)))
    })
    .await?;
    Ok(allowed)
}

/// For the tests of batching itself: true (after saying so) where the database turns it off.
pub async fn batching_off(api: &Api, admin: &Admin) -> Result<bool> {
    let off = !grouping(api, admin).await?;
    if off {
        eprintln!("skipped: no group commit on a distributed install (see group_commit_follows_the_database)");
    }
    Ok(off)
}

/// Polls `check` until it holds (20 s at most).
pub async fn wait_until<F, Fut>(what: &str, mut check: F) -> Result<()>
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
pub fn spawn_sets(
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

pub async fn collect(set: &mut JoinSet<Result<(String, Reply)>>) -> Result<Vec<(String, Reply)>> {
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        out.push(joined??);
    }
    Ok(out)
}

/// Starts one request on a locked wallet and waits until it blocks in the database; the
/// returned admin session (and its backend pid) holds the lock until `commit`.
pub async fn lock_and_lead(
    proxy: &TestProxy,
    w: &Wallet,
    set: &mut JoinSet<Result<(String, Reply)>>,
    grp: &str,
) -> Result<(Admin, i64)> {
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

pub async fn wait_queued(api: &Api, n: usize) -> Result<()> {
    wait_until(&format!("{n} requests are queued"), || async {
        Ok(api.metric(QUEUED).await? == n as f64)
    })
    .await
}
