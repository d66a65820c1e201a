//! Support code for the HTTP integration tests of echovalue.
//!
//! The tests talk to a real Postgres that has the extension installed (prepared by
//! `bash tests/run.sh`, which exports `ECHOVALUE_TEST_ADMIN_URL` and
//! `ECHOVALUE_TEST_PROXY_URL`) through a real proxy started in-process on a loopback port.
//! Layout: [`env`] reads those two URLs, [`server`] starts and stops a proxy, [`api`] is a
//! small HTTP client that keeps status, headers and raw body together, [`admin`] is the
//! superuser connection the tests use to arrange state (wallets, balances, expiries) without
//! sleeping or tripping the token rate limit, [`token`] re-implements the token format
//! and hash independently of the code under test, [`stripe`] builds and signs Stripe webhook
//! fixtures (its own HMAC, not the proxy's), [`worker`] runs the mailhook worker in-process,
//! [`process`] runs the mailhook binary as a child process, and [`notifications`] listens for
//! NOTIFYs on every node.

pub mod admin;
pub mod api;
pub mod env;
pub mod notifications;
pub mod process;
pub mod server;
pub mod stripe;
pub mod token;
pub mod worker;

pub use admin::{Admin, StoredAttachment, StoredMessage, Tier, Wallet};
pub use api::{Api, Reply};
pub use notifications::Notifications;
pub use process::MailhookProcess;
pub use server::TestProxy;
pub use worker::TestWorker;

/// Starts a proxy with default test settings and opens an admin connection: the usual
/// opening line of a test.
pub async fn setup() -> anyhow::Result<(TestProxy, Admin)> {
    let proxy = TestProxy::start().await?;
    let admin = Admin::connect().await?;
    Ok((proxy, admin))
}
