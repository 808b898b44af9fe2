//! Response actions: what quarantining a device, revoking or rotating its credentials,
//! rate-limiting it or silencing a siren does to the running platform, and the two ports
//! the command-gateway work will plug into: [`Auditor`] ("audit this") and
//! [`ActuatorGateway`] ("send an all-clear through the gateway").
//!
//! The platform wires `app::audit::StoreAuditor` (the hash-chained audit log) and
//! `app::gateway::PlaybookGateway` (the command gateway) into them. [`EventAuditor`] (a log
//! line and a stored `response_action` event) and [`NoGateway`] (which refuses to reach
//! actuators, so a silence-siren action fails visibly on the incident timeline) remain for
//! tests and builds without them.

use std::sync::Arc;

use async_trait::async_trait;
use model::{
    ActionKind, Credential, DeviceClass, DeviceId, DeviceStatus, Event, EventKind, RateLimitParams,
    SecurityEvent, SecurityEventKind, Timestamp,
};

use crate::platform::Inner;

/// "Audit this": one record per response action, written before the action's effect is
/// reported. The audit-log work implements it with `app::audit::record`.
#[async_trait]
pub trait Auditor: Send + Sync + 'static {
    async fn record(&self, entry: AuditEntry) -> Result<(), String>;
}

/// What an audit record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// The person (user name) or `playbook:<name>`.
    pub actor: String,
    /// `response.quarantine`, `response.rotate_credentials`, ...
    pub action: String,
    pub device_id: DeviceId,
    pub incident_id: String,
    /// `requested`, `approved`, `rejected`, `done: ...` or `failed: ...`.
    pub outcome: String,
}

/// "Execute a response action through the gateway": the only way this module reaches an
/// actuator. The gateway work implements it with `app::gateway::all_clear(device, actor)`.
#[async_trait]
pub trait ActuatorGateway: Send + Sync + 'static {
    /// Sends an all-clear (cancel) to a siren; returns what the gateway reported.
    /// `cause` is the emission of the `actuation.uncommanded` alert the action answers (its
    /// id and last time), when there is one: the gateway may have answered it already.
    async fn all_clear(
        &self,
        device: &DeviceId,
        actor: &str,
        cause: Option<(&model::AlertId, Timestamp)>,
    ) -> Result<String, String>;
}

/// Audit until the audit log lands: a log line and a stored `response_action` event.
pub struct EventAuditor {
    pub store: Arc<dyn store::Store>,
}

#[async_trait]
impl Auditor for EventAuditor {
    async fn record(&self, entry: AuditEntry) -> Result<(), String> {
        tracing::warn!(
            actor = %entry.actor,
            action = %entry.action,
            device_id = %entry.device_id,
            incident_id = %entry.incident_id,
            outcome = %entry.outcome,
            "response action"
        );
        let event = Event {
            ts: entry.at,
            device_id: Some(entry.device_id.clone()),
            sector: None,
            kind: EventKind::Security(SecurityEvent {
                action: SecurityEventKind::ResponseAction,
                client_id: None,
                username: Some(entry.actor),
                peer: None,
                topic: None,
                reason: Some(format!(
                    "{} {} on {}: {}",
                    entry.incident_id, entry.action, entry.device_id, entry.outcome
                )),
            }),
        };
        self.store
            .append_events(&[event])
            .await
            .map_err(|e| format!("failed to store the audit event: {e}"))
    }
}

/// The gateway port before the command gateway is merged: it refuses, so no actuator is
/// ever reached by a path other than the gateway.
pub struct NoGateway;

#[async_trait]
impl ActuatorGateway for NoGateway {
    async fn all_clear(
        &self,
        device: &DeviceId,
        _actor: &str,
        _cause: Option<(&model::AlertId, Timestamp)>,
    ) -> Result<String, String> {
        Err(format!(
            "no all-clear sent to {device}: the command gateway is not part of this build"
        ))
    }
}

/// What an executed action produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// For the timeline (never a secret).
    pub detail: String,
    /// A rotated secret, returned once to whoever ran the action.
    pub secret: Option<String>,
    /// Whether the action contains the threat (the incident moves to contained).
    pub contains: bool,
}

/// Runs response actions against the platform.
pub struct Executor {
    pub(crate) inner: Arc<Inner>,
    pub gateway: Arc<dyn ActuatorGateway>,
}

