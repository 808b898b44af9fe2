//! [`ConsoleStore`] on PostgreSQL (the table of migration `0011_console`).

use async_trait::async_trait;
use model::Timestamp;

use super::{PgStore, is_unique_violation, pg_err};
use crate::console::{AlertAck, ConsoleStore};
use crate::{Error, Result};

#[async_trait]
impl ConsoleStore for PgStore {
    async fn ack_alert(&self, ack: &AlertAck) -> Result<()> {
        let conn = self.conn().await?;
        match conn
            .execute(
                "INSERT INTO alert_acks (alert_id, actor, at, note) VALUES ($1, $2, $3, $4)",
                &[&ack.alert_id, &ack.actor, &ack.at.as_millis(), &ack.note],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict {
                what: format!("acknowledgement of alert {}", ack.alert_id),
            }),
            Err(e) => Err(pg_err(e)),
        }
    }

    async fn alert_acks(&self, alert_ids: &[String]) -> Result<Vec<AlertAck>> {
        if alert_ids.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT alert_id, actor, at, note FROM alert_acks WHERE alert_id = ANY($1)",
                &[&alert_ids],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| {
                Ok(AlertAck {
                    alert_id: row.try_get(0).map_err(pg_err)?,
                    actor: row.try_get(1).map_err(pg_err)?,
                    at: Timestamp::from_millis(row.try_get(2).map_err(pg_err)?),
                    note: row.try_get(3).map_err(pg_err)?,
                })
            })
            .collect()
    }
}
