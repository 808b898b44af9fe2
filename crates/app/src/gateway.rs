//! The command gateway wired into the platform: its Ed25519 key (generated on first start
//! into `<data-dir>/gateway.key`, mode 0600), the ports it drives (the broker's device
//! directory, MQTT delivery to `city/<sector>/<id>/cmd`, the store's audit log and command
//! tables, the bus), and the tasks that feed it acknowledgements (`obs.state` events with
//! `ack.*` readings), alerts (subject `alerts`, for the automatic all-clear) and time.
//!
//! [`all_clear`] is the entry point for other parts of the platform (playbooks) that need to
//! silence a siren.
//!
//! Advisories: siren activations must reference an authorised public warning.
//! [`IssuedWarnings`] is the gateway's view of them: advisories issued with status `Actual`
//! (or `Exercise`, for drills), not cancelled, superseded or expired. The advisory service
//! refreshes it from the store whenever it issues or cancels, and the platform at start.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bus::{Bus, Message};
use gateway::{
    Actuator, AdvisoryCheck, Announcer, AuditLog, AuditNote, Command, CommandLedger, DeviceLookup,
    Gateway, GatewayError, PortError, Ports, Principal, Signer, Target,
};
use model::topic::{Channel, device_topic};
use model::{DeviceId, DeviceStatus, EventKind, Timestamp};
use store::Store;
use store::audit::{AuditEntry, CommandRecord};

use crate::directory::Directory;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "gateway.key";

/// Reads the gateway's secret seed (64 hex digits) or creates it (mode 0600).
pub fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
            crate::token::write_private(path, &format!("{}\n", hex::encode(seed)))
                .with_context(|| format!("failed to write {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated the gateway signing key");
            return Ok(seed);
        }
        Err(err) => return Err(err).with_context(|| format!("failed to read {}", path.display())),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        anyhow::ensure!(
            mode & 0o077 == 0,
            "{} is readable by others (mode {mode:o}); chmod 600 it",
            path.display()
        );
    }
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("{} must hold 64 hex digits", path.display()))?;
    Ok(bytes)
}

/// The registry as the gateway sees it: the broker's in-memory directory.
struct Lookup(Arc<Directory>);

impl DeviceLookup for Lookup {
    fn target(&self, id: &DeviceId) -> Option<Target> {
        self.0.lookup(id.as_str()).map(|d| Target {
            id: d.id.clone(),
            sector: d.sector,
            class: d.class,
            revoked: d.status == DeviceStatus::Revoked,
        })
    }
}

/// Delivery: QoS 1 publish to the device's cmd topic through the embedded broker (none in
/// a process without the ingest role, which cannot deliver).
struct Mqtt(Option<ingest::mqtt::Publisher>);

#[async_trait]
impl Actuator for Mqtt {
    async fn deliver(&self, target: &Target, payload: Vec<u8>) -> Result<bool, PortError> {
        let Some(publisher) = &self.0 else {
            return Err(PortError(
                "this process runs no ingest role, so it has no broker to deliver through".into(),
            ));
        };
        let topic = device_topic(target.sector, &target.id, Channel::Cmd);
        Ok(publisher.publish(&topic, payload, 1) > 0)
    }
}

/// The audit log and command tables of the store.
struct StorePorts(Arc<dyn Store>);

#[async_trait]
impl AuditLog for StorePorts {
    async fn record(&self, notes: Vec<AuditNote>) -> Result<(), PortError> {
        let entries: Vec<AuditEntry> = notes
            .into_iter()
            .map(|n| AuditEntry {
                ts: n.ts,
                actor: n.actor,
                action: n.action,
                subject: n.subject,
                outcome: n.outcome,
                detail: n.detail,
            })
            .collect();
        self.0
            .append_audit(&entries)
            .await
            .map(|_| ())
            .map_err(|e| PortError(e.to_string()))
    }
}

#[async_trait]
impl CommandLedger for StorePorts {
    async fn next_counters(&self, devices: &[DeviceId], floor: u64) -> Result<Vec<u64>, PortError> {
        self.0
            .next_command_counters(devices, floor)
            .await
            .map_err(|e| PortError(e.to_string()))
    }

    async fn save(&self, command: &Command) -> Result<(), PortError> {
        let body = serde_json::to_value(command).map_err(|e| PortError(e.to_string()))?;
        self.0
            .put_command(&CommandRecord {
                id: command.id.clone(),
                created_at: command.created_at,
                state: command.state.as_str().to_owned(),
                body,
            })
            .await
            .map_err(|e| PortError(e.to_string()))
    }

