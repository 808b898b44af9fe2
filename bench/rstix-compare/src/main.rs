//! Per-pair pattern matching throughput of citysec's `stix` matcher against the Rust crate rstix 0.23, on the corpus of `crates/stix/benches/compare.rs` (200 patterns x 2,000 observed-data, seed 0xB3AC2026); run with `cargo run --release --manifest-path bench/rstix-compare/Cargo.toml`.
//!
//! Both sides compile each pattern once and prepare each observation once, then evaluate
//! every pattern against every single observation (best of 3 timed passes). rstix side:
//! `rstix::Pattern::parse` once per pattern; each observed-data is parsed once as an rstix
//! `Bundle` and turned into an `ObservationContext` (its referenced SCOs stamped with
//! `first_observed`, bundle attached for `_ref` paths), then `Pattern::evaluate`.
//! Patterns and observations rstix cannot parse are left out of both sides' timed pairs.

use std::time::Instant;

use rstix::model::sdo::{ObservedDataForm, SdoObject};
use rstix::model::{Bundle, StixObject};
use rstix::pattern::{ObservationContext, TimestampedObservation};
use serde_json::{json, Value};
use stix::corpus::{self, Rng};
use stix::matcher::{observations_from_json, CompiledPattern, Observation};

const PATTERNS: usize = 200;
const OBSERVATIONS: usize = 2_000;
const RUNS: usize = 3;

