//! The city CA the broker's mTLS listener trusts, when the config names no certificates of
//! its own: `[ingest.mqtt] tls_listen` without `tls_cert` and `tls_key`.
//!
//! On first start [`prepare`] creates `<data-dir>/pki/` (mode 0700) with a CA (`ca.pem`,
//! `ca.key` mode 0600, made by the `pki` crate, never shipped in the repository); on every
//! start it issues a fresh broker certificate (`mqtt-server.pem`, `mqtt-server.key`, mode
//! 0600) for `localhost`, the loopback addresses and the listen address, signed by that CA,
//! so clients that trust `ca.pem` can connect whatever address the broker listens on now.
//! Device client certificates must chain to the same CA (`client_ca`), and the broker
//! then checks each certificate's CN and fingerprint against the registry.
//! A CA key that others can read is refused, as the gateway's key is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ingest::mqtt::MqttConfig;

/// The folder under the data directory.
pub const PKI_DIR: &str = "pki";
/// The CA certificate (what devices and exercise clients trust).
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key (mode 0600).
pub const CA_KEY: &str = "ca.key";
const SERVER_STEM: &str = "mqtt-server";
/// How long the generated broker certificate is valid (re-issued at every start).
const SERVER_DAYS: u32 = 397;

/// `<data-dir>/pki`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(PKI_DIR)
}

/// Fills in `tls_cert`, `tls_key` and `client_ca` of a broker config that asks for a TLS
/// listener without naming certificates, creating the city CA on first use. Configs that
/// name their own certificates, or have no TLS listener, are returned unchanged.
pub fn prepare(data_dir: &Path, mqtt: &MqttConfig) -> anyhow::Result<MqttConfig> {
    let Some(listen) = &mqtt.tls_listen else {
        return Ok(mqtt.clone());
    };
    if mqtt.tls_cert.is_some() || mqtt.tls_key.is_some() {
        return Ok(mqtt.clone());
    }
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("ingest.mqtt.tls_listen: {listen:?} is not an address"))?;
    let dir = dir(data_dir);
    let ca = load_or_create_ca(&dir)?;
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    if !listen.ip().is_unspecified() && !ips.contains(&listen.ip()) {
        ips.push(listen.ip());
    }
    let server = ca
        .issue_server(&["localhost".to_owned()], &ips, SERVER_DAYS)
        .context("failed to issue the broker's certificate")?;
    let key_path = dir.join(format!("{SERVER_STEM}.key"));
    let cert_path = dir.join(format!("{SERVER_STEM}.pem"));
    pki::write_private(&key_path, server.key_pem.as_bytes(), true)?;
    std::fs::write(&cert_path, &server.cert_pem)
        .with_context(|| format!("failed to write {}", cert_path.display()))?;
    let mut out = mqtt.clone();
    out.tls_cert = Some(cert_path);
    out.tls_key = Some(key_path);
    if out.client_ca.is_none() {
        out.client_ca = Some(dir.join(CA_CERT));
    }
    Ok(out)
}

/// Loads the city CA from `<data-dir>/pki` (what `citysec exercise run` uses, on the
/// platform's machine, to issue the client certificates its scenarios present).
pub fn load_ca(data_dir: &Path) -> anyhow::Result<pki::Ca> {
    let dir = dir(data_dir);
    let key_path = dir.join(CA_KEY);
    if !key_path.exists() {
        bail!(
            "{} does not exist: the platform generates its city CA there on first start when \
             [ingest.mqtt] tls_listen is set without tls_cert and tls_key",
            key_path.display()
        );
    }
    read_ca(&dir)
}

fn load_or_create_ca(dir: &Path) -> anyhow::Result<pki::Ca> {
    let key_path = dir.join(CA_KEY);
    if key_path.exists() {
        return read_ca(dir);
    }
    create_private_dir(dir)?;
    let ca = pki::Ca::create("citysec city CA").context("failed to create the city CA")?;
    pki::write_private(&key_path, ca.key_pem().as_bytes(), false)?;
    let cert_path = dir.join(CA_CERT);
    std::fs::write(&cert_path, ca.cert_pem())
        .with_context(|| format!("failed to write {}", cert_path.display()))?;
    tracing::info!(path = %cert_path.display(), sha256 = %ca.sha256_hex(), "generated the city CA");
    Ok(ca)
}

fn read_ca(dir: &Path) -> anyhow::Result<pki::Ca> {
    let key_path = dir.join(CA_KEY);
    let cert_path = dir.join(CA_CERT);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path)
            .with_context(|| format!("failed to read {}", key_path.display()))?
            .permissions()
            .mode()
            & 0o777;
        anyhow::ensure!(
            mode & 0o077 == 0,
            "{} is readable by others (mode {mode:o}); chmod 600 it",
            key_path.display()
        );
    }
    let key = std::fs::read_to_string(&key_path)
        .with_context(|| format!("failed to read {}", key_path.display()))?;
    let cert = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("failed to read {}", cert_path.display()))?;
    pki::Ca::load(&cert, &key)
        .with_context(|| format!("failed to load the city CA from {}", dir.display()))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("failed to restrict {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_tls(listen: &str) -> MqttConfig {
        MqttConfig {
            tls_listen: Some(listen.to_owned()),
            ..MqttConfig::default()
        }
    }

    #[test]
    fn generates_the_ca_once_and_a_server_certificate_each_start() {
        let data = tempfile::tempdir().unwrap();
        let first = prepare(data.path(), &with_tls("127.0.0.1:8883")).unwrap();
        let dir = dir(data.path());
        assert_eq!(
            first.client_ca.as_deref(),
            Some(dir.join(CA_CERT).as_path())
        );
        let ca_before = std::fs::read_to_string(dir.join(CA_CERT)).unwrap();
        let server_before = std::fs::read_to_string(first.tls_cert.as_ref().unwrap()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
            assert_eq!(mode(first.tls_key.as_ref().unwrap()), 0o600);
        }
        // A second start keeps the CA (devices' certificates stay valid) and re-issues the
        // server certificate under it.
        let second = prepare(data.path(), &with_tls("127.0.0.2:8883")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(CA_CERT)).unwrap(),
            ca_before
        );
        let server_after = std::fs::read_to_string(second.tls_cert.as_ref().unwrap()).unwrap();
        assert_ne!(server_after, server_before);
        // The loaded CA is the one on disk and issues device certificates.
        let ca = load_ca(data.path()).unwrap();
        assert_eq!(ca.cert_pem(), ca_before);
        assert!(ca.issue_device("siren-0001", 1).is_ok());
    }

    #[test]
    fn leaves_explicit_configs_alone_and_refuses_a_readable_key() {
        let data = tempfile::tempdir().unwrap();
        let none = MqttConfig::default();
        assert_eq!(prepare(data.path(), &none).unwrap(), none);
        let own = MqttConfig {
            tls_cert: Some("own.pem".into()),
            tls_key: Some("own.key".into()),
            ..with_tls("127.0.0.1:8883")
        };
        assert_eq!(prepare(data.path(), &own).unwrap(), own);
        assert!(!dir(data.path()).exists(), "nothing generated");
        let err = load_ca(data.path()).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            prepare(data.path(), &with_tls("127.0.0.1:8883")).unwrap();
            let key = dir(data.path()).join(CA_KEY);
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = prepare(data.path(), &with_tls("127.0.0.1:8883")).unwrap_err();
            assert!(format!("{err:#}").contains("readable by others"), "{err:#}");
        }
    }
}
