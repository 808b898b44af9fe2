//! Rules over the broker's security events: credential brute force and password spraying,
//! identity spoofing (client-id takeover, certificates that do not match the registry),
//! MQTT topic abuse, reconnect storms, protocol violations, partner indicators naming a
//! client's address, and the analysts' own threshold rules.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use model::{Alert, Event, EventKind, SecurityEvent, SecurityEventKind, Severity, Timestamp};

use crate::rules::{GroupBy, RuleSet, ThresholdRule};
use crate::window::Window;
use crate::{AlertDraft, DetectConfig, Engine, peer_ip};

#[derive(Debug, Default)]
pub(crate) struct AuthState {
    /// Auth failures per claimed device id.
    failures_by_device: HashMap<String, Window>,
    /// Auth failures per source IP, with the device ids they tried.
    failures_by_source: HashMap<String, (Window, HashSet<String>)>,
    /// Accepted connects per device id.
    connects: HashMap<String, Window>,
    /// Malformed or oversized packets per client.
    violations: HashMap<String, Window>,
    /// The analysts' threshold rules with their windows per group. Alert rule names are
    /// `'static`; a rule file's ids are leaked once per engine, which rule files bound.
    thresholds: Vec<(&'static str, ThresholdRule, HashMap<String, Window>)>,
}

/// At most this many keys per window map; beyond it new keys are not tracked (a flood of
/// spoofed sources cannot grow memory without bound).
const MAX_KEYS: usize = 200_000;

impl AuthState {
    pub(crate) fn new(rules: &RuleSet) -> AuthState {
        AuthState {
            thresholds: rules
                .thresholds
                .iter()
                .map(|r| {
                    let id: &'static str = Box::leak(r.id.clone().into_boxed_str());
                    (id, r.clone(), HashMap::new())
                })
                .collect(),
            ..AuthState::default()
        }
    }

    /// The `'static` name of a threshold rule of this engine.
    pub(crate) fn threshold_id(&self, rule: &str) -> Option<&'static str> {
        self.thresholds
            .iter()
            .map(|(id, _, _)| *id)
            .find(|id| *id == rule)
    }

    pub(crate) fn thresholds_empty(&self) -> bool {
        self.thresholds.is_empty()
    }

    pub(crate) fn tracked(&self) -> usize {
        self.failures_by_device.len()
            + self.failures_by_source.len()
            + self.connects.len()
            + self.violations.len()
            + self
                .thresholds
                .iter()
                .map(|(_, _, m)| m.len())
                .sum::<usize>()
    }

    pub(crate) fn evict(&mut self, now: Timestamp, config: &DetectConfig) {
        let bf = config.brute_force.window_ms();
        self.failures_by_device.retain(|_, w| !w.is_stale(now, bf));
        self.failures_by_source
            .retain(|_, (w, _)| !w.is_stale(now, bf));
        let cw = crate::config::secs_ms(config.rate.connect_window_s);
        self.connects.retain(|_, w| !w.is_stale(now, cw));
        self.violations.retain(|_, w| !w.is_stale(now, 60_000));
        for (_, rule, windows) in &mut self.thresholds {
            let ms = crate::config::secs_ms(rule.window_s);
            windows.retain(|_, w| !w.is_stale(now, ms));
        }
    }
}

fn window<'a>(
    map: &'a mut HashMap<String, Window>,
    key: &str,
    cap: usize,
) -> Option<&'a mut Window> {
    if !map.contains_key(key) {
        if map.len() >= MAX_KEYS {
            return None;
        }
        map.insert(key.to_owned(), Window::new(cap));
    }
    map.get_mut(key)
}

