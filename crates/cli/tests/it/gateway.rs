//! `citysec command` and `citysec audit` against a served platform: a valve command waits for
//! a second person, the requester cannot approve it, another person can; the audit log
//! verifies through the API, offline and as an export; an edited record (in the store and in
//! an export) is caught and named.

use std::process::Output;

use serde_json::Value;

use crate::{citysec, run_ok, serve};

const CAROL: &str = "carol-token-0123456789abcdef0123456789";

fn run(cmd: &mut std::process::Command) -> Output {
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn commands_and_audit_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A second person: carol, with her own admin token (users come with the incident work).
    std::fs::create_dir_all(&data).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use store::Store;
        let store = store::EmbeddedStore::open(&data.join("citysec.db")).unwrap();
        store
            .insert_token(&store::ApiToken {
                sha256: app::token::sha256(CAROL),
                name: "carol".into(),
                role: "admin".into(),
                created_at: model::Timestamp::now(),
            })
            .await
            .unwrap();
        store.close().await.unwrap();
    });
    let platform = serve(dir.path(), &data, |c| c);
    let admin_file = data.join("admin.token");
    let with = |args: &[&str]| {
        let mut cmd = citysec();
        cmd.args(args)
            .args(["--url", &platform.http])
            .arg("--token-file")
            .arg(&admin_file);
        cmd
    };
    run_ok(&mut with(&[
        "device",
        "add",
        "valve-0001",
        "--class",
        "valve",
        "--zone",
        "water-ot",
        "--owner",
        "water",
    ]));

    // Refused: unknown device, with the reason, and nothing to approve.
    let out = run(&mut with(&[
        "command",
        "send",
        "--device",
        "valve-9999",
        "--action",
        "close",
    ]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("unknown device valve-9999"),
        "{}",
        stderr(&out)
    );

    let sent = run_ok(&mut with(&[
        "command",
        "send",
        "--device",
        "valve-0001",
        "--action",
        "set_position",
        "--param",
        "position_pct=40",
        "--reason",
        "cli test",
        "--json",
    ]));
    let sent: Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(sent["state"], "pending_approval", "{sent}");
    assert_eq!(sent["params"]["position_pct"], 40);
    let id = sent["id"].as_str().unwrap().to_owned();

    // The requester (the admin token) cannot approve its own command.
    let out = run(&mut with(&["command", "approve", &id]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot approve their own command"),
        "{}",
        stderr(&out)
    );

    // Carol can; the valve is not connected, so the command times out at once.
    let out = run_ok(
        citysec()
            .args(["command", "approve", &id, "--json", "--url", &platform.http])
            .args(["--token", CAROL]),
    );
    let approved: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(approved["approvals"][0]["by"], "carol", "{approved}");
    assert_eq!(approved["state"], "timed_out", "{approved}");
    assert_eq!(approved["deliveries"][0]["state"], "not_connected");

    let list = run_ok(&mut with(&["command", "list", "--json"]));
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let shown = run_ok(&mut with(&["command", "show", &id]));
    assert!(shown.contains("\"carol\""), "{shown}");

    // The audit log, through the API and as an export.
    let out = run_ok(&mut with(&["audit", "verify"]));
    assert!(out.starts_with("audit log intact:"), "{out}");
    let export = dir.path().join("audit.jsonl");
    run_ok(&mut with(&[
        "audit",
        "export",
        "--out",
        export.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(&export).unwrap();
    let actions: Vec<String> = text
        .lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            let body: Value = serde_json::from_str(row["body"].as_str().unwrap()).unwrap();
            body["action"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        actions,
        [
            "config.loaded",
            "device.registered",
            "command.refused",
            "command.requested",
            "approval.refused",
            "command.approved",
            "command.authorised",
            "command.timed_out",
        ]
    );
    run_ok(citysec().args(["audit", "verify", "--file"]).arg(&export));
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(&edited, text.replacen("cli test", "nothing to see", 1)).unwrap();
    let out = run(citysec().args(["audit", "verify", "--file"]).arg(&edited));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("broken at record 4"),
        "{}",
        stderr(&out)
    );
    drop(platform);

    // Someone with the database file edits a record: offline verification names it.
    let conn = rusqlite::Connection::open(data.join("citysec.db")).unwrap();
    conn.execute_batch(
        "DROP TRIGGER audit_no_update; \
         UPDATE audit SET body = replace(body, '\"carol\"', '\"admin\"') WHERE action = 'command.approved';",
    )
    .unwrap();
    drop(conn);
    let out = run(citysec()
        .args(["audit", "verify", "--offline", "--data-dir"])
        .arg(&data));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr(&out).contains("broken at record 6: content does not match its hash"),
        "{}",
        stderr(&out)
    );
}
