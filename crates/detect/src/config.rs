//! Detection settings: the `[detect]` section of the config file.

use serde::{Deserialize, Serialize};

/// Settings for the detection engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Credential brute force and password spraying.
    pub brute_force: BruteForceConfig,
    /// Actuations nobody commanded.
    pub actuation: ActuationConfig,
    /// Citizen reports correlated with sirens.
    pub reports: crate::ReportsConfig,
    /// Repeats of an alert (same rule, same device or source) within this many seconds of
    /// its last occurrence are merged into it.
    pub merge_window_s: u64,
    /// At most this many evidence events are kept on one alert.
    pub max_evidence: usize,
}

impl Default for DetectConfig {
    fn default() -> DetectConfig {
        DetectConfig {
            brute_force: BruteForceConfig::default(),
            actuation: ActuationConfig::default(),
            reports: crate::ReportsConfig::default(),
            merge_window_s: 600,
            max_evidence: 20,
        }
    }
}

impl DetectConfig {
    pub fn merge_window_ms(&self) -> i64 {
        secs_to_ms(self.merge_window_s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BruteForceConfig {
    /// Failed authentications as one device id within the window that raise an alert.
    pub per_device_threshold: usize,
    /// Failed authentications from one source address within the window that raise an alert.
    pub per_source_threshold: usize,
    /// When a source's failures name at least this many different device ids, the alert
    /// calls it password spraying.
    pub spray_distinct_devices: usize,
    /// The sliding window, in seconds.
    pub window_s: u64,
}

impl Default for BruteForceConfig {
    fn default() -> BruteForceConfig {
        BruteForceConfig {
            per_device_threshold: 10,
            per_source_threshold: 10,
            spray_distinct_devices: 5,
            window_s: 60,
        }
    }
}

impl BruteForceConfig {
    pub fn window_ms(&self) -> i64 {
        secs_to_ms(self.window_s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActuationConfig {
    /// An actuation is explained by an authorised command sent at most this many seconds
    /// before it.
    pub authorisation_window_s: u64,
}

impl Default for ActuationConfig {
    fn default() -> ActuationConfig {
        ActuationConfig {
            authorisation_window_s: 120,
        }
    }
}

impl ActuationConfig {
    pub fn authorisation_window_ms(&self) -> i64 {
        secs_to_ms(self.authorisation_window_s)
    }
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}
