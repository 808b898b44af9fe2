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

/// The same suites against a real PostgreSQL (feature `postgres`): one server per test
/// process (`testsuite::server`), one fresh database per test.
#[cfg(feature = "postgres")]
mod postgres {
    use std::sync::Arc;

    use async_trait::async_trait;

    use crate::testsuite::server::TestPostgres;
    use crate::testsuite::{self, Backend};
    use crate::{EventQuery, PgStore, Store};

    struct PgBackend {
        server: &'static TestPostgres,
        db: String,
    }

    impl PgBackend {
        async fn new() -> Option<PgBackend> {
            let server = TestPostgres::shared()?;
            Some(PgBackend {
                server,
                db: server.create_database().await,
            })
        }
    }

    #[async_trait]
    impl Backend for PgBackend {
        async fn open(&self) -> Arc<dyn Store> {
            Arc::new(
                PgStore::connect(&self.server.config(&self.db))
                    .await
                    .expect("connect the postgres store"),
            )
        }
    }

    crate::testsuite!(optional PgBackend::new());
    crate::users_testsuite!(optional PgBackend::new());
    crate::intel_testsuite!(optional PgBackend::new());

    /// A client of database `db` as the test superuser, for checks behind the store's back.
    async fn admin(server: &TestPostgres, db: &str) -> tokio_postgres::Client {
        let mut config: tokio_postgres::Config = server.url(db).parse().unwrap();
        config.password(server.password().as_bytes());
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    #[tokio::test]
    async fn migrations_are_recorded_and_a_newer_schema_is_refused() {
        let Some(server) = TestPostgres::shared() else {
            return;
        };
        let (db, store) = server.fresh_store().await;
        store.close().await.unwrap();
        let client = admin(server, &db).await;
        let versions: Vec<i32> = client
            .query(
                "SELECT version FROM citysec_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected: Vec<i32> = crate::postgres::MIGRATIONS.iter().map(|m| m.0).collect();
        assert_eq!(versions, expected);
        // Reconnecting applies nothing more.
        PgStore::connect(&server.config(&db)).await.unwrap();
        let n: i64 = client
            .query_one("SELECT count(*) FROM citysec_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n as usize, expected.len());
        client
            .execute(
                "INSERT INTO citysec_migrations (version, name) VALUES (99, 'future')",
                &[],
            )
            .await
            .unwrap();
        let err = PgStore::connect(&server.config(&db)).await.unwrap_err();
        assert_eq!(err.code(), model::ErrorCode::Unavailable, "{err}");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[tokio::test]
    async fn passwords_stay_out_of_urls_and_a_wrong_one_is_refused() {
        let Some(server) = TestPostgres::shared() else {
            return;
        };
        let db = server.create_database().await;
        let mut config = server.config(&db);
        config.url = format!(
            "postgres://citysec:{}@127.0.0.1:{}/{db}",
            server.password(),
            server.port()
        );
        let err = PgStore::connect(&config).await.unwrap_err();
        assert_eq!(err.code(), model::ErrorCode::Invalid, "{err}");
        assert!(
            err.to_string().contains("must not carry a password"),
            "{err}"
        );

        let mut config = server.config(&db);
        config.password = Some("not-the-password".into());
        let err = PgStore::connect(&config).await.unwrap_err();
        assert_eq!(err.code(), model::ErrorCode::Unavailable, "{err}");
        let mut config = server.config(&db);
        config.password = None;
        let err = PgStore::connect(&config).await.unwrap_err();
        assert_eq!(err.code(), model::ErrorCode::Unavailable, "{err}");
    }

    #[tokio::test]
    async fn the_audit_log_is_append_only_and_tampering_is_named() {
        use crate::audit::{AuditEntry, AuditStore};
        let Some(server) = TestPostgres::shared() else {
            return;
        };
        let (db, store) = server.fresh_store().await;
        let entries: Vec<AuditEntry> = (1..=5)
            .map(|i| AuditEntry {
                ts: model::Timestamp::from_millis(1_790_000_000_000 + i),
                actor: "alice".into(),
                action: "command.requested".into(),
                subject: Some(format!("cmd-{i}")),
                outcome: "ok".into(),
                detail: serde_json::json!({"devices": ["siren-1"]}),
            })
            .collect();
        store.append_audit(&entries).await.unwrap();
        assert!(store.verify_audit().await.unwrap().is_intact());
        let client = admin(server, &db).await;
        for sql in [
            "UPDATE audit SET actor = 'mallory' WHERE seq = 3",
            "DELETE FROM audit WHERE seq = 3",
            "TRUNCATE audit",
        ] {
            let err = client.execute(sql, &[]).await.unwrap_err();
            let text = err.as_db_error().map(|d| d.message().to_owned()).unwrap();
            assert!(text.contains("append-only"), "{sql}: {text}");
        }
        // A superuser can drop the trigger; the chain still tells.
        client
            .batch_execute(
                "ALTER TABLE audit DISABLE TRIGGER audit_no_change; \
                 UPDATE audit SET body = replace(body, '\"alice\"', '\"mallory\"') WHERE seq = 3;",
            )
            .await
            .unwrap();
        let report = store.verify_audit().await.unwrap();
        let broken = report.broken.expect("tampering detected");
        assert_eq!(broken.seq, 3);
        assert!(
            broken.reason.contains("does not match its hash"),
            "{broken:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_share_one_chain_one_counter_and_one_clock() {
        use crate::audit::{AuditEntry, AuditStore, GatewayStore};
        use crate::intel::{IntelObject, IntelStore};
        let Some(server) = TestPostgres::shared() else {
            return;
        };
        let db = server.create_database().await;
        // Two pools on one database: what two citysec processes are.
        let a = PgStore::connect(&server.config(&db)).await.unwrap();
        let b = PgStore::connect(&server.config(&db)).await.unwrap();
        let device = model::DeviceId::new("siren-1").unwrap();
        let mut tasks = Vec::new();
        for (p, store) in [a.clone(), b.clone()].into_iter().enumerate() {
            let device = device.clone();
            tasks.push(tokio::spawn(async move {
                let mut counters = Vec::new();
                let mut added = Vec::new();
                for i in 0..40 {
                    let entry = AuditEntry {
                        ts: model::Timestamp::from_millis(i),
                        actor: format!("p{p}"),
                        action: "command.requested".into(),
                        subject: None,
                        outcome: "ok".into(),
                        detail: serde_json::Value::Null,
                    };
                    store.append_audit(&[entry.clone(), entry]).await.unwrap();
                    counters.extend(
                        store
                            .next_command_counters(std::slice::from_ref(&device), 0)
                            .await
                            .unwrap(),
                    );
                    let id = format!("indicator--00000000-0000-4000-8000-{p:06}{i:06}");
                    let object = IntelObject {
                        body: format!(r#"{{"id":"{id}"}}"#),
                        id,
                        object_type: "indicator".into(),
                        version: "v1".into(),
                        version_us: 1,
                        spec_version: "2.1".into(),
                        tlp: 0,
                    };
                    // Every writer claims the same instant: the clock must still advance.
                    let got = store.intel_add("shared", &[object], 1_000).await.unwrap();
                    added.push(got[0].date_added_us);
                }
                (counters, added)
            }));
        }
        let mut counters = Vec::new();
        let mut added = Vec::new();
        for task in tasks {
            let (c, d) = task.await.unwrap();
            counters.extend(c);
            added.extend(d);
        }
        let report = a.verify_audit().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.records, 160);
        counters.sort_unstable();
        assert_eq!(
            counters,
            (1..=80).collect::<Vec<u64>>(),
            "counters are unique"
        );
        added.sort_unstable();
        added.dedup();
        assert_eq!(added.len(), 80, "every write got its own date_added");
    }

    #[tokio::test]
    async fn a_redelivered_event_is_stored_once() {
        let Some(server) = TestPostgres::shared() else {
            return;
        };
        let (_db, store) = server.fresh_store().await;
        let events: Vec<_> = (0..50)
            .map(|i| testsuite::telemetry(i, "pump-1", 1.0))
            .collect();
        store.append_events(&events).await.unwrap();
        // The same events again (a bus redelivering after a crash), some twice in a batch.
        let mut again = events[20..].to_vec();
        again.extend_from_slice(&events[40..]);
        again.push(testsuite::telemetry(50, "pump-1", 1.0));
        store.append_events(&again).await.unwrap();
        let listed = store
            .list_events(&EventQuery {
                limit: 1_000,
                ..Default::default()
            })
            .await
            .unwrap();
        let ts: Vec<i64> = listed.iter().map(|e| e.ts.as_millis()).collect();
        assert_eq!(ts, (0..=50).rev().collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn connections_that_drop_are_replaced() {
        let Some(server) = TestPostgres::shared() else {
            return;
        };
        let (db, store) = server.fresh_store().await;
        store
            .append_events(&[testsuite::telemetry(1, "pump-1", 1.0)])
            .await
            .unwrap();
        // The server ends every connection of the store (a restart or failover looks like
        // this to the client).
        let client = admin(server, &db).await;
        let killed: i64 = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND application_name = 'citysec'",
                &[&db],
            )
            .await
            .unwrap()
            .get(0);
        assert!(killed >= 1, "the store held a connection");
        // Calls on a dead connection fail as Unavailable (never as data errors); the
        // pool replaces dead connections, so the store recovers by itself.
        let mut recovered = false;
        for _ in 0..10 {
            match store.stats().await {
                Ok(stats) => {
                    assert_eq!(stats.events, 1);
                    recovered = true;
                    break;
                }
                Err(e) => assert_eq!(e.code(), model::ErrorCode::Unavailable, "{e}"),
            }
        }
        assert!(recovered, "the store did not reconnect");
    }

    /// `RUN_SLOW_BENCHES=1 cargo test -p store --features postgres --release \
    /// benchmark_append_postgres -- --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn benchmark_append_postgres() {
        if std::env::var_os("RUN_SLOW_BENCHES").is_none() {
            eprintln!("skipping benchmark_append_postgres: set RUN_SLOW_BENCHES=1");
            return;
        }
        // A server of its own with fsync on: what a deployment runs.
        let Some(server) = TestPostgres::start(true) else {
            return;
        };
        let (_db, store) = server.fresh_store().await;
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
        eprintln!(
            "postgres append_events: {total} events in batches of 1,000 in {elapsed:?} = {:.0} events/s",
            total as f64 / elapsed.as_secs_f64()
        );
        // Several writers at once (several store-writer processes of one deployment).
        for writers in [2usize, 4] {
            let (_db, store) = server.fresh_store().await;
            let store = Arc::new(store);
            let start = std::time::Instant::now();
            let mut tasks = Vec::new();
            for w in 0..writers {
                let store = store.clone();
                let mine: Vec<Vec<_>> = batches.iter().skip(w).step_by(writers).cloned().collect();
                tasks.push(tokio::spawn(async move {
                    for batch in &mine {
                        store.append_events(batch).await.unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let elapsed = start.elapsed();
            assert_eq!(store.stats().await.unwrap().events, total as u64);
            eprintln!(
                "postgres append_events, {writers} writers: {total} events in {elapsed:?} = {:.0} events/s",
                total as f64 / elapsed.as_secs_f64()
            );
        }
        store.close().await.unwrap();
    }

    /// Issue 9 ("Bad input": PostgreSQL going away and coming back). While the server is
    /// down (a fast shutdown, then an immediate one, as after a crash) every call answers
    /// `Unavailable` promptly (no hang, no panic), and once it is back the same `PgStore`
    /// works again without a restart: the pool replaces its broken connections, and what was
    /// written before the outage is still there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_are_unavailable_while_postgres_is_down_and_work_again_after() {
        use model::{Event, EventKind, Timestamp};
        let Some(mut server) = TestPostgres::start(false) else {
            return;
        };
        let db = server.create_database().await;
        let store = PgStore::connect(&server.config(&db)).await.unwrap();
        let event = |seq: i64| Event {
            ts: Timestamp::from_millis(seq),
            device_id: Some(model::DeviceId::new("pump-1").unwrap()),
            sector: None,
            kind: EventKind::Telemetry { readings: vec![] },
        };
        store.append_events(&[event(1)]).await.unwrap();
        // Use every pooled connection so each of them is broken by the outage.
        for _ in 0..8 {
            store.ping().await.unwrap();
        }
        for (round, crash) in [false, true].into_iter().enumerate() {
            server = tokio::task::spawn_blocking(move || {
                server.halt(crash);
                server
            })
            .await
            .unwrap();
            for _ in 0..6 {
                let started = std::time::Instant::now();
                let err = store.append_events(&[event(100)]).await.unwrap_err();
                assert!(matches!(err, crate::Error::Unavailable(_)), "{err}");
                let err = store.ping().await.unwrap_err();
                assert!(matches!(err, crate::Error::Unavailable(_)), "{err}");
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(15),
                    "answered in {:?}",
                    started.elapsed()
                );
            }
            server = tokio::task::spawn_blocking(move || {
                server.restart();
                server
            })
            .await
            .unwrap();
            // Every connection of the pool works again (each broken one is replaced on use).
            for _ in 0..8 {
                store.ping().await.unwrap();
            }
            store
                .append_events(&[event(2 + round as i64)])
                .await
                .unwrap();
        }
        let stored = store.list_events(&EventQuery::default()).await.unwrap();
        let mut seqs: Vec<i64> = stored.iter().map(|e| e.ts.as_millis()).collect();
        seqs.sort();
        assert_eq!(seqs, vec![1, 2, 3], "nothing from the outage, nothing lost");
        store.close().await.unwrap();
    }
}
