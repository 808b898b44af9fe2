//! [`DetectStore`] on PostgreSQL: suppressions and local indicators as JSON documents.

use async_trait::async_trait;

use super::{PgStore, from_json, last_per_key, limit_of, pg_err, query_bodies, to_json};
use crate::detect::{DetectStore, LearnedState, LocalIndicator, Suppression};
use crate::{Error, Result};

#[async_trait]
impl DetectStore for PgStore {
    async fn put_suppression(&self, suppression: &Suppression) -> Result<()> {
        let body = to_json(suppression)?;
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO detect_suppressions (rule, key, body) VALUES ($1, $2, $3) \
             ON CONFLICT (rule, key) DO UPDATE SET body = excluded.body",
            &[&suppression.rule, &suppression.key, &body],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn delete_suppression(&self, rule: &str, key: &str) -> Result<()> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "DELETE FROM detect_suppressions WHERE rule = $1 AND key = $2",
                &[&rule, &key],
            )
            .await
            .map_err(pg_err)?;
        if n == 0 {
            return Err(Error::NotFound {
                what: format!("suppression of {rule} for {key}"),
            });
        }
        Ok(())
    }

    async fn list_suppressions(&self) -> Result<Vec<Suppression>> {
        let conn = self.conn().await?;
        query_bodies(
            &conn,
            "SELECT body FROM detect_suppressions ORDER BY rule, key",
            &[],
        )
        .await
    }

    async fn put_indicators(&self, indicators: &[LocalIndicator]) -> Result<()> {
        if indicators.is_empty() {
            return Ok(());
        }
        let indicators = last_per_key(indicators.iter().collect(), |i| i.id.as_str());
        let mut ids = Vec::with_capacity(indicators.len());
        let mut created = Vec::with_capacity(indicators.len());
        let mut bodies = Vec::with_capacity(indicators.len());
        for i in indicators {
            ids.push(i.id.as_str());
            created.push(i.created_at.as_millis());
            bodies.push(to_json(i)?);
        }
        let conn = self.conn().await?;
        // A replaced indicator keeps its place in the listing (its first `created_at`).
        conn.execute(
            "INSERT INTO local_indicators (id, created_at, body) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) \
             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            &[&ids, &created, &bodies],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn delete_indicator(&self, id: &str) -> Result<()> {
        let conn = self.conn().await?;
        let n = conn
            .execute("DELETE FROM local_indicators WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?;
        if n == 0 {
            return Err(Error::NotFound {
                what: format!("indicator {id}"),
            });
        }
        Ok(())
    }

    async fn list_indicators(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LocalIndicator>> {
        let conn = self.conn().await?;
        let position = match after {
            Some(id) => conn
                .query_opt(
                    "SELECT created_at, id FROM local_indicators WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(pg_err)?
                .map(|row| -> Result<(i64, String)> {
                    Ok((
                        row.try_get(0).map_err(pg_err)?,
                        row.try_get(1).map_err(pg_err)?,
                    ))
                })
                .transpose()?,
            None => None,
        };
        let (created, id) = position.unwrap_or((i64::MIN, String::new()));
        let rows = conn
            .query(
                "SELECT body FROM local_indicators WHERE (created_at, id) > ($1, $2) \
                 ORDER BY created_at, id LIMIT $3",
                &[&created, &id, &limit_of(limit)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| from_json(row.try_get::<_, &str>(0).map_err(pg_err)?))
            .collect()
    }

    async fn put_learned(&self, state: &LearnedState) -> Result<bool> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "INSERT INTO detect_learned (shard, taken_at, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (shard) DO UPDATE SET taken_at = excluded.taken_at, \
                     body = excluded.body \
                 WHERE detect_learned.taken_at <= excluded.taken_at",
                &[&state.shard, &state.taken_at.as_millis(), &state.body],
            )
            .await
            .map_err(pg_err)?;
        Ok(n > 0)
    }

    async fn get_learned(&self, shard: &str) -> Result<Option<LearnedState>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT taken_at, body FROM detect_learned WHERE shard = $1",
                &[&shard],
            )
            .await
            .map_err(pg_err)?;
        row.map(|row| {
            Ok(LearnedState {
                shard: shard.to_owned(),
                taken_at: model::Timestamp::from_millis(row.try_get(0).map_err(pg_err)?),
                body: row.try_get(1).map_err(pg_err)?,
            })
        })
        .transpose()
    }
}
