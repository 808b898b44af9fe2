//! Mosquitto's log as security signals, pure.
//!
//! With `log_dest topic` Mosquitto publishes every log line it writes at the enabled
//! `log_type`s to `$SYS/broker/log/<level>` (N notice, E error, W warning, I information),
//! and with `connection_messages true` (the default) it logs connects and disconnects.
//! [`parse_line`] reads one line into a [`Line`]; [`LogCorrelator`] keeps the little state
//! needed to turn lines into the same `SecurityEvent`s the embedded broker emits:
//!
//! | Mosquitto line | event |
//! | --- | --- |
//! | `New connection from A:P on port L.` | none (remembered: A:P is pending) |
//! | `New client connected from A:P as C (p2, c1, k60, u'U').` | `connect_accepted` |
//! | `Client <unknown> disconnected, not authorised.` | `auth_failure` from the oldest pending address |
//! | `Client C already connected, closing old connection.` | `client_id_takeover` |
//! | `Client C disconnected.` / `closed its connection.` / `has exceeded timeout, disconnecting.` | `disconnect` |
//! | `Client C disconnected due to protocol error.` / `malformed packet.` | `malformed_packet` |
//! | `Client C disconnected due to oversize packet.` / `payload.` | `oversized_payload` |
//!
//! What Mosquitto 2.0 does not log (verified with Debian's 2.0.11): the username or client
//! id of a refused login (the line says `<unknown>` and nothing else), so an auth failure
//! carries only the source address, taken from the `New connection` line that preceded it
//! (Mosquitto logs no connection id, so under concurrent connects from several addresses
//! the oldest pending address is a best guess); denied publishes and subscribes (debug
//! level, which never reaches the log topic). Log lines are QoS 0: what arrives while no
//! ingest process is subscribed is not redelivered.

use std::collections::{HashMap, VecDeque};

use model::{Event, EventKind, SecurityEvent, SecurityEventKind, Timestamp};

/// Pending connections remembered at most (oldest dropped first).
pub const MAX_PENDING: usize = 4096;
/// Client id -> address entries remembered at most (cleared when full).
pub const MAX_CLIENTS: usize = 100_000;
/// Longest field copied from a line into an event.
const MAX_FIELD: usize = 256;
/// A pending connection older than this (by the lines' times) is forgotten: its login line
/// was lost (log lines are QoS 0) or it went away unlogged, and it must not take the blame
/// for a later refused login.
pub const PENDING_MAX_AGE_MS: i64 = 10_000;

/// Why Mosquitto says a client went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// `disconnected.` (it sent DISCONNECT, or the broker closed it normally).
    Clean,
    /// `closed its connection.`
    Closed,
    /// `has exceeded timeout, disconnecting.`
    KeepAlive,
    /// `disconnected, not authorised.`
    NotAuthorised,
    /// `disconnected due to protocol error.`
    ProtocolError,
    /// `disconnected due to malformed packet.`
    Malformed,
    /// `disconnected due to oversize packet.` / `oversize payload.`
    Oversize,
    /// `been disconnected by administrative action.`
    Administrative,
    /// `disconnected due to ...` (anything else), `disconnected: <errno text>.`,
    /// `Socket error on client C, disconnecting.`, `Bad socket read/write on client C: ...`.
    Error,
}

