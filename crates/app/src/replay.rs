//! In-process replay: the detection engine built from a [`Config`] exactly as the platform
//! builds it, fed what the broker and the flow listener would have produced, at simulated
//! time and without sockets. `citysec exercise soak` replays days of a city's benign
//! background through it in seconds to count false alerts per device-hour.
//!
//! Publishes go through the broker's own pure payload decoder (`ingest::mqtt::decode`) and
//! become the same telemetry and state events; flow records are matched to devices by
//! address as the flow listener does (the source's device, else the destination's).

use std::collections::HashMap;
use std::net::IpAddr;

use detect::{Engine, EngineStats};
use model::topic::Channel;
use model::{
    Alert, Device, DeviceId, Event, EventKind, FlowRecord, Sector, SecurityEvent,
    SecurityEventKind, Timestamp,
};

use crate::config::Config;

/// How often (in simulated time) the engine's idle state is evicted.
const TICK_EVERY_MS: i64 = 10_000;

/// What a replay counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub publishes: u64,
    pub flows: u64,
    pub security: u64,
    /// Publishes on a topic that is no registered device's, or whose payload did not
    /// decode (the broker would have refused or reported them).
    pub rejected: u64,
    pub engine: EngineStats,
}

/// The detection engine with a registry, fed at simulated time.
pub struct Replay {
    engine: Engine,
    sectors: HashMap<DeviceId, Sector>,
    by_address: HashMap<IpAddr, DeviceId>,
    /// Every alert raised or updated, latest version per alert id.
    alerts: HashMap<String, Alert>,
    scratch: Vec<Alert>,
    last_tick: i64,
    stats: ReplayStats,
}

impl Replay {
    /// Builds the engine from `config.detect` and registers `devices`.
    pub fn new(config: &Config, devices: &[Device]) -> Replay {
        let mut engine = Engine::new(config.detect.clone());
        let mut sectors = HashMap::new();
        let mut by_address = HashMap::new();
        for device in devices {
            engine.register_device(device.id.clone(), crate::platform::meta(device));
            sectors.insert(device.id.clone(), device.sector);
            for ip in &device.addresses {
                by_address.insert(*ip, device.id.clone());
            }
        }
        Replay {
            engine,
            sectors,
            by_address,
            alerts: HashMap::new(),
            scratch: Vec::new(),
            last_tick: i64::MIN,
            stats: ReplayStats::default(),
        }
    }

    fn process(&mut self, event: Event) {
        let now = event.ts.as_millis();
        if self.last_tick == i64::MIN {
            self.last_tick = now;
        } else if now - self.last_tick >= TICK_EVERY_MS {
            self.engine.tick(event.ts);
            self.last_tick = now;
        }
        self.engine.process(&event, &mut self.scratch);
        for alert in self.scratch.drain(..) {
            self.alerts.insert(alert.id.0.clone(), alert);
        }
    }

    /// A publish of `payload` on `topic` by the device the topic names, received at `ts`.
    pub fn publish(&mut self, topic: &str, payload: &[u8], ts: Timestamp) {
        self.stats.publishes += 1;
        let Some(parsed) = model::topic::parse(topic) else {
            self.stats.rejected += 1;
            return;
        };
        let Ok(id) = DeviceId::new(parsed.device_id) else {
            self.stats.rejected += 1;
            return;
        };
        let Some(&sector) = self.sectors.get(&id) else {
            self.stats.rejected += 1;
            return;
        };
        let decoded = match parsed.channel {
            Channel::Ack => ingest::mqtt::decode::decode_ack(payload, ts),
            Channel::Cmd => {
                self.stats.rejected += 1;
                return;
            }
            _ => ingest::mqtt::decode::decode(payload, ts),
        };
        let Ok(decoded) = decoded else {
            self.stats.rejected += 1;
            return;
        };
        let kind = match parsed.channel {
            Channel::Telemetry => EventKind::Telemetry {
                readings: decoded.readings,
            },
            _ => EventKind::State {
                readings: decoded.readings,
            },
        };
        self.process(Event {
            ts: decoded.ts.unwrap_or(ts),
            device_id: Some(id),
            sector: Some(sector),
            kind,
        });
    }

    /// A broker decision about `device` (a connect accepted, a disconnect) at `ts`.
    pub fn security(
        &mut self,
        device: &DeviceId,
        action: SecurityEventKind,
        peer: Option<String>,
        ts: Timestamp,
    ) {
        self.stats.security += 1;
        let sector = self.sectors.get(device).copied();
        self.process(Event {
            ts,
            device_id: Some(device.clone()),
            sector,
            kind: EventKind::Security(SecurityEvent {
                action,
                client_id: Some(device.to_string()),
                username: Some(device.to_string()),
                peer,
                topic: None,
                reason: None,
            }),
        });
    }

