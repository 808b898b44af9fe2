//! Feeding the readiness index from live data: a bus consumer keeps, per device, when it was
//! last heard from and how its last connect authenticated; [`ReadinessService`] gathers the
//! registry, that state, the incidents of the last year (or, while the correlator has made
//! none, one pseudo-incident per alert), the exercise results posted to `/api/v1/exercises`
//! and issued exercise advisories, the intelligence shared and received in the intel store,
//! the vendor firmware catalogue and the stored history, and runs `readiness::compute`.
//! A background task records the index every `interval_s`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bus::Message;
use model::{AdvisoryMsgType, AdvisoryStatus, DeviceId, EventKind, SecurityEventKind, Timestamp};
use readiness::{DeviceInput, Exercises, IncidentInput, Incidents, Input, Observed};
use serde::{Deserialize, Serialize};
use store::{AdvisoryQuery, AlertQuery, ReadinessRecord, Store};
use tokio::sync::watch;
use web::PlatformError;

use crate::directory::Directory;

/// `[readiness]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadinessConfig {
    /// How often the index is computed and kept in the history, in seconds.
    pub interval_s: u64,
    /// The vendor firmware catalogue (format in `config/firmware.toml`); a relative path
    /// is relative to the config file. Without it, every device's firmware is compared
    /// with the newest version in the fleet.
    pub firmware_catalogue: Option<std::path::PathBuf>,
}

impl Default for ReadinessConfig {
    fn default() -> ReadinessConfig {
        ReadinessConfig {
            interval_s: 3600,
            firmware_catalogue: None,
        }
    }
}

/// What the event stream showed per device.
#[derive(Debug, Default)]
pub struct Tracker {
    seen: Mutex<HashMap<DeviceId, Observed>>,
}

impl Tracker {
    fn observe(&self, events: &[Arc<Message>]) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for message in events {
            let Message::Event(event) = message.as_ref() else {
                continue;
            };
            let Some(id) = &event.device_id else { continue };
            let entry = seen.entry(id.clone()).or_default();
            if entry.last_seen.is_none_or(|ts| ts < event.ts) {
                entry.last_seen = Some(event.ts);
            }
            if let EventKind::Security(sec) = &event.kind
                && sec.action == SecurityEventKind::ConnectAccepted
            {
                let reason = sec.reason.as_deref().unwrap_or("");
                entry.connect_via_certificate = Some(reason.ends_with("certificate"));
            }
        }
    }

    fn get(&self, id: &DeviceId) -> Observed {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(id).copied().unwrap_or_default()
    }
}

/// Consumes `obs.*` for the tracker until the bus closes.
pub async fn track(mut sub: Box<dyn bus::Subscription>, tracker: Arc<Tracker>) {
    while let Some(batch) = sub.next_batch(4096).await {
        tracker.observe(&batch);
    }
}

pub struct ReadinessService {
    pub store: Arc<dyn Store>,
    pub directory: Arc<Directory>,
    pub tracker: Arc<Tracker>,
    /// The conduits of `[detect]`'s zone plan.
    pub conduits: Vec<detect::ConduitConfig>,
    /// The vendors' latest firmware (`[readiness] firmware_catalogue`).
    pub firmware: readiness::FirmwareCatalogue,
    /// Where shared and received intelligence is counted, from `[taxii]`.
    pub intel: IntelSources,
}

/// The intel store collections the sharing indicator counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntelSources {
    /// The sharing collection (what `intel::publish` writes and partners read).
    pub shared: Vec<String>,
    /// The copies of partner feeds (`intel::feed_collection`) and the city's other
    /// collections partners may write to.
    pub received: Vec<String>,
}

