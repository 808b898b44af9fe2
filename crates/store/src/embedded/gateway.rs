//! The embedded backend's audit log and command gateway tables (migration 0005).
//!
//! The chain is computed inside the write transaction from the last stored record, so two
//! concurrent appends can never fork it (there is one writer connection).

use async_trait::async_trait;
use model::{DeviceId, Timestamp};
use rusqlite::{OptionalExtension, params};

use super::{EmbeddedStore, db_err, from_json, is_constraint, limit_of, to_json};
use crate::audit::{
    AuditEntry, AuditRecord, AuditStore, CommandQuery, CommandRecord, GENESIS_HASH, GatewayStore,
    StoredAudit,
};
use crate::{Error, Result};

#[async_trait]
impl AuditStore for EmbeddedStore {
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let entries = entries.to_vec();
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let last: Option<(i64, String)> = tx
                .query_row(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(db_err)?;
            let (mut seq, mut prev) = match last {
                Some((seq, hash)) => (seq as u64, hash),
                None => (0, GENESIS_HASH.to_owned()),
            };
            let mut out = Vec::with_capacity(entries.len());
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO audit (seq, ts, actor, action, prev_hash, hash, body) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(db_err)?;
                for entry in entries {
                    seq += 1;
                    let row = StoredAudit::chain(seq, &prev, &entry);
                    stmt.execute(params![
                        seq as i64,
                        entry.ts.as_millis(),
                        entry.actor,
                        entry.action,
                        row.prev_hash,
                        row.hash,
                        row.body
                    ])
                    .map_err(db_err)?;
                    prev = row.hash.clone();
                    out.push(AuditRecord {
                        seq,
                        prev_hash: row.prev_hash,
                        hash: row.hash,
                        entry,
                    });
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(out)
        })
        .await
    }

    async fn list_audit(&self, after: u64, limit: usize) -> Result<Vec<StoredAudit>> {
        let limit = limit_of(limit);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, prev_hash, hash, body FROM audit WHERE seq > ?1 \
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![after as i64, limit], |row| {
                    Ok(StoredAudit {
                        seq: row.get::<_, i64>(0)? as u64,
                        prev_hash: row.get(1)?,
                        hash: row.get(2)?,
                        body: row.get(3)?,
                    })
                })
                .map_err(db_err)?;
            rows.map(|r| r.map_err(db_err)).collect()
        })
        .await
    }
}

#[async_trait]
impl GatewayStore for EmbeddedStore {
    async fn next_command_counters(&self, devices: &[DeviceId], floor: u64) -> Result<Vec<u64>> {
        let floor = i64::try_from(floor)
            .map_err(|_| Error::Invalid("counter floor out of range".into()))?;
        let ids: Vec<String> = devices.iter().map(|d| d.as_str().to_owned()).collect();
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let mut out = Vec::with_capacity(ids.len());
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO command_counters (device_id, counter) VALUES (?1, max(?2, 1)) \
                         ON CONFLICT (device_id) DO UPDATE SET counter = max(counter + 1, ?2) \
                         RETURNING counter",
                    )
                    .map_err(db_err)?;
                for id in &ids {
                    let counter: i64 = stmt
                        .query_row(params![id, floor], |row| row.get(0))
                        .map_err(db_err)?;
                    out.push(counter as u64);
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(out)
        })
        .await
    }

    async fn put_command(&self, command: &CommandRecord) -> Result<()> {
        if command.id.is_empty() || command.id.len() > 128 {
            return Err(Error::Invalid("command id must be 1 to 128 bytes".into()));
        }
        let id = command.id.clone();
        let created_at = command.created_at.as_millis();
        let state = command.state.clone();
        let body = to_json(&command.body)?;
        let devices = command.devices();
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO commands (id, created_at, state, body) VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
                    )
                    .map_err(db_err)?;
                match stmt.execute(params![id, created_at, state, body]) {
                    Ok(_) => {}
                    Err(e) if is_constraint(&e) => {
                        return Err(Error::Conflict {
                            what: format!("command {id}"),
                        });
                    }
                    Err(e) => return Err(db_err(e)),
                }
                let mut index = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO command_devices (device_id, created_at, command_id) \
                         SELECT ?1, created_at, id FROM commands WHERE id = ?2",
                    )
                    .map_err(db_err)?;
                for device in &devices {
                    index.execute(params![device, id]).map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn get_command(&self, id: &str) -> Result<Option<CommandRecord>> {
        let id = id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, created_at, state, body FROM commands WHERE id = ?1")
                .map_err(db_err)?;
            let row: Option<(String, i64, String, String)> = stmt
                .query_row([id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()
                .map_err(db_err)?;
            row.map(command_record).transpose()
        })
        .await
    }

    async fn list_commands(&self, query: &CommandQuery) -> Result<Vec<CommandRecord>> {
        let state = query.state.clone();
        let device = query.device_id.clone();
        let before = query.before.map(Timestamp::as_millis).unwrap_or(i64::MAX);
        let limit = limit_of(query.limit);
        self.read(move |conn| {
            let sql = if device.is_some() {
                "SELECT c.id, c.created_at, c.state, c.body FROM command_devices d \
                 JOIN commands c ON c.id = d.command_id \
                 WHERE d.device_id = ?4 AND d.created_at < ?1 AND (?2 IS NULL OR c.state = ?2) \
                 ORDER BY d.created_at DESC, c.id DESC LIMIT ?3"
            } else {
                "SELECT id, created_at, state, body FROM commands \
                 WHERE created_at < ?1 AND (?2 IS NULL OR state = ?2) AND ?4 IS NULL \
                 ORDER BY created_at DESC, id DESC LIMIT ?3"
            };
            let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
            let rows = stmt
                .query_map(params![before, state, limit, device], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(command_record(row.map_err(db_err)?)?);
            }
            Ok(out)
        })
        .await
    }
}

