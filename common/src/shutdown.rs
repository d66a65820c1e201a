//! When a binary stops: on the first SIGTERM (what systemd and container runtimes send) or
//! SIGINT (Ctrl-C).

use std::future::Future;

/// Installs the SIGTERM and SIGINT handlers now, so a signal that comes before the future is
/// first polled is not lost; the future resolves on the first of them and logs which.
/// Must be called inside a Tokio runtime.
#[cfg(unix)]
pub fn on_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Ctrl-C only where there are no Unix signals.
#[cfg(not(unix))]
pub fn on_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("Ctrl-C received"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    })
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::on_signal;

    #[tokio::test]
    async fn resolves_on_sigterm_only() {
        let stop = on_signal().unwrap();
        tokio::pin!(stop);
        let early = tokio::time::timeout(Duration::from_millis(50), &mut stop).await;
        assert!(early.is_err(), "resolved without a signal");
        // The handlers are installed, so this SIGTERM reaches the future, not the default
        // action that would end the test process.
        let pid = std::process::id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(5), stop)
            .await
            .expect("no shutdown after SIGTERM");
    }
}
