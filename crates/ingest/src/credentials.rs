//! Device credentials: generating secrets, hashing them for the registry, verifying them.
//!
//! Two hash forms are stored in `model::Credential::Secret { hash }`:
//!
//! - `$sha256$<salt>$<hash>` for secrets made by [`generate_secret`].
//!   Those carry 256 bits of entropy, so nobody can guess them offline whatever the hash
//!   costs; a slow hash only protects low-entropy, human-chosen secrets.
//!   A salted SHA-256 keeps 50,000 devices reconnecting at once (after a broker restart)
//!   cheap: about a microsecond each instead of tens of milliseconds and megabytes of memory
//!   with argon2id.
//! - `$argon2id$...` (PHC) from [`hash_password`] for secrets a person chose.
//!
//! [`verify`] accepts both and compares in constant time.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

#[cfg(test)]
mod tests;

const SHA256_PREFIX: &str = "$sha256$";

/// A new device secret: 32 random bytes, base64url without padding (43 characters).
///
/// # Panics
///
/// When the operating system cannot provide randomness (no secret can be made safely then).
pub fn generate_secret() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Hashes a generated (high-entropy) secret as `$sha256$<salt>$<hash>`, both parts
/// base64url without padding; the hash is SHA-256 over salt then secret.
pub fn hash_secret(secret: &str) -> String {
    let salt = random_bytes::<16>();
    let digest = salted_sha256(&salt, secret);
    format!(
        "{SHA256_PREFIX}{}${}",
        URL_SAFE_NO_PAD.encode(salt),
        URL_SAFE_NO_PAD.encode(digest)
    )
}

/// Hashes a human-chosen secret with argon2id (default parameters), in PHC format.
pub fn hash_password(pw: &str) -> String {
    let salt = random_bytes::<16>();
    match Argon2::default().hash_password_with_salt(pw.as_bytes(), &salt) {
        Ok(hash) => hash.to_string(),
        // Unreachable with default parameters and a 16-byte salt; an unverifiable hash is
        // the safe answer.
        Err(_) => String::from("$invalid$"),
    }
}

/// Whether `secret` matches `hash` (either form). Unknown or broken hashes never match.
pub fn verify(hash: &str, secret: &str) -> bool {
    if let Some(rest) = hash.strip_prefix(SHA256_PREFIX) {
        let Some((salt, digest)) = rest.split_once('$') else {
            return false;
        };
        let (Ok(salt), Ok(expected)) =
            (URL_SAFE_NO_PAD.decode(salt), URL_SAFE_NO_PAD.decode(digest))
        else {
            return false;
        };
        let actual = salted_sha256(&salt, secret);
        constant_time_eq(&actual, &expected)
    } else if hash.starts_with("$argon2") {
        // argon2's verifier compares outputs in constant time.
        Argon2::default()
            .verify_password(secret.as_bytes(), hash)
            .is_ok()
    } else {
        false
    }
}

/// Whether a stored hash is the slow (argon2) kind.
pub fn is_slow_hash(hash: &str) -> bool {
    hash.starts_with("$argon2")
}

fn salted_sha256(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(secret.as_bytes());
    hasher.finalize().into()
}

/// Compares without an early exit, so timing does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(err) = getrandom::fill(&mut buf) {
        // Documented on the callers: without an entropy source there is no safe fallback.
        panic!("operating system randomness unavailable: {err}");
    }
    buf
}