impl IntelSources {
    pub fn from_config(taxii: &crate::intel::config::TaxiiConfig) -> IntelSources {
        let key = |id: &str| format!("{}/{id}", taxii.root);
        IntelSources {
            shared: taxii
                .collections
                .iter()
                .filter(|c| c.sharing)
                .map(|c| key(&c.id))
                .collect(),
            received: taxii
                .feeds
                .iter()
                .map(|f| crate::intel::feed_collection(&f.name))
                .chain(
                    taxii
                        .collections
                        .iter()
                        .filter(|c| !c.sharing && !c.write.is_empty())
                        .map(|c| key(&c.id)),
                )
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.shared.is_empty() && self.received.is_empty()
    }
}

const DAY_MS: i64 = 86_400_000;
/// The most alerts read as pseudo-incidents for one computation.
const MAX_ALERTS: usize = 200_000;

impl ReadinessService {
    /// Computes the index now.
    pub async fn index(&self) -> Result<readiness::Index, PlatformError> {
        let now = Timestamp::now();
        let devices = self.directory.snapshot();
        let inputs: Vec<DeviceInput> = devices
            .iter()
            .map(|device| DeviceInput {
                device: device.as_ref(),
                observed: self.tracker.get(&device.id),
            })
            .collect();
        let year_ago = now.saturating_sub_ms(365 * DAY_MS);
        let lifecycle = self.incidents_since(year_ago).await?;
        // Until the correlator has made incidents, one pseudo-incident per alert.
        let mut incidents = Vec::new();
        let mut before = None;
        loop {
            let page = self
                .store
                .list_alerts(&AlertQuery {
                    since: Some(year_ago),
                    before,
                    limit: 10_000,
                    ..AlertQuery::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            before = Some(last.ts);
            let full = page.len() == 10_000;
            for alert in &page {
                let sector = alert
                    .device_id
                    .as_ref()
                    .and_then(|id| self.directory.lookup(id.as_str()))
                    .map(|d| d.sector);
                let first_event = alert
                    .evidence
                    .iter()
                    .map(|e| e.ts)
                    .min()
                    .unwrap_or(alert.ts)
                    .min(alert.ts);
                incidents.push(IncidentInput {
                    sector,
                    severity: alert.severity,
                    first_event,
                    detected: alert.ts,
                    acknowledged: None,
                    contained: None,
                    resolved: None,
                });
            }
            if !full || incidents.len() >= MAX_ALERTS || !lifecycle.is_empty() {
                break;
            }
        }
        let incidents = if lifecycle.is_empty() {
            Incidents::DerivedFromAlerts(incidents)
        } else {
            Incidents::Lifecycle(lifecycle)
        };
        let warning_drills = self
            .store
            .list_advisories(&AdvisoryQuery {
                state: None,
                issued: true,
                limit: 10_000,
                after: None,
            })
            .await?
            .into_iter()
            .filter(|a| {
                a.status == AdvisoryStatus::Exercise && a.msg_type == AdvisoryMsgType::Alert
            })
            .filter_map(|a| a.issued_at.filter(|ts| *ts >= year_ago))
            .collect();
        let runs = self
            .store
            .list_exercises(Some(year_ago), 10_000)
            .await?
            .iter()
            .map(exercise_run)
            .collect();
        let intel = self.intel_counts(now).await?;
        let history = self
            .store
            .list_readiness(Some(now.saturating_sub_ms(31 * DAY_MS)), 10_000)
            .await?
            .into_iter()
            .filter_map(|r| r.score.map(|s| (r.ts, s)))
            .collect();
        Ok(readiness::compute(&Input {
            now,
            devices: inputs,
            incidents,
            exercises: Some(Exercises {
                runs,
                warning_drills,
            }),
            intel,
            firmware: &self.firmware,
            conduits: (!self.conduits.is_empty()).then(|| readiness::Conduits {
                zones: self
                    .conduits
                    .iter()
                    .flat_map(|c| [c.from.clone(), c.to.clone()])
                    .collect(),
                any_zone: self.conduits.iter().any(|c| c.from == "*" || c.to == "*"),
            }),
            history,
        }))
    }

    /// Objects shared and received in the last 30 days, or `None` when `[taxii]` has no
    /// sharing collection, partner feed or collection partners write to.
    async fn intel_counts(
        &self,
        now: Timestamp,
    ) -> Result<Option<readiness::IntelCounts>, PlatformError> {
        if self.intel.is_empty() {
            return Ok(None);
        }
        let since_us = now
            .saturating_sub_ms(30 * DAY_MS)
            .as_millis()
            .saturating_mul(1000);
        let mut counts = readiness::IntelCounts {
            shared: 0,
            received: 0,
        };
        for (keys, total) in [
            (&self.intel.shared, &mut counts.shared),
            (&self.intel.received, &mut counts.received),
        ] {
            for key in keys {
                *total += self.store.intel_count(key, since_us).await?;
            }
        }
        Ok(Some(counts))
    }

    /// The incidents created since `since`, as the index needs them (newest first, paged
    /// by sequence).
    async fn incidents_since(&self, since: Timestamp) -> Result<Vec<IncidentInput>, PlatformError> {
        let mut out = Vec::new();
        let mut before_seq = None;
        loop {
            let page = self
                .store
                .list_incidents(&store::IncidentQuery {
                    before_seq,
                    limit: 1_000,
                    ..store::IncidentQuery::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            before_seq = last.id.seq();
            let full = page.len() == 1_000;
            let mut older = false;
            for incident in &page {
                if incident.created_at < since {
                    older = true;
                    continue;
                }
                let times = &incident.times;
                out.push(IncidentInput {
                    sector: incident
                        .devices
                        .first()
                        .and_then(|id| self.directory.lookup(id.as_str()))
                        .map(|d| d.sector),
                    severity: incident.severity,
                    first_event: times.first_evidence,
                    detected: times.first_alert,
                    acknowledged: times.acknowledged,
                    contained: times.contained,
                    resolved: times.resolved.or(times.closed),
                });
            }
            if !full || older || before_seq.is_none() || out.len() >= MAX_ALERTS {
                break;
            }
        }
        Ok(out)
    }

    /// Computes the index and keeps it in the history.
    pub async fn record(&self) -> Result<readiness::Index, PlatformError> {
        let index = self.index().await?;
        let body = serde_json::to_value(&index)
            .map_err(|e| PlatformError::internal(format!("readiness index: {e}")))?;
        self.store
            .append_readiness(&ReadinessRecord {
                ts: index.computed_at,
                score: index.city.score,
                body,
            })
            .await?;
        Ok(index)
    }
}

#[async_trait]
impl web::Readiness for ReadinessService {
    async fn compute(&self, history: usize) -> Result<serde_json::Value, PlatformError> {
        let index = self.index().await?;
        let mut value = serde_json::to_value(&index)
            .map_err(|e| PlatformError::internal(format!("readiness index: {e}")))?;
        let past = self.store.list_readiness(None, history).await?;
        value["indicators"] = serde_json::to_value(readiness::INDICATORS)
            .map_err(|e| PlatformError::internal(format!("readiness indicators: {e}")))?;
        value["history"] = past
            .iter()
            .map(|r| serde_json::json!({ "ts": r.ts, "score": r.score }))
            .collect();
        Ok(value)
    }
}

/// A stored exercise as the index scores it.
fn exercise_run(record: &model::ExerciseRecord) -> readiness::ExerciseRun {
    let result = &record.result;
    let mut ttd: Vec<f64> = result
        .scenarios
        .iter()
        .filter(|s| s.detected)
        .filter_map(|s| s.time_to_detect_s)
        .collect();
    ttd.sort_by(f64::total_cmp);
    readiness::ExerciseRun {
        at: result.finished,
        scenarios: u32::try_from(result.scenarios.len()).unwrap_or(u32::MAX),
        detected: u32::try_from(result.detected()).unwrap_or(u32::MAX),
        median_time_to_detect_s: ttd.get(ttd.len() / 2).copied(),
    }
}

/// Records the index every `interval` until shutdown.
pub async fn recorder(
    service: Arc<ReadinessService>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.tick().await; // the first tick is immediate; the platform has just started
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(err) = service.record().await {
                    tracing::warn!(error = %err, "failed to record the readiness index");
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}
