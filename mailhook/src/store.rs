//! The database side of receiving: the two worker functions of the extension, one SQL call
//! each, through a small connection pool. The SQL function decides the SMTP reply; a database
//! that cannot be reached or fails is a transient `451` (the sender retries), never a loss.

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Pool, QueueMode};

use crate::message::Parsed;
use crate::smtp_command::Reply;
use crate::Config;

/// `application_name` of every connection of the mailhook, unless the URL sets one.
pub const APPLICATION_NAME: &str = "echovalue-mailhook";

/// Named arguments, so a signature drift in the extension fails loudly. `wallet` is the
/// routing hint the recipient's address spells (extension/CONTRACT.md): on Citus the call
/// runs on its wallet's node.
const RCPT_SQL: &str = "select code, message from echovalue.mail_rcpt_check(recipient => $1, \
    wallet => echovalue.recipient_wallet($1))";
const RECEIVE_SQL: &str = "select code, message from echovalue.mail_receive(\
    recipient => $1, message_id => $2, from_email => $3, from_name => $4, subject => $5, \
    text_body => $6, html_body => $7, headers => $8, size_bytes => $9, \
    attachment_filenames => $10, attachment_content_types => $11, attachment_contents => $12, \
    wallet => echovalue.recipient_wallet($1))";

/// Where received mail goes.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// A pool of at most `size` connections; connections open lazily, so the SMTP server
    /// starts (and answers 451) while the database is down.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            pool: pool(config, config.db_pool_size)?,
        })
    }

    /// The reply to `RCPT TO:<recipient>`.
    pub async fn rcpt_check(&self, recipient: &str) -> Reply {
        let result = async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(RCPT_SQL).await?;
            let row = client.query_one(&stmt, &[&recipient]).await?;
            anyhow::Ok(reply_of(&row)?)
        }
        .await;
        result.unwrap_or_else(transient)
    }

    /// Stores `msg` for `recipient` in one transaction; the reply to the end of DATA.
    pub async fn receive(&self, recipient: &str, msg: &Parsed) -> Reply {
        let names: Vec<Option<&str>> = msg
            .attachments
            .iter()
            .map(|a| a.filename.as_deref())
            .collect();
        let types: Vec<&str> = msg
            .attachments
            .iter()
            .map(|a| a.content_type.as_str())
            .collect();
        let contents: Vec<&[u8]> = msg
            .attachments
            .iter()
            .map(|a| a.content.as_slice())
            .collect();
        let result = async {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(RECEIVE_SQL).await?;
            // One statement is one transaction (autocommit): the reply is read after commit.
            let row = client
                .query_one(
                    &stmt,
                    &[
                        &recipient,
                        &msg.message_id,
                        &msg.from_email,
                        &msg.from_name,
                        &msg.subject,
                        &msg.text,
                        &msg.html,
                        &msg.headers,
                        &msg.size_bytes,
                        &names,
                        &types,
                        &contents,
                    ],
                )
                .await?;
            anyhow::Ok(reply_of(&row)?)
        }
        .await;
        result.unwrap_or_else(transient)
    }
}

/// A lazily connecting pool of at most `size` connections to the database, with the
/// configured connection wait and statement and lock timeouts.
pub fn pool(config: &Config, size: usize) -> anyhow::Result<Pool> {
    echovalue_common::pool::build(
        &config.database_url,
        &echovalue_common::pool::Settings {
            application_name: APPLICATION_NAME,
            max_size: size,
            timeout: Duration::from_secs(config.db_timeout_secs.max(1)),
            queue_mode: QueueMode::Fifo,
            statement_timeout_ms: config.bounds.statement_timeout_ms,
            lock_timeout_ms: config.bounds.lock_timeout_ms,
        },
    )
}

/// An `echovalue.smtp_reply` row as a reply; a code outside 200..=599 is a contract breach.
fn reply_of(row: &tokio_postgres::Row) -> anyhow::Result<Reply> {
    let code: i32 = row.try_get("code")?;
    let message: String = row.try_get("message")?;
    let code = u16::try_from(code)
        .ok()
        .filter(|c| (200..600).contains(c))
        .with_context(|| format!("smtp_reply code {code} is not an SMTP code"))?;
    Ok(Reply::new(code, message))
}

/// Any failure to get an answer from the database: try again later.
fn transient(e: anyhow::Error) -> Reply {
    tracing::warn!(error = %format!("{e:#}"), "database call failed; answering 451");
    Reply::new(451, "4.3.0 temporary failure, try again later")
}
