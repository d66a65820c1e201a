//! From parsed arguments to requests: the settings are resolved once into a [`Ctx`], then
//! each area's module turns its subcommand into one request (or, for `--all`, a page after
//! another) and shows the answer. No rule of the service is checked here.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use reqwest::Method;

use crate::args::{Cli, Command, Save, TokenCommand};
use crate::client::{Client, Failure, Request, Response};
use crate::config::{self, FileConfig};
use crate::output::{report, show, Render};
use crate::{body, encode};

mod keys;
mod kv;
mod wallet;
mod webhook;

/// What every command needs: the client, `--json`, and where `--save` writes.
pub struct Ctx {
    client: Client,
    json: bool,
    url: String,
    config_path: Option<PathBuf>,
}

impl Ctx {
    fn send(&self, req: &Request) -> Result<Response, Failure> {
        self.client.send(req)
    }

    /// Sends the request and shows the answer; the exit status.
    fn run(&self, req: Request, render: Render) -> Result<u8, Failure> {
        let resp = self.send(&req)?;
        Ok(self.finish(&resp, render))
    }

    /// Shows a 2xx answer, reports any other; the exit status.
    fn finish(&self, resp: &Response, render: Render) -> u8 {
        if resp.status.is_success() {
            show(resp, render, self.json);
            0
        } else {
            report(resp, self.client.has_token())
        }
    }

    fn save_path(&self) -> Result<&Path, Failure> {
        self.config_path
            .as_deref()
            .ok_or_else(|| Failure("no config file to save to: set HOME or pass --config".into()))
    }

    /// Before a request whose token `--save` will keep: may the file take it?
    fn check_save(&self, save: Save) -> Result<(), Failure> {
        if save.save {
            config::check_save(self.save_path()?, save.force)?;
        }
        Ok(())
    }

    /// Writes a new token (and the base URL) to the config file.
    fn save_token(&self, token: &str) -> Result<(), Failure> {
        let path = self.save_path()?;
        config::save(path, &self.url, token)?;
        eprintln!("saved the token to {}", path.display());
        Ok(())
    }
}

/// Runs a parsed command line; the exit status. A failure before any answer is `error: …` on
/// stderr and status 2.
pub fn run(cli: Cli) -> u8 {
    match dispatch(cli) {
        Ok(code) => code,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            2
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8, Failure> {
    if let Command::Completions { shell } = cli.command {
        // into a buffer first: generate() panics on a write error such as a closed pipe
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "echovalue", &mut script);
        crate::output::out(&script);
        return Ok(0);
    }
    let g = cli.global;
    let config_path = g
        .config
        .clone()
        .or_else(|| config::default_path(|name| std::env::var_os(name)));
    let file = match &config_path {
        Some(path) => config::load(path)?,
        None => FileConfig::default(),
    };
    let settings = config::resolve(cli.url, g.token, &file);
    let ctx = Ctx {
        client: Client::new(
            &settings.url,
            settings.token.as_deref(),
            g.verbose,
            g.timeout,
        )?,
        json: g.json,
        url: settings.url,
        config_path,
    };
    match cli.command {
        Command::Token(TokenCommand::New { save }) => wallet::token_new(&ctx, save),
        Command::Balance => wallet::balance(&ctx),
        Command::Recharge { amount } => wallet::recharge(&ctx, &amount),
        Command::Logs { n, kind } => wallet::logs(&ctx, n.as_deref(), kind.as_deref()),
        Command::Kv(c) => kv::run(&ctx, c),
        Command::Webhook(c) => webhook::run(&ctx, c),
        Command::Keys(c) => keys::run(&ctx, c),
        Command::Settings(c) => keys::settings(&ctx, c),
        Command::Health => ctx.run(Request::get("/healthz").without_token(), Render::Auto),
        Command::Request {
            method,
            path,
            body,
            content_type,
        } => request(
            &ctx,
            &method,
            &path,
            body.as_deref(),
            content_type.as_deref(),
        ),
        Command::Completions { .. } => Ok(0), // answered above, before any config is read
    }
}

/// `echovalue request METHOD PATH`: anything the subcommands do not cover.
fn request(
    ctx: &Ctx,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: Option<&str>,
) -> Result<u8, Failure> {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Failure(format!("{method:?} is not an HTTP method")))?;
    if !path.starts_with('/') {
        return Err(Failure(format!("the path must start with '/': {path:?}")));
    }
    let mut req = Request::new(method, path);
    if let Some(body) = body {
        let content_type = content_type.unwrap_or("application/x-www-form-urlencoded");
        req = req.body(body::from_arg(body)?, content_type);
    }
    ctx.run(req, Render::Auto)
}

/// `/a/b/…` from raw names, or the local failure of a name no URL can carry.
fn path(segments: &[&str]) -> Result<String, Failure> {
    Ok(encode::path(segments)?)
}
