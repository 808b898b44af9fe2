//! Verifier tests: table of payloads and the verdict for each, plus proptests that arbitrary
//! bytes never panic the parser and that no single-byte change of a signed payload verifies.

extern crate std;

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;

use crate::{Refusal, Verifier, parse};

const NOW: u64 = 1_790_000_000_000;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// Signs a payload the way the gateway does.
fn sign(key: &SigningKey, body: &str) -> Vec<u8> {
    let signature = key.sign(body.as_bytes());
    let mut hex = String::new();
    for b in signature.to_bytes() {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("{body},\"sig\":\"{hex}\"}}").into_bytes()
}

fn command(device: &str, counter: u64, expires_at: u64) -> String {
    format!(
        "{{\"t\":\"citysec.cmd.v1\",\"device\":\"{device}\",\"counter\":{counter},\"expires_at\":{expires_at},\"id\":\"cmd-1\",\"action\":\"silence\",\"params\":{{}}"
    )
}

fn verifier() -> Verifier {
    Verifier::new(&key().verifying_key().to_bytes(), 0).unwrap()
}

#[test]
fn verdicts() {
    let other = SigningKey::from_bytes(&[9u8; 32]);
    let good = sign(&key(), &command("siren-1", 5, NOW + 30_000));
    let mut tampered = good.clone();
    let pos = tampered.windows(7).position(|w| w == b"silence").unwrap();
    tampered[pos..pos + 7].copy_from_slice(b"soundit");
    let cases: &[(&str, Vec<u8>, Result<u64, Refusal>)] = &[
        ("good", good.clone(), Ok(5)),
        (
            "other key",
            sign(&other, &command("siren-1", 6, NOW + 30_000)),
            Err(Refusal::BadSignature),
        ),
        ("tampered action", tampered, Err(Refusal::BadSignature)),
        (
            "other device",
            sign(&key(), &command("siren-2", 6, NOW + 30_000)),
            Err(Refusal::WrongDevice),
        ),
        (
            "expired",
            sign(&key(), &command("siren-1", 6, NOW)),
            Err(Refusal::Expired {
                expires_at_ms: NOW,
                now_ms: NOW,
            }),
        ),
        (
            "leading zero counter",
            sign(&key(), &command("siren-1", 6, NOW + 1).replace(":6,", ":06,")),
            Err(Refusal::Malformed("bad number")),
        ),
        (
            "unsigned",
            command("siren-1", 6, NOW + 1).into_bytes(),
            Err(Refusal::Malformed("too short")),
        ),
        (
            "plain json",
            br#"{"action":"sound","padding":"................................................................................................................................................................"}"#.to_vec(),
            Err(Refusal::Malformed("the signature must be the last member")),
        ),
    ];
    for (name, payload, want) in cases {
        let got = verifier().check("siren-1", payload, NOW).map(|c| c.counter);
        assert_eq!(&got, want, "{name}");
    }
}

#[test]
fn replays_and_old_counters_are_refused() {
    let mut v = verifier();
    let first = sign(&key(), &command("siren-1", 5, NOW + 30_000));
    assert_eq!(v.check("siren-1", &first, NOW).unwrap().counter, 5);
    assert_eq!(
        v.check("siren-1", &first, NOW),
        Err(Refusal::Replayed {
            counter: 5,
            last: 5
        })
    );
    let older = sign(&key(), &command("siren-1", 4, NOW + 30_000));
    assert_eq!(
        v.check("siren-1", &older, NOW).unwrap_err().to_string(),
        "replayed command: counter 4 is not above the last accepted 5"
    );
    // A refusal leaves the counter as it was.
    assert_eq!(v.last_counter(), 5);
    let next = sign(&key(), &command("siren-1", 9, NOW + 30_000));
    assert_eq!(v.check("siren-1", &next, NOW).unwrap().counter, 9);
    assert_eq!(v.last_counter(), 9);
}

#[test]
fn parse_reads_the_envelope() {
    let payload = sign(&key(), &command("valve-7", 42, NOW));
    let env = parse(&payload).unwrap();
    assert_eq!(
        (env.device, env.counter, env.expires_at_ms),
        ("valve-7", 42, NOW)
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = verifier().check("siren-1", &bytes, NOW);
    }

    #[test]
    fn no_single_byte_change_verifies(index in 0usize..300, flip in 1u8..=255) {
        let payload = sign(&key(), &command("siren-1", 5, NOW + 30_000));
        let mut changed = payload.clone();
        let i = index % changed.len();
        changed[i] ^= flip;
        prop_assert!(verifier().check("siren-1", &changed, NOW).is_err());
    }
}
