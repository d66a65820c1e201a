//! Runs the built `echovalue` binary as a user would: its own HOME and XDG_CONFIG_HOME in a
//! temporary directory, ECHOVALUE_URL the test proxy's base URL, and no variable of the test
//! process that could change its answer (a token, a config path, an HTTP proxy).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_echovalue");

/// Variables of the test process the binary must not see.
const CLEARED: &[&str] = &[
    "ECHOVALUE_URL",
    "ECHOVALUE_TOKEN",
    "ECHOVALUE_CONFIG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// What one run gave.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts exit status 0; the stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:#?}");
        self.stdout.as_str()
    }

    /// Asserts the exit status, an empty stdout and that stderr's first line is `want`.
    pub fn fails(&self, code: i32, want: &str) {
        assert_eq!(self.code, code, "{self:#?}");
        assert_eq!(self.stderr.lines().next(), Some(want), "{self:#?}");
        assert!(self.stdout.is_empty(), "{self:#?}");
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON: {self:#?}"))
    }
}

/// The binary with a home of its own.
pub struct Cli {
    dir: TempDir,
    base: String,
    token: Option<String>,
}

impl Cli {
    /// Without a token (`token new`, `health`, or a token from the config file).
    pub fn new(base: &str) -> Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            base: base.to_owned(),
            token: None,
        })
    }

    /// With `token` in ECHOVALUE_TOKEN.
    pub fn with_token(base: &str, token: &str) -> Result<Self> {
        let mut cli = Self::new(base)?;
        cli.token = Some(token.to_owned());
        Ok(cli)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the binary looks for its config file: `$XDG_CONFIG_HOME/echovalue/config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("xdg").join("echovalue").join("config.toml")
    }

    pub async fn run(&self, args: &[&str]) -> Result<Out> {
        self.run_with(args, &[], None).await
    }

    /// With extra variables (an empty value unsets one for the binary) and stdin.
    pub async fn run_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Result<Out> {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        for name in CLEARED {
            cmd.env_remove(name);
        }
        cmd.env("HOME", self.dir().join("home"))
            .env("XDG_CONFIG_HOME", self.dir().join("xdg"))
            .env("ECHOVALUE_URL", &self.base);
        if let Some(token) = &self.token {
            cmd.env("ECHOVALUE_TOKEN", token);
        }
        for (name, value) in env {
            if value.is_empty() {
                cmd.env_remove(name);
            } else {
                cmd.env(name, value);
            }
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let stdin = stdin.map(<[u8]>::to_vec);
        let what = format!("echovalue {}", args.join(" "));
        // The proxy runs on this test's runtime: wait for the child off it.
        let output = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut child = cmd.spawn()?;
            if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(&bytes)?;
            }
            Ok(child.wait_with_output()?)
        })
        .await?
        .with_context(|| what.clone())?;
        Ok(Out {
            code: output
                .status
                .code()
                .with_context(|| format!("{what}: killed"))?,
            stdout: String::from_utf8(output.stdout).with_context(|| what.clone())?,
            stderr: String::from_utf8(output.stderr).with_context(|| what.clone())?,
        })
    }
}
