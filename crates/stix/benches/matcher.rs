//! Criterion micro-benchmarks of the hot paths: parse, compile, match one prepared
//! observation, match a multi-observation pattern over a set, push through the stream.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use stix::corpus::{self, Rng};
use stix::matcher::{CompiledPattern, observations_from_json};
use stix::stream::{StreamConfig, StreamMatcher};

const SIMPLE: &str = "[ipv4-addr:value = '10.0.0.1']";
const COMPLEX: &str = "([network-traffic:dst_ref.value ISSUBSET '10.0.0.0/24' AND network-traffic:protocols[*] = 'tcp'] FOLLOWEDBY [file:hashes.MD5 = '0cc175b9c0f1b6a831c399e269772661']) WITHIN 60 SECONDS";

fn bench(c: &mut Criterion) {
    c.bench_function("parse_simple", |b| {
        b.iter(|| stix::pattern::parse(black_box(SIMPLE)))
    });
    c.bench_function("compile_complex", |b| {
        b.iter(|| CompiledPattern::new(black_box(COMPLEX)))
    });

    let doc = json!({"type": "bundle", "id": "bundle--1", "objects": [
        {"type": "observed-data", "id": "observed-data--1", "first_observed": "2020-01-01T00:00:00Z",
         "last_observed": "2020-01-01T00:00:00Z", "number_observed": 1, "object_refs": ["ipv4-addr--1"]},
        {"type": "ipv4-addr", "id": "ipv4-addr--1", "value": "10.0.0.1"}]});
    let obs = observations_from_json(&doc).unwrap();
    let simple = CompiledPattern::new(SIMPLE).unwrap();
    c.bench_function("match_one_simple_hit", |b| {
        b.iter(|| simple.matches_one(black_box(&obs[0])))
    });
    let miss = CompiledPattern::new("[domain-name:value = 'x.example.com']").unwrap();
    c.bench_function("match_one_simple_type_miss", |b| {
        b.iter(|| miss.matches_one(black_box(&obs[0])))
    });

    let mut rng = Rng::new(1);
    let set = observations_from_json(&corpus::bundle(&mut rng, 200)).unwrap();
    let complex = CompiledPattern::new(COMPLEX).unwrap();
    c.bench_function("match_set_200_followedby_within", |b| {
        b.iter(|| complex.matches(black_box(&set)))
    });

    let patterns: Vec<CompiledPattern> = (0..200)
        .map(|i| CompiledPattern::new(&corpus::pattern(&mut rng, i % 3)).unwrap())
        .collect();
    c.bench_function("stream_push_200_patterns", |b| {
        let mut m = StreamMatcher::new(patterns.clone(), StreamConfig::default());
        let mut i = 0;
        b.iter(|| {
            let o = set[i % set.len()].clone();
            i += 1;
            m.push(black_box(o))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
