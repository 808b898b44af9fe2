//! The conformance checks of [`IntelStore`](crate::IntelStore): versions and their
//! first/last flags, `date_added` ordering and cursors, filters, TLP, deletes, statuses,
//! bookmarks and persistence. Invoked by [`intel_testsuite!`](crate::intel_testsuite).

use crate::intel::{IntelObject, IntelQuery, IntelStatus, IntelVersions};
use crate::testsuite::Backend;

/// Expands to one `#[tokio::test]` per intel conformance check.
#[macro_export]
macro_rules! intel_testsuite {
    // `optional EXPR`: EXPR yields an `Option` of a backend; `None` (a peer that is not
    // installed, and not required) makes every check return at once.
    (optional $backend:expr) => {
        $crate::intel_testsuite!(@names $backend);
    };
    ($backend:expr) => {
        $crate::intel_testsuite!(@names async { ::std::option::Option::Some($backend.await) });
    };
    (@names $backend:expr) => {
        $crate::intel_testsuite!(@tests $backend;
            intel_versions_first_last,
            intel_paging_same_instant,
            intel_filters,
            intel_delete_refreshes_ends,
            intel_statuses_and_bookmarks,
            intel_count_since,
        );
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $name() {
                let ::std::option::Option::Some(backend) = $backend.await else {
                    return;
                };
                $crate::testsuite::intel::$name(&backend).await;
            }
        )*
    };
}