/// One recognised log line; borrowed from the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// `New connection from A:P on port L.`
    NewConnection { peer: &'a str },
    /// `New client connected from A:P as C (pN, cN, kN[, u'U']).`
    Connected {
        peer: &'a str,
        client_id: &'a str,
        protocol: u8,
        clean: bool,
        keep_alive: u16,
        username: Option<&'a str>,
    },
    /// `Client C already connected, closing old connection.`
    AlreadyConnected { client_id: &'a str },
    /// A client went away; `client_id` is `None` for `<unknown>`.
    Disconnected {
        client_id: Option<&'a str>,
        why: Gone,
        text: &'a str,
    },
}

/// Splits Mosquitto's `<epoch seconds>: ` prefix (the default `log_timestamp`) off a line.
pub fn split_timestamp(line: &str) -> (Option<Timestamp>, &str) {
    if let Some((secs, rest)) = line.split_once(": ")
        && !secs.is_empty()
        && secs.len() <= 12
        && secs.bytes().all(|b| b.is_ascii_digit())
        && let Ok(secs) = secs.parse::<i64>()
    {
        return (
            Some(Timestamp::from_millis(secs.saturating_mul(1000))),
            rest,
        );
    }
    (None, line)
}

/// Parses one log line (without or with its timestamp prefix); `None` for lines that are
/// not connection messages. Never panics.
pub fn parse_line(line: &str) -> Option<Line<'_>> {
    let (_, text) = split_timestamp(line.trim_end_matches(['\r', '\n']));
    if let Some(rest) = text.strip_prefix("New connection from ") {
        let (peer, _) = rest.split_once(" on port ")?;
        return Some(Line::NewConnection { peer });
    }
    if let Some(rest) = text.strip_prefix("New client connected from ") {
        let (peer, rest) = rest.split_once(" as ")?;
        // The client id may contain spaces and parentheses: the flags are the last " (".
        let (client_id, flags) = rest.rsplit_once(" (")?;
        let flags = flags.strip_suffix(").")?;
        let (flags, username) = match flags.split_once(", u'") {
            Some((f, u)) => (f, Some(u.strip_suffix('\'')?)),
            None => (flags, None),
        };
        let mut protocol = None;
        let mut clean = None;
        let mut keep_alive = None;
        for part in flags.split(", ") {
            let (key, value) = part.split_at_checked(1)?;
            match key {
                "p" => protocol = value.parse().ok(),
                "c" => clean = value.parse::<u8>().ok().map(|c| c != 0),
                "k" => keep_alive = value.parse().ok(),
                _ => {}
            }
        }
        return Some(Line::Connected {
            peer,
            client_id,
            protocol: protocol?,
            clean: clean?,
            keep_alive: keep_alive?,
            username,
        });
    }
    if let Some(rest) = text.strip_prefix("Socket error on client ") {
        let id = rest.strip_suffix(", disconnecting.")?;
        return Some(gone(id, Gone::Error, text));
    }
    if let Some(rest) = text.strip_prefix("Bad socket read/write on client ") {
        let (id, _) = rest.split_once(": ")?;
        return Some(gone(id, Gone::Error, text));
    }
    let rest = text.strip_prefix("Client ")?;
    if let Some(id) = rest.strip_suffix(" already connected, closing old connection.") {
        return Some(Line::AlreadyConnected { client_id: id });
    }
    const ENDINGS: &[(&str, Gone)] = &[
        (" disconnected, not authorised.", Gone::NotAuthorised),
        (" disconnected due to protocol error.", Gone::ProtocolError),
        (" disconnected due to malformed packet.", Gone::Malformed),
        (" disconnected due to oversize packet.", Gone::Oversize),
        (" disconnected due to oversize payload.", Gone::Oversize),
        (" has exceeded timeout, disconnecting.", Gone::KeepAlive),
        (" closed its connection.", Gone::Closed),
        (
            " been disconnected by administrative action.",
            Gone::Administrative,
        ),
        (" disconnected.", Gone::Clean),
    ];
    for (ending, why) in ENDINGS {
        if let Some(id) = rest.strip_suffix(ending) {
            return Some(gone(id, *why, text));
        }
    }
    // `Client C disconnected due to <other reason>.` and `Client C disconnected: <errno>.`:
    // the id ends at the last such marker (client ids may contain spaces).
    for marker in [" disconnected due to ", " disconnected: "] {
        if let Some((id, _)) = rest.rsplit_once(marker) {
            return Some(gone(id, Gone::Error, text));
        }
    }
    None
}

fn gone<'a>(id: &'a str, why: Gone, text: &'a str) -> Line<'a> {
    Line::Disconnected {
        client_id: (id != "<unknown>").then_some(id),
        why,
        text,
    }
}

/// A security event read from the log, with the identity it names (client id or
/// username) for the caller to resolve to a registered device.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub event: Event,
    /// The device id the line names, when it names one (username first, else client id).
    pub claimed: Option<String>,
}

/// Turns log lines into security events; one per broker node (its lines are in order).
#[derive(Debug, Default)]
pub struct LogCorrelator {
    /// Addresses that connected and have not yet logged in or gone, oldest first, with the
    /// time of their `New connection` line.
    pending: VecDeque<(String, Timestamp)>,
    /// The address and username each connected client id came from.
    clients: HashMap<String, (String, Option<String>)>,
    /// Lines read that are not connection messages.
    pub unrecognised: u64,
}

impl LogCorrelator {
    pub fn new() -> LogCorrelator {
        LogCorrelator::default()
    }

