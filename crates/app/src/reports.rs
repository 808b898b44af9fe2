//! Accepted citizen reports: stored, then published on the bus as `obs.report` events so
//! detection correlates them with device data (`detect`'s report rules) and the store
//! writer keeps them in the event stream. The intake's limits and cleaning are `web`'s.

use std::sync::Arc;

use async_trait::async_trait;
use bus::{Bus, Message};
use model::{CitizenReport, ErrorCode, Event, EventKind};
use store::Store;
use web::PlatformError;

pub struct ReportSink {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
}

#[async_trait]
impl web::Reports for ReportSink {
    async fn submit(&self, report: CitizenReport) -> Result<(), PlatformError> {
        // Refused before it is stored while the bus cannot take it, so a retry after the
        // 503 is not a second report.
        if !self.bus.is_available() {
            return Err(PlatformError::new(
                ErrorCode::Unavailable,
                "bus unavailable: cannot reach the event bus",
            ));
        }
        self.store.insert_report(&report).await?;
        let event = Event {
            ts: report.ts,
            device_id: None,
            sector: None,
            kind: EventKind::CitizenReport {
                category: report.category,
                text: report.text,
                location: report.location,
            },
        };
        self.bus
            .publish(vec![Message::Event(event)])
            .await
            .map_err(|e| PlatformError::new(ErrorCode::Unavailable, format!("bus: {e}")))?;
        tracing::info!(report = %report.id, category = %report.category, "citizen report received");
        Ok(())
    }
}
