//! Recharge tiers and Stripe events as the tests arrange and read them.

use anyhow::{bail, Context, Result};

use super::{Admin, Wallet, WALLET_ID};

/// A recharge tier made for one test.
#[derive(Debug, Clone)]
pub struct Tier {
    pub amount: i32,
    pub link_id: String,
    pub credits: i64,
}

impl Admin {
    /// A recharge tier of its own for one test (random amount and payment-link id), so tests
    /// running in parallel never share one. [`Admin::drop_tier`] removes it.
    pub async fn new_tier(&self, credits: i64) -> Result<Tier> {
        self.new_tier_for_link(&crate::stripe::unique("plink"), credits)
            .await
    }

    /// Inserts a tier for a given payment-link id, as an operator fixing a missing tier does.
    pub async fn new_tier_for_link(&self, link_id: &str, credits: i64) -> Result<Tier> {
        let amount = 1_000_000 + (rand::random::<u32>() % 1_000_000_000) as i32;
        self.client
            .execute(
                "insert into echovalue.recharge_tiers (amount, link, stripe_link_id, credits) \
                 values ($1, 'https://buy.stripe.com/test_' || $2, $2, $3)",
                &[&amount, &link_id, &credits],
            )
            .await
            .context("cannot insert a recharge tier")?;
        Ok(Tier {
            amount,
            link_id: link_id.to_owned(),
            credits,
        })
    }

    pub async fn drop_tier(&self, tier: &Tier) -> Result<()> {
        self.client
            .execute(
                "delete from echovalue.recharge_tiers where amount = $1",
                &[&tier.amount],
            )
            .await?;
        Ok(())
    }

    /// How many rows hold this Stripe event id (0 or 1).
    pub async fn stripe_event_count(&self, id: &str) -> Result<i64> {
        Ok(self
            .client
            .query_one(
                "select count(*) from echovalue.stripe_events where id = $1",
                &[&id],
            )
            .await?
            .get(0))
    }

    /// State and granted credits of a recorded Stripe event.
    pub async fn stripe_event(&self, id: &str) -> Result<Option<(String, Option<i64>)>> {
        let row = self
            .client
            .query_opt(
                "select state, credits from echovalue.stripe_events where id = $1",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Waits (up to 20 s) until a Stripe event reaches `state`; fails with its last state.
    pub async fn wait_stripe_state(&self, id: &str, state: &str) -> Result<Option<i64>> {
        let mut last = None;
        for _ in 0..400 {
            last = self.stripe_event(id).await?;
            if let Some((s, credits)) = &last {
                if s == state {
                    return Ok(*credits);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        bail!("Stripe event {id} did not reach {state}: last {last:?}")
    }

    /// The operator's view of an event that was not applied: (state, detail).
    pub async fn stripe_unapplied(&self, id: &str) -> Result<Option<(String, Option<String>)>> {
        let row = self
            .client
            .query_opt(
                "select state, detail from echovalue.stripe_events_unapplied where id = $1",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// The operator's retry of an event that could not be applied.
    pub async fn stripe_retry(&self, id: &str) -> Result<String> {
        Ok(self
            .client
            .query_one(
                "select echovalue.stripe_event_retry(event_id => $1)",
                &[&id],
            )
            .await?
            .get(0))
    }

    /// Records a Stripe event through SQL, as the proxy does after verifying it; its status.
    pub async fn stripe_record(&self, payload: &str) -> Result<i32> {
        Ok(self
            .client
            .query_one(
                "select status from echovalue.stripe_event_record(payload => $1)",
                &[&payload],
            )
            .await?
            .get(0))
    }

    /// Log entries of a wallet on endpoint `recharge`: (count, sum of cost).
    pub async fn recharge_logs(&self, w: &Wallet) -> Result<(i64, i64)> {
        let row = self
            .client
            .query_one(
                &format!(
                    "select count(*), coalesce(sum(cost), 0)::bigint from echovalue.logs \
                     where wallet_id = {WALLET_ID} and endpoint = 'recharge'"
                ),
                &[&w.hash],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}
