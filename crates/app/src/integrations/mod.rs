//! Forwarding alerts and incident changes to the city's SIEM: syslog (RFC 5424 over TCP or
//! TLS, CEF messages) and signed JSON webhooks.
//!
//! Each sink has its own bounded queue and task: [`Forwarder::forward`] never waits (a full
//! queue drops the record and counts it), each record is retried with exponential backoff
//! up to `max_attempts`, and what could not be delivered is counted and the last of it kept
//! for `GET /api/v1/integrations/status` and `/metrics`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::{Alert, Incident, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub mod cef;
pub mod syslog;
pub mod webhook;

pub use crate::integrations::syslog::{SyslogConfig, Transport};
pub use crate::integrations::webhook::WebhookConfig;

/// `[integrations]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntegrationsConfig {
    /// Records buffered per sink before new ones are dropped (and counted).
    pub queue_capacity: usize,
    /// Delivery attempts per record before it counts as undelivered.
    pub max_attempts: u32,
    /// The first retry waits this long; each further one twice as long.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub forward_alerts: bool,
    pub forward_incidents: bool,
    pub syslog: Vec<SyslogConfig>,
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for IntegrationsConfig {
    fn default() -> IntegrationsConfig {
        IntegrationsConfig {
            queue_capacity: 10_000,
            max_attempts: 5,
            retry_base_ms: 500,
            retry_max_ms: 30_000,
            forward_alerts: true,
            forward_incidents: true,
            syslog: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

impl IntegrationsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.queue_capacity),
            "integrations.queue_capacity must be 1 to 1000000"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.max_attempts),
            "integrations.max_attempts must be 1 to 100"
        );
        anyhow::ensure!(
            self.retry_base_ms >= 1 && self.retry_base_ms <= self.retry_max_ms,
            "integrations.retry_base_ms must be at least 1 and at most retry_max_ms"
        );
        let mut names = std::collections::HashSet::new();
        for sink in &self.syslog {
            sink.validate()?;
            anyhow::ensure!(
                names.insert(sink.name.clone()),
                "integration name {:?} is used twice",
                sink.name
            );
        }
        for sink in &self.webhooks {
            sink.validate()?;
            anyhow::ensure!(
                names.insert(sink.name.clone()),
                "integration name {:?} is used twice",
                sink.name
            );
        }
        for name in &names {
            anyhow::ensure!(
                !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "integration name {name:?} must be 1 to 64 of a-z, 0-9, '-', '_', '.'"
            );
        }
        Ok(())
    }
}

/// What is forwarded.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Alert(Alert),
    /// An incident after a change, and which: `incident.opened`, `incident.alert_added`,
    /// `incident.state_changed`, `incident.owner_changed`, `incident.note`, `incident.action`.
    Incident(Incident, &'static str),
}

impl Record {
    fn describe(&self) -> String {
        match self {
            Record::Alert(a) => format!("alert {} ({})", a.id, a.rule),
            Record::Incident(i, change) => format!("incident {} ({change})", i.id),
        }
    }
}

/// A record a sink gave up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Undelivered {
    pub at: Timestamp,
    pub record: String,
    pub reason: String,
}

/// Delivery figures of one sink.
#[derive(Debug)]
pub struct SinkStats {
    pub name: String,
    /// `syslog` or `webhook`.
    pub kind: &'static str,
    pub delivered: AtomicU64,
    pub retries: AtomicU64,
    /// Records given up on after their last attempt (or a permanent refusal).
    pub failed: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    queued: AtomicU64,
    last_error: Mutex<Option<String>>,
    undelivered: Mutex<VecDeque<Undelivered>>,
}

/// How many undelivered records each sink remembers.
const KEEP_UNDELIVERED: usize = 100;

impl SinkStats {
    fn new(name: &str, kind: &'static str) -> SinkStats {
        SinkStats {
            name: name.to_owned(),
            kind,
            delivered: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            last_error: Mutex::new(None),
            undelivered: Mutex::new(VecDeque::new()),
        }
    }

