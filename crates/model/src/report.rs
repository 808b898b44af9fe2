//! Citizen reports: what residents tell the city they noticed (a siren with no storm, a
//! traffic signal stuck, a display showing a strange message). Text is cleaned before it is
//! stored; reports carry no address or other identity of the sender.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Location, Timestamp};

/// What a resident noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportCategory {
    /// A siren sounding with no storm or other reason.
    SirenNoStorm,
    TrafficSignalStuck,
    /// A public display showing a strange message.
    StrangeDisplay,
    Other,
}

impl ReportCategory {
    pub const ALL: [ReportCategory; 4] = [
        ReportCategory::SirenNoStorm,
        ReportCategory::TrafficSignalStuck,
        ReportCategory::StrangeDisplay,
        ReportCategory::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportCategory::SirenNoStorm => "siren_no_storm",
            ReportCategory::TrafficSignalStuck => "traffic_signal_stuck",
            ReportCategory::StrangeDisplay => "strange_display",
            ReportCategory::Other => "other",
        }
    }
}

impl fmt::Display for ReportCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReportCategory {
    type Err = String;
    fn from_str(s: &str) -> Result<ReportCategory, String> {
        ReportCategory::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown category {s:?} (expected siren_no_storm, traffic_signal_stuck, \
                     strange_display or other)"
                )
            })
    }
}

/// A stored citizen report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitizenReport {
    pub id: String,
    pub ts: Timestamp,
    pub category: ReportCategory,
    /// Cleaned text (see the platform's report intake for the rules).
    pub text: String,
    pub location: Location,
}
