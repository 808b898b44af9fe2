//! Differential tests against the OASIS tools on seeded corpora (see `stix::corpus`).

use serde_json::{Value, json};
use stix::corpus::{self, Rng};
use stix::matcher::{CompiledPattern, observations_from_json};

use crate::corpus_dirs::{data, json_files, pattern_lines};
use crate::oracle::{ask, python};

const MATCH_CASES: usize = 500;
const BINDINGS_COMPARED: usize = 20;

fn strip(b: &[Value]) -> Vec<Vec<u64>> {
    b.iter()
        .map(|x| {
            x.as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_u64)
                .collect()
        })
        .collect()
}

#[test]
fn matcher_agrees_with_stix2_matcher() {
    let Some(py) = python("matcher_agrees_with_stix2_matcher") else {
        return;
    };
    let mut rng = Rng::new(0x5717_2021);
    let mut cases = Vec::new();
    for i in 0..MATCH_CASES {
        let pattern = corpus::pattern(&mut rng, 1 + i % 3);
        let n = 4 + rng.below(10);
        let doc = corpus::bundle(&mut rng, n);
        cases.push((pattern, doc));
    }
    let requests: Vec<Value> = cases
        .iter()
        .map(|(p, d)| json!({"op": "match", "pattern": p, "doc": d, "limit": BINDINGS_COMPARED}))
        .collect();
    let answers = ask(&py, &requests);
    let (mut compared, mut matched, mut oracle_errors) = (0, 0, 0);
    let mut diffs = Vec::new();
    for ((pattern, doc), ans) in cases.iter().zip(&answers) {
        if !ans["error"].is_null() {
            oracle_errors += 1;
            println!("oracle error (excluded): {pattern}: {}", ans["error"]);
            continue;
        }
        let compiled = CompiledPattern::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        let obs = observations_from_json(doc).unwrap();
        let ours: Vec<Vec<u64>> = compiled
            .bindings(&obs, BINDINGS_COMPARED)
            .into_iter()
            .map(|b| b.into_iter().flatten().map(|i| i as u64).collect())
            .collect();
        let theirs = strip(ans["bindings"].as_array().unwrap());
        compared += 1;
        if !theirs.is_empty() {
            matched += 1;
        }
        assert_eq!(
            compiled.matches(&obs),
            !theirs.is_empty(),
            "matched differs: {pattern}"
        );
        // the per-observation fast paths agree with the general search
        for o in &obs {
            let general = !compiled.bindings(std::slice::from_ref(o), 1).is_empty();
            assert_eq!(
                compiled.matches_one(o),
                general,
                "matches_one differs: {pattern} on {}",
                o.id()
            );
        }
        if ours != theirs {
            diffs.push(format!(
                "{pattern}\n  ours:   {ours:?}\n  theirs: {theirs:?}"
            ));
        }
    }
    println!(
        "compared {compared} cases ({matched} matching), {oracle_errors} oracle errors excluded"
    );
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    assert!(
        oracle_errors * 20 < MATCH_CASES,
        "too many oracle errors: {oracle_errors}"
    );
    assert!(
        matched * 5 > compared,
        "corpus matches too rarely: {matched}/{compared}"
    );
}

fn mutate(rng: &mut Rng, p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut out = chars.clone();
    const INSERTS: &[&str] = &[
        "[",
        "]",
        "(",
        ")",
        "'",
        "\"",
        ":",
        ".",
        ",",
        "=",
        "<",
        ">",
        "!",
        "*",
        "-",
        "+",
        " ",
        " AND ",
        " OR ",
        " NOT ",
        "x",
        "0",
        "1.5",
        "t'2020-01-01T00:00:00Z'",
        "h'0'",
        "b'AA=='",
        " WITHIN 5 SECONDS",
        " REPEATS 2 TIMES",
        " FOLLOWEDBY ",
        "\\",
        "/*",
        "*/",
        "[*]",
        "[-1]",
    ];
    for _ in 0..1 + rng.below(2) {
        let at = rng.below(out.len() + 1);
        match rng.below(3) {
            0 if !out.is_empty() => {
                let end = (at + 1 + rng.below(4)).min(out.len());
                out.drain(at.min(out.len())..end);
            }
            1 if out.len() > 2 => {
                let a = rng.below(out.len());
                let b = rng.below(out.len());
                out.swap(a, b);
            }
            _ => {
                let ins: Vec<char> = rng.pick(INSERTS).chars().collect();
                let at = at.min(out.len());
                out.splice(at..at, ins);
            }
        }
    }
    out.into_iter().collect()
}

