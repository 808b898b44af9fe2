//! [`IntelStore`] for the embedded SQLite backend (tables of migration `0003_taxii`).

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::{EmbeddedStore, db_err, limit_of};
use crate::intel::{IntelAdded, IntelObject, IntelQuery, IntelRecord, IntelStatus, IntelStore};
use crate::{Error, Result};

/// The `WHERE` clause (after `collection = ?1`) and its parameters for a query.
fn filter_sql(q: &IntelQuery, sql: &mut String, args: &mut Vec<SqlValue>) {
    let push = |sql: &mut String, clause: &str| {
        sql.push_str(" AND ");
        sql.push_str(clause);
    };
    let list = |sql: &mut String, args: &mut Vec<SqlValue>, col: &str, values: Vec<SqlValue>| {
        let marks = vec!["?"; values.len()].join(",");
        sql.push_str(&format!(" AND {col} IN ({marks})"));
        args.extend(values);
    };
    if let Some(id) = &q.object_id {
        push(sql, "id = ?");
        args.push(SqlValue::Text(id.clone()));
    }
    if let Some((d, id, v)) = &q.after {
        push(sql, "(date_added_us, id, version_us) > (?, ?, ?)");
        args.extend([
            SqlValue::Integer(*d),
            SqlValue::Text(id.clone()),
            SqlValue::Integer(*v),
        ]);
    }
    if let Some(a) = q.added_after {
        push(sql, "date_added_us > ?");
        args.push(SqlValue::Integer(a));
    }
    push(sql, "tlp <= ?");
    args.push(SqlValue::Integer(i64::from(q.max_tlp)));
    if !q.ids.is_empty() {
        list(
            sql,
            args,
            "id",
            q.ids.iter().cloned().map(SqlValue::Text).collect(),
        );
    }
    if !q.types.is_empty() {
        list(
            sql,
            args,
            "type",
            q.types.iter().cloned().map(SqlValue::Text).collect(),
        );
    }
    if !q.spec_versions.is_empty() {
        list(
            sql,
            args,
            "spec_version",
            q.spec_versions
                .iter()
                .cloned()
                .map(SqlValue::Text)
                .collect(),
        );
    }
    let v = &q.versions;
    if !v.all {
        let mut alts = Vec::new();
        if v.first {
            alts.push("is_first = 1".to_owned());
        }
        if v.last {
            alts.push("is_last = 1".to_owned());
        }
        if !v.at.is_empty() {
            alts.push(format!(
                "version_us IN ({})",
                vec!["?"; v.at.len()].join(",")
            ));
            args.extend(v.at.iter().map(|t| SqlValue::Integer(*t)));
        }
        if alts.is_empty() {
            alts.push("is_last = 1".to_owned());
        }
        sql.push_str(&format!(" AND ({})", alts.join(" OR ")));
    }
}

