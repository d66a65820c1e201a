//! A proxy running inside the test process on `127.0.0.1:0`, with a handle to shut it down
//! and to wait for it, so tests can observe graceful shutdown directly.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use echovalue_proxy::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::env;

/// A running proxy. Dropping it asks it to stop.
pub struct TestProxy {
    pub addr: SocketAddr,
    api: Api,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

/// Settings every test proxy shares: the proxy role's URL and a small pool, so tests that
/// run in parallel stay well under the cluster's connection limit. Tests that hold a wallet
/// locked on purpose (batching, shutdown) do so for longer than the default lock and queue
/// timeouts may allow on a loaded machine, so those are long here; the tests of the
/// timeouts (`connections.rs`) set their own. Every test client is one loopback address, and
/// the counting tests open hundreds of connections at once, so the per-address cap is off
/// (`connections.rs` tests the caps).
pub fn test_config() -> Result<Config> {
    let mut config = Config {
        database_url: env::proxy_url()?,
        pool_size: 4,
        ..Config::default()
    };
    config.limits.lock_timeout_ms = 60_000;
    config.limits.statement_timeout_ms = 120_000;
    config.limits.queue_timeout_ms = 60_000;
    config.limits.max_connections_per_address = 0;
    Ok(config)
}

impl TestProxy {
    /// A proxy with [`test_config`].
    pub async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// A proxy with [`test_config`] changed by `tweak` (pool size, trusted forwarding, ...).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Result<Self> {
        let mut proxy = Self::spawn_with(tweak).await?;
        proxy.wait_ready().await?;
        Ok(proxy)
    }

    /// Like [`TestProxy::start_with`] without waiting for `/healthz`: for tests of a proxy
    /// whose database is unreachable.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Result<Self> {
        let mut config = test_config()?;
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(echovalue_proxy::run(listener, config, async move {
            // A dropped sender means the test is over: stop as well.
            let _ = stopped.await;
        }));
        let api = Api::new(format!("http://{addr}"))?;
        Ok(Self {
            addr,
            api,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Waits until `/healthz` answers 200, or reports why the proxy ended.
    async fn wait_ready(&mut self) -> Result<()> {
        let mut last = String::new();
        for _ in 0..100 {
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                let outcome = self.join().await;
                bail!("proxy stopped during start-up: {outcome:?}");
            }
            match self.api.get("/healthz", None).await {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last = format!("status {} body {:?}", r.status, r.text()),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("proxy on {} not ready after 5 s: {last}", self.addr)
    }

    /// The client for this proxy.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Asks the proxy to stop; in-flight requests may still complete.
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `run` to return and hands back its result.
    pub async fn join(&mut self) -> Result<()> {
        let task = self
            .task
            .take()
            .ok_or_else(|| anyhow!("proxy already joined"))?;
        task.await.context("proxy task panicked or was cancelled")?
    }

    /// Stops the proxy and waits for it.
    pub async fn shutdown(mut self) -> Result<()> {
        self.trigger_shutdown();
        self.join().await
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}