pub(crate) fn on_security(
    engine: &mut Engine,
    event: &Event,
    sec: &SecurityEvent,
    out: &mut Vec<Alert>,
) {
    let claimed = event
        .device_id
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .or_else(|| sec.username.clone())
        .or_else(|| sec.client_id.clone());
    let source = sec.peer.as_deref().map(peer_ip).map(str::to_owned);
    let summary = summary(sec);
    let reason = sec.reason.as_deref().unwrap_or("");

    if let Some(ip) = source.as_deref().and_then(|s| s.parse::<IpAddr>().ok())
        && !engine.indicators.is_empty()
    {
        crate::indicator::match_client(engine, event, ip, &summary, out);
    }

    match sec.action {
        SecurityEventKind::AuthFailure | SecurityEventKind::ConnectRefused => {
            if is_certificate_mismatch(reason) {
                let who = claimed.clone().unwrap_or_else(|| "unknown".into());
                let draft = AlertDraft {
                    rule: "identity.certificate_mismatch",
                    key: who.clone(),
                    severity: Severity::High,
                    device_id: event.device_id.clone(),
                    zone: event
                        .device_id
                        .as_ref()
                        .and_then(|d| engine.devices.zone_name(d)),
                    source: source.clone(),
                    title: format!("certificate does not match the registry for {who}"),
                    explanation: format!(
                        "a client presented a certificate that the registry does not hold for \
                         {who} ({reason}). Someone may be posing as the device with a certificate \
                         from another device or a rogue CA. Check where the certificate came \
                         from and revoke it if it was issued to someone else."
                    ),
                };
                engine.raise(draft, event, summary.clone(), out);
            } else if reason.contains("client id in use") {
                takeover(
                    engine,
                    event,
                    claimed.as_deref(),
                    source.clone(),
                    reason,
                    &summary,
                    out,
                );
            }
            let guess = match sec.action {
                SecurityEventKind::AuthFailure => true,
                // A refused connect naming an unknown device is a guess at an id: it counts
                // towards the source's failures but not any device's.
                _ => event.device_id.is_none() && reason.contains("unknown"),
            };
            if guess {
                brute_force(engine, event, claimed, source, &summary, out);
            }
        }
        SecurityEventKind::ClientIdTakeover => {
            takeover(
                engine,
                event,
                claimed.as_deref(),
                source,
                reason,
                &summary,
                out,
            );
        }
        SecurityEventKind::SubscribeDenied | SecurityEventKind::PublishDenied => {
            let who = claimed.unwrap_or_else(|| "unknown".into());
            let topic = sec.topic.clone().unwrap_or_default();
            let what = if sec.action == SecurityEventKind::SubscribeDenied {
                "subscribe to"
            } else {
                "publish to"
            };
            let kind = topic_kind(&topic);
            let draft = AlertDraft {
                rule: "mqtt.topic_abuse",
                key: format!("{who}/{kind}"),
                severity: if kind == "command" || kind == "system" || kind == "wildcard" {
                    Severity::High
                } else {
                    Severity::Medium
                },
                device_id: event.device_id.clone(),
                zone: event
                    .device_id
                    .as_ref()
                    .and_then(|d| engine.devices.zone_name(d)),
                source: source.clone(),
                title: format!("{who} tried to {what} {}", clip(&topic, 80)),
                explanation: format!(
                    "the broker refused {who}'s attempt to {what} {:?} ({reason}). A device only \
                     ever uses its own topics; reaching for wildcards, $SYS, command topics or \
                     another device's namespace is reconnaissance or an attempt to send \
                     commands. Check the device for compromise.",
                    clip(&topic, 200)
                ),
            };
            engine.raise(draft, event, summary, out);
        }
        SecurityEventKind::ConnectAccepted => {
            let Some(device) = &event.device_id else {
                return;
            };
            let cfg = &engine.config.rate;
            let (cap, window_ms, window_s) = (
                cfg.connects_per_device,
                crate::config::secs_ms(cfg.connect_window_s),
                cfg.connect_window_s,
            );
            let Some(w) = window(&mut engine.auth.connects, device.as_str(), cap) else {
                return;
            };
            let n = w.push(event.ts, window_ms);
            if n >= cap {
                let draft = AlertDraft {
                    rule: "rate.connect_flood",
                    key: device.to_string(),
                    severity: Severity::Medium,
                    device_id: Some(device.clone()),
                    zone: engine.devices.zone_name(device),
                    source,
                    title: format!("reconnect storm from {device}"),
                    explanation: format!(
                        "{device} connected {n} times within {window_s}s. Either the device is \
                         crash-looping, or two clients share its identity and keep taking the \
                         session from each other."
                    ),
                };
                engine.raise(draft, event, summary, out);
            }
        }
        SecurityEventKind::MalformedPacket
        | SecurityEventKind::OversizedPayload
        | SecurityEventKind::PayloadInvalid => {
            let who = claimed
                .or_else(|| source.clone())
                .unwrap_or_else(|| "unknown".into());
            let cap = engine.config.rate.protocol_violations;
            let Some(w) = window(&mut engine.auth.violations, &who, cap) else {
                return;
            };
            let n = w.push(event.ts, 60_000);
            if n >= cap {
                let draft = AlertDraft {
                    rule: "mqtt.protocol_violation",
                    key: who.clone(),
                    severity: Severity::Medium,
                    device_id: event.device_id.clone(),
                    zone: event
                        .device_id
                        .as_ref()
                        .and_then(|d| engine.devices.zone_name(d)),
                    source,
                    title: format!("repeated protocol violations by {who}"),
                    explanation: format!(
                        "{n} malformed, oversized or undecodable messages from {who} within a \
                         minute: a fuzzer, an exploit attempt against the broker, or broken \
                         firmware."
                    ),
                };
                engine.raise(draft, event, summary, out);
            }
        }
        SecurityEventKind::Disconnect => {}
        // Response actions (from `app::response`); a quarantine is for the flow policy to
        // use (flows of a quarantined device count as blocked), nothing for these rules.
        SecurityEventKind::Quarantined => {
            if let Some(idx) = event.device_id.as_ref().and_then(|d| engine.devices.get(d)) {
                engine.devices.state_mut(idx).quarantined = true;
            }
        }
        SecurityEventKind::ResponseAction | SecurityEventKind::RateLimitChanged => {}
        // The broker dropped publishes of a device incident response rate-limited: the
        // device keeps sending over its limit (repeats merge into one alert with a count).
        SecurityEventKind::RateLimited => {
            let Some(device) = &event.device_id else {
                return;
            };
            let draft = AlertDraft {
                rule: "mqtt.rate_limited",
                key: device.to_string(),
                severity: Severity::Medium,
                device_id: Some(device.clone()),
                zone: engine.devices.zone_name(device),
                source,
                title: format!("{device} publishes over its rate limit"),
                explanation: format!(
                    "the broker dropped publishes of {device}, which incident response \
                     rate-limited, because it keeps sending faster than its limit ({}). A \
                     device that ignores its limit is misbehaving or is not the device any \
                     more: look at what it sends, or quarantine it.",
                    clip(reason, 200)
                ),
            };
            engine.raise(draft, event, summary, out);
        }
    }
}