impl Executor {
    /// Runs one action for `actor` on `incident_id`; a failure is a message for the timeline.
    /// `rate_limit` is the limit of a `rate_limit` action (`None`: the default limit).
    pub async fn execute(
        &self,
        kind: ActionKind,
        device_id: &DeviceId,
        rate_limit: Option<RateLimitParams>,
        actor: &str,
        incident_id: &str,
        cause: Option<(&model::AlertId, Timestamp)>,
    ) -> Result<Executed, String> {
        let inner = &self.inner;
        let device = inner
            .store
            .get_device(device_id)
            .await
            .map_err(|e| format!("store: {e}"))?
            .ok_or_else(|| format!("device {device_id} is not registered"))?;
        let reason = format!("{} by {actor} ({incident_id})", kind.as_str());
        match kind {
            ActionKind::Quarantine => {
                let dropped =
                    set_status(inner, device_id, DeviceStatus::Quarantined, &reason).await?;
                // Detection and the store learn of the quarantine from the event stream: flows
                // of a quarantined device count as blocked by the conduit policy.
                let event = Event {
                    ts: Timestamp::now(),
                    device_id: Some(device_id.clone()),
                    sector: Some(device.sector),
                    kind: EventKind::Security(SecurityEvent {
                        action: SecurityEventKind::Quarantined,
                        client_id: None,
                        username: Some(actor.to_owned()),
                        peer: None,
                        topic: None,
                        reason: Some(incident_id.to_owned()),
                    }),
                };
                // Published from its own task: this runs under the incident lock, and the bus
                // may be waiting for the detection worker, which may be waiting for us.
                let bus = inner.bus.clone();
                tokio::spawn(async move {
                    if let Err(err) = bus.publish(vec![bus::Message::Event(event)]).await {
                        tracing::warn!(error = %err, "quarantine event not published");
                    }
                });
                if crate::bridge::enabled(&inner.config) {
                    return Ok(Executed {
                        detail: format!(
                            "quarantined in citysec's registry and detection, quarantine event sent; the device can still connect ({})",
                            crate::bridge::NOT_ENFORCED
                        ),
                        secret: None,
                        contains: false,
                    });
                }
                Ok(Executed {
                    detail: format!(
                        "quarantined: credentials refused, {} session(s) dropped, quarantine event sent",
                        u8::from(dropped)
                    ),
                    secret: None,
                    contains: true,
                })
            }
            ActionKind::RevokeCredentials => {
                let dropped = set_status(inner, device_id, DeviceStatus::Revoked, &reason).await?;
                if crate::bridge::enabled(&inner.config) {
                    return Ok(Executed {
                        detail: format!(
                            "revoked in citysec's registry; the device's credentials at the city's broker still work ({})",
                            crate::bridge::NOT_ENFORCED
                        ),
                        secret: None,
                        contains: false,
                    });
                }
                Ok(Executed {
                    detail: format!(
                        "credentials revoked, {} session(s) dropped",
                        u8::from(dropped)
                    ),
                    secret: None,
                    contains: true,
                })
            }
            ActionKind::RotateCredentials => {
                if crate::bridge::enabled(&inner.config) {
                    // The city's broker checks the device's password, not citysec: a secret
                    // generated here would lock nobody out and let nobody in.
                    return Err(format!(
                        "cannot rotate {device_id}'s credentials: {}",
                        crate::bridge::NOT_ENFORCED
                    ));
                }
                if !device
                    .credentials
                    .iter()
                    .any(|c| matches!(c, Credential::Secret { .. }))
                {
                    return Err(format!(
                        "{device_id} has no secret to rotate (certificate only: issue a new certificate with citysec pki device)"
                    ));
                }
                let secret = ingest::credentials::generate_secret();
                let mut device = device;
                device
                    .credentials
                    .retain(|c| !matches!(c, Credential::Secret { .. }));
                device.credentials.push(Credential::Secret {
                    hash: ingest::credentials::hash_secret(&secret),
                });
                inner
                    .store
                    .upsert_devices(std::slice::from_ref(&device))
                    .await
                    .map_err(|e| format!("store: {e}"))?;
                inner.directory.put(device);
                let dropped = inner
                    .broker
                    .as_ref()
                    .is_some_and(|b| b.disconnect_device(device_id.as_str(), &reason));
                Ok(Executed {
                    detail: format!(
                        "secret rotated (the new one was shown once to {actor}), {} session(s) dropped",
                        u8::from(dropped)
                    ),
                    secret: Some(secret),
                    contains: true,
                })
            }
            ActionKind::RateLimit => {
                let params = rate_limit.unwrap_or_default();
                params.validate()?;
                if crate::bridge::enabled(&inner.config) {
                    return Err(format!(
                        "cannot rate-limit {device_id}: {} (Mosquitto has no per-client publish rate limit; EMQX has per-client message rate limits)",
                        crate::bridge::NOT_ENFORCED
                    ));
                }
                let now = Timestamp::now();
                let until = now.saturating_add_ms(
                    i64::try_from(params.duration_s.saturating_mul(1000)).unwrap_or(i64::MAX),
                );
                // Stored first: a limit the broker holds survives a restart.
                inner
                    .store
                    .put_rate_limit(&store::RateLimit {
                        device_id: device_id.clone(),
                        messages_per_s: params.messages_per_s,
                        burst: params.burst,
                        until,
                        set_by: actor.to_owned(),
                        reason: incident_id.to_owned(),
                        set_at: now,
                    })
                    .await
                    .map_err(|e| format!("store: {e}"))?;
                let Some(broker) = inner.broker.as_ref() else {
                    // A process without the ingest role holds no sessions; the limit is
                    // stored and the ingest processes apply it when they next start.
                    return Ok(Executed {
                        detail: format!(
                            "rate limit {params} (until {}) stored; this process runs no broker, so the ingest processes apply it when they start",
                            until.to_rfc3339()
                        ),
                        secret: None,
                        contains: false,
                    });
                };
                let live = broker.set_rate_limit(
                    device_id.as_str(),
                    ingest::mqtt::DeviceLimit {
                        messages_per_s: params.messages_per_s,
                        burst: params.burst,
                        until,
                    },
                );
                Ok(Executed {
                    detail: format!(
                        "rate limit {params} (until {}) applied at the broker to {} live session(s) and its later connections",
                        until.to_rfc3339(),
                        u8::from(live)
                    ),
                    secret: None,
                    contains: false,
                })
            }
            ActionKind::LiftRateLimit => {
                let stored = inner
                    .store
                    .delete_rate_limit(device_id)
                    .await
                    .map_err(|e| format!("store: {e}"))?;
                let held = inner
                    .broker
                    .as_ref()
                    .and_then(|b| b.lift_rate_limit(device_id.as_str()));
                match held {
                    Some(limit) => Ok(Executed {
                        detail: format!("rate limit lifted (was {limit})"),
                        secret: None,
                        contains: false,
                    }),
                    None if stored => Ok(Executed {
                        detail: "rate limit lifted (it had lapsed at the broker)".to_owned(),
                        secret: None,
                        contains: false,
                    }),
                    None => Err(format!("{device_id} has no rate limit to lift")),
                }
            }
            ActionKind::Release => {
                if device.status == DeviceStatus::Active {
                    return Err(format!("{device_id} is not quarantined or revoked"));
                }
                let from = device.status;
                inner
                    .store
                    .set_device_status(device_id, DeviceStatus::Active)
                    .await
                    .map_err(|e| format!("store: {e}"))?;
                let mut device = device;
                device.status = DeviceStatus::Active;
                inner.directory.put(device);
                Ok(Executed {
                    detail: format!(
                        "released: was {}, its credentials work again",
                        from.as_str()
                    ),
                    secret: None,
                    contains: false,
                })
            }
            ActionKind::SilenceSiren => {
                if device.class != DeviceClass::Siren {
                    return Err(format!("{device_id} is a {}, not a siren", device.class));
                }
                let reply = self.gateway.all_clear(device_id, actor, cause).await?;
                Ok(Executed {
                    detail: format!("all-clear sent through the gateway: {reply}"),
                    secret: None,
                    contains: false,
                })
            }
        }
    }
}

/// Sets a device's status, updates the broker's directory and drops its sessions (the
/// revoke path of the API); returns whether a session was dropped.
async fn set_status(
    inner: &Inner,
    id: &DeviceId,
    status: DeviceStatus,
    reason: &str,
) -> Result<bool, String> {
    inner
        .store
        .set_device_status(id, status)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let device = inner
        .store
        .get_device(id)
        .await
        .map_err(|e| format!("store: {e}"))?
        .ok_or_else(|| format!("device {id} not found"))?;
    // Detection follows the status too: a quarantined device's flows are outside every
    // conduit; a released one is judged normally again.
    let _ = inner
        .detect_control
        .send(crate::platform::DetectControl::Device(
            device.id.clone(),
            crate::platform::meta(&device),
        ));
    inner.directory.put(device);
    Ok(inner
        .broker
        .as_ref()
        .is_some_and(|b| b.disconnect_device(id.as_str(), reason)))
}
