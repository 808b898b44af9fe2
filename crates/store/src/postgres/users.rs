//! [`UserStore`] and [`IncidentStore`] on PostgreSQL (tables of migration `0007_incidents`).

use async_trait::async_trait;
use model::{Incident, IncidentId, IncidentState, Timestamp};

use super::{
    Filter, PgStore, is_foreign_key_violation, is_unique_violation, limit_of, pg_err, query_bodies,
    to_json,
};
use crate::users::{IncidentQuery, IncidentStore, User, UserStore, UserToken, severity_rank};
use crate::{Error, Result};

#[async_trait]
impl UserStore for PgStore {
    async fn insert_user(&self, user: &User) -> Result<()> {
        let body = to_json(user)?;
        let conn = self.conn().await?;
        match conn
            .execute(
                "INSERT INTO users (name, role, disabled, body) VALUES ($1, $2, $3, $4)",
                &[&user.name, &user.role, &user.disabled, &body],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict {
                what: format!("user {}", user.name),
            }),
            Err(e) => Err(pg_err(e)),
        }
    }

    async fn update_user(&self, user: &User) -> Result<()> {
        let body = to_json(user)?;
        let conn = self.conn().await?;
        let changed = conn
            .execute(
                "UPDATE users SET role = $2, disabled = $3, body = $4 WHERE name = $1",
                &[&user.name, &user.role, &user.disabled, &body],
            )
            .await
            .map_err(pg_err)?;
        if changed == 0 {
            return Err(Error::NotFound {
                what: format!("user {}", user.name),
            });
        }
        Ok(())
    }

    async fn get_user(&self, name: &str) -> Result<Option<User>> {
        let conn = self.conn().await?;
        let mut found =
            query_bodies(&conn, "SELECT body FROM users WHERE name = $1", &[&name]).await?;
        Ok(found.pop())
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let conn = self.conn().await?;
        query_bodies(&conn, "SELECT body FROM users ORDER BY name", &[]).await
    }

    async fn insert_user_token(&self, token: &UserToken) -> Result<()> {
        let body = to_json(token)?;
        let expires = token.expires_at.map(Timestamp::as_millis);
        let conn = self.conn().await?;
        match conn
            .execute(
                "INSERT INTO user_tokens (sha256, \"user\", kind, expires_at, body) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &token.sha256,
                    &token.user,
                    &token.kind.as_str(),
                    &expires,
                    &body,
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_foreign_key_violation(&e) => Err(Error::NotFound {
                what: format!("user {}", token.user),
            }),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict {
                what: "user token".into(),
            }),
            Err(e) => Err(pg_err(e)),
        }
    }

    async fn find_user_token(&self, sha256: &str) -> Result<Option<UserToken>> {
        let conn = self.conn().await?;
        let mut found = query_bodies(
            &conn,
            "SELECT body FROM user_tokens WHERE sha256 = $1",
            &[&sha256],
        )
        .await?;
        Ok(found.pop())
    }

    async fn delete_user_token(&self, sha256: &str) -> Result<bool> {
        let conn = self.conn().await?;
        conn.execute("DELETE FROM user_tokens WHERE sha256 = $1", &[&sha256])
            .await
            .map(|n| n > 0)
            .map_err(pg_err)
    }

    async fn delete_user_tokens(&self, user: &str) -> Result<u64> {
        let conn = self.conn().await?;
        conn.execute("DELETE FROM user_tokens WHERE \"user\" = $1", &[&user])
            .await
            .map_err(pg_err)
    }

    async fn prune_user_tokens(&self, now: Timestamp) -> Result<u64> {
        let conn = self.conn().await?;
        conn.execute(
            "DELETE FROM user_tokens WHERE expires_at IS NOT NULL AND expires_at < $1",
            &[&now.as_millis()],
        )
        .await
        .map_err(pg_err)
    }
}

#[async_trait]
impl IncidentStore for PgStore {
    async fn upsert_incident(&self, incident: &Incident) -> Result<()> {
        let seq = incident.id.seq().ok_or_else(|| {
            Error::Invalid(format!("incident id {} is not INC-<digits>", incident.id))
        })?;
        let seq = i64::try_from(seq)
            .map_err(|_| Error::Invalid(format!("incident id {} is too large", incident.id)))?;
        let devices = to_json(&incident.devices)?;
        let body = to_json(incident)?;
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO incidents (seq, id, state, severity, owner, devices, created_at, \
             updated_at, body) VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9) \
             ON CONFLICT (seq) DO UPDATE SET state = excluded.state, \
             severity = excluded.severity, owner = excluded.owner, \
             devices = excluded.devices, updated_at = excluded.updated_at, \
             body = excluded.body",
            &[
                &seq,
                &incident.id.0,
                &incident.state.as_str(),
                &severity_rank(incident.severity),
                &incident.owner,
                &devices,
                &incident.created_at.as_millis(),
                &incident.updated_at.as_millis(),
                &body,
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Conflict {
                    what: format!("incident {}", incident.id),
                }
            } else {
                pg_err(e)
            }
        })
    }

    async fn get_incident(&self, id: &IncidentId) -> Result<Option<Incident>> {
        let conn = self.conn().await?;
        let mut found =
            query_bodies(&conn, "SELECT body FROM incidents WHERE id = $1", &[&id.0]).await?;
        Ok(found.pop())
    }

    async fn list_incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>> {
        let mut filter = Filter::default();
        if let Some(state) = query.state {
            filter.add("state = ?", Box::new(state.as_str()));
        }
        if let Some(min) = query.min_severity {
            filter.add("severity >= ?", Box::new(severity_rank(min)));
        }
        if let Some(owner) = &query.owner {
            filter.add("owner = ?", Box::new(owner.clone()));
        }
        if let Some(device) = &query.device_id {
            filter.add(
                "devices @> jsonb_build_array(?::text)",
                Box::new(device.as_str().to_owned()),
            );
        }
        if let Some(before) = query.before_seq {
            filter.add("seq < ?", Box::new(before.min(i64::MAX as u64) as i64));
        }
        let sql = format!(
            "SELECT body FROM incidents {} ORDER BY seq DESC LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        let conn = self.conn().await?;
        query_bodies(&conn, &sql, &filter.refs()).await
    }

    async fn open_incidents(&self, limit: usize) -> Result<Vec<Incident>> {
        let states = [
            IncidentState::New.as_str(),
            IncidentState::Triaged.as_str(),
            IncidentState::Contained.as_str(),
        ];
        let conn = self.conn().await?;
        query_bodies(
            &conn,
            "SELECT body FROM incidents WHERE state = ANY($1::text[]) ORDER BY seq LIMIT $2",
            &[&&states[..], &limit_of(limit)],
        )
        .await
    }

    async fn max_incident_seq(&self) -> Result<u64> {
        let conn = self.conn().await?;
        let row = conn
            .query_one("SELECT coalesce(max(seq), 0)::bigint FROM incidents", &[])
            .await
            .map_err(pg_err)?;
        Ok(row.try_get::<_, i64>(0).map_err(pg_err)? as u64)
    }
}
