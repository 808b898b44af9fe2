//! Signing: the gateway's Ed25519 key and the wire form of a command, which the
//! `verifier` crate checks on the device.
//!
//! ```text
//! {"t":"citysec.cmd.v1","device":"<id>","counter":<n>,"expires_at":<ms>,"id":"<command id>",
//!  "action":"<action>","params":{...},"issued_at":<ms>,"sig":"<ed25519 over everything before ,"sig">"}
//! ```
//!
//! The member order is fixed (the verifier reads the first four byte by byte); `params`
//! are canonical JSON.

use ed25519_dalek::{Signer as _, SigningKey};
use model::{DeviceId, Timestamp};
use serde_json::{Map, Value};

use crate::command::canonical_json;

/// The gateway's signing key.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &hex::encode(self.public_key()))
            .finish()
    }
}

/// What one device's copy of a command says.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub device: &'a DeviceId,
    pub counter: u64,
    pub expires_at: Timestamp,
    pub issued_at: Timestamp,
    pub command_id: &'a str,
    pub action: &'a str,
    pub params: &'a Map<String, Value>,
}

impl Signer {
    /// A signer from a 32-byte secret seed (the key file's content).
    pub fn from_seed(seed: &[u8; 32]) -> Signer {
        Signer {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The public key devices verify with.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Renders and signs one device's command.
    pub fn encode(&self, e: &Envelope<'_>) -> Vec<u8> {
        let mut out = format!(
            "{{\"t\":\"citysec.cmd.v1\",\"device\":\"{}\",\"counter\":{},\"expires_at\":{},\"id\":{},\"action\":{},\"params\":{},\"issued_at\":{}",
            e.device.as_str(),
            e.counter,
            e.expires_at.as_millis().max(0),
            Value::String(e.command_id.to_owned()),
            Value::String(e.action.to_owned()),
            canonical_json(&Value::Object(e.params.clone())),
            e.issued_at.as_millis().max(0),
        );
        let signature = self.key.sign(out.as_bytes());
        out.push_str(",\"sig\":\"");
        out.push_str(&hex::encode(signature.to_bytes()));
        out.push_str("\"}");
        out.into_bytes()
    }
}
