//! Citizen reports: the anonymous public intake (`POST /api/v1/reports` as JSON, `POST
//! /report` from the small HTML form at `GET /report`).
//!
//! What a resident sends is hostile until shown otherwise: bodies are capped by the route
//! (8 KiB), each source address (IPv6 by its /64) gets a token bucket and the whole intake a
//! global one, text is cleaned ([`clean_text`]) and refused with a reason when it is empty or
//! too long, coordinates must be real WGS 84. Nothing about the sender is stored. The HTML
//! pages escape everything they echo. Accepted reports go to [`Reports::submit`], which
//! stores them and puts them on the bus as `obs.report` events.
//!
//! The source is the TCP peer address. `X-Forwarded-For` is not trusted (anyone can write
//! it), so behind a reverse proxy every report shares the proxy's bucket: let the proxy
//! limit per client, or raise `per_source_*` for its address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::{CitizenReport, Location, ReportCategory, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Shared;
use crate::error::{ApiError, Json};
use crate::platform::PlatformError;

type AppState = State<Arc<Shared>>;

/// The body limit of the report routes.
pub const REPORT_BODY_LIMIT: usize = 8 * 1024;

/// Where accepted reports go.
#[async_trait]
pub trait Reports: Send + Sync + 'static {
    /// Stores the report and publishes it as an event.
    async fn submit(&self, report: CitizenReport) -> Result<(), PlatformError>;
}

/// Limits of the public intake: the `[reports]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportLimits {
    /// Reports one source may send at once before it has to wait.
    pub per_source_burst: u32,
    /// Reports one source may send per hour, sustained.
    pub per_source_per_hour: u32,
    /// Reports the whole intake accepts per minute (a flood from many addresses).
    pub global_per_minute: u32,
    /// The longest text accepted, in characters, after cleaning.
    pub max_text_chars: usize,
    /// Sources remembered at once; when full, idle ones are forgotten first.
    pub max_tracked_sources: usize,
}

impl Default for ReportLimits {
    fn default() -> ReportLimits {
        ReportLimits {
            per_source_burst: 5,
            per_source_per_hour: 20,
            global_per_minute: 600,
            max_text_chars: 1000,
            max_tracked_sources: 100_000,
        }
    }
}

/// The JSON body of `POST /api/v1/reports`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewReport {
    pub category: ReportCategory,
    pub text: String,
    pub location: Location,
}

/// The form body of `POST /report`.
#[derive(Debug, Deserialize)]
pub(crate) struct ReportForm {
    #[serde(default)]
    category: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    lat: String,
    #[serde(default)]
    lon: String,
}

/// What the intake answers.
#[derive(Debug, Serialize)]
pub(crate) struct Receipt {
    id: String,
    status: &'static str,
    /// What cleaning changed, if anything.
    cleaned: Vec<String>,
}

/// Cleans report text: line ends become `\n`; control characters (other than line feed and
/// tab), bidirectional overrides and zero-width characters are removed; runs of spaces and
/// of blank lines are collapsed; the ends are trimmed. Returns the text and what changed, or
/// why it is refused (empty, or longer than `max_chars` after cleaning).
pub fn clean_text(text: &str, max_chars: usize) -> Result<(String, Vec<String>), String> {
    let mut notes = Vec::new();
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    let (mut controls, mut invisible) = (0usize, 0usize);
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    for c in normalised.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => controls += 1,
            '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}' => invisible += 1,
            c => out.push(c),
        }
    }
    if controls > 0 {
        notes.push(format!("removed {controls} control characters"));
    }
    if invisible > 0 {
        notes.push(format!(
            "removed {invisible} invisible or direction-changing characters"
        ));
    }
    // Collapse horizontal whitespace runs and more than one blank line.
    let mut collapsed = String::with_capacity(out.len());
    let mut newlines = 0usize;
    let mut space = false;
    for c in out.chars() {
        if c == '\n' {
            newlines += 1;
            space = false;
            if newlines <= 2 {
                collapsed.push('\n');
            }
            continue;
        }
        if c == ' ' || c == '\t' {
            if !space {
                collapsed.push(' ');
            }
            space = true;
            continue;
        }
        newlines = 0;
        space = false;
        collapsed.push(c);
    }
    let trimmed = collapsed
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned();
    if trimmed.is_empty() {
        return Err("text is empty".into());
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(format!(
            "text is {chars} characters long; at most {max_chars} are accepted"
        ));
    }
    if trimmed != normalised.trim() && notes.is_empty() {
        notes.push("collapsed whitespace".into());
    }
    Ok((trimmed, notes))
}

