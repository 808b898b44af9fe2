//! Syslog (RFC 5424) over TCP or TLS with octet-counting framing (RFC 6587 section 3.4.1,
//! RFC 5425): `<len> <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - CEF:0|...`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use model::{Severity, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::integrations::{Record, cef};

/// `[[integrations.syslog]]`: one SIEM syslog receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// A name for status and metrics.
    pub name: String,
    /// `host:port` of the receiver.
    pub address: String,
    /// `tcp` or `tls`.
    #[serde(default)]
    pub transport: Transport,
    /// PEM file of the CA that signed the receiver's certificate (TLS; default: none, so
    /// TLS needs it).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// The name to check the receiver's certificate against (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The syslog facility, 0-23 (default 10, security/authorization).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// HOSTNAME of the messages (default `citysec`).
    #[serde(default = "default_hostname")]
    pub hostname: String,
}

fn default_facility() -> u8 {
    10
}

fn default_hostname() -> String {
    "citysec".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    #[default]
    Tcp,
    Tls,
}

impl SyslogConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.facility <= 23,
            "integrations.syslog {:?}: facility must be 0 to 23",
            self.name
        );
        anyhow::ensure!(
            self.address
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
            "integrations.syslog {:?}: address must be host:port, not {:?}",
            self.name,
            self.address
        );
        anyhow::ensure!(
            !self.hostname.is_empty()
                && self.hostname.len() <= 255
                && self.hostname.bytes().all(|b| b.is_ascii_graphic()),
            "integrations.syslog {:?}: hostname must be 1 to 255 printable ascii characters",
            self.name
        );
        if self.transport == Transport::Tls {
            anyhow::ensure!(
                self.ca_file.is_some(),
                "integrations.syslog {:?}: transport tls needs ca_file",
                self.name
            );
        }
        Ok(())
    }
}

/// The syslog severity of an alert severity.
pub fn syslog_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// One RFC 5424 message (without framing).
pub fn format_message(
    facility: u8,
    hostname: &str,
    procid: u32,
    record: &Record,
    now: Timestamp,
) -> String {
    let (severity, msgid) = match record {
        Record::Alert(a) => (a.severity, "alert"),
        Record::Incident(i, _) => (i.severity, "incident"),
    };
    let pri = u16::from(facility) * 8 + u16::from(syslog_severity(severity));
    format!(
        "<{pri}>1 {} {hostname} citysec {procid} {msgid} - {}",
        now.to_rfc3339(),
        cef::record(record)
    )
}

/// Octet-counting framing: the byte length, a space, the message.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

trait Stream: AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// A connection to the receiver, opened on first use and again after a failure.
pub(crate) struct SyslogSender {
    config: SyslogConfig,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    conn: Option<Box<dyn Stream>>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl SyslogSender {
    pub(crate) fn new(config: SyslogConfig) -> anyhow::Result<SyslogSender> {
        let tls = match config.transport {
            Transport::Tcp => None,
            Transport::Tls => {
                let ca = config
                    .ca_file
                    .as_deref()
                    .context("transport tls needs ca_file")?;
                let host = config
                    .server_name
                    .clone()
                    .unwrap_or_else(|| host_of(&config.address).to_owned());
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .with_context(|| format!("{host:?} is not a valid tls server name"))?;
                Some((tokio_rustls::TlsConnector::from(client_config(ca)?), name))
            }
        };
        Ok(SyslogSender {
            config,
            tls,
            conn: None,
        })
    }

    /// Sends one framed message; on failure the connection is dropped so the next attempt
    /// reconnects.
    pub(crate) async fn send(&mut self, record: &Record) -> Result<(), String> {
        let message = format_message(
            self.config.facility,
            &self.config.hostname,
            std::process::id(),
            record,
            Timestamp::now(),
        );
        let bytes = frame(&message);
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let result = tokio::time::timeout(IO_TIMEOUT, async {
            conn.write_all(&bytes).await?;
            conn.flush().await
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(format!("write to {} failed: {e}", self.config.address))
            }
            Err(_) => {
                self.conn = None;
                Err(format!("write to {} timed out", self.config.address))
            }
        }
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let address = &self.config.address;
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| format!("connect to {address} timed out"))?
            .map_err(|e| format!("connect to {address} failed: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(IO_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| format!("tls handshake with {address} timed out"))?
                    .map_err(|e| format!("tls handshake with {address} failed: {e}"))?;
                Ok(Box::new(tls))
            }
        }
    }

    /// Shuts the connection down cleanly (TLS close_notify), so the receiver keeps
    /// everything sent.
    pub(crate) async fn close(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = tokio::time::timeout(IO_TIMEOUT, conn.shutdown()).await;
        }
    }
}

fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn client_config(ca_file: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem =
        std::fs::read(ca_file).with_context(|| format!("failed to read {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.with_context(|| format!("bad certificate in {}", ca_file.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("unusable certificate in {}", ca_file.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "{} holds no certificate",
        ca_file.display()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
