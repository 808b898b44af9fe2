//! [`IntelStore`] on PostgreSQL (tables of migration `0003_taxii`).
//!
//! Each collection's `date_added` clock is advanced under a transaction-scoped advisory lock
//! on the collection, so writers in several processes still give strictly increasing
//! `date_added` values and a reader's cursor never passes a record added afterwards.

use async_trait::async_trait;
use tokio_postgres::Transaction;

use super::{LOCK_INTEL_CLOCK, Param, PgStore, limit_of, params_ref, pg_err};
use crate::intel::{IntelAdded, IntelObject, IntelQuery, IntelRecord, IntelStatus, IntelStore};
use crate::{Error, Result};

/// Appends `AND ...` clauses (after `collection = $1`) and their parameters for a query.
fn filter_sql(q: &IntelQuery, sql: &mut String, args: &mut Vec<Param>) {
    fn arg(args: &mut Vec<Param>, value: Param) -> String {
        args.push(value);
        format!("${}", args.len())
    }
    if let Some(id) = &q.object_id {
        let p = arg(args, Box::new(id.clone()));
        sql.push_str(&format!(" AND id = {p}"));
    }
    if let Some((d, id, v)) = &q.after {
        let (pd, pi, pv) = (
            arg(args, Box::new(*d)),
            arg(args, Box::new(id.clone())),
            arg(args, Box::new(*v)),
        );
        sql.push_str(&format!(
            " AND (date_added_us, id, version_us) > ({pd}, {pi}, {pv})"
        ));
    }
    if let Some(a) = q.added_after {
        let p = arg(args, Box::new(a));
        sql.push_str(&format!(" AND date_added_us > {p}"));
    }
    let p = arg(args, Box::new(i16::from(q.max_tlp)));
    sql.push_str(&format!(" AND tlp <= {p}"));
    if !q.ids.is_empty() {
        let p = arg(args, Box::new(q.ids.clone()));
        sql.push_str(&format!(" AND id = ANY({p}::text[])"));
    }
    if !q.types.is_empty() {
        let p = arg(args, Box::new(q.types.clone()));
        sql.push_str(&format!(" AND type = ANY({p}::text[])"));
    }
    if !q.spec_versions.is_empty() {
        let p = arg(args, Box::new(q.spec_versions.clone()));
        sql.push_str(&format!(" AND spec_version = ANY({p}::text[])"));
    }
    let v = &q.versions;
    if !v.all {
        let mut alts = Vec::new();
        if v.first {
            alts.push("is_first".to_owned());
        }
        if v.last {
            alts.push("is_last".to_owned());
        }
        if !v.at.is_empty() {
            let p = arg(args, Box::new(v.at.clone()));
            alts.push(format!("version_us = ANY({p}::bigint[])"));
        }
        if alts.is_empty() {
            alts.push("is_last".to_owned());
        }
        sql.push_str(&format!(" AND ({})", alts.join(" OR ")));
    }
}

