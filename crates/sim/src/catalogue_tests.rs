//! Tests of the address plan, the flow encoders, the benign background and the attack
//! catalogue: every scenario file parses, plans deterministically per seed and exceeds the
//! detection contract's default thresholds; the benign background stays inside the
//! conduits and below those thresholds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use model::{DeviceClass, FlowRecord, Timestamp};

use crate::background::{self, LifeKind};
use crate::flow::{ExporterState, FlowFormat, TEMPLATE_EVERY, TEMPLATE_V4, TEMPLATE_V6};
use crate::population::Population;
use crate::scenario::{self, Action, CATALOGUE, Ran, Scenario, SeenAlert};
use crate::soak::{Observation, Soak};
use crate::zones::{self, CONDUITS, ZONES};

const T0: i64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn in_cidr(addr: IpAddr, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap();
    let (IpAddr::V4(a), IpAddr::V4(n)) = (addr, ip(net)) else {
        return false;
    };
    let bits: u32 = bits.parse().unwrap();
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(a) & mask == u32::from(n) & mask
}

fn zone_of(addr: IpAddr) -> &'static str {
    ZONES
        .iter()
        .find(|z| in_cidr(addr, &z.cidr()))
        .map_or("internet", |z| z.name)
}

/// The contract's conduit check: a conduit allows the flow, or (reply) its reverse.
fn allowed(r: &FlowRecord) -> bool {
    let proto = r.protocol_name();
    let (from, to) = (zone_of(r.src), zone_of(r.dst));
    CONDUITS.iter().any(|c| {
        let proto_ok = c.protocol == "any" || c.protocol == proto;
        let zone = |spec: &str, z: &str| spec == "*" || spec == z;
        let forward = zone(c.from, from)
            && zone(c.to, to)
            && (c.ports.is_empty() || c.ports.contains(&r.dst_port));
        let reply = zone(c.from, to)
            && zone(c.to, from)
            && (c.ports.is_empty() || c.ports.contains(&r.src_port));
        proto_ok && (forward || reply)
    })
}

#[test]
fn every_device_zone_is_planned_and_addresses_are_unique_and_in_zone() {
    assert!(zones::mix_zones_are_planned());
    for population in [
        Population::generate(3_000, 4),
        Population::generate_exercise(4),
    ] {
        let mut seen = HashSet::new();
        for d in &population.devices {
            assert_eq!(d.addresses.len(), 1, "{d:?}");
            let addr = d.addresses[0];
            assert!(seen.insert(addr), "duplicate address {addr}");
            assert_eq!(zone_of(addr), d.zone, "{} at {addr}", d.id);
        }
    }
    // The exercise's devices never take a city device's address or id.
    let city = Population::generate(5_000, 1);
    let exercise = Population::generate_exercise(1);
    let city_addrs: HashSet<IpAddr> = city.devices.iter().map(|d| d.addresses[0]).collect();
    for d in &exercise.devices {
        assert!(!city_addrs.contains(&d.addresses[0]));
        assert!(d.id.as_str().starts_with("x-"));
        assert!(city.get(d.id.as_str()).is_none());
    }
}

