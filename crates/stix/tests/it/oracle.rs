//! Runs `scripts/oracles/oracle.py` with the python named by `CITYSEC_TEST_PYTHON`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The python interpreter to use, or `None` (after printing why) when the test must skip.
/// Panics (fails the test) when `CITYSEC_REQUIRE_PEERS=1` and no interpreter is set.
pub fn python(test: &str) -> Option<String> {
    match std::env::var("CITYSEC_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!("{test}: CITYSEC_REQUIRE_PEERS=1 but CITYSEC_TEST_PYTHON is not set");
            }
            println!(
                "skipping: {test}: CITYSEC_TEST_PYTHON is not set (a python with scripts/requirements-oracles.txt installed)"
            );
            None
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/oracles/oracle.py")
}

/// Sends all requests in one batch and returns the answers, in order.
pub fn ask(python: &str, requests: &[Value]) -> Vec<Value> {
    let mut child = Command::new(python)
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the oracle");
    let mut input = String::new();
    for r in requests {
        input.push_str(&r.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("oracle output");
    writer
        .join()
        .expect("writer thread")
        .expect("write requests");
    assert!(out.status.success(), "oracle failed: {:?}", out.status);
    let answers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("oracle answer is json"))
        .collect();
    assert_eq!(answers.len(), requests.len(), "one answer per request");
    answers
}
