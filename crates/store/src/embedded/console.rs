//! [`ConsoleStore`] on SQLite: the `alert_acks` table.

use async_trait::async_trait;
use model::Timestamp;
use rusqlite::params;
use rusqlite::types::Value as SqlValue;

use super::{EmbeddedStore, db_err, is_constraint};
use crate::console::{AlertAck, ConsoleStore};
use crate::{Error, Result};

/// Ids per `IN (...)` query (SQLite's default limit on parameters is far above this).
const CHUNK: usize = 500;

#[async_trait]
impl ConsoleStore for EmbeddedStore {
    async fn ack_alert(&self, ack: &AlertAck) -> Result<()> {
        let ack = ack.clone();
        self.write(move |conn| {
            match conn.execute(
                "INSERT INTO alert_acks (alert_id, actor, at, note) VALUES (?1, ?2, ?3, ?4)",
                params![ack.alert_id, ack.actor, ack.at.as_millis(), ack.note],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(Error::Conflict {
                    what: format!("acknowledgement of alert {}", ack.alert_id),
                }),
                Err(e) => Err(db_err(e)),
            }
        })
        .await
    }

    async fn alert_acks(&self, alert_ids: &[String]) -> Result<Vec<AlertAck>> {
        if alert_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = alert_ids.to_vec();
        self.read(move |conn| {
            let mut out = Vec::new();
            for chunk in ids.chunks(CHUNK) {
                let marks = vec!["?"; chunk.len()].join(",");
                let sql = format!(
                    "SELECT alert_id, actor, at, note FROM alert_acks WHERE alert_id IN ({marks})"
                );
                let mut stmt = conn.prepare(&sql).map_err(db_err)?;
                let params: Vec<SqlValue> =
                    chunk.iter().map(|id| SqlValue::Text(id.clone())).collect();
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(params), |row| {
                        Ok(AlertAck {
                            alert_id: row.get(0)?,
                            actor: row.get(1)?,
                            at: Timestamp::from_millis(row.get(2)?),
                            note: row.get(3)?,
                        })
                    })
                    .map_err(db_err)?;
                for row in rows {
                    out.push(row.map_err(db_err)?);
                }
            }
            Ok(out)
        })
        .await
    }
}