fn takeover(
    engine: &mut Engine,
    event: &Event,
    claimed: Option<&str>,
    source: Option<String>,
    reason: &str,
    summary: &str,
    out: &mut Vec<Alert>,
) {
    let who = claimed.unwrap_or("unknown").to_owned();
    let draft = AlertDraft {
        rule: "identity.client_id_takeover",
        key: who.clone(),
        severity: Severity::High,
        device_id: event.device_id.clone(),
        zone: event
            .device_id
            .as_ref()
            .and_then(|d| engine.devices.zone_name(d)),
        source: source.clone(),
        title: format!("second client claims to be {who}"),
        explanation: format!(
            "a client{} connected with the client id of {who} while the device had a session \
             ({}). Two clients holding one identity means the device's credentials were copied. \
             Rotate them and find the second client.",
            source.map(|s| format!(" from {s}")).unwrap_or_default(),
            if reason.is_empty() {
                "takeover"
            } else {
                reason
            }
        ),
    };
    engine.raise(draft, event, summary.to_owned(), out);
}

fn brute_force(
    engine: &mut Engine,
    event: &Event,
    claimed: Option<String>,
    source: Option<String>,
    summary: &str,
    out: &mut Vec<Alert>,
) {
    let cfg = engine.config.brute_force.clone();
    let window_ms = cfg.window_ms();
    if let (Some(device), Some(_)) = (&event.device_id, &claimed)
        && let Some(w) = window(
            &mut engine.auth.failures_by_device,
            device.as_str(),
            cfg.per_device_threshold,
        )
    {
        let n = w.push(event.ts, window_ms);
        if n >= cfg.per_device_threshold {
            let draft = AlertDraft {
                rule: "auth.brute_force.device",
                key: device.as_str().to_owned(),
                severity: Severity::High,
                device_id: Some(device.clone()),
                zone: engine.devices.zone_name(device),
                source: source.clone(),
                title: format!("credential brute force against {device}"),
                explanation: format!(
                    "{n} failed authentications as device {device} within {}s; someone is \
                     guessing this device's credentials. Check the sources, confirm the \
                     device's secret has not leaked, and consider rotating it.",
                    cfg.window_s
                ),
            };
            engine.raise(draft, event, summary.to_owned(), out);
        }
    }

    let Some(source) = source else { return };
    let map = &mut engine.auth.failures_by_source;
    if !map.contains_key(&source) {
        if map.len() >= MAX_KEYS {
            return;
        }
        map.insert(
            source.clone(),
            (Window::new(cfg.per_source_threshold), HashSet::new()),
        );
    }
    let Some((w, ids)) = map.get_mut(&source) else {
        return;
    };
    let n = w.push(event.ts, window_ms);
    if let Some(claimed) = &claimed
        && ids.len() < 1024
    {
        ids.insert(claimed.clone());
    }
    let distinct = ids.len();
    if n >= cfg.per_source_threshold {
        let spraying = distinct >= cfg.spray_distinct_devices;
        let (title, explanation) = if spraying {
            (
                format!("password spraying from {source}"),
                format!(
                    "{n} failed authentications from {source} within {}s against {distinct} \
                     different device ids; one source is trying credentials across the \
                     fleet. Block the source and check for any successful logins from it.",
                    cfg.window_s
                ),
            )
        } else {
            (
                format!("credential brute force from {source}"),
                format!(
                    "{n} failed authentications from {source} within {}s; one source is \
                     guessing credentials. Block the source and check for any successful \
                     logins from it.",
                    cfg.window_s
                ),
            )
        };
        let draft = AlertDraft {
            rule: "auth.brute_force.source",
            key: source.clone(),
            severity: Severity::High,
            device_id: None,
            zone: None,
            source: Some(source),
            title,
            explanation,
        };
        engine.raise(draft, event, summary.to_owned(), out);
    }
}

