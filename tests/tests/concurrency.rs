//! The counting test of SPEC section 4: N parallel requests against a wallet with k credits
//! give exactly k successes, the balance never goes negative, and every charge is logged.

use anyhow::Result;
use echovalue_tests::{Admin, TestProxy};
use tokio::task::JoinSet;

const REQUESTS: usize = 500;
const CREDITS: i64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_requests_never_overspend() -> Result<()> {
    let proxy = TestProxy::start_with(|c| c.pool_size = 16).await?;
    let admin = Admin::connect().await?;
    let w = admin.new_wallet_with(CREDITS).await?;
    let (rows_before, charged_before) = admin.log_counts(&w).await?;

    let mut set = JoinSet::new();
    for i in 0..REQUESTS {
        let api = proxy.api().clone();
        let token = w.token.clone();
        set.spawn(async move {
            // Half writes, half balance checks: both cost 1 and touch the same wallet row.
            if i % 2 == 0 {
                api.post(&format!("/kv/race/k{i}"), Some(&token), "v").await
            } else {
                api.get("/token", Some(&token)).await
            }
        });
    }
    let (mut ok, mut refused, mut other) = (0, 0, Vec::new());
    let mut balances = Vec::new();
    while let Some(joined) = set.join_next().await {
        let r = joined??;
        match r.status {
            200 => {
                ok += 1;
                assert_eq!(r.cost(), Some(1));
                balances.push(r.balance().unwrap_or(-1));
            }
            402 => {
                refused += 1;
                assert_eq!(r.cost(), Some(0));
                assert_eq!(r.text(), "Insufficient credits");
            }
            s => other.push((s, r.text())),
        }
    }
    assert!(other.is_empty(), "unexpected statuses: {other:?}");
    assert_eq!(ok, CREDITS as usize, "successes");
    assert_eq!(refused, REQUESTS - CREDITS as usize, "402s");
    assert_eq!(admin.balance(&w).await?, 0, "final balance");
    // Each success saw a distinct balance after its charge: 99, 98, ..., 0.
    balances.sort_unstable();
    assert_eq!(balances, (0..CREDITS).collect::<Vec<_>>());

    let (rows, charged) = admin.log_counts(&w).await?;
    assert_eq!(
        charged - charged_before,
        CREDITS,
        "every charge logged once"
    );
    // the 400 refusals charged nothing: logged up to echovalue.refusal_logs_per_minute
    let refusals_logged = rows - rows_before - CREDITS;
    assert!(
        Admin::refusals_logged_ok(refusals_logged, refused),
        "{refusals_logged} of {refused} refusals logged"
    );
    Ok(())
}