fn command_record(
    (id, created_at, state, body): (String, i64, String, String),
) -> Result<CommandRecord> {
    Ok(CommandRecord {
        id,
        created_at: Timestamp::from_millis(created_at),
        state,
        body: from_json(&body)?,
    })
}

#[cfg(test)]
mod tests {
    //! Embedded-only: a record edited behind the store's back (triggers dropped, as
    //! someone with the file could) is caught by `verify_audit`.

    use model::Timestamp;

    use crate::EmbeddedStore;
    use crate::audit::{AuditEntry, AuditStore};

    fn entry(i: i64) -> AuditEntry {
        AuditEntry {
            ts: Timestamp::from_millis(1_790_000_000_000 + i),
            actor: "alice".into(),
            action: "command.requested".into(),
            subject: Some(format!("cmd-{i}")),
            outcome: "ok".into(),
            detail: serde_json::json!({"devices": ["siren-1"], "action": "sound"}),
        }
    }

    #[tokio::test]
    async fn tampering_is_caught_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("citysec.db");
        let store = EmbeddedStore::open(&path).unwrap();
        let entries: Vec<AuditEntry> = (1..=5).map(entry).collect();
        store.append_audit(&entries).await.unwrap();
        assert!(store.verify_audit().await.unwrap().is_intact());

        let conn = rusqlite::Connection::open(&path).unwrap();
        // The triggers refuse edits through SQL ...
        let refused = conn
            .execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3", [])
            .unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{refused}");
        // ... but whoever holds the file can drop them; the chain still tells.
        conn.execute_batch(
            "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; \
             UPDATE audit SET body = replace(body, '\"alice\"', '\"mallory\"') WHERE seq = 3;",
        )
        .unwrap();
        let report = store.verify_audit().await.unwrap();
        let broken = report.broken.expect("tampering detected");
        assert_eq!(broken.seq, 3);
        assert!(
            broken.reason.contains("does not match its hash"),
            "{broken:?}"
        );
        assert_eq!(report.records, 2);

        // Recomputing the edited record's hash moves the break to the next record.
        let body: String = conn
            .query_row("SELECT body FROM audit WHERE seq = 3", [], |r| r.get(0))
            .unwrap();
        let prev: String = conn
            .query_row("SELECT prev_hash FROM audit WHERE seq = 3", [], |r| {
                r.get(0)
            })
            .unwrap();
        conn.execute(
            "UPDATE audit SET hash = ?1 WHERE seq = 3",
            [crate::audit::chain_hash(&prev, &body)],
        )
        .unwrap();
        let broken = store.verify_audit().await.unwrap().broken.unwrap();
        assert_eq!(broken.seq, 4);
        assert!(broken.reason.contains("prev_hash"), "{broken:?}");

        // A deleted record is a gap.
        conn.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        let broken = store.verify_audit().await.unwrap().broken.unwrap();
        assert_eq!(broken.seq, 2);
        assert!(broken.reason.contains("missing"), "{broken:?}");
    }
}
