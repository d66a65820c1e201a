//! The `echovalue` binary against the real stack: an in-process proxy on loopback and the
//! test database (`bash tests/run.sh`). Every subcommand runs as a child process with a home
//! of its own; each test asserts its stdout, stderr and exit status. The modules live in
//! `tests/cli/`, one per area.

#[path = "cli/keys.rs"]
mod keys;
#[path = "cli/kv.rs"]
mod kv;
#[path = "cli/support.rs"]
mod support;
#[path = "cli/wallet.rs"]
mod wallet;
#[path = "cli/webhook.rs"]
mod webhook;
