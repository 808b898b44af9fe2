//! Signed JSON webhooks: each alert or incident change is POSTed as JSON with
//! `X-Citysec-Timestamp` (Unix seconds) and `X-Citysec-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of `<timestamp>.<body>` under the webhook's shared secret, so a receiver can
//! check origin and integrity and refuse replays of old deliveries.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use model::Timestamp;
use serde::{Deserialize, Serialize};

use crate::integrations::Record;

/// `[[integrations.webhooks]]`: one receiver.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    /// `https://...` (or `http://` on a trusted network or loopback).
    pub url: String,
    /// The shared HMAC key (at least 16 characters; use `${VAR}` to read it from the
    /// environment).
    pub secret: String,
    /// Per-request timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM file of the CA that signed the receiver's certificate (an `https://` receiver
    /// with a certificate from the city's own CA); default: the public web PKI roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

fn default_timeout_ms() -> u64 {
    5000
}

impl WebhookConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.url.starts_with("https://") || self.url.starts_with("http://"),
            "integrations.webhooks {:?}: url must start with https:// or http://",
            self.name
        );
        anyhow::ensure!(
            self.secret.chars().count() >= 16,
            "integrations.webhooks {:?}: secret must be at least 16 characters",
            self.name
        );
        anyhow::ensure!(
            (100..=60_000).contains(&self.timeout_ms),
            "integrations.webhooks {:?}: timeout_ms must be 100 to 60000",
            self.name
        );
        Ok(())
    }
}

/// The JSON body of a delivery.
pub fn body(record: &Record, sent_at: Timestamp) -> String {
    let value = match record {
        Record::Alert(alert) => serde_json::json!({
            "type": "alert",
            "sent_at": sent_at,
            "alert": alert,
        }),
        Record::Incident(incident, change) => serde_json::json!({
            "type": "incident",
            "change": change,
            "sent_at": sent_at,
            "incident": {
                "id": incident.id,
                "title": incident.title,
                "state": incident.state,
                "severity": incident.severity,
                "owner": incident.owner,
                "devices": incident.devices,
                "alerts": incident.alerts.len(),
                "times": incident.times,
                "durations": incident.durations(),
                "last": incident.timeline.last(),
            },
        }),
    };
    value.to_string()
}

/// `sha256=<hex>` of HMAC-SHA256(secret, `<timestamp>.<body>`).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("hmac takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether a failed delivery is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    Retry(String),
    Permanent(String),
}

/// One receiver's HTTP client (its CA loaded once).
pub(crate) struct WebhookSender {
    config: WebhookConfig,
    agent: ureq::Agent,
}

impl WebhookSender {
    pub(crate) fn new(config: WebhookConfig) -> anyhow::Result<WebhookSender> {
        use anyhow::Context;
        let mut builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(config.timeout_ms)));
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file)
                .with_context(|| format!("failed to read {}", ca_file.display()))?;
            let mut roots = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                if let ureq::tls::PemItem::Certificate(cert) =
                    item.with_context(|| format!("bad pem in {}", ca_file.display()))?
                {
                    roots.push(cert);
                }
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "{} holds no certificate",
                ca_file.display()
            );
            builder = builder.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
                    .build(),
            );
        }
        Ok(WebhookSender {
            agent: builder.build().into(),
            config,
        })
    }

    /// POSTs one record (blocking; the forwarder runs it on the blocking pool).
    pub(crate) fn deliver(&self, record: &Record) -> Result<(), Failure> {
        deliver(&self.config, &self.agent, record)
    }
}

fn deliver(config: &WebhookConfig, agent: &ureq::Agent, record: &Record) -> Result<(), Failure> {
    let now = Timestamp::now();
    let body = body(record, now);
    let timestamp = now.as_millis() / 1000;
    let response = agent
        .post(&config.url)
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("citysec/", env!("CARGO_PKG_VERSION")))
        .header("X-Citysec-Timestamp", &timestamp.to_string())
        .header(
            "X-Citysec-Signature",
            &signature(&config.secret, timestamp, &body),
        )
        .send(body.as_bytes())
        .map_err(|e| Failure::Retry(format!("post to {} failed: {e}", config.url)))?;
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(()),
        408 | 425 | 429 | 500..=599 => {
            Err(Failure::Retry(format!("{} answered {status}", config.url)))
        }
        _ => Err(Failure::Permanent(format!(
            "{} answered {status} (not retried)",
            config.url
        ))),
    }
}
