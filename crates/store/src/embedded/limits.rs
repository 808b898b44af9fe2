//! [`RateLimitStore`] on SQLite: one row per device, the limit as a JSON document.

use async_trait::async_trait;
use model::{DeviceId, Timestamp};
use rusqlite::params;

use super::{EmbeddedStore, db_err, from_json, to_json};
use crate::Result;
use crate::limits::{RateLimit, RateLimitStore};

#[async_trait]
impl RateLimitStore for EmbeddedStore {
    async fn put_rate_limit(&self, limit: &RateLimit) -> Result<()> {
        let (id, until, body) = (
            limit.device_id.to_string(),
            limit.until.as_millis(),
            to_json(limit)?,
        );
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO device_rate_limits (device_id, until_ms, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (device_id) DO UPDATE SET until_ms = excluded.until_ms, body = excluded.body",
                params![id, until, body],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn delete_rate_limit(&self, device_id: &DeviceId) -> Result<bool> {
        let id = device_id.to_string();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM device_rate_limits WHERE device_id = ?1",
                    params![id],
                )
                .map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_rate_limits(&self, now: Timestamp) -> Result<Vec<RateLimit>> {
        let now = now.as_millis();
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM device_rate_limits WHERE until_ms <= ?1",
                params![now],
            )
            .map_err(db_err)?;
            let mut stmt = conn
                .prepare_cached("SELECT body FROM device_rate_limits ORDER BY device_id")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(db_err)?;
            rows.map(|r| from_json(&r.map_err(db_err)?)).collect()
        })
        .await
    }
}
