//! `citysec pki`: a small certificate authority for pilots. `init` creates the CA, `device`
//! issues mTLS client certificates (CN = device id) and prints their fingerprints for
//! `citysec device add --cert-sha256`, `server` issues the broker/API certificate.
//!
//! Private keys are written with mode 0600 and never overwritten without `--force`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pki::{Ca, Issued};

#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Create a new city CA: writes `ca.pem` and `ca.key` (mode 0600) into `--dir`.
    Init {
        /// Directory for the CA files (created if missing).
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "citysec city CA")]
        name: String,
        /// Replace an existing CA (every certificate it issued stops verifying).
        #[arg(long)]
        force: bool,
    },
    /// Issue device client certificates: writes `<id>.pem` and `<id>.key` per device and
    /// prints `<id> <sha256>` lines.
    Device {
        /// Directory holding `ca.pem` and `ca.key`; certificates are written here too.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Device ids (one certificate each).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Overwrite existing key and certificate files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a server certificate (broker, HTTPS): writes `<name>.pem` and `<name>.key`.
    Server {
        /// Directory holding `ca.pem` and `ca.key`; the certificate is written here too.
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// DNS names the server answers to (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP addresses the server answers on (repeatable).
        #[arg(long = "ip")]
        ip: Vec<IpAddr>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// File name stem for the certificate and key.
        #[arg(long, default_value = "server")]
        name: String,
        /// Overwrite existing key and certificate files.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: PkiCommand) -> Result<()> {
    match cmd {
        PkiCommand::Init { dir, name, force } => init(&dir, &name, force),
        PkiCommand::Device {
            dir,
            ids,
            days,
            force,
        } => {
            let ca = load_ca(&dir)?;
            // Check every id first so a typo in the list issues nothing.
            for id in &ids {
                check_device_id(id)?;
            }
            for id in &ids {
                let issued = ca
                    .issue_device(id, days)
                    .with_context(|| format!("failed to issue a certificate for {id}"))?;
                write_pair(&dir, id, &issued, force)?;
                println!("{id} {}", issued.sha256_hex);
            }
            eprintln!(
                "register each device with: citysec device add ... --cert-sha256 <sha256 above>"
            );
            Ok(())
        }
        PkiCommand::Server {
            dir,
            dns,
            ip,
            days,
            name,
            force,
        } => {
            if dns.is_empty() && ip.is_empty() {
                bail!("give at least one --dns name or --ip address");
            }
            check_stem(&name)?;
            let ca = load_ca(&dir)?;
            let issued = ca
                .issue_server(&dns, &ip, days)
                .context("failed to issue the server certificate")?;
            write_pair(&dir, &name, &issued, force)?;
            println!("{name} {}", issued.sha256_hex);
            Ok(())
        }
    }
}

fn init(dir: &Path, name: &str, force: bool) -> Result<()> {
    create_private_dir(dir)?;
    let key_path = dir.join("ca.key");
    if key_path.exists() && !force {
        bail!(
            "{} already exists (use --force to replace the CA)",
            key_path.display()
        );
    }
    let ca = Ca::create(name).context("failed to create the CA")?;
    pki::write_private(&key_path, ca.key_pem().as_bytes(), force)?;
    let cert_path = dir.join("ca.pem");
    std::fs::write(&cert_path, ca.cert_pem())
        .with_context(|| format!("failed to write {}", cert_path.display()))?;
    println!("ca {}", ca.sha256_hex());
    eprintln!(
        "wrote {} and {} (keep the key offline when the pilot ends)",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

fn load_ca(dir: &Path) -> Result<Ca> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    let cert = std::fs::read_to_string(&cert_path).with_context(|| {
        format!(
            "failed to read {} (run `citysec pki init --dir {}` first)",
            cert_path.display(),
            dir.display()
        )
    })?;
    let key = std::fs::read_to_string(&key_path)
        .with_context(|| format!("failed to read {}", key_path.display()))?;
    Ca::load(&cert, &key).with_context(|| format!("failed to load the CA from {}", dir.display()))
}

/// Writes `<stem>.key` (0600, create-new unless `force`) and then `<stem>.pem`.
fn write_pair(dir: &Path, stem: &str, issued: &Issued, force: bool) -> Result<()> {
    let key_path = dir.join(format!("{stem}.key"));
    let cert_path = dir.join(format!("{stem}.pem"));
    if cert_path.exists() && !force {
        bail!(
            "{} already exists (use --force to overwrite)",
            cert_path.display()
        );
    }
    pki::write_private(&key_path, issued.key_pem.as_bytes(), force)?;
    std::fs::write(&cert_path, &issued.cert_pem)
        .with_context(|| format!("failed to write {}", cert_path.display()))?;
    Ok(())
}

fn check_device_id(id: &str) -> Result<()> {
    // Same rule as device ids everywhere: it also keeps file names inside `dir`.
    check_stem(id).with_context(|| format!("invalid device id {id:?}"))
}

/// A file name stem: letters, digits, `.`, `_`, `-`, starting with a letter or digit.
fn check_stem(stem: &str) -> Result<()> {
    let ok = stem.len() <= 64
        && stem
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!(
            "{stem:?} must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        );
    }
    Ok(())
}

/// Creates `dir` owner-only (0700) if it is missing; an existing directory is left as is.
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("failed to restrict {}", dir.display()))?;
    }
    Ok(())
}