fn obj(id_n: u32, t: &str, version_us: i64, tlp: u8) -> IntelObject {
    let id = format!("{t}--00000000-0000-4000-8000-{id_n:012}");
    IntelObject {
        body: format!(r#"{{"type":"{t}","id":"{id}","v":{version_us}}}"#),
        id,
        object_type: t.to_owned(),
        version: format!("v{version_us}"),
        version_us,
        spec_version: "2.1".to_owned(),
        tlp,
    }
}

fn q(collection: &str) -> IntelQuery {
    IntelQuery {
        collection: collection.to_owned(),
        versions: IntelVersions {
            last: true,
            ..IntelVersions::default()
        },
        max_tlp: 3,
        limit: 100,
        with_body: true,
        ..IntelQuery::default()
    }
}

fn versions(records: &[crate::intel::IntelRecord]) -> Vec<i64> {
    records.iter().map(|r| r.version_us).collect()
}

pub async fn intel_versions_first_last(backend: &dyn Backend) {
    let store = backend.open().await;
    // Versions arrive out of order, in three writes.
    store
        .intel_add("c", &[obj(1, "indicator", 20, 0)], 1_000)
        .await
        .unwrap();
    store
        .intel_add("c", &[obj(1, "indicator", 10, 0)], 1_000)
        .await
        .unwrap();
    let added = store
        .intel_add(
            "c",
            &[obj(1, "indicator", 30, 0), obj(1, "indicator", 20, 0)],
            1_000,
        )
        .await
        .unwrap();
    assert_eq!(
        added
            .iter()
            .map(|a| (a.new, a.date_added_us))
            .collect::<Vec<_>>(),
        // The clock never goes back: each write is later than the one before; a version
        // already stored keeps its date_added.
        vec![(true, 1_002), (false, 1_000)]
    );
    let last = store.intel_query(&q("c")).await.unwrap();
    assert_eq!(versions(&last), vec![30]);
    let mut first = q("c");
    first.versions = IntelVersions {
        first: true,
        ..IntelVersions::default()
    };
    assert_eq!(
        versions(&store.intel_query(&first).await.unwrap()),
        vec![10]
    );
    let mut all = q("c");
    all.versions.all = true;
    // date_added order: 20 (1000), 10 (1001), 30 (1002).
    assert_eq!(
        versions(&store.intel_query(&all).await.unwrap()),
        vec![20, 10, 30]
    );
    let mut at = q("c");
    at.versions = IntelVersions {
        at: vec![10, 30],
        ..IntelVersions::default()
    };
    assert_eq!(
        versions(&store.intel_query(&at).await.unwrap()),
        vec![10, 30]
    );
    let mut other = q("other");
    other.versions.all = true;
    assert!(store.intel_query(&other).await.unwrap().is_empty());
}

pub async fn intel_paging_same_instant(backend: &dyn Backend) {
    let store = backend.open().await;
    let batch: Vec<IntelObject> = (0..25).rev().map(|i| obj(i, "indicator", 5, 0)).collect();
    store.intel_add("c", &batch, 7).await.unwrap();
    store
        .intel_add("c", &[obj(100, "malware", 5, 0)], 7)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut query = q("c");
    query.limit = 4;
    loop {
        let page = store.intel_query(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        query.after = Some((last.date_added_us, last.id.clone(), last.version_us));
        seen.extend(page.into_iter().map(|r| (r.date_added_us, r.id)));
    }
    assert_eq!(seen.len(), 26, "every record exactly once");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "in (date_added, id) order without repeats");
    assert!(seen[..25].iter().all(|(d, _)| *d == 7));
    assert_eq!(seen[25].0, 8);
}

pub async fn intel_filters(backend: &dyn Backend) {
    let store = backend.open().await;
    store
        .intel_add(
            "c",
            &[
                obj(1, "indicator", 1, 0),
                obj(2, "malware", 1, 1),
                obj(3, "indicator", 1, 4),
                obj(4, "sighting", 1, 2),
            ],
            100,
        )
        .await
        .unwrap();
    store
        .intel_add("c", &[obj(5, "indicator", 1, 0)], 200)
        .await
        .unwrap();
    let ids = |r: Vec<crate::intel::IntelRecord>| -> Vec<String> {
        r.into_iter()
            .map(|r| r.id[r.id.len() - 1..].to_owned())
            .collect()
    };
    // RED (4) is above max_tlp 3.
    assert_eq!(
        ids(store.intel_query(&q("c")).await.unwrap()),
        ["1", "2", "4", "5"]
    );
    let mut green = q("c");
    green.max_tlp = 1;
    assert_eq!(
        ids(store.intel_query(&green).await.unwrap()),
        ["1", "2", "5"]
    );
    let mut types = q("c");
    types.types = vec!["indicator".into(), "sighting".into()];
    assert_eq!(
        ids(store.intel_query(&types).await.unwrap()),
        ["1", "4", "5"]
    );
    let mut by_id = q("c");
    by_id.ids = vec![obj(2, "malware", 1, 0).id, obj(5, "indicator", 1, 0).id];
    assert_eq!(ids(store.intel_query(&by_id).await.unwrap()), ["2", "5"]);
    let mut after = q("c");
    after.added_after = Some(100);
    assert_eq!(ids(store.intel_query(&after).await.unwrap()), ["5"]);
    let mut spec = q("c");
    spec.spec_versions = vec!["2.0".into()];
    assert!(store.intel_query(&spec).await.unwrap().is_empty());
    let mut meta = q("c");
    meta.with_body = false;
    let rows = store.intel_query(&meta).await.unwrap();
    assert!(rows.iter().all(|r| r.body.is_none()));
    let mut one = q("c");
    one.object_id = Some(obj(1, "indicator", 1, 0).id);
    let rows = store.intel_query(&one).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].body.as_deref().unwrap().contains("\"v\":1"));
}

