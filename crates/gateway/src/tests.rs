//! Gateway tests over in-memory ports (the real store, broker and devices are exercised by
//! `app`'s integration tests): bad input as a table (each refused with its reason, audited,
//! nothing delivered), the two-person flow, expiry, acknowledgements and timeouts, the store
//! being down, and the automatic all-clear. Delivered bytes are checked with the device-side
//! `verifier`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use model::{
    Alert, AlertId, DeviceClass, DeviceId, Event, Reading, Severity, Timestamp, Value as RV,
};
use parking_lot::Mutex;
use serde_json::json;

use crate::{
    Actuator, AdvisoryCheck, Announcer, AuditLog, AuditNote, Command, CommandLedger,
    CommandRequest, CommandState, DeliveryState, DeviceLookup, Gateway, GatewayConfig,
    GatewayError, PolicyRule, PortError, Ports, Principal, Signer, Target,
};

const T0: i64 = 1_790_000_000_000; // 2026-09-21T14:13:20Z
const SEED: [u8; 32] = [42; 32];

#[derive(Default)]
struct World {
    devices: HashMap<DeviceId, Target>,
    offline: Mutex<HashSet<DeviceId>>,
    sent: Mutex<Vec<(DeviceId, Vec<u8>)>>,
    audit: Mutex<Vec<AuditNote>>,
    commands: Mutex<HashMap<String, Command>>,
    counters: Mutex<HashMap<DeviceId, u64>>,
    events: Mutex<Vec<Event>>,
    store_down: AtomicBool,
    warnings: HashSet<String>,
}

struct P(Arc<World>);

impl DeviceLookup for P {
    fn target(&self, id: &DeviceId) -> Option<Target> {
        self.0.devices.get(id).cloned()
    }
}

#[async_trait]
impl Actuator for P {
    async fn deliver(&self, target: &Target, payload: Vec<u8>) -> Result<bool, PortError> {
        if self.0.offline.lock().contains(&target.id) {
            return Ok(false);
        }
        self.0.sent.lock().push((target.id.clone(), payload));
        Ok(true)
    }
}