fn main() {
    // corpus: exactly as compare.rs generates it
    let mut rng = Rng::new(0xB3AC_2026);
    let patterns: Vec<String> = (0..PATTERNS)
        .map(|i| corpus::pattern(&mut rng, i % 3))
        .collect();
    let mut per_obs: Vec<Value> = Vec::new();
    for i in 0..OBSERVATIONS {
        let at = i as i64 * 10 + rng.below(10) as i64;
        let objs = corpus::observation(&mut rng, i, at);
        per_obs.push(json!({"type": "bundle", "id": format!("bundle--{i}"), "objects": objs}));
    }

    // ours: compile once, prepare once
    let compiled: Vec<CompiledPattern> = patterns
        .iter()
        .map(|p| CompiledPattern::new(p).expect("corpus pattern compiles"))
        .collect();
    let obs: Vec<Observation> = per_obs
        .iter()
        .flat_map(|b| observations_from_json(b).expect("corpus observations"))
        .collect();
    assert_eq!(obs.len(), OBSERVATIONS);

    // rstix: parse once; patterns it rejects are excluded from both sides
    let t = Instant::now();
    let mut rs_patterns = Vec::new();
    let mut kept = Vec::new(); // indexes into `patterns`
    let mut rejected: Vec<(usize, String)> = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        match rstix::Pattern::parse(p) {
            Ok(rp) => {
                rs_patterns.push(rp);
                kept.push(i);
            }
            Err(e) => rejected.push((i, e.to_string())),
        }
    }
    let rs_compile_s = t.elapsed().as_secs_f64();

    // rstix: one Bundle per observed-data (same objects; the bundle id is made a valid
    // `bundle--<uuid>`, it plays no part in matching)
    let t = Instant::now();
    let mut bundles: Vec<Bundle> = Vec::new();
    let mut obs_kept = Vec::new(); // indexes into `per_obs` / `obs`
    let mut obs_rejected: Vec<(usize, String)> = Vec::new();
    for (i, b) in per_obs.iter().enumerate() {
        let doc = json!({"type": "bundle",
            "id": format!("bundle--00000000-0000-4000-8000-{i:012}"),
            "objects": b["objects"]});
        match Bundle::parse(&doc.to_string()) {
            Ok(b) => {
                bundles.push(b);
                obs_kept.push(i);
            }
            Err(e) => obs_rejected.push((i, e.to_string())),
        }
    }
    let timestamped: Vec<Vec<TimestampedObservation<'_>>> = bundles
        .iter()
        .map(|b| {
            let od = b
                .objects()
                .iter()
                .find_map(|o| match o {
                    StixObject::Sdo(SdoObject::ObservedData(od)) => Some(od),
                    _ => None,
                })
                .expect("observed-data in bundle");
            let ObservedDataForm::ObjectRefs(refs) = &od.form else {
                panic!("corpus uses object_refs")
            };
            refs.iter()
                .map(|id| match b.get(id) {
                    Some(StixObject::Sco(sco)) => TimestampedObservation {
                        sco,
                        at: Some(od.first_observed.clone()),
                    },
                    _ => panic!("object_refs entry {id} is not an SCO in the bundle"),
                })
                .collect()
        })
        .collect();
    let contexts: Vec<ObservationContext<'_>> = timestamped
        .iter()
        .zip(&bundles)
        .map(|(ts, b)| ObservationContext {
            observations: ts,
            bundle: Some(b),
        })
        .collect();
    let rs_prepare_s = t.elapsed().as_secs_f64();

    // ours, on the kept patterns
    let ours_kept: Vec<&CompiledPattern> = kept.iter().map(|&i| &compiled[i]).collect();
    let all_obs = obs;
    let obs: Vec<&Observation> = obs_kept.iter().map(|&i| &all_obs[i]).collect();
    let mut ours_hits = vec![false; ours_kept.len() * obs.len()];
    let mut ours_best = f64::MAX;
    let mut ours_count = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        let mut hits = 0usize;
        for (pi, c) in ours_kept.iter().enumerate() {
            for (oi, o) in obs.iter().enumerate() {
                let m = c.matches_one(o);
                hits += usize::from(m);
                ours_hits[pi * obs.len() + oi] = m;
            }
        }
        ours_best = ours_best.min(t.elapsed().as_secs_f64());
        ours_count = hits;
    }

    // rstix, same pairs; an evaluation error counts as no match (and is counted)
    let mut rs_hits = vec![false; rs_patterns.len() * contexts.len()];
    let mut rs_best = f64::MAX;
    let (mut rs_count, mut rs_errors) = (0, 0);
    let mut first_error: Option<(usize, String)> = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let (mut hits, mut errors) = (0usize, 0usize);
        for (pi, p) in rs_patterns.iter().enumerate() {
            for (oi, ctx) in contexts.iter().enumerate() {
                let m = match p.evaluate(ctx) {
                    Ok(m) => m,
                    Err(e) => {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some((kept[pi], e.to_string()));
                        }
                        false
                    }
                };
                hits += usize::from(m);
                rs_hits[pi * contexts.len() + oi] = m;
            }
        }
        rs_best = rs_best.min(t.elapsed().as_secs_f64());
        rs_count = hits;
        rs_errors = errors;
    }

    // ours on all 200 patterns, for reference against compare.rs
    let t = Instant::now();
    let mut all_hits = 0usize;
    for c in &compiled {
        for o in &all_obs {
            all_hits += usize::from(c.matches_one(o));
        }
    }
    let all_s = t.elapsed().as_secs_f64();

    let pairs = kept.len() * obs.len();
    let ours_rate = pairs as f64 / ours_best;
    let rs_rate = pairs as f64 / rs_best;

    // disagreements
    let mut disagree = 0usize;
    let (mut only_ours, mut only_rs) = (0usize, 0usize);
    let mut disagreeing_patterns = std::collections::BTreeSet::new();
    let mut samples: Vec<(usize, usize, bool)> = Vec::new();
    for pi in 0..kept.len() {
        for oi in 0..obs.len() {
            let (a, b) = (ours_hits[pi * obs.len() + oi], rs_hits[pi * obs.len() + oi]);
            if a != b {
                disagree += 1;
                if a {
                    only_ours += 1
                } else {
                    only_rs += 1
                }
                if disagreeing_patterns.insert(pi) && samples.len() < 3 {
                    samples.push((kept[pi], obs_kept[oi], a));
                }
            }
        }
    }

    println!(
        "corpus: {PATTERNS} patterns x {OBSERVATIONS} observations (seed 0xB3AC2026), as in crates/stix/benches/compare.rs"
    );
    println!(
        "rstix 0.23: parse {} patterns {:.2} ms, prepare {OBSERVATIONS} observations (Bundle::parse + context) {:.2} ms",
        patterns.len(),
        rs_compile_s * 1e3,
        rs_prepare_s * 1e3
    );
    println!(
        "ours on all {PATTERNS} patterns: {} pairs in {all_s:.4} s ({all_hits} matches)",
        compiled.len() * all_obs.len()
    );
    println!(
        "patterns rstix rejects (excluded from both sides): {} of {PATTERNS}",
        rejected.len()
    );
    for (i, e) in rejected.iter().take(5) {
        println!("  #{i}: {e}\n      {}", patterns[*i]);
    }
    println!(
        "observations rstix rejects (excluded from both sides): {} of {OBSERVATIONS}{}",
        obs_rejected.len(),
        obs_rejected
            .first()
            .map(|(i, e)| format!("; first: #{i}: {e}"))
            .unwrap_or_default()
    );
    println!(
        "rstix evaluation errors (counted as no match): {rs_errors} of {pairs} pairs{}",
        first_error
            .as_ref()
            .map(|(i, e)| format!("; first: pattern #{i}: {e}"))
            .unwrap_or_default()
    );
    println!(
        "disagreements: {disagree} of {pairs} pairs ({only_ours} match only ours, {only_rs} only rstix), in {} of {} patterns",
        disagreeing_patterns.len(),
        kept.len()
    );
    for (pi, oi, ours) in &samples {
        println!(
            "  pattern #{pi} x observation #{oi}: ours {ours}, rstix {}\n      {}",
            !ours, patterns[*pi]
        );
    }
    println!();
    println!("| matcher | pairs | seconds (best of {RUNS}) | pairs/s | matches |");
    println!("| --- | --- | --- | --- | --- |");
    println!("| citysec stix (`CompiledPattern::matches_one`) | {pairs} | {ours_best:.4} | {ours_rate:.0} | {ours_count} |");
    println!(
        "| rstix 0.23 (`Pattern::evaluate`) | {pairs} | {rs_best:.4} | {rs_rate:.0} | {rs_count} |"
    );
    println!(
        "| ratio (ours / rstix) | | | {:.1}x | |",
        ours_rate / rs_rate
    );
}
