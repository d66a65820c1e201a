//! A test's own LISTEN on a channel, on every node as the proxy and the mailhook listen
//! (echovalue_common::listen: on Citus a delegated call NOTIFYs on its wallet's node).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use echovalue_common::listen::{self, Subscription, Timing};
use tokio::sync::{mpsc, watch};

use crate::{env, Admin};

/// The connections' application_name, by which [`Notifications::start`] sees them listening.
const APPLICATION_NAME: &str = "echovalue-test-listener";

/// The payloads of the notifications on one channel since [`Notifications::start`].
pub struct Notifications {
    payloads: mpsc::UnboundedReceiver<String>,
    _stop: watch::Sender<bool>,
}

impl Notifications {
    /// Listens on `channel` (as the admin role) and returns once the LISTEN is in place on
    /// every node.
    pub async fn start(admin: &Admin, channel: &'static str) -> Result<Self> {
        let (tx, payloads) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let pg = echovalue_common::pool::pg_config(&env::admin_url()?, APPLICATION_NAME)?;
        let wake: listen::Wake = Arc::new(move |payload: Option<&str>| {
            if let Some(p) = payload {
                let _ = tx.send(p.to_owned());
            }
        });
        let timing = Timing {
            poll: Duration::from_secs(3600),
            reconnect_max: Duration::from_secs(1),
        };
        tokio::spawn(listen::run(
            pg,
            vec![Subscription { channel, wake }],
            timing,
            stopped,
        ));
        admin.wait_listening(APPLICATION_NAME).await?;
        Ok(Self {
            payloads,
            _stop: stop,
        })
    }

    /// The next payload, within `within`.
    pub async fn next(&mut self, within: Duration) -> Result<String> {
        tokio::time::timeout(within, self.payloads.recv())
            .await
            .context("no notification in time")?
            .context("the listener ended")
    }
}
