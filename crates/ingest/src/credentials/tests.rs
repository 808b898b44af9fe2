//! Tests for secret generation, hashing and verification.

use super::*;

#[test]
fn generated_secrets_are_long_and_distinct() {
    let a = generate_secret();
    let b = generate_secret();
    assert_eq!(a.len(), 43);
    assert_ne!(a, b);
    assert!(
        a.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
}

#[test]
fn sha256_hash_verifies_only_its_secret() {
    let secret = generate_secret();
    let hash = hash_secret(&secret);
    assert!(hash.starts_with("$sha256$"), "{hash}");
    assert!(verify(&hash, &secret));
    assert!(!verify(&hash, "wrong"));
    assert!(!verify(&hash, ""));
    // Salted: the same secret hashes differently each time.
    assert_ne!(hash, hash_secret(&secret));
    assert!(!is_slow_hash(&hash));
}

#[test]
fn argon2_hash_verifies_only_its_password() {
    let hash = hash_password("correct horse battery staple");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(verify(&hash, "correct horse battery staple"));
    assert!(!verify(&hash, "correct horse battery"));
    assert!(is_slow_hash(&hash));
}

#[test]
fn broken_hashes_never_verify() {
    for hash in [
        "",
        "plain",
        "$sha256$",
        "$sha256$abc",
        "$sha256$!!$!!",
        "$argon2id$x",
        "$md5$a$b",
    ] {
        assert!(!verify(hash, ""), "{hash}");
        assert!(!verify(hash, "plain"), "{hash}");
    }
}
