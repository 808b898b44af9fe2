//! ArcSight Common Event Format (CEF 0) for alerts and incident changes: the message body
//! the syslog forwarder sends to the city's SIEM.
//!
//! `CEF:0|citysec|citysec|<version>|<signature id>|<name>|<severity 0-10>|<extension>`; header
//! fields escape `\` and `|`, extension values escape `\`, `=`, CR and LF.

use model::{Alert, Incident, Severity, TimelineKind};

use crate::integrations::Record;

/// The product version in the CEF header.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Escapes a header field.
pub fn escape_header(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes an extension value.
pub fn escape_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// CEF severity (0-10) of an alert severity.
pub fn severity(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

fn header(signature: &str, name: &str, sev: Severity) -> String {
    format!(
        "CEF:0|citysec|citysec|{VERSION}|{}|{}|{}|",
        escape_header(signature),
        escape_header(name),
        severity(sev)
    )
}

fn extension(pairs: &[(&str, Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", escape_value(v))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The CEF message of an alert.
pub fn alert(alert: &Alert) -> String {
    let src = alert
        .source
        .as_deref()
        .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_owned);
    let ext = extension(&[
        ("rt", Some(alert.ts.as_millis().to_string())),
        ("end", Some(alert.last_ts.as_millis().to_string())),
        ("externalId", Some(alert.id.0.clone())),
        ("cat", Some(alert.rule.clone())),
        ("cnt", Some(alert.count.to_string())),
        (
            "deviceExternalId",
            alert.device_id.as_ref().map(|d| d.to_string()),
        ),
        ("src", src),
        ("cs1Label", alert.zone.as_ref().map(|_| "zone".to_owned())),
        ("cs1", alert.zone.clone()),
        ("msg", Some(alert.explanation.clone())),
    ]);
    format!("{}{ext}", header(&alert.rule, &alert.title, alert.severity))
}

/// The CEF message of an incident change (`change` is its signature id, e.g.
/// `incident.opened`, `incident.state_changed`).
pub fn incident(incident: &Incident, change: &str) -> String {
    let last = incident.timeline.last();
    let detail = last.map(|e| match &e.what {
        TimelineKind::AlertAdded { alert_id, rule, .. } => format!("alert {alert_id} {rule}"),
        TimelineKind::SeverityRaised { from, to } => format!("severity {from} -> {to}"),
        TimelineKind::StateChanged { from, to } => format!("state {from} -> {to}"),
        TimelineKind::OwnerChanged { to, .. } => format!("owner {to}"),
        TimelineKind::Note { .. } => "note added".to_owned(),
        TimelineKind::TlpChanged { from, to } => format!("tlp {from} -> {to}"),
        TimelineKind::Action {
            action_id,
            kind,
            device_id,
            status,
            ..
        } => format!("action {action_id} {kind} {device_id} {}", status.as_str()),
    });
    let devices = incident
        .devices
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let ext = extension(&[
        ("rt", Some(incident.updated_at.as_millis().to_string())),
        ("externalId", Some(incident.id.0.clone())),
        ("cat", Some(change.to_owned())),
        ("cnt", Some(incident.alerts.len().to_string())),
        ("suser", last.map(|e| e.actor.clone())),
        ("duser", incident.owner.clone()),
        ("cs1Label", Some("state".to_owned())),
        ("cs1", Some(incident.state.as_str().to_owned())),
        (
            "cs2Label",
            (!devices.is_empty()).then(|| "devices".to_owned()),
        ),
        ("cs2", (!devices.is_empty()).then_some(devices)),
        ("msg", detail),
    ]);
    format!(
        "{}{ext}",
        header(
            change,
            &format!("{} {}", incident.id, incident.title),
            incident.severity
        )
    )
}

/// The CEF message of a record.
pub fn record(record: &Record) -> String {
    match record {
        Record::Alert(a) => alert(a),
        Record::Incident(i, change) => incident(i, change),
    }
}
