//! The PostgreSQL backend ([`PgStore`], feature `postgres`): the same tables as the embedded
//! store (migrations in `crates/store/migrations/postgres/`, numbered like the embedded
//! ones), reached through a small pool of tokio-postgres connections.
//!
//! Several citysec processes may share one database: migrations run under an advisory
//! lock, the audit chain and each TAXII collection's `date_added` clock are advanced under
//! transaction-scoped advisory locks, and counters and versioned writes are single atomic
//! statements.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use model::{Alert, AlertId, Device, DeviceId, DeviceStatus, Event, Timestamp};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::{AlertQuery, ApiToken, DeviceQuery, Error, EventQuery, Result, Store, StoreStats};

mod advisory;
mod console;
mod detect;
mod gateway;
mod intel;
mod limits;
mod users;

/// Migrations in order, each with the number of its embedded twin (so `0006` may be
/// missing here exactly as it is there).
pub(crate) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "0002_detect",
        include_str!("../migrations/postgres/0002_detect.sql"),
    ),
    (
        3,
        "0003_taxii",
        include_str!("../migrations/postgres/0003_taxii.sql"),
    ),
    (
        4,
        "0004_advisories",
        include_str!("../migrations/postgres/0004_advisories.sql"),
    ),
    (
        5,
        "0005_gateway",
        include_str!("../migrations/postgres/0005_gateway.sql"),
    ),
    (
        7,
        "0007_incidents",
        include_str!("../migrations/postgres/0007_incidents.sql"),
    ),
    (
        9,
        "0009_rate_limits",
        include_str!("../migrations/postgres/0009_rate_limits.sql"),
    ),
    (
        10,
        "0010_exercises",
        include_str!("../migrations/postgres/0010_exercises.sql"),
    ),
    (
        11,
        "0011_console",
        include_str!("../migrations/postgres/0011_console.sql"),
    ),
    (
        12,
        "0012_command_devices",
        include_str!("../migrations/postgres/0012_command_devices.sql"),
    ),
    (
        13,
        "0013_learned",
        include_str!("../migrations/postgres/0013_learned.sql"),
    ),
];

/// Advisory lock keys (first half of the two-key form), one per serialised resource.
const LOCK_MIGRATIONS: i32 = 0x6369_7401;
pub(crate) const LOCK_AUDIT: i32 = 0x6369_7402;
pub(crate) const LOCK_INTEL_CLOCK: i32 = 0x6369_7403;

/// How many events one `prune_events` transaction deletes.
const PRUNE_CHUNK: i64 = 5_000;

/// How to reach the database.
#[derive(Clone)]
pub struct PgConfig {
    /// A libpq-style URL or key/value string (`postgres://citysec@db.city:5432/citysec`),
    /// without a password.
    pub url: String,
    /// The password, read by the caller from a file or the environment.
    pub password: Option<String>,
    /// Connections kept open (at least 1).
    pub pool_size: usize,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// The PostgreSQL store. Cloning gives another handle to the same pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Pool>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("slots", &self.inner.slots.len())
            .finish_non_exhaustive()
    }
}

struct Pool {
    config: tokio_postgres::Config,
    slots: Vec<tokio::sync::Mutex<Option<Client>>>,
    next: AtomicUsize,
    closed: AtomicBool,
}

/// A connection taken from the pool; it goes back when dropped.
pub(crate) struct Conn<'a> {
    guard: tokio::sync::MutexGuard<'a, Option<Client>>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.guard
            .as_ref()
            .expect("a pooled connection is present while taken")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.guard
            .as_mut()
            .expect("a pooled connection is present while taken")
    }
}

impl Pool {
    async fn connect(&self) -> Result<Client> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| Error::Unavailable(format!("failed to connect to postgres: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection ended");
            }
        });
        Ok(client)
    }

    async fn get(&self) -> Result<Conn<'_>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Unavailable("store is closed".into()));
        }
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut guard = None;
        for i in 0..n {
            if let Ok(g) = self.slots[(start + i) % n].try_lock() {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            None => self.slots[start % n].lock().await,
        };
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Unavailable("store is closed".into()));
        }
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(self.connect().await?);
        }
        Ok(Conn { guard })
    }
}

