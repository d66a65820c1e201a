//! The superuser side of the tests: creates wallets through the SQL API and arranges state
//! (balances, expiries) by writing the extension's tables directly, instead of sleeping.
//!
//! Every statement that names a table column lives in this module (here, `mail.rs` for
//! Mail2Webhook's tables, `stripe.rs` for tiers and Stripe events), so a schema change is fixed
//! in one place.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use tokio_postgres::{Client, NoTls};

use crate::env;

mod mail;
mod stripe;

use crate::token::{random_client_addr, sha256_hex};
pub use mail::{StoredAttachment, StoredMessage};
pub use stripe::Tier;

/// A wallet's root token and the hash the API shows for it.
#[derive(Debug, Clone)]
pub struct Wallet {
    pub token: String,
    pub hash: String,
}

impl Wallet {
    pub fn from_token(token: String) -> Self {
        let hash = sha256_hex(&token);
        Self { token, hash }
    }

    /// The token as the `x-token` argument of [`crate::Api`] calls.
    pub fn t(&self) -> Option<&str> {
        Some(&self.token)
    }
}

/// A superuser connection to the test database.
pub struct Admin {
    client: Client,
}

/// Selects the wallet row of a token hash (`$1`, hex).
const WALLET_ID: &str = "(select w.id from echovalue.wallets w where w.hash = $1)";

impl Admin {
    pub async fn connect() -> Result<Self> {
        Self::connect_to(&env::admin_url()?).await
    }

    /// Connects with any URL (the security test uses the proxy's role).
    pub async fn connect_to(url: &str) -> Result<Self> {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .context("cannot connect to the test database")?;
        tokio::spawn(async move {
            // The connection ends with the test; its error, if any, surfaces on the next query.
            let _ = conn.await;
        });
        Ok(Self { client })
    }

    /// The raw client, for statements specific to one test.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A new wallet (100 credits) made through `echovalue.token_new`, each from its own
    /// random client address so the token rate limit never couples tests.
    pub async fn new_wallet(&self) -> Result<Wallet> {
        let mut last = String::new();
        for _ in 0..5 {
            let addr = random_client_addr();
            let row = self
                .client
                .query_one(
                    "select status, body from echovalue.token_new(client_addr => $1::text::inet)",
                    &[&addr],
                )
                .await
                .context("echovalue.token_new failed")?;
            let status: i32 = row.get(0);
            let body: String = row.get(1);
            if status == 200 {
                return Ok(Wallet::from_token(body));
            }
            // A 429 means a random address collided with a recent one: draw another.
            last = format!("status {status}: {body}");
        }
        bail!("could not create a wallet: {last}")
    }

    /// A new wallet whose balance is then set to `credits`.
    pub async fn new_wallet_with(&self, credits: i64) -> Result<Wallet> {
        let w = self.new_wallet().await?;
        self.set_balance(&w, credits).await?;
        Ok(w)
    }

    pub async fn set_balance(&self, w: &Wallet, credits: i64) -> Result<()> {
        let n = self
            .client
            .execute(
                &format!("update echovalue.wallets set balance = $2 where id = {WALLET_ID}"),
                &[&w.hash, &credits],
            )
            .await?;
        if n != 1 {
            bail!("set_balance updated {n} rows");
        }
        Ok(())
    }

