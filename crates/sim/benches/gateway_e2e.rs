//! End to end through the real platform (embedded broker, detection, store, gateway) with
//! the simulated city of each seed running around it:
//!
//! 1. the siren scenario: the seed's scenario siren (driven here as an MQTT client) reports
//!    `sounding` with no command, `ROUNDS` times; we time from the publish to the alert being
//!    in the store (polled every 1 ms) and to the signed all-clear arriving at the siren
//!    (which verifies it with the `verifier` crate and acknowledges it);
//! 2. command throughput: one-step commands from operators to the simulated street lights,
//!    EV chargers and door controllers (each signed, its counter taken from the store, audited
//!    before delivery, delivered over MQTT, verified and acknowledged by the device), with 1
//!    and with 8 submitters (each on its own devices, so per-device order is kept).
//!
//! `cargo bench -p sim --bench gateway_e2e` (`GATEWAY_BENCH_ROUNDS`, `GATEWAY_BENCH_COMMANDS`
//! override the sizes).

#[path = "../tests/it/harness.rs"]
mod harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use gateway::{CommandRequest, Principal};
use model::{DeviceClass, Timestamp};
use tokio::time::Instant;

use harness::{City, Siren, alert_stored, percentile};

const SEEDS: [u64; 3] = [1, 2, 3];
const DEVICES: usize = 300;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, samples: &mut [f64]) {
    samples.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name}: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        samples.len(),
        percentile(samples, 50.0),
        percentile(samples, 99.0),
        samples.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds = env("GATEWAY_BENCH_ROUNDS", 40);
    let commands = env("GATEWAY_BENCH_COMMANDS", 2000);
    let (mut to_alert, mut to_clear) = (Vec::new(), Vec::new());
    let mut throughput = Vec::new();
    for seed in SEEDS {
        let city = City::start(seed, DEVICES).await?;
        let gw = city.platform.gateway();
        let mut siren =
            Siren::connect(city.platform.mqtt_addr(), &city.siren, gw.public_key()).await?;
        siren.report(false).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        for k in 1..=rounds as u32 {
            let t0 = siren.report(true).await?;
            let alert = tokio::spawn(alert_stored(
                city.platform.store(),
                city.siren.id.clone(),
                k,
                Duration::from_secs(5),
            ));
            let (at, payload) = siren.next_command(Duration::from_secs(5)).await?;
            siren
                .verify_and_ack(&payload)
                .await?
                .map_err(|r| anyhow::anyhow!("the siren refused the all-clear: {r}"))?;
            let alerted = alert.await??;
            to_alert.push(ms(alerted - t0));
            to_clear.push(ms(at - t0));
            siren.report(false).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Throughput: one-step commands to the simulated actuators.
        let mut targets: Vec<(String, &'static str)> = Vec::new();
        for (class, action) in [
            (DeviceClass::StreetLight, "on"),
            (DeviceClass::EvCharger, "enable"),
            (DeviceClass::AccessControl, "lock"),
        ] {
            targets.extend(
                city.population
                    .of_class(class)
                    .map(|d| (d.id.to_string(), action)),
            );
        }
        for submitters in [1usize, 8] {
            let acked_before = gw.stats.acked.load(Ordering::Relaxed);
            let refused_before = city.stats.snapshot().cmds_refused;
            let started = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..submitters {
                let gw = gw.clone();
                let mine: Vec<(String, &'static str)> = targets
                    .iter()
                    .skip(w)
                    .step_by(submitters)
                    .cloned()
                    .collect();
                let n = commands / submitters;
                tasks.push(tokio::spawn(async move {
                    let who = Principal::new(format!("operator-{w}"), "operator");
                    for i in 0..n {
                        let (device, action) = &mine[i % mine.len()];
                        let request = CommandRequest {
                            devices: vec![device.clone()],
                            action: (*action).to_owned(),
                            params: serde_json::Map::new(),
                            advisory: None,
                            reason: None,
                        };
                        gw.submit(&who, request, Timestamp::now()).await?;
                    }
                    anyhow::Ok(n)
                }));
            }
            let mut sent = 0;
            for t in tasks {
                sent += t.await??;
            }
            let submitted = started.elapsed();
            let deadline = Instant::now() + Duration::from_secs(30);
            while gw.stats.acked.load(Ordering::Relaxed) - acked_before < sent as u64
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let all_acked = started.elapsed();
            let acked = gw.stats.acked.load(Ordering::Relaxed) - acked_before;
            let refused = city.stats.snapshot().cmds_refused - refused_before;
            println!(
                "seed {seed}, {submitters} submitter(s): {sent} commands submitted in {:.2} s = {:.0} commands/s; {acked} acknowledged after {:.2} s = {:.0} commands/s; {refused} refused by devices",
                submitted.as_secs_f64(),
                sent as f64 / submitted.as_secs_f64(),
                all_acked.as_secs_f64(),
                acked as f64 / all_acked.as_secs_f64(),
            );
            throughput.push((submitters, sent as f64 / submitted.as_secs_f64()));
        }
        let report = city.platform.store().verify_audit().await?;
        println!(
            "seed {seed}: audit chain intact={} records={}",
            report.is_intact(),
            report.records
        );
        drop(siren);
        city.stop().await?;
    }
    println!("siren scenario, seeds {SEEDS:?}, {rounds} uncommanded actuations each:");
    summary("  actuation -> alert stored", &mut to_alert);
    summary(
        "  actuation -> all-clear delivered at the siren",
        &mut to_clear,
    );
    for submitters in [1usize, 8] {
        let rates: Vec<f64> = throughput
            .iter()
            .filter(|(s, _)| *s == submitters)
            .map(|(_, r)| r.round())
            .collect();
        println!("throughput, {submitters} submitter(s): {rates:?} commands/s per seed");
    }
    Ok(())
}