    /// A flow record, timed by its end.
    pub fn flow(&mut self, mut record: FlowRecord) {
        self.stats.flows += 1;
        let src = self.by_address.get(&record.src).cloned();
        let dst = self.by_address.get(&record.dst).cloned();
        let (device, peer) = match (src, dst) {
            (Some(s), d) => (Some(s), d),
            (None, d) => (d, None),
        };
        record.peer_device = peer;
        let sector = device.as_ref().and_then(|d| self.sectors.get(d).copied());
        self.process(Event {
            ts: record.end,
            device_id: device,
            sector,
            kind: EventKind::Flow(record),
        });
    }

    /// Loads indicators as a partner's feed would; returns the ones refused.
    pub fn indicators(
        &mut self,
        indicators: Vec<detect::Indicator>,
    ) -> Vec<detect::IndicatorError> {
        self.engine.upsert_indicators(indicators)
    }

    /// A broker decision as the broker would report it (for in-process scenario replay).
    pub fn broker_event(&mut self, device: Option<&DeviceId>, event: SecurityEvent, ts: Timestamp) {
        self.stats.security += 1;
        let sector = device.and_then(|d| self.sectors.get(d).copied());
        let device_id = device.filter(|d| self.sectors.contains_key(*d)).cloned();
        self.process(Event {
            ts,
            device_id,
            sector,
            kind: EventKind::Security(event),
        });
    }

    /// The alerts raised (each at its latest state), oldest first, and the counters.
    pub fn finish(self) -> (Vec<Alert>, ReplayStats) {
        let mut alerts: Vec<Alert> = self.alerts.into_values().collect();
        alerts.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.id.cmp(&b.id)));
        let mut stats = self.stats;
        stats.engine = self.engine.stats();
        (alerts, stats)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use model::{DeviceClass, DeviceId, DeviceStatus, FlowRecord, Sector, Timestamp};

    use super::Replay;
    use crate::config::Config;

    const T0: i64 = 1_796_083_200_000;

    fn siren() -> model::Device {
        model::Device {
            id: DeviceId::new("siren-0001").unwrap(),
            sector: Sector::PublicSafety,
            class: DeviceClass::Siren,
            zone: "ps-field".into(),
            owner: "public-safety".into(),
            vendor: "Whelen".into(),
            model: "WPS-2900".into(),
            firmware: "3.2.1".into(),
            location: None,
            addresses: vec!["10.1.1.1".parse().unwrap()],
            credentials: Vec::new(),
            status: DeviceStatus::Active,
            created_at: Timestamp::from_millis(T0),
        }
    }

    /// Publishes decode like the broker's and flows find their device by address; topics
    /// of unknown devices and undecodable payloads are counted, not processed.
    #[test]
    fn replay_decodes_publishes_and_matches_flows_by_address() {
        let config = Config::default_with_env(&HashMap::new()).unwrap();
        let mut replay = Replay::new(&config, &[siren()]);
        let t = |s: i64| Timestamp::from_millis(T0 + s * 1000);
        replay.publish(
            "city/public_safety/siren-0001/state",
            br#"{"sounding":true}"#,
            t(1),
        );
        replay.publish("city/public_safety/siren-9999/state", b"{}", t(2));
        replay.publish("city/public_safety/siren-0001/telemetry", b"not json", t(3));
        for i in 0..60u8 {
            replay.flow(FlowRecord {
                src: "10.1.1.1".parse().unwrap(),
                dst: std::net::IpAddr::from([198, 18, 0, i]),
                src_port: 40_000,
                dst_port: 23,
                protocol: 6,
                bytes: 120,
                packets: 2,
                tcp_flags: 2,
                start: t(10),
                end: t(10 + i64::from(i) / 4),
                exporter: None,
                peer_device: None,
            });
        }
        let (alerts, stats) = replay.finish();
        assert_eq!((stats.publishes, stats.rejected, stats.flows), (3, 2, 60));
        let rules: Vec<(&str, Option<&str>)> = alerts
            .iter()
            .map(|a| (a.rule.as_str(), a.device_id.as_ref().map(DeviceId::as_str)))
            .collect();
        assert!(
            rules.contains(&("actuation.uncommanded", Some("siren-0001"))),
            "{rules:?}"
        );
        assert!(
            rules.contains(&("flow.scan", Some("siren-0001"))),
            "{rules:?}"
        );
    }
}