    async fn load(&self, id: &str) -> Result<Option<Command>, PortError> {
        let Some(record) = self
            .0
            .get_command(id)
            .await
            .map_err(|e| PortError(e.to_string()))?
        else {
            return Ok(None);
        };
        serde_json::from_value(record.body)
            .map(Some)
            .map_err(|e| PortError(format!("command {id} does not decode: {e}")))
    }
}

/// No advisory is an authorised public warning: every siren activation is refused (for
/// platforms and tests without an advisory service).
pub struct NoAdvisories;

impl AdvisoryCheck for NoAdvisories {
    fn is_authorised_warning(&self, _advisory_id: &str) -> bool {
        false
    }
}

/// The public warnings a siren activation may cite, by advisory id, with their expiry.
#[derive(Debug, Default)]
pub struct IssuedWarnings {
    ids: parking_lot::RwLock<std::collections::HashMap<String, Option<Timestamp>>>,
}

impl IssuedWarnings {
    /// Reloads the set from the store's issued advisories.
    pub async fn refresh(&self, store: &dyn Store) -> anyhow::Result<()> {
        let issued = store
            .list_advisories(&store::AdvisoryQuery {
                state: Some(model::AdvisoryState::Issued),
                issued: true,
                limit: 10_000,
                after: None,
            })
            .await
            .context("failed to load the issued advisories")?;
        let ids = issued
            .into_iter()
            .filter(|a| {
                a.state == model::AdvisoryState::Issued
                    && matches!(
                        a.status,
                        model::AdvisoryStatus::Actual | model::AdvisoryStatus::Exercise
                    )
                    && a.msg_type != model::AdvisoryMsgType::Cancel
            })
            .map(|a| (a.id, a.content.expires))
            .collect();
        *self.ids.write() = ids;
        Ok(())
    }
}

impl AdvisoryCheck for IssuedWarnings {
    fn is_authorised_warning(&self, advisory_id: &str) -> bool {
        self.ids
            .read()
            .get(advisory_id)
            .is_some_and(|expires| expires.is_none_or(|t| t > Timestamp::now()))
    }
}

/// Authorised commands as `obs.command` events on the bus.
struct BusAnnouncer(Arc<dyn Bus>);

/// How long a cancel's announcement may hold up its delivery. The bus waits for room in
/// every consumer group, and while the store is down the store writer's group fills; a
/// cancel goes out anyway and its announcement follows when the bus has room.
const CANCEL_ANNOUNCE_WAIT: Duration = Duration::from_millis(200);

#[async_trait]
impl Announcer for BusAnnouncer {
    async fn commanded(&self, events: Vec<model::Event>, cancel: bool) {
        let bus = self.0.clone();
        let publish = async move {
            if let Err(err) = bus
                .publish(events.into_iter().map(Message::Event).collect())
                .await
            {
                tracing::warn!(error = %err, "failed to announce a command on the bus");
            }
        };
        if !cancel {
            publish.await;
            return;
        }
        // Published from its own task, so that a full bus delays the announcement and not
        // the cancel; the task ends once the bus took the events (or closed).
        let task = tokio::spawn(publish);
        if tokio::time::timeout(CANCEL_ANNOUNCE_WAIT, task)
            .await
            .is_err()
        {
            tracing::warn!(
                "the bus is full: a cancel goes out before detection is told of it (the store may be down)"
            );
        }
    }
}

/// Builds the gateway from the platform's parts.
pub fn build(
    config: &crate::Config,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    directory: Arc<Directory>,
    publisher: Option<ingest::mqtt::Publisher>,
    advisories: Arc<dyn AdvisoryCheck>,
) -> anyhow::Result<Arc<Gateway>> {
    let seed = load_or_create_key(&config.data_dir.join(KEY_FILE))?;
    let signer = Signer::from_seed(&seed);
    let mut instance = [0u8; 3];
    getrandom::fill(&mut instance).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
    let ports = Ports {
        devices: Arc::new(Lookup(directory)),
        actuator: Arc::new(Mqtt(publisher)),
        audit: Arc::new(StorePorts(store.clone())),
        ledger: Arc::new(StorePorts(store)),
        advisories,
        announcer: Arc::new(BusAnnouncer(bus)),
    };
    let gateway = Gateway::new(
        config.gateway.clone(),
        signer,
        ports,
        &hex::encode(instance),
    );
    tracing::info!(public_key = %hex::encode(gateway.public_key()), "command gateway ready");
    Ok(Arc::new(gateway))
}

