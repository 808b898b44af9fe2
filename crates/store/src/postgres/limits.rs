//! [`RateLimitStore`] on PostgreSQL (the table of migration `0009_rate_limits`).

use async_trait::async_trait;
use model::{DeviceId, Timestamp};

use super::{PgStore, from_json, pg_err, to_json};
use crate::Result;
use crate::limits::{RateLimit, RateLimitStore};

#[async_trait]
impl RateLimitStore for PgStore {
    async fn put_rate_limit(&self, limit: &RateLimit) -> Result<()> {
        let body = to_json(limit)?;
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO device_rate_limits (device_id, until_ms, body) VALUES ($1, $2, $3) \
             ON CONFLICT (device_id) DO UPDATE SET until_ms = excluded.until_ms, body = excluded.body",
            &[&limit.device_id.as_str(), &limit.until.as_millis(), &body],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn delete_rate_limit(&self, device_id: &DeviceId) -> Result<bool> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "DELETE FROM device_rate_limits WHERE device_id = $1",
                &[&device_id.as_str()],
            )
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn list_rate_limits(&self, now: Timestamp) -> Result<Vec<RateLimit>> {
        let conn = self.conn().await?;
        // Lapsed limits are dropped as they are listed, as the embedded store does.
        conn.execute(
            "DELETE FROM device_rate_limits WHERE until_ms <= $1",
            &[&now.as_millis()],
        )
        .await
        .map_err(pg_err)?;
        let rows = conn
            .query(
                "SELECT body FROM device_rate_limits ORDER BY device_id",
                &[],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| from_json(row.try_get::<_, &str>(0).map_err(pg_err)?))
            .collect()
    }
}
