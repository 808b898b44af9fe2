//! [`AdvisoryStore`] and [`ReadinessStore`] for the embedded backend (tables from migrations
//! `0004_advisories` and `0010_exercises`).

use async_trait::async_trait;
use model::{Advisory, CitizenReport, ExerciseRecord, Timestamp};
use rusqlite::{OptionalExtension, params};

use super::{
    EmbeddedStore, Filter, db_err, from_json, is_constraint, limit_of, query_bodies, to_json,
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
impl AdvisoryStore for EmbeddedStore {
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
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            for row in &rows {
                if row.version == 1 {
                    let inserted = tx.execute(
                        "INSERT INTO advisories (id, version, state, drafted_at, issued_at, body) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![row.id, row.version, row.state, row.drafted_at, row.issued_at, row.body],
                    );
                    match inserted {
                        Ok(_) => {}
                        Err(e) if is_constraint(&e) => {
                            return Err(Error::Conflict {
                                what: format!("advisory {}", row.id),
                            });
                        }
                        Err(e) => return Err(db_err(e)),
                    }
                } else {
                    let changed = tx
                        .execute(
                            "UPDATE advisories SET version = ?2, state = ?3, drafted_at = ?4, \
                             issued_at = ?5, body = ?6 WHERE id = ?1 AND version = ?2 - 1",
                            params![row.id, row.version, row.state, row.drafted_at, row.issued_at, row.body],
                        )
                        .map_err(db_err)?;
                    if changed == 0 {
                        let exists: Option<i64> = tx
                            .query_row(
                                "SELECT version FROM advisories WHERE id = ?1",
                                [&row.id],
                                |r| r.get(0),
                            )
                            .optional()
                            .map_err(db_err)?;
                        return Err(match exists {
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
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn get_advisory(&self, id: &str) -> Result<Option<Advisory>> {
        let id = id.to_owned();
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM advisories WHERE id = ?1")
                .map_err(db_err)?
                .query_row([id], |row| row.get(0))
                .optional()
                .map_err(db_err)?;
            body.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn list_advisories(&self, query: &AdvisoryQuery) -> Result<Vec<Advisory>> {
        let mut filter = Filter::default();
        if let Some(state) = query.state {
            filter.add("state = ?", state.as_str().to_owned().into());
        }
        let order = if query.issued {
            filter.conditions.push("issued_at IS NOT NULL");
            "issued_at DESC, id DESC"
        } else {
            "drafted_at DESC, id DESC"
        };
        if let Some((at, id)) = &query.after {
            // Keyset paging: strictly after the last row of the previous page.
            filter.conditions.push(if query.issued {
                "(issued_at, id) < (?, ?)"
            } else {
                "(drafted_at, id) < (?, ?)"
            });
            filter.params.push(at.as_millis().into());
            filter.params.push(id.clone().into());
        }
        let sql = format!(
            "SELECT body FROM advisories {} ORDER BY {order} LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        self.read(move |conn| query_bodies(conn, &sql, filter.params))
            .await
    }

    async fn insert_report(&self, report: &CitizenReport) -> Result<()> {
        let id = report.id.clone();
        let ts = report.ts.as_millis();
        let category = report.category.as_str();
        let body = to_json(report)?;
        self.write(move |conn| {
            match conn.execute(
                "INSERT INTO citizen_reports (id, ts, category, body) VALUES (?1, ?2, ?3, ?4)",
                params![id, ts, category, body],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(Error::Conflict {
                    what: format!("report {id}"),
                }),
                Err(e) => Err(db_err(e)),
            }
        })
        .await
    }

    async fn list_reports(&self, query: &ReportQuery) -> Result<Vec<CitizenReport>> {
        let mut filter = Filter::default();
        if let Some(category) = query.category {
            filter.add("category = ?", category.as_str().to_owned().into());
        }
        if let Some(since) = query.since {
            filter.add("ts >= ?", since.as_millis().into());
        }
        if let Some(before) = query.before {
            filter.add("ts < ?", before.as_millis().into());
        }
        let sql = format!(
            "SELECT body FROM citizen_reports {} ORDER BY ts DESC, id DESC LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        self.read(move |conn| query_bodies(conn, &sql, filter.params))
            .await
    }
}

#[async_trait]
impl ReadinessStore for EmbeddedStore {
    async fn append_readiness(&self, record: &ReadinessRecord) -> Result<()> {
        let ts = record.ts.as_millis();
        let score = record.score;
        let body = to_json(&record.body)?;
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO readiness_history (ts, score, body) VALUES (?1, ?2, ?3)",
                params![ts, score, body],
            )
            .map(|_| ())
            .map_err(db_err)
        })
        .await
    }

    async fn list_readiness(
        &self,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<ReadinessRecord>> {
        let since = since.map_or(i64::MIN, Timestamp::as_millis);
        let limit = limit_of(limit);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT ts, score, body FROM readiness_history WHERE ts >= ?1 \
                     ORDER BY ts DESC, id DESC LIMIT ?2",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![since, limit], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, Option<f64>>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (ts, score, body) = row.map_err(db_err)?;
                out.push(ReadinessRecord {
                    ts: Timestamp::from_millis(ts),
                    score,
                    body: from_json(&body)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn insert_exercise(&self, record: &ExerciseRecord) -> Result<()> {
        let id = record.id.clone();
        let finished = record.result.finished.as_millis();
        let recorded = record.recorded_at.as_millis();
        let body = to_json(record)?;
        self.write(move |conn| {
            match conn.execute(
                "INSERT INTO exercises (id, finished_ms, recorded_ms, body) VALUES (?1, ?2, ?3, ?4)",
                params![id, finished, recorded, body],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(Error::Conflict {
                    what: format!("exercise {id}"),
                }),
                Err(e) => Err(db_err(e)),
            }
        })
        .await
    }

    async fn list_exercises(
        &self,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<ExerciseRecord>> {
        let since = since.map_or(i64::MIN, Timestamp::as_millis);
        let limit = limit_of(limit);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body FROM exercises WHERE finished_ms >= ?1 \
                     ORDER BY finished_ms DESC, id DESC LIMIT ?2",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![since, limit], |row| row.get::<_, String>(0))
                .map_err(db_err)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(from_json(&row.map_err(db_err)?)?);
            }
            Ok(out)
        })
        .await
    }
}
