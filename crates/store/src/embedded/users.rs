//! [`UserStore`] and [`IncidentStore`] for the embedded backend (tables of migration
//! `0007_incidents`).

use async_trait::async_trait;
use model::{Incident, IncidentId, IncidentState, Timestamp};
use rusqlite::OptionalExtension;
use rusqlite::params;

use super::{
    EmbeddedStore, Filter, db_err, from_json, is_constraint, limit_of, query_bodies, to_json,
};
use crate::users::{IncidentQuery, IncidentStore, User, UserStore, UserToken, severity_rank};
use crate::{Error, Result};

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn insert_user(&self, user: &User) -> Result<()> {
        let (name, role, disabled, body) = (
            user.name.clone(),
            user.role.clone(),
            user.disabled,
            to_json(user)?,
        );
        self.write(move |conn| {
            match conn.execute(
                "INSERT INTO users (name, role, disabled, body) VALUES (?1, ?2, ?3, ?4)",
                params![name, role, disabled, body],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(Error::Conflict {
                    what: format!("user {name}"),
                }),
                Err(e) => Err(db_err(e)),
            }
        })
        .await
    }

    async fn update_user(&self, user: &User) -> Result<()> {
        let (name, role, disabled, body) = (
            user.name.clone(),
            user.role.clone(),
            user.disabled,
            to_json(user)?,
        );
        self.write(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE users SET role = ?2, disabled = ?3, body = ?4 WHERE name = ?1",
                    params![name, role, disabled, body],
                )
                .map_err(db_err)?;
            if changed == 0 {
                return Err(Error::NotFound {
                    what: format!("user {name}"),
                });
            }
            Ok(())
        })
        .await
    }

    async fn get_user(&self, name: &str) -> Result<Option<User>> {
        let name = name.to_owned();
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM users WHERE name = ?1")
                .map_err(db_err)?
                .query_row([name], |row| row.get(0))
                .optional()
                .map_err(db_err)?;
            body.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        self.read(|conn| query_bodies(conn, "SELECT body FROM users ORDER BY name", Vec::new()))
            .await
    }

    async fn insert_user_token(&self, token: &UserToken) -> Result<()> {
        let (sha256, user, kind, expires, body) = (
            token.sha256.clone(),
            token.user.clone(),
            token.kind.as_str(),
            token.expires_at.map(Timestamp::as_millis),
            to_json(token)?,
        );
        self.write(move |conn| {
            let exists: Option<i64> = conn
                .query_row("SELECT 1 FROM users WHERE name = ?1", [&user], |row| {
                    row.get(0)
                })
                .optional()
                .map_err(db_err)?;
            if exists.is_none() {
                return Err(Error::NotFound {
                    what: format!("user {user}"),
                });
            }
            match conn.execute(
                "INSERT INTO user_tokens (sha256, user, kind, expires_at, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![sha256, user, kind, expires, body],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(Error::Conflict {
                    what: "user token".into(),
                }),
                Err(e) => Err(db_err(e)),
            }
        })
        .await
    }

    async fn find_user_token(&self, sha256: &str) -> Result<Option<UserToken>> {
        let sha256 = sha256.to_owned();
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM user_tokens WHERE sha256 = ?1")
                .map_err(db_err)?
                .query_row([sha256], |row| row.get(0))
                .optional()
                .map_err(db_err)?;
            body.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn delete_user_token(&self, sha256: &str) -> Result<bool> {
        let sha256 = sha256.to_owned();
        self.write(move |conn| {
            conn.execute("DELETE FROM user_tokens WHERE sha256 = ?1", [sha256])
                .map(|n| n > 0)
                .map_err(db_err)
        })
        .await
    }

    async fn delete_user_tokens(&self, user: &str) -> Result<u64> {
        let user = user.to_owned();
        self.write(move |conn| {
            conn.execute("DELETE FROM user_tokens WHERE user = ?1", [user])
                .map(|n| n as u64)
                .map_err(db_err)
        })
        .await
    }

    async fn prune_user_tokens(&self, now: Timestamp) -> Result<u64> {
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM user_tokens WHERE expires_at IS NOT NULL AND expires_at < ?1",
                [now.as_millis()],
            )
            .map(|n| n as u64)
            .map_err(db_err)
        })
        .await
    }
}

#[async_trait]
impl IncidentStore for EmbeddedStore {
    async fn upsert_incident(&self, incident: &Incident) -> Result<()> {
        let seq = incident.id.seq().ok_or_else(|| {
            Error::Invalid(format!("incident id {} is not INC-<digits>", incident.id))
        })? as i64;
        let id = incident.id.0.clone();
        let state = incident.state.as_str();
        let severity = severity_rank(incident.severity);
        let owner = incident.owner.clone();
        let devices = to_json(&incident.devices)?;
        let (created, updated) = (
            incident.created_at.as_millis(),
            incident.updated_at.as_millis(),
        );
        let body = to_json(incident)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO incidents (seq, id, state, severity, owner, devices, created_at, \
                 updated_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (seq) DO UPDATE SET state = excluded.state, \
                 severity = excluded.severity, owner = excluded.owner, \
                 devices = excluded.devices, updated_at = excluded.updated_at, \
                 body = excluded.body",
            )
            .map_err(db_err)?
            .execute(params![
                seq, id, state, severity, owner, devices, created, updated, body
            ])
            .map(|_| ())
            .map_err(|e| {
                if is_constraint(&e) {
                    Error::Conflict {
                        what: format!("incident {id}"),
                    }
                } else {
                    db_err(e)
                }
            })
        })
        .await
    }

    async fn get_incident(&self, id: &IncidentId) -> Result<Option<Incident>> {
        let id = id.0.clone();
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM incidents WHERE id = ?1")
                .map_err(db_err)?
                .query_row([id], |row| row.get(0))
                .optional()
                .map_err(db_err)?;
            body.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn list_incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>> {
        let mut filter = Filter::default();
        if let Some(state) = query.state {
            filter.add("state = ?", state.as_str().to_owned().into());
        }
        if let Some(min) = query.min_severity {
            filter.add("severity >= ?", severity_rank(min).into());
        }
        if let Some(owner) = &query.owner {
            filter.add("owner = ?", owner.clone().into());
        }
        if let Some(device) = &query.device_id {
            filter.add(
                "EXISTS (SELECT 1 FROM json_each(incidents.devices) WHERE value = ?)",
                device.as_str().to_owned().into(),
            );
        }
        if let Some(before) = query.before_seq {
            filter.add("seq < ?", (before.min(i64::MAX as u64) as i64).into());
        }
        let sql = format!(
            "SELECT body FROM incidents {} ORDER BY seq DESC LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        self.read(move |conn| query_bodies(conn, &sql, filter.params))
            .await
    }

    async fn open_incidents(&self, limit: usize) -> Result<Vec<Incident>> {
        let sql = format!(
            "SELECT body FROM incidents WHERE state IN ('{}', '{}', '{}') ORDER BY seq LIMIT {}",
            IncidentState::New.as_str(),
            IncidentState::Triaged.as_str(),
            IncidentState::Contained.as_str(),
            limit_of(limit)
        );
        self.read(move |conn| query_bodies(conn, &sql, Vec::new()))
            .await
    }

    async fn max_incident_seq(&self) -> Result<u64> {
        self.read(|conn| {
            conn.query_row("SELECT coalesce(max(seq), 0) FROM incidents", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(db_err)
        })
        .await
    }
}