/// Checks a report's location.
fn check_location(location: Location) -> Result<(), String> {
    let ok = location.lat.is_finite()
        && location.lon.is_finite()
        && (-90.0..=90.0).contains(&location.lat)
        && (-180.0..=180.0).contains(&location.lon);
    if ok {
        Ok(())
    } else {
        Err("location must be WGS 84 coordinates (lat -90..90, lon -180..180)".into())
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: capacity,
            at: now,
        }
    }

    /// Refills at `per_s` up to `capacity`; takes one token if there is one.
    fn take(&mut self, capacity: f64, per_s: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_s).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, capacity: f64, per_s: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * per_s >= capacity
    }
}

/// Per-source and global rate limits of the intake.
pub(crate) struct Limiter {
    limits: ReportLimits,
    sources: Mutex<HashMap<IpAddr, Bucket>>,
    global: Mutex<Option<Bucket>>,
    counter: AtomicU64,
}

/// Why the limiter refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Source,
    Global,
}

impl Limiter {
    pub(crate) fn new(limits: ReportLimits) -> Limiter {
        Limiter {
            limits,
            sources: Mutex::new(HashMap::new()),
            global: Mutex::new(None),
            counter: AtomicU64::new(0),
        }
    }

    /// The key a source is limited by: the address, or its /64 for IPv6.
    fn key(source: Option<IpAddr>) -> IpAddr {
        match source {
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            Some(v4) => v4,
            // Requests without a peer address (tests, unusual listeners) share one bucket.
            None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }

    pub(crate) fn check(&self, source: Option<IpAddr>, now: Instant) -> Result<(), Refusal> {
        let burst = f64::from(self.limits.per_source_burst.max(1));
        let per_s = f64::from(self.limits.per_source_per_hour) / 3600.0;
        let key = Limiter::key(source);
        {
            let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
            if !sources.contains_key(&key) && sources.len() >= self.limits.max_tracked_sources {
                sources.retain(|_, b| !b.is_full(burst, per_s, now));
                if sources.len() >= self.limits.max_tracked_sources {
                    // Everyone tracked is still limited: fail closed rather than forget them.
                    return Err(Refusal::Global);
                }
            }
            let bucket = sources
                .entry(key)
                .or_insert_with(|| Bucket::full(burst, now));
            if !bucket.take(burst, per_s, now) {
                return Err(Refusal::Source);
            }
        }
        let global_cap = f64::from(self.limits.global_per_minute.max(1));
        let mut global = self.global.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = global.get_or_insert_with(|| Bucket::full(global_cap, now));
        if !bucket.take(global_cap, global_cap / 60.0, now) {
            return Err(Refusal::Global);
        }
        Ok(())
    }

    fn next_id(&self, ts: Timestamp, text: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut hash = Sha256::new();
        hash.update(n.to_le_bytes());
        hash.update(nanos.to_le_bytes());
        hash.update(text.as_bytes());
        let digest = hash.finalize();
        format!("rep-{}-{}", ts.as_millis(), hex::encode(&digest[..6]))
    }
}

/// The peer address of the connection, when the server recorded it.
pub(crate) struct SourceAddr(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for SourceAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(SourceAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

async fn intake(
    s: &Shared,
    source: Option<IpAddr>,
    report: NewReport,
) -> Result<Receipt, ApiError> {
    match s.report_limiter.check(source, Instant::now()) {
        Ok(()) => {}
        Err(Refusal::Source) => {
            return Err(ApiError::TooManyRequests {
                message: "too many reports from your address; please wait a while".into(),
                retry_after_s: 60,
            });
        }
        Err(Refusal::Global) => {
            return Err(ApiError::TooManyRequests {
                message: "the report service is busy; please try again in a minute".into(),
                retry_after_s: 60,
            });
        }
    }
    let (text, cleaned) = clean_text(&report.text, s.report_limiter.limits.max_text_chars)
        .map_err(ApiError::invalid)?;
    check_location(report.location).map_err(ApiError::invalid)?;
    let ts = Timestamp::now();
    let id = s.report_limiter.next_id(ts, &text);
    s.api
        .reports
        .submit(CitizenReport {
            id: id.clone(),
            ts,
            category: report.category,
            text,
            location: report.location,
        })
        .await?;
    Ok(Receipt {
        id,
        status: "received",
        cleaned,
    })
}

pub(crate) async fn submit_json(
    State(s): AppState,
    SourceAddr(source): SourceAddr,
    Json(report): Json<NewReport>,
) -> Result<Response, ApiError> {
    let receipt = intake(&s, source, report).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(receipt)).into_response())
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const PAGE_HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Report something odd</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;color:#1d2733}
label{display:block;margin-top:1rem;font-weight:600}input,select,textarea{font:inherit;width:100%;box-sizing:border-box;padding:.4rem}
button{margin-top:1rem;font:inherit;padding:.5rem 1.2rem}.note{color:#4a5868;font-size:.9rem}</style></head><body>"#;

const FORM: &str = r#"<h1>Report something odd</h1>
<p>Tell the city's operations centre what you noticed. Reports are anonymous; we keep no address or name.
In an emergency call the emergency number instead.</p>
<form method="post" action="/report">
<label for="category">What did you notice?</label>
<select id="category" name="category" required>
<option value="siren_no_storm">A siren sounding with no storm or reason</option>
<option value="traffic_signal_stuck">A traffic signal stuck</option>
<option value="strange_display">A public display showing a strange message</option>
<option value="other">Something else</option>
</select>
<label for="text">Describe it (where, when, what)</label>
<textarea id="text" name="text" rows="5" maxlength="1000" required></textarea>
<label for="lat">Latitude</label><input id="lat" name="lat" inputmode="decimal" required placeholder="45.52">
<label for="lon">Longitude</label><input id="lon" name="lon" inputmode="decimal" required placeholder="-122.68">
<p class="note">Your phone's map app shows the coordinates of where you are.</p>
<button type="submit">Send report</button>
</form>"#;

fn page(status: StatusCode, body: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        format!("{PAGE_HEAD}{body}</body></html>"),
    )
        .into_response()
}

pub(crate) async fn form_page() -> Response {
    page(StatusCode::OK, FORM)
}

pub(crate) async fn submit_form(
    State(s): AppState,
    SourceAddr(source): SourceAddr,
    axum::Form(form): axum::Form<ReportForm>,
) -> Response {
    let parsed = (|| {
        let category: ReportCategory = form.category.parse().map_err(ApiError::invalid)?;
        let number = |what: &str, v: &str| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| ApiError::invalid(format!("{what} must be a number")))
        };
        Ok::<_, ApiError>(NewReport {
            category,
            text: form.text.clone(),
            location: Location {
                lat: number("latitude", &form.lat)?,
                lon: number("longitude", &form.lon)?,
            },
        })
    })();
    let result = match parsed {
        Ok(report) => intake(&s, source, report).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(receipt) => page(
            StatusCode::ACCEPTED,
            &format!(
                "<h1>Thank you</h1><p>Your report was received (reference <code>{}</code>).</p>{}<p><a href=\"/report\">Send another report</a></p>",
                html_escape(&receipt.id),
                receipt
                    .cleaned
                    .iter()
                    .map(|n| format!("<p class=\"note\">Note: {}.</p>", html_escape(n)))
                    .collect::<String>()
            ),
        ),
        Err(err) => {
            let response = err.into_response();
            let status = response.status();
            let message = match status {
                StatusCode::TOO_MANY_REQUESTS | StatusCode::BAD_REQUEST => {
                    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
                        .await
                        .unwrap_or_default();
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "the report could not be accepted".into())
                }
                _ => "the report could not be accepted right now; please try again later".into(),
            };
            page(
                status,
                &format!(
                    "<h1>Report not sent</h1><p>{}</p>{FORM}",
                    html_escape(&message)
                ),
            )
        }
    }
}
