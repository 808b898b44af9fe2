//! The audit log and the command gateway's tables on PostgreSQL (migration `0005_gateway`).
//!
//! The chain is computed inside the append transaction from the last stored record, under
//! a transaction-scoped advisory lock, so appends from several processes can never fork it.

use async_trait::async_trait;
use model::{DeviceId, Timestamp};

use super::{LOCK_AUDIT, PgStore, from_json, is_unique_violation, limit_of, pg_err, to_json};
use crate::audit::{
    AuditEntry, AuditRecord, AuditStore, CommandQuery, CommandRecord, GENESIS_HASH, GatewayStore,
    StoredAudit,
};
use crate::{Error, Result};

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(pg_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_AUDIT])
            .await
            .map_err(pg_err)?;
        let last = tx
            .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])
            .await
            .map_err(pg_err)?;
        let (mut seq, mut prev) = match last {
            Some(row) => (
                row.try_get::<_, i64>(0).map_err(pg_err)? as u64,
                row.try_get::<_, String>(1).map_err(pg_err)?,
            ),
            None => (0, GENESIS_HASH.to_owned()),
        };
        let mut out = Vec::with_capacity(entries.len());
        let (mut seqs, mut ts, mut actors, mut actions, mut prevs, mut hashes, mut bodies) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for entry in entries {
            seq += 1;
            let row = StoredAudit::chain(seq, &prev, entry);
            seqs.push(seq as i64);
            ts.push(entry.ts.as_millis());
            actors.push(entry.actor.clone());
            actions.push(entry.action.clone());
            prevs.push(row.prev_hash.clone());
            hashes.push(row.hash.clone());
            bodies.push(row.body);
            prev = row.hash.clone();
            out.push(AuditRecord {
                seq,
                prev_hash: row.prev_hash,
                hash: row.hash,
                entry: entry.clone(),
            });
        }
        tx.execute(
            "INSERT INTO audit (seq, ts, actor, action, prev_hash, hash, body) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::text[])",
            &[&seqs, &ts, &actors, &actions, &prevs, &hashes, &bodies],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(out)
    }

    async fn list_audit(&self, after: u64, limit: usize) -> Result<Vec<StoredAudit>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT seq, prev_hash, hash, body FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit_of(limit)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| {
                Ok(StoredAudit {
                    seq: row.try_get::<_, i64>(0).map_err(pg_err)? as u64,
                    prev_hash: row.try_get(1).map_err(pg_err)?,
                    hash: row.try_get(2).map_err(pg_err)?,
                    body: row.try_get(3).map_err(pg_err)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl GatewayStore for PgStore {
    async fn next_command_counters(&self, devices: &[DeviceId], floor: u64) -> Result<Vec<u64>> {
        let floor = i64::try_from(floor)
            .map_err(|_| Error::Invalid("counter floor out of range".into()))?;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(pg_err)?;
        let stmt = tx
            .prepare(
                "INSERT INTO command_counters (device_id, counter) VALUES ($1, greatest($2::bigint, 1)) \
                 ON CONFLICT (device_id) DO UPDATE \
                 SET counter = greatest(command_counters.counter + 1, $2::bigint) RETURNING counter",
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(devices.len());
        for device in devices {
            let row = tx
                .query_one(&stmt, &[&device.as_str(), &floor])
                .await
                .map_err(pg_err)?;
            out.push(row.try_get::<_, i64>(0).map_err(pg_err)? as u64);
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(out)
    }

    async fn put_command(&self, command: &CommandRecord) -> Result<()> {
        if command.id.is_empty() || command.id.len() > 128 {
            return Err(Error::Invalid("command id must be 1 to 128 bytes".into()));
        }
        let body = to_json(&command.body)?;
        let devices = command.devices();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(pg_err)?;
        match tx
            .execute(
                "INSERT INTO commands (id, created_at, state, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, body = excluded.body",
                &[
                    &command.id,
                    &command.created_at.as_millis(),
                    &command.state,
                    &body,
                ],
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Conflict {
                    what: format!("command {}", command.id),
                });
            }
            Err(e) => return Err(pg_err(e)),
        }
        if !devices.is_empty() {
            tx.execute(
                "INSERT INTO command_devices (device_id, created_at, command_id) \
                 SELECT d, c.created_at, c.id FROM commands c, unnest($1::text[]) AS d \
                 WHERE c.id = $2 ON CONFLICT DO NOTHING",
                &[&devices, &command.id],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn get_command(&self, id: &str) -> Result<Option<CommandRecord>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT id, created_at, state, body FROM commands WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg_err)?;
        row.as_ref().map(command_record).transpose()
    }

    async fn list_commands(&self, query: &CommandQuery) -> Result<Vec<CommandRecord>> {
        let before = query.before.map(Timestamp::as_millis).unwrap_or(i64::MAX);
        let conn = self.conn().await?;
        let sql = if query.device_id.is_some() {
            "SELECT c.id, c.created_at, c.state, c.body FROM command_devices d \
             JOIN commands c ON c.id = d.command_id \
             WHERE d.device_id = $4 AND d.created_at < $1 AND ($2::text IS NULL OR c.state = $2) \
             ORDER BY d.created_at DESC, c.id DESC LIMIT $3"
        } else {
            "SELECT id, created_at, state, body FROM commands \
             WHERE created_at < $1 AND ($2::text IS NULL OR state = $2) AND $4::text IS NULL \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        };
        let rows = conn
            .query(
                sql,
                &[
                    &before,
                    &query.state,
                    &limit_of(query.limit),
                    &query.device_id,
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.iter().map(command_record).collect()
    }
}

fn command_record(row: &tokio_postgres::Row) -> Result<CommandRecord> {
    Ok(CommandRecord {
        id: row.try_get(0).map_err(pg_err)?,
        created_at: Timestamp::from_millis(row.try_get(1).map_err(pg_err)?),
        state: row.try_get(2).map_err(pg_err)?,
        body: from_json(row.try_get::<_, &str>(3).map_err(pg_err)?)?,
    })
}
