//! What the SMTP tests share: the mailhook process, a wallet with a webhook, the SMTP
//! clients (swaks, Python smtplib, raw TCP) and the reply-code helper.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use echovalue_tests::{env, Admin, MailhookProcess, Wallet};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The mailhook, receiving only: these tests check the queued delivery, not its sending.
pub struct Mailhook;

impl Mailhook {
    pub async fn start() -> Result<MailhookProcess> {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra_env: &[(&str, &str)]) -> Result<MailhookProcess> {
        Self::start_on(&env::mailhook_url()?, extra_env).await
    }

    pub async fn start_on(
        database_url: &str,
        extra_env: &[(&str, &str)],
    ) -> Result<MailhookProcess> {
        let mut envs = vec![("ECHOVALUE_DELIVERY_CONCURRENCY", "0")];
        envs.extend_from_slice(extra_env);
        MailhookProcess::start(
            env!("CARGO_BIN_EXE_echovalue-mailhook"),
            database_url,
            &envs,
        )
        .await
    }
}

/// A wallet with a webhook, its inbound address and the admin connection.
pub async fn wallet_with_webhook(admin: &Admin) -> Result<(Wallet, String)> {
    let w = admin.new_wallet().await?;
    let row = admin
        .client()
        .query_one(
            "select status, body from echovalue.webhook_set(token => $1, body => $2)",
            &[&w.token, &r#"{"url":"https://example.com/hook"}"#],
        )
        .await?;
    let status: i32 = row.get(0);
    assert_eq!(status, 200, "webhook_set: {:?}", row.get::<_, String>(1));
    let email = admin.mail_address(&w).await?;
    Ok((w, email))
}

/// Runs swaks against the mailhook; returns (exit ok, transcript).
pub fn swaks(hook: &MailhookProcess, to: &str, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &hook.port(), "--to", to])
        .args(["--from", "sender@example.com", "--helo", "client.test"])
        .args(args)
        .output()
        .context("cannot run swaks (installed by .ci/setup)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// Runs a Python smtplib script with HOST, PORT and TO in its environment; returns its
/// stdout (the script prints the outcome) or fails with its output.
pub fn python(hook: &MailhookProcess, to: &str, script: &str) -> Result<String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("HOST", "127.0.0.1")
        .env("PORT", hook.port())
        .env("TO", to)
        .output()
        .context("cannot run python3")?;
    if !out.status.success() {
        bail!(
            "python failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A raw SMTP connection: send lines, read replies.
pub struct Raw {
    pub rd: BufReader<tokio::net::tcp::OwnedReadHalf>,
    pub wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    pub async fn connect(hook: &MailhookProcess) -> Result<Self> {
        Self::greeted(TcpStream::connect(hook.addr).await?).await
    }

    /// A session from `from` (any 127.x.y.z address reaches a loopback listener).
    pub async fn connect_from(hook: &MailhookProcess, from: &str) -> Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::new(from.parse()?, 0))?;
        Self::greeted(socket.connect(hook.addr).await?).await
    }

    async fn greeted(stream: TcpStream) -> Result<Self> {
        let (rd, wr) = stream.into_split();
        let mut raw = Self {
            rd: BufReader::new(rd),
            wr,
        };
        let greeting = raw.reply().await?;
        assert!(greeting.starts_with("220 mx.test"), "{greeting}");
        Ok(raw)
    }

    pub async fn send(&mut self, data: &str) -> Result<()> {
        self.wr.write_all(data.as_bytes()).await?;
        Ok(())
    }

    /// One whole reply (all its lines), or "" when the server closed.
    pub async fn reply(&mut self) -> Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(20), self.rd.read_line(&mut line))
                .await
                .context("no reply within 20 s")??;
            if n == 0 {
                return Ok(all);
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(all);
            }
        }
    }

    pub async fn cmd(&mut self, line: &str) -> Result<String> {
        self.send(&format!("{line}\r\n")).await?;
        self.reply().await
    }
}

pub fn code(reply: &str) -> &str {
    reply.get(..3).unwrap_or(reply)
}
