//! Tests for the embedded backend: the conformance suite plus embedded-only checks
//! (file layout, migrations, durability settings, the append benchmark).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::testsuite::{self, Backend};
use crate::{EmbeddedStore, EventQuery, Store};

/// A database file in a fresh temporary directory, removed when the test ends.
struct EmbeddedBackend {
    dir: tempfile::TempDir,
}

impl EmbeddedBackend {
    fn new() -> EmbeddedBackend {
        EmbeddedBackend {
            dir: tempfile::tempdir().expect("create temp dir"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("data").join("citysec.db")
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(EmbeddedStore::open(&self.path()).expect("open embedded store"))
    }
}

crate::testsuite!(async { EmbeddedBackend::new() });
crate::users_testsuite!(async { EmbeddedBackend::new() });
crate::intel_testsuite!(async { EmbeddedBackend::new() });

fn pragma(store_path: &std::path::Path, name: &str) -> String {
    let conn = rusqlite::Connection::open(store_path).unwrap();
    conn.query_row(&format!("PRAGMA {name}"), [], |row| {
        row.get::<_, rusqlite::types::Value>(0)
    })
    .map(|v| format!("{v:?}"))
    .unwrap()
}

#[tokio::test]
async fn open_creates_parent_dir_wal_and_schema_version() {
    let backend = EmbeddedBackend::new();
    let store = EmbeddedStore::open(&backend.path()).unwrap();
    assert!(backend.path().exists());
    assert_eq!(pragma(&backend.path(), "journal_mode"), "Text(\"wal\")");
    let latest = format!("Integer({})", crate::embedded::MIGRATIONS.len());
    assert_eq!(pragma(&backend.path(), "user_version"), latest);
    store.close().await.unwrap();
    // Reopening an up-to-date database applies nothing and keeps the version.
    let store = EmbeddedStore::open(&backend.path()).unwrap();
    assert_eq!(pragma(&backend.path(), "user_version"), latest);
    store.close().await.unwrap();
}

#[tokio::test]
async fn refuses_newer_schema() {
    let backend = EmbeddedBackend::new();
    EmbeddedStore::open(&backend.path())
        .unwrap()
        .close()
        .await
        .unwrap();
    rusqlite::Connection::open(backend.path())
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = EmbeddedStore::open(&backend.path()).unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn close_checkpoints_wal_and_later_calls_fail() {
    let backend = EmbeddedBackend::new();
    let store = EmbeddedStore::open(&backend.path()).unwrap();
    store
        .append_events(&[testsuite::telemetry(1, "pump-1", 1.0)])
        .await
        .unwrap();
    store.close().await.unwrap();
    let wal = backend.path().with_extension("db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "wal not checkpointed");
    let err = store.stats().await.unwrap_err();
    assert_eq!(err.code(), model::ErrorCode::Unavailable);
    // Closing twice is harmless.
    store.close().await.unwrap();
}

#[tokio::test]
async fn committed_events_survive_without_close() {
    // No close and no checkpoint: the next open must still see every appended event (what
    // a kill -9 leaves behind, short of power loss).
    let backend = EmbeddedBackend::new();
    let store = EmbeddedStore::open(&backend.path()).unwrap();
    let events: Vec<_> = (0..100)
        .map(|i| testsuite::telemetry(i, "pump-1", 0.0))
        .collect();
    store.append_events(&events).await.unwrap();
    std::mem::forget(store);
    let store = EmbeddedStore::open(&backend.path()).unwrap();
    let q = EventQuery {
        limit: 1_000,
        ..Default::default()
    };
    assert_eq!(store.list_events(&q).await.unwrap().len(), 100);
}

/// `RUN_SLOW_BENCHES=1 cargo test -p store --release benchmark_append -- --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_append() {
    if std::env::var_os("RUN_SLOW_BENCHES").is_none() {
        eprintln!("skipping benchmark_append: set RUN_SLOW_BENCHES=1");
        return;
    }
    let backend = EmbeddedBackend::new();
    let store = EmbeddedStore::open(&backend.path()).unwrap();
    // Realistic shape: time moves forward, 1,000 devices report in turn.
    let batches: Vec<Vec<_>> = (0..200i64)
        .map(|b| {
            (0..1_000i64)
                .map(|i| {
                    let ts = 1_700_000_000_000 + b * 1_000 + i;
                    testsuite::telemetry(ts, &format!("pump-{i:04}"), 1.5)
                })
                .collect()
        })
        .collect();
    let start = std::time::Instant::now();
    for batch in &batches {
        store.append_events(batch).await.unwrap();
    }
    let elapsed = start.elapsed();
    let total = batches.len() * 1_000;
    let rate = total as f64 / elapsed.as_secs_f64();
    eprintln!(
        "append_events: {total} events in batches of 1,000 in {elapsed:?} = {rate:.0} events/s"
    );
    store.close().await.unwrap();
}
