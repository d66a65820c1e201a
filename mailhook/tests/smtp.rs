//! The SMTP receiver end to end: the real `echovalue-mailhook` binary against the real
//! database, driven by real clients (`swaks`, Python `smtplib`) and by raw SMTP over TCP for
//! the protocol edges. Each test asserts what the database then holds: the message, its
//! attachments, the charge, the log entry and the queued delivery.

mod smtp_support;

use std::time::Duration;

use anyhow::Result;
use echovalue_tests::{Admin, Notifications};
use smtp_support::*;

#[tokio::test]
async fn swaks_plain_text_is_stored_charged_logged_and_queued() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let before = admin.balance(&w).await?;

    // A LISTENer sees the insert's wake-up after the commit (on every node: on Citus the call
    // runs on the node of its wallet).
    let mut wakeups = Notifications::start(&admin, "echovalue_mail").await?;

    let (ok, out) = swaks(
        &hook,
        &email,
        &[
            "--header",
            "Subject: Alert: Server down",
            "--header",
            "Message-ID: <swaks-1@example.com>",
            "--h-From",
            "\"John Snow\" <john@example.com>",
            "--body",
            "Server #3 is not responding\n..a line starting with a dot",
        ],
    )?;
    assert!(ok, "{out}");
    assert!(out.contains("250 2.0.0 queued as"), "{out}");

    let msgs = admin.messages(&w).await?;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.message_id.as_deref(), Some("swaks-1@example.com"));
    assert_eq!(m.from_email.as_deref(), Some("john@example.com"));
    assert_eq!(m.from_name.as_deref(), Some("John Snow"));
    assert_eq!(m.subject.as_deref(), Some("Alert: Server down"));
    let text = m.text.as_deref().unwrap_or("");
    assert!(text.contains("Server #3 is not responding"), "{text:?}");
    assert!(
        text.contains("\n..a line starting with a dot"),
        "dot-unstuffing: {text:?}"
    );
    assert_eq!(m.html, None);
    assert_eq!(m.headers["Subject"], "Alert: Server down");
    assert!(m.size_bytes > 0);
    assert!(m.attachments.is_empty());
    assert_eq!(m.pending_deliveries, 1);
    assert_eq!(admin.balance(&w).await?, before - 1);
    let (method, path, endpoint, status, error, cost) = admin.last_log(&w).await?;
    assert_eq!(
        (
            method.as_str(),
            path.as_str(),
            endpoint.as_str(),
            status,
            error,
            cost
        ),
        ("SMTP", email.as_str(), "email", 200, None, 1)
    );
    let payload = wakeups.next(Duration::from_secs(10)).await?;
    assert!(payload.parse::<i64>().is_ok(), "{payload}");
    Ok(())
}

#[tokio::test]
async fn smtplib_multipart_with_attachments() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let out = python(
        &hook,
        &email,
        r#"
import os, smtplib
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "Ops Bot <ops@example.com>"
m["To"] = os.environ["TO"]
m["Subject"] = "Report with files"
m.set_content("See the attached report.")
m.add_alternative("<p>See the <b>attached</b> report.</p>", subtype="html")
m.add_attachment(bytes(range(256)) * 40, maintype="application", subtype="pdf", filename="report.pdf")
m.add_attachment("a,b\n1,2\n", subtype="csv", filename="data.csv")
with smtplib.SMTP(os.environ["HOST"], int(os.environ["PORT"])) as s:
    s.ehlo("client.test")
    print(s.send_message(m))
"#,
    )?;
    assert_eq!(out.trim(), "{}", "no refused recipients");
    let msgs = admin.messages(&w).await?;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.subject.as_deref(), Some("Report with files"));
    assert_eq!(m.from_name.as_deref(), Some("Ops Bot"));
    assert!(m
        .text
        .as_deref()
        .unwrap_or("")
        .contains("See the attached report."));
    assert!(m.html.as_deref().unwrap_or("").contains("<b>attached</b>"));
    assert_eq!(m.attachments.len(), 2);
    let pdf = &m.attachments[0];
    assert_eq!(pdf.filename.as_deref(), Some("report.pdf"));
    assert_eq!(pdf.content_type, "application/pdf");
    let expected: Vec<u8> = (0..40).flat_map(|_| 0..=255u8).collect();
    assert_eq!(pdf.size, 10240);
    assert_eq!(pdf.content, expected, "base64 decoded byte for byte");
    let csv = &m.attachments[1];
    assert_eq!(csv.filename.as_deref(), Some("data.csv"));
    assert_eq!(csv.content_type, "text/csv");
    // a text part travels in canonical form: its line breaks are CRLF
    assert_eq!(csv.content, b"a,b\r\n1,2\r\n");
    Ok(())
}

