//! Named webhooks and their formats over the real stack: webhooks made with the SQL API, one
//! real SMTP mail (Python smtplib, ISO-8859-1 subject and body with quotes, `<`, `&` and a
//! new line) to each webhook's own address, and the exact body each format POSTs to a real
//! receiver on loopback, signed like every delivery. `includeAttachments: false` delivers
//! `"attachments": []` and stores no attachment.

mod delivery_support;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use delivery_support::*;
use echovalue_tests::{Admin, MailhookProcess, Wallet};
use serde_json::{json, Value};

/// Creates webhook `id` with the SQL API (PUT /webhook/{id}'s function); returns its address.
async fn put_webhook(admin: &Admin, w: &Wallet, id: &str, body: &str) -> Result<String> {
    // loopback receivers are allowed for this call only (the API's own switch)
    let (status, reply) = admin
        .call_allowing_insecure(
            "select status, body from echovalue.webhook_put(token => $1, webhook_id => $2, body => $3)",
            &[&w.token, &id, &body],
        )
        .await?;
    if status != 200 {
        bail!("webhook_put {id}: {status} {reply}");
    }
    let reply: Value = serde_json::from_str(&reply)?;
    Ok(reply["email"].as_str().context("email")?.to_owned())
}

/// Sends one ISO-8859-1 message with a small attachment to each address, with smtplib.
fn send_latin1(hook: &MailhookProcess, to: &[String]) -> Result<()> {
    let script = r#"
import os, smtplib
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.mime.application import MIMEApplication
from email.header import Header
from email.utils import formataddr
s = smtplib.SMTP(os.environ["HOST"], int(os.environ["PORT"]))
for to in os.environ["TO"].split(","):
    m = MIMEMultipart()
    m["From"] = formataddr(('Zoë "Z" Ärger', "zoe@example.com"), "iso-8859-1")
    m["To"] = to
    m["Subject"] = Header('Café <menu> & "prix"', "iso-8859-1")
    m["Message-ID"] = "<fmt-" + to.split("@")[0] + "@test>"
    m.attach(MIMEText('Crème brûlée & <b>tags</b> "quoted"\nline 2', "plain", "iso-8859-1"))
    a = MIMEApplication(b"%PDF-1.4", Name="menu.pdf")
    a["Content-Disposition"] = 'attachment; filename="menu.pdf"'
    m.attach(a)
    s.sendmail("zoe@example.com", [to], m.as_bytes())
s.quit()
"#;
    smtplib(hook, script, &[("TO", &to.join(","))])
}

