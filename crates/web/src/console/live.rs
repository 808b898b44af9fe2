//! The live alert queue: `GET /api/v1/console/alerts/stream`, server-sent events.
//!
//! One poller per process (started by the first subscriber, ended when the last one
//! leaves) reads the alerts whose first occurrence lies in the last minute, every
//! [`POLL`], and broadcasts each one that is new or whose count grew; every open console
//! receives them as `alert` events. The store is the source, so an alert a console sees
//! is durable, and the cost is one query per [`POLL`] however many consoles are open.
//! A slow console that falls behind the channel is told (`lagged`) and reloads its list.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use model::Timestamp;
use store::AlertQuery;
use tokio::sync::broadcast;

use crate::Shared;

/// How often the poller reads the store.
pub(crate) const POLL: Duration = Duration::from_millis(200);
/// How far back (by first occurrence) the poller looks.
const WINDOW_MS: i64 = 60_000;
/// Messages a console may fall behind before it is told to reload.
const CHANNEL: usize = 1024;

pub(crate) struct Hub {
    tx: broadcast::Sender<Arc<str>>,
    running: AtomicBool,
}

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub {
            tx: broadcast::channel(CHANNEL).0,
            running: AtomicBool::new(false),
        }
    }

    fn subscribe(shared: &Arc<Shared>) -> broadcast::Receiver<Arc<str>> {
        let hub = &shared.console.hub;
        let rx = hub.tx.subscribe();
        if !hub.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(poll(shared.clone()));
        }
        rx
    }
}

async fn poll(shared: Arc<Shared>) {
    let hub = &shared.console.hub;
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut primed = false;
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if hub.tx.receiver_count() == 0 {
            hub.running.store(false, Ordering::Release);
            // A console that subscribed just now found the poller still running.
            if hub.tx.receiver_count() == 0 || hub.running.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        let query = AlertQuery {
            since: Some(Timestamp::now().saturating_add_ms(-WINDOW_MS)),
            limit: 1000,
            ..AlertQuery::default()
        };
        let alerts = match shared.api.store.list_alerts(&query).await {
            Ok(alerts) => alerts,
            Err(err) => {
                tracing::warn!(error = %err, "live alert poll failed");
                continue;
            }
        };
        let mut next = HashMap::with_capacity(alerts.len());
        // Oldest first, so consoles add them in the order they happened.
        for alert in alerts.iter().rev() {
            let changed = seen.get(&alert.id.0) != Some(&alert.count);
            next.insert(alert.id.0.clone(), alert.count);
            if changed && primed {
                let body = crate::console::api::alert_with_ack(alert, None);
                if let Ok(text) = serde_json::to_string(&body) {
                    let _ = hub.tx.send(text.into());
                }
            }
        }
        seen = next;
        primed = true;
    }
}

/// How often an idle stream checks that the platform is still serving.
const READY_CHECK: Duration = Duration::from_millis(500);

/// `GET /api/v1/console/alerts/stream`. A stream ends when the platform stops serving
/// (`ApiState::ready` turns false at shutdown), so open consoles never hold up a graceful
/// shutdown; browsers reconnect by themselves.
pub(crate) async fn stream(State(s): State<Arc<Shared>>) -> Response {
    let rx = Hub::subscribe(&s);
    let ready = s.api.ready.clone();
    let events = futures_util::stream::unfold((rx, ready), |(mut rx, ready)| async move {
        let event = loop {
            if !ready.load(Ordering::Acquire) {
                return None;
            }
            match tokio::time::timeout(READY_CHECK, rx.recv()).await {
                Err(_) => continue,
                Ok(Ok(text)) => break Event::default().event("alert").data(&*text),
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    break Event::default().event("lagged").data(n.to_string());
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            }
        };
        Some((Ok::<Event, Infallible>(event), (rx, ready)))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