impl P {
    fn down(&self) -> Result<(), PortError> {
        if self.0.store_down.load(Ordering::Relaxed) {
            Err(PortError("database is locked".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl AuditLog for P {
    async fn record(&self, notes: Vec<AuditNote>) -> Result<(), PortError> {
        self.down()?;
        self.0.audit.lock().extend(notes);
        Ok(())
    }
}

#[async_trait]
impl CommandLedger for P {
    async fn next_counters(&self, devices: &[DeviceId], floor: u64) -> Result<Vec<u64>, PortError> {
        self.down()?;
        let mut counters = self.0.counters.lock();
        Ok(devices
            .iter()
            .map(|d| {
                let c = counters.entry(d.clone()).or_insert(0);
                *c = (*c + 1).max(floor);
                *c
            })
            .collect())
    }
    async fn save(&self, command: &Command) -> Result<(), PortError> {
        self.down()?;
        self.0
            .commands
            .lock()
            .insert(command.id.clone(), command.clone());
        Ok(())
    }
    async fn load(&self, id: &str) -> Result<Option<Command>, PortError> {
        self.down()?;
        Ok(self.0.commands.lock().get(id).cloned())
    }
}

impl AdvisoryCheck for P {
    fn is_authorised_warning(&self, advisory_id: &str) -> bool {
        self.0.warnings.contains(advisory_id)
    }
}

#[async_trait]
impl Announcer for P {
    async fn commanded(&self, events: Vec<Event>, _cancel: bool) {
        self.0.events.lock().extend(events);
    }
}

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn world() -> Arc<World> {
    let mut devices = HashMap::new();
    let mut add = |name: &str, class: DeviceClass, revoked: bool| {
        devices.insert(
            id(name),
            Target {
                id: id(name),
                sector: class.sector(),
                class,
                revoked,
            },
        );
    };
    add("siren-1", DeviceClass::Siren, false);
    add("siren-2", DeviceClass::Siren, false);
    add("light-1", DeviceClass::StreetLight, false);
    add("hvac-1", DeviceClass::Hvac, false);
    add("level-1", DeviceClass::LevelSensor, false);
    add("pump-q", DeviceClass::Pump, true);
    for i in 0..12 {
        add(&format!("valve-{i}"), DeviceClass::Valve, false);
    }
    Arc::new(World {
        devices,
        warnings: ["adv-flood-1".to_owned()].into(),
        ..World::default()
    })
}

fn config() -> GatewayConfig {
    let mut config = GatewayConfig {
        max_devices_per_request: 20,
        ..GatewayConfig::default()
    };
    // HVAC only at night, to test the hours.
    for rule in &mut config.rules {
        rule.classes.retain(|c| *c != DeviceClass::Hvac);
    }
    config.rules.push(PolicyRule {
        roles: vec!["operator".into()],
        classes: vec![DeviceClass::Hvac],
        actions: vec!["set_mode".into()],
        max_devices: 5,
        hours_utc: Some([22, 6]),
    });
    config.validate().unwrap();
    config
}

fn gateway(world: &Arc<World>) -> Gateway {
    gateway_with(world, config())
}

fn gateway_with(world: &Arc<World>, config: GatewayConfig) -> Gateway {
    gateway_of(world, config, "t1")
}

/// A gateway of its own process (`instance`) over the shared world (ledger, audit, devices).
fn gateway_of(world: &Arc<World>, config: GatewayConfig, instance: &str) -> Gateway {
    let p = || Arc::new(P(world.clone()));
    Gateway::new(
        config,
        Signer::from_seed(&SEED),
        Ports {
            devices: p(),
            actuator: p(),
            audit: p(),
            ledger: p(),
            advisories: p(),
            announcer: p(),
        },
        instance,
    )
}

fn req(devices: &[&str], action: &str) -> CommandRequest {
    CommandRequest {
        devices: devices.iter().map(|d| (*d).to_owned()).collect(),
        action: action.to_owned(),
        params: serde_json::Map::new(),
        advisory: None,
        reason: None,
    }
}

fn alice() -> Principal {
    Principal::new("alice", "operator")
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

#[tokio::test]
async fn bad_requests_are_refused_audited_and_send_nothing() {
    let valves: Vec<String> = (0..11).map(|i| format!("valve-{i}")).collect();
    let valves: Vec<&str> = valves.iter().map(String::as_str).collect();
    let many: Vec<&str> = ["siren-1"; 21].to_vec();
    let with_advisory = |mut r: CommandRequest, a: &str| {
        r.advisory = Some(a.to_owned());
        r
    };
    let cases: Vec<(&str, Principal, CommandRequest, &str, &str)> = vec![
        (
            "unknown device",
            alice(),
            req(&["siren-9"], "test"),
            "unknown_device",
            "unknown device siren-9",
        ),
        (
            "bad device id",
            alice(),
            req(&["../x"], "test"),
            "invalid",
            "device \"../x\": device id must start with a letter or digit",
        ),
        (
            "no devices",
            alice(),
            req(&[], "test"),
            "invalid",
            "a command must name at least one device",
        ),
        (
            "twice",
            alice(),
            req(&["light-1", "light-1"], "on"),
            "invalid",
            "device light-1 is named twice",
        ),
        (
            "bad action",
            alice(),
            req(&["light-1"], "On!"),
            "invalid",
            "action must be 1 to 64 characters of a-z, 0-9 and _",
        ),
        (
            "burst over the request limit",
            alice(),
            req(&many, "test"),
            "too_many_devices",
            "21 devices in one request; the limit is 20",
        ),
        (
            "burst over the rule limit",
            alice(),
            req(&valves, "close"),
            "too_many_devices",
            "11 devices in one request; the limit is 10",
        ),
        (
            "viewer",
            Principal::new("vic", "viewer"),
            req(&["light-1"], "on"),
            "not_allowed",
            "role viewer may not send on to street_light",
        ),
        (
            "sensor",
            alice(),
            req(&["level-1"], "on"),
            "invalid",
            "level-1 is a level_sensor, which takes no commands",
        ),
        (
            "quarantined",
            alice(),
            req(&["pump-q"], "stop"),
            "not_allowed",
            "pump-q is revoked (quarantined); nothing is sent to it",
        ),
        (
            "siren without warning",
            alice(),
            req(&["siren-1"], "sound"),
            "no_warning",
            "a siren activation must reference an authorised public warning (advisory)",
        ),
        (
            "siren, unknown warning",
            alice(),
            with_advisory(req(&["siren-1"], "sound"), "adv-x"),
            "warning_not_authorised",
            "advisory \"adv-x\" is not an authorised public warning",
        ),
        (
            "platform activation",
            Principal::system("citysec"),
            req(&["light-1"], "on"),
            "not_allowed",
            "the platform itself may only send cancels and all-clears",
        ),
        (
            "outside hours",
            alice(),
            req(&["hvac-1"], "set_mode"),
            "not_allowed",
            "set_mode to hvac is allowed only from 22:00 to 6:00 UTC (now 14:xx)",
        ),
        (
            "viewer cancel",
            Principal::new("vic", "viewer"),
            req(&["siren-1"], "silence"),
            "not_allowed",
            "role viewer may not send cancels",
        ),
    ];
    for (name, who, request, kind, reason) in cases {
        let w = world();
        let g = gateway(&w);
        let err = g.submit(&who, request, at(0)).await.unwrap_err();
        let GatewayError::Refused {
            id,
            reason: refusal,
        } = &err
        else {
            panic!("{name}: {err:?}")
        };
        assert_eq!(
            (refusal.kind(), refusal.to_string().as_str()),
            (kind, reason),
            "{name}"
        );
        assert!(w.sent.lock().is_empty(), "{name}: something was delivered");
        assert!(
            w.events.lock().is_empty(),
            "{name}: something was announced"
        );
        let audit = w.audit.lock();
        assert_eq!(audit.len(), 1, "{name}");
        assert_eq!(
            (
                audit[0].action.as_str(),
                audit[0].outcome.as_str(),
                audit[0].detail["refusal"].as_str()
            ),
            ("command.refused", "refused", Some(kind)),
            "{name}"
        );
        assert_eq!(audit[0].actor, who.name);
        let stored = w.commands.lock()[id].clone();
        assert_eq!(
            (stored.state, stored.refusal.as_deref()),
            (CommandState::Refused, Some(kind))
        );
    }
}

#[tokio::test]
async fn one_step_commands_are_signed_announced_and_verified_by_the_device() {
    let w = world();
    let g = gateway(&w);
    let mut request = req(&["light-1"], "dim");
    request.params.insert("dim_pct".into(), json!(40));
    let command = g.submit(&alice(), request, at(0)).await.unwrap();
    assert_eq!(command.state, CommandState::Delivered);
    assert!(!command.needs_approval);
    let sent = w.sent.lock().clone();
    assert_eq!(sent.len(), 1);
    let (device, payload) = &sent[0];
    assert_eq!(device.as_str(), "light-1");

    // The device side: verifies once, refuses the replay.
    let mut device_side = verifier::Verifier::new(&g.public_key(), 0).unwrap();
    let now = u64::try_from(T0).unwrap();
    let checked = device_side.check("light-1", payload, now).unwrap();
    assert_eq!(checked.counter, command.deliveries[0].counter);
    assert_eq!(checked.expires_at_ms, now + 30_000);
    let body: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(
        (body["action"].as_str(), body["params"]["dim_pct"].as_i64()),
        (Some("dim"), Some(40))
    );
    assert_eq!(body["id"].as_str(), Some(command.id.as_str()));
    assert!(matches!(
        device_side.check("light-1", payload, now),
        Err(verifier::Refusal::Replayed { .. })
    ));
    // Stale: a fresh device that sees it after expiry.
    let mut late = verifier::Verifier::new(&g.public_key(), 0).unwrap();
    assert!(matches!(
        late.check("light-1", payload, now + 30_000),
        Err(verifier::Refusal::Expired { .. })
    ));
    assert_eq!(
        late.check("light-2", payload, now),
        Err(verifier::Refusal::WrongDevice)
    );

    // Audit before delivery, command event on the bus.
    let audit = w.audit.lock();
    assert_eq!(audit[0].action, "command.authorised");
    assert_eq!(
        audit[0].detail["deliveries"][0]["sha256"],
        json!(command.deliveries[0].sha256)
    );
    let events = w.events.lock();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].kind,
        model::EventKind::Command {
            action: "dim".into(),
            actor: "alice".into()
        }
    );
    // Counters grow per device and are above the clock floor.
    assert!(command.deliveries[0].counter >= u64::try_from(T0).unwrap() * 1000);
}

#[tokio::test]
async fn safety_critical_commands_need_a_second_different_person() {
    let w = world();
    let g = gateway(&w);
    let pending = g
        .submit(&alice(), req(&["valve-1", "valve-2"], "close"), at(0))
        .await
        .unwrap();
    assert_eq!(pending.state, CommandState::PendingApproval);
    assert!(w.sent.lock().is_empty());
    let sha = pending.compute_payload_sha256();
    assert_eq!(sha, pending.payload_sha256);

    let refusal = |r: Result<Command, GatewayError>| r.unwrap_err().refusal().unwrap().kind();
    assert_eq!(
        refusal(
            g.approve(&Principal::new("alice", "admin"), &pending.id, &sha, at(1))
                .await
        ),
        "same_person"
    );
    assert_eq!(
        refusal(
            g.approve(&Principal::new("bob", "operator"), &pending.id, &sha, at(2))
                .await
        ),
        "not_approver"
    );
    let tampered = pending
        .payload_sha256
        .replace(&pending.payload_sha256[..4], "ffff");
    assert_eq!(
        refusal(
            g.approve(
                &Principal::new("carol", "supervisor"),
                &pending.id,
                &tampered,
                at(3)
            )
            .await
        ),
        "payload_mismatch"
    );
    assert!(
        w.sent.lock().is_empty(),
        "refused approvals deliver nothing"
    );

    let done = g
        .approve(
            &Principal::new("carol", "supervisor"),
            &pending.id,
            &sha,
            at(4),
        )
        .await
        .unwrap();
    assert_eq!(done.state, CommandState::Delivered);
    assert_eq!(done.approvals[0].by, "carol");
    assert_eq!(w.sent.lock().len(), 2);
    // A replayed approval (the same person, or anyone) is refused; nothing more is sent.
    assert_eq!(
        refusal(
            g.approve(
                &Principal::new("carol", "supervisor"),
                &pending.id,
                &sha,
                at(5)
            )
            .await
        ),
        "not_pending"
    );
    assert_eq!(
        refusal(
            g.approve(&Principal::new("dave", "admin"), &pending.id, &sha, at(6))
                .await
        ),
        "not_pending"
    );
    assert_eq!(w.sent.lock().len(), 2);

    let actions: Vec<String> = w
        .audit
        .lock()
        .iter()
        .map(|n| format!("{} {}", n.action, n.actor))
        .collect();
    assert_eq!(
        actions,
        [
            "command.requested alice",
            "approval.refused alice",
            "approval.refused bob",
            "approval.refused carol",
            "command.approved carol",
            "command.authorised carol",
            "approval.refused carol",
            "approval.refused dave",
        ]
    );
    assert!(matches!(
        g.approve(&Principal::new("carol", "admin"), "cmd-nope", &sha, at(7))
            .await,
        Err(GatewayError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_payload_changed_after_the_request_cannot_be_approved() {
    let w = world();
    let g = gateway(&w);
    let pending = g
        .submit(&alice(), req(&["valve-1"], "close"), at(0))
        .await
        .unwrap();
    // Someone edits the stored command (and the gateway restarts, so the ledger is read).
    let mut edited = w.commands.lock()[&pending.id].clone();
    edited.action = "open".into();
    w.commands.lock().insert(pending.id.clone(), edited);
    let g = gateway(&w);
    let err = g
        .approve(
            &Principal::new("carol", "admin"),
            &pending.id,
            &pending.payload_sha256,
            at(1),
        )
        .await
        .unwrap_err();
    assert_eq!(err.refusal().unwrap().kind(), "payload_mismatch");
    assert!(w.sent.lock().is_empty());
}

#[tokio::test]
async fn approvals_expire() {
    let w = world();
    let g = gateway(&w);
    let a = g
        .submit(&alice(), req(&["valve-1"], "close"), at(0))
        .await
        .unwrap();
    let b = g
        .submit(&alice(), req(&["valve-2"], "close"), at(0))
        .await
        .unwrap();
    let ttl = 600_000;
    let err = g
        .approve(
            &Principal::new("carol", "admin"),
            &a.id,
            &a.payload_sha256,
            at(ttl),
        )
        .await
        .unwrap_err();
    assert_eq!(err.refusal().unwrap().kind(), "approval_expired");
    assert_eq!(g.get(&a.id).await.unwrap().state, CommandState::Expired);
    g.tick(at(ttl + 1)).await;
    assert_eq!(g.get(&b.id).await.unwrap().state, CommandState::Expired);
    let err = g
        .approve(
            &Principal::new("carol", "admin"),
            &b.id,
            &b.payload_sha256,
            at(ttl + 2),
        )
        .await
        .unwrap_err();
    assert_eq!(err.refusal().unwrap().kind(), "not_pending");
    assert!(w.sent.lock().is_empty());
}

#[tokio::test]
async fn acknowledgements_and_timeouts() {
    let w = world();
    w.offline.lock().insert(id("valve-3"));
    let g = gateway(&w);
    let ack = |cmd: &str, ok: bool, error: Option<&str>| {
        let mut r = vec![
            Reading {
                name: "ack.id".into(),
                value: RV::Text(cmd.into()),
                unit: None,
            },
            Reading {
                name: "ack.ok".into(),
                value: RV::Bool(ok),
                unit: None,
            },
        ];
        if let Some(e) = error {
            r.push(Reading {
                name: "ack.error".into(),
                value: RV::Text(e.into()),
                unit: None,
            });
        }
        r
    };
    let c = g
        .submit(&alice(), req(&["light-1"], "on"), at(0))
        .await
        .unwrap();
    g.on_ack(&id("light-1"), &ack(&c.id, true, None), at(50))
        .await;
    let c = g.get(&c.id).await.unwrap();
    assert_eq!(
        (c.state, c.deliveries[0].acked_at),
        (CommandState::Acked, Some(at(50)))
    );

    let c = g
        .submit(&alice(), req(&["light-1"], "on"), at(100))
        .await
        .unwrap();
    // An ack from another device does not count.
    g.on_ack(&id("hvac-1"), &ack(&c.id, true, None), at(120))
        .await;
    g.on_ack(
        &id("light-1"),
        &ack(&c.id, false, Some("replayed command")),
        at(150),
    )
    .await;
    let c = g.get(&c.id).await.unwrap();
    assert_eq!(c.state, CommandState::Refused);
    assert_eq!(
        c.outcome.as_deref(),
        Some("refused by device: light-1: replayed command")
    );

    let c = g
        .submit(&alice(), req(&["light-1"], "off"), at(200))
        .await
        .unwrap();
    g.tick(at(200 + 9_999)).await;
    assert_eq!(g.get(&c.id).await.unwrap().state, CommandState::Delivered);
    g.tick(at(200 + 10_000)).await;
    let c = g.get(&c.id).await.unwrap();
    assert_eq!(
        (c.state, c.deliveries[0].state.clone()),
        (CommandState::TimedOut, DeliveryState::TimedOut)
    );

    // Not connected: settled at once.
    let g2 = g
        .submit(&alice(), req(&["street-x"], "on"), at(300))
        .await
        .unwrap_err();
    assert_eq!(g2.refusal().unwrap().kind(), "unknown_device");
    let pending = g
        .submit(&alice(), req(&["valve-3"], "open"), at(300))
        .await
        .unwrap();
    let c = g
        .approve(
            &Principal::new("carol", "admin"),
            &pending.id,
            &pending.payload_sha256,
            at(301),
        )
        .await
        .unwrap();
    assert_eq!(c.state, CommandState::TimedOut);
    assert_eq!(c.deliveries[0].state, DeliveryState::NotConnected);

    // A late refusal (a replay of a settled command) is audited.
    let first = g
        .submit(&alice(), req(&["light-1"], "on"), at(400))
        .await
        .unwrap();
    g.on_ack(&id("light-1"), &ack(&first.id, true, None), at(401))
        .await;
    g.on_ack(
        &id("light-1"),
        &ack(
            &first.id,
            false,
            Some("replayed command: counter 5 is not above the last accepted 5"),
        ),
        at(402),
    )
    .await;
    let last = w.audit.lock().last().cloned().unwrap();
    assert_eq!(
        (last.action.as_str(), last.subject.as_deref()),
        ("device.refused_command", Some(first.id.as_str()))
    );
    assert_eq!(g.stats.acked.load(Ordering::Relaxed), 2);
    assert_eq!(g.stats.device_refused.load(Ordering::Relaxed), 1);
    assert_eq!(g.stats.timed_out.load(Ordering::Relaxed), 2);

    // An acknowledgement after the timeout (it waited on a full bus) is still recorded: the
    // command becomes acked and the lateness is audited; a second copy changes nothing.
    let slow = g
        .submit(&alice(), req(&["light-1"], "off"), at(500))
        .await
        .unwrap();
    g.tick(at(500 + 10_000)).await;
    assert_eq!(g.get(&slow.id).await.unwrap().state, CommandState::TimedOut);
    g.on_ack(&id("light-1"), &ack(&slow.id, true, None), at(20_000))
        .await;
    let late = g.get(&slow.id).await.unwrap();
    assert_eq!(late.state, CommandState::Acked, "{late:?}");
    let last = w.audit.lock().last().cloned().unwrap();
    assert_eq!(
        (last.action.as_str(), last.subject.as_deref()),
        ("command.acked_late", Some(slow.id.as_str()))
    );
    assert_eq!(last.detail["late_by_ms"], 19_500);
    let entries = w.audit.lock().len();
    g.on_ack(&id("light-1"), &ack(&slow.id, true, None), at(20_001))
        .await;
    assert_eq!(w.audit.lock().len(), entries);
}

#[tokio::test]
async fn with_the_store_down_activations_are_refused_and_cancels_go_out() {
    let w = world();
    let g = gateway(&w);
    // One command while the store is up, so the gateway knows siren-1's counter.
    let first = g
        .submit(&alice(), req(&["siren-1"], "silence"), at(0))
        .await
        .unwrap();
    w.store_down.store(true, Ordering::Relaxed);
    let err = g
        .submit(&alice(), req(&["light-1"], "on"), at(10))
        .await
        .unwrap_err();
    assert_eq!(err.refusal().unwrap().kind(), "unavailable");
    assert!(err.to_string().contains("database is locked"), "{err}");
    let mut sound = req(&["siren-2"], "sound");
    sound.advisory = Some("adv-flood-1".into());
    assert_eq!(
        g.submit(&alice(), sound, at(11))
            .await
            .unwrap_err()
            .refusal()
            .unwrap()
            .kind(),
        "unavailable"
    );
    assert_eq!(w.sent.lock().len(), 1);

    let cancel = g
        .submit(&alice(), req(&["siren-1", "siren-2"], "cancel"), at(20))
        .await
        .unwrap();
    assert_eq!(cancel.state, CommandState::Delivered);
    assert_eq!(w.sent.lock().len(), 3);
    assert!(cancel.deliveries[0].counter > first.deliveries[0].counter);
    let mut device_side =
        verifier::Verifier::new(&g.public_key(), first.deliveries[0].counter).unwrap();
    let payload = w.sent.lock()[1].1.clone();
    device_side
        .check("siren-1", &payload, u64::try_from(T0).unwrap() + 20)
        .unwrap();
    assert!(g.stats.audit_backlog.load(Ordering::Relaxed) >= 3);

    // Back up: the backlog lands in order, before anything newer.
    w.store_down.store(false, Ordering::Relaxed);
    g.tick(at(30)).await;
    assert_eq!(g.stats.audit_backlog.load(Ordering::Relaxed), 0);
    let actions: Vec<String> = w.audit.lock().iter().map(|n| n.action.clone()).collect();
    assert_eq!(
        actions,
        [
            "command.authorised",
            "command.refused",
            "command.refused",
            "command.authorised"
        ]
    );
}

fn alert(device: &str, count: u32, ts: i64) -> Alert {
    Alert {
        id: AlertId("al-1".into()),
        rule: "actuation.uncommanded".into(),
        key: device.into(),
        severity: Severity::Critical,
        ts: at(ts),
        last_ts: at(ts),
        count,
        device_id: Some(id(device)),
        zone: None,
        source: None,
        title: "uncommanded siren actuation".into(),
        explanation: String::new(),
        evidence: Vec::new(),
    }
}

/// Two processes' gateways over one command ledger: an emission one answered (its process
/// then died before acknowledging the alert, so the other gets it again) is not answered a
/// second time; the next emission is.
#[tokio::test]
async fn an_alert_answered_by_one_gateway_is_not_answered_again_by_another() {
    let w = world();
    let first = gateway_of(&w, config(), "process-a");
    let second = gateway_of(&w, config(), "process-b");
    let answered = first
        .on_alert(&alert("siren-1", 1, 0), at(5))
        .await
        .unwrap()
        .unwrap();
    assert!(answered.id.contains("-auto-"), "{}", answered.id);
    assert!(
        second
            .on_alert(&alert("siren-1", 1, 0), at(20))
            .await
            .is_none()
    );
    assert_eq!(w.sent.lock().len(), 1, "one all-clear for one emission");
    let mut repeat = alert("siren-1", 2, 0);
    repeat.last_ts = at(30);
    let again = second.on_alert(&repeat, at(30)).await.unwrap().unwrap();
    assert_ne!(again.id, answered.id);
    assert_eq!(w.sent.lock().len(), 2);
    let authorised = w
        .audit
        .lock()
        .iter()
        .filter(|n| n.action == "command.authorised")
        .count();
    assert_eq!(authorised, 2);
}

#[tokio::test]
async fn uncommanded_sirens_get_an_automatic_all_clear() {
    let w = world();
    let g = gateway(&w);
    let c = g
        .on_alert(&alert("siren-1", 1, 0), at(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.action.as_str(), c.requested_by.as_str(), c.state),
        ("silence", "citysec", CommandState::Delivered)
    );
    assert_eq!(w.sent.lock().len(), 1);
    // The same emission twice: answered once. A repeat (a new actuation) is answered.
    assert!(g.on_alert(&alert("siren-1", 1, 0), at(6)).await.is_none());
    let mut repeat = alert("siren-1", 2, 0);
    repeat.last_ts = at(8);
    assert!(g.on_alert(&repeat, at(8)).await.unwrap().is_ok());
    assert_eq!(w.sent.lock().len(), 2);
    // Other classes and other rules: nothing.
    assert!(g.on_alert(&alert("light-1", 1, 10), at(10)).await.is_none());
    let mut other = alert("siren-1", 1, 10);
    other.rule = "auth.brute_force.device".into();
    assert!(g.on_alert(&other, at(10)).await.is_none());

    // A siren the gateway sounded under a warning is explained: no all-clear.
    let mut sound = req(&["siren-2"], "sound");
    sound.advisory = Some("adv-flood-1".into());
    let pending = g.submit(&alice(), sound, at(20)).await.unwrap();
    g.approve(
        &Principal::new("carol", "supervisor"),
        &pending.id,
        &pending.payload_sha256,
        at(30),
    )
    .await
    .unwrap();
    assert!(g.on_alert(&alert("siren-2", 1, 40), at(40)).await.is_none());
    assert!(
        g.on_alert(&alert("siren-2", 1, 200_000), at(200_000))
            .await
            .is_some()
    );
    assert_eq!(g.stats.auto_all_clears.load(Ordering::Relaxed), 3);
    // The playbook's all-clear can tell that one just went out.
    let last = w.sent.lock().len();
    assert!(
        g.recent_cancel(&id("siren-2"), at(205_000), 5_000)
            .is_some()
    );
    assert!(
        g.recent_cancel(&id("siren-2"), at(205_001), 5_000)
            .is_none()
    );
    assert!(
        g.recent_cancel(&id("light-1"), at(200_000), 5_000)
            .is_none()
    );
    assert_eq!(w.sent.lock().len(), last);

    let off = GatewayConfig {
        auto_all_clear: false,
        ..config()
    };
    assert!(
        gateway_with(&w, off)
            .on_alert(&alert("siren-1", 1, 0), at(5))
            .await
            .is_none()
    );
}

#[test]
fn gateway_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let w = world();
    let g = gateway(&w);
    send(&g.submit(&alice(), req(&["light-1"], "on"), at(0)));
    send(&g.approve(&alice(), "x", "y", at(0)));
    send(&g.on_ack(&id("light-1"), &[], at(0)));
    send(&g.tick(at(0)));
    send(&g.on_alert(&alert("siren-1", 1, 0), at(0)));
}

#[test]
fn config_validation() {
    assert_eq!(GatewayConfig::default().validate(), Ok(()));
    let bad = [
        (
            GatewayConfig {
                command_ttl_s: 0,
                ..GatewayConfig::default()
            },
            "must be above 0",
        ),
        (
            GatewayConfig {
                all_clear_action: "sound".into(),
                ..GatewayConfig::default()
            },
            "must be one of siren_cancels",
        ),
        (
            GatewayConfig {
                siren_cancels: vec!["silence".into(), "sound".into()],
                ..GatewayConfig::default()
            },
            "both a siren activation and a cancel",
        ),
    ];
    for (config, message) in bad {
        let err = config.validate().unwrap_err();
        assert!(err.contains(message), "{err}");
    }
}

#[tokio::test]
async fn a_full_audit_backlog_drops_the_oldest_and_logs_the_gap() {
    let w = world();
    let g = gateway_with(
        &w,
        GatewayConfig {
            max_audit_backlog: 3,
            ..config()
        },
    );
    w.store_down.store(true, Ordering::Relaxed);
    for i in 0..5 {
        let err = g
            .submit(&alice(), req(&["light-1"], "on"), at(10 + i))
            .await
            .unwrap_err();
        assert_eq!(err.refusal().unwrap().kind(), "unavailable");
    }
    assert_eq!(g.stats.audit_backlog.load(Ordering::Relaxed), 3);
    assert_eq!(g.stats.audit_lost.load(Ordering::Relaxed), 2);
    // The cancel still goes out; its entry is kept, the oldest refusal dropped.
    g.submit(&alice(), req(&["siren-1"], "cancel"), at(20))
        .await
        .unwrap();
    assert_eq!(g.stats.audit_lost.load(Ordering::Relaxed), 3);
    w.store_down.store(false, Ordering::Relaxed);
    g.tick(at(30)).await;
    let audit = w.audit.lock();
    let actions: Vec<&str> = audit.iter().map(|n| n.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "audit.gap",
            "command.refused",
            "command.refused",
            "command.authorised"
        ]
    );
    assert_eq!(audit[0].detail["lost"], 3);
    assert_eq!(audit[0].detail["from"], serde_json::json!(at(10)));
    assert_eq!(g.stats.audit_backlog.load(Ordering::Relaxed), 0);
}
