//! The embedded backend: one SQLite file (WAL mode) with one writer and one reader
//! connection; every call runs on tokio's blocking pool so async callers never block on IO.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use model::{Alert, AlertId, Device, DeviceId, DeviceStatus, Event, Timestamp};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

use crate::{AlertQuery, ApiToken, DeviceQuery, Error, EventQuery, Result, Store, StoreStats};

mod advisory;
mod console;
mod detect;
mod gateway;
mod intel;
mod limits;
mod users;

/// The most rows one list call returns.
pub const MAX_LIMIT: usize = 10_000;

/// How many events one `prune_events` transaction deletes.
const PRUNE_CHUNK: i64 = 5_000;

/// Migrations in order; entry `i` moves the schema to `user_version = i + 1`.
pub(crate) const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    ("0002_detect", include_str!("../migrations/0002_detect.sql")),
    ("0003_taxii", include_str!("../migrations/0003_taxii.sql")),
    (
        "0004_advisories",
        include_str!("../migrations/0004_advisories.sql"),
    ),
    (
        "0005_gateway",
        include_str!("../migrations/0005_gateway.sql"),
    ),
    (
        "0007_incidents",
        include_str!("../migrations/0007_incidents.sql"),
    ),
    (
        "0009_rate_limits",
        include_str!("../migrations/0009_rate_limits.sql"),
    ),
    (
        "0010_exercises",
        include_str!("../migrations/0010_exercises.sql"),
    ),
    (
        "0011_console",
        include_str!("../migrations/0011_console.sql"),
    ),
    (
        "0012_command_devices",
        include_str!("../migrations/0012_command_devices.sql"),
    ),
    (
        "0013_learned",
        include_str!("../migrations/0013_learned.sql"),
    ),
];

/// The embedded SQLite store.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<Connection>>,
    reader: Mutex<Option<Connection>>,
    checkpointer: Mutex<Option<Checkpointer>>,
}

/// How often the background thread checkpoints the WAL into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// The writer's own automatic checkpoint threshold, in pages: a backstop only, since the
/// background checkpointer normally keeps the WAL far smaller.
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// A thread that runs passive checkpoints on its own connection, so checkpoint page copies
/// and fsyncs mostly stay off the writer's path (no long stall inside an append).
/// Measured with `benchmark_append`: default autocheckpoint ~48-80k events/s; writer
/// autocheckpoint at 16,384 pages ~97-100k; plus this thread ~109-120k. Dropping `stop`
/// ends it.
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::Unavailable(format!("failed to open {}: {e}", path.display())))?;
        configure(&conn)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "store checkpoint failed");
                    }
                }
            })
            .map_err(|e| Error::Unavailable(format!("failed to start checkpoint thread: {e}")))?;
        Ok(Checkpointer { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database at `path` and its parent directory, and
    /// applies pending migrations. This does blocking IO; call it before serving or from
    /// `spawn_blocking`.
    pub fn open(path: &Path) -> Result<EmbeddedStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::Unavailable(format!("failed to create {}: {e}", parent.display()))
            })?;
        }
        let mut writer = Connection::open(path)
            .map_err(|e| Error::Unavailable(format!("failed to open {}: {e}", path.display())))?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Unavailable(format!(
                "failed to enable WAL mode on {} (got {mode})",
                path.display()
            )));
        }
        configure(&writer)?;
        writer
            .pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .map_err(db_err)?;
        migrate(&mut writer)?;

        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::Unavailable(format!("failed to open {}: {e}", path.display())))?;
        configure(&reader)?;
        let checkpointer = Checkpointer::start(path)?;

        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(Some(writer)),
                reader: Mutex::new(Some(reader)),
                checkpointer: Mutex::new(Some(checkpointer)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        run_blocking(move || with_conn(&inner.writer, f)).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        run_blocking(move || with_conn(&inner.reader, f)).await
    }
}

async fn run_blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("store task failed: {e}")))?
}

