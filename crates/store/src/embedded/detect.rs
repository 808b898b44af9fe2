//! [`DetectStore`] on SQLite: suppressions and local indicators as JSON documents.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{EmbeddedStore, db_err, from_json, limit_of, to_json};
use crate::detect::{DetectStore, LearnedState, LocalIndicator, Suppression};
use crate::{Error, Result};

#[async_trait]
impl DetectStore for EmbeddedStore {
    async fn put_suppression(&self, suppression: &Suppression) -> Result<()> {
        let (rule, key, body) = (
            suppression.rule.clone(),
            suppression.key.clone(),
            to_json(suppression)?,
        );
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO detect_suppressions (rule, key, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (rule, key) DO UPDATE SET body = excluded.body",
                params![rule, key, body],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn delete_suppression(&self, rule: &str, key: &str) -> Result<()> {
        let (rule, key) = (rule.to_owned(), key.to_owned());
        self.write(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM detect_suppressions WHERE rule = ?1 AND key = ?2",
                    params![rule, key],
                )
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::NotFound {
                    what: format!("suppression of {rule} for {key}"),
                });
            }
            Ok(())
        })
        .await
    }

    async fn list_suppressions(&self) -> Result<Vec<Suppression>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM detect_suppressions ORDER BY rule, key")
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(db_err)?;
            rows.map(|r| from_json(&r.map_err(db_err)?)).collect()
        })
        .await
    }

    async fn put_indicators(&self, indicators: &[LocalIndicator]) -> Result<()> {
        let rows = indicators
            .iter()
            .map(|i| Ok((i.id.clone(), i.created_at.as_millis(), to_json(i)?)))
            .collect::<Result<Vec<_>>>()?;
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO local_indicators (id, created_at, body) VALUES (?1, ?2, ?3)
                         ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    )
                    .map_err(db_err)?;
                for (id, created, body) in &rows {
                    stmt.execute(params![id, created, body]).map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn delete_indicator(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |conn| {
            let n = conn
                .execute("DELETE FROM local_indicators WHERE id = ?1", params![id])
                .map_err(db_err)?;
            if n == 0 {
                return Err(Error::NotFound {
                    what: format!("indicator {id}"),
                });
            }
            Ok(())
        })
        .await
    }

    async fn list_indicators(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LocalIndicator>> {
        let after = after.map(str::to_owned);
        let limit = limit_of(limit);
        self.read(move |conn| {
            let position: Option<(i64, String)> = match &after {
                Some(id) => conn
                    .query_row(
                        "SELECT created_at, id FROM local_indicators WHERE id = ?1",
                        params![id],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
                    .map_err(db_err)?,
                None => None,
            };
            let (created, id) = position.unwrap_or((i64::MIN, String::new()));
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body FROM local_indicators WHERE (created_at, id) > (?1, ?2)
                     ORDER BY created_at, id LIMIT ?3",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![created, id, limit], |row| row.get::<_, String>(0))
                .map_err(db_err)?;
            rows.map(|r| from_json(&r.map_err(db_err)?)).collect()
        })
        .await
    }

    async fn put_learned(&self, state: &LearnedState) -> Result<bool> {
        let state = state.clone();
        self.write(move |conn| {
            let n = conn
                .execute(
                    "INSERT INTO detect_learned (shard, taken_at, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (shard) DO UPDATE SET taken_at = excluded.taken_at,
                         body = excluded.body
                     WHERE detect_learned.taken_at <= excluded.taken_at",
                    params![state.shard, state.taken_at.as_millis(), state.body],
                )
                .map_err(db_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn get_learned(&self, shard: &str) -> Result<Option<LearnedState>> {
        let shard = shard.to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT taken_at, body FROM detect_learned WHERE shard = ?1",
                params![shard],
                |row| {
                    Ok(LearnedState {
                        shard: shard.clone(),
                        taken_at: model::Timestamp::from_millis(row.get(0)?),
                        body: row.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }
}
