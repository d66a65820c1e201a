//! `echovalue webhook …`: the wallet's webhooks, named or `default`.

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Create or replace the webhook `default`, or the one --id names (POST /webhook)
    Set {
        /// The webhookId [default: default]
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        fields: WebhookFields,
    },
    /// All the wallet's webhooks, its address and signing secret (GET /webhook)
    Get,
    /// Remove the webhook `default` (DELETE /webhook)
    Delete,
    /// One named webhook (GET /webhook/{id})
    Show { id: String },
    /// Create or replace a named webhook (PUT /webhook/{id})
    Put {
        id: String,
        #[command(flatten)]
        fields: WebhookFields,
    },
    /// Change only the given fields of a named webhook (PATCH /webhook/{id})
    Patch {
        id: String,
        #[command(flatten)]
        fields: WebhookFields,
    },
    /// Remove a named webhook (DELETE /webhook/{id})
    Remove { id: String },
    /// Deliver a sample email (or run) now and tell how it went (POST /webhook/{id}/test)
    Test { id: String },
}

/// A webhook's JSON body: built from the flags, or given whole with --body.
#[derive(Args, Debug, Clone, Default)]
pub struct WebhookFields {
    /// The URL to POST to (https, public)
    #[arg(long)]
    pub url: Option<String>,
    /// A header sent with every call, `Name: value` (repeat for more)
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// slack, discord, teams, telegram, pagerduty or custom [default: the JSON payload]
    #[arg(long)]
    pub format: Option<String>,
    /// The whole JSON body instead of the flags; `-` reads stdin, `@FILE` reads a file
    #[arg(long, conflicts_with_all = ["url", "headers", "format"])]
    pub body: Option<String>,
}

/// `Name: value` as a header pair; the name and value are trimmed, the server checks them.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected `Name: value`, got {s:?}")),
    }
}
