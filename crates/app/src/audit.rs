//! The audit log from the composition layer: [`record`] for any part of the platform that
//! must leave a trace (commands go through the gateway; logins, configuration changes and
//! response actions call this), [`verify`] and [`export`] for `citysec audit` and auditors.
//!
//! An export is JSON lines, one stored record each, `{"seq", "prev_hash", "hash", "body"}`,
//! where `body` is the exact canonical JSON the hash covers, so an auditor can check the
//! chain with nothing but SHA-256: `hash == sha256(prev_hash + "\n" + body)` and each
//! `prev_hash` is the previous line's `hash` (the first is 64 zeros). [`verify_export`]
//! does exactly that.

use std::io::{BufRead, Write};

use anyhow::Context;
use model::Timestamp;
use serde_json::Value;
use store::Store;
use store::audit::{AuditEntry, AuditRecord, ChainReport, ChainVerifier, StoredAudit};

/// Appends one record to the audit log; durable when this returns.
pub async fn record(
    store: &dyn Store,
    actor: &str,
    action: &str,
    subject: Option<&str>,
    outcome: &str,
    detail: Value,
) -> anyhow::Result<AuditRecord> {
    let entry = AuditEntry {
        ts: Timestamp::now(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.map(str::to_owned),
        outcome: outcome.to_owned(),
        detail,
    };
    let mut records = store
        .append_audit(&[entry])
        .await
        .context("failed to write the audit log")?;
    records.pop().context("the store returned no audit record")
}

/// Like [`record`], but a failure is logged instead of returned (for paths whose action has
/// already happened, such as a device registration).
pub async fn record_or_log(
    store: &dyn Store,
    actor: &str,
    action: &str,
    subject: Option<&str>,
    outcome: &str,
    detail: Value,
) {
    if let Err(err) = record(store, actor, action, subject, outcome, detail).await {
        tracing::error!(error = %format!("{err:#}"), action, "failed to write an audit record");
    }
}

/// The incident service's audit port (`response::Auditor`), written to the hash-chained log:
/// one record per response action, before its effect is reported.
pub struct StoreAuditor {
    pub store: std::sync::Arc<dyn Store>,
}

#[async_trait::async_trait]
impl crate::response::Auditor for StoreAuditor {
    async fn record(&self, entry: crate::response::AuditEntry) -> Result<(), String> {
        let record = AuditEntry {
            ts: entry.at,
            actor: entry.actor,
            action: entry.action,
            subject: Some(entry.device_id.to_string()),
            outcome: entry.outcome,
            detail: serde_json::json!({"incident_id": entry.incident_id, "device": entry.device_id}),
        };
        self.store
            .append_audit(&[record])
            .await
            .map(|_| ())
            .map_err(|e| format!("failed to write the audit log: {e}"))
    }
}

/// Checks the whole chain in the store.
pub async fn verify(store: &dyn Store) -> anyhow::Result<ChainReport> {
    store
        .verify_audit()
        .await
        .context("failed to read the audit log")
}

/// Writes every record as a JSON line; returns how many.
pub async fn export(store: &dyn Store, out: &mut dyn Write) -> anyhow::Result<u64> {
    let mut after = 0;
    let mut n = 0;
    loop {
        let page = store
            .list_audit(after, 1000)
            .await
            .context("failed to read the audit log")?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after = last.seq;
        for row in &page {
            serde_json::to_writer(&mut *out, row)?;
            out.write_all(b"\n")?;
            n += 1;
        }
    }
}

/// Checks an export (JSON lines of stored records) without the store.
pub fn verify_export(input: &mut dyn BufRead) -> anyhow::Result<ChainReport> {
    let mut verifier = ChainVerifier::default();
    for (i, line) in input.lines().enumerate() {
        let line = line.context("failed to read the export")?;
        if line.trim().is_empty() {
            continue;
        }
        let row: StoredAudit = match serde_json::from_str(&line) {
            Ok(row) => row,
            Err(err) => {
                return Ok(verifier.report(Some(store::audit::ChainBreak {
                    seq: i as u64 + 1,
                    reason: format!("line {} is not a stored record: {err}", i + 1),
                })));
            }
        };
        if let Err(broken) = verifier.push(&row) {
            return Ok(verifier.report(Some(broken)));
        }
    }
    Ok(verifier.report(None))
}

#[cfg(test)]
mod tests;
