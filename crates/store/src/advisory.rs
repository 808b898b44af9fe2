//! The stores of the public-facing side: advisories (drafts through issued CAP documents),
//! citizen reports, the history of the readiness index and the exercise results it scores. Each is a trait of its own that
//! [`Store`](crate::Store) requires, so callers keep holding one `Arc<dyn Store>`.

use async_trait::async_trait;
use model::{Advisory, AdvisoryState, CitizenReport, ExerciseRecord, ReportCategory, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Result;

/// Which advisories to list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdvisoryQuery {
    pub state: Option<AdvisoryState>,
    /// Only advisories that were issued (issued, cancelled or superseded), newest issue
    /// first; otherwise all, newest draft first.
    pub issued: bool,
    /// At most this many (the backend caps it).
    pub limit: usize,
    /// Only advisories after this one in the list's order: the sort time (`drafted_at`, or
    /// `issued_at` when `issued`) and id of the last advisory of the previous page.
    #[serde(default)]
    pub after: Option<(Timestamp, String)>,
}

/// Which citizen reports to list, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportQuery {
    pub category: Option<ReportCategory>,
    pub since: Option<Timestamp>,
    pub before: Option<Timestamp>,
    pub limit: usize,
}

/// Advisories and citizen reports.
#[async_trait]
pub trait AdvisoryStore: Send + Sync {
    /// Writes advisories in one transaction. An advisory with `version == 1` is inserted
    /// (`Conflict` if the id exists); one with `version == n > 1` replaces the stored
    /// version `n - 1` (`Conflict` if the stored one is not `n - 1`, so two people acting
    /// at once cannot both win; `NotFound` if there is none). Nothing is written unless
    /// every advisory can be.
    async fn write_advisories(&self, advisories: &[Advisory]) -> Result<()>;
    async fn get_advisory(&self, id: &str) -> Result<Option<Advisory>>;
    async fn list_advisories(&self, query: &AdvisoryQuery) -> Result<Vec<Advisory>>;

    /// Stores a report; `Conflict` if the id exists.
    async fn insert_report(&self, report: &CitizenReport) -> Result<()>;
    async fn list_reports(&self, query: &ReportQuery) -> Result<Vec<CitizenReport>>;
}

/// One computed readiness index, kept for the trend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadinessRecord {
    pub ts: Timestamp,
    /// The city-wide score (0-100), when any indicator had data.
    pub score: Option<f64>,
    /// The full computed index as JSON.
    pub body: serde_json::Value,
}

/// The readiness index history, and the exercise results it scores (migration
/// `0010_exercises`).
#[async_trait]
pub trait ReadinessStore: Send + Sync {
    async fn append_readiness(&self, record: &ReadinessRecord) -> Result<()>;
    /// Newest first.
    async fn list_readiness(
        &self,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<ReadinessRecord>>;
    /// Stores an exercise result; `Conflict` if the id exists.
    async fn insert_exercise(&self, record: &ExerciseRecord) -> Result<()>;
    /// Exercises that finished at or after `since`, newest first.
    async fn list_exercises(
        &self,
        since: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<ExerciseRecord>>;
}
