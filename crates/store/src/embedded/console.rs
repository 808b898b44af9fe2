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

#[cfg(test)]
mod tests {
    use model::Timestamp;

    use crate::console::{AlertAck, ConsoleStore};
    use crate::{EmbeddedStore, Error};

    fn ack(id: &str, actor: &str) -> AlertAck {
        AlertAck {
            alert_id: id.into(),
            actor: actor.into(),
            at: Timestamp::from_millis(1_000),
            note: "n".into(),
        }
    }

    #[tokio::test]
    async fn the_first_acknowledgement_stands_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let store = EmbeddedStore::open(&path).unwrap();
        store.ack_alert(&ack("a1", "ana")).await.unwrap();
        assert!(matches!(
            store.ack_alert(&ack("a1", "bob")).await,
            Err(Error::Conflict { .. })
        ));
        // More ids than one query takes.
        let ids: Vec<String> = (0..1200)
            .map(|i| format!("x{i}"))
            .chain(["a1".into()])
            .collect();
        let found = store.alert_acks(&ids).await.unwrap();
        assert_eq!(found, vec![ack("a1", "ana")]);
        assert!(store.alert_acks(&[]).await.unwrap().is_empty());
        crate::Store::close(&store).await.unwrap();
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.alert_acks(&["a1".into()]).await.unwrap().len(), 1);
    }
}