impl PgStore {
    /// Connects, applies pending migrations (under an advisory lock, so processes starting
    /// together apply each once) and opens the pool. `Unavailable` when the database
    /// cannot be reached or its schema is newer than this build.
    pub async fn connect(config: &PgConfig) -> Result<PgStore> {
        if config.url.trim().is_empty() {
            return Err(Error::Invalid("postgres url is empty".into()));
        }
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| Error::Invalid(format!("invalid postgres url: {e}")))?;
        if pg.get_password().is_some() {
            return Err(Error::Invalid(
                "the postgres url must not carry a password; give it from a file or the environment"
                    .into(),
            ));
        }
        if let Some(password) = &config.password {
            pg.password(password.as_bytes());
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        pg.application_name("citysec");
        let size = config.pool_size.max(1);
        let pool = Pool {
            config: pg,
            slots: (0..size).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        };
        let store = PgStore {
            inner: Arc::new(pool),
        };
        {
            let mut conn = store.conn().await?;
            migrate(&mut conn).await?;
        }
        Ok(store)
    }

    pub(crate) async fn conn(&self) -> Result<Conn<'_>> {
        self.inner.get().await
    }
}

async fn migrate(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_MIGRATIONS])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS citysec_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(pg_err)?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM citysec_migrations",
            &[],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(Error::Unavailable(format!(
            "database schema version {current} is newer than this build knows ({known})"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| Error::Internal(format!("migration {name} failed: {}", describe(&e))))?;
        tx.execute(
            "INSERT INTO citysec_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(pg_err)?;
        tracing::debug!(migration = name, "applied store migration");
    }
    tx.commit().await.map_err(pg_err)
}

/// The server's message when there is one (tokio-postgres's own text is only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

pub(crate) fn pg_err(e: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let unavailable = [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
        ];
        if unavailable.contains(code) || code.code().starts_with("08") {
            return Error::Unavailable(describe(&e));
        }
        return Error::Internal(describe(&e));
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        Error::Unavailable(e.to_string())
    } else {
        Error::Internal(e.to_string())
    }
}

pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

pub(crate) fn is_foreign_key_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
}

pub(crate) use crate::embedded::{from_json, limit_of, to_json};

/// A query parameter of a dynamically built statement.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// Builds `WHERE a AND b ...` with `$n` placeholders from the conditions that apply; each
/// condition names its one parameter as `?`.
#[derive(Default)]
pub(crate) struct Filter {
    conditions: Vec<String>,
    pub(crate) params: Vec<Param>,
}

impl Filter {
    pub(crate) fn add(&mut self, condition: &str, value: Param) {
        self.params.push(value);
        self.conditions
            .push(condition.replacen('?', &format!("${}", self.params.len()), 1));
    }

    /// A condition without a parameter.
    pub(crate) fn push(&mut self, condition: &str) {
        self.conditions.push(condition.to_owned());
    }

    pub(crate) fn sql(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        }
    }

    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        params_ref(&self.params)
    }
}

pub(crate) fn params_ref(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Runs a query whose first column is a JSON body and decodes each row.
pub(crate) async fn query_bodies<T: serde::de::DeserializeOwned>(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<T>> {
    let rows = client.query(sql, params).await.map_err(pg_err)?;
    rows.iter()
        .map(|row| from_json(row.try_get::<_, &str>(0).map_err(pg_err)?))
        .collect()
}

/// Keeps the last of each key, in first-seen order: one statement may not touch a row
/// twice, while the embedded store applies repeats in turn (the last one wins).
pub(crate) fn last_per_key<T, K: Eq + std::hash::Hash>(
    items: Vec<T>,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let mut index: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        match index.entry(key(&item)) {
            std::collections::hash_map::Entry::Occupied(slot) => out[*slot.get()] = item,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(out.len());
                out.push(item);
            }
        }
    }
    out
}

const UPSERT_DEVICES: &str = "INSERT INTO devices (id, sector, class, zone, status, body) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
     ON CONFLICT (id) DO UPDATE SET sector = excluded.sector, class = excluded.class, \
     zone = excluded.zone, status = excluded.status, body = excluded.body";

