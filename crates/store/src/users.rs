//! Operator accounts and incidents: the [`UserStore`] and [`IncidentStore`] traits every
//! backend implements beside [`Store`](crate::Store).

use async_trait::async_trait;
use model::{DeviceId, Incident, IncidentId, IncidentState, Severity, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Result;

/// An operator account. The password is kept only as an Argon2id PHC string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The login name: 1 to 64 of `a-z 0-9 . _ -`.
    pub name: String,
    /// `viewer`, `analyst`, `operator`, `supervisor` or `admin`.
    pub role: String,
    pub password_hash: String,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// What a user token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserTokenKind {
    /// Issued by `POST /api/v1/auth/login`, always with an expiry.
    Session,
    /// A named, long-lived API token for scripts, acting as the user.
    Api,
}

impl UserTokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserTokenKind::Session => "session",
            UserTokenKind::Api => "api",
        }
    }
}

/// A bearer token that acts as a user; only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserToken {
    /// Lowercase hex SHA-256 of the token text.
    pub sha256: String,
    pub user: String,
    pub kind: UserTokenKind,
    /// A label (`login from 10.0.0.5`, `nightly export`).
    pub label: String,
    pub created_at: Timestamp,
    /// After this the token is refused; `None` only for API tokens made without expiry.
    pub expires_at: Option<Timestamp>,
}

/// Operator accounts and their tokens.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Adds a user; `Conflict` if the name exists.
    async fn insert_user(&self, user: &User) -> Result<()>;
    /// Replaces a user's role, password hash and disabled flag; `NotFound` if absent.
    async fn update_user(&self, user: &User) -> Result<()>;
    async fn get_user(&self, name: &str) -> Result<Option<User>>;
    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<User>>;

    /// Adds a token; `NotFound` if its user does not exist.
    async fn insert_user_token(&self, token: &UserToken) -> Result<()>;
    async fn find_user_token(&self, sha256: &str) -> Result<Option<UserToken>>;
    /// Deletes one token; returns whether it existed.
    async fn delete_user_token(&self, sha256: &str) -> Result<bool>;
    /// Deletes every token of a user (disable, password change); returns how many.
    async fn delete_user_tokens(&self, user: &str) -> Result<u64>;
    /// Deletes tokens that expired before `now`; returns how many.
    async fn prune_user_tokens(&self, now: Timestamp) -> Result<u64>;
}

/// Which incidents to list, newest first. Pages are keyed by sequence number: pass the
/// last incident's sequence as `before_seq` to get the next page.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IncidentQuery {
    pub state: Option<IncidentState>,
    /// Only incidents at least this severe.
    pub min_severity: Option<Severity>,
    pub owner: Option<String>,
    pub device_id: Option<DeviceId>,
    pub before_seq: Option<u64>,
    pub limit: usize,
}

/// Incidents, kept whole (timeline included) with their filter fields beside.
#[async_trait]
pub trait IncidentStore: Send + Sync + 'static {
    /// Inserts an incident or replaces the one with the same id. The id must have the
    /// `INC-<digits>` form (`Invalid` otherwise).
    async fn upsert_incident(&self, incident: &Incident) -> Result<()>;
    async fn get_incident(&self, id: &IncidentId) -> Result<Option<Incident>>;
    async fn list_incidents(&self, query: &IncidentQuery) -> Result<Vec<Incident>>;
    /// Incidents that still take alerts (new, triaged, contained), oldest first, at most
    /// `limit` (the backend caps it).
    async fn open_incidents(&self, limit: usize) -> Result<Vec<Incident>>;
    /// The highest incident sequence number stored, 0 when there is none.
    async fn max_incident_seq(&self) -> Result<u64>;
}

/// The numeric rank of a severity (info 0 .. critical 4), for filtering.
pub fn severity_rank(severity: Severity) -> i64 {
    match severity {
        Severity::Info => 0,
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}
