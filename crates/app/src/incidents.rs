//! The incident service: consumes alerts from the bus subject `alerts` (consumer group
//! `incidents`), runs the `incident` correlator, stores every incident change, forwards
//! alerts and changes to the SIEM, and runs the response actions that playbooks make
//! automatic or that supervisors approve, each one audited and on the incident timeline.
//!
//! Once an incident is confirmed (triaged, or moved further), its sightings and
//! indicators are published to the TAXII sharing collection with the incident's TLP
//! (`app::intel::publish_incident`): at confirmation, when its TLP changes, and when new
//! evidence arrives (new alerts at once; repeats of held alerts at most once a minute, the
//! latest held back one published by the next minute's flush).
//! Ids and versions follow from the incident, so publishing again stores nothing new.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use incident::{Correlator, LifecycleError, Op};
use model::{ActionKind, ActionMode, ErrorCode, Incident, IncidentId, IncidentState, Timestamp};
use tokio::sync::Mutex;

use crate::integrations::{Forwarder, Record};
use crate::response::{AuditEntry, Auditor, Executor};

/// The running service; API changes and the alert stream take turns on one lock.
pub struct IncidentService {
    correlator: Mutex<Correlator>,
    /// What the correlator was built from, to rebuild it from the store on a takeover.
    setup: (incident::CorrelatorConfig, Vec<incident::Playbook>),
    store: Arc<dyn store::Store>,
    executor: Executor,
    auditor: Arc<dyn Auditor>,
    forwarder: Arc<Forwarder>,
    /// Where confirmed incidents are shared (a `[taxii]` with a sharing collection).
    sharing: Option<crate::intel::config::TaxiiConfig>,
    /// When each incident was last published.
    published: std::sync::Mutex<HashMap<IncidentId, Instant>>,
    /// Confirmed incidents whose repeats were not published yet (the next flush does).
    unpublished: std::sync::Mutex<std::collections::HashSet<IncidentId>>,
}

/// The ownership group and consumer group of incident correlation.
pub const INCIDENTS_GROUP: &str = "incidents";
/// Its one shard.
pub const INCIDENTS_SHARD: &str = "all";

/// A correlator holding the store's open incidents, numbering on from the last.
async fn load_correlator(
    config: incident::CorrelatorConfig,
    playbooks: Vec<incident::Playbook>,
    store: &dyn store::Store,
) -> anyhow::Result<Correlator> {
    let max_open = config.max_open;
    let next = store.max_incident_seq().await? + 1;
    let mut correlator = Correlator::new(config, playbooks, next);
    for incident in store.open_incidents(max_open).await? {
        correlator.track(incident);
    }
    Ok(correlator)
}

/// Repeats of alerts an incident already holds republish it at most this often.
const REPEAT_PUBLISH_INTERVAL: Duration = Duration::from_secs(60);

fn lifecycle_error(err: LifecycleError) -> web::PlatformError {
    let code = match &err {
        LifecycleError::NoSuchAction { .. } => ErrorCode::NotFound,
        LifecycleError::Invalid(_) => ErrorCode::Invalid,
        LifecycleError::Closed { .. }
        | LifecycleError::Backwards { .. }
        | LifecycleError::ActionState { .. } => ErrorCode::Conflict,
    };
    web::PlatformError::new(code, err.to_string())
}