/// Recomputes `is_first` and `is_last` of one object's versions.
fn refresh_ends(tx: &rusqlite::Transaction<'_>, collection: &str, id: &str) -> Result<()> {
    tx.execute(
        "UPDATE intel_objects INDEXED BY intel_objects_version SET
            is_first = (version_us = (SELECT MIN(version_us) FROM intel_objects WHERE collection = ?1 AND id = ?2)),
            is_last  = (version_us = (SELECT MAX(version_us) FROM intel_objects WHERE collection = ?1 AND id = ?2))
         WHERE collection = ?1 AND id = ?2",
        params![collection, id],
    )
    .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl IntelStore for EmbeddedStore {
    async fn intel_add(
        &self,
        collection: &str,
        objects: &[IntelObject],
        now_us: i64,
    ) -> Result<Vec<IntelAdded>> {
        let collection = collection.to_owned();
        let objects = objects.to_vec();
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let last: Option<i64> = tx
                .query_row(
                    "SELECT last_added_us FROM intel_clock WHERE collection = ?1",
                    [&collection],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            let date_added = last.map_or(now_us, |l| now_us.max(l + 1));
            let mut added = Vec::with_capacity(objects.len());
            let mut any_new = false;
            {
                let mut existing = tx
                    .prepare_cached(
                        "SELECT date_added_us, is_first, is_last FROM intel_objects
                         WHERE collection = ?1 AND id = ?2 AND version_us = ?3",
                    )
                    .map_err(db_err)?;
                let mut ends = tx
                    .prepare_cached(
                        "SELECT MIN(version_us), MAX(version_us) FROM intel_objects
                         WHERE collection = ?1 AND id = ?2",
                    )
                    .map_err(db_err)?;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO intel_objects (collection, id, version_us, version, date_added_us,
                            type, spec_version, tlp, is_first, is_last, body)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )
                    .map_err(db_err)?;
                let mut clear_last = tx
                    .prepare_cached(
                        "UPDATE intel_objects INDEXED BY intel_objects_version SET is_last = 0 WHERE collection = ?1 AND id = ?2 AND is_last = 1",
                    )
                    .map_err(db_err)?;
                let mut clear_first = tx
                    .prepare_cached(
                        "UPDATE intel_objects INDEXED BY intel_objects_version SET is_first = 0 WHERE collection = ?1 AND id = ?2 AND is_first = 1",
                    )
                    .map_err(db_err)?;
                for o in &objects {
                    let old: Option<i64> = existing
                        .query_row(params![collection, o.id, o.version_us], |r| r.get(0))
                        .optional()
                        .map_err(db_err)?;
                    if let Some(d) = old {
                        added.push(IntelAdded {
                            id: o.id.clone(),
                            version: o.version.clone(),
                            new: false,
                            date_added_us: d,
                        });
                        continue;
                    }
                    let (min, max): (Option<i64>, Option<i64>) = ends
                        .query_row(params![collection, o.id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(db_err)?;
                    let is_first = min.is_none_or(|m| o.version_us < m);
                    let is_last = max.is_none_or(|m| o.version_us > m);
                    if is_first {
                        clear_first.execute(params![collection, o.id]).map_err(db_err)?;
                    }
                    if is_last {
                        clear_last.execute(params![collection, o.id]).map_err(db_err)?;
                    }
                    insert
                        .execute(params![
                            collection,
                            o.id,
                            o.version_us,
                            o.version,
                            date_added,
                            o.object_type,
                            o.spec_version,
                            i64::from(o.tlp),
                            is_first,
                            is_last,
                            o.body
                        ])
                        .map_err(db_err)?;
                    any_new = true;
                    added.push(IntelAdded {
                        id: o.id.clone(),
                        version: o.version.clone(),
                        new: true,
                        date_added_us: date_added,
                    });
                }
            }
            if any_new {
                tx.execute(
                    "INSERT INTO intel_clock (collection, last_added_us) VALUES (?1, ?2)
                     ON CONFLICT (collection) DO UPDATE SET last_added_us = excluded.last_added_us",
                    params![collection, date_added],
                )
                .map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(added)
        })
        .await
    }

    async fn intel_query(&self, query: &IntelQuery) -> Result<Vec<IntelRecord>> {
        let q = query.clone();
        self.read(move |conn| {
            let body = if q.with_body { "body" } else { "NULL" };
            // One object's versions: its own index, not a walk of the collection's pages.
            // One type (what partner feeds ask for): the type's pages, already in order.
            let index = if q.object_id.is_some() {
                "INDEXED BY intel_objects_version"
            } else if q.types.len() == 1 {
                "INDEXED BY intel_objects_type_page"
            } else {
                ""
            };
            let mut sql = format!(
                "SELECT id, version, version_us, date_added_us, spec_version, tlp, {body}
                 FROM intel_objects {index} WHERE collection = ?"
            );
            let mut args = vec![SqlValue::Text(q.collection.clone())];
            filter_sql(&q, &mut sql, &mut args);
            sql.push_str(" ORDER BY date_added_us, id, version_us LIMIT ?");
            args.push(SqlValue::Integer(limit_of(q.limit)));
            let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
            let rows = stmt
                .query_map(params_from_iter(args), |r| {
                    Ok(IntelRecord {
                        id: r.get(0)?,
                        version: r.get(1)?,
                        version_us: r.get(2)?,
                        date_added_us: r.get(3)?,
                        spec_version: r.get(4)?,
                        tlp: r.get::<_, i64>(5)?.clamp(0, 4) as u8,
                        body: r.get(6)?,
                    })
                })
                .map_err(db_err)?;
            rows.collect::<std::result::Result<Vec<_>, _>>()
                .map_err(db_err)
        })
        .await
    }

    async fn intel_count(&self, collection: &str, added_after_us: i64) -> Result<u64> {
        let collection = collection.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT COUNT(DISTINCT id) FROM intel_objects INDEXED BY intel_objects_page
                 WHERE collection = ?1 AND date_added_us > ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![collection, added_after_us], |r| r.get::<_, i64>(0))
            })
            .map(|n| n.max(0) as u64)
            .map_err(db_err)
        })
        .await
    }

    async fn intel_delete(&self, query: &IntelQuery) -> Result<u64> {
        let Some(id) = query.object_id.clone() else {
            return Err(Error::Invalid("delete needs an object id".into()));
        };
        let mut q = query.clone();
        q.after = None;
        q.added_after = None;
        q.max_tlp = 4;
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let mut sql =
                "DELETE FROM intel_objects INDEXED BY intel_objects_version WHERE collection = ?"
                    .to_owned();
            let mut args = vec![SqlValue::Text(q.collection.clone())];
            filter_sql(&q, &mut sql, &mut args);
            let n = tx.execute(&sql, params_from_iter(args)).map_err(db_err)?;
            refresh_ends(&tx, &q.collection, &id)?;
            tx.commit().map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn intel_put_status(&self, status: &IntelStatus) -> Result<()> {
        let s = status.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO intel_statuses (root, id, owner, created_us, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (root, id) DO UPDATE SET body = excluded.body",
                params![s.root, s.id, s.owner, s.created_us, s.body],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn intel_get_status(&self, root: &str, id: &str) -> Result<Option<IntelStatus>> {
        let (root, id) = (root.to_owned(), id.to_owned());
        self.read(move |conn| {
            conn.query_row(
                "SELECT owner, created_us, body FROM intel_statuses WHERE root = ?1 AND id = ?2",
                params![root, id],
                |r| {
                    Ok(IntelStatus {
                        root: root.clone(),
                        id: id.clone(),
                        owner: r.get(0)?,
                        created_us: r.get(1)?,
                        body: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    async fn intel_prune_statuses(&self, before_us: i64) -> Result<u64> {
        self.write(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM intel_statuses WHERE created_us < ?1",
                    [before_us],
                )
                .map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn intel_bookmark(&self, feed: &str) -> Result<Option<String>> {
        let feed = feed.to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT added_after FROM intel_bookmarks WHERE feed = ?1",
                [feed],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
        })
        .await
    }

    async fn intel_set_bookmark(&self, feed: &str, added_after: &str) -> Result<()> {
        let (feed, added_after) = (feed.to_owned(), added_after.to_owned());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO intel_bookmarks (feed, added_after) VALUES (?1, ?2)
                 ON CONFLICT (feed) DO UPDATE SET added_after = excluded.added_after",
                params![feed, added_after],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }
}
