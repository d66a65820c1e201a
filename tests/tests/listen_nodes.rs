//! Wake-ups from every node (common/src/listen.rs, `echovalue.listen_nodes()`): on Citus a
//! delegated call sends its NOTIFY on the worker that holds its wallet, so a listener connected
//! to the coordinator must also listen on each worker. A NOTIFY sent on each worker (and, on
//! one Postgres, on it) reaches a listener that was given the coordinator's address alone.

use std::time::Duration;

use anyhow::Result;
use echovalue_tests::{Admin, Notifications};

const CHANNEL: &str = "echovalue_test_nodes";

#[tokio::test]
async fn a_notify_on_any_node_reaches_a_listener_of_one() -> Result<()> {
    let admin = Admin::connect().await?;
    let mut wakeups = Notifications::start(&admin, CHANNEL).await?;
    let sent: Vec<String> = if admin.on_citus().await? {
        // one NOTIFY on each worker, none on the coordinator the listener was pointed at
        let rows = admin
            .client()
            .query(
                "select nodeport::text, success, result from run_command_on_workers(
                     format('select pg_notify(%L, current_setting(''port''))', $1::text))",
                &[&CHANNEL],
            )
            .await?;
        assert_eq!(rows.len(), 2, "two workers");
        rows.iter()
            .map(|r| {
                assert!(r.get::<_, bool>(1), "{:?}", r.get::<_, String>(2));
                r.get(0)
            })
            .collect()
    } else {
        admin
            .client()
            .execute("select pg_notify($1, current_setting('port'))", &[&CHANNEL])
            .await?;
        vec![admin
            .client()
            .query_one("select current_setting('port')", &[])
            .await?
            .get(0)]
    };
    let mut heard = Vec::new();
    for _ in &sent {
        heard.push(wakeups.next(Duration::from_secs(10)).await?);
    }
    heard.sort();
    let mut sent = sent;
    sent.sort();
    assert_eq!(
        heard, sent,
        "one wake-up from each node, each from its own node"
    );
    Ok(())
}