fn with_conn<T>(
    slot: &Mutex<Option<Connection>>,
    f: impl FnOnce(&mut Connection) -> Result<T>,
) -> Result<T> {
    let mut guard = slot
        .lock()
        .map_err(|_| Error::Internal("store connection lock poisoned".into()))?;
    let conn = guard
        .as_mut()
        .ok_or_else(|| Error::Unavailable("store is closed".into()))?;
    f(conn)
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(db_err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(db_err)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(Error::Unavailable(format!(
            "database schema version {current} is newer than this build knows ({known})"
        )));
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(db_err)?;
        tx.execute_batch(sql)
            .map_err(|e| Error::Internal(format!("migration {name} failed: {e}")))?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        tracing::debug!(migration = name, "applied store migration");
    }
    Ok(())
}

fn db_err(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        // A full disk, a read-only or vanished file and IO errors are the store being
        // unavailable (callers refuse what needs it), not a bug.
        Some(
            rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked
            | rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::ReadOnly
            | rusqlite::ErrorCode::SystemIoFailure
            | rusqlite::ErrorCode::CannotOpen,
        ) => Error::Unavailable(e.to_string()),
        _ => Error::Internal(e.to_string()),
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("failed to encode: {e}")))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("failed to decode row: {e}")))
}

pub(crate) fn limit_of(limit: usize) -> i64 {
    (if limit == 0 {
        MAX_LIMIT
    } else {
        limit.min(MAX_LIMIT)
    }) as i64
}

/// A device as stored: its filter columns and its JSON document.
struct DeviceRow {
    id: String,
    sector: &'static str,
    class: &'static str,
    zone: String,
    status: &'static str,
    body: String,
}

impl DeviceRow {
    fn new(device: &Device) -> Result<DeviceRow> {
        Ok(DeviceRow {
            id: device.id.as_str().to_owned(),
            sector: device.sector.as_str(),
            class: device.class.as_str(),
            zone: device.zone.clone(),
            status: device.status.as_str(),
            body: to_json(device)?,
        })
    }
}

struct EventRow {
    ts: i64,
    device_id: Option<String>,
    kind: &'static str,
    sector: Option<&'static str>,
    body: String,
}

struct AlertRow {
    id: String,
    ts: i64,
    rule: String,
    severity: &'static str,
    device_id: Option<String>,
    body: String,
}

const INSERT_DEVICE: &str =
    "INSERT INTO devices (id, sector, class, zone, status, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const UPSERT_DEVICE: &str = "INSERT INTO devices (id, sector, class, zone, status, body) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET sector = excluded.sector, \
     class = excluded.class, zone = excluded.zone, status = excluded.status, body = excluded.body";
const INSERT_EVENT: &str =
    "INSERT INTO events (ts, device_id, kind, sector, body) VALUES (?1, ?2, ?3, ?4, ?5)";
const UPSERT_ALERT: &str = "INSERT INTO alerts (id, ts, rule, severity, device_id, body) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO UPDATE SET ts = excluded.ts, \
     rule = excluded.rule, severity = excluded.severity, device_id = excluded.device_id, \
     body = excluded.body \
     WHERE json_extract(excluded.body, '$.count') >= json_extract(alerts.body, '$.count')";

/// Builds `WHERE a AND b ...` from the conditions that apply.
#[derive(Default)]
struct Filter {
    conditions: Vec<&'static str>,
    params: Vec<SqlValue>,
}

impl Filter {
    fn add(&mut self, condition: &'static str, value: SqlValue) {
        self.conditions.push(condition);
        self.params.push(value);
    }

    fn sql(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        }
    }
}