    fn give_up(&self, record: &Record, reason: String) {
        tracing::warn!(sink = %self.name, record = %record.describe(), reason, "integration could not deliver");
        let mut list = self.undelivered.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() >= KEEP_UNDELIVERED {
            list.pop_front();
        }
        list.push_back(Undelivered {
            at: Timestamp::now(),
            record: record.describe(),
            reason: reason.clone(),
        });
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    fn json(&self) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "name": self.name,
            "kind": self.kind,
            "queued": load(&self.queued),
            "delivered": load(&self.delivered),
            "retries": load(&self.retries),
            "failed": load(&self.failed),
            "dropped": load(&self.dropped),
            "last_error": *self.last_error.lock().unwrap_or_else(|e| e.into_inner()),
            "undelivered": *self.undelivered.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}

enum Sink {
    Syslog(Box<syslog::SyslogSender>),
    Webhook(Arc<webhook::WebhookSender>),
}

/// The running forwarders.
pub struct Forwarder {
    config: IntegrationsConfig,
    queues: Mutex<Vec<mpsc::Sender<Arc<Record>>>>,
    stats: Vec<Arc<SinkStats>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Forwarder {
    /// Starts one task per configured sink (inside a tokio runtime).
    pub fn start(config: IntegrationsConfig) -> anyhow::Result<Forwarder> {
        config.validate()?;
        let mut sinks = Vec::new();
        for sink in &config.syslog {
            sinks.push((
                SinkStats::new(&sink.name, "syslog"),
                Sink::Syslog(Box::new(syslog::SyslogSender::new(sink.clone())?)),
            ));
        }
        for sink in &config.webhooks {
            sinks.push((
                SinkStats::new(&sink.name, "webhook"),
                Sink::Webhook(Arc::new(webhook::WebhookSender::new(sink.clone())?)),
            ));
        }
        let mut queues = Vec::new();
        let mut stats = Vec::new();
        let mut tasks = Vec::new();
        for (sink_stats, sink) in sinks {
            let (tx, rx) = mpsc::channel(config.queue_capacity);
            let sink_stats = Arc::new(sink_stats);
            tasks.push(tokio::spawn(run_sink(
                sink,
                rx,
                sink_stats.clone(),
                config.clone(),
            )));
            queues.push(tx);
            stats.push(sink_stats);
        }
        Ok(Forwarder {
            config,
            queues: Mutex::new(queues),
            stats,
            tasks: Mutex::new(tasks),
        })
    }

    /// Queues a record for every sink; never waits.
    pub fn forward(&self, record: Record) {
        let wanted = match &record {
            Record::Alert(_) => self.config.forward_alerts,
            Record::Incident(..) => self.config.forward_incidents,
        };
        if !wanted || self.stats.is_empty() {
            return;
        }
        let record = Arc::new(record);
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for (queue, stats) in queues.iter().zip(&self.stats) {
            match queue.try_send(record.clone()) {
                Ok(()) => {
                    stats.queued.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    let reason = match err {
                        mpsc::error::TrySendError::Full(_) => "queue full",
                        mpsc::error::TrySendError::Closed(_) => "forwarder stopped",
                    };
                    stats.give_up(&record, reason.to_owned());
                }
            }
        }
    }

    /// Per-sink figures, for `/metrics`.
    pub fn stats(&self) -> &[Arc<SinkStats>] {
        &self.stats
    }

    /// The status document of `GET /api/v1/integrations/status`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "queue_capacity": self.config.queue_capacity,
            "max_attempts": self.config.max_attempts,
            "sinks": self.stats.iter().map(|s| s.json()).collect::<Vec<_>>(),
        })
    }

    /// Stops taking records and lets the sinks deliver what is queued, for at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = tokio::time::Instant::now() + grace;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// The `/metrics` lines of the forwarders: per sink (a label from the config, so bounded).
pub fn render_metrics(forwarder: &Forwarder) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    type Series = (&'static str, &'static str, fn(&SinkStats) -> u64);
    let series: [Series; 5] = [
        (
            "integrations_delivered_total",
            "Records delivered to a SIEM sink.",
            |s| s.delivered.load(Ordering::Relaxed),
        ),
        (
            "integrations_retries_total",
            "Delivery attempts that failed and were retried.",
            |s| s.retries.load(Ordering::Relaxed),
        ),
        (
            "integrations_failed_total",
            "Records given up on after the last attempt.",
            |s| s.failed.load(Ordering::Relaxed),
        ),
        (
            "integrations_dropped_total",
            "Records dropped because the sink's queue was full.",
            |s| s.dropped.load(Ordering::Relaxed),
        ),
        (
            "integrations_queued",
            "Records waiting in the sink's queue.",
            |s| s.queued.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in series {
        if forwarder.stats().is_empty() {
            break;
        }
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for stats in forwarder.stats() {
            let _ = writeln!(
                out,
                "{name}{{sink=\"{}\",kind=\"{}\"}} {}",
                stats.name,
                stats.kind,
                value(stats)
            );
        }
    }
    out
}

fn backoff(config: &IntegrationsConfig, attempt: u32) -> Duration {
    let factor = 1u64 << attempt.saturating_sub(1).min(20);
    Duration::from_millis(
        config
            .retry_base_ms
            .saturating_mul(factor)
            .min(config.retry_max_ms),
    )
}

async fn run_sink(
    mut sink: Sink,
    mut queue: mpsc::Receiver<Arc<Record>>,
    stats: Arc<SinkStats>,
    config: IntegrationsConfig,
) {
    while let Some(record) = queue.recv().await {
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        let mut attempt = 1;
        loop {
            let result = match &mut sink {
                Sink::Syslog(sender) => sender.send(&record).await.map_err(webhook::Failure::Retry),
                Sink::Webhook(sender) => {
                    let (sender, record) = (sender.clone(), record.clone());
                    tokio::task::spawn_blocking(move || sender.deliver(&record))
                        .await
                        .unwrap_or_else(|e| {
                            Err(webhook::Failure::Retry(format!(
                                "delivery task failed: {e}"
                            )))
                        })
                }
            };
            match result {
                Ok(()) => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(webhook::Failure::Permanent(reason)) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    stats.give_up(&record, reason);
                    break;
                }
                Err(webhook::Failure::Retry(reason)) if attempt >= config.max_attempts => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    stats.give_up(&record, format!("{reason} (after {attempt} attempts)"));
                    break;
                }
                Err(webhook::Failure::Retry(reason)) => {
                    tracing::debug!(sink = %stats.name, attempt, reason, "integration delivery failed; retrying");
                    *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(&config, attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
    if let Sink::Syslog(sender) = &mut sink {
        sender.close().await;
    }
}

#[cfg(test)]
mod tests;
