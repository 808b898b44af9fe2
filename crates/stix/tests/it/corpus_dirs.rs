//! Walks `test_data/`: pattern lists that must parse or be refused, objects that must be
//! valid or invalid, and match cases with their expected result.

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data")
}

/// Non-empty, non-comment lines of a pattern list.
pub fn pattern_lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .expect("read pattern list")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// (file name, json) of every `.json` file in a directory, sorted.
pub fn json_files(dir: &Path) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read json");
            let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn pattern_corpus() {
    let mut failures = Vec::new();
    for p in pattern_lines(&data().join("patterns/valid.txt")) {
        if let Err(e) = stix::pattern::parse(&p) {
            failures.push(format!("valid pattern refused: {p}\n  {e}"));
        }
    }
    for p in pattern_lines(&data().join("patterns/invalid.txt")) {
        if stix::pattern::parse(&p).is_ok() {
            failures.push(format!("invalid pattern accepted: {p}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn object_corpus() {
    let mut failures = Vec::new();
    for (name, v) in json_files(&data().join("objects/valid")) {
        let issues = stix::object::validate_document(&v);
        if !issues.is_empty() {
            failures.push(format!("{name}: expected valid, got {issues:?}"));
        }
        // round trip keeps every property
        let back: Value = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }
    for (name, v) in json_files(&data().join("objects/invalid")) {
        if stix::object::validate_document(&v).is_empty() {
            failures.push(format!("{name}: expected invalid"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn match_corpus() {
    // each file: {"pattern": P, "doc": D, "expected": {"matched": b, "matches": [[ids]]}}
    let mut n = 0;
    for (name, case) in json_files(&data().join("match")) {
        let report = stix::tool::match_text(
            case["pattern"].as_str().expect("pattern"),
            &case["doc"].to_string(),
            stix::tool::DEFAULT_MAX_MATCHES,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.to_json(), case["expected"], "{name}");
        n += 1;
    }
    assert!(n > 0, "no match cases found");
}