#[async_trait]
impl Store for PgStore {
    async fn insert_device(&self, device: &Device) -> Result<()> {
        let body = to_json(device)?;
        let conn = self.conn().await?;
        match conn
            .execute(
                "INSERT INTO devices (id, sector, class, zone, status, body) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &device.id.as_str(),
                    &device.sector.as_str(),
                    &device.class.as_str(),
                    &device.zone,
                    &device.status.as_str(),
                    &body,
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict {
                what: format!("device {}", device.id),
            }),
            Err(e) => Err(pg_err(e)),
        }
    }

    async fn upsert_devices(&self, devices: &[Device]) -> Result<()> {
        if devices.is_empty() {
            return Ok(());
        }
        let devices = last_per_key(devices.iter().collect(), |d| d.id.as_str());
        let mut cols: [Vec<String>; 6] = Default::default();
        for d in devices {
            cols[0].push(d.id.as_str().to_owned());
            cols[1].push(d.sector.as_str().to_owned());
            cols[2].push(d.class.as_str().to_owned());
            cols[3].push(d.zone.clone());
            cols[4].push(d.status.as_str().to_owned());
            cols[5].push(to_json(d)?);
        }
        let conn = self.conn().await?;
        conn.execute(
            UPSERT_DEVICES,
            &[&cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5]],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn get_device(&self, id: &DeviceId) -> Result<Option<Device>> {
        let conn = self.conn().await?;
        let mut found = query_bodies(
            &conn,
            "SELECT body FROM devices WHERE id = $1",
            &[&id.as_str()],
        )
        .await?;
        Ok(found.pop())
    }

    async fn list_devices(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        let mut filter = Filter::default();
        if let Some(sector) = query.sector {
            filter.add("sector = ?", Box::new(sector.as_str()));
        }
        if let Some(class) = query.class {
            filter.add("class = ?", Box::new(class.as_str()));
        }
        if let Some(zone) = &query.zone {
            filter.add("zone = ?", Box::new(zone.clone()));
        }
        if let Some(status) = query.status {
            filter.add("status = ?", Box::new(status.as_str()));
        }
        if let Some(after) = &query.after {
            filter.add("id > ?", Box::new(after.as_str().to_owned()));
        }
        let sql = format!(
            "SELECT body FROM devices {} ORDER BY id LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        let conn = self.conn().await?;
        query_bodies(&conn, &sql, &filter.refs()).await
    }

    async fn set_device_status(&self, id: &DeviceId, status: DeviceStatus) -> Result<()> {
        let conn = self.conn().await?;
        let changed = conn
            .execute(
                "UPDATE devices SET status = $2, \
                 body = jsonb_set(body::jsonb, '{status}', to_jsonb($2::text))::text \
                 WHERE id = $1",
                &[&id.as_str(), &status.as_str()],
            )
            .await
            .map_err(pg_err)?;
        if changed == 0 {
            return Err(Error::NotFound {
                what: format!("device {id}"),
            });
        }
        Ok(())
    }

    async fn append_events(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut ts = Vec::with_capacity(events.len());
        let mut device = Vec::with_capacity(events.len());
        let mut kind = Vec::with_capacity(events.len());
        let mut sector = Vec::with_capacity(events.len());
        let mut body = Vec::with_capacity(events.len());
        let mut digest = Vec::with_capacity(events.len());
        for event in events {
            ts.push(event.ts.as_millis());
            device.push(event.device_id.as_ref().map(|id| id.as_str()));
            kind.push(event.kind_name());
            sector.push(event.sector.map(|s| s.as_str()));
            let text = to_json(event)?;
            digest.push(Sha256::digest(text.as_bytes()).to_vec());
            body.push(text);
        }
        let conn = self.conn().await?;
        // One statement, one round trip; ids follow the order given. An event already
        // stored (the same document: a redelivery) is skipped.
        conn.execute(
            "INSERT INTO events (ts, device_id, kind, sector, body, digest) \
             SELECT ts, device_id, kind, sector, body, digest FROM unnest($1::bigint[], \
             $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[]) WITH ORDINALITY \
             AS u(ts, device_id, kind, sector, body, digest, n) ORDER BY n \
             ON CONFLICT (digest) DO NOTHING",
            &[&ts, &device, &kind, &sector, &body, &digest],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let mut filter = Filter::default();
        if let Some(device_id) = &query.device_id {
            filter.add("device_id = ?", Box::new(device_id.as_str().to_owned()));
        }
        if let Some(kind) = &query.kind {
            filter.add("kind = ?", Box::new(kind.clone()));
        }
        if let Some(before) = query.before {
            filter.add("ts < ?", Box::new(before.as_millis()));
        }
        if let Some(since) = query.since {
            filter.add("ts >= ?", Box::new(since.as_millis()));
        }
        let sql = format!(
            "SELECT body FROM events {} ORDER BY ts DESC, id DESC LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        let conn = self.conn().await?;
        query_bodies(&conn, &sql, &filter.refs()).await
    }

    async fn prune_events(&self, cutoff: Timestamp) -> Result<u64> {
        let mut total = 0u64;
        loop {
            // One chunk per statement, so other writers get in between chunks.
            let deleted = {
                let conn = self.conn().await?;
                conn.execute(
                    "DELETE FROM events WHERE id IN \
                     (SELECT id FROM events WHERE ts < $1 LIMIT $2)",
                    &[&cutoff.as_millis(), &PRUNE_CHUNK],
                )
                .await
                .map_err(pg_err)?
            };
            total += deleted;
            if (deleted as i64) < PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }

    async fn upsert_alerts(&self, alerts: &[Alert]) -> Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let alerts = last_per_key(alerts.iter().collect(), |a| a.id.0.as_str());
        let mut id = Vec::with_capacity(alerts.len());
        let mut ts = Vec::with_capacity(alerts.len());
        let mut rule = Vec::with_capacity(alerts.len());
        let mut severity = Vec::with_capacity(alerts.len());
        let mut device = Vec::with_capacity(alerts.len());
        let mut body = Vec::with_capacity(alerts.len());
        for alert in alerts {
            id.push(alert.id.0.as_str());
            ts.push(alert.ts.as_millis());
            rule.push(alert.rule.as_str());
            severity.push(alert.severity.as_str());
            device.push(alert.device_id.as_ref().map(|d| d.as_str()));
            body.push(to_json(alert)?);
        }
        let conn = self.conn().await?;
        conn.execute(
            "INSERT INTO alerts (id, ts, rule, severity, device_id, body) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], \
             $5::text[], $6::text[]) \
             ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, rule = excluded.rule, \
             severity = excluded.severity, device_id = excluded.device_id, body = excluded.body \
             WHERE (excluded.body::jsonb->>'count')::bigint >= (alerts.body::jsonb->>'count')::bigint",
            &[&id, &ts, &rule, &severity, &device, &body],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn get_alert(&self, id: &AlertId) -> Result<Option<Alert>> {
        let conn = self.conn().await?;
        let mut found = query_bodies(
            &conn,
            "SELECT body FROM alerts WHERE id = $1",
            &[&id.0.as_str()],
        )
        .await?;
        Ok(found.pop())
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        let mut filter = Filter::default();
        if let Some(device_id) = &query.device_id {
            filter.add("device_id = ?", Box::new(device_id.as_str().to_owned()));
        }
        if let Some(rule) = &query.rule {
            filter.add("rule = ?", Box::new(rule.clone()));
        }
        if let Some(before) = query.before {
            filter.add("ts < ?", Box::new(before.as_millis()));
        }
        if let Some(since) = query.since {
            filter.add("ts >= ?", Box::new(since.as_millis()));
        }
        let sql = format!(
            "SELECT body FROM alerts {} ORDER BY ts DESC, id DESC LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        let conn = self.conn().await?;
        query_bodies(&conn, &sql, &filter.refs()).await
    }

    async fn insert_token(&self, token: &ApiToken) -> Result<()> {
        let conn = self.conn().await?;
        match conn
            .execute(
                "INSERT INTO api_tokens (sha256, name, role, created_at) VALUES ($1, $2, $3, $4)",
                &[
                    &token.sha256,
                    &token.name,
                    &token.role,
                    &token.created_at.as_millis(),
                ],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(Error::Conflict {
                what: format!("api token {}", token.name),
            }),
            Err(e) => Err(pg_err(e)),
        }
    }

    async fn find_token(&self, sha256: &str) -> Result<Option<ApiToken>> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT sha256, name, role, created_at FROM api_tokens WHERE sha256 = $1",
                &[&sha256],
            )
            .await
            .map_err(pg_err)?;
        row.map(|row| {
            Ok(ApiToken {
                sha256: row.try_get(0).map_err(pg_err)?,
                name: row.try_get(1).map_err(pg_err)?,
                role: row.try_get(2).map_err(pg_err)?,
                created_at: Timestamp::from_millis(row.try_get(3).map_err(pg_err)?),
            })
        })
        .transpose()
    }

    async fn ping(&self) -> Result<()> {
        let conn = self.conn().await?;
        conn.simple_query("SELECT 1").await.map_err(pg_err)?;
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM events), \
                 (SELECT count(*) FROM alerts)",
                &[],
            )
            .await
            .map_err(pg_err)?;
        let count =
            |i: usize| -> Result<u64> { Ok(row.try_get::<_, i64>(i).map_err(pg_err)? as u64) };
        Ok(StoreStats {
            devices: count(0)?,
            events: count(1)?,
            alerts: count(2)?,
        })
    }

    async fn close(&self) -> Result<()> {
        // Every committed statement is already durable on the server; closing drops the
        // connections once calls in flight have given theirs back.
        self.inner.closed.store(true, Ordering::Release);
        for slot in &self.inner.slots {
            slot.lock().await.take();
        }
        Ok(())
    }
}
