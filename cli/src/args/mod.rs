//! The command line's grammar (clap derive): global options, then one subcommand per
//! endpoint. Values the server checks (TTLs, counts, limits, amounts) are taken as text and
//! sent as given, so the server's own `400` explains a bad one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod keys;
mod kv;
mod webhook;

pub use webhook::parse_header;

pub use keys::{KeyFields, KeysCommand};
pub use kv::{KvCommand, Page};
pub use webhook::{WebhookCommand, WebhookFields};

const AFTER_HELP: &str = "\
Configuration: the base URL is --url, else ECHOVALUE_URL, else `url` in the config file, \
else http://127.0.0.1:8080; the token is --token, else ECHOVALUE_TOKEN, else `token` in the \
config file. The config file is --config (or ECHOVALUE_CONFIG), else \
$XDG_CONFIG_HOME/echovalue/config.toml, else ~/.config/echovalue/config.toml.

Exit status: 0 for a 2xx answer; 1 for a 4xx answer (its body on stderr); 2 for a 5xx \
answer, a server that cannot be reached, a local error (config file, stdin), or a usage error.";

/// The `echovalue` command line: a key-value store with TTL, Mail2Webhook and a credit wallet,
/// over its HTTP API.
#[derive(Parser, Debug)]
#[command(name = "echovalue", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Base URL of the service (give it before the subcommand) [default: config file `url`, then
    /// http://127.0.0.1:8080]
    #[arg(long, env = "ECHOVALUE_URL", value_name = "URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes, before or after it.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// API token, sent as `x-token` [default: config file `token`]
    #[arg(long, env = "ECHOVALUE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Config file [default: $XDG_CONFIG_HOME/echovalue/config.toml or
    /// ~/.config/echovalue/config.toml]
    #[arg(long, env = "ECHOVALUE_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// Print the response body exactly as received
    #[arg(long, global = true)]
    pub json: bool,
    /// Print the status line and the x-cost, x-balance, x-limit-* and retry-after headers to stderr
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Seconds to wait for an answer
    #[arg(long, value_name = "SECS", default_value_t = 60, global = true)]
    pub timeout: u64,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make a wallet: `token new` (POST /token)
    #[command(subcommand)]
    Token(TokenCommand),
    /// The wallet's balance (GET /token)
    Balance,
    /// A payment link to recharge the wallet (GET /recharge)
    Recharge {
        /// The tier, in euros
        #[arg(long, default_value = "1")]
        amount: String,
    },
    /// The wallet's request logs, newest first (GET /token/logs)
    Logs {
        /// Entries to show [default: the server's]
        #[arg(short = 'n', value_name = "N")]
        n: Option<String>,
        /// Keep one endpoint: kv, token, webhook, webhook-delivery, email, recharge, settings
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
    },
    /// The key-value store (/kv)
    #[command(subcommand)]
    Kv(KvCommand),
    /// Mail2Webhook and scheduled webhooks (/webhook)
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// API tokens of the wallet, with limits and scopes (/token/keys)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Low-balance alerts (/token/settings)
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Whether the service and its database answer (GET /healthz, no token)
    Health,
    /// Any other request: METHOD PATH (with its query), sent with the token
    Request {
        /// GET, POST, PUT, PATCH, DELETE, ...
        method: String,
        /// Path and query, as sent: /kv/default/mykey?ttl=60
        path: String,
        /// Request body; `-` reads stdin, `@FILE` reads a file
        #[arg(long)]
        body: Option<String>,
        /// Content type of the body [default: application/x-www-form-urlencoded, as curl -d]
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
    },
    /// Print a shell completion script: `echovalue completions bash > /etc/bash_completion.d/echovalue`
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// A new wallet with its root token (POST /token); prints the token
    New {
        #[command(flatten)]
        save: Save,
    },
}

/// Where a new token goes besides stdout.
#[derive(Args, Debug, Clone, Copy)]
pub struct Save {
    /// Also write the token and the base URL to the config file (mode 0600)
    #[arg(long)]
    pub save: bool,
    /// With --save, replace a token the config file already holds
    #[arg(long, requires = "save")]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
pub enum SettingsCommand {
    /// The wallet's settings (GET /token/settings)
    Get,
    /// Replace the wallet's settings (PUT /token/settings)
    Put {
        /// The settings as JSON; `-` reads stdin, `@FILE` reads a file
        #[arg(long)]
        body: String,
    },
}