fn query_bodies<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: Vec<SqlValue>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(params), |row| row.get::<_, String>(0))
        .map_err(db_err)?;
    let mut out = Vec::new();
    for body in rows {
        out.push(from_json(&body.map_err(db_err)?)?);
    }
    Ok(out)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn insert_device(&self, device: &Device) -> Result<()> {
        let row = DeviceRow::new(device)?;
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(INSERT_DEVICE).map_err(db_err)?;
            match stmt.execute(params![
                row.id, row.sector, row.class, row.zone, row.status, row.body
            ]) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(Error::Conflict {
                    what: format!("device {}", row.id),
                }),
                Err(e) => Err(db_err(e)),
            }
        })
        .await
    }

    async fn upsert_devices(&self, devices: &[Device]) -> Result<()> {
        if devices.is_empty() {
            return Ok(());
        }
        let rows = devices
            .iter()
            .map(DeviceRow::new)
            .collect::<Result<Vec<_>>>()?;
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            {
                let mut stmt = tx.prepare_cached(UPSERT_DEVICE).map_err(db_err)?;
                for row in &rows {
                    stmt.execute(params![
                        row.id, row.sector, row.class, row.zone, row.status, row.body
                    ])
                    .map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn get_device(&self, id: &DeviceId) -> Result<Option<Device>> {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM devices WHERE id = ?1")
                .map_err(db_err)?;
            let body: Option<String> = stmt
                .query_row([id], |row| row.get(0))
                .optional()
                .map_err(db_err)?;
            body.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn list_devices(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        let mut filter = Filter::default();
        if let Some(sector) = query.sector {
            filter.add("sector = ?", sector.as_str().to_owned().into());
        }
        if let Some(class) = query.class {
            filter.add("class = ?", class.as_str().to_owned().into());
        }
        if let Some(zone) = &query.zone {
            filter.add("zone = ?", zone.clone().into());
        }
        if let Some(status) = query.status {
            filter.add("status = ?", status.as_str().to_owned().into());
        }
        if let Some(after) = &query.after {
            filter.add("id > ?", after.as_str().to_owned().into());
        }
        let sql = format!(
            "SELECT body FROM devices {} ORDER BY id LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        self.read(move |conn| query_bodies(conn, &sql, filter.params))
            .await
    }

    async fn set_device_status(&self, id: &DeviceId, status: DeviceStatus) -> Result<()> {
        let id = id.as_str().to_owned();
        self.write(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE devices SET status = ?2, body = json_set(body, '$.status', ?2) \
                     WHERE id = ?1",
                )
                .map_err(db_err)?;
            let changed = stmt.execute(params![id, status.as_str()]).map_err(db_err)?;
            if changed == 0 {
                return Err(Error::NotFound {
                    what: format!("device {id}"),
                });
            }
            Ok(())
        })
        .await
    }

    async fn append_events(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let rows = events
            .iter()
            .map(|event| {
                Ok(EventRow {
                    ts: event.ts.as_millis(),
                    device_id: event.device_id.as_ref().map(|id| id.as_str().to_owned()),
                    kind: event.kind_name(),
                    sector: event.sector.map(|s| s.as_str()),
                    body: to_json(event)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            {
                let mut stmt = tx.prepare_cached(INSERT_EVENT).map_err(db_err)?;
                for row in &rows {
                    stmt.execute(params![
                        row.ts,
                        row.device_id,
                        row.kind,
                        row.sector,
                        row.body
                    ])
                    .map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let mut filter = Filter::default();
        if let Some(device_id) = &query.device_id {
            filter.add("device_id = ?", device_id.as_str().to_owned().into());
        }
        if let Some(kind) = &query.kind {
            filter.add("kind = ?", kind.clone().into());
        }
        if let Some(before) = query.before {
            filter.add("ts < ?", before.as_millis().into());
        }
        if let Some(since) = query.since {
            filter.add("ts >= ?", since.as_millis().into());
        }
        let sql = format!(
            "SELECT body FROM events {} ORDER BY ts DESC, id DESC LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        self.read(move |conn| query_bodies(conn, &sql, filter.params))
            .await
    }

    async fn prune_events(&self, cutoff: Timestamp) -> Result<u64> {
        let mut total = 0u64;
        loop {
            // One chunk per transaction, so other writers get in between chunks.
            let deleted = self
                .write(move |conn| {
                    let mut stmt = conn
                        .prepare_cached(
                            "DELETE FROM events WHERE id IN \
                             (SELECT id FROM events WHERE ts < ?1 LIMIT ?2)",
                        )
                        .map_err(db_err)?;
                    stmt.execute(params![cutoff.as_millis(), PRUNE_CHUNK])
                        .map_err(db_err)
                })
                .await?;
            total += deleted as u64;
            if (deleted as i64) < PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }

    async fn upsert_alerts(&self, alerts: &[Alert]) -> Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let rows = alerts
            .iter()
            .map(|alert| {
                Ok(AlertRow {
                    id: alert.id.0.clone(),
                    ts: alert.ts.as_millis(),
                    rule: alert.rule.clone(),
                    severity: alert.severity.as_str(),
                    device_id: alert.device_id.as_ref().map(|id| id.as_str().to_owned()),
                    body: to_json(alert)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            {
                let mut stmt = tx.prepare_cached(UPSERT_ALERT).map_err(db_err)?;
                for row in &rows {
                    stmt.execute(params![
                        row.id,
                        row.ts,
                        row.rule,
                        row.severity,
                        row.device_id,
                        row.body
                    ])
                    .map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn get_alert(&self, id: &AlertId) -> Result<Option<Alert>> {
        let id = id.0.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM alerts WHERE id = ?1")
                .map_err(db_err)?;
            let body: Option<String> = stmt
                .query_row([id], |row| row.get(0))
                .optional()
                .map_err(db_err)?;
            body.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        let mut filter = Filter::default();
        if let Some(device_id) = &query.device_id {
            filter.add("device_id = ?", device_id.as_str().to_owned().into());
        }
        if let Some(rule) = &query.rule {
            filter.add("rule = ?", rule.clone().into());
        }
        if let Some(before) = query.before {
            filter.add("ts < ?", before.as_millis().into());
        }
        if let Some(since) = query.since {
            filter.add("ts >= ?", since.as_millis().into());
        }
        let sql = format!(
            "SELECT body FROM alerts {} ORDER BY ts DESC, id DESC LIMIT {}",
            filter.sql(),
            limit_of(query.limit)
        );
        self.read(move |conn| query_bodies(conn, &sql, filter.params))
            .await
    }

    async fn insert_token(&self, token: &ApiToken) -> Result<()> {
        let token = token.clone();
        self.write(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO api_tokens (sha256, name, role, created_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db_err)?;
            match stmt.execute(params![
                token.sha256,
                token.name,
                token.role,
                token.created_at.as_millis()
            ]) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(Error::Conflict {
                    what: format!("api token {}", token.name),
                }),
                Err(e) => Err(db_err(e)),
            }
        })
        .await
    }

    async fn find_token(&self, sha256: &str) -> Result<Option<ApiToken>> {
        let sha256 = sha256.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT sha256, name, role, created_at FROM api_tokens WHERE sha256 = ?1",
                )
                .map_err(db_err)?;
            stmt.query_row([sha256], |row| {
                Ok(ApiToken {
                    sha256: row.get(0)?,
                    name: row.get(1)?,
                    role: row.get(2)?,
                    created_at: Timestamp::from_millis(row.get(3)?),
                })
            })
            .optional()
            .map_err(db_err)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.read(|conn| {
            conn.query_row(
                "SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM events), \
                 (SELECT count(*) FROM alerts)",
                [],
                |row| {
                    Ok(StoreStats {
                        devices: row.get::<_, i64>(0)? as u64,
                        events: row.get::<_, i64>(1)? as u64,
                        alerts: row.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .map_err(db_err)
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        let inner = self.inner.clone();
        run_blocking(move || {
            let checkpointer = inner
                .checkpointer
                .lock()
                .map_err(|_| Error::Internal("store checkpointer lock poisoned".into()))?
                .take();
            if let Some(checkpointer) = checkpointer {
                checkpointer.stop();
            }
            if let Some(reader) = take(&inner.reader)? {
                reader.close().map_err(|(_, e)| db_err(e))?;
            }
            if let Some(writer) = take(&inner.writer)? {
                writer
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .map_err(db_err)?;
                writer.close().map_err(|(_, e)| db_err(e))?;
            }
            Ok(())
        })
        .await
    }
}

fn take(slot: &Mutex<Option<Connection>>) -> Result<Option<Connection>> {
    Ok(slot
        .lock()
        .map_err(|_| Error::Internal("store connection lock poisoned".into()))?
        .take())
}
