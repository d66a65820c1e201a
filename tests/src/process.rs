//! The real `echovalue-mailhook` binary as a child process, for tests that send it real SMTP
//! or kill it. The binary's path comes from the calling test (`env!("CARGO_BIN_EXE_…")` exists
//! only in the mailhook package's own tests).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// A running mailhook bound to a free loopback SMTP port; killed when dropped.
pub struct MailhookProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl MailhookProcess {
    /// Starts `bin` on `database_url` with the test defaults (SMTP on a free port, host name
    /// `mx.test`, log to stderr), then `extra_env`; returns once it reports its SMTP address.
    pub async fn start(bin: &str, database_url: &str, extra_env: &[(&str, &str)]) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.env("ECHOVALUE_DATABASE_URL", database_url)
            .env("ECHOVALUE_SMTP_LISTEN", "127.0.0.1:0")
            .env("ECHOVALUE_SMTP_HOSTNAME", "mx.test")
            .env("ECHOVALUE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("cannot start echovalue-mailhook")?;
        let log = child.stderr.take().context("no stderr")?;
        // The bound address is in the "listening" log line; the rest of the log is drained
        // so the pipe never fills.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                if line.contains("smtp receiver listening") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
            .await?
            .ok()
            .and_then(|line| {
                let start = line.find("127.0.0.1:")?;
                let addr: String = line[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                addr.parse().ok()
            });
        match line {
            Some(addr) => Ok(Self { child, addr }),
            None => {
                // never leave a child behind: it would hold the test run's inherited fds
                // (the install lock among them) long after the test failed
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the mailhook did not report its SMTP address")
            }
        }
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// SIGKILL: no shutdown, nothing in flight gets recorded.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MailhookProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
