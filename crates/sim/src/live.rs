//! The benign background of an exercise, played live next to the simulated devices: the
//! flow exporter sending every device's benign flows as they happen, and a short script of
//! honest events early in the run (a maintenance session ending in a restart, an outage, a
//! firmware update from the vendor's server), so false alerts on them are measured too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use model::Timestamp;
use tokio::sync::watch;

use crate::background::{self, LifeEvent, LifeKind};
use crate::flow::FlowExporter;
use crate::population::Population;
use crate::runner::{Inject, SimHandle};
use crate::scenario::BENIGN_LIFE_CLASSES;

/// How often the live exporter sends what became due.
pub const EXPORT_EVERY: Duration = Duration::from_secs(2);

/// Devices currently off the network (population index to Unix ms they return).
#[derive(Debug, Default)]
pub struct Offline(Mutex<HashMap<usize, i64>>);

impl Offline {
    pub fn set(&self, index: usize, until_ms: i64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, until_ms);
    }

    pub fn is_offline(&self, index: usize, at_ms: i64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&index)
            .is_some_and(|&until| at_ms < until)
    }
}

/// Sends every device's benign flows as their periods end until `stop`.
pub async fn export_benign_flows(
    population: Arc<Population>,
    seed: u64,
    exporter: Arc<tokio::sync::Mutex<FlowExporter>>,
    offline: Arc<Offline>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut from = Timestamp::now().as_millis();
    let mut tick = tokio::time::interval(EXPORT_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        let to = Timestamp::now().as_millis();
        let records = background::flows(&population, seed, from, to, &|i, at| {
            offline.is_offline(i, at)
        });
        from = to;
        exporter.lock().await.send(&records, to).await?;
    }
}

/// The honest events an exercise plays in its first `lead_ms`, on devices of
/// [`BENIGN_LIFE_CLASSES`] (picked by seed): a maintenance session on a pump, an outage of
/// a weather station, a firmware update of an air-quality sensor. Times are relative to
/// the start of the run.
pub fn scripted_life(population: &Population, seed: u64, lead_ms: i64) -> Vec<LifeEvent> {
    let mut out = Vec::new();
    let pick = |class, salt| {
        let all: Vec<usize> = population
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.class == class)
            .map(|(i, _)| i)
            .collect();
        (!all.is_empty())
            .then(|| all[(background::draw(seed, salt, 0, 0x11fe) * all.len() as f64) as usize])
    };
    let [pump, weather, air] = BENIGN_LIFE_CLASSES;
    if let Some(device) = pick(pump, 1) {
        out.push(LifeEvent {
            at_ms: lead_ms / 6,
            device,
            kind: LifeKind::Maintenance {
                duration_ms: (lead_ms / 3).max(5_000),
                restart_ms: 5_000,
            },
        });
    }
    if let Some(device) = pick(weather, 2) {
        out.push(LifeEvent {
            at_ms: lead_ms / 4,
            device,
            kind: LifeKind::Offline {
                duration_ms: (lead_ms / 3).max(5_000),
            },
        });
    }
    if let Some(device) = pick(air, 3) {
        out.push(LifeEvent {
            at_ms: lead_ms / 3,
            device,
            kind: LifeKind::FirmwareUpdate {
                firmware: background::next_firmware(&population.devices[device]),
                restart_ms: 5_000,
            },
        });
    }
    out
}

/// Plays `events` (times relative to `start`, Unix ms): the flows they cause go to the
/// exporter, the devices drop off and come back through their own connections.
pub async fn play_life(
    events: Vec<LifeEvent>,
    start: i64,
    population: Arc<Population>,
    seed: u64,
    handle: SimHandle,
    exporter: Option<Arc<tokio::sync::Mutex<FlowExporter>>>,
    offline: Arc<Offline>,
) -> Result<()> {
    for event in events {
        let at = start + event.at_ms;
        let wait = at - Timestamp::now().as_millis();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let device = &population.devices[event.device];
        let shifted = LifeEvent {
            at_ms: at,
            ..event.clone()
        };
        let flows = background::life_flows(device, &shifted, seed);
        match event.kind {
            LifeKind::Offline { duration_ms } => {
                tracing::debug!(device_id = %device.id, duration_ms, "benign: device offline");
                offline.set(event.device, at + duration_ms);
                handle
                    .inject(
                        &device.id,
                        Inject::Offline {
                            duration: Duration::from_millis(duration_ms as u64),
                            clean: false,
                        },
                    )
                    .await;
            }
            LifeKind::Maintenance {
                duration_ms,
                restart_ms,
            } => {
                tracing::debug!(device_id = %device.id, duration_ms, "benign: maintenance window");
                if let Some(exporter) = &exporter {
                    let now = Timestamp::now().as_millis();
                    let (due, later): (Vec<_>, Vec<_>) = flows
                        .into_iter()
                        .partition(|r| r.end.as_millis() <= now + 1);
                    exporter.lock().await.send(&due, now).await?;
                    // The session's later records go out as they end.
                    for record in later {
                        let wait = record.end.as_millis() - Timestamp::now().as_millis();
                        if wait > 0 {
                            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                        }
                        let now = Timestamp::now().as_millis();
                        exporter.lock().await.send(&[record], now).await?;
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(duration_ms as u64)).await;
                }
                let back = Timestamp::now().as_millis() + restart_ms;
                offline.set(event.device, back);
                handle
                    .inject(
                        &device.id,
                        Inject::Offline {
                            duration: Duration::from_millis(restart_ms as u64),
                            clean: true,
                        },
                    )
                    .await;
            }
            LifeKind::FirmwareUpdate { .. } if exporter.is_none() => {
                // Without flows the platform cannot see the download from the vendor's
                // server, so an honest update would look like tampering: none is played.
                tracing::debug!(device_id = %device.id, "benign: no firmware update without flow export");
            }
            LifeKind::FirmwareUpdate {
                firmware,
                restart_ms,
            } => {
                tracing::debug!(device_id = %device.id, %firmware, "benign: firmware update");
                if let Some(exporter) = &exporter {
                    // The download is reported when it ends: now.
                    let now = Timestamp::now().as_millis();
                    let mut flows = flows;
                    for r in &mut flows {
                        let len = r.end.as_millis() - r.start.as_millis();
                        r.end = Timestamp::from_millis(now);
                        r.start = Timestamp::from_millis(now - len);
                    }
                    exporter.lock().await.send(&flows, now).await?;
                }
                // Let the collector see the download before the device reports.
                tokio::time::sleep(Duration::from_secs(2)).await;
                offline.set(event.device, Timestamp::now().as_millis() + restart_ms);
                handle
                    .inject(
                        &device.id,
                        Inject::Firmware {
                            version: firmware,
                            restart: Duration::from_millis(restart_ms as u64),
                        },
                    )
                    .await;
            }
        }
    }
    Ok(())
}
