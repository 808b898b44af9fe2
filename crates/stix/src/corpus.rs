//! Seeded generator of patterns and observations covering every operator and qualifier,
//! shared by the differential tests against stix2-matcher and by the benchmarks.
//! Not part of the stable API.

use serde_json::{Value, json};

/// A small deterministic PRNG (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const BASE_SECS: i64 = 1_577_836_800; // 2020-01-01T00:00:00Z

fn ts(secs: i64) -> String {
    crate::time::format_micros((BASE_SECS + secs) * 1_000_000)
}

const IPS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.200",
    "192.168.1.7",
    "172.16.5.4",
];
const DOMAINS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "evil.test",
    "x.example.org",
];
const NAMES: &[&str] = &["a.exe", "b.dll", "report.pdf", "run.sh"];
const MD5S: &[&str] = &[
    "d41d8cd98f00b204e9800998ecf8427e",
    "0cc175b9c0f1b6a831c399e269772661",
    "900150983cd24fb0d6963f7d28e17f72",
];
const HEXES: &[&str] = &["deadbeef", "cafe", "00ff"];

/// Generates one observed-data (with its objects) numbered `i`, starting at `at` seconds.
pub fn observation(rng: &mut Rng, i: usize, at: i64) -> Vec<Value> {
    let od_id = format!("observed-data--00000000-0000-4000-8000-{i:012}");
    let mut objs = Vec::new();
    let mut refs = Vec::new();
    let sco = |kind: &str, j: usize| format!("{kind}--00000000-0000-4000-8000-{:012}", i * 10 + j);
    match rng.below(5) {
        0 => {
            let id = sco("ipv4-addr", 0);
            objs.push(json!({"type": "ipv4-addr", "id": id, "value": rng.pick(IPS)}));
            refs.push(id);
        }
        1 => {
            let id = sco("domain-name", 0);
            objs.push(json!({"type": "domain-name", "id": id, "value": rng.pick(DOMAINS)}));
            refs.push(id);
        }
        2 => {
            let id = sco("file", 0);
            let mut f = json!({"type": "file", "id": id, "name": rng.pick(NAMES),
                "size": rng.below(2000), "hashes": {"MD5": rng.pick(MD5S)},
                "x_payload_hex": rng.pick(HEXES), "is_encrypted": rng.chance(50),
                "mtime": ts(rng.below(60) as i64)});
            if rng.chance(30) {
                f["size"] = json!(rng.below(2000) as f64 + 0.5);
            }
            objs.push(f);
            refs.push(id);
        }
        3 => {
            let src = sco("ipv4-addr", 1);
            let dst = sco("ipv4-addr", 2);
            let nt = sco("network-traffic", 0);
            objs.push(json!({"type": "ipv4-addr", "id": src, "value": rng.pick(IPS)}));
            objs.push(json!({"type": "ipv4-addr", "id": dst, "value": rng.pick(IPS)}));
            let protos: &[&[&str]] = &[
                &["tcp"],
                &["udp"],
                &["ipv4", "tcp"],
                &["ipv4", "udp", "dns"],
            ];
            objs.push(
                json!({"type": "network-traffic", "id": nt, "src_ref": src, "dst_ref": dst,
                "dst_port": *rng.pick(&[22, 53, 80, 443, 8080]), "protocols": rng.pick(protos)}),
            );
            refs.push(nt);
            refs.push(src);
            refs.push(dst);
        }
        _ => {
            let id = sco("url", 0);
            let u = format!("https://{}/p/{}", rng.pick(DOMAINS), rng.below(5));
            objs.push(json!({"type": "url", "id": id, "value": u}));
            refs.push(id);
        }
    }
    let dur = if rng.chance(60) {
        0
    } else {
        rng.below(20) as i64
    };
    let n = if rng.chance(80) { 1 } else { 2 + rng.below(2) };
    let mut out = vec![
        json!({"type": "observed-data", "spec_version": "2.1", "id": od_id,
        "created": "2020-01-01T00:00:00.000Z", "modified": "2020-01-01T00:00:00.000Z",
        "first_observed": ts(at), "last_observed": ts(at + dur), "number_observed": n,
        "object_refs": refs}),
    ];
    out.extend(objs);
    out
}

/// A bundle of `n` observations spread over about `10 * n` seconds.
pub fn bundle(rng: &mut Rng, n: usize) -> Value {
    let mut objects = Vec::new();
    for i in 0..n {
        let at = (i as i64) * 10 + rng.below(10) as i64;
        objects.extend(observation(rng, i, at));
    }
    json!({"type": "bundle", "id": "bundle--00000000-0000-4000-8000-000000000000", "objects": objects})
}

