//! The gateway key file: generated once with mode 0600, read back, refused when others can
//! read it or it holds garbage.

use crate::gateway::{NoAdvisories, load_or_create_key};
use gateway::AdvisoryCheck;

#[test]
fn key_file_is_private_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.key");
    let first = load_or_create_key(&path).unwrap();
    assert_eq!(load_or_create_key(&path).unwrap(), first);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_key(&path).unwrap_err();
        assert!(err.to_string().contains("readable by others"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(&path, "zz\n").unwrap();
    let err = load_or_create_key(&path).unwrap_err();
    assert!(err.to_string().contains("64 hex digits"), "{err}");
}

#[test]
fn without_an_advisory_store_no_warning_is_authorised() {
    assert!(!NoAdvisories.is_authorised_warning("adv-1"));
}

#[tokio::test]
async fn only_issued_actual_or_exercise_warnings_authorise_a_siren() {
    use crate::gateway::IssuedWarnings;
    use model::{AdvisoryMsgType, AdvisoryState, AdvisoryStatus, Timestamp};
    use store::{AdvisoryStore as _, Store as _};

    let dir = tempfile::tempdir().unwrap();
    let store = store::EmbeddedStore::open(&dir.path().join("citysec.db")).unwrap();
    let with = |id: &str, state, status, msg_type, expires: Option<i64>| {
        let mut a = store::testsuite::advisory(id, 1);
        a.state = state;
        a.status = status;
        a.msg_type = msg_type;
        a.content.expires = expires.map(Timestamp::from_millis);
        if state != AdvisoryState::Draft {
            a.issued_by = Some("olga".to_owned());
            a.issued_at = Some(Timestamp::from_millis(2));
        }
        a
    };
    let now = Timestamp::now().as_millis();
    store
        .write_advisories(&[
            with(
                "actual",
                AdvisoryState::Issued,
                AdvisoryStatus::Actual,
                AdvisoryMsgType::Alert,
                None,
            ),
            with(
                "drill",
                AdvisoryState::Issued,
                AdvisoryStatus::Exercise,
                AdvisoryMsgType::Alert,
                None,
            ),
            with(
                "test",
                AdvisoryState::Issued,
                AdvisoryStatus::Test,
                AdvisoryMsgType::Alert,
                None,
            ),
            with(
                "draft",
                AdvisoryState::Draft,
                AdvisoryStatus::Actual,
                AdvisoryMsgType::Alert,
                None,
            ),
            with(
                "cancelled",
                AdvisoryState::Cancelled,
                AdvisoryStatus::Actual,
                AdvisoryMsgType::Alert,
                None,
            ),
            with(
                "expired",
                AdvisoryState::Issued,
                AdvisoryStatus::Actual,
                AdvisoryMsgType::Alert,
                Some(now - 60_000),
            ),
        ])
        .await
        .unwrap();
    let warnings = IssuedWarnings::default();
    assert!(
        !warnings.is_authorised_warning("actual"),
        "nothing before the first refresh"
    );
    warnings.refresh(&store).await.unwrap();
    for (id, authorised) in [
        ("actual", true),
        ("drill", true),
        ("test", false),
        ("draft", false),
        ("cancelled", false),
        ("expired", false),
        ("unknown", false),
    ] {
        assert_eq!(warnings.is_authorised_warning(id), authorised, "{id}");
    }
    store.close().await.unwrap();
}

/// Two processes' gateways over one store: the playbook's `silence_siren` in one process
/// finds the automatic all-clear the other process's gateway sent for the same emission of
/// the alert, and sends no second one.
#[tokio::test]
async fn a_playbook_all_clear_finds_the_one_another_process_sent() {
    use crate::response::ActuatorGateway;
    use model::{Alert, AlertId, DeviceClass, Severity, Timestamp};

    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn store::Store> =
        std::sync::Arc::new(store::EmbeddedStore::open(&dir.path().join("citysec.db")).unwrap());
    let directory = std::sync::Arc::new(crate::directory::Directory::new());
    directory.put(store::testsuite::device(
        "siren-0001",
        DeviceClass::Siren,
        "ps-field",
    ));
    let bus: std::sync::Arc<dyn bus::Bus> = std::sync::Arc::new(bus::InProcessBus::new(1024));
    let mut config = crate::Config::load(
        crate::config::DEFAULT_CONFIG,
        &std::collections::HashMap::new(),
    )
    .unwrap();
    config.data_dir = dir.path().to_owned();
    let gateway = |_: &str| {
        crate::gateway::build(
            &config,
            store.clone(),
            bus.clone(),
            directory.clone(),
            None,
            std::sync::Arc::new(crate::gateway::NoAdvisories),
        )
        .unwrap()
    };
    let (answering, playbook_side) = (gateway("a"), gateway("b"));
    let now = Timestamp::now();
    let alert = Alert {
        id: AlertId("al-siren".into()),
        rule: "actuation.uncommanded".into(),
        key: "siren-0001".into(),
        severity: Severity::Critical,
        ts: now,
        last_ts: now,
        count: 1,
        device_id: Some(model::DeviceId::new("siren-0001").unwrap()),
        zone: None,
        source: None,
        title: "uncommanded siren actuation".into(),
        explanation: String::new(),
        evidence: Vec::new(),
    };
    let sent = answering.on_alert(&alert, now).await.unwrap().unwrap();
    let device = model::DeviceId::new("siren-0001").unwrap();
    let reply = crate::gateway::PlaybookGateway(playbook_side.clone())
        .all_clear(&device, "playbook:sirens", Some((&alert.id, alert.last_ts)))
        .await
        .unwrap();
    assert_eq!(
        reply,
        format!(
            "all-clear {} already sent to siren-0001 by the gateway",
            sent.id
        )
    );
    // Without the alert to go by, the other process cannot tell, and sends its own.
    let reply = crate::gateway::PlaybookGateway(playbook_side)
        .all_clear(&device, "playbook:sirens", None)
        .await
        .unwrap();
    assert!(!reply.contains("already sent"), "{reply}");
}
