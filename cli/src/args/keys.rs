//! `echovalue keys …`: the wallet's API tokens.

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// A new API token of the wallet (POST /token/keys); needs the root token
    Create {
        #[command(flatten)]
        fields: KeyFields,
        #[command(flatten)]
        save: crate::args::Save,
    },
    /// Every token of the wallet, never a token itself (GET /token/keys)
    List,
    /// Revoke a token for good (DELETE /token/keys/{id})
    Revoke { id: String },
}

/// A new token's JSON body: built from the flags, or given whole with --body.
#[derive(Args, Debug, Clone, Default)]
pub struct KeyFields {
    /// A name to recognise the token by
    #[arg(long)]
    pub label: Option<String>,
    /// Most credits one request may cost (`null`: no limit)
    #[arg(long, value_name = "N")]
    pub per_request: Option<String>,
    /// Most credits per rolling 24 hours
    #[arg(long, value_name = "N")]
    pub daily: Option<String>,
    /// Most credits per rolling 30 days
    #[arg(long, value_name = "N")]
    pub monthly: Option<String>,
    /// A scope (kv:read, kv:write, logs, wallet, webhook, settings; repeat for more)
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// A KV group the token is kept to (repeat for more) [default: all]
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// The whole JSON body instead of the flags; `-` reads stdin, `@FILE` reads a file
    #[arg(long, conflicts_with_all = ["label", "per_request", "daily", "monthly", "scopes", "groups"])]
    pub body: Option<String>,
}
