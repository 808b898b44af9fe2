//! HTTPS for the API: a TLS listener for `axum::serve`. Handshakes run in their own tasks
//! (with a timeout) so one slow client cannot stall the accept loop.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Loads a certificate chain and private key (PEM) into a rustls server config.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    server_config_with_client_certs(cert, key, false)
}

/// [`server_config`], optionally asking clients for a certificate (never requiring one).
/// A presented certificate is accepted whatever its issuer once the client proves it holds
/// the key; who it is comes from pinning its SHA-256 (TAXII partners' `cert_sha256`), read
/// through [`PeerCertificate`].
pub fn server_config_with_client_certs(
    cert: &Path,
    key: &Path,
    request_client_certs: bool,
) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("failed to read {}", cert.display()))?;
    let key_pem =
        std::fs::read(key).with_context(|| format!("failed to read {}", key.display()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("no PEM certificates in {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificates in {}", cert.display());
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("failed to parse {}", key.display()))?
        .with_context(|| format!("no private key in {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?;
    let builder = if request_client_certs {
        builder.with_client_cert_verifier(Arc::new(PinnedClientCerts(provider)))
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A listener that yields established TLS streams.
pub struct TlsListener {
    local: SocketAddr,
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> anyhow::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, incoming) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(pair) => pair,
                    Err(err) => {
                        tracing::warn!(error = %err, "https accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let handshake_tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = handshake_tx.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, %peer, "tls handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    break;
                }
            }
        });
        Ok(TlsListener { local, incoming })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(pair) => pair,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts any client certificate whose key the client proves it holds; identity is
/// decided later by fingerprint pinning.
#[derive(Debug)]
struct PinnedClientCerts(Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for PinnedClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Per-connection information of an HTTPS connection: the client certificate's SHA-256
/// (lowercase hex of the DER), when one was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    pub sha256: Option<String>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerCertificate
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> PeerCertificate {
        PeerCertificate {
            sha256: client_cert_sha256(&stream),
        }
    }
}

/// The SHA-256 (lowercase hex of the DER) of the certificate a TLS client presented.
fn client_cert_sha256(stream: &axum::serve::IncomingStream<'_, TlsListener>) -> Option<String> {
    use sha2::Digest as _;
    stream
        .io()
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| hex::encode(sha2::Sha256::digest(der.as_ref())))
}

/// The peer address of an HTTPS connection, as connect info (axum knows only plain TCP
/// listeners); [`peer_connect_info`] republishes it as `ConnectInfo<SocketAddr>`, which the
/// API's login rate limit reads.
/// The second field is the client certificate's SHA-256 (lowercase hex of the DER), when
/// the client presented one.
#[derive(Debug, Clone)]
pub struct Peer(pub SocketAddr, pub Option<String>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr(), client_cert_sha256(&stream))
    }
}

/// Middleware: `ConnectInfo<Peer>` to `ConnectInfo<SocketAddr>` (and to
/// `ConnectInfo<PeerCertificate>` when a client certificate was presented).
pub async fn peer_connect_info(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer.0));
    // The console's session cookie is `Secure` over TLS.
    req.extensions_mut().insert(web::ServedOverTls);
    if let Some(sha256) = peer.1 {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(PeerCertificate {
                sha256: Some(sha256),
            }));
    }
    next.run(req).await
}