#[test]
fn zones_toml_lists_every_zone_and_conduit() {
    let text = zones::CityNetwork.detect_toml();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let detect = table["detect"].as_table().unwrap();
    let names: Vec<&str> = detect["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), ZONES.len());
    assert!(names.contains(&"ps-field") && names.contains(&"vendor-updates"));
    let conduits = detect["conduits"].as_array().unwrap();
    assert_eq!(conduits.len(), CONDUITS.len());
    for c in conduits {
        for end in ["from", "to"] {
            let z = c[end].as_str().unwrap();
            assert!(z == "*" || z == "internet" || names.contains(&z), "{z}");
        }
    }
    // Merged into a config: the defaults' other settings stay, ours are added.
    let base = "version = 1\ndata_dir = \"d\"\n[detect.firmware]\nupdate_servers = []\nupdate_window_s = 60\n[detect]\nmerge_window_s = 5\n";
    let merged: toml::Table = toml::from_str(
        &zones::CityNetwork
            .merge_into(base, Some("127.0.0.1:2055"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(merged["version"].as_integer(), Some(1));
    let detect = merged["detect"].as_table().unwrap();
    assert_eq!(detect["merge_window_s"].as_integer(), Some(5));
    assert_eq!(detect["firmware"]["update_window_s"].as_integer(), Some(60));
    assert_eq!(
        detect["firmware"]["update_servers"].as_array().unwrap()[0].as_str(),
        Some(zones::UPDATE_SERVERS)
    );
    assert_eq!(detect["zones"].as_array().unwrap().len(), ZONES.len());
    assert_eq!(
        merged["ingest"]["flow"]["listen"].as_str(),
        Some("127.0.0.1:2055")
    );
    assert!(
        zones::CityNetwork
            .merge_into("version = 1\ndetect = 3\n", None)
            .is_err()
    );
}

fn record(src: &str, dst: &str, bytes: u64) -> FlowRecord {
    FlowRecord {
        src: ip(src),
        dst: ip(dst),
        src_port: 51_234,
        dst_port: 554,
        protocol: 6,
        bytes,
        packets: 9,
        tcp_flags: 0x1b,
        start: Timestamp::from_millis(T0),
        end: Timestamp::from_millis(T0 + 60_000),
        exporter: None,
        peer_device: None,
    }
}

/// A minimal IPFIX reader for the tests (templates, then data sets by template id).
fn read_ipfix(msg: &[u8], templates: &mut HashMap<u16, Vec<(u16, u16)>>) -> Vec<Vec<u8>> {
    assert_eq!(&msg[0..2], &[0, 10]);
    assert_eq!(u16::from_be_bytes([msg[2], msg[3]]) as usize, msg.len());
    let mut records = Vec::new();
    let mut at = 16;
    while at < msg.len() {
        let id = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let len = u16::from_be_bytes([msg[at + 2], msg[at + 3]]) as usize;
        let body = &msg[at + 4..at + len];
        if id == 2 {
            let mut p = 0;
            while p < body.len() {
                let tid = u16::from_be_bytes([body[p], body[p + 1]]);
                let n = u16::from_be_bytes([body[p + 2], body[p + 3]]) as usize;
                let fields = (0..n)
                    .map(|i| {
                        let q = p + 4 + i * 4;
                        (
                            u16::from_be_bytes([body[q], body[q + 1]]),
                            u16::from_be_bytes([body[q + 2], body[q + 3]]),
                        )
                    })
                    .collect();
                templates.insert(tid, fields);
                p += 4 + n * 4;
            }
        } else {
            let fields = &templates[&id];
            let size: usize = fields.iter().map(|f| f.1 as usize).sum();
            assert_eq!(body.len() % size, 0);
            records.extend(body.chunks(size).map(<[u8]>::to_vec));
        }
        at += len;
    }
    records
}

#[test]
fn ipfix_messages_carry_templates_then_records() {
    let mut state = ExporterState::new(FlowFormat::Ipfix, 7, T0 - 1_000_000);
    let mut records: Vec<FlowRecord> = (0..100)
        .map(|i| record(&format!("10.1.1.{}", i + 1), "10.101.0.10", 1_000 + i))
        .collect();
    records.push(record("2001:db8::7", "2001:db8::1", 5));
    let msgs = state.encode(&records, T0 + 61_000);
    assert!(msgs.len() > 1, "100 records do not fit one datagram");
    let mut templates = HashMap::new();
    let mut decoded = Vec::new();
    let mut sequence = 0u32;
    for (i, m) in msgs.iter().enumerate() {
        assert!(m.len() <= crate::flow::MAX_DATAGRAM);
        assert_eq!(u32::from_be_bytes(m[8..12].try_into().unwrap()), sequence);
        assert_eq!(u32::from_be_bytes(m[12..16].try_into().unwrap()), 7);
        assert_eq!(
            u32::from_be_bytes(m[4..8].try_into().unwrap()),
            ((T0 + 61_000) / 1000) as u32
        );
        let got = read_ipfix(m, &mut templates);
        if i == 0 {
            assert!(templates.contains_key(&TEMPLATE_V4) && templates.contains_key(&TEMPLATE_V6));
        }
        sequence += got.len() as u32;
        decoded.extend(got);
    }
    assert_eq!(decoded.len(), 101);
    assert_eq!(state.sequence, 101);
    // The first IPv4 record, field by field.
    let r = &decoded[0];
    assert_eq!(&r[0..4], &[10, 1, 1, 1]);
    assert_eq!(&r[4..8], &[10, 101, 0, 10]);
    assert_eq!(u16::from_be_bytes([r[8], r[9]]), 51_234);
    assert_eq!(u16::from_be_bytes([r[10], r[11]]), 554);
    assert_eq!(r[12], 6);
    assert_eq!(u16::from_be_bytes([r[13], r[14]]), 0x1b);
    assert_eq!(u64::from_be_bytes(r[15..23].try_into().unwrap()), 1_000);
    assert_eq!(u64::from_be_bytes(r[23..31].try_into().unwrap()), 9);
    assert_eq!(u64::from_be_bytes(r[31..39].try_into().unwrap()), T0 as u64);
    assert_eq!(
        u64::from_be_bytes(r[39..47].try_into().unwrap()),
        (T0 + 60_000) as u64
    );
    // The IPv6 record uses the other template.
    let v6 = decoded.last().unwrap();
    assert_eq!(v6.len(), 16 + 16 + 2 + 2 + 1 + 2 + 8 + 8 + 8 + 8);
    // Templates come back every TEMPLATE_EVERY messages, not in between.
    let mut state = ExporterState::new(FlowFormat::Ipfix, 1, T0);
    let with_templates: Vec<bool> = (0..TEMPLATE_EVERY + 1)
        .map(|_| {
            let m = &state.encode(&[record("10.1.1.1", "10.101.0.10", 1)], T0)[0];
            u16::from_be_bytes([m[16], m[17]]) == 2
        })
        .collect();
    assert!(with_templates[0] && with_templates[TEMPLATE_EVERY as usize]);
    assert!(
        !with_templates[1..TEMPLATE_EVERY as usize]
            .iter()
            .any(|t| *t)
    );
}

#[test]
fn netflow_v5_layout_and_limits() {
    let boot = T0 - 3_600_000;
    let mut state = ExporterState::new(FlowFormat::NetflowV5, 3, boot);
    let mut records: Vec<FlowRecord> = (0..45)
        .map(|i| record(&format!("10.3.1.{}", i + 1), "10.102.0.10", 2_000))
        .collect();
    records.push(record("2001:db8::7", "2001:db8::1", 5));
    let msgs = state.encode(&records, T0 + 61_500);
    assert_eq!(msgs.len(), 2);
    assert_eq!(state.skipped, 1, "IPv6 cannot travel in NetFlow v5");
    assert_eq!(msgs[0].len(), 24 + 30 * 48);
    assert_eq!(msgs[1].len(), 24 + 15 * 48);
    let m = &msgs[1];
    assert_eq!(u16::from_be_bytes([m[0], m[1]]), 5);
    assert_eq!(u16::from_be_bytes([m[2], m[3]]), 15);
    assert_eq!(u32::from_be_bytes(m[4..8].try_into().unwrap()), 3_661_500);
    assert_eq!(
        u32::from_be_bytes(m[8..12].try_into().unwrap()),
        ((T0 + 61_500) / 1000) as u32
    );
    assert_eq!(
        u32::from_be_bytes(m[12..16].try_into().unwrap()),
        500_000_000
    );
    assert_eq!(
        u32::from_be_bytes(m[16..20].try_into().unwrap()),
        30,
        "flow sequence"
    );
    assert_eq!(m[21], 3, "engine id");
    let r = &m[24..72];
    assert_eq!(&r[0..4], &[10, 3, 1, 31]);
    assert_eq!(u32::from_be_bytes(r[16..20].try_into().unwrap()), 9);
    assert_eq!(u32::from_be_bytes(r[20..24].try_into().unwrap()), 2_000);
    assert_eq!(u32::from_be_bytes(r[24..28].try_into().unwrap()), 3_600_000);
    assert_eq!(u32::from_be_bytes(r[28..32].try_into().unwrap()), 3_660_000);
    assert_eq!(u16::from_be_bytes([r[32], r[33]]), 51_234);
    assert_eq!(u16::from_be_bytes([r[34], r[35]]), 554);
    assert_eq!((r[37], r[38]), (0x1b, 6));
}

#[test]
fn benign_flows_stay_inside_the_conduits_and_below_the_thresholds() {
    let population = Population::generate(600, 9);
    let from = T0 + 6 * 3_600_000;
    let to = from + 20 * 60_000;
    let flows = background::flows(&population, 9, from, to, &|_, _| false);
    let again = background::flows(&population, 9, from, to, &|_, _| false);
    assert_eq!(flows, again, "same seed, same traffic");
    assert_ne!(
        flows,
        background::flows(&population, 10, from, to, &|_, _| false)
    );
    assert!(flows.len() > 600 * 20, "{}", flows.len());
    let owners: HashMap<IpAddr, &str> = population
        .devices
        .iter()
        .map(|d| (d.addresses[0], d.id.as_str()))
        .collect();
    // Windows of 10 s (bytes, packets to one destination) and 60 s (distinct
    // destinations), per device.
    let mut per10: HashMap<(IpAddr, IpAddr, i64), (u64, u64)> = HashMap::new();
    let mut per60: HashMap<(IpAddr, i64), BTreeSet<IpAddr>> = HashMap::new();
    for r in &flows {
        assert!(
            allowed(r),
            "benign flow outside every conduit: {}",
            r.summary()
        );
        assert!(
            owners.contains_key(&r.src),
            "{}: source is no device",
            r.summary()
        );
        assert!(r.end > r.start);
        let e = r.end.as_millis();
        let slot = per10.entry((r.src, r.dst, e / 10_000)).or_default();
        slot.0 += r.bytes;
        slot.1 += r.packets;
        per60.entry((r.src, e / 60_000)).or_default().insert(r.dst);
        assert!(![22, 23, 2323].contains(&r.dst_port));
    }
    for ((src, dst, _), (bytes, packets)) in per10 {
        assert!(
            bytes < 10_000_000 && packets < 10_000,
            "{src}->{dst}: {bytes} B {packets} pkts"
        );
    }
    for ((src, _), dsts) in per60 {
        assert!(
            dsts.len() < 50,
            "{src} contacts {} hosts a minute",
            dsts.len()
        );
    }
    // Daily curve: EV chargers talk more in the evening than at 4 in the morning.
    let volume = |hour: i64| -> u64 {
        let from = T0 - 3_600_000 + hour * 3_600_000; // local hour (CET)
        background::flows(&population, 9, from, from + 3_600_000, &|_, _| false)
            .iter()
            .filter(|r| {
                population
                    .devices
                    .iter()
                    .any(|d| d.addresses[0] == r.src && d.class == DeviceClass::EvCharger)
            })
            .map(|r| r.packets)
            .sum()
    };
    assert!(
        volume(19) > volume(4) * 3 / 2,
        "{} vs {}",
        volume(19),
        volume(4)
    );
    // Offline devices send nothing.
    let quiet = background::flows(&population, 9, from, to, &|i, _| i == 0);
    assert!(
        !quiet
            .iter()
            .any(|r| r.src == population.devices[0].addresses[0])
    );
}

#[test]
fn honest_life_events_and_their_flows() {
    let population = Population::generate(2_000, 5);
    let events = background::life_events(&population, 5, T0, T0 + 86_400_000);
    let again = background::life_events(&population, 5, T0, T0 + 86_400_000);
    assert_eq!(events, again);
    let count = |f: fn(&LifeKind) -> bool| events.iter().filter(|e| f(&e.kind)).count();
    let outages = count(|k| matches!(k, LifeKind::Offline { .. }));
    let maintenance = count(|k| matches!(k, LifeKind::Maintenance { .. }));
    let updates = count(|k| matches!(k, LifeKind::FirmwareUpdate { .. }));
    // About 2%, 3% and 1% of 2,000 devices a day.
    assert!((20..=65).contains(&outages), "{outages}");
    assert!((35..=90).contains(&maintenance), "{maintenance}");
    assert!((8..=35).contains(&updates), "{updates}");
    for e in &events {
        let device = &population.devices[e.device];
        for r in background::life_flows(device, e, 5) {
            assert!(allowed(&r), "{}", r.summary());
        }
        if let LifeKind::FirmwareUpdate { firmware, .. } = &e.kind {
            assert_ne!(firmware, &device.firmware);
            let flows = background::life_flows(device, e, 5);
            assert!(flows.iter().all(|r| r.dst == zones::hosts::UPDATE_SERVER));
            assert!(flows.iter().map(|r| r.bytes).sum::<u64>() < 1_000_000);
        }
        if let LifeKind::Maintenance { .. } = &e.kind {
            let hour = crate::telemetry::hour_of_day(e.at_ms);
            assert!((9.0..15.0).contains(&hour), "maintenance at {hour}");
        }
    }
}

#[test]
fn soak_is_ordered_deterministic_and_complete() {
    let population = Population::generate(120, 2);
    let collect = |seed| {
        let mut soak = Soak::new(&population, seed, T0, 3.0);
        let mut all = Vec::new();
        while soak.next_minute(&mut all) {}
        all
    };
    let a = collect(2);
    assert_eq!(a, collect(2));
    assert_ne!(a, collect(3));
    assert!(a.windows(2).all(|w| w[0].ts() <= w[1].ts()), "time order");
    let publishes = a
        .iter()
        .filter(|o| matches!(o, Observation::Publish { .. }))
        .count();
    let flows = a
        .iter()
        .filter(|o| matches!(o, Observation::Flow(_)))
        .count();
    // About 180 telemetry reports and 70+ flow records per device-hour.
    assert!(publishes > 120 * 3 * 100, "{publishes}");
    assert!(flows > 120 * 3 * 60, "{flows}");
    let connects = a
        .iter()
        .filter(|o| matches!(o, Observation::Connected { .. }))
        .count();
    assert!(connects >= 120);
    // Every device reports its firmware when it connects.
    let hello = a.iter().find_map(|o| match o {
        Observation::Publish { payload, .. } => std::str::from_utf8(payload)
            .ok()
            .filter(|p| p.contains("firmware")),
        _ => None,
    });
    assert!(hello.is_some());
}

#[test]
fn every_scenario_file_is_in_the_catalogue_and_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CATALOGUE.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    for (name, text) in CATALOGUE {
        let s = Scenario::parse(text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(&s.name, name, "the name is the file's stem");
        assert!(!s.description.trim().is_empty());
    }
}

#[test]
fn bad_scenario_files_are_refused_with_the_reason() {
    let good = CATALOGUE[2].1;
    let cases: &[(&str, &str)] = &[
        ("name = \"x\"", "missing field"),
        (
            &good.replace("attempts = 25", "attempts = 25\nbogus = 1"),
            "unknown field `bogus`",
        ),
        (
            &good.replace("do = \"mqtt_brute_force\"", "do = \"teleport\""),
            "unknown variant `teleport`",
        ),
        (&good.replace("count = 1", "count = \"many\""), "count"),
        (
            &good.replace(
                "expect = [\"auth.brute_force.device\", \"auth.brute_force.source\"]",
                "expect = []",
            ),
            "expect must name",
        ),
        (
            &good.replace("class = \"camera\"", "class = \"pump\""),
            "reserved for the benign background",
        ),
        (
            &good.replace("at_s = 0", "at_s = \"soon\""),
            "at_s must be a number",
        ),
        (&good.replace("at_s = 0", "at_s = -3"), "between 0 and 3600"),
        (
            &good.replace("name = \"mqtt-brute-force\"", "name = \"Bad Name\""),
            "lowercase",
        ),
        (
            &good.replace("[target]\nclass = \"camera\"\ncount = 1\n", ""),
            "needs a [target]",
        ),
    ];
    for (text, want) in cases {
        let err = format!("{:#}", Scenario::parse(text).unwrap_err());
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
}

/// Facts about a plan checked against the detection contract's default thresholds.
struct Facts {
    logins_by_source: BTreeMap<u8, (usize, BTreeSet<String>, i64)>,
    publishes: usize,
    flows: Vec<FlowRecord>,
    indicators: usize,
    takeovers: usize,
    subscribes: usize,
    /// (identity presented, certificate's device, which certificate).
    tls_connects: Vec<(String, String, scenario::CertKind)>,
}

fn facts(plan: &scenario::Plan) -> Facts {
    let mut f = Facts {
        logins_by_source: BTreeMap::new(),
        publishes: 0,
        flows: Vec::new(),
        indicators: 0,
        takeovers: 0,
        subscribes: 0,
        tls_connects: Vec::new(),
    };
    let first = plan.actions.first().map_or(0, |a| a.at_ms);
    for a in &plan.actions {
        match &a.action {
            Action::Login { id, source, .. } => {
                let e = f.logins_by_source.entry(*source).or_default();
                e.0 += 1;
                e.1.insert(id.clone());
                e.2 = a.at_ms - first;
            }
            Action::Publish { .. } => f.publishes += 1,
            Action::Flows(r) => f.flows.extend(r.iter().cloned()),
            Action::Indicator(_) => f.indicators += 1,
            Action::Takeover { .. } => f.takeovers += 1,
            Action::Subscribe { .. } => f.subscribes += 1,
            Action::TlsConnect {
                identity,
                certificate_of,
                kind,
                ..
            } => f
                .tls_connects
                .push((identity.to_string(), certificate_of.to_string(), *kind)),
        }
    }
    f
}

#[test]
fn scenarios_plan_deterministically_and_exceed_the_contract_thresholds() {
    let population = Population::generate_exercise(11);
    for (index, s) in scenario::catalogue().unwrap().into_iter().enumerate() {
        let plan = s.plan(&population, 11, index).unwrap();
        assert_eq!(plan, s.plan(&population, 11, index).unwrap(), "{}", s.name);
        assert!(plan.actions.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(
            plan.last_ms <= 60_000,
            "{}: attacks fit in a minute",
            s.name
        );
        for id in &plan.involved {
            if let Some(d) = population.get(id)
                && let Some(t) = &s.target
                && !s.name.contains("spray")
            {
                assert_eq!(d.class, t.class);
            }
        }
        let f = facts(&plan);
        let window = |flows: &[FlowRecord], ms: i64, pick: &dyn Fn(&FlowRecord) -> bool| {
            // The largest number of matching records ending within any `ms` window.
            let ends: Vec<i64> = flows
                .iter()
                .filter(|r| pick(r))
                .map(|r| r.end.as_millis())
                .collect();
            ends.iter()
                .map(|&e| ends.iter().filter(|&&x| x >= e && x < e + ms).count())
                .max()
                .unwrap_or(0)
        };
        for rule in &s.expect {
            match rule.as_str() {
                "auth.brute_force.device" | "auth.brute_force.source" => {
                    let (n, ids, span) = f.logins_by_source.values().next().cloned().unwrap();
                    assert!(
                        n >= 10 && span <= 60_000,
                        "{}: {n} logins in {span} ms",
                        s.name
                    );
                    if rule.ends_with("device") {
                        assert_eq!(ids.len(), 1);
                    }
                }
                "actuation.uncommanded" | "rate.actuation_burst" => {
                    assert!(plan.involved.len() >= 5, "{}", s.name);
                    assert!(f.publishes >= plan.involved.len());
                }
                "flow.brute_force" => {
                    let n = window(&f.flows, 60_000, &|r| r.dst_port == 23 && r.protocol == 6);
                    assert!(n >= 20, "{}: {n}", s.name);
                }
                "flow.scan" => {
                    let dsts: BTreeSet<IpAddr> = f
                        .flows
                        .iter()
                        .filter(|r| r.dst.to_string().starts_with("198.18"))
                        .map(|r| r.dst)
                        .collect();
                    assert!(dsts.len() >= 50, "{}: {}", s.name, dsts.len());
                }
                "flow.flood" => {
                    let packets: u64 = f
                        .flows
                        .iter()
                        .filter(|r| r.dst.to_string().starts_with("192.0.2"))
                        .map(|r| r.packets)
                        .sum();
                    assert!(packets >= 10_000, "{}: {packets}", s.name);
                }
                "baseline.flow" => {
                    let bytes: u64 = f.flows.iter().map(|r| r.bytes).sum();
                    assert!(bytes > 1_000_000, "{}", s.name);
                }
                "policy.conduit" => {
                    assert!(
                        f.flows.iter().any(|r| !allowed(r)),
                        "{}: every flow is allowed",
                        s.name
                    );
                }
                "intel.indicator" => {
                    assert_eq!(f.indicators, 1);
                    let bundle = plan
                        .actions
                        .iter()
                        .find_map(|a| match &a.action {
                            Action::Indicator(b) => Some(b.clone()),
                            _ => None,
                        })
                        .unwrap();
                    let pattern = bundle["objects"][0]["pattern"].as_str().unwrap().to_owned();
                    assert!(
                        f.flows.iter().any(|r| pattern.contains(&r.dst.to_string())),
                        "{pattern}"
                    );
                }
                "identity.client_id_takeover" => assert_eq!(f.takeovers, 1),
                "identity.certificate_mismatch" => {
                    use scenario::CertKind;
                    // Both ways a certificate can fail the registry: another device's
                    // genuine certificate, and the device's own superseded one.
                    assert!(
                        f.tls_connects
                            .iter()
                            .any(|(id, of, k)| id != of && *k == CertKind::Registered),
                        "{}: {:?}",
                        s.name,
                        f.tls_connects
                    );
                    assert!(
                        f.tls_connects
                            .iter()
                            .any(|(id, of, k)| id == of && *k == CertKind::Superseded),
                        "{}: {:?}",
                        s.name,
                        f.tls_connects
                    );
                    let certs = plan.certificates();
                    for (id, of, kind) in &f.tls_connects {
                        assert!(plan.involved.contains(id) && plan.involved.contains(of));
                        assert!(certs.contains(&(of.clone(), *kind)));
                        // The device posed as with its old certificate has a current one.
                        assert!(certs.contains(&(of.clone(), CertKind::Registered)));
                    }
                    // One attempt per device: this is the certificate rule's to catch, not
                    // the brute-force thresholds'.
                    let ids: BTreeSet<&String> = f.tls_connects.iter().map(|t| &t.0).collect();
                    assert_eq!(ids.len(), f.tls_connects.len());
                }
                "mqtt.topic_abuse" => assert!(f.subscribes + f.publishes >= 1),
                "plausibility.range"
                | "plausibility.rate_of_change"
                | "plausibility.neighbours"
                | "policy.firmware_change" => assert!(f.publishes >= 1),
                other => panic!("{}: no check for {other}", s.name),
            }
        }
    }
    // A different seed picks different targets or addresses somewhere in the catalogue.
    let other = Population::generate_exercise(12);
    let differs = scenario::catalogue()
        .unwrap()
        .iter()
        .any(|s| s.plan(&population, 11, 0).unwrap() != s.plan(&other, 12, 0).unwrap());
    assert!(differs);
}

#[test]
fn tls_connect_steps_are_checked() {
    let base = |steps: &str| {
        format!(
            "name = \"t\"\ntitle = \"t\"\ndescription = \"t\"\nexpect = [\"identity.certificate_mismatch\"]\n\
             [target]\nclass = \"valve\"\ncount = 2\n{steps}"
        )
    };
    let ok = base("[[steps]]\ndo = \"tls_connect\"\nidentity = 1\ncertificate_of = 2\n");
    let scenario = Scenario::parse(&ok).unwrap();
    let population = Population::generate_exercise(5);
    let plan = scenario.plan(&population, 5, 0).unwrap();
    let involved: Vec<&String> = plan.involved.iter().collect();
    assert_eq!(involved.len(), 2);
    assert_eq!(
        plan.certificates().len(),
        1,
        "only the registered certificate of target 2"
    );
    for (steps, message) in [
        (
            "[[steps]]\ndo = \"tls_connect\"\nidentity = 2\ncertificate_of = 2\n",
            "genuine login",
        ),
        (
            "[[steps]]\ndo = \"tls_connect\"\nidentity = 3\ncertificate_of = 1\n",
            "identity must name a target",
        ),
        (
            "[[steps]]\ndo = \"tls_connect\"\nidentity = 1\ncertificate_of = 0\n",
            "certificate_of must name a target",
        ),
        (
            "[[steps]]\ndo = \"tls_connect\"\nidentity = 1\ncertificate_of = 2\ncertificate = \"stolen\"\n",
            "unknown variant",
        ),
    ] {
        let err = Scenario::parse(&base(steps)).unwrap_err();
        assert!(format!("{err:#}").contains(message), "{err:#}");
    }
}

#[test]
fn scoring_attributes_alerts_and_finds_false_ones() {
    let population = Population::generate_exercise(1);
    let plan = scenario::load("mqtt-brute-force")
        .unwrap()
        .plan(&population, 1, 0)
        .unwrap();
    let target = plan.involved.iter().next().unwrap().clone();
    let onset = T0;
    let ran = vec![(
        Ran {
            plan,
            onset,
            until: onset + 30_000,
        },
        Vec::new(),
    )];
    let alert = |rule: &str, device: Option<&str>, ts: i64| SeenAlert {
        id: format!("{rule}-{ts}"),
        rule: rule.to_owned(),
        device_id: device.map(str::to_owned),
        source: None,
        ts: Timestamp::from_millis(ts),
        last_ts: Timestamp::from_millis(ts),
        title: String::new(),
    };
    let alerts = vec![
        alert("auth.brute_force.device", Some(&target), onset + 3_600),
        alert("auth.brute_force.source", None, onset + 3_700),
        // Before onset: the background.
        alert("auth.brute_force.device", Some(&target), onset - 5_000),
        // The right time, another device.
        alert(
            "auth.brute_force.device",
            Some("x-siren-0001"),
            onset + 4_000,
        ),
        // Not a rule this scenario expects.
        alert("policy.new_device", Some(&target), onset + 4_000),
    ];
    let score = scenario::score(&ran, &alerts);
    let v = &score.scenarios[0];
    assert!(v.detected);
    assert_eq!(v.time_to_detect_s, Some(3.6));
    assert_eq!(
        v.rules_fired,
        ["auth.brute_force.device", "auth.brute_force.source"]
    );
    assert!(v.rules_missing.is_empty());
    assert_eq!(v.alerts.len(), 2);
    assert_eq!(score.false_alerts.len(), 3);
    // Nothing fired: not detected, every expected rule missing.
    let score = scenario::score(&ran, &[]);
    assert!(!score.scenarios[0].detected);
    assert_eq!(score.scenarios[0].rules_missing.len(), 2);
}

#[test]
fn payload_templates_render() {
    let now = Timestamp::from_millis(T0 + 1_234);
    assert_eq!(
        scenario::render("{id} {ts} {ts_ms} {ts_s} {n}", now, "x-meter-0001", 2),
        format!(
            "x-meter-0001 {} {} 1796083201.234 2",
            now.to_rfc3339(),
            T0 + 1_234
        )
    );
}

proptest::proptest! {
    #[test]
    fn scenario_parser_never_panics(text in "\\PC{0,400}") {
        let _ = Scenario::parse(&text);
    }

    #[test]
    fn scenario_parser_survives_mutations(cut in 0usize..2000, insert in "[a-z_=\\[\\]\"0-9 \n]{0,12}") {
        let base = CATALOGUE[1].1;
        let cut = cut.min(base.len());
        let cut = (0..=cut).rev().find(|&i| base.is_char_boundary(i)).unwrap_or(0);
        let text = format!("{}{}{}", &base[..cut], insert, &base[cut..]);
        let _ = Scenario::parse(&text);
    }

    #[test]
    fn encoders_never_exceed_a_datagram(n in 0usize..200, v6 in proptest::collection::vec(proptest::bool::ANY, 200)) {
        let records: Vec<FlowRecord> = (0..n)
            .map(|i| if v6[i] { record("2001:db8::7", "2001:db8::1", i as u64) } else { record("10.1.1.1", "10.101.0.10", i as u64) })
            .collect();
        for format in [FlowFormat::Ipfix, FlowFormat::NetflowV5] {
            let mut state = ExporterState::new(format, 1, T0);
            let msgs = state.encode(&records, T0);
            let mut templates = HashMap::new();
            let mut total = 0;
            for m in &msgs {
                // NetFlow v5's fixed 30 records (1,464 bytes) is its own limit.
                let limit = match format {
                    FlowFormat::Ipfix => crate::flow::MAX_DATAGRAM,
                    FlowFormat::NetflowV5 => 24 + 48 * crate::flow::V5_MAX_RECORDS,
                };
                proptest::prop_assert!(m.len() <= limit);
                if format == FlowFormat::Ipfix {
                    total += read_ipfix(m, &mut templates).len();
                } else {
                    total += u16::from_be_bytes([m[2], m[3]]) as usize;
                }
            }
            let expected = if format == FlowFormat::Ipfix { n } else { v6[..n].iter().filter(|b| !**b).count() };
            proptest::prop_assert_eq!(total, expected);
        }
    }
}
