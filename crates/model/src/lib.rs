//! Core domain types shared by every citysec crate: devices and their identity, the one
//! normalised [`Event`] that flows over the bus (telemetry, state, broker events, commands,
//! network flows), [`Alert`]s, [`Incident`]s, timestamps and error codes.
//!
//! This crate does no IO and pulls in no runtime; engines and adapters agree on these types.

mod advisory;
mod alert;
mod device;
mod error;
mod event;
mod exercise;
mod flow;
mod incident;
mod report;
mod time;
pub mod topic;

pub use crate::advisory::{
    Advisory, AdvisoryArea, AdvisoryCircle, AdvisoryContent, AdvisoryMsgType, AdvisoryOrigin,
    AdvisoryResource, AdvisoryState, AdvisoryStatus, AdvisoryText, Geocode,
};
pub use crate::alert::{Alert, AlertId, Evidence, Severity};
pub use crate::device::{
    Credential, Device, DeviceClass, DeviceId, DeviceIdError, DeviceStatus, Location, Sector,
};
pub use crate::error::ErrorCode;
pub use crate::event::{Event, EventKind, Reading, SecurityEvent, SecurityEventKind, Value};
pub use crate::exercise::{ExerciseRecord, ExerciseResult, ExerciseScenario};
pub use crate::flow::{FlowRecord, proto};
pub use crate::incident::{
    ActionKind, ActionMode, ActionStatus, Correlation, Incident, IncidentAlert, IncidentDurations,
    IncidentId, IncidentState, IncidentTimes, RateLimitParams, ResponseAction, TimelineEntry,
    TimelineKind, Tlp,
};
pub use crate::report::{CitizenReport, ReportCategory};
pub use crate::time::Timestamp;

#[cfg(test)]
mod tests;
