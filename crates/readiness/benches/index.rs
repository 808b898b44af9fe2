//! Time to compute the readiness index for a city of 100,000 devices and a year of
//! incidents, with a vendor firmware catalogue, a year of exercises and sharing counts
//! (`cargo bench -p readiness --bench index`). Results are written down in
//! `bench/results/2026-12-01-vm/readiness.md`.

use criterion::{Criterion, criterion_group, criterion_main};
use model::{Credential, Device, DeviceClass, DeviceId, DeviceStatus, Severity, Timestamp};
use readiness::{
    DeviceInput, ExerciseRun, Exercises, FirmwareCatalogue, FirmwareRelease, IncidentInput,
    Incidents, Input, IntelCounts, Observed, compute,
};

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

fn city(n: usize) -> Vec<Device> {
    (0..n)
        .map(|i| {
            let class = DeviceClass::ALL[i % DeviceClass::ALL.len()];
            Device {
                id: DeviceId::new(format!("dev-{i:06}")).unwrap(),
                sector: class.sector(),
                class,
                zone: format!("zone-{}", i % 40),
                owner: "city".into(),
                vendor: format!("vendor-{}", i % 7),
                model: format!("{}-m{}", class.as_str(), i % 3),
                firmware: format!("{}.{}.{}", 1 + i % 3, i % 11, i % 5),
                addresses: vec![],
                location: None,
                credentials: vec![if i % 4 == 0 {
                    Credential::Secret {
                        hash: "$argon2id$v=19$x".into(),
                    }
                } else {
                    Credential::Certificate {
                        sha256: "ab".repeat(32),
                    }
                }],
                status: if i % 97 == 0 {
                    DeviceStatus::Revoked
                } else {
                    DeviceStatus::Active
                },
                created_at: Timestamp::from_millis(0),
            }
        })
        .collect()
}

fn incidents(n: usize) -> Vec<IncidentInput> {
    (0..n as i64)
        .map(|i| {
            let detected = NOW - (i * 365 * DAY) / n as i64;
            IncidentInput {
                sector: Some(model::Sector::ALL[(i % 6) as usize]),
                severity: if i % 10 == 0 {
                    Severity::Critical
                } else {
                    Severity::High
                },
                first_event: Timestamp::from_millis(detected - (i % 30) * 60_000),
                detected: Timestamp::from_millis(detected),
                acknowledged: Some(Timestamp::from_millis(detected + (i % 50) * 60_000)),
                contained: Some(Timestamp::from_millis(detected + (i % 9) * 3_600_000)),
                resolved: (i % 5 != 0)
                    .then(|| Timestamp::from_millis(detected + (i % 90) * 3_600_000)),
            }
        })
        .collect()
}

/// The vendors' latest for two of the three models of every class and vendor (the third
/// falls back to the fleet's newest), released 10 to 400 days ago.
fn catalogue() -> FirmwareCatalogue {
    let mut entries = Vec::new();
    for vendor in 0..7 {
        for class in DeviceClass::ALL {
            for m in 0..2 {
                entries.push(FirmwareRelease {
                    vendor: format!("vendor-{vendor}"),
                    model: Some(format!("{}-m{m}", class.as_str())),
                    class: None,
                    latest: format!("3.{}.0", (vendor + m) % 11),
                    released: Timestamp::from_millis(NOW - (10 + 39 * (vendor + m) as i64) * DAY),
                });
            }
        }
    }
    FirmwareCatalogue::new(entries).unwrap()
}

fn bench(c: &mut Criterion) {
    let devices = city(100_000);
    let catalogue = catalogue();
    // An exercise a month, 13 scenarios each.
    let runs: Vec<ExerciseRun> = (0..12)
        .map(|m| ExerciseRun {
            at: Timestamp::from_millis(NOW - m * 30 * DAY),
            scenarios: 13,
            detected: 13 - (m % 3) as u32,
            median_time_to_detect_s: Some(1.0 + m as f64),
        })
        .collect();
    let observed: Vec<Observed> = (0..devices.len() as i64)
        .map(|i| Observed {
            last_seen: (i % 13 != 0).then(|| Timestamp::from_millis(NOW - (i % 40) * 60_000)),
            connect_via_certificate: Some(i % 4 != 0),
        })
        .collect();
    let history: Vec<(Timestamp, f64)> = (0..365)
        .map(|d| (Timestamp::from_millis(NOW - d * DAY), 50.0))
        .collect();
    let mut group = c.benchmark_group("readiness");
    group.sample_size(20);
    for (name, n) in [
        ("100k_devices_10k_incidents", 10_000),
        ("100k_devices_100k_incidents", 100_000),
    ] {
        let incidents = incidents(n);
        group.bench_function(name, |b| {
            b.iter(|| {
                let input = Input {
                    now: Timestamp::from_millis(NOW),
                    devices: devices
                        .iter()
                        .zip(&observed)
                        .map(|(device, observed)| DeviceInput {
                            device,
                            observed: *observed,
                        })
                        .collect(),
                    incidents: Incidents::Lifecycle(incidents.clone()),
                    exercises: Some(Exercises {
                        runs: runs.clone(),
                        warning_drills: vec![Timestamp::from_millis(NOW - 40 * DAY)],
                    }),
                    intel: Some(IntelCounts {
                        shared: 12,
                        received: 340,
                    }),
                    firmware: &catalogue,
                    conduits: Some(readiness::Conduits {
                        zones: (0..30).map(|z| format!("zone-{z}")).collect(),
                        any_zone: false,
                    }),
                    history: history.clone(),
                };
                compute(&input)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
