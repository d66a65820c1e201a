//! Mail2Webhook's tables as the tests read them: webhooks, mailboxes, messages, attachments.

use anyhow::Result;

use super::{Admin, Wallet, WALLET_ID};

/// A message as `echovalue.messages` holds it, with its attachments.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: i64,
    pub message_id: Option<String>,
    pub from_email: Option<String>,
    pub from_name: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub headers: serde_json::Value,
    pub size_bytes: i32,
    pub pending_deliveries: i64,
    pub attachments: Vec<StoredAttachment>,
}

/// One stored attachment.
#[derive(Debug, Clone)]
pub struct StoredAttachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: i32,
    pub content: Vec<u8>,
}

impl Admin {
    /// The wallet's stored webhook `default`: URL and custom headers (as JSON text), if any.
    pub async fn webhook(&self, w: &Wallet) -> Result<Option<(String, serde_json::Value)>> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "select url, headers::text from echovalue.webhooks where wallet_id = {WALLET_ID} and name = 'default'"
                ),
                &[&w.hash],
            )
            .await?;
        row.map(|r| {
            let headers: String = r.get(1);
            Ok((r.get(0), serde_json::from_str(&headers)?))
        })
        .transpose()
    }

    /// The wallet's mailbox id and signing secret, if it has a mailbox yet.
    pub async fn mailbox(&self, w: &Wallet) -> Result<Option<(String, String)>> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "select mailbox, secret from echovalue.mailboxes where wallet_id = {WALLET_ID}"
                ),
                &[&w.hash],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// The newest log entry of a wallet: (method, path, endpoint, status, error, cost).
    pub async fn last_log(
        &self,
        w: &Wallet,
    ) -> Result<(String, String, String, i32, Option<String>, i32)> {
        let row = self
            .client
            .query_one(
                &format!(
                    "select method, path, endpoint, status_code, error, cost from echovalue.logs \
                     where wallet_id = {WALLET_ID} order by created desc, id desc limit 1"
                ),
                &[&w.hash],
            )
            .await?;
        Ok((
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
        ))
    }

    /// Received messages of a wallet, oldest first.
    pub async fn messages(&self, w: &Wallet) -> Result<Vec<StoredMessage>> {
        let rows = self
            .client
            .query(
                &format!(
                    "select m.id, m.external_id, m.from_email, m.from_name, m.subject, m.text_body, \
                            m.html_body, m.headers::text, m.size_bytes, \
                            (select count(*) from echovalue.deliveries d \
                              where d.wallet_id = m.wallet_id and d.message_id = m.id \
                                and d.state = 'pending') \
                       from echovalue.messages m where m.wallet_id = {WALLET_ID} order by m.id"
                ),
                &[&w.hash],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.get(0);
            let attachments = self
                .client
                .query(
                    "select filename, content_type, size, content from echovalue.attachments \
                     where message_id = $1 order by position",
                    &[&id],
                )
                .await?
                .into_iter()
                .map(|a| StoredAttachment {
                    filename: a.get(0),
                    content_type: a.get(1),
                    size: a.get(2),
                    content: a.get(3),
                })
                .collect();
            let headers: String = r.get(7);
            out.push(StoredMessage {
                id,
                message_id: r.get(1),
                from_email: r.get(2),
                from_name: r.get(3),
                subject: r.get(4),
                text: r.get(5),
                html: r.get(6),
                headers: serde_json::from_str(&headers)?,
                size_bytes: r.get(8),
                pending_deliveries: r.get(9),
                attachments,
            });
        }
        Ok(out)
    }

    /// The wallet's inbound address as `GET /webhook` shows it (made on first call).
    pub async fn mail_address(&self, w: &Wallet) -> Result<String> {
        let row = self
            .client
            .query_one(
                "select body::json->>'email' from echovalue.webhook_get(token => $1)",
                &[&w.token],
            )
            .await?;
        Ok(row.get(0))
    }
}
