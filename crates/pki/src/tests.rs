//! Tests for the pilot PKI: certificate contents, fingerprints, chain verification with
//! rustls (a real mTLS handshake), CA reload and private file writing.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use base64::Engine;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn roots(ca: &Ca) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(der(ca.cert_pem())).unwrap();
    Arc::new(roots)
}

fn client_verifier(ca: &Ca) -> Arc<dyn ClientCertVerifier> {
    WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap()
}

fn server_verifier(ca: &Ca) -> Arc<WebPkiServerVerifier> {
    WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
        .build()
        .unwrap()
}

/// Decodes the first PEM block by hand, independently of the code under test.
fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// The DER encoding of `CN=<cn>` as rcgen writes it (OID 2.5.4.3, UTF8String).
fn cn_attribute(cn: &str) -> Vec<u8> {
    let mut out = vec![0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, cn.len() as u8];
    out.extend_from_slice(cn.as_bytes());
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn device_cert_has_cn_and_fingerprint() {
    let ca = Ca::create("Springfield city CA").unwrap();
    let issued = ca.issue_device("siren-0001", 365).unwrap();
    let body = pem_body(&issued.cert_pem);
    let expected = hex::encode(Sha256::digest(&body));
    assert_eq!(issued.sha256_hex, expected);
    assert_eq!(issued.sha256_hex.len(), 64);
    assert!(
        issued
            .sha256_hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    assert_eq!(fingerprint_pem(&issued.cert_pem).unwrap(), expected);
    assert!(contains(&body, &cn_attribute("siren-0001")), "subject cn");
    assert!(
        contains(&body, &cn_attribute("Springfield city CA")),
        "issuer cn"
    );
    assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(
        !format!("{issued:?}").contains("PRIVATE"),
        "debug leaks the key"
    );
    // Each issue uses a fresh key.
    let again = ca.issue_device("siren-0001", 365).unwrap();
    assert_ne!(again.sha256_hex, issued.sha256_hex);
    assert_ne!(again.key_pem, issued.key_pem);
}

#[test]
fn device_cert_verifies_as_client_only() {
    let ca = Ca::create("city CA").unwrap();
    let device = ca.issue_device("pump-7", 30).unwrap();
    let now = UnixTime::now();
    client_verifier(&ca)
        .verify_client_cert(&der(&device.cert_pem), &[], now)
        .expect("device cert must verify as an mTLS client");
    // EKU clientAuth only: not usable as a server certificate.
    let name = ServerName::try_from("pump-7").unwrap();
    assert!(
        server_verifier(&ca)
            .verify_server_cert(&der(&device.cert_pem), &[], &name, &[], now)
            .is_err()
    );
    // A certificate from another CA is refused.
    let other = Ca::create("rogue CA").unwrap();
    let rogue = other.issue_device("pump-7", 30).unwrap();
    assert!(
        client_verifier(&ca)
            .verify_client_cert(&der(&rogue.cert_pem), &[], now)
            .is_err()
    );
}

#[test]
fn server_cert_verifies_for_its_names_only() {
    let ca = Ca::create("city CA").unwrap();
    let server = ca
        .issue_server(
            &["localhost".to_owned(), "broker.city.example".to_owned()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            90,
        )
        .unwrap();
    let verifier = server_verifier(&ca);
    let cert = der(&server.cert_pem);
    let now = UnixTime::now();
    for good in ["localhost", "broker.city.example", "127.0.0.1"] {
        let name = ServerName::try_from(good).unwrap();
        verifier
            .verify_server_cert(&cert, &[], &name, &[], now)
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    let name = ServerName::try_from("evil.example").unwrap();
    assert!(
        verifier
            .verify_server_cert(&cert, &[], &name, &[], now)
            .is_err()
    );
    // EKU serverAuth only: not usable as a client certificate.
    assert!(
        client_verifier(&ca)
            .verify_client_cert(&cert, &[], now)
            .is_err()
    );
}

#[tokio::test]
async fn mutual_tls_handshake() {
    let ca = Ca::create("city CA").unwrap();
    let server = ca.issue_server(&["localhost".to_owned()], &[], 30).unwrap();
    let device = ca.issue_device("siren-0001", 30).unwrap();

    let server_config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier(&ca))
        .with_single_cert(
            vec![der(&server.cert_pem)],
            PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let client_config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&ca))
        .with_client_auth_cert(
            vec![der(&device.cert_pem)],
            PrivateKeyDer::from_pem_slice(device.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();

    let (client_io, server_io) = tokio::io::duplex(16 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let server_side = async move {
        let mut stream = acceptor.accept(server_io).await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        let peer = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        (buf, fingerprint_der(&peer))
    };
    let client_side = async move {
        let name = ServerName::try_from("localhost").unwrap();
        let mut stream = connector.connect(name, client_io).await.unwrap();
        stream.write_all(b"hello").await.unwrap();
        stream.flush().await.unwrap();
        stream
    };
    let ((received, peer_fingerprint), _client) = tokio::join!(server_side, client_side);
    assert_eq!(&received, b"hello");
    assert_eq!(peer_fingerprint, device.sha256_hex);
}

#[test]
fn load_round_trip_and_key_mismatch() {
    let ca = Ca::create("city CA").unwrap();
    let loaded = Ca::load(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.sha256_hex(), ca.sha256_hex());
    let device = loaded.issue_device("meter-9", 10).unwrap();
    client_verifier(&ca)
        .verify_client_cert(&der(&device.cert_pem), &[], UnixTime::now())
        .expect("cert from the reloaded ca must chain to the original ca");

    let other = Ca::create("other").unwrap();
    assert!(matches!(
        Ca::load(ca.cert_pem(), &other.key_pem()),
        Err(Error::KeyMismatch)
    ));
    assert!(matches!(
        Ca::load("not pem", &ca.key_pem()),
        Err(Error::NoCertificate)
    ));
}

#[test]
fn bad_input_is_refused() {
    let ca = Ca::create("city CA").unwrap();
    for bad in ["", "a/b", "-x", "siren#1"] {
        assert!(
            matches!(ca.issue_device(bad, 10), Err(Error::Invalid(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(ca.issue_device("ok", 0), Err(Error::Invalid(_))));
    assert!(matches!(
        ca.issue_device("ok", MAX_LEAF_DAYS + 1),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        ca.issue_server(&[], &[], 10),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(Ca::create(" "), Err(Error::Invalid(_))));
    assert!(matches!(fingerprint_pem(""), Err(Error::NoCertificate)));
}

#[cfg(unix)]
#[test]
fn write_private_is_owner_only_and_create_new() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.key");
    write_private(&path, b"secret-1", false).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert!(matches!(
        write_private(&path, b"secret-2", false),
        Err(Error::Exists { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"secret-1");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_private(&path, b"secret-3", true).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"secret-3");
    assert_eq!(mode(&path), 0o600);
}
