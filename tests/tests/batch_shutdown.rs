//! A runtime shut down while calls of one token wait in its batch queue: the tasks are
//! cancelled, and the waiting calls are abandoned once. Before the fix, the guard of the busy
//! token spawned a driver on the shutting-down runtime, which cancelled it inside `spawn` and
//! dropped a guard again: the recursion overflowed the stack and aborted the process.

use std::time::Duration;

use anyhow::Result;
use echovalue_tests::{Admin, TestProxy};

const ROUNDS: usize = 6;
const CALLS: usize = 300;

#[test]
fn shutting_down_with_calls_queued_behind_a_token_abandons_them_once() -> Result<()> {
    for _ in 0..ROUNDS {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()?;
        let queued = runtime.block_on(async {
            // Two database slots for 300 calls of one token: most of them queue.
            let proxy = TestProxy::start_with(|c| c.pool_size = 2).await?;
            let admin = Admin::connect().await?;
            if !admin.group_commit().await? {
                return anyhow::Ok(None);
            }
            let w = admin.new_wallet_with(1_000_000).await?;
            for _ in 0..CALLS {
                let api = proxy.api().clone();
                let token = w.token.clone();
                tokio::spawn(async move { api.get("/token", Some(&token)).await });
            }
            // Until calls wait in the queue (the path under test), at most 5 s.
            let mut queued = 0.0;
            for _ in 0..500 {
                queued = proxy.api().metric("echovalue_proxy_batch_queued").await?;
                if queued > 0.0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            std::mem::forget(proxy); // its tasks end with the runtime, not before
            anyhow::Ok(Some(queued))
        })?;
        let Some(queued) = queued else {
            eprintln!("skipped: no group commit on a distributed install");
            return Ok(());
        };
        assert!(queued > 0.0, "no call waited in a queue");
        // Cancels every task at once: requests that hold the token, drivers, the server.
        runtime.shutdown_timeout(Duration::from_secs(5));
    }
    Ok(())
}
