//! [`AdvisoryStore`] and [`ReadinessStore`] on PostgreSQL (tables of migration
//! `0004_advisories` and `0010_exercises`).

use async_trait::async_trait;
use model::{Advisory, CitizenReport, ExerciseRecord, Timestamp};

use super::{
    Filter, PgStore, from_json, is_unique_violation, limit_of, pg_err, query_bodies, to_json,
};
use crate::{
    AdvisoryQuery, AdvisoryStore, Error, ReadinessRecord, ReadinessStore, ReportQuery, Result,
};

struct AdvisoryRow {
    id: String,
    version: i64,
    state: &'static str,
    drafted_at: i64,
    issued_at: Option<i64>,
    body: String,
}

#[async_trait]
impl AdvisoryStore for PgStore {
    async fn write_advisories(&self, advisories: &[Advisory]) -> Result<()> {
        let rows = advisories
            .iter()
            .map(|a| {
                if a.version == 0 {
                    return Err(Error::Invalid(format!("advisory {} has version 0", a.id)));
                }
                Ok(AdvisoryRow {
                    id: a.id.clone(),
                    version: i64::try_from(a.version)
                        .map_err(|_| Error::Invalid("advisory version too large".into()))?,
                    state: a.state.as_str(),
                    drafted_at: a.drafted_at.as_millis(),
                    issued_at: a.issued_at.map(Timestamp::as_millis),
                    body: to_json(a)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(pg_err)?;
        for row in &rows {
            if row.version == 1 {
                let inserted = tx
                    .execute(
                        "INSERT INTO advisories (id, version, state, drafted_at, issued_at, body) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[
                            &row.id,
                            &row.version,
                            &row.state,
                            &row.drafted_at,
                            &row.issued_at,
                            &row.body,
                        ],
                    )
                    .await;
                match inserted {
                    Ok(_) => {}
                    Err(e) if is_unique_violation(&e) => {
                        return Err(Error::Conflict {
                            what: format!("advisory {}", row.id),
                        });
                    }
                    Err(e) => return Err(pg_err(e)),
                }
            } else {
                // The version check and the write are one statement: of two writers of
                // version n, exactly one finds n - 1 stored.
                let changed = tx
                    .execute(
                        "UPDATE advisories SET version = $2::bigint, state = $3, drafted_at = $4, \
                         issued_at = $5, body = $6 WHERE id = $1 AND version = $2::bigint - 1",
                        &[
                            &row.id,
                            &row.version,
                            &row.state,
                            &row.drafted_at,
                            &row.issued_at,
                            &row.body,
                        ],
                    )
                    .await
                    .map_err(pg_err)?;
                if changed == 0 {
                    let stored: Option<i64> = tx
                        .query_opt("SELECT version FROM advisories WHERE id = $1", &[&row.id])
                        .await
                        .map_err(pg_err)?
                        .map(|r| r.get(0));
                    return Err(match stored {
                        Some(stored) => Error::Conflict {
                            what: format!(
                                "advisory {} version {} (it changed meanwhile; stored is {stored})",
                                row.id,
                                row.version - 1
                            ),
                        },
                        None => Error::NotFound {
                            what: format!("advisory {}", row.id),
                        },
                    });
                }
            }
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn get_advisory(&self, id: &str) -> Result<Option<Advisory>> {
        let conn = self.conn().await?;
        let mut found =
            query_bodies(&conn, "SELECT body FROM advisories WHERE id = $1", &[&id]).await?;
        Ok(found.pop())
    }

    async fn list_advisories(&self, query: &AdvisoryQuery) -> Result<Vec<Advisory>> {
        let mut filter = Filter::default();
        if let Some(state) = query.state {
            filter.add("state = ?", Box::new(state.as_str()));
        }
        let order = if query.issued {
            filter.push("issued_at IS NOT NULL");
            "issued_at DESC, id DESC"
        } else {
            "drafted_at DESC, id DESC"
        };
        if let Some((at, id)) = &query.after {
            // Keyset paging: strictly after the last row of the previous page.
            let n = filter.params.len();
            filter.params.push(Box::new(at.as_millis()));
            filter.params.push(Box::new(id.clone()));
            let column = if query.issued {
                "issued_at"
            } else {
                "drafted_at"
            };
            filter.push(&format!("({column}, id) < (${}, ${})", n + 1, n + 2));
        }
        let sql = format!(
            "SELECT body FROM advisories {} ORDER BY {order} LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        let conn = self.conn().await?;
        query_bodies(&conn, &sql, &filter.refs()).await
    }

    async fn insert_report(&self, report: &CitizenReport) -> Result<()> {
        let body = to_json(report)?;
        let conn = self.conn().await?;
        match conn
            .execute(
                "INSERT INTO citizen_reports (id, ts, category, body) VALUES ($1, $2, $3, $4)",
                &[
                    &report.id,
                    &report.ts.as_millis(),
                    &report.category.as_str(),
                    &body,
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict {
                what: format!("report {}", report.id),
            }),
            Err(e) => Err(pg_err(e)),
        }
    }

    async fn list_reports(&self, query: &ReportQuery) -> Result<Vec<CitizenReport>> {
        let mut filter = Filter::default();
        if let Some(category) = query.category {
            filter.add("category = ?", Box::new(category.as_str()));
        }
        if let Some(since) = query.since {
            filter.add("ts >= ?", Box::new(since.as_millis()));
        }
        if let Some(before) = query.before {
            filter.add("ts < ?", Box::new(before.as_millis()));
        }
        let sql = format!(
            "SELECT body FROM citizen_reports {} ORDER BY ts DESC, id DESC LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        let conn = self.conn().await?;
        query_bodies(&conn, &sql, &filter.refs()).await
    }
}

#[async_trait]
impl ReadinessStore for PgStore {
    async fn append_readiness(&self, record: &ReadinessRecord) -> Result<()> {
        let body = to_json(&record.body)?;
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO readiness_history (ts, score, body) VALUES ($1, $2, $3)",
            &[&record.ts.as_millis(), &record.score, &body],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn list_readiness(
        &self,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<ReadinessRecord>> {
        let since = since.map_or(i64::MIN, Timestamp::as_millis);
        let conn = self.conn().await?;
        let rows = conn
            .query(
                "SELECT ts, score, body FROM readiness_history WHERE ts >= $1 \
                 ORDER BY ts DESC, id DESC LIMIT $2",
                &[&since, &limit_of(limit)],
            )
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|row| {
                Ok(ReadinessRecord {
                    ts: Timestamp::from_millis(row.try_get(0).map_err(pg_err)?),
                    score: row.try_get(1).map_err(pg_err)?,
                    body: from_json(row.try_get::<_, &str>(2).map_err(pg_err)?)?,
                })
            })
            .collect()
    }

    async fn insert_exercise(&self, record: &ExerciseRecord) -> Result<()> {
        let body = to_json(record)?;
        let conn = self.conn().await?;
        match conn
            .execute(
                "INSERT INTO exercises (id, finished_ms, recorded_ms, body) VALUES ($1, $2, $3, $4)",
                &[
                    &record.id,
                    &record.result.finished.as_millis(),
                    &record.recorded_at.as_millis(),
                    &body,
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict {
                what: format!("exercise {}", record.id),
            }),
            Err(e) => Err(pg_err(e)),
        }
    }

    async fn list_exercises(
        &self,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<ExerciseRecord>> {
        let since = since.map_or(i64::MIN, Timestamp::as_millis);
        let conn = self.conn().await?;
        query_bodies(
            &conn,
            "SELECT body FROM exercises WHERE finished_ms >= $1 \
             ORDER BY finished_ms DESC, id DESC LIMIT $2",
            &[&since, &limit_of(limit)],
        )
        .await
    }
}
