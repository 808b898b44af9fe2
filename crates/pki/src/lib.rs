//! A small city PKI for pilots: a self-signed CA (ECDSA P-256) that issues device client
//! certificates (CN = device id, EKU clientAuth) for MQTT mTLS and server certificates
//! (EKU serverAuth) for the broker and the HTTP API.
//!
//! Devices are registered by the SHA-256 fingerprint of their certificate's DER encoding
//! ([`Issued::sha256_hex`], [`fingerprint_pem`]).

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

#[cfg(test)]
mod tests;

/// How long a CA made by [`Ca::create`] is valid.
pub const CA_DAYS: u32 = 3_650;
/// The longest validity [`Ca::issue_device`] and [`Ca::issue_server`] accept.
pub const MAX_LEAF_DAYS: u32 = 3_650;
/// Certificates start this long before now, to tolerate clock skew between hosts.
const BACKDATE: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("certificate operation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("no certificate found in pem input")]
    NoCertificate,
    #[error("private key does not belong to the ca certificate")]
    KeyMismatch,
    #[error("{path} already exists (use --force to overwrite)")]
    Exists { path: PathBuf },
    #[error("failed to write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A certificate authority that can issue certificates.
pub struct Ca {
    cert_pem: String,
    sha256_hex: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("sha256", &self.sha256_hex)
            .finish_non_exhaustive()
    }
}

/// A freshly issued certificate and its private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    /// PKCS#8 PEM; secret.
    pub key_pem: String,
    /// Lowercase hex SHA-256 of the certificate's DER encoding.
    pub sha256_hex: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("sha256_hex", &self.sha256_hex)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a self-signed CA valid for [`CA_DAYS`] days that may sign end-entity
    /// certificates only (path length 0).
    pub fn create(common_name: &str) -> Result<Ca> {
        if common_name.trim().is_empty() {
            return Err(Error::Invalid("ca name is empty".into()));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_DAYS);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            sha256_hex: fingerprint_der(cert.der()),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and PKCS#8 private key, both PEM.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| Error::NoCertificate)?;
        let key = KeyPair::from_pem(key_pem)?;
        // The SubjectPublicKeyInfo in the certificate must carry the key's public half.
        let public = key.public_key_raw();
        if public.is_empty() || !der.windows(public.len()).any(|w| w == public) {
            return Err(Error::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            sha256_hex: fingerprint_der(&der),
            issuer,
        })
    }

    /// The CA certificate, PEM (what devices and servers trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM; secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Lowercase hex SHA-256 of the CA certificate's DER encoding.
    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }

    /// Issues a client certificate for `device_id` (CN = the id, EKU clientAuth) valid for
    /// `days` days, with a fresh P-256 key.
    pub fn issue_device(&self, device_id: &str, days: u32) -> Result<Issued> {
        model::DeviceId::check(device_id)
            .map_err(|e| Error::Invalid(format!("{device_id:?}: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, device_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, days)
    }

    /// Issues a server certificate for the given DNS names and IP addresses (EKU
    /// serverAuth) valid for `days` days, with a fresh P-256 key.
    pub fn issue_server(&self, dns_names: &[String], ips: &[IpAddr], days: u32) -> Result<Issued> {
        if dns_names.is_empty() && ips.is_empty() {
            return Err(Error::Invalid(
                "a server certificate needs at least one dns name or ip address".into(),
            ));
        }
        let mut params = CertificateParams::default();
        for name in dns_names {
            let ia5 = name
                .as_str()
                .try_into()
                .map_err(|_| Error::Invalid(format!("dns name {name:?} is not ascii")))?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(ips.iter().copied().map(SanType::IpAddress));
        let common_name = dns_names
            .first()
            .cloned()
            .or_else(|| ips.first().map(|ip| ip.to_string()))
            .unwrap_or_default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, days)
    }

    fn issue(&self, mut params: CertificateParams, days: u32) -> Result<Issued> {
        if days == 0 || days > MAX_LEAF_DAYS {
            return Err(Error::Invalid(format!(
                "validity must be 1 to {MAX_LEAF_DAYS} days, got {days}"
            )));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, days);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            sha256_hex: fingerprint_der(cert.der()),
        })
    }
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
}

/// Lowercase hex SHA-256 of a DER encoding.
pub fn fingerprint_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Lowercase hex SHA-256 of the DER encoding of the first certificate in `cert_pem`.
pub fn fingerprint_pem(cert_pem: &str) -> Result<String> {
    let der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| Error::NoCertificate)?;
    Ok(fingerprint_der(&der))
}

/// Writes a secret file readable by its owner only (mode 0600 on Unix) and syncs it to
/// disk. Without `force` an existing file is an error ([`Error::Exists`]) and is left
/// untouched; with `force` it is replaced and its mode reset to 0600.
pub fn write_private(path: &Path, contents: &[u8], force: bool) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists {
                path: path.to_owned(),
            }
        } else {
            io(e)
        }
    })?;
    #[cfg(unix)]
    {
        // `mode` only applies to new files; a forced overwrite must not keep looser bits.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}
