//! [`Gateway`]: the one path to an actuator. It runs the pure decisions of
//! [`crate::policy`] and drives the [`crate::ports`]: audit before delivery, durable
//! counters, signing, announcement on the bus, delivery, acknowledgements and timeouts,
//! and the automatic all-clear for uncommanded siren actuations.
//!
//! Failure rules: when the audit log or the command ledger cannot be written, every command
//! is refused except cancels, which go out anyway (their audit entries wait in a backlog that
//! is flushed as soon as the log takes writes again, and their counters come from memory
//! and the clock).
//!
//! The in-memory state lock is never held across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use model::{
    Alert, DeviceClass, DeviceId, Event, EventKind, Reading, Timestamp, Value as ReadingValue,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::command::{
    Approval, Command, CommandKind, CommandRequest, CommandState, Delivery, DeliveryState,
    Principal, Refusal, Target, sha256_hex,
};
use crate::config::GatewayConfig;
use crate::policy;
use crate::ports::{
    Actuator, AdvisoryCheck, Announcer, AuditLog, AuditNote, CommandLedger, DeviceLookup,
};
use crate::sign::{Envelope, Signer};

/// The ports, as `app` wires them.
pub struct Ports {
    pub devices: std::sync::Arc<dyn DeviceLookup>,
    pub actuator: std::sync::Arc<dyn Actuator>,
    pub audit: std::sync::Arc<dyn AuditLog>,
    pub ledger: std::sync::Arc<dyn CommandLedger>,
    pub advisories: std::sync::Arc<dyn AdvisoryCheck>,
    pub announcer: std::sync::Arc<dyn Announcer>,
}

/// A request or approval the gateway did not carry out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// Refused (and audited); the command record says so too.
    #[error("command {id} refused: {reason}")]
    Refused { id: String, reason: Refusal },
    #[error("command {0} not found")]
    NotFound(String),

    #[error("command store unavailable: {0}")]
    Unavailable(String),
}

impl GatewayError {
    pub fn code(&self) -> model::ErrorCode {
        match self {
            GatewayError::Refused { reason, .. } => reason.code(),
            GatewayError::NotFound(_) => model::ErrorCode::NotFound,
            GatewayError::Unavailable(_) => model::ErrorCode::Unavailable,
        }
    }

    /// The refusal, when it is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            GatewayError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct GatewayStats {
    pub requested: AtomicU64,
    pub refused: AtomicU64,
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
    pub device_refused: AtomicU64,
    pub timed_out: AtomicU64,
    pub expired: AtomicU64,
    pub auto_all_clears: AtomicU64,
    /// Audit entries waiting for the log to come back.
    pub audit_backlog: AtomicU64,
    /// Audit entries dropped because the backlog was full (each gap is logged).
    pub audit_lost: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Commands pending approval or waiting for acknowledgements.
    active: HashMap<String, Command>,
    /// The last counter issued per device (for cancels while the store is down).
    counters: HashMap<DeviceId, u64>,
    /// When the gateway last delivered an activation to each siren.
    activations: HashMap<DeviceId, Timestamp>,
    /// The last cancel delivered to each siren: when and which command.
    cancels: HashMap<DeviceId, (Timestamp, String)>,
    /// The last uncommanded actuation (alert `last_ts`) answered with an all-clear, per siren.
    answered: HashMap<DeviceId, Timestamp>,
    backlog: Vec<AuditNote>,
    /// Entries dropped from a full backlog and not yet reported: how many, from when to when.
    lost: Option<(u64, Timestamp, Timestamp)>,
    /// Recently timed-out commands (at most [`RECENT_TIMEOUTS`]), so that an acknowledgement
    /// that arrives late (the bus was full while the store was down) is still recorded.
    timed_out: std::collections::VecDeque<Command>,
    /// Commands that became final and left `active` but whose final state the ledger does
    /// not hold yet (`finish` is saving it), so `get` never misses them in between.
    finishing: HashMap<String, Command>,
}

/// How many timed-out commands are remembered for late acknowledgements.
const RECENT_TIMEOUTS: usize = 256;

/// The command gateway.
pub struct Gateway {
    config: GatewayConfig,
    signer: Signer,
    ports: Ports,
    instance: String,
    seq: AtomicU64,
    state: Mutex<State>,
    pub stats: GatewayStats,
}

