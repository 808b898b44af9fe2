//! Flow records into the event stream: starts the UDP collector (`[ingest.flow]`), takes
//! JSON lines from `POST /api/v1/flows`, and renders the flow counters for `/metrics`.
//! Devices are matched by address through the live [`Directory`].

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use ingest::flow::{DropReason, FlowConfig, FlowHandle, FlowListener, FlowMetrics};
use ingest::mqtt::EventSink;
use model::Timestamp;

use crate::directory::Directory;

#[cfg(test)]
mod tests;

/// The flow inputs of a running platform.
pub(crate) struct Flows {
    metrics: Arc<FlowMetrics>,
    listener: Option<FlowHandle>,
    directory: Arc<Directory>,
    sink: Arc<dyn EventSink>,
}

impl Flows {
    /// Starts the UDP listener when the config enables it.
    pub(crate) fn start(
        config: &FlowConfig,
        directory: Arc<Directory>,
        sink: Arc<dyn EventSink>,
    ) -> anyhow::Result<Flows> {
        let metrics = Arc::new(FlowMetrics::default());
        let listener = if config.enabled {
            Some(
                FlowListener::start(
                    config.clone(),
                    directory.clone(),
                    sink.clone(),
                    metrics.clone(),
                )
                .context("failed to start the flow collector")?,
            )
        } else {
            None
        };
        Ok(Flows {
            metrics,
            listener,
            directory,
            sink,
        })
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().map(FlowHandle::local_addr)
    }

    /// Flow events refused because the platform could not take them (UDP and HTTP).
    pub(crate) fn refused_unavailable(&self) -> u64 {
        self.metrics.refused_unavailable.load(Ordering::Relaxed)
    }

    pub(crate) async fn shutdown(&self) {
        if let Some(listener) = &self.listener {
            listener.shutdown().await;
        }
    }

    /// Decodes JSON lines and publishes the good ones as flow events.
    pub(crate) async fn ingest_json(
        &self,
        body: &[u8],
    ) -> Result<web::FlowReport, web::PlatformError> {
        // Up to 16 MiB of JSON: decoded off the async threads.
        let body = body.to_vec();
        let (records, report) = tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            let report = ingest::flow::json::decode_lines(&body, Timestamp::now(), &mut records);
            (records, report)
        })
        .await
        .map_err(|e| web::PlatformError::internal(e.to_string()))?;
        let events: Vec<model::Event> = records
            .into_iter()
            .map(|r| ingest::flow::to_event(r, self.directory.as_ref()))
            .collect();
        let accepted = events.len() as u64;
        self.metrics.add(&report.stats);
        if !events.is_empty() {
            if !self.sink.admits() {
                // The bus is unreachable and the buffer in front of it full: refuse (the
                // exporter retries) rather than accept and lose.
                self.metrics
                    .refused_unavailable
                    .fetch_add(accepted, Ordering::Relaxed);
                return Err(web::PlatformError::new(
                    model::ErrorCode::Unavailable,
                    "bus unavailable: the event buffer is full",
                ));
            }
            self.sink.send(events).await.map_err(|_| {
                web::PlatformError::new(model::ErrorCode::Unavailable, "the platform is stopping")
            })?;
            self.metrics.events.fetch_add(accepted, Ordering::Relaxed);
        }
        let mut refused_by_reason = std::collections::BTreeMap::new();
        for reason in DropReason::ALL {
            let n = report.stats.dropped(reason);
            if n > 0 {
                refused_by_reason.insert(reason.as_str().to_owned(), n);
            }
        }
        Ok(web::FlowReport {
            accepted,
            refused: report.stats.dropped_total(),
            refused_by_reason,
            errors: report
                .errors
                .into_iter()
                .map(|e| web::FlowLineError {
                    line: e.line,
                    reason: e.reason.as_str().to_owned(),
                    message: e.message,
                })
                .collect(),
        })
    }

    /// The flow series of `/metrics`.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        let m = &self.metrics;
        let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "flow_datagrams_received_total",
            "NetFlow/IPFIX datagrams received over UDP.",
            l(&m.datagrams),
        );
        counter(
            "flow_received_bytes_total",
            "Bytes of flow datagrams received.",
            l(&m.bytes),
        );
        counter(
            "flow_json_lines_received_total",
            "JSON lines received over HTTP.",
            l(&m.json_lines),
        );
        counter(
            "flow_records_decoded_total",
            "Flow records decoded (UDP and JSON lines).",
            l(&m.records),
        );
        counter(
            "flow_templates_received_total",
            "NetFlow v9/IPFIX templates learned or refreshed.",
            l(&m.templates),
        );
        counter(
            "flow_pending_decoded_total",
            "Data sets decoded after waiting for their template.",
            l(&m.pending_decoded),
        );
        counter(
            "flow_events_published_total",
            "Flow events handed to the bus.",
            l(&m.events),
        );
        let _ = writeln!(
            out,
            "# HELP flow_dropped_total Flow input dropped, by reason (datagrams, sets, templates, records or lines).\n# TYPE flow_dropped_total counter"
        );
        for reason in DropReason::ALL {
            let _ = writeln!(
                out,
                "flow_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                l(&m.dropped[reason.index()])
            );
        }
    }
}
