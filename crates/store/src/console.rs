//! What the web console keeps beside the platform's own records: alert acknowledgements.

use async_trait::async_trait;
use model::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Result;

/// An analyst took an alert into hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertAck {
    pub alert_id: String,
    pub actor: String,
    pub at: Timestamp,
    /// Free text, at most a few hundred characters (checked by the caller).
    pub note: String,
}

/// Alert acknowledgements.
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// Records an acknowledgement; `Conflict` when the alert is acknowledged already
    /// (the first acknowledgement stands).
    async fn ack_alert(&self, ack: &AlertAck) -> Result<()>;
    /// The acknowledgements of these alerts (those that have one), in no order.
    async fn alert_acks(&self, alert_ids: &[String]) -> Result<Vec<AlertAck>>;
}
