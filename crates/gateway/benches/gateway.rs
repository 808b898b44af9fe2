//! The pure costs per command: the policy decision, Ed25519 signing of one device's copy,
//! and the device-side verification (`verifier`). The full path with the store's audit log
//! and MQTT delivery is measured by `cargo bench -p sim --bench gateway_e2e`.
//!
//! `cargo bench -p gateway --bench gateway`

use criterion::{Criterion, criterion_group, criterion_main};
use gateway::{CommandRequest, GatewayConfig, Principal, Signer, Target, policy};
use model::{DeviceClass, DeviceId, Timestamp};

struct NoWarnings;

impl gateway::AdvisoryCheck for NoWarnings {
    fn is_authorised_warning(&self, _: &str) -> bool {
        false
    }
}

fn bench(c: &mut Criterion) {
    let config = GatewayConfig::default();
    let signer = Signer::from_seed(&[5u8; 32]);
    let device = DeviceId::new("light-0001").unwrap();
    let mut params = serde_json::Map::new();
    params.insert("dim_pct".into(), 40.into());
    let now = Timestamp::from_millis(1_790_000_000_000);
    let request = CommandRequest {
        devices: vec!["light-0001".into()],
        action: "dim".into(),
        params: params.clone(),
        advisory: None,
        reason: None,
    };
    let targets = [Target {
        id: device.clone(),
        sector: DeviceClass::StreetLight.sector(),
        class: DeviceClass::StreetLight,
        revoked: false,
    }];
    let alice = Principal::new("alice", "operator");
    c.bench_function("policy decide (1 device)", |b| {
        b.iter(|| {
            policy::check_request(&config, &request).unwrap();
            policy::decide(&config, &alice, &request, &targets, now, &NoWarnings).unwrap()
        })
    });
    let envelope = |counter| gateway::Envelope {
        device: &device,
        counter,
        expires_at: now.saturating_add_ms(30_000),
        issued_at: now,
        command_id: "cmd-0000000000-abcdef-1",
        action: "dim",
        params: &params,
    };
    c.bench_function("sign one device's command", |b| {
        b.iter(|| signer.encode(&envelope(7)))
    });
    let payload = signer.encode(&envelope(7));
    let key = signer.public_key();
    c.bench_function("verify at the device", |b| {
        b.iter(|| {
            let mut v = verifier::Verifier::new(&key, 0).unwrap();
            v.check("light-0001", &payload, 1_790_000_000_001)
                .unwrap()
                .counter
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
