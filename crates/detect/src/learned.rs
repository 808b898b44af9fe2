//! What an engine has learned, as a value that outlives it: per-device reading baselines
//! (mean, spread and range, sensor noise, offset from the neighbours, the last value),
//! when each device was first seen, the firmware it last reported, the destinations it
//! used while learning, the per-class baselines, the learned ratios of the totals rules
//! and the flow anomaly models.
//!
//! A detection worker that takes a partition over from one that died, or a process that
//! restarts, loads the last [`Learned`] of that partition before replaying the recent
//! events, so a device that learned for weeks is not back in its learning period (where a
//! new destination is not an alert) and a sensor's baseline does not start from nothing.
//!
//! Windows (rates, brute force, scans, floods) are not part of it: they span minutes, and
//! the replay of the recent events rebuilds them. Registry facts (class, zone, addresses,
//! credentials, quarantine) are not either: the registry is their source.
//!
//! Everything is keyed by name (device id, reading name, class, zone, totals rule id), not
//! by the engine's internal indices, so a snapshot loads into an engine with another
//! registration order, other rules or another zone plan: what no longer exists is skipped.

use serde::{Deserialize, Serialize};

use model::{DeviceClass, DeviceId, Timestamp};

use crate::Engine;

/// The format version written into every snapshot; a snapshot of another version is
/// refused (the engine then learns from scratch).
pub const LEARNED_VERSION: u32 = 1;

/// A snapshot of what an engine has learned (see the module docs). Serialise it with
/// serde; its fields are the engine's business.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    pub(crate) version: u32,
    /// The latest event time the engine had processed when the snapshot was taken.
    pub(crate) as_of: i64,
    pub(crate) devices: Vec<LearnedDevice>,
    pub(crate) classes: Vec<ClassBaseline>,
    pub(crate) totals: Vec<TotalsRatio>,
    pub(crate) models: Vec<FlowModel>,
}

/// Running statistics: weight, mean, sum of squared deviations, min, max.
pub(crate) type StatsTuple = [f64; 5];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LearnedDevice {
    pub(crate) id: String,
    pub(crate) first_seen: i64,
    pub(crate) last_command: i64,
    pub(crate) last_update_flow: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) firmware: String,
    /// The actuator's last state: known, on, level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) actuation: Option<(bool, f32)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) readings: Vec<LearnedReading>,
    /// Destinations (hashed addresses) used while the device learned, and whether there
    /// were more than are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) known: Vec<u32>,
    #[serde(default)]
    pub(crate) known_full: bool,
    /// Bytes sent to destinations outside `known` so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) unknown_bytes: Vec<(u32, u64)>,
    #[serde(default)]
    pub(crate) last_flow: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LearnedReading {
    pub(crate) name: String,
    /// The last value taken as the reference (none before the first, or if not finite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last: Option<f32>,
    pub(crate) last_ts: i64,
    /// Weight, mean, m2, min, max (f32 as the engine keeps them).
    pub(crate) stats: [f32; 5],
    pub(crate) step: f32,
    pub(crate) steps: u16,
    pub(crate) offset: f32,
    pub(crate) offset_n: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClassBaseline {
    pub(crate) class: DeviceClass,
    pub(crate) reading: String,
    pub(crate) stats: StatsTuple,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TotalsRatio {
    pub(crate) rule: String,
    pub(crate) ratio: StatsTuple,
    pub(crate) members: (usize, usize),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FlowModel {
    pub(crate) class: DeviceClass,
    /// The destination zone's name (`internet` outside every zone).
    pub(crate) zone: String,
    pub(crate) service: u16,
    pub(crate) n: f64,
    pub(crate) mean: [f64; crate::anomaly::FEATURES],
    pub(crate) m2: [f64; crate::anomaly::FEATURES],
}

/// What loading a snapshot did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Devices whose learned state was loaded.
    pub devices: usize,
    /// Devices in the snapshot the engine does not know (or that `keep` left out).
    pub skipped: usize,
    pub class_baselines: usize,
    pub totals: usize,
    pub flow_models: usize,
}

/// Why a snapshot was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LearnedError {
    #[error("learned state of format version {found} (this engine reads {LEARNED_VERSION})")]
    Version { found: u32 },
}

impl Learned {
    /// How many devices it holds state for.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// The latest event time the engine had processed when it was taken.
    pub fn as_of(&self) -> Timestamp {
        Timestamp::from_millis(self.as_of)
    }
}

impl Engine {
    /// What this engine has learned, for the devices `keep` accepts (every device with
    /// anything learned is a candidate; devices that never reported are left out).
    pub fn learned(&self, keep: impl Fn(&DeviceId) -> bool) -> Learned {
        let mut learned = Learned {
            version: LEARNED_VERSION,
            as_of: self.last_event_ts,
            ..Learned::default()
        };
        let position = self.devices.export(&mut learned, &keep);
        // Devices in registration order (deterministic for an engine; a loading engine
        // finds them by id).
        self.flows.export(&mut learned, &position, &self.zones);
        learned
    }

    /// Loads what another engine learned, for the devices `keep` accepts (and this engine
    /// knows: register devices first). Per-device state replaces this engine's; class
    /// baselines, totals ratios and flow models replace this engine's where the snapshot
    /// has learned more. Call it before feeding events; the replay of recent events then
    /// brings the windows and the last values up to date.
    pub fn restore_learned(
        &mut self,
        learned: &Learned,
        keep: impl Fn(&DeviceId) -> bool,
    ) -> Result<Restored, LearnedError> {
        if learned.version != LEARNED_VERSION {
            return Err(LearnedError::Version {
                found: learned.version,
            });
        }
        let mut restored = Restored::default();
        self.devices.import(learned, &keep, &mut restored);
        self.flows
            .import(learned, &self.devices, &self.zones, &keep, &mut restored);
        self.last_event_ts = self.last_event_ts.max(learned.as_of);
        Ok(restored)
    }
}
