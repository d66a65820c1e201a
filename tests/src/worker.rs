//! The mailhook worker running inside the test process (as `echovalue_mailhook`), stopped
//! when dropped. Tests that need to kill the worker run the binary instead.

use anyhow::{Context, Result};
use echovalue_mailhook::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::env;

pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl TestWorker {
    /// A worker that polls every second, so a test never waits long for a missed wake-up.
    pub fn start() -> Result<Self> {
        Self::start_with(|_| {})
    }

    /// A worker with the test settings changed by `tweak`.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Result<Self> {
        let mut config = Config {
            database_url: env::mailhook_url()?,
            poll_secs: 1,
            reconnect_max_secs: 1,
            // any free port: tests run many workers at once
            smtp_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            // no webhook dispatcher: these workers must not send other tests' mail
            delivery_concurrency: 0,
            ..Config::default()
        };
        tweak(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(echovalue_mailhook::run(config, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops the worker and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.context("worker task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