pub async fn intel_delete_refreshes_ends(backend: &dyn Backend) {
    let store = backend.open().await;
    let o = |v| obj(1, "indicator", v, 0);
    store.intel_add("c", &[o(1), o(2), o(3)], 10).await.unwrap();
    let mut del = q("c");
    del.object_id = Some(o(1).id);
    // Deleting the last version makes the one before it the last.
    assert_eq!(store.intel_delete(&del).await.unwrap(), 1);
    assert_eq!(
        versions(&store.intel_query(&q("c")).await.unwrap()),
        vec![2]
    );
    assert!(store.intel_delete(&q("c")).await.is_err(), "no object id");
    del.versions = IntelVersions {
        all: true,
        ..IntelVersions::default()
    };
    assert_eq!(store.intel_delete(&del).await.unwrap(), 2);
    let mut all = q("c");
    all.versions.all = true;
    assert!(store.intel_query(&all).await.unwrap().is_empty());
    // The collection's clock survives the delete: the next write is still later.
    let added = store.intel_add("c", &[o(9)], 10).await.unwrap();
    assert_eq!(added[0].date_added_us, 11);
}

pub async fn intel_statuses_and_bookmarks(backend: &dyn Backend) {
    let store = backend.open().await;
    let status = |id: &str, created_us, body: &str| IntelStatus {
        root: "city".into(),
        id: id.into(),
        owner: "utility".into(),
        created_us,
        body: body.into(),
    };
    store
        .intel_put_status(&status("s1", 10, "pending"))
        .await
        .unwrap();
    store
        .intel_put_status(&status("s1", 10, "complete"))
        .await
        .unwrap();
    store
        .intel_put_status(&status("s2", 50, "x"))
        .await
        .unwrap();
    assert_eq!(
        store.intel_get_status("city", "s1").await.unwrap(),
        Some(status("s1", 10, "complete"))
    );
    assert_eq!(store.intel_get_status("other", "s1").await.unwrap(), None);
    assert_eq!(store.intel_prune_statuses(20).await.unwrap(), 1);
    assert_eq!(store.intel_get_status("city", "s1").await.unwrap(), None);
    assert!(
        store
            .intel_get_status("city", "s2")
            .await
            .unwrap()
            .is_some()
    );

    assert_eq!(store.intel_bookmark("isac").await.unwrap(), None);
    store
        .intel_set_bookmark("isac", "2026-01-01T00:00:00.000Z")
        .await
        .unwrap();
    store
        .intel_set_bookmark("isac", "2026-01-02T00:00:00.000Z")
        .await
        .unwrap();
    store
        .intel_add("c", &[obj(1, "indicator", 1, 0)], 5)
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let store = backend.open().await;
    assert_eq!(
        store.intel_bookmark("isac").await.unwrap().as_deref(),
        Some("2026-01-02T00:00:00.000Z")
    );
    assert_eq!(store.intel_query(&q("c")).await.unwrap().len(), 1);
    assert!(
        store
            .intel_get_status("city", "s2")
            .await
            .unwrap()
            .is_some()
    );
}

pub async fn intel_count_since(backend: &dyn Backend) {
    let store = backend.open().await;
    assert_eq!(store.intel_count("c", 0).await.unwrap(), 0);
    // Object 1 at 1,000 (and a second version at 2,000), object 2 at 2,000, object 3 in
    // another collection.
    store
        .intel_add("c", &[obj(1, "indicator", 10, 0)], 1_000)
        .await
        .unwrap();
    store
        .intel_add(
            "c",
            &[obj(1, "indicator", 20, 0), obj(2, "sighting", 10, 0)],
            2_000,
        )
        .await
        .unwrap();
    store
        .intel_add("other", &[obj(3, "indicator", 10, 0)], 2_000)
        .await
        .unwrap();
    // A version already stored is not added again.
    store
        .intel_add("c", &[obj(2, "sighting", 10, 0)], 3_000)
        .await
        .unwrap();
    assert_eq!(store.intel_count("c", 0).await.unwrap(), 2);
    assert_eq!(store.intel_count("c", 999).await.unwrap(), 2);
    assert_eq!(
        store.intel_count("c", 1_000).await.unwrap(),
        2,
        "object 1's second version"
    );
    assert_eq!(store.intel_count("c", 2_000).await.unwrap(), 0);
    assert_eq!(store.intel_count("other", 0).await.unwrap(), 1);
    assert_eq!(store.intel_count("nothing", 0).await.unwrap(), 0);
}