impl IncidentService {
    /// Restores open incidents from the store and continues their numbering.
    pub async fn start(
        config: incident::CorrelatorConfig,
        playbooks: Vec<incident::Playbook>,
        store: Arc<dyn store::Store>,
        executor: Executor,
        auditor: Arc<dyn Auditor>,
        forwarder: Arc<Forwarder>,
    ) -> anyhow::Result<IncidentService> {
        let setup = (config.clone(), playbooks.clone());
        let correlator = load_correlator(config, playbooks, store.as_ref()).await?;
        tracing::info!(
            open = correlator.stats().open,
            playbooks = correlator.playbooks().len(),
            "incidents restored"
        );
        Ok(IncidentService {
            correlator: Mutex::new(correlator),
            setup,
            store,
            executor,
            auditor,
            forwarder,
            sharing: None,
            published: std::sync::Mutex::new(HashMap::new()),
            unpublished: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Shares confirmed incidents through `config`'s sharing collection (when it has one).
    pub fn share_to(mut self, config: &crate::intel::config::TaxiiConfig) -> IncidentService {
        if config.collections.iter().any(|c| c.sharing) {
            self.sharing = Some(config.clone());
        }
        self
    }

    /// Publishes a confirmed incident's sightings and indicators; failures are logged and
    /// the next change publishes again.
    async fn share(&self, incident: &Incident) {
        let Some(config) = &self.sharing else {
            return;
        };
        if !incident.state.is_confirmed() {
            return;
        }
        if let Ok(mut m) = self.published.lock() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(incident.id.clone(), Instant::now());
        }
        if let Ok(mut u) = self.unpublished.lock() {
            u.remove(&incident.id);
        }
        match crate::intel::publish_incident(self.store.as_ref(), config, incident).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(incident_id = %incident.id, tlp = %incident.tlp, objects = n, "incident shared")
            }
            Err(err) => {
                tracing::warn!(incident_id = %incident.id, error = %format!("{err:#}"), "failed to share incident")
            }
        }
    }

    /// Whether a repeat of a held alert should republish the incident now.
    fn repeat_due(&self, id: &IncidentId) -> bool {
        self.published
            .lock()
            .map(|m| {
                m.get(id)
                    .is_none_or(|t| t.elapsed() >= REPEAT_PUBLISH_INTERVAL)
            })
            .unwrap_or(true)
    }

