//! The admin API token: generated on first run, stored in clear only in
//! `<data-dir>/admin.token` (mode 0600), and as a SHA-256 in the store.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use model::Timestamp;
use sha2::{Digest, Sha256};

/// Generates a new random API token (`cs_` and 64 hex digits).
pub fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    Ok(format!("cs_{}", hex::encode(bytes)))
}

/// Lowercase hex SHA-256 of a token, as the store keeps it.
pub fn sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Makes sure an admin token exists: reads `path` or creates it, and registers its hash in
/// the store. Returns the token.
pub async fn ensure_admin(store: &dyn store::Store, path: &Path) -> anyhow::Result<String> {
    let token = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().to_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let token = generate()?;
            write_private(path, &format!("{token}\n"))
                .with_context(|| format!("failed to write {}", path.display()))?;
            token
        }
        Err(err) => return Err(err).with_context(|| format!("failed to read {}", path.display())),
    };
    anyhow::ensure!(token.len() >= 32, "{} holds no valid token", path.display());
    let hash = sha256(&token);
    if store.find_token(&hash).await?.is_none() {
        store
            .insert_token(&store::ApiToken {
                sha256: hash,
                name: "admin".to_owned(),
                role: "admin".to_owned(),
                created_at: Timestamp::now(),
            })
            .await?;
    }
    Ok(token)
}

/// Writes a file readable by its owner only (mode 0600 on Unix), failing if it exists.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
