//! `echovalue`, the command line of the service: every HTTP endpoint as a subcommand, one
//! plain request each, the server's answer shown as it is.
//!
//! Layout: [`args`] is the grammar (clap derive), [`config`] finds the base URL and token
//! (flag, environment, config file) and writes the file for `--save`, `encode` builds paths
//! and queries, `client` makes the one HTTP call (blocking reqwest) and prints `-v`'s
//! lines, `output` shows an answer and picks the exit status, `body` builds the JSON
//! bodies of the flag forms, and `commands` holds one module per area (wallet, kv,
//! webhook, keys and settings) that turns a subcommand into its request. Every rule of the
//! service stays in the service: values are sent as given and its error text is printed as
//! received.

pub mod args;
mod body;
mod client;
mod commands;
pub mod config;
mod encode;
mod json;
mod output;

pub use args::Cli;
pub use commands::run;

#[cfg(test)]
mod tests;