/// Recomputes `is_first` and `is_last` of one object's versions.
async fn refresh_ends(tx: &Transaction<'_>, collection: &str, id: &str) -> Result<()> {
    tx.execute(
        "UPDATE intel_objects o SET is_first = (o.version_us = m.lo), is_last = (o.version_us = m.hi)
         FROM (SELECT min(version_us) AS lo, max(version_us) AS hi FROM intel_objects
               WHERE collection = $1 AND id = $2) m
         WHERE o.collection = $1 AND o.id = $2",
        &[&collection, &id],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

#[async_trait]
impl IntelStore for PgStore {
    async fn intel_add(
        &self,
        collection: &str,
        objects: &[IntelObject],
        now_us: i64,
    ) -> Result<Vec<IntelAdded>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(pg_err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&LOCK_INTEL_CLOCK, &collection],
        )
        .await
        .map_err(pg_err)?;
        let last: Option<i64> = tx
            .query_opt(
                "SELECT last_added_us FROM intel_clock WHERE collection = $1",
                &[&collection],
            )
            .await
            .map_err(pg_err)?
            .map(|r| r.get(0));
        let date_added = last.map_or(now_us, |l| now_us.max(l + 1));
        let existing = tx
            .prepare(
                "SELECT date_added_us FROM intel_objects
                 WHERE collection = $1 AND id = $2 AND version_us = $3",
            )
            .await
            .map_err(pg_err)?;
        let ends = tx
            .prepare(
                "SELECT min(version_us), max(version_us) FROM intel_objects
                 WHERE collection = $1 AND id = $2",
            )
            .await
            .map_err(pg_err)?;
        let insert = tx
            .prepare(
                "INSERT INTO intel_objects (collection, id, version_us, version, date_added_us,
                    type, spec_version, tlp, is_first, is_last, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .await
            .map_err(pg_err)?;
        let clear_last = tx
            .prepare(
                "UPDATE intel_objects SET is_last = FALSE
                 WHERE collection = $1 AND id = $2 AND is_last",
            )
            .await
            .map_err(pg_err)?;
        let clear_first = tx
            .prepare(
                "UPDATE intel_objects SET is_first = FALSE
                 WHERE collection = $1 AND id = $2 AND is_first",
            )
            .await
            .map_err(pg_err)?;
        let mut added = Vec::with_capacity(objects.len());
        let mut any_new = false;
        for o in objects {
            let old = tx
                .query_opt(&existing, &[&collection, &o.id, &o.version_us])
                .await
                .map_err(pg_err)?;
            if let Some(row) = old {
                added.push(IntelAdded {
                    id: o.id.clone(),
                    version: o.version.clone(),
                    new: false,
                    date_added_us: row.try_get(0).map_err(pg_err)?,
                });
                continue;
            }
            let row = tx
                .query_one(&ends, &[&collection, &o.id])
                .await
                .map_err(pg_err)?;
            let (min, max): (Option<i64>, Option<i64>) = (
                row.try_get(0).map_err(pg_err)?,
                row.try_get(1).map_err(pg_err)?,
            );
            let is_first = min.is_none_or(|m| o.version_us < m);
            let is_last = max.is_none_or(|m| o.version_us > m);
            if is_first {
                tx.execute(&clear_first, &[&collection, &o.id])
                    .await
                    .map_err(pg_err)?;
            }
            if is_last {
                tx.execute(&clear_last, &[&collection, &o.id])
                    .await
                    .map_err(pg_err)?;
            }
            tx.execute(
                &insert,
                &[
                    &collection,
                    &o.id,
                    &o.version_us,
                    &o.version,
                    &date_added,
                    &o.object_type,
                    &o.spec_version,
                    &i16::from(o.tlp),
                    &is_first,
                    &is_last,
                    &o.body,
                ],
            )
            .await
            .map_err(pg_err)?;
            any_new = true;
            added.push(IntelAdded {
                id: o.id.clone(),
                version: o.version.clone(),
                new: true,
                date_added_us: date_added,
            });
        }
        if any_new {
            tx.execute(
                "INSERT INTO intel_clock (collection, last_added_us) VALUES ($1, $2)
                 ON CONFLICT (collection) DO UPDATE SET last_added_us = excluded.last_added_us",
                &[&collection, &date_added],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(added)
    }

    async fn intel_query(&self, query: &IntelQuery) -> Result<Vec<IntelRecord>> {
        let q = query;
        let body = if q.with_body { "body" } else { "NULL::text" };
        let mut sql = format!(
            "SELECT id, version, version_us, date_added_us, spec_version, tlp, {body}
             FROM intel_objects WHERE collection = $1"
        );
        let mut args: Vec<Param> = vec![Box::new(q.collection.clone())];
        filter_sql(q, &mut sql, &mut args);
        args.push(Box::new(limit_of(q.limit)));
        sql.push_str(&format!(
            " ORDER BY date_added_us, id, version_us LIMIT ${}",
            args.len()
        ));
        let conn = self.conn().await?;
        let rows = conn
            .query(sql.as_str(), &params_ref(&args))
            .await
            .map_err(pg_err)?;
        rows.iter()
            .map(|r| {
                Ok(IntelRecord {
                    id: r.try_get(0).map_err(pg_err)?,
                    version: r.try_get(1).map_err(pg_err)?,
                    version_us: r.try_get(2).map_err(pg_err)?,
                    date_added_us: r.try_get(3).map_err(pg_err)?,
                    spec_version: r.try_get(4).map_err(pg_err)?,
                    tlp: r.try_get::<_, i16>(5).map_err(pg_err)?.clamp(0, 4) as u8,
                    body: r.try_get(6).map_err(pg_err)?,
                })
            })
            .collect()
    }

    async fn intel_count(&self, collection: &str, added_after_us: i64) -> Result<u64> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT COUNT(DISTINCT id) FROM intel_objects \
                 WHERE collection = $1 AND date_added_us > $2",
                &[&collection, &added_after_us],
            )
            .await
            .map_err(pg_err)?;
        let n: i64 = row.try_get(0).map_err(pg_err)?;
        Ok(n.max(0) as u64)
    }

    async fn intel_delete(&self, query: &IntelQuery) -> Result<u64> {
        let Some(id) = query.object_id.clone() else {
            return Err(Error::Invalid("delete needs an object id".into()));
        };
        let mut q = query.clone();
        q.after = None;
        q.added_after = None;
        q.max_tlp = 4;
        let mut sql = "DELETE FROM intel_objects WHERE collection = $1".to_owned();
        let mut args: Vec<Param> = vec![Box::new(q.collection.clone())];
        filter_sql(&q, &mut sql, &mut args);
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(pg_err)?;
        let n = tx
            .execute(sql.as_str(), &params_ref(&args))
            .await
            .map_err(pg_err)?;
        refresh_ends(&tx, &q.collection, &id).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(n)
    }

    async fn intel_put_status(&self, status: &IntelStatus) -> Result<()> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO intel_statuses (root, id, owner, created_us, body) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (root, id) DO UPDATE SET body = excluded.body",
            &[&status.root, &status.id, &status.owner, &status.created_us, &status.body],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn intel_get_status(&self, root: &str, id: &str) -> Result<Option<IntelStatus>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT owner, created_us, body FROM intel_statuses WHERE root = $1 AND id = $2",
                &[&root, &id],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| {
            Ok(IntelStatus {
                root: root.to_owned(),
                id: id.to_owned(),
                owner: r.try_get(0).map_err(pg_err)?,
                created_us: r.try_get(1).map_err(pg_err)?,
                body: r.try_get(2).map_err(pg_err)?,
            })
        })
        .transpose()
    }

    async fn intel_prune_statuses(&self, before_us: i64) -> Result<u64> {
        let conn = self.conn().await?;
        conn.execute(
            "DELETE FROM intel_statuses WHERE created_us < $1",
            &[&before_us],
        )
        .await
        .map_err(pg_err)
    }

    async fn intel_bookmark(&self, feed: &str) -> Result<Option<String>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT added_after FROM intel_bookmarks WHERE feed = $1",
                &[&feed],
            )
            .await
            .map_err(pg_err)?;
        row.map(|r| r.try_get(0).map_err(pg_err)).transpose()
    }

    async fn intel_set_bookmark(&self, feed: &str, added_after: &str) -> Result<()> {
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO intel_bookmarks (feed, added_after) VALUES ($1, $2)
             ON CONFLICT (feed) DO UPDATE SET added_after = excluded.added_after",
            &[&feed, &added_after],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }
}