    /// Reads one line received at `received`; returns the event it means, if any.
    /// The event time is the line's own timestamp when within a day of `received`.
    pub fn on_line(&mut self, line: &str, received: Timestamp) -> Option<Signal> {
        let (ts, _) = split_timestamp(line);
        let ts = ts
            .and_then(|t| crate::mqtt::decode::plausible(t, received))
            .unwrap_or(received);
        let Some(parsed) = parse_line(line) else {
            self.unrecognised += 1;
            return None;
        };
        match parsed {
            Line::NewConnection { peer } => {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.pop_front();
                }
                self.pending.push_back((clip(peer), ts));
                None
            }
            Line::Connected {
                peer,
                client_id,
                protocol,
                username,
                ..
            } => {
                if let Some(i) = self.pending.iter().position(|(p, _)| p == peer) {
                    self.pending.remove(i);
                }
                if self.clients.len() >= MAX_CLIENTS {
                    self.clients.clear();
                }
                self.clients
                    .insert(clip(client_id), (clip(peer), username.map(clip)));
                let version = match protocol {
                    3 | 1 => "3.1",
                    4 | 2 => "3.1.1",
                    5 => "5.0",
                    _ => "unknown version",
                };
                let claimed = username.or(Some(client_id)).map(clip);
                Some(Signal {
                    event: security(
                        ts,
                        SecurityEventKind::ConnectAccepted,
                        Some(clip(client_id)),
                        username.map(clip),
                        Some(clip(peer)),
                        format!("mqtt {version} (mosquitto log)"),
                    ),
                    claimed,
                })
            }
            Line::AlreadyConnected { client_id } => {
                let known = self.clients.get(client_id).cloned();
                let claimed = known
                    .as_ref()
                    .and_then(|(_, u)| u.clone())
                    .or_else(|| Some(clip(client_id)));
                Some(Signal {
                    event: security(
                        ts,
                        SecurityEventKind::ClientIdTakeover,
                        Some(clip(client_id)),
                        known.as_ref().and_then(|(_, u)| u.clone()),
                        None,
                        "replaced live session (mosquitto: already connected, closing old connection)"
                            .to_owned(),
                    ),
                    claimed,
                })
            }
            Line::Disconnected {
                client_id,
                why,
                text,
            } => {
                let (peer, username) = match client_id {
                    Some(id) => match self.clients.remove(id) {
                        Some((peer, user)) => (Some(peer), user),
                        None => (None, None),
                    },
                    // A client that never logged in: the oldest address still pending.
                    None => {
                        while self.pending.front().is_some_and(|(_, at)| {
                            ts.as_millis().saturating_sub(at.as_millis()) > PENDING_MAX_AGE_MS
                        }) {
                            self.pending.pop_front();
                        }
                        (self.pending.pop_front().map(|(p, _)| p), None)
                    }
                };
                let (action, reason) = match why {
                    Gone::NotAuthorised => (
                        SecurityEventKind::AuthFailure,
                        "not authorised (mosquitto logs no username for a refused login)",
                    ),
                    Gone::ProtocolError | Gone::Malformed => {
                        (SecurityEventKind::MalformedPacket, text_reason(text))
                    }
                    Gone::Oversize => (SecurityEventKind::OversizedPayload, text_reason(text)),
                    Gone::Clean => (SecurityEventKind::Disconnect, "client disconnect"),
                    Gone::Closed => (SecurityEventKind::Disconnect, "connection closed by peer"),
                    Gone::KeepAlive => (SecurityEventKind::Disconnect, "keep-alive timeout"),
                    Gone::Administrative => (
                        SecurityEventKind::Disconnect,
                        "disconnected by administrative action",
                    ),
                    Gone::Error => (SecurityEventKind::Disconnect, text_reason(text)),
                };
                let claimed = username.clone().or_else(|| client_id.map(clip));
                Some(Signal {
                    event: security(
                        ts,
                        action,
                        client_id.map(clip),
                        username,
                        peer,
                        reason.to_owned(),
                    ),
                    claimed,
                })
            }
        }
    }
}

/// The line itself as the reason, without the `Client <id> ` part that is in the event.
fn text_reason(text: &str) -> &str {
    let t = text.get(..text.len().min(MAX_FIELD)).unwrap_or("");
    if t.is_empty() { "disconnected" } else { t }
}

fn security(
    ts: Timestamp,
    action: SecurityEventKind,
    client_id: Option<String>,
    username: Option<String>,
    peer: Option<String>,
    reason: String,
) -> Event {
    Event {
        ts,
        device_id: None,
        sector: None,
        kind: EventKind::Security(SecurityEvent {
            action,
            client_id,
            username,
            peer,
            topic: None,
            reason: Some(reason),
        }),
    }
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", s.get(..end).unwrap_or_default())
}