    /// Publishes, once a minute, the confirmed incidents whose latest repeats were held
    /// back, until shutdown.
    pub(crate) async fn flush_shared(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        if self.sharing.is_none() {
            return;
        }
        let mut interval = tokio::time::interval(REPEAT_PUBLISH_INTERVAL);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            let ids: Vec<IncidentId> = match self.unpublished.lock() {
                Ok(mut u) => u.drain().collect(),
                Err(_) => continue,
            };
            for id in ids {
                let incident = self.correlator.lock().await.get(&id).cloned();
                if let Some(incident) = incident {
                    self.share(&incident).await;
                }
            }
        }
    }

    pub fn forwarder(&self) -> &Arc<Forwarder> {
        &self.forwarder
    }

    /// Consumes the `alerts` subject until the bus closes.
    pub(crate) async fn run(self: Arc<Self>, sub: Box<dyn bus::Subscription>) {
        let (_keep, stop) = tokio::sync::watch::channel(false);
        self.run_until(sub, stop).await;
    }

    /// Consumes `alerts` until the bus closes or `stop` turns true (checked between
    /// batches, so an alert is never left half handled).
    async fn run_until(
        self: Arc<Self>,
        mut sub: Box<dyn bus::Subscription>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if *stop.borrow() {
                return;
            }
            let batch = tokio::select! {
                batch = sub.next_batch(1024) => batch,
                _ = stop.changed() => return,
            };
            let Some(batch) = batch else { return };
            for message in &batch {
                if let bus::Message::Alert(alert) = message.as_ref() {
                    self.on_alert(alert).await;
                }
            }
        }
    }

    /// With several detect-role processes (a NATS bus): correlation runs in one of them,
    /// the owner of the singleton shard `all` of ownership group `incidents`, so related
    /// alerts land in one incident and a redelivered alert is correlated by the process
    /// that holds the incident. On taking the shard over, the correlator is rebuilt from
    /// the store (open incidents, numbering) and the group's consumer taken over
    /// (`Bus::subscribe_partition`); on losing it, consumption stops after the batch at
    /// hand.
    pub(crate) async fn run_singleton(
        self: Arc<Self>,
        bus: Arc<dyn bus::Bus>,
        mut ownership: Box<dyn bus::Ownership>,
    ) {
        let mut running: Option<(
            tokio::sync::watch::Sender<bool>,
            tokio::task::JoinHandle<()>,
        )> = None;
        loop {
            let owned = ownership.owned().contains(INCIDENTS_SHARD);
            if owned && running.is_none() {
                match self.take_over(bus.as_ref()).await {
                    Ok(sub) => {
                        let (stop_tx, stop) = tokio::sync::watch::channel(false);
                        let task = tokio::spawn(self.clone().run_until(sub, stop));
                        running = Some((stop_tx, task));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "failed to take incident correlation over")
                    }
                }
            } else if !owned && let Some((stop, task)) = running.take() {
                let _ = stop.send(true);
                let _ = task.await;
                tracing::info!("incident correlation handed over");
            }
            if ownership.changed().await.is_none() {
                break;
            }
        }
        // The bus is closing: let the consumer drain, then hand over.
        if let Some((_, task)) = running {
            let _ = task.await;
        }
        ownership.leave().await;
    }

    async fn take_over(&self, bus: &dyn bus::Bus) -> anyhow::Result<Box<dyn bus::Subscription>> {
        let sub = bus
            .subscribe_partition("alerts", INCIDENTS_GROUP, None)
            .await?;
        let (config, playbooks) = self.setup.clone();
        let fresh = load_correlator(config, playbooks, self.store.as_ref()).await?;
        *self.correlator.lock().await = fresh;
        tracing::info!("incident correlation taken over");
        Ok(sub)
    }

    async fn store_incident(&self, incident: &Incident) -> Result<(), web::PlatformError> {
        self.store
            .upsert_incident(incident)
            .await
            .map_err(Into::into)
    }

    /// Correlates one alert, stores the incident and runs automatic playbook actions.
    pub async fn on_alert(&self, alert: &model::Alert) {
        self.forwarder.forward(Record::Alert(alert.clone()));
        let mut correlator = self.correlator.lock().await;
        let outcome = correlator.on_alert(alert);
        let mut delay = Duration::from_millis(50);
        while let Err(err) = self.store_incident(&outcome.incident).await {
            tracing::error!(error = %err, incident_id = %outcome.incident.id, "failed to store incident; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        if outcome.created {
            tracing::warn!(incident_id = %outcome.incident.id, severity = %outcome.incident.severity, "incident opened: {}", outcome.incident.title);
        }
        if !outcome.repeat {
            let change = if outcome.created {
                "incident.opened"
            } else {
                "incident.alert_added"
            };
            self.forwarder
                .forward(Record::Incident(outcome.incident.clone(), change));
            for action in outcome.incident.actions.iter().filter(|a| {
                outcome.proposed.contains(&a.id) && a.status == model::ActionStatus::Pending
            }) {
                self.audit(
                    &action.requested_by,
                    action.kind,
                    &action.device_id,
                    &outcome.incident.id,
                    "requested, waiting for approval".to_owned(),
                )
                .await;
            }
        }
        let repeat = outcome.repeat;
        let mut incident = outcome.incident;
        for action_id in outcome.execute {
            match self.run_action(&mut correlator, incident, &action_id).await {
                Ok((updated, _)) => incident = updated,
                Err((unchanged, err)) => {
                    tracing::error!(error = %err, "playbook action not recorded");
                    incident = unchanged;
                }
            }
        }
        if !repeat || self.repeat_due(&incident.id) {
            self.share(&incident).await;
        } else if self.sharing.is_some()
            && incident.state.is_confirmed()
            && let Ok(mut u) = self.unpublished.lock()
            && u.len() < 10_000
        {
            u.insert(incident.id.clone());
        }
    }

    /// Applies one operation to a copy, stores it, then tracks it (so a store failure
    /// changes nothing) and forwards the change.
    async fn apply(
        &self,
        correlator: &mut Correlator,
        incident: &Incident,
        op: Op,
        actor: &str,
    ) -> Result<(Incident, incident::Effects), web::PlatformError> {
        let change = match &op {
            Op::Transition(_) => "incident.state_changed",
            Op::Assign(_) => "incident.owner_changed",
            Op::Note(_) => "incident.note",
            Op::SetTlp(_) => "incident.tlp_changed",
            Op::RequestAction { .. } | Op::Decide { .. } | Op::ActionResult { .. } => {
                "incident.action"
            }
        };
        let mut changed = incident.clone();
        let effects =
            incident::apply(&mut changed, op, actor, Timestamp::now()).map_err(lifecycle_error)?;
        if changed != *incident {
            self.store_incident(&changed).await?;
            correlator.track(changed.clone());
            self.forwarder
                .forward(Record::Incident(changed.clone(), change));
            let confirmed_now = changed.state.is_confirmed() && !incident.state.is_confirmed();
            if confirmed_now || changed.tlp != incident.tlp {
                self.share(&changed).await;
            }
        }
        Ok((changed, effects))
    }

    async fn audit(
        &self,
        actor: &str,
        kind: ActionKind,
        device_id: &model::DeviceId,
        incident_id: &IncidentId,
        outcome: String,
    ) {
        let entry = AuditEntry {
            at: Timestamp::now(),
            actor: actor.to_owned(),
            action: format!("response.{}", kind.as_str()),
            device_id: device_id.clone(),
            incident_id: incident_id.0.clone(),
            outcome,
        };
        if let Err(err) = self.auditor.record(entry).await {
            tracing::error!(error = %err, "audit record failed");
        }
    }

    /// Executes an approved action and records its result; containing actions move the
    /// incident to contained. Returns the incident and a rotated secret, if any.
    async fn run_action(
        &self,
        correlator: &mut Correlator,
        incident: Incident,
        action_id: &str,
    ) -> Result<(Incident, Option<String>), (Incident, web::PlatformError)> {
        let Some(action) = incident.actions.iter().find(|a| a.id == action_id).cloned() else {
            let err = web::PlatformError::not_found(format!("no action {action_id}"));
            return Err((incident, err));
        };
        let actor = action
            .decided_by
            .clone()
            .unwrap_or_else(|| action.requested_by.clone());
        // The latest emission of the uncommanded actuation of this device the incident
        // holds: what a `silence_siren` answers (the gateway may have answered it already).
        let cause = incident
            .alerts
            .iter()
            .filter(|a| {
                a.rule == "actuation.uncommanded" && a.device_id.as_ref() == Some(&action.device_id)
            })
            .max_by_key(|a| a.last_ts)
            .map(|a| (&a.id, a.last_ts));
        let result = self
            .executor
            .execute(
                action.kind,
                &action.device_id,
                action.rate_limit,
                &actor,
                &incident.id.0,
                cause,
            )
            .await;
        let (ok, detail, secret, contains) = match result {
            Ok(done) => (true, done.detail, done.secret, done.contains),
            Err(reason) => (false, reason, None, false),
        };
        self.audit(
            &actor,
            action.kind,
            &action.device_id,
            &incident.id,
            format!("{}: {detail}", if ok { "done" } else { "failed" }),
        )
        .await;
        let op = Op::ActionResult {
            action_id: action_id.to_owned(),
            ok,
            detail,
        };
        let (mut incident, _) = match self.apply(correlator, &incident, op, &actor).await {
            Ok(done) => done,
            Err(err) => return Err((incident, err)),
        };
        if contains && incident.state < IncidentState::Contained {
            match self
                .apply(
                    correlator,
                    &incident,
                    Op::Transition(IncidentState::Contained),
                    &actor,
                )
                .await
            {
                Ok((contained, _)) => incident = contained,
                Err(err) => tracing::warn!(error = %err, "incident not moved to contained"),
            }
        }
        Ok((incident, secret))
    }

    /// A change asked for through the API, attributed to `actor`.
    pub async fn update(
        &self,
        id: &IncidentId,
        request: web::IncidentRequest,
        actor: &web::Principal,
    ) -> Result<web::IncidentUpdate, web::PlatformError> {
        let mut correlator = self.correlator.lock().await;
        let incident =
            match correlator.get(id) {
                Some(incident) => incident.clone(),
                None => self.store.get_incident(id).await?.ok_or_else(|| {
                    web::PlatformError::not_found(format!("incident {id} not found"))
                })?,
            };
        let decided = match &request {
            web::IncidentRequest::Decide { action_id, approve } => {
                Some((action_id.clone(), *approve))
            }
            _ => None,
        };
        let op = match request {
            web::IncidentRequest::Transition(state) => Op::Transition(state),
            web::IncidentRequest::Assign(owner) => Op::Assign(owner),
            web::IncidentRequest::Note(text) => Op::Note(text),
            web::IncidentRequest::SetTlp(tlp) => Op::SetTlp(tlp),
            web::IncidentRequest::Action {
                kind,
                device_id,
                execute_now,
                rate_limit,
            } => {
                let device_id = match device_id.or_else(|| incident.devices.first().cloned()) {
                    Some(d) => d,
                    None => {
                        return Err(web::PlatformError::invalid(
                            "the incident names no device; give device_id",
                        ));
                    }
                };
                if self.store.get_device(&device_id).await?.is_none() {
                    return Err(web::PlatformError::not_found(format!(
                        "device {device_id} not found"
                    )));
                }
                Op::RequestAction {
                    kind,
                    device_id,
                    mode: if execute_now {
                        ActionMode::Auto
                    } else {
                        ActionMode::Approval
                    },
                    rate_limit,
                }
            }
            web::IncidentRequest::Decide { action_id, approve } => {
                Op::Decide { action_id, approve }
            }
        };
        let requested = matches!(op, Op::RequestAction { .. });
        let (mut incident, effects) = self
            .apply(&mut correlator, &incident, op, &actor.name)
            .await?;
        if requested
            && effects.execute.is_empty()
            && let Some(action) = incident.actions.last()
        {
            self.audit(
                &actor.name,
                action.kind,
                &action.device_id,
                &incident.id,
                "requested, waiting for approval".to_owned(),
            )
            .await;
        }
        if let Some((action_id, approve)) = &decided
            && let Some(action) = incident.actions.iter().find(|a| &a.id == action_id)
        {
            let outcome = if *approve { "approved" } else { "rejected" };
            self.audit(
                &actor.name,
                action.kind,
                &action.device_id,
                &incident.id,
                outcome.to_owned(),
            )
            .await;
        }
        let mut secret = None;
        for action_id in effects.execute {
            match self.run_action(&mut correlator, incident, &action_id).await {
                Ok((updated, s)) => {
                    incident = updated;
                    secret = secret.or(s);
                }
                Err((_, err)) => return Err(err),
            }
        }
        Ok(web::IncidentUpdate { incident, secret })
    }
}

/// Checks the `[[playbooks]]` section: each playbook on its own, unique names, and no
/// automatic credential rotation (the new secret must reach a person: the approver).
pub fn validate_playbooks(playbooks: &[incident::Playbook]) -> anyhow::Result<()> {
    let mut names = std::collections::HashSet::new();
    for playbook in playbooks {
        playbook.validate().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            names.insert(playbook.name.as_str()),
            "playbook name {:?} is used twice",
            playbook.name
        );
        for step in &playbook.actions {
            anyhow::ensure!(
                !(step.action == ActionKind::RotateCredentials && step.mode == ActionMode::Auto),
                "playbook {:?}: rotate_credentials must be mode = \"approval\" (the new secret is shown to the approver)",
                playbook.name
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