#[test]
fn pattern_validator_agrees_with_stix2_patterns() {
    let Some(py) = python("pattern_validator_agrees_with_stix2_patterns") else {
        return;
    };
    let mut patterns = pattern_lines(&data().join("patterns/valid.txt"));
    patterns.extend(pattern_lines(&data().join("patterns/invalid.txt")));
    let mut rng = Rng::new(0xDEC0DE);
    let base: Vec<String> = (0..300)
        .map(|i| corpus::pattern(&mut rng, 1 + i % 3))
        .collect();
    for b in &base {
        patterns.push(mutate(&mut rng, b));
    }
    let fixed = patterns.len();
    for p in pattern_lines(&data().join("patterns/valid.txt")) {
        for _ in 0..10 {
            patterns.push(mutate(&mut rng, &p));
        }
    }
    patterns.extend(base);
    let requests: Vec<Value> = patterns
        .iter()
        .map(|p| json!({"op": "pattern", "pattern": p}))
        .collect();
    let answers = ask(&py, &requests);
    let (mut valid, mut crashes) = (0, 0);
    let mut diffs = Vec::new();
    for (p, ans) in patterns.iter().zip(&answers) {
        if ans["crash"] == json!(true) {
            crashes += 1;
            println!("oracle crashed (excluded): {p}: {}", ans["errors"]);
            continue;
        }
        let theirs = ans["valid"] == json!(true);
        let ours = stix::pattern::parse(p);
        valid += usize::from(theirs);
        if ours.is_ok() != theirs {
            diffs.push(format!("{p:?}: ours {ours:?}, theirs {}", ans["errors"]));
        }
    }
    println!(
        "{} patterns ({fixed} from corpus and mutations), {valid} valid, {crashes} oracle crashes excluded",
        patterns.len()
    );
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn object_validator_agrees_with_stix2_validator() {
    let Some(py) = python("object_validator_agrees_with_stix2_validator") else {
        return;
    };
    let mut docs = Vec::new();
    for dir in ["objects/valid", "objects/invalid"] {
        for (name, v) in json_files(&data().join(dir)) {
            docs.push((format!("{dir}/{name}"), v));
        }
    }
    let requests: Vec<Value> = docs
        .iter()
        .map(|(_, d)| json!({"op": "object", "doc": d}))
        .collect();
    let answers = ask(&py, &requests);
    let mut diffs = Vec::new();
    for ((name, doc), ans) in docs.iter().zip(&answers) {
        let ours = stix::object::validate_document(doc);
        let theirs = ans["valid"] == json!(true);
        if ours.is_empty() != theirs {
            diffs.push(format!("{name}: ours {ours:?}, theirs {}", ans["messages"]));
        }
    }
    println!("{} documents compared", docs.len());
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn sco_ids_agree_with_stix2() {
    let Some(py) = python("sco_ids_agree_with_stix2") else {
        return;
    };
    let mut rng = Rng::new(7);
    let mut scos = Vec::new();
    for i in 0..60 {
        for o in corpus::observation(&mut rng, i, 0) {
            if o["type"] != "observed-data" {
                scos.push(o);
            }
        }
    }
    scos.push(json!({"type": "software", "id": "software--1", "name": "Word", "vendor": "Microsoft", "version": "2002"}));
    scos.push(json!({"type": "user-account", "id": "user-account--1", "account_type": "unix", "user_id": "1001"}));
    scos.push(json!({"type": "email-addr", "id": "email-addr--1", "value": "jdoe@example.com"}));
    let requests: Vec<Value> = scos
        .iter()
        .map(|o| json!({"op": "sco_id", "obj": o}))
        .collect();
    let answers = ask(&py, &requests);
    let mut n = 0;
    for (o, ans) in scos.iter().zip(&answers) {
        let Some(theirs) = ans["id"].as_str() else {
            continue;
        };
        let ours = stix::object::sco_id(o.as_object().unwrap());
        assert_eq!(ours.as_deref(), Some(theirs), "{o}");
        n += 1;
    }
    assert!(n > 50, "too few ids compared: {n}");
}
