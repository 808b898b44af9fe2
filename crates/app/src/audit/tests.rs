//! The audit helpers against a real embedded store: records chain, an export verifies on
//! its own, and an edited export line is named.

use serde_json::json;

use crate::audit::{export, record, verify, verify_export};

#[tokio::test]
async fn export_verifies_and_names_an_edited_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::EmbeddedStore::open(&dir.path().join("citysec.db")).unwrap();
    for i in 0..4 {
        record(&store, "alice", "login", None, "ok", json!({"n": i}))
            .await
            .unwrap();
    }
    let last = record(
        &store,
        "bob",
        "response.action",
        Some("siren-1"),
        "ok",
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(last.seq, 5);
    assert!(verify(&store).await.unwrap().is_intact());

    let mut out = Vec::new();
    assert_eq!(export(&store, &mut out).await.unwrap(), 5);
    let report = verify_export(&mut out.as_slice()).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.records, report.last_hash), (5, last.hash));

    let text = String::from_utf8(out).unwrap();
    let edited = text.replacen(r#"\"n\":2"#, r#"\"n\":7"#, 1);
    assert_ne!(edited, text);
    let report = verify_export(&mut edited.as_bytes()).unwrap();
    assert_eq!(report.broken.unwrap().seq, 3);
    let dropped: String = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let broken = verify_export(&mut dropped.as_bytes())
        .unwrap()
        .broken
        .unwrap();
    assert_eq!(broken.seq, 2);
    assert!(broken.reason.contains("missing"), "{broken:?}");
    let broken = verify_export(&mut "not json\n".as_bytes())
        .unwrap()
        .broken
        .unwrap();
    assert!(broken.reason.contains("line 1"), "{broken:?}");
}
