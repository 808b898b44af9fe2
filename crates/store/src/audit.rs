//! The audit log and the command gateway's durable state, as two store traits.
//!
//! [`AuditStore`]: an append-only, hash-chained log. Each record's `hash` is the SHA-256 of
//! the previous record's hash, a newline, and the record's canonical JSON (keys sorted, no
//! whitespace; see [`canonical_json`]); the first record chains from [`GENESIS_HASH`].
//! Changing, removing or reordering any stored record breaks the chain at that record,
//! which [`ChainVerifier`] names. Backends compute the chain inside the append transaction.
//!
//! [`GatewayStore`]: per-device command counters (durable before a command is signed) and
//! command records (opaque JSON documents the gateway owns, with a few filter columns).

use async_trait::async_trait;
use model::{DeviceId, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Result;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One thing that happened, before it is chained: a command, an approval, a refusal, a
/// login, a configuration change, a response action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub ts: Timestamp,
    /// Who did it: a person's name, or `citysec` for the platform itself.
    pub actor: String,
    /// What, as a dotted name: `command.requested`, `command.refused`, `command.approved`,
    /// `command.delivered`, `login`, `config.changed`, `response.action`, ...
    pub action: String,
    /// What it was done to: a command id, a device id, a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `ok`, `refused`, `failed`, ...
    pub outcome: String,
    /// Anything else worth keeping (reasons, payload hashes, counters).
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// A stored, chained record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// A record as the backend keeps it: the chained fields and the exact canonical JSON the
/// hash covers. Verification works on these, never on re-encoded structs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAudit {
    pub seq: u64,
    pub prev_hash: String,
    pub hash: String,
    /// The canonical JSON of `{"seq": .., "ts": .., "actor": .., ...}`.
    pub body: String,
}

impl StoredAudit {
    /// Chains `entry` as record `seq` after a record whose hash is `prev_hash`.
    pub fn chain(seq: u64, prev_hash: &str, entry: &AuditEntry) -> StoredAudit {
        let body = record_body(seq, entry);
        StoredAudit {
            seq,
            prev_hash: prev_hash.to_owned(),
            hash: chain_hash(prev_hash, &body),
            body,
        }
    }

    /// Decodes the body back into a record (for listing and export).
    pub fn record(&self) -> Result<AuditRecord> {
        let mut value: serde_json::Value = serde_json::from_str(&self.body)
            .map_err(|e| crate::Error::Internal(format!("audit record {}: {e}", self.seq)))?;
        if let Some(map) = value.as_object_mut() {
            map.remove("seq");
        }
        let entry: AuditEntry = serde_json::from_value(value)
            .map_err(|e| crate::Error::Internal(format!("audit record {}: {e}", self.seq)))?;
        Ok(AuditRecord {
            seq: self.seq,
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
            entry,
        })
    }
}

/// The canonical JSON of record `seq` holding `entry`.
pub fn record_body(seq: u64, entry: &AuditEntry) -> String {
    let mut value = serde_json::to_value(entry).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("seq".to_owned(), seq.into());
    }
    canonical_json(&value)
}

/// Lowercase hex SHA-256 of `prev_hash`, a newline and `body`.
pub fn chain_hash(prev_hash: &str, body: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.as_bytes());
    hex::encode(hasher.finalize())
}

/// JSON with object keys sorted by their UTF-8 bytes and no insignificant whitespace
/// (RFC 8785's shape; numbers are written as serde_json writes them, and the gateway and
/// the audit log only put integers in hashed documents).
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Where and why the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    /// The first record that does not verify (for a gap, the sequence number expected).
    pub seq: u64,
    pub reason: String,
}

/// The result of checking the whole log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Records checked (up to the break, if any).
    pub records: u64,
    /// The hash of the last good record: an auditor who wrote it down can later tell a
    /// truncated log from an intact one.
    pub last_hash: String,
    pub broken: Option<ChainBreak>,
}

