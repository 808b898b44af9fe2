//! TLS for the broker: a rustls server config (ring provider) from PEM files, with optional
//! client certificates verified against `client_ca`, and the identity a verified client
//! certificate carries.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};

use super::MqttError;
use super::session::TlsIdentity;

/// Builds the server config: certificate chain and key, and when `client_ca` is given a
/// verifier that accepts clients without a certificate too (they then log in by password).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, MqttError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| MqttError::Tls(err.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|err| MqttError::Tls(format!("client ca: {err}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|err| MqttError::Tls(format!("client verifier: {err}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|err| MqttError::Tls(format!("server certificate: {err}")))?;
    Ok(Arc::new(config))
}

/// The identity in a (verified) client certificate: subject CN and DER SHA-256.
pub fn identity(der: &[u8]) -> TlsIdentity {
    let sha256 = Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cn = x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        });
    TlsIdentity { cn, sha256 }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MqttError> {
    let file = File::open(path).map_err(|source| MqttError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| MqttError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(MqttError::Tls(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, MqttError> {
    let file = File::open(path).map_err(|source| MqttError::Read {
        path: path.to_owned(),
        source,
    })?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|source| MqttError::Read {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| MqttError::Tls(format!("no private key in {}", path.display())))
}