/// The analysts' threshold rules (from rule files).
pub(crate) fn custom_thresholds(engine: &mut Engine, event: &Event, out: &mut Vec<Alert>) {
    let name = match &event.kind {
        EventKind::Security(sec) => sec.action.as_str(),
        other => match other {
            EventKind::Telemetry { .. } => "telemetry",
            EventKind::State { .. } => "state",
            EventKind::Flow(_) => "flow",
            _ => "command",
        },
    };
    let source = match &event.kind {
        EventKind::Security(sec) => sec.peer.as_deref().map(peer_ip).map(str::to_owned),
        EventKind::Flow(flow) => Some(flow.src.to_string()),
        _ => None,
    };
    let mut fired = Vec::new();
    for (id, rule, windows) in &mut engine.auth.thresholds {
        if rule.event != name {
            continue;
        }
        let key = match rule.group_by {
            GroupBy::Device => event.device_id.as_ref().map(|d| d.to_string()),
            GroupBy::Source => source.clone(),
        };
        let Some(key) = key else { continue };
        let Some(w) = window(windows, &key, rule.count) else {
            continue;
        };
        let n = w.push(event.ts, crate::config::secs_ms(rule.window_s));
        if n >= rule.count {
            fired.push((*id, rule.clone(), key, n));
        }
    }
    for (id, rule, key, n) in fired {
        let draft = AlertDraft {
            rule: id,
            key: key.clone(),
            severity: rule.severity,
            device_id: event.device_id.clone(),
            zone: event
                .device_id
                .as_ref()
                .and_then(|d| engine.devices.zone_name(d)),
            source: source.clone(),
            title: format!("{} ({key})", rule.title),
            explanation: format!(
                "{n} {name} events for {key} within {}s. {}",
                rule.window_s, rule.explanation
            ),
        };
        engine.raise(draft, event, format!("{name} for {key}"), out);
    }
}

fn is_certificate_mismatch(reason: &str) -> bool {
    reason.contains("certificate cn") || reason.contains("certificate not registered")
}

fn topic_kind(topic: &str) -> &'static str {
    if topic.starts_with('$') {
        "system"
    } else if topic.contains('#') || topic.contains('+') {
        "wildcard"
    } else if topic.ends_with("/cmd") {
        "command"
    } else {
        "namespace"
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

fn summary(sec: &SecurityEvent) -> String {
    let mut s = sec.action.as_str().to_owned();
    if let Some(user) = &sec.username {
        s.push_str(&format!(" as {}", clip(user, 64)));
    }
    if let Some(peer) = &sec.peer {
        s.push_str(&format!(" from {peer}"));
    }
    if let Some(topic) = &sec.topic {
        s.push_str(&format!(" on {}", clip(topic, 120)));
    }
    if let Some(reason) = &sec.reason {
        s.push_str(&format!(" ({})", clip(reason, 120)));
    }
    s
}