    pub async fn balance(&self, w: &Wallet) -> Result<i64> {
        let row = self
            .client
            .query_one(
                &format!("select balance from echovalue.wallets where id = {WALLET_ID}"),
                &[&w.hash],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Moves a key's expiry one second into the past, as if its TTL had run out.
    pub async fn expire_key(&self, w: &Wallet, grp: &str, key: &str) -> Result<()> {
        let n = self
            .client
            .execute(
                &format!(
                    "update echovalue.kv set expires_at = now() - interval '1 second' \
                     where wallet_id = {WALLET_ID} and grp = $2 and key = $3"
                ),
                &[&w.hash, &grp, &key],
            )
            .await?;
        if n != 1 {
            bail!("expire_key updated {n} rows");
        }
        Ok(())
    }

    /// Seconds from now until a key expires (None when the row does not exist).
    pub async fn key_ttl_seconds(&self, w: &Wallet, grp: &str, key: &str) -> Result<Option<f64>> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "select extract(epoch from expires_at - now())::float8 from echovalue.kv \
                     where wallet_id = {WALLET_ID} and grp = $2 and key = $3"
                ),
                &[&w.hash, &grp, &key],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Whether `logged` entries for `refused` refusals that charged nothing, made within a
    /// few seconds, are what the default `echovalue.refusal_logs_per_minute` (60) allows: all
    /// of them up to 60 a minute, so up to 120 when the run spans the turn of a minute.
    pub fn refusals_logged_ok(logged: i64, refused: usize) -> bool {
        const PER_MINUTE: i64 = 60;
        let refused = i64::try_from(refused).unwrap_or(i64::MAX);
        (refused.min(PER_MINUTE)..=refused.min(2 * PER_MINUTE)).contains(&logged)
    }

    /// Log rows of a wallet: (all, charged ones).
    pub async fn log_counts(&self, w: &Wallet) -> Result<(i64, i64)> {
        let row = self
            .client
            .query_one(
                &format!(
                    "select count(*), count(*) filter (where cost > 0) from echovalue.logs \
                     where wallet_id = {WALLET_ID}"
                ),
                &[&w.hash],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// Log entries of a wallet, oldest first: (transaction start `created`, as text in UTC
    /// with microseconds, and the balance after the request).
    pub async fn log_entries(&self, w: &Wallet) -> Result<Vec<(String, i64)>> {
        let rows = self
            .client
            .query(
                &format!(
                    "select to_char(created at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), \
                            balance from echovalue.logs where wallet_id = {WALLET_ID} order by created, id"
                ),
                &[&w.hash],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Keys of a group of the wallet, sorted.
    pub async fn kv_keys(&self, w: &Wallet, grp: &str) -> Result<Vec<String>> {
        let rows = self
            .client
            .query(
                &format!(
                    "select key from echovalue.kv where wallet_id = {WALLET_ID} and grp = $2 \
                     order by key"
                ),
                &[&w.hash, &grp],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Stores `value` under each of `keys` of a group through the SQL API (one statement, one
    /// credit each), for listings too large to fill over HTTP quickly.
    pub async fn kv_fill(&self, w: &Wallet, grp: &str, keys: &[String]) -> Result<()> {
        let n = self
            .client
            .execute(
                "select echovalue.kv_set(token => $1, grp => $2, key => k, value => 'v') \
                 from unnest($3::text[]) k",
                &[&w.token, &grp, &keys],
            )
            .await?;
        anyhow::ensure!(
            n == keys.len() as u64,
            "kv_fill stored {n} of {}",
            keys.len()
        );
        Ok(())
    }

    /// Makes every write of `key` to the KV table fail in the database (SQLSTATE P0001), as a
    /// broken call would; [`Admin::drop_kv_failure`] removes it. Each key has a trigger of its
    /// own (and a function of its own), so tests running at once do not undo each other's.
    pub async fn fail_kv_writes_of(&self, key: &str) -> Result<()> {
        let trigger = kv_failure_trigger(key);
        // (one statement at a time: Citus sends each DDL statement on to the workers whole,
        // and refuses several in one)
        for sql in [
            format!(
                "create or replace function public.{trigger}() returns trigger \
                 language plpgsql as $f$ begin \
                   raise exception 'ev_test: this key always fails'; \
                 end $f$"
            ),
            format!("drop trigger if exists {trigger} on echovalue.kv"),
            format!(
                "create trigger {trigger} before insert or update on echovalue.kv \
                 for each row when (new.key = '{}') execute function public.{trigger}()",
                key.replace('\'', "''")
            ),
        ] {
            self.client.batch_execute(&sql).await?;
        }
        Ok(())
    }

    /// Removes what [`Admin::fail_kv_writes_of`] made for `key`.
    pub async fn drop_kv_failure(&self, key: &str) -> Result<()> {
        let trigger = kv_failure_trigger(key);
        self.client
            .batch_execute(&format!("drop trigger if exists {trigger} on echovalue.kv"))
            .await?;
        self.client
            .batch_execute(&format!("drop function if exists public.{trigger}()"))
            .await?;
        Ok(())
    }

    /// Opens a transaction holding the wallet row locked, as a slow concurrent charge would;
    /// [`Admin::commit`] releases it. Returns what [`Admin::sessions_blocked_by`] takes: this
    /// session's backend pid, or on Citus its global pid (the lock is then held on a worker).
    pub async fn lock_wallet(&self, w: &Wallet) -> Result<i64> {
        // (the id first: on Citus a FOR UPDATE must name the shard's key, wallets.id)
        let id: i64 = self
            .client
            .query_one(&format!("select {WALLET_ID}"), &[&w.hash])
            .await?
            .get(0);
        self.client.batch_execute("begin").await?;
        let n = self
            .client
            .execute(
                "select 1 from echovalue.wallets where id = $1 for update",
                &[&id],
            )
            .await?;
        if n != 1 {
            bail!("lock_wallet locked {n} rows");
        }
        let holder = if self.on_citus().await? {
            "select citus_backend_gpid()"
        } else {
            "select pg_backend_pid()::bigint"
        };
        Ok(self.client.query_one(holder, &[]).await?.get(0))
    }

    /// Whether the test database is a Citus coordinator (the scale-out suite).
    /// Whether the extension lets the proxy run calls in one transaction
    /// (`echovalue.group_commit()`: not once the install is distributed).
    pub async fn group_commit(&self) -> Result<bool> {
        Ok(self
            .client
            .query_one("select echovalue.group_commit()", &[])
            .await?
            .get(0))
    }

    pub async fn on_citus(&self) -> Result<bool> {
        Ok(self
            .client
            .query_one(
                "select exists (select from pg_extension where extname = 'citus')",
                &[],
            )
            .await?
            .get(0))
    }

    /// Waits (up to 10 s) until the mailhook role has a LISTEN connection on every node: its
    /// listener's last statement then is the LISTEN, in pg_stat_activity (on Citus,
    /// citus_stat_activity of every node). A test that counts on a NOTIFY alone starts here.
    pub async fn wait_mailhook_listening(&self) -> Result<()> {
        self.wait_listening(echovalue_mailhook::store::APPLICATION_NAME)
            .await
    }

    /// Waits (up to 10 s) until the connections named `application_name` LISTEN on every node.
    pub async fn wait_listening(&self, application_name: &str) -> Result<()> {
        let sql = if self.on_citus().await? {
            "select (select count(distinct nodeid) from citus_stat_activity \
                      where application_name = $1 and query like 'LISTEN %') \
                  = (select count(*) from pg_dist_node where isactive and noderole = 'primary')"
        } else {
            "select exists (select from pg_stat_activity \
                      where application_name = $1 and query like 'LISTEN %')"
        };
        for _ in 0..200 {
            if self
                .client
                .query_one(sql, &[&application_name])
                .await?
                .get::<_, bool>(0)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{application_name} never issued LISTEN on every node")
    }

    pub async fn commit(&self) -> Result<()> {
        Ok(self.client.batch_execute("commit").await?)
    }

    /// Number of sessions waiting on a lock held by `holder` ([`Admin::lock_wallet`]); on
    /// Citus the waits of every node, each session counted once by its global pid.
    pub async fn sessions_blocked_by(&self, holder: i64) -> Result<i64> {
        let sql = if self.on_citus().await? {
            "select count(distinct waiting_gpid) from citus_lock_waits where blocking_gpid = $1"
        } else {
            "select count(*) from pg_stat_activity where $1 = any(pg_blocking_pids(pid)::bigint[])"
        };
        Ok(self.client.query_one(sql, &[&holder]).await?.get(0))
    }

    /// Ends every session waiting on a lock held by `holder`, as a crash of their client
    /// would; on Citus through Citus's own pg_terminate_backend(global pid), on any node.
    pub async fn end_sessions_blocked_by(&self, holder: i64) -> Result<u64> {
        let sql = if self.on_citus().await? {
            "select pg_terminate_backend(g) from (select distinct waiting_gpid g \
             from citus_lock_waits where blocking_gpid = $1) w"
        } else {
            "select pg_terminate_backend(pid) from pg_stat_activity \
             where $1 = any(pg_blocking_pids(pid)::bigint[])"
        };
        Ok(self.client.execute(sql, &[&holder]).await?)
    }

    /// Runs one API call, `sql` selecting its status and body, with loopback and plain-HTTP
    /// webhook URLs allowed for that call alone (the API's own switch,
    /// echovalue.webhook_allow_insecure). `set local` in a transaction block of its own: on
    /// Citus a call outside one is delegated to its wallet's worker, where a setting of this
    /// session would not apply.
    pub async fn call_allowing_insecure(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(i32, String)> {
        self.client
            .batch_execute("begin; set local echovalue.webhook_allow_insecure = on")
            .await?;
        match self.client.query_one(sql, params).await {
            Ok(row) => {
                self.client.batch_execute("commit").await?;
                Ok((row.get(0), row.get(1)))
            }
            Err(e) => {
                self.client.batch_execute("rollback").await?;
                Err(e.into())
            }
        }
    }

    /// Moves every usage bucket of the wallet's tokens `hours` back in time, as if their
    /// spending had happened that much earlier (the rolling limit windows, without sleeping).
    pub async fn age_token_usage(&self, w: &Wallet, hours: i32) -> Result<u64> {
        // Bucket by bucket, each new hour worked out first: Citus refuses an UPDATE that calls
        // a STABLE function (timestamptz - interval) on a column. Oldest first when moving
        // back, so a bucket never lands on one not moved yet.
        let order = if hours >= 0 { "asc" } else { "desc" };
        let rows = self
            .client
            .query(
                &format!(
                    "select wallet_id, token_id, hour, hour - make_interval(hours => $2) \
                     from echovalue.token_usage where wallet_id = {WALLET_ID} order by hour {order}"
                ),
                &[&w.hash, &hours],
            )
            .await?;
        for r in &rows {
            let (wallet, token, hour, aged): (i64, i64, SystemTime, SystemTime) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            self.client
                .execute(
                    "update echovalue.token_usage set hour = $4 \
                     where wallet_id = $1 and token_id = $2 and hour = $3",
                    &[&wallet, &token, &hour, &aged],
                )
                .await?;
        }
        Ok(rows.len() as u64)
    }

    /// Credits spent by the wallet's non-root tokens, all buckets together.
    pub async fn token_usage_total(&self, w: &Wallet) -> Result<i64> {
        Ok(self
            .client
            .query_one(
                &format!(
                    "select coalesce(sum(credits), 0)::int8 from echovalue.token_usage \
                     where wallet_id = {WALLET_ID}"
                ),
                &[&w.hash],
            )
            .await?
            .get(0))
    }

    /// Sets (or clears, with `None`) the payment link of a recharge tier.
    pub async fn set_recharge_link(&self, amount: i32, link: Option<&str>) -> Result<()> {
        let n = self
            .client
            .execute(
                "update echovalue.recharge_tiers set link = $2 where amount = $1",
                &[&amount, &link],
            )
            .await?;
        if n != 1 {
            bail!("set_recharge_link updated {n} rows for amount {amount}");
        }
        Ok(())
    }

    /// Calls the SQL `kv_get` as the wallet would: lets a test see what the database holds
    /// under a decoded name without going through the proxy's decoding.
    pub async fn sql_kv_get(&self, w: &Wallet, grp: &str, key: &str) -> Result<(i32, String)> {
        let row = self
            .client
            .query_one(
                "select status, body from echovalue.kv_get(token => $1, grp => $2, key => $3)",
                &[&w.token, &grp, &key],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}

/// The name of the trigger that fails KV writes of `key`: an identifier made of its letters
/// and digits and a hash of the whole key.
fn kv_failure_trigger(key: &str) -> String {
    let readable: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(20)
        .collect();
    let hash = key
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("ev_test_kv_fail_{readable}_{hash:08x}")
}
