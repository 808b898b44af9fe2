//! The results of an exercise (a drill): the attack scenarios played against the live
//! platform, per scenario whether it was detected and how fast. `citysec exercise run
//! --api URL` posts them to `/api/v1/exercises`; the readiness index scores them.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// One scenario of an exercise and how detection answered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExerciseScenario {
    /// The scenario's name in the catalogue, e.g. `siren-replay`.
    pub scenario: String,
    pub detected: bool,
    /// The first expected alert's time minus the scenario's onset, in seconds; present
    /// exactly when `detected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_detect_s: Option<f64>,
    /// Expected rules that fired.
    #[serde(default)]
    pub rules_fired: Vec<String>,
    /// Expected rules that did not fire.
    #[serde(default)]
    pub rules_missing: Vec<String>,
    /// Problems while injecting (an action that could not be carried out).
    #[serde(default)]
    pub problems: Vec<String>,
}

/// What an exercise run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExerciseResult {
    pub started: Timestamp,
    pub finished: Timestamp,
    /// The seed the scenarios were planned with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// How many devices the exercise city had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<u32>,
    pub scenarios: Vec<ExerciseScenario>,
    /// Alerts no scenario explains.
    #[serde(default)]
    pub false_alerts: u32,
}

impl ExerciseResult {
    /// How many scenarios were detected.
    pub fn detected(&self) -> usize {
        self.scenarios.iter().filter(|s| s.detected).count()
    }
}

/// An exercise result as the platform keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExerciseRecord {
    pub id: String,
    pub recorded_at: Timestamp,
    /// The authenticated principal who posted it.
    pub recorded_by: String,
    pub result: ExerciseResult,
}