#[tokio::test]
async fn each_format_posts_its_exact_body() -> Result<()> {
    let admin = Admin::connect().await?;
    let _serial = exclusive(&admin).await?;
    let receiver = Receiver::start(&[]).await?;
    let w = admin.new_wallet().await?;
    let url = |p: &str| receiver.url(&format!("/{p}"));
    // as text: the template's keys stay in this order
    let custom = format!(
        r#"{{"url":"{}","format":"custom","template":{{"msg":"{{{{subject}}}} / {{{{from.name|\"?\"}}}}","files":"{{{{attachments[-1].filename}}}}","none":"{{{{attachments[3].filename|\"-\"}}}}"}}}}"#,
        url("custom")
    );
    let hooks = [
        ("raw", json!({"url": url("raw")})),
        (
            "bare",
            json!({"url": url("bare"), "includeAttachments": false}),
        ),
        ("slack", json!({"url": url("slack"), "format": "slack"})),
        (
            "discord",
            json!({"url": url("discord"), "format": "discord"}),
        ),
        ("teams", json!({"url": url("teams"), "format": "teams"})),
        (
            "telegram",
            json!({"url": url("telegram"), "format": "telegram", "options": {"chat_id": "-1001"}}),
        ),
        (
            "pagerduty",
            json!({"url": url("pagerduty"), "format": "pagerduty", "options": {"routing_key": "RK"}}),
        ),
    ];
    let mut addresses = Vec::new();
    for (id, body) in &hooks {
        addresses.push(put_webhook(&admin, &w, id, &body.to_string()).await?);
    }
    addresses.push(put_webhook(&admin, &w, "custom", &custom).await?);
    let secret: String = admin
        .client()
        .query_one(
            "select secret from echovalue.mailboxes where wallet_id = (select id from echovalue.wallets where hash = $1)",
            &[&w.hash],
        )
        .await?
        .get(0);
    let hook = Mailhook::start().await?;
    send_latin1(&hook, &addresses)?;
    let got = wait_for("every format", Duration::from_secs(30), || async {
        let got = receiver.got();
        Ok((got.len() > hooks.len()).then_some(got))
    })
    .await?;
    assert_eq!(got.len(), hooks.len() + 1, "one delivery per webhook");
    let by_path = |p: &str| {
        got.iter()
            .find(|g| g.header(":path") == format!("/{p}"))
            .with_context(|| format!("nothing at /{p}"))
    };
    for g in &got {
        verify_signature(&secret, g)?;
    }

    // the section 7 payload, decoded from ISO-8859-1; the text the formats show comes from it
    let raw = by_path("raw")?.json();
    assert_eq!(raw["subject"], "Café <menu> & \"prix\"");
    assert_eq!(raw["from"]["name"], "Zoë \"Z\" Ärger");
    let text = raw["text"].as_str().context("text")?.to_owned();
    // what the chat formats show: LF line ends, no trailing blank lines
    let chat_text = text.replace("\r\n", "\n").trim_end().to_owned();
    assert!(
        text.starts_with("Crème brûlée & <b>tags</b> \"quoted\""),
        "{text:?}"
    );
    assert_eq!(raw["attachments"][0]["filename"], "menu.pdf");
    assert_eq!(by_path("bare")?.json()["attachments"], json!([]));
    assert_eq!(by_path("bare")?.json()["subject"], raw["subject"]);

    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let subject = "Café <menu> & \"prix\"";
    let from = "Zoë \"Z\" Ärger <zoe@example.com>";
    // the exact bytes, keys in the documented order: objects written out here, each string
    // value JSON-encoded (json! would sort keys unless serde_json keeps their order)
    let js = |v: &str| Value::from(v).to_string();
    let body = |p: &str| -> Result<String> { Ok(String::from_utf8(by_path(p)?.body.clone())?) };
    assert_eq!(
        body("slack")?,
        format!(
            r#"{{"text":{}}}"#,
            js(&format!(
                "*{}*\nFrom: {}\n\n{}",
                esc(subject),
                esc(from),
                esc(&chat_text)
            ))
        )
    );
    assert_eq!(
        body("discord")?,
        format!(
            r#"{{"content":{}}}"#,
            js(&format!("**{subject}**\nFrom: {from}\n\n{chat_text}"))
        )
    );
    assert_eq!(
        body("teams")?,
        format!(
            r#"{{"text":{}}}"#,
            js(&format!("**{subject}**\n\nFrom: {from}\n\n{chat_text}"))
        )
    );
    assert_eq!(
        body("telegram")?,
        format!(
            r#"{{"chat_id":"-1001","text":{},"parse_mode":"HTML"}}"#,
            js(&format!(
                "<b>{}</b>\nFrom: {}\n\n{}",
                esc(subject),
                esc(from),
                esc(&chat_text)
            ))
        )
    );
    assert_eq!(
        body("pagerduty")?,
        format!(
            r#"{{"routing_key":"RK","event_action":"trigger","payload":{{"summary":{},"source":"zoe@example.com","severity":"info","custom_details":{{"text":{},"from_name":{}}}}}}}"#,
            js(subject),
            js(&chat_text),
            js("Zoë \"Z\" Ärger")
        )
    );
    assert_eq!(
        body("custom")?,
        format!(
            r#"{{"msg":{},"files":"menu.pdf","none":"-"}}"#,
            js(&format!("{subject} / Zoë \"Z\" Ärger"))
        )
    );
    for g in &got {
        assert_eq!(g.header("content-type"), "application/json");
    }

    // one charged email per webhook, each logged under that webhook's address; the webhook
    // without attachments stored none
    let rows = admin
        .client()
        .query(
            "select l.path, l.cost from echovalue.logs l
              where l.wallet_id = (select id from echovalue.wallets where hash = $1) and l.endpoint = 'email'
              order by l.path",
            &[&w.hash],
        )
        .await?;
    let mut logged: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut want = addresses.clone();
    logged.sort();
    want.sort();
    assert_eq!(logged, want);
    assert!(rows.iter().all(|r| r.get::<_, i32>(1) == 1));
    let stored: i64 = admin
        .client()
        .query_one(
            "select count(*) from echovalue.attachments a join echovalue.deliveries d
                 on d.wallet_id = a.wallet_id and d.message_id = a.message_id
              where d.webhook = 'bare' and a.wallet_id = (select id from echovalue.wallets where hash = $1)",
            &[&w.hash],
        )
        .await?
        .get(0);
    assert_eq!(stored, 0);
    receiver.stop();
    Ok(())
}
