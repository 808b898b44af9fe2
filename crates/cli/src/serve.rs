//! `citysec serve --config FILE`: the platform, until Ctrl-C or SIGTERM.

use anyhow::Context;

pub async fn run(config: app::Config) -> anyhow::Result<()> {
    let platform = app::Platform::start(config).await?;
    let scheme = platform.http_scheme();
    let roles = &platform.config().roles;
    eprintln!("citysec is running (roles: {roles:?})");
    if platform.config().runs(app::config::Role::Api) {
        eprintln!("  API:        {scheme}://{}/api/v1/", platform.http_addr());
    } else {
        eprintln!(
            "  probes:     {scheme}://{}/healthz, /readyz, /metrics",
            platform.http_addr()
        );
    }
    if let Some(mqtt) = platform.try_mqtt_addr() {
        eprintln!("  MQTT:       {mqtt}");
    }
    if let (Some(_), Some(bridge)) = (platform.bridge(), &platform.config().ingest.bridge) {
        eprintln!("  MQTT bridge: {}", bridge.brokers.join(", "));
    }
    if let Some(tls) = platform.mqtt_tls_addr() {
        eprintln!("  MQTT (TLS): {tls}");
    }
    if let Some(flow) = platform.flow_addr() {
        eprintln!("  flows (UDP): {flow}");
    }
    eprintln!("  admin token: {}", platform.admin_token_path().display());
    wait_for_signal().await?;
    eprintln!("shutting down");
    platform.shutdown().await
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("failed to watch SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("failed to watch Ctrl-C")?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("failed to watch Ctrl-C")
    }
}