/// One property test text.
pub fn prop_test(rng: &mut Rng) -> String {
    let not = if rng.chance(15) { "NOT " } else { "" };
    let ip = *rng.pick(IPS);
    match rng.below(24) {
        0 => format!("ipv4-addr:value {not}= '{ip}'"),
        1 => format!("ipv4-addr:value {not}!= '{ip}'"),
        2 => format!("ipv4-addr:value {not}IN ('{ip}', '{}')", rng.pick(IPS)),
        3 => format!(
            "ipv4-addr:value {not}ISSUBSET '{}'",
            rng.pick(&["10.0.0.0/24", "10.0.0.0/25", "192.168.0.0/16", "0.0.0.0/1"])
        ),
        4 => format!(
            "ipv4-addr:value {not}MATCHES '{}'",
            rng.pick(&["^10\\\\.", "\\\\.7$", "^1[79]"])
        ),
        5 => format!(
            "ipv4-addr:value {not}LIKE '{}'",
            rng.pick(&["10.0.0.%", "%.7", "1_2.%"])
        ),
        6 => format!(
            "domain-name:value {not}LIKE '{}'",
            rng.pick(&["%.example.com", "evil._est", "%"])
        ),
        7 => format!("domain-name:value {not}= '{}'", rng.pick(DOMAINS)),
        8 => format!(
            "file:size {not}{} {}",
            rng.pick(&["<", ">", "<=", ">="]),
            rng.below(2000)
        ),
        9 => format!(
            "file:size {not}{} {}.5",
            rng.pick(&["<", ">", "<=", ">="]),
            rng.below(2000)
        ),
        10 => format!("file:name {not}= '{}'", rng.pick(NAMES)),
        11 => format!("file:hashes.MD5 {not}= '{}'", rng.pick(MD5S)),
        12 => format!("file:x_payload_hex {not}= h'{}'", rng.pick(HEXES)),
        13 => format!(
            "file:x_payload_hex {not}= b'{}'",
            rng.pick(&["3q2+7w==", "yv4=", "AP8="])
        ),
        14 => format!(
            "file:mtime {not}{} t'{}'",
            rng.pick(&["<", ">", "="]),
            ts(rng.below(60) as i64)
        ),
        15 => format!("file:is_encrypted {not}= {}", rng.pick(&["true", "false"])),
        16 => format!(
            "network-traffic:dst_port {not}IN ({}, {})",
            rng.pick(&[22, 53, 80]),
            rng.pick(&[443, 8080])
        ),
        17 => format!(
            "network-traffic:protocols[*] {not}= '{}'",
            rng.pick(&["tcp", "udp", "dns"])
        ),
        18 => format!(
            "network-traffic:protocols[{}] {not}= '{}'",
            rng.below(3),
            rng.pick(&["tcp", "ipv4"])
        ),
        19 => format!("network-traffic:src_ref.value {not}= '{ip}'"),
        20 => format!("network-traffic:dst_ref.value {not}ISSUBSET '10.0.0.0/24'"),
        21 => format!(
            "url:value {not}MATCHES '{}'",
            rng.pick(&["example\\\\.com/p/[0-2]", "^https://evil"])
        ),
        22 => format!(
            "network-traffic:dst_port {not}{} {}",
            rng.pick(&["<", ">="]),
            rng.pick(&[80, 443, 1024])
        ),
        _ => format!(
            "file:size {not}IN ({}, {}.0)",
            rng.below(2000),
            rng.below(2000)
        ),
    }
}

fn comparison(rng: &mut Rng) -> String {
    if rng.chance(15) {
        return format!(
            "EXISTS {}",
            rng.pick(&["file:name", "network-traffic:src_ref", "url:value"])
        );
    }
    match rng.below(10) {
        0..=5 => prop_test(rng),
        6 | 7 => format!("{} AND {}", prop_test(rng), prop_test(rng)),
        8 => format!("{} OR {}", prop_test(rng), prop_test(rng)),
        _ => format!(
            "({} OR {}) AND {}",
            prop_test(rng),
            prop_test(rng),
            prop_test(rng)
        ),
    }
}

fn qualifier(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => format!(
            " WITHIN {} SECONDS",
            rng.pick(&["5", "15", "30", "2.5", "100"])
        ),
        1 => format!(" REPEATS {} TIMES", rng.pick(&[2, 3])),
        2 => {
            let a = rng.below(100) as i64;
            format!(
                " START t'{}' STOP t'{}'",
                ts(a),
                ts(a + 5 + rng.below(100) as i64)
            )
        }
        _ => String::new(),
    }
}

fn observation_expr(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 || rng.chance(35) {
        let q = if rng.chance(30) {
            qualifier(rng)
        } else {
            String::new()
        };
        return format!("[{}]{q}", comparison(rng));
    }
    let op = rng.pick(&["AND", "OR", "FOLLOWEDBY"]);
    let a = observation_expr(rng, depth - 1);
    let b = observation_expr(rng, depth - 1);
    if rng.chance(40) {
        format!("({a} {op} {b}){}", qualifier(rng))
    } else {
        format!("{a} {op} {b}")
    }
}

/// One pattern using observation operators and qualifiers up to `depth` levels deep.
pub fn pattern(rng: &mut Rng, depth: usize) -> String {
    observation_expr(rng, depth)
}

/// A simple indicator pattern, as partners share by the thousand.
pub fn simple_indicator(i: usize) -> String {
    match i % 4 {
        0 => format!(
            "[ipv4-addr:value = '10.{}.{}.{}']",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ),
        1 => format!("[domain-name:value = 'host{i}.example.com']"),
        2 => format!("[file:hashes.MD5 = '{:032x}']", i as u128 * 0x9e37_79b9),
        _ => format!("[url:value = 'https://bad{i}.example.net/x']"),
    }
}