impl ChainReport {
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Checks records one at a time, in sequence order.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    prev_hash: String,
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> ChainVerifier {
        ChainVerifier {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    /// Checks the next record: its sequence number, its link to the previous record, its
    /// own hash, and that its body is canonical JSON naming the same sequence number.
    pub fn push(&mut self, row: &StoredAudit) -> Result<(), ChainBreak> {
        let seq = self.next_seq;
        let broken = |reason: String| ChainBreak { seq, reason };
        if row.seq != seq {
            return Err(broken(format!(
                "record {seq} is missing (found record {} next)",
                row.seq
            )));
        }
        if row.prev_hash != self.prev_hash {
            return Err(broken(format!(
                "prev_hash {} does not match the hash {} of record {}",
                row.prev_hash,
                self.prev_hash,
                seq - 1
            )));
        }
        let hash = chain_hash(&row.prev_hash, &row.body);
        if hash != row.hash {
            return Err(broken(format!(
                "content does not match its hash (stored {}, computed {hash})",
                row.hash
            )));
        }
        let value: serde_json::Value = serde_json::from_str(&row.body)
            .map_err(|e| broken(format!("body is not json: {e}")))?;
        if canonical_json(&value) != row.body
            || value.get("seq").and_then(|v| v.as_u64()) != Some(seq)
        {
            return Err(broken("body is not the canonical record".to_owned()));
        }
        self.prev_hash = row.hash.clone();
        self.next_seq += 1;
        self.checked += 1;
        Ok(())
    }

    pub fn report(self, broken: Option<ChainBreak>) -> ChainReport {
        ChainReport {
            records: self.checked,
            last_hash: self.prev_hash,
            broken,
        }
    }
}

/// The append-only, hash-chained audit log.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends entries in order, in one transaction, chaining each to the one before; when
    /// this returns they are durable. Returns the stored records.
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>>;

    /// Records with `seq > after`, in order, at most `limit` (capped by the backend).
    async fn list_audit(&self, after: u64, limit: usize) -> Result<Vec<StoredAudit>>;

    /// Walks the whole log and reports the first broken record, if any.
    async fn verify_audit(&self) -> Result<ChainReport> {
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        loop {
            let page = self.list_audit(after, 1000).await?;
            let Some(last) = page.last() else {
                return Ok(verifier.report(None));
            };
            after = last.seq;
            for row in &page {
                if let Err(broken) = verifier.push(row) {
                    return Ok(verifier.report(Some(broken)));
                }
            }
        }
    }
}

/// A command as the gateway stores it: filter columns and the gateway's own document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: String,
    pub created_at: Timestamp,
    /// The command's state name (`pending_approval`, `delivered`, ...).
    pub state: String,
    pub body: serde_json::Value,
}

impl CommandRecord {
    /// The devices the command names (its document's `devices`), which the store indexes.
    pub fn devices(&self) -> Vec<String> {
        let mut out: Vec<String> = self.body["devices"]
            .as_array()
            .map(|ds| {
                ds.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }
}

/// Which commands to list, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommandQuery {
    pub state: Option<String>,
    /// Only commands that name this device.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Only commands created strictly before this (paging backwards).
    pub before: Option<Timestamp>,
    pub limit: usize,
}

/// The command gateway's durable state.
#[async_trait]
pub trait GatewayStore: Send + Sync + 'static {
    /// Advances each device's command counter to `max(last + 1, floor)` and returns the new
    /// values, in order; a device named twice gets two increasing values. Durable when this
    /// returns, so a restarted gateway never signs a counter twice. (The gateway passes a
    /// floor derived from the clock, so counters it had to issue while the store was
    /// unreachable stay below the ones issued after.)
    async fn next_command_counters(&self, devices: &[DeviceId], floor: u64) -> Result<Vec<u64>>;
    /// Inserts or replaces a command record.
    async fn put_command(&self, command: &CommandRecord) -> Result<()>;
    async fn get_command(&self, id: &str) -> Result<Option<CommandRecord>>;
    async fn list_commands(&self, query: &CommandQuery) -> Result<Vec<CommandRecord>>;
}