#[tokio::test]
async fn smtplib_html_only_and_latin1_quoted_printable() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    python(
        &hook,
        &email,
        r#"
import os, smtplib
raw = (b"From: =?ISO-8859-1?Q?Ren=E9_Caf=E9?= <rene@example.com>\r\n"
       b"To: " + os.environ["TO"].encode() + b"\r\n"
       b"Subject: =?ISO-8859-1?Q?Cr=E8me_br=FBl=E9e?=\r\n"
       b"MIME-Version: 1.0\r\n"
       b"Content-Type: text/plain; charset=ISO-8859-1\r\n"
       b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
       b"Un caf=E9 cr=E8me, s'il vous pla=EEt. =\r\nSuite \xe0 la ligne.\r\n")
html = (b"From: web@example.com\r\nTo: " + os.environ["TO"].encode() + b"\r\n"
        b"Subject: html only\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body><h1>Build failed</h1><p>Job <b>42</b> broke.</p></body></html>\r\n")
with smtplib.SMTP(os.environ["HOST"], int(os.environ["PORT"])) as s:
    s.sendmail("rene@example.com", [os.environ["TO"]], raw)
    s.sendmail("web@example.com", [os.environ["TO"]], html)
"#,
    )?;
    let msgs = admin.messages(&w).await?;
    assert_eq!(msgs.len(), 2);
    let latin = &msgs[0];
    assert_eq!(latin.subject.as_deref(), Some("Crème brûlée"));
    assert_eq!(latin.from_name.as_deref(), Some("René Café"));
    let text = latin.text.as_deref().unwrap_or("");
    assert!(
        text.contains("Un café crème, s'il vous plaît. Suite à la ligne."),
        "{text:?}"
    );
    let html = &msgs[1];
    assert!(html
        .html
        .as_deref()
        .unwrap_or("")
        .contains("<h1>Build failed</h1>"));
    let text = html.text.as_deref().unwrap_or("");
    assert!(
        text.contains("Build failed") && text.contains("42"),
        "{text:?}"
    );
    assert!(!text.contains('<'), "a text version, not HTML: {text:?}");
    Ok(())
}

#[tokio::test]
async fn recipients_are_checked_at_rcpt() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start().await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let domain = email.split('@').nth(1).unwrap_or("localhost").to_owned();

    // The seeds' form: <token>@<domain>.
    let (ok, out) = swaks(
        &hook,
        &format!("{}@{domain}", w.token),
        &["--body", "by token"],
    )?;
    assert!(ok, "{out}");
    assert_eq!(admin.messages(&w).await?.len(), 1);

    let (ok, out) = swaks(&hook, &format!("000000000000000000000000@{domain}"), &[])?;
    assert!(!ok && out.contains("550 5.1.1 no such mailbox"), "{out}");
    let (ok, out) = swaks(&hook, &email.replace(&domain, "example.com"), &[])?;
    assert!(!ok && out.contains("550 5.7.1"), "{out}");

    let no_hook = admin.new_wallet().await?;
    let (ok, out) = swaks(&hook, &format!("{}@{domain}", no_hook.token), &[])?;
    assert!(
        !ok && out.contains("550 5.1.1 mailbox has no webhook"),
        "{out}"
    );

    admin.set_balance(&w, 0).await?;
    let (ok, out) = swaks(&hook, &email, &[])?;
    assert!(!ok && out.contains("452 4.2.2"), "{out}");
    assert_eq!(admin.messages(&w).await?.len(), 1, "nothing stored");
    assert_eq!(admin.balance(&w).await?, 0);
    Ok(())
}

#[tokio::test]
async fn oversize_messages_get_552_and_nothing_is_stored() -> Result<()> {
    let admin = Admin::connect().await?;
    let hook = Mailhook::start_with(&[("ECHOVALUE_SMTP_MAX_BYTES", "20000")]).await?;
    let (w, email) = wallet_with_webhook(&admin).await?;
    let before = admin.balance(&w).await?;

    // swaks sends no SIZE: refused after the data, which is read and dropped.
    let body = "x".repeat(70).repeat(400);
    let (ok, out) = swaks(&hook, &email, &["--body", &body])?;
    assert!(!ok && out.contains("552 5.3.4"), "{out}");
    // smtplib declares SIZE=: refused at MAIL.
    let out = python(
        &hook,
        &email,
        r#"
import os, smtplib
with smtplib.SMTP(os.environ["HOST"], int(os.environ["PORT"])) as s:
    s.ehlo("client.test")
    print("size", s.esmtp_features.get("size"))
    try:
        s.sendmail("a@example.com", [os.environ["TO"]], b"Subject: big\r\n\r\n" + b"y" * 30000)
    except smtplib.SMTPSenderRefused as e:
        print("refused", e.smtp_code)
"#,
    )?;
    assert!(
        out.contains("size 20000") && out.contains("refused 552"),
        "{out}"
    );
    // Just under the limit goes through.
    let (ok, out) = swaks(&hook, &email, &["--body", &"z".repeat(15000)])?;
    assert!(ok, "{out}");
    assert_eq!(admin.messages(&w).await?.len(), 1);
    assert_eq!(admin.balance(&w).await?, before - 1);
    Ok(())
}
