//! `echovalue kv …`: values, keys and groups.

use std::ffi::OsString;

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Store a value (POST /kv/{group}/{key}); the body is sent byte for byte
    Set {
        group: String,
        key: String,
        /// The value; absent or `-` reads stdin
        #[arg(allow_hyphen_values = true)]
        value: Option<OsString>,
        /// Seconds until the key expires [default: the server's longest]
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<String>,
    },
    /// Print a value exactly as stored, with no newline added (GET /kv/{group}/{key})
    Get { group: String, key: String },
    /// Delete a key (DELETE /kv/{group}/{key})
    Delete { group: String, key: String },
    /// The group's live keys, one `key<TAB>expires` line each (GET /kv/{group})
    List {
        group: String,
        #[command(flatten)]
        page: Page,
    },
    /// The wallet's groups, one `group<TAB>keys` line each (GET /kv)
    Groups {
        #[command(flatten)]
        page: Page,
    },
}

/// Paging of the two listings.
#[derive(Args, Debug, Clone, Default)]
pub struct Page {
    /// Only names that start with this
    #[arg(long)]
    pub prefix: Option<String>,
    /// Start after this cursor (from a previous page)
    #[arg(long)]
    pub cursor: Option<String>,
    /// Names per page [default: the server's]
    #[arg(long, value_name = "N")]
    pub limit: Option<String>,
    /// Follow the cursors to the last page (each page is one request)
    #[arg(long)]
    pub all: bool,
}