/// Feeds the gateway: acknowledgements from `obs.state`, alerts for reconciliation, and a
/// tick for approval and acknowledgement timeouts. Ends when the bus closes.
pub async fn run(
    gateway: Arc<Gateway>,
    mut states: Box<dyn bus::Subscription>,
    mut alerts: Box<dyn bus::Subscription>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut states_open, mut alerts_open) = (true, true);
    while states_open || alerts_open {
        tokio::select! {
            batch = states.next_batch(1024), if states_open => match batch {
                Some(batch) => {
                    for message in &batch {
                        if let Message::Event(event) = message.as_ref()
                            && let (Some(device), EventKind::State { readings }) = (&event.device_id, &event.kind)
                            && readings.iter().any(|r| r.name == "ack.id")
                        {
                            gateway.on_ack(device, readings, Timestamp::now()).await;
                        }
                    }
                }
                None => states_open = false,
            },
            batch = alerts.next_batch(256), if alerts_open => match batch {
                Some(batch) => {
                    for message in &batch {
                        if let Message::Alert(alert) = message.as_ref()
                            && let Some(result) = gateway.on_alert(alert, Timestamp::now()).await
                        {
                            match result {
                                Ok(command) => tracing::warn!(alert_id = %alert.id, command_id = %command.id, device_id = ?alert.device_id, "automatic all-clear sent"),
                                Err(err) => tracing::error!(alert_id = %alert.id, error = %err, "automatic all-clear failed"),
                            }
                        }
                    }
                }
                None => alerts_open = false,
            },
            _ = tick.tick() => gateway.tick(Timestamp::now()).await,
        }
    }
    gateway.tick(Timestamp::now()).await;
}

/// The incident service's gateway port (`response::ActuatorGateway`): the playbook's
/// `silence_siren` sends an all-clear through the gateway. When the gateway's own
/// reconciliation sent one to this siren in the last few seconds (both answer
/// `actuation.uncommanded`), that one is reported instead of sending a second.
pub struct PlaybookGateway(pub Arc<Gateway>);

/// How long the playbook waits for the gateway's own all-clear before sending one.
const OWN_ALL_CLEAR_WAIT: Duration = Duration::from_secs(1);
/// An all-clear to the same siren this recent is the one the playbook asks for.
const RECENT_ALL_CLEAR_MS: i64 = 5_000;

#[async_trait]
impl crate::response::ActuatorGateway for PlaybookGateway {
    async fn all_clear(
        &self,
        device: &DeviceId,
        actor: &str,
        cause: Option<(&model::AlertId, Timestamp)>,
    ) -> Result<String, String> {
        // The gateway answers `actuation.uncommanded` itself (when `auto_all_clear`); the
        // playbook reacts to the same alert, so it first looks for that all-clear: sent by
        // this process's gateway, or by any process's for the alert's emission (the
        // ledger).
        if self.0.config().auto_all_clear {
            let deadline = tokio::time::Instant::now() + OWN_ALL_CLEAR_WAIT;
            loop {
                if let Some(id) =
                    self.0
                        .recent_cancel(device, Timestamp::now(), RECENT_ALL_CLEAR_MS)
                {
                    return Ok(format!(
                        "all-clear {id} already sent to {device} by the gateway"
                    ));
                }
                if let Some((alert, last_ts)) = cause
                    && let Some(command) = self.0.automatic_all_clear(alert, last_ts).await
                {
                    return Ok(format!(
                        "all-clear {} already sent to {device} by the gateway",
                        command.id
                    ));
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let reason = format!("response action by {actor}");
        match all_clear(&self.0, device, actor, &reason).await {
            Ok(command) => Ok(format!(
                "all-clear {} {} ({})",
                command.id,
                command.state,
                command.outcome.as_deref().unwrap_or("sent")
            )),
            Err(err) => Err(err.to_string()),
        }
    }
}

/// Silences a siren through the gateway, one step, on behalf of the platform itself
/// (`actor` names the part, e.g. `playbook:uncommanded-siren`).
pub async fn all_clear(
    gateway: &Gateway,
    device: &DeviceId,
    actor: &str,
    reason: &str,
) -> Result<Command, GatewayError> {
    gateway
        .all_clear(device, &Principal::system(actor), reason, Timestamp::now())
        .await
}

#[cfg(test)]
mod tests;