impl Gateway {
    /// `instance` distinguishes command ids of this process from others' (a few random
    /// hex digits).
    pub fn new(config: GatewayConfig, signer: Signer, ports: Ports, instance: &str) -> Gateway {
        Gateway {
            config,
            signer,
            ports,
            instance: instance.to_owned(),
            seq: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            stats: GatewayStats::default(),
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signer.public_key()
    }

    fn next_id(&self, now: Timestamp) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        format!(
            "cmd-{:011x}-{}-{seq}",
            now.as_millis().max(0),
            self.instance
        )
    }

    /// Takes a request from `principal`. Returns the command (pending approval, or
    /// delivered), or why it was refused; either way it is audited.
    pub async fn submit(
        &self,
        principal: &Principal,
        request: CommandRequest,
        now: Timestamp,
    ) -> Result<Command, GatewayError> {
        let id = self.next_id(now);
        self.submit_as(id, principal, request, now).await
    }

    /// [`Gateway::submit`] under a given command id.
    async fn submit_as(
        &self,
        id: String,
        principal: &Principal,
        request: CommandRequest,
        now: Timestamp,
    ) -> Result<Command, GatewayError> {
        self.stats.requested.fetch_add(1, Ordering::Relaxed);
        let mut command = Command {
            id,
            devices: request.devices.clone(),
            action: request.action.clone(),
            params: request.params.clone(),
            advisory: request.advisory.clone(),
            reason: request.reason.clone(),
            requested_by: principal.name.clone(),
            requested_role: principal.role.clone(),
            created_at: now,
            updated_at: now,
            kind: None,
            needs_approval: false,
            approval_expires_at: None,
            payload_sha256: String::new(),
            approvals: Vec::new(),
            state: CommandState::Approved,
            outcome: None,
            refusal: None,
            expires_at: None,
            deliveries: Vec::new(),
        };
        command.payload_sha256 = command.compute_payload_sha256();
        let (targets, decision) = match self.decide(principal, &request, now) {
            Ok(found) => found,
            Err(refusal) => return Err(self.refuse(command, principal, refusal, now).await),
        };
        command.kind = Some(decision.kind);
        command.needs_approval = decision.needs_approval;
        if !decision.needs_approval {
            return self.execute(command, targets, principal, now).await;
        }
        command.state = CommandState::PendingApproval;
        command.approval_expires_at = Some(now.saturating_add_ms(self.config.approval_ttl_ms()));
        let note = self.note(
            principal,
            "command.requested",
            &command,
            "pending_approval",
            json!({
                "payload": command.payload(),
                "payload_sha256": command.payload_sha256,
                "reason": command.reason,
                "approval_expires_at": command.approval_expires_at,
            }),
        );
        if let Err(err) = self.ports.audit.record(vec![note]).await {
            let refusal = Refusal::Unavailable(format!("audit log unavailable: {err}"));
            return Err(self.refuse(command, principal, refusal, now).await);
        }
        if let Err(err) = self.ports.ledger.save(&command).await {
            let refusal = Refusal::Unavailable(format!("command store unavailable: {err}"));
            return Err(self.refuse(command, principal, refusal, now).await);
        }
        self.state
            .lock()
            .active
            .insert(command.id.clone(), command.clone());
        Ok(command)
    }

    fn decide(
        &self,
        principal: &Principal,
        request: &CommandRequest,
        now: Timestamp,
    ) -> Result<(Vec<Target>, policy::Decision), Refusal> {
        let ids = policy::check_request(&self.config, request)?;
        let targets = ids
            .iter()
            .map(|id| {
                self.ports
                    .devices
                    .target(id)
                    .ok_or_else(|| Refusal::UnknownDevice(id.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let decision = policy::decide(
            &self.config,
            principal,
            request,
            &targets,
            now,
            self.ports.advisories.as_ref(),
        )?;
        Ok((targets, decision))
    }

    /// A second person approves command `id`, having reviewed the payload whose SHA-256 is
    /// `payload_sha256`. On success the command is signed and delivered.
    pub async fn approve(
        &self,
        approver: &Principal,
        id: &str,
        payload_sha256: &str,
        now: Timestamp,
    ) -> Result<Command, GatewayError> {
        // Claim the command under the lock, so two approvals cannot both pass.
        let claimed = {
            let mut state = self.state.lock();
            match state.active.get_mut(id) {
                Some(command) => {
                    let verdict = policy::check_approval(
                        &self.config,
                        command,
                        approver,
                        payload_sha256,
                        now,
                    );
                    if verdict.is_ok() {
                        command.state = CommandState::Approved;
                    }
                    Some((command.clone(), verdict))
                }
                None => None,
            }
        };
        let (mut command, verdict) = match claimed {
            Some(found) => found,
            None => {
                let command = self
                    .ports
                    .ledger
                    .load(id)
                    .await
                    .map_err(|e| GatewayError::Unavailable(e.to_string()))?
                    .ok_or_else(|| GatewayError::NotFound(id.to_owned()))?;
                let verdict =
                    policy::check_approval(&self.config, &command, approver, payload_sha256, now);
                (command, verdict)
            }
        };
        if let Err(refusal) = verdict {
            let note = self.note(
                approver,
                "approval.refused",
                &command,
                "refused",
                json!({
                    "refusal": refusal.kind(),
                    "reason": refusal.to_string(),
                    "payload_sha256_given": payload_sha256,
                }),
            );
            self.audit_or_backlog(vec![note]).await;
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            if let Refusal::ApprovalExpired(_) = refusal {
                self.expire(command.clone(), now).await;
            }
            return Err(GatewayError::Refused {
                id: command.id,
                reason: refusal,
            });
        }
        command.approvals.push(Approval {
            by: approver.name.clone(),
            role: approver.role.clone(),
            at: now,
            payload_sha256: payload_sha256.to_owned(),
        });
        command.state = CommandState::Approved;
        command.updated_at = now;
        let note = self.note(
            approver,
            "command.approved",
            &command,
            "ok",
            json!({
                "payload_sha256": payload_sha256,
                "requested_by": command.requested_by,
            }),
        );
        if let Err(err) = self.ports.audit.record(vec![note]).await {
            self.state.lock().active.remove(&command.id);
            let refusal = Refusal::Unavailable(format!("audit log unavailable: {err}"));
            return Err(self.refuse(command, approver, refusal, now).await);
        }
        self.state.lock().active.remove(&command.id);
        // The registry may have changed while the command waited.
        let request = CommandRequest {
            devices: command.devices.clone(),
            action: command.action.clone(),
            params: command.params.clone(),
            advisory: command.advisory.clone(),
            reason: command.reason.clone(),
        };
        let requester =
            Principal::new(command.requested_by.clone(), command.requested_role.clone());
        let targets = match self.decide(&requester, &request, now) {
            Ok((targets, _)) => targets,
            Err(refusal) => return Err(self.refuse(command, approver, refusal, now).await),
        };
        self.execute(command, targets, approver, now).await
    }

    /// Signs, audits, announces and delivers an approved command.
    async fn execute(
        &self,
        mut command: Command,
        targets: Vec<Target>,
        actor: &Principal,
        now: Timestamp,
    ) -> Result<Command, GatewayError> {
        let cancel = command.kind == Some(CommandKind::Cancel);
        let ids: Vec<DeviceId> = targets.iter().map(|t| t.id.clone()).collect();
        let floor = u64::try_from(now.as_millis())
            .unwrap_or(0)
            .saturating_mul(1000);
        let counters = match self.ports.ledger.next_counters(&ids, floor).await {
            Ok(counters) if counters.len() == ids.len() => counters,
            Ok(_) | Err(_) if cancel => {
                // Cancels go out without the store: counters from memory and the clock.
                let state = self.state.lock();
                ids.iter()
                    .map(|id| {
                        state
                            .counters
                            .get(id)
                            .map_or(floor, |last| (last + 1).max(floor))
                    })
                    .collect()
            }
            Ok(_) => {
                let refusal = Refusal::Unavailable("command store returned no counters".into());
                return Err(self.refuse(command, actor, refusal, now).await);
            }
            Err(err) => {
                let refusal = Refusal::Unavailable(format!("command store unavailable: {err}"));
                return Err(self.refuse(command, actor, refusal, now).await);
            }
        };
        {
            let mut state = self.state.lock();
            for (id, counter) in ids.iter().zip(&counters) {
                let slot = state.counters.entry(id.clone()).or_insert(0);
                *slot = (*slot).max(*counter);
            }
        }
        let expires_at = now.saturating_add_ms(self.config.command_ttl_ms());
        let payloads: Vec<Vec<u8>> = targets
            .iter()
            .zip(&counters)
            .map(|(target, counter)| {
                self.signer.encode(&Envelope {
                    device: &target.id,
                    counter: *counter,
                    expires_at,
                    issued_at: now,
                    command_id: &command.id,
                    action: &command.action,
                    params: &command.params,
                })
            })
            .collect();
        command.expires_at = Some(expires_at);
        command.updated_at = now;
        command.state = CommandState::Delivered;
        command.deliveries = targets
            .iter()
            .zip(&counters)
            .zip(&payloads)
            .map(|((target, counter), payload)| Delivery {
                device: target.id.clone(),
                counter: *counter,
                state: DeliveryState::Sent,
                sent_at: now,
                acked_at: None,
                error: None,
                sha256: sha256_hex(payload),
            })
            .collect();

        // The audit record is durable before anything reaches a device.
        let note = self.note(
            actor,
            "command.authorised",
            &command,
            "ok",
            json!({
                "kind": command.kind,
                "requested_by": command.requested_by,
                "approvals": command.approvals,
                "payload_sha256": command.payload_sha256,
                "expires_at": expires_at,
                "deliveries": command.deliveries.iter().map(|d| json!({
                    "device": d.device, "counter": d.counter, "sha256": d.sha256,
                })).collect::<Vec<_>>(),
            }),
        );
        if let Err(err) = self.ports.audit.record(vec![note.clone()]).await {
            if !cancel {
                let refusal = Refusal::Unavailable(format!("audit log unavailable: {err}"));
                return Err(self.refuse(command, actor, refusal, now).await);
            }
            self.backlog(note);
        }

        // Detection must see the command before the device's state change.
        let events = targets
            .iter()
            .map(|t| Event {
                ts: now,
                device_id: Some(t.id.clone()),
                sector: Some(t.sector),
                kind: EventKind::Command {
                    action: command.action.clone(),
                    actor: command.requested_by.clone(),
                },
            })
            .collect();
        self.ports.announcer.commanded(events, cancel).await;
        self.state
            .lock()
            .active
            .insert(command.id.clone(), command.clone());

        let mut unreachable = Vec::new();
        for (target, payload) in targets.iter().zip(payloads) {
            match self.ports.actuator.deliver(target, payload).await {
                Ok(true) => {}
                Ok(false) => {
                    unreachable.push((target.id.clone(), "device not connected".to_owned()))
                }
                Err(err) => {
                    unreachable.push((target.id.clone(), format!("delivery failed: {err}")))
                }
            }
        }
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        let finished = {
            let mut state = self.state.lock();
            if command.kind == Some(CommandKind::Activation) {
                for t in &targets {
                    if t.class == DeviceClass::Siren {
                        state.activations.insert(t.id.clone(), now);
                    }
                }
            }
            if command.kind == Some(CommandKind::Cancel) {
                for t in &targets {
                    state
                        .cancels
                        .insert(t.id.clone(), (now, command.id.clone()));
                }
            }
            match state.active.get_mut(&command.id) {
                Some(live) => {
                    for (device, error) in unreachable {
                        if let Some(d) = live
                            .deliveries
                            .iter_mut()
                            .find(|d| d.device == device && d.state == DeliveryState::Sent)
                        {
                            d.state = DeliveryState::NotConnected;
                            d.error = Some(error);
                        }
                    }
                    live.settle();
                    command = live.clone();
                    if command.state.is_final() {
                        state.active.remove(&command.id);
                        Some(true)
                    } else {
                        Some(false)
                    }
                }
                // Every ack arrived while we were delivering: `on_ack` settled the command,
                // and `get` finds it in `finishing` until the ledger holds its final state.
                None => None,
            }
        };
        let Some(finished) = finished else {
            return self.get(&command.id).await;
        };
        if finished {
            self.finish(&command, now).await;
        } else if let Err(err) = self.ports.ledger.save(&command).await {
            tracing::warn!(command_id = %command.id, error = %err, "failed to save a delivered command");
        }
        Ok(command)
    }

    /// Records a refusal: the command is saved as refused and the refusal audited.
    async fn refuse(
        &self,
        mut command: Command,
        actor: &Principal,
        refusal: Refusal,
        now: Timestamp,
    ) -> GatewayError {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        command.state = CommandState::Refused;
        command.outcome = Some(refusal.to_string());
        command.refusal = Some(refusal.kind().to_owned());
        command.updated_at = now;
        command.deliveries.clear();
        let note = self.note(
            actor,
            "command.refused",
            &command,
            "refused",
            json!({
                "refusal": refusal.kind(),
                "reason": refusal.to_string(),
                "payload": command.payload(),
                "payload_sha256": command.payload_sha256,
                "requested_by": command.requested_by,
            }),
        );
        self.audit_or_backlog(vec![note]).await;
        let _ = self.ports.ledger.save(&command).await;
        GatewayError::Refused {
            id: command.id,
            reason: refusal,
        }
    }

    async fn expire(&self, mut command: Command, now: Timestamp) {
        self.state.lock().active.remove(&command.id);
        if command.state != CommandState::PendingApproval {
            return;
        }
        self.stats.expired.fetch_add(1, Ordering::Relaxed);
        command.state = CommandState::Expired;
        command.outcome = Some(format!(
            "no valid approval before {}",
            command
                .approval_expires_at
                .map(Timestamp::to_rfc3339)
                .unwrap_or_default()
        ));
        command.updated_at = now;
        let note = self.note(
            &Principal::system("citysec"),
            "command.expired",
            &command,
            "expired",
            Value::Null,
        );
        self.audit_or_backlog(vec![note]).await;
        let _ = self.ports.ledger.save(&command).await;
    }

    /// A command reached a final state after delivery: count, audit, save.
    async fn finish(&self, command: &Command, now: Timestamp) {
        let counter = match command.state {
            CommandState::Acked => &self.stats.acked,
            CommandState::Refused => &self.stats.device_refused,
            _ => &self.stats.timed_out,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut note = self.note(
            &Principal::system("citysec"),
            &format!("command.{}", command.state),
            command,
            command.state.as_str(),
            json!({
                "outcome": command.outcome,
                "deliveries": command.deliveries.iter().map(|d| json!({
                    "device": d.device, "state": d.state.as_str(), "error": d.error,
                })).collect::<Vec<_>>(),
            }),
        );
        note.ts = now;
        self.audit_or_backlog(vec![note]).await;
        let _ = self.ports.ledger.save(command).await;
        self.state.lock().finishing.remove(&command.id);
    }

    /// An acknowledgement from `device`: the readings of an `.../ack` payload (`ack.id`,
    /// `ack.ok`, `ack.error`, as the broker decodes them).
    pub async fn on_ack(&self, device: &DeviceId, readings: &[Reading], now: Timestamp) {
        let text = |name: &str| {
            readings
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| match &r.value {
                    ReadingValue::Text(s) => Some(s.clone()),
                    _ => None,
                })
        };
        let Some(id) = text("ack.id") else { return };
        let ok = readings
            .iter()
            .find(|r| r.name == "ack.ok")
            .is_some_and(|r| r.value.is_on());
        let error = text("ack.error");
        if ok && self.acked_late(device, &id, now).await {
            return;
        }
        let (finished, late) = {
            let mut state = self.state.lock();
            match state.active.get_mut(&id) {
                None => (None, !ok),
                Some(command) => {
                    let delivery = command
                        .deliveries
                        .iter_mut()
                        .find(|d| &d.device == device && d.state == DeliveryState::Sent);
                    match delivery {
                        Some(d) => {
                            d.state = if ok {
                                DeliveryState::Acked
                            } else {
                                DeliveryState::Refused
                            };
                            d.acked_at = Some(now);
                            d.error = error.clone();
                            command.updated_at = now;
                            command.settle();
                            if command.state.is_final() {
                                let done = command.clone();
                                state.active.remove(&id);
                                state.finishing.insert(id.clone(), done.clone());
                                (Some(done), false)
                            } else {
                                (None, false)
                            }
                        }
                        None => (None, !ok),
                    }
                }
            }
        };
        if let Some(command) = finished {
            self.finish(&command, now).await;
        } else if late {
            self.device_refused_late(device, &id, error, now).await;
        }
    }

    /// An acknowledgement for a delivery that had timed out: the device did act on it, only
    /// later (its ack waited on a full bus). The command is updated and the lateness audited.
    /// Returns whether the ack was one of those.
    async fn acked_late(&self, device: &DeviceId, id: &str, now: Timestamp) -> bool {
        let updated = {
            let mut state = self.state.lock();
            let Some(pos) = state.timed_out.iter().position(|c| c.id == id) else {
                return false;
            };
            let command = &mut state.timed_out[pos];
            let Some(delivery) = command
                .deliveries
                .iter_mut()
                .find(|d| &d.device == device && d.state == DeliveryState::TimedOut)
            else {
                return false;
            };
            delivery.state = DeliveryState::Acked;
            delivery.acked_at = Some(now);
            delivery.error = None;
            let late_ms = now.as_millis() - delivery.sent_at.as_millis();
            command.updated_at = now;
            command.settle();
            let updated = command.clone();
            if !updated
                .deliveries
                .iter()
                .any(|d| d.state == DeliveryState::TimedOut)
            {
                state.timed_out.remove(pos);
            }
            (updated, late_ms)
        };
        let (command, late_ms) = updated;
        let mut note = self.note(
            &Principal::system("citysec"),
            "command.acked_late",
            &command,
            command.state.as_str(),
            json!({
                "device": device,
                "late_by_ms": late_ms,
                "outcome": command.outcome,
            }),
        );
        note.ts = now;
        self.audit_or_backlog(vec![note]).await;
        let _ = self.ports.ledger.save(&command).await;
        true
    }

    /// A device refused a copy of a command that was already settled: a replay (someone
    /// re-sent a captured command) or a duplicate. Worth an audit entry.
    async fn device_refused_late(
        &self,
        device: &DeviceId,
        id: &str,
        error: Option<String>,
        now: Timestamp,
    ) {
        let note = AuditNote {
            ts: now,
            actor: device.to_string(),
            action: "device.refused_command".to_owned(),
            subject: Some(id.to_owned()),
            outcome: "refused".to_owned(),
            detail: json!({"device": device, "error": error}),
        };
        self.audit_or_backlog(vec![note]).await;
    }

    /// Expires approvals and acknowledgements that are overdue, and retries the audit
    /// backlog. Call it about once a second.
    pub async fn tick(&self, now: Timestamp) {
        let ack_timeout = self.config.ack_timeout_ms();
        let (expired, finished) = {
            let mut state = self.state.lock();
            let mut expired = Vec::new();
            let mut finished = Vec::new();
            for command in state.active.values_mut() {
                match command.state {
                    CommandState::PendingApproval
                        if command.approval_expires_at.is_some_and(|at| now >= at) =>
                    {
                        expired.push(command.clone());
                    }
                    CommandState::Delivered => {
                        let mut changed = false;
                        for d in &mut command.deliveries {
                            if d.state == DeliveryState::Sent
                                && now.as_millis() - d.sent_at.as_millis() >= ack_timeout
                            {
                                d.state = DeliveryState::TimedOut;
                                d.error = Some(format!(
                                    "no acknowledgement within {} s",
                                    self.config.ack_timeout_s
                                ));
                                changed = true;
                            }
                        }
                        if changed {
                            command.updated_at = now;
                            command.settle();
                            if command.state.is_final() {
                                finished.push(command.clone());
                            }
                        }
                    }
                    _ => {}
                }
            }
            for c in &finished {
                state.active.remove(&c.id);
                state.finishing.insert(c.id.clone(), c.clone());
            }
            (expired, finished)
        };
        for command in expired {
            self.expire(command, now).await;
        }
        for command in finished {
            if command.state == CommandState::TimedOut {
                let mut state = self.state.lock();
                state.timed_out.push_back(command.clone());
                while state.timed_out.len() > RECENT_TIMEOUTS {
                    state.timed_out.pop_front();
                }
            }
            self.finish(&command, now).await;
        }
        self.flush_backlog().await;
    }

    /// Sends the configured all-clear to a siren, one step.
    pub async fn all_clear(
        &self,
        device: &DeviceId,
        actor: &Principal,
        reason: &str,
        now: Timestamp,
    ) -> Result<Command, GatewayError> {
        let id = self.next_id(now);
        self.all_clear_as(id, device, actor, reason, now).await
    }

    async fn all_clear_as(
        &self,
        id: String,
        device: &DeviceId,
        actor: &Principal,
        reason: &str,
        now: Timestamp,
    ) -> Result<Command, GatewayError> {
        let request = CommandRequest {
            devices: vec![device.to_string()],
            action: self.config.all_clear_action.clone(),
            params: serde_json::Map::new(),
            advisory: None,
            reason: Some(reason.to_owned()),
        };
        self.submit_as(id, actor, request, now).await
    }

    /// Reconciliation: an `actuation.uncommanded` alert for a siren the gateway did not
    /// recently activate gets an automatic all-clear (when configured). Returns the
    /// all-clear's result, or `None` when the alert needs none.
    pub async fn on_alert(
        &self,
        alert: &Alert,
        now: Timestamp,
    ) -> Option<Result<Command, GatewayError>> {
        if !self.config.auto_all_clear || alert.rule != "actuation.uncommanded" {
            return None;
        }
        let device = alert.device_id.as_ref()?;
        let target = self.ports.devices.target(device)?;
        if target.class != DeviceClass::Siren {
            return None;
        }
        {
            // Detection emits the alert again (count + 1) for each new actuation; answer each
            // once.
            let mut state = self.state.lock();
            let authorised = state.activations.get(device).is_some_and(|at| {
                alert.last_ts.as_millis() - at.as_millis() <= self.config.reconcile_window_ms()
            });
            if authorised {
                return None;
            }
            if state
                .answered
                .get(device)
                .is_some_and(|last| *last >= alert.last_ts)
            {
                return None;
            }
            state.answered.insert(device.clone(), alert.last_ts);
        }
        // Each emission of the alert has one all-clear, whichever gateway answers it: its
        // id follows from the alert, so a gateway that gets an emission another already
        // answered (redelivered after that process died, or a second process of the
        // alerts group) finds it in the ledger and sends none.
        let id = auto_all_clear_id(&alert.id, alert.last_ts);
        match self.ports.ledger.load(&id).await {
            Ok(Some(_)) => return None,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(alert_id = %alert.id, error = %e, "cannot tell whether another gateway answered this alert; answering it")
            }
        }
        let reason = format!("automatic all-clear: alert {} ({})", alert.id, alert.title);
        self.stats.auto_all_clears.fetch_add(1, Ordering::Relaxed);
        Some(
            self.all_clear_as(id, device, &Principal::system("citysec"), &reason, now)
                .await,
        )
    }

    /// The automatic all-clear some gateway (of any process sharing the ledger) sent for
    /// the emission of alert `alert` last seen at `last_ts`, if one was.
    pub async fn automatic_all_clear(
        &self,
        alert: &model::AlertId,
        last_ts: Timestamp,
    ) -> Option<Command> {
        self.ports
            .ledger
            .load(&auto_all_clear_id(alert, last_ts))
            .await
            .ok()
            .flatten()
    }

    /// The id of a cancel delivered to `device` within `within_ms` before `now`, if any.
    pub fn recent_cancel(
        &self,
        device: &DeviceId,
        now: Timestamp,
        within_ms: i64,
    ) -> Option<String> {
        let state = self.state.lock();
        let (at, id) = state.cancels.get(device)?;
        (now.as_millis() - at.as_millis() <= within_ms).then(|| id.clone())
    }

    /// A command by id: the live copy while it is active, else the ledger's.
    pub async fn get(&self, id: &str) -> Result<Command, GatewayError> {
        {
            let state = self.state.lock();
            if let Some(command) = state.active.get(id).or_else(|| state.finishing.get(id)) {
                return Ok(command.clone());
            }
        }
        self.ports
            .ledger
            .load(id)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?
            .ok_or_else(|| GatewayError::NotFound(id.to_owned()))
    }

    fn note(
        &self,
        actor: &Principal,
        action: &str,
        command: &Command,
        outcome: &str,
        detail: Value,
    ) -> AuditNote {
        let mut detail = detail;
        if let Value::Object(map) = &mut detail {
            map.insert("devices".into(), json!(command.devices));
            map.insert("action".into(), json!(command.action));
        }
        AuditNote {
            ts: command.updated_at,
            actor: actor.name.clone(),
            action: action.to_owned(),
            subject: Some(command.id.clone()),
            outcome: outcome.to_owned(),
            detail,
        }
    }

    fn backlog(&self, note: AuditNote) {
        let mut state = self.state.lock();
        state.backlog.push(note);
        self.bound_backlog(&mut state);
    }

    /// Drops the oldest entries beyond `max_audit_backlog`, remembering the gap.
    fn bound_backlog(&self, state: &mut State) {
        let max = self.config.max_audit_backlog.max(1);
        if state.backlog.len() > max {
            let excess = state.backlog.len() - max;
            let dropped: Vec<AuditNote> = state.backlog.drain(..excess).collect();
            let (first, last) = (dropped[0].ts, dropped[dropped.len() - 1].ts);
            state.lost = Some(match state.lost {
                Some((n, from, to)) => (n + excess as u64, from.min(first), to.max(last)),
                None => (excess as u64, first, last),
            });
            self.stats
                .audit_lost
                .fetch_add(excess as u64, Ordering::Relaxed);
            tracing::error!(
                dropped = excess,
                "audit backlog full: the oldest entries are lost (an audit.gap entry will say so)"
            );
        }
        self.stats
            .audit_backlog
            .store(state.backlog.len() as u64, Ordering::Relaxed);
    }

    /// Writes notes after any backlog (so the log keeps its order), or adds them to it.
    /// A gap from a full backlog is written first, as an `audit.gap` entry.
    async fn audit_or_backlog(&self, notes: Vec<AuditNote>) {
        let (pending, lost) = {
            let mut state = self.state.lock();
            let mut all = std::mem::take(&mut state.backlog);
            all.extend(notes);
            (all, state.lost.take())
        };
        let mut write = Vec::with_capacity(pending.len() + 1);
        if let Some((n, from, to)) = lost {
            write.push(AuditNote {
                ts: to,
                actor: "citysec".to_owned(),
                action: "audit.gap".to_owned(),
                subject: None,
                outcome: "lost".to_owned(),
                detail: json!({
                    "lost": n,
                    "from": from,
                    "to": to,
                    "reason": "the audit log could not be written and the gateway's backlog (max_audit_backlog) was full",
                }),
            });
        }
        write.extend(pending.iter().cloned());
        if let Err(err) = self.ports.audit.record(write).await {
            tracing::error!(error = %err, entries = pending.len(), "audit log unavailable; entries kept for retry");
            let mut state = self.state.lock();
            let newer = std::mem::take(&mut state.backlog);
            state.backlog = pending;
            state.backlog.extend(newer);
            if let Some((n, from, to)) = lost {
                state.lost = Some(match state.lost {
                    Some((m, f, t)) => (n + m, from.min(f), to.max(t)),
                    None => (n, from, to),
                });
            }
            self.bound_backlog(&mut state);
        } else {
            self.stats
                .audit_backlog
                .store(self.state.lock().backlog.len() as u64, Ordering::Relaxed);
        }
    }

    async fn flush_backlog(&self) {
        let waiting = {
            let state = self.state.lock();
            !state.backlog.is_empty() || state.lost.is_some()
        };
        if waiting {
            self.audit_or_backlog(Vec::new()).await;
        }
    }
}

/// The command id of the automatic all-clear answering one emission of an alert (its id and
/// last time): `cmd-<last time in hex>-auto-<FNV-1a of both>`.
fn auto_all_clear_id(alert: &model::AlertId, last_ts: Timestamp) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in alert
        .0
        .as_bytes()
        .iter()
        .chain(&[0])
        .chain(&last_ts.as_millis().to_le_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("cmd-{:011x}-auto-{hash:016x}", last_ts.as_millis().max(0))
}
