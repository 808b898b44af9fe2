//! The attack catalogue as data: each scenario is a TOML file in `crates/sim/scenarios/`
//! (compiled into the binary, see [`CATALOGUE`]) naming its onset, its steps and the rule
//! ids that must detect it. [`Scenario::plan`] turns a scenario, a population and a seed
//! into concrete timed [`Action`]s (pure and deterministic: the same seed gives the same
//! traffic); [`execute`] plays a plan against a running platform over the real protocols
//! (MQTT to the broker, flow records over UDP, indicators over the API); [`score`] judges
//! the alerts the platform raised.
//!
//! The file format (every field is checked; unknown fields are errors):
//!
//! ```toml
//! name = "mirai-camera"              # [a-z0-9-], the file's stem
//! title = "Mirai-style camera takeover"
//! description = "..."
//! onset_s = 2                        # benign traffic first; the attack starts here
//! expect = ["flow.brute_force"]      # detected when the first of these fires
//! also = ["policy.conduit"]          # may fire too without being a false alert
//! settle_s = 15                      # how long to wait for alerts after the last step
//! [target]                           # the devices the attack is about
//! class = "camera"
//! count = 1                          # or "all"
//! [[steps]]
//! at_s = 0                           # after onset
//! do = "flows"                       # see `StepKind` for every kind and its fields
//! ...
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use model::topic::Channel;
use model::{DeviceClass, DeviceId, FlowRecord, Timestamp};
use serde::{Deserialize, Serialize};

use crate::background::draw;
use crate::population::Population;
use crate::runner::{Inject, SimHandle};
use crate::zones::hosts;

/// Every scenario file of the catalogue, by name.
pub const CATALOGUE: &[(&str, &str)] = &[
    (
        "siren-replay",
        include_str!("../scenarios/siren-replay.toml"),
    ),
    (
        "mirai-camera",
        include_str!("../scenarios/mirai-camera.toml"),
    ),
    (
        "mqtt-brute-force",
        include_str!("../scenarios/mqtt-brute-force.toml"),
    ),
    (
        "mqtt-password-spray",
        include_str!("../scenarios/mqtt-password-spray.toml"),
    ),
    (
        "client-id-takeover",
        include_str!("../scenarios/client-id-takeover.toml"),
    ),
    (
        "certificate-mismatch",
        include_str!("../scenarios/certificate-mismatch.toml"),
    ),
    (
        "meter-false-data",
        include_str!("../scenarios/meter-false-data.toml"),
    ),
    (
        "water-level-false-data",
        include_str!("../scenarios/water-level-false-data.toml"),
    ),
    (
        "firmware-tamper",
        include_str!("../scenarios/firmware-tamper.toml"),
    ),
    ("hvac-pivot", include_str!("../scenarios/hvac-pivot.toml")),
    (
        "breaker-burst",
        include_str!("../scenarios/breaker-burst.toml"),
    ),
    (
        "camera-exfiltration",
        include_str!("../scenarios/camera-exfiltration.toml"),
    ),
    (
        "mqtt-topic-abuse",
        include_str!("../scenarios/mqtt-topic-abuse.toml"),
    ),
    (
        "partner-indicator",
        include_str!("../scenarios/partner-indicator.toml"),
    ),
];

/// Classes the benign life of an exercise uses (maintenance, outages, firmware updates);
/// scenarios do not target them, so honest events and attacks never share a device.
pub const BENIGN_LIFE_CLASSES: [DeviceClass; 3] = [
    DeviceClass::Pump,
    DeviceClass::Weather,
    DeviceClass::AirQuality,
];

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub title: String,
    pub description: String,
    /// Seconds of benign traffic before the attack starts.
    #[serde(default)]
    pub onset_s: f64,
    /// The rules that detect it.
    pub expect: Vec<String>,
    /// Rules that may also fire on it.
    #[serde(default)]
    pub also: Vec<String>,
    #[serde(default = "default_settle")]
    pub settle_s: f64,
    #[serde(default)]
    pub target: Option<Target>,
    pub steps: Vec<Step>,
}

fn default_settle() -> f64 {
    15.0
}

/// Which devices of the population a scenario is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub class: DeviceClass,
    #[serde(default)]
    pub count: Count,
}

/// How many target devices: a number, or `"all"` of the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Count {
    N(usize),
    #[serde(with = "all")]
    All,
}

impl Default for Count {
    fn default() -> Count {
        Count::N(1)
    }
}

mod all {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("all")
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let text = String::deserialize(d)?;
        if text == "all" {
            Ok(())
        } else {
            Err(serde::de::Error::custom(format!(
                "count must be a number or \"all\", got {text:?}"
            )))
        }
    }
}

/// One step of a scenario, at `at_s` seconds after onset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub at_s: f64,
    #[serde(flatten)]
    pub kind: StepKind,
}

impl<'de> Deserialize<'de> for Step {
    /// `at_s` beside the `do` table of a [`StepKind`], whose unknown fields are errors
    /// (serde's `flatten` would silently accept them).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let at_s = match table.remove("at_s") {
            None => 0.0,
            Some(toml::Value::Float(f)) => f,
            Some(toml::Value::Integer(i)) => i as f64,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "at_s must be a number of seconds, got {other}"
                )));
            }
        };
        let kind = StepKind::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(Step { at_s, kind })
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepKind {
    /// Connect attempts as the first target with wrong passwords, from one attacker
    /// address.
    MqttBruteForce { attempts: u32, over_s: f64 },
    /// One password tried against `registered` ids of the population and `unknown` made-up
    /// ids, from one attacker address.
    MqttSpray {
        registered: usize,
        unknown: usize,
        over_s: f64,
    },
    /// Every target publishes on one of its own channels through its own connection,
    /// `repeat` times `every_s` apart. `payload` may use the placeholders of [`render`].
    Publish {
        channel: PublishChannel,
        payload: String,
        #[serde(default = "one")]
        repeat: u32,
        #[serde(default)]
        every_s: f64,
        #[serde(default)]
        retain: bool,
    },
    /// The first target publishes on any topic: `{prefix}` is its own
    /// `city/<sector>/<id>`, `{other}` another device's prefix.
    PublishTopic {
        topic: String,
        payload: String,
        #[serde(default)]
        retain: bool,
    },
    /// The first target subscribes to each filter (`{other}` as above).
    Subscribe { filters: Vec<String> },
    /// Someone holding the first target's credentials connects as it from another address
    /// and stays `hold_s`.
    Takeover { hold_s: f64 },
    /// Flow records, `records` of them spread over `over_s`. Endpoints: `target`,
    /// `attacker` (an outside address), `scan` (a new outside address per record),
    /// `victim` (an outside flood target), `indicator` (the address of the scenario's
    /// indicator), a named host (`it-file-server`, `it-domain-controller`, `vms`,
    /// `update-server`, `broker`) or an IP address.
    Flows {
        src: String,
        dst: String,
        #[serde(default)]
        protocol: FlowProtocol,
        dst_port: u16,
        /// Every record's destination port is `dst_port + i % dst_port_spread`.
        #[serde(default = "one")]
        dst_port_spread: u32,
        records: u32,
        over_s: f64,
        packets: u64,
        bytes: u64,
    },
    /// Loads a STIX indicator for the scenario's indicator address into the platform, as a
    /// partner would share it.
    Indicator { name: String },
    /// One MQTT connect over the broker's mTLS listener from the attacker's address,
    /// presenting target number `identity` (1-based) as username and client id, with a
    /// client certificate the city CA issued for target number `certificate_of`: the one
    /// the registry holds for it (`certificate = "registered"`), or one it held before the
    /// device was re-provisioned (`"superseded"`, e.g. recovered from a unit sent for repair).
    TlsConnect {
        identity: usize,
        certificate_of: usize,
        #[serde(default)]
        certificate: CertKind,
    },
}

/// Which of a device's certificates a `tls_connect` step presents.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// The certificate whose fingerprint the registry holds for the device.
    #[default]
    Registered,
    /// A certificate the city CA issued for the device earlier, no longer registered.
    Superseded,
}

fn one() -> u32 {
    1
}

/// The device channel a `publish` step writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishChannel {
    Telemetry,
    State,
    Ack,
    Cmd,
}

impl PublishChannel {
    pub fn channel(self) -> Channel {
        match self {
            PublishChannel::Telemetry => Channel::Telemetry,
            PublishChannel::State => Channel::State,
            PublishChannel::Ack => Channel::Ack,
            PublishChannel::Cmd => Channel::Cmd,
        }
    }
}

/// The transport of a flow step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowProtocol {
    #[default]
    Tcp,
    Udp,
    Icmp,
}

impl FlowProtocol {
    fn number(self) -> u8 {
        match self {
            FlowProtocol::Tcp => model::proto::TCP,
            FlowProtocol::Udp => model::proto::UDP,
            FlowProtocol::Icmp => model::proto::ICMP,
        }
    }
}

/// One concrete thing to do, `at_ms` after onset.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAction {
    pub at_ms: i64,
    pub action: Action,
}

/// The concrete actions of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// One MQTT connect with a wrong password, from loopback source `127.0.77.<source>`.
    Login {
        id: String,
        password: String,
        source: u8,
    },
    /// A publish through a device's own connection; the payload template is rendered
    /// when it is sent.
    Publish {
        device: DeviceId,
        topic: Option<String>,
        channel: Channel,
        payload: String,
        n: u32,
        retain: bool,
    },
    Subscribe {
        device: DeviceId,
        filter: String,
    },
    /// A connect as `device` with its real secret from `127.0.77.<source>`, held.
    Takeover {
        device: DeviceId,
        hold_ms: i64,
        source: u8,
    },
    /// Flow records with times relative to onset.
    Flows(Vec<FlowRecord>),
    /// A STIX bundle with one indicator.
    Indicator(serde_json::Value),
    /// One mTLS connect as `identity` from `127.0.77.<source>` with the `kind` certificate
    /// of `certificate_of`.
    TlsConnect {
        identity: DeviceId,
        certificate_of: DeviceId,
        kind: CertKind,
        source: u8,
    },
}

/// A scenario resolved against a population and a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub onset_ms: i64,
    pub settle_ms: i64,
    /// When the last action happens, after onset.
    pub last_ms: i64,
    pub expect: Vec<String>,
    pub also: Vec<String>,
    /// The devices (ids) the attack involves; alerts naming other devices are not its own.
    pub involved: BTreeSet<String>,
    /// The outside addresses it uses.
    pub addresses: BTreeSet<IpAddr>,
    pub actions: Vec<PlannedAction>,
}

impl Plan {
    /// The client certificates the plan presents, by device id and kind. Whoever runs it
    /// must have the city CA issue them and register each device's `Registered` one (and,
    /// for a device whose `Superseded` one is presented, a current one in its place).
    pub fn certificates(&self) -> BTreeSet<(String, CertKind)> {
        let mut out = BTreeSet::new();
        for planned in &self.actions {
            if let Action::TlsConnect {
                certificate_of,
                kind,
                ..
            } = &planned.action
            {
                out.insert((certificate_of.to_string(), CertKind::Registered));
                out.insert((certificate_of.to_string(), *kind));
            }
        }
        out
    }
}

/// Parses the scenario named `name` of the catalogue.
pub fn load(name: &str) -> Result<Scenario> {
    let (_, text) = CATALOGUE
        .iter()
        .find(|(n, _)| *n == name)
        .with_context(|| {
            format!(
                "unknown scenario {name:?} (known: {})",
                CATALOGUE
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    Scenario::parse(text).with_context(|| format!("scenario {name}"))
}

/// Every scenario of the catalogue, in catalogue order.
pub fn catalogue() -> Result<Vec<Scenario>> {
    CATALOGUE.iter().map(|(name, _)| load(name)).collect()
}

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn parse(text: &str) -> Result<Scenario> {
        let scenario: Scenario = toml::from_str(text).context("invalid scenario file")?;
        scenario.validate()?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<()> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bail!(
                "name {:?} must be lowercase letters, digits and '-'",
                self.name
            );
        }
        if self.expect.is_empty() {
            bail!("expect must name at least one rule");
        }
        if self.steps.is_empty() {
            bail!("a scenario needs at least one step");
        }
        let finite = |x: f64, what: &str| {
            if x.is_finite() && (0.0..=3600.0).contains(&x) {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{what} must be between 0 and 3600 s, got {x}"
                ))
            }
        };
        finite(self.onset_s, "onset_s")?;
        finite(self.settle_s, "settle_s")?;
        for (i, step) in self.steps.iter().enumerate() {
            finite(step.at_s, "at_s").with_context(|| format!("step {}", i + 1))?;
            let needs_target = !matches!(
                step.kind,
                StepKind::MqttSpray { .. } | StepKind::Indicator { .. }
            );
            if needs_target && self.target.is_none() {
                bail!("step {} needs a [target]", i + 1);
            }
            match &step.kind {
                StepKind::Flows {
                    records, over_s, ..
                } => {
                    if *records == 0 || *records > 100_000 {
                        bail!("step {}: records must be 1..=100000", i + 1);
                    }
                    finite(*over_s, "over_s")?;
                }
                StepKind::MqttBruteForce { attempts, over_s } => {
                    if *attempts == 0 || *attempts > 10_000 {
                        bail!("step {}: attempts must be 1..=10000", i + 1);
                    }
                    finite(*over_s, "over_s")?;
                }
                StepKind::MqttSpray { over_s, .. } => finite(*over_s, "over_s")?,
                StepKind::Publish {
                    repeat, every_s, ..
                } => {
                    if *repeat == 0 || *repeat > 10_000 {
                        bail!("step {}: repeat must be 1..=10000", i + 1);
                    }
                    finite(*every_s, "every_s")?;
                }
                StepKind::Takeover { hold_s } => finite(*hold_s, "hold_s")?,
                StepKind::TlsConnect {
                    identity,
                    certificate_of,
                    certificate,
                } => {
                    // With `count = "all"` the upper bound is checked when planning.
                    let count = match self.target.as_ref().map(|t| t.count) {
                        Some(Count::N(n)) => Some(n.max(1)),
                        _ => None,
                    };
                    for (what, n) in [("identity", identity), ("certificate_of", certificate_of)] {
                        if *n == 0 || count.is_some_and(|c| *n > c) {
                            bail!(
                                "step {}: {what} must name a target (1 to {}), got {n}",
                                i + 1,
                                count.map_or("the target count".to_owned(), |c| c.to_string())
                            );
                        }
                    }
                    if identity == certificate_of && *certificate == CertKind::Registered {
                        bail!(
                            "step {}: a device's own registered certificate is a genuine login, \
                             not an attack the broker can see",
                            i + 1
                        );
                    }
                }
                StepKind::PublishTopic { .. }
                | StepKind::Subscribe { .. }
                | StepKind::Indicator { .. } => {}
            }
        }
        if let Some(target) = &self.target
            && BENIGN_LIFE_CLASSES.contains(&target.class)
        {
            bail!(
                "class {} is reserved for the benign background of exercises",
                target.class
            );
        }
        Ok(())
    }

    /// Resolves the scenario against `population` for `seed`. `index` (the scenario's place
    /// in the run) keeps attacker addresses of different scenarios apart.
    pub fn plan(&self, population: &Population, seed: u64, index: usize) -> Result<Plan> {
        let salt = name_hash(&self.name);
        let targets: Vec<&crate::population::SimDevice> = match &self.target {
            None => Vec::new(),
            Some(target) => {
                let all: Vec<_> = population.of_class(target.class).collect();
                let n = match target.count {
                    Count::All => all.len(),
                    Count::N(n) => n,
                };
                if all.len() < n.max(1) {
                    bail!(
                        "scenario {} needs {} {} device(s), the population has {}",
                        self.name,
                        n.max(1),
                        target.class,
                        all.len()
                    );
                }
                let mut order: Vec<usize> = (0..all.len()).collect();
                order.sort_by(|&a, &b| {
                    draw(seed, a as u64, salt, 1).total_cmp(&draw(seed, b as u64, salt, 1))
                });
                order.into_iter().take(n).map(|i| all[i]).collect()
            }
        };
        let first = targets.first().copied();
        let pick_u8 = |k: u64, lo: u8, span: u8| -> u8 {
            lo + (draw(seed, salt, k, 7) * f64::from(span)) as u8
        };
        let source = (10 + (index % 200)) as u8;
        let attacker = IpAddr::V4(Ipv4Addr::new(203, 0, 113, pick_u8(1, 1, 120)));
        let victim = IpAddr::V4(Ipv4Addr::new(192, 0, 2, pick_u8(2, 1, 250)));
        let indicator = IpAddr::V4(Ipv4Addr::new(203, 0, 113, pick_u8(3, 130, 120)));
        let mut plan = Plan {
            name: self.name.clone(),
            onset_ms: secs_ms(self.onset_s),
            settle_ms: secs_ms(self.settle_s),
            last_ms: 0,
            expect: self.expect.clone(),
            also: self.also.clone(),
            involved: targets.iter().map(|d| d.id.to_string()).collect(),
            addresses: BTreeSet::new(),
            actions: Vec::new(),
        };
        let other = population
            .devices
            .iter()
            .find(|d| first.is_none_or(|f| f.id != d.id))
            .map(|d| model::topic::device_prefix(d.sector, &d.id))
            .unwrap_or_default();
        for (step_no, step) in self.steps.iter().enumerate() {
            let at = secs_ms(step.at_s);
            let k = step_no as u64 + 1;
            match &step.kind {
                StepKind::MqttBruteForce { attempts, over_s } => {
                    let target = first.context("brute force needs a target")?;
                    let gap = secs_ms(*over_s) / i64::from(*attempts);
                    for i in 0..*attempts {
                        plan.actions.push(PlannedAction {
                            at_ms: at + gap * i64::from(i),
                            action: Action::Login {
                                id: target.id.to_string(),
                                password: guess(seed, salt, u64::from(i)),
                                source,
                            },
                        });
                    }
                }
                StepKind::MqttSpray {
                    registered,
                    unknown,
                    over_s,
                } => {
                    let mut ids: Vec<String> = Vec::new();
                    let mut order: Vec<usize> = (0..population.len()).collect();
                    order.sort_by(|&a, &b| {
                        draw(seed, a as u64, salt, k).total_cmp(&draw(seed, b as u64, salt, k))
                    });
                    ids.extend(
                        order
                            .iter()
                            .take(*registered)
                            .map(|&i| population.devices[i].id.to_string()),
                    );
                    for u in 0..*unknown {
                        ids.push(format!(
                            "cam-{:04}",
                            (draw(seed, salt, u as u64, 9) * 9000.0) as u32 + 1000
                        ));
                    }
                    plan.involved.extend(ids.iter().cloned());
                    let password = guess(seed, salt, 0);
                    let gap = secs_ms(*over_s) / ids.len().max(1) as i64;
                    for (i, id) in ids.into_iter().enumerate() {
                        plan.actions.push(PlannedAction {
                            at_ms: at + gap * i as i64,
                            action: Action::Login {
                                id,
                                password: password.clone(),
                                source,
                            },
                        });
                    }
                }
                StepKind::Publish {
                    channel,
                    payload,
                    repeat,
                    every_s,
                    retain,
                } => {
                    for n in 0..*repeat {
                        for (t, device) in targets.iter().enumerate() {
                            plan.actions.push(PlannedAction {
                                // Targets a few ms apart, repeats `every_s` apart.
                                at_ms: at + secs_ms(*every_s) * i64::from(n) + 20 * t as i64,
                                action: Action::Publish {
                                    device: device.id.clone(),
                                    topic: None,
                                    channel: channel.channel(),
                                    payload: payload.clone(),
                                    n,
                                    retain: *retain,
                                },
                            });
                        }
                    }
                }
                StepKind::PublishTopic {
                    topic,
                    payload,
                    retain,
                } => {
                    let target = first.context("publish_topic needs a target")?;
                    let prefix = model::topic::device_prefix(target.sector, &target.id);
                    plan.actions.push(PlannedAction {
                        at_ms: at,
                        action: Action::Publish {
                            device: target.id.clone(),
                            topic: Some(
                                topic
                                    .replace("{prefix}", &prefix)
                                    .replace("{other}", &other),
                            ),
                            channel: Channel::Telemetry,
                            payload: payload.clone(),
                            n: 0,
                            retain: *retain,
                        },
                    });
                }
                StepKind::Subscribe { filters } => {
                    let target = first.context("subscribe needs a target")?;
                    for (i, filter) in filters.iter().enumerate() {
                        plan.actions.push(PlannedAction {
                            at_ms: at + 200 * i as i64,
                            action: Action::Subscribe {
                                device: target.id.clone(),
                                filter: filter.replace("{other}", &other),
                            },
                        });
                    }
                }
                StepKind::Takeover { hold_s } => {
                    let target = first.context("takeover needs a target")?;
                    plan.actions.push(PlannedAction {
                        at_ms: at,
                        action: Action::Takeover {
                            device: target.id.clone(),
                            hold_ms: secs_ms(*hold_s),
                            source,
                        },
                    });
                }
                StepKind::Flows {
                    src,
                    dst,
                    protocol,
                    dst_port,
                    dst_port_spread,
                    records,
                    over_s,
                    packets,
                    bytes,
                } => {
                    let over = secs_ms(*over_s);
                    let gap = over / i64::from(*records);
                    let resolve = |spec: &str, i: u32| -> Result<IpAddr> {
                        Ok(match spec {
                            "target" => first
                                .and_then(|d| d.addresses.first().copied())
                                .context("the target has no address")?,
                            "attacker" => attacker,
                            "victim" => victim,
                            "indicator" => indicator,
                            "scan" => {
                                let n = (draw(seed, salt, k, 11) * 60_000.0) as u32 + i * 7;
                                IpAddr::V4(Ipv4Addr::new(
                                    198,
                                    18 + ((n >> 16) & 1) as u8,
                                    (n >> 8) as u8,
                                    (n & 0xff) as u8,
                                ))
                            }
                            "it-file-server" => hosts::IT_FILE_SERVER,
                            "it-domain-controller" => hosts::IT_DOMAIN_CONTROLLER,
                            "vms" => hosts::VMS,
                            "update-server" => hosts::UPDATE_SERVER,
                            "broker" => hosts::BROKER,
                            other => other
                                .parse()
                                .with_context(|| format!("unknown flow endpoint {other:?}"))?,
                        })
                    };
                    // One action per second of records, so they are exported as they happen.
                    let mut batch: Vec<FlowRecord> = Vec::new();
                    let mut batch_at = at;
                    for i in 0..*records {
                        let start = at + gap * i64::from(i);
                        let end = start + gap.max(1);
                        if end - batch_at > 1_000 && !batch.is_empty() {
                            plan.actions.push(PlannedAction {
                                at_ms: batch_at.max(batch.last().map_or(0, |r| r.end.as_millis())),
                                action: Action::Flows(std::mem::take(&mut batch)),
                            });
                            batch_at = end;
                        }
                        let (s, d) = (resolve(src, i)?, resolve(dst, i)?);
                        for ip in [s, d] {
                            if !ip.is_loopback() && !is_city(ip) {
                                plan.addresses.insert(ip);
                            }
                        }
                        let spread = (*dst_port_spread).max(1);
                        batch.push(FlowRecord {
                            src: s,
                            dst: d,
                            src_port: 40_000
                                + ((draw(seed, salt, k, u64::from(i)) * 20_000.0) as u16),
                            dst_port: dst_port.wrapping_add((i % spread) as u16),
                            protocol: protocol.number(),
                            bytes: *bytes,
                            packets: *packets,
                            tcp_flags: if *protocol == FlowProtocol::Tcp {
                                0x02
                            } else {
                                0
                            },
                            start: Timestamp::from_millis(start),
                            end: Timestamp::from_millis(end),
                            exporter: None,
                            peer_device: None,
                        });
                    }
                    if !batch.is_empty() {
                        let last_end = batch.last().map_or(at, |r| r.end.as_millis());
                        plan.actions.push(PlannedAction {
                            at_ms: last_end,
                            action: Action::Flows(batch),
                        });
                    }
                }
                StepKind::TlsConnect {
                    identity,
                    certificate_of,
                    certificate,
                } => {
                    let nth = |n: usize| {
                        targets
                            .get(n - 1)
                            .map(|d| d.id.clone())
                            .with_context(|| format!("tls_connect names target {n}"))
                    };
                    plan.actions.push(PlannedAction {
                        at_ms: at,
                        action: Action::TlsConnect {
                            identity: nth(*identity)?,
                            certificate_of: nth(*certificate_of)?,
                            kind: *certificate,
                            source,
                        },
                    });
                }
                StepKind::Indicator { name } => {
                    plan.addresses.insert(indicator);
                    plan.actions.push(PlannedAction {
                        at_ms: at,
                        action: Action::Indicator(indicator_bundle(name, indicator, seed, salt)),
                    });
                }
            }
        }
        plan.actions.sort_by_key(|a| a.at_ms);
        plan.last_ms = plan.actions.iter().map(|a| a.at_ms).max().unwrap_or(0);
        Ok(plan)
    }
}

fn is_city(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10)
}

fn secs_ms(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The passwords an attacker tries.
const GUESSES: &[&str] = &[
    "admin",
    "123456",
    "password",
    "root",
    "default",
    "1234",
    "admin123",
    "camera",
    "888888",
    "pass",
    "guest",
    "qwerty",
    "changeme",
    "Admin@123",
    "user",
    "12345678",
];

fn guess(seed: u64, salt: u64, i: u64) -> String {
    let n = GUESSES.len() as u64;
    let start = (draw(seed, salt, 0, 13) * n as f64) as u64;
    let base = GUESSES[((start + i) % n) as usize];
    if i < n {
        base.to_owned()
    } else {
        format!("{base}{}", i / n)
    }
}

/// A STIX 2.1 bundle with one indicator for `ip`, as a partner CERT would share it.
pub fn indicator_bundle(name: &str, ip: IpAddr, seed: u64, salt: u64) -> serde_json::Value {
    let hex = |k: u64| {
        format!(
            "{:012x}",
            (draw(seed, salt, k, 17) * (1u64 << 48) as f64) as u64
        )
    };
    let id = format!(
        "indicator--{}-{}-4{}-8{}-{}",
        &hex(1)[..8],
        &hex(2)[..4],
        &hex(3)[..3],
        &hex(4)[..3],
        hex(5)
    );
    let kind = if ip.is_ipv4() {
        "ipv4-addr"
    } else {
        "ipv6-addr"
    };
    serde_json::json!({
        "type": "bundle",
        "id": format!("bundle--{}", &id["indicator--".len()..]),
        "objects": [{
            "type": "indicator",
            "spec_version": "2.1",
            "id": id,
            "created": "2026-11-30T08:00:00.000Z",
            "modified": "2026-11-30T08:00:00.000Z",
            "name": name,
            "indicator_types": ["malicious-activity"],
            "pattern": format!("[{kind}:value = '{ip}']"),
            "pattern_type": "stix",
            "valid_from": "2026-11-30T08:00:00Z",
            "labels": ["partner-shared"]
        }]
    })
}

/// What a plan needs from the running world.
pub struct Env {
    pub mqtt: SocketAddr,
    pub population: Arc<Population>,
    pub handle: SimHandle,
    /// Where flow records go (`None`: flow steps fail the scenario with a clear error).
    pub flows: Option<Arc<tokio::sync::Mutex<crate::flow::FlowExporter>>>,
    /// Loads an indicator bundle into the platform.
    pub indicators: Arc<IndicatorLoader>,
    /// The broker's mTLS listener and the client certificates of the plans (`None`:
    /// certificate steps fail the scenario with a clear error).
    pub tls: Option<Arc<TlsClients>>,
}

/// What `tls_connect` steps need: the broker's mTLS listener, the CA its certificate
/// chains to, and the client certificates [`Plan::certificates`] lists.
#[derive(Debug, Clone)]
pub struct TlsClients {
    pub addr: SocketAddr,
    /// PEM.
    pub ca_pem: String,
    pub certificates: std::collections::HashMap<(String, CertKind), crate::mqtt::ClientCertificate>,
}

/// Posts a STIX bundle to the platform.
pub type IndicatorLoader = dyn Fn(serde_json::Value) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>
    + Send
    + Sync;

/// Renders `{ts}` (RFC 3339), `{ts_ms}`, `{ts_s}` (Unix seconds with milliseconds),
/// `{id}` (the device id) and `{n}` in a payload template.
pub fn render(template: &str, now: Timestamp, id: &str, n: u32) -> String {
    template
        .replace("{ts}", &now.to_rfc3339())
        .replace("{ts_ms}", &now.as_millis().to_string())
        .replace("{ts_s}", &format!("{:.3}", now.as_millis() as f64 / 1000.0))
        .replace("{id}", id)
        .replace("{n}", &n.to_string())
}

/// Plays `plan` with its onset at wall-clock `onset` (Unix ms), sleeping until each
/// action is due. Returns the problems met (an action that could not be carried out is
/// reported, not fatal).
pub async fn execute(plan: &Plan, env: &Env, onset: i64) -> Vec<String> {
    let mut problems = Vec::new();
    let mut running = tokio::task::JoinSet::new();
    for planned in &plan.actions {
        let due = onset + planned.at_ms;
        let wait = due - Timestamp::now().as_millis();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        match &planned.action {
            Action::Login {
                id,
                password,
                source,
            } => {
                let (addr, id, password, source) =
                    (env.mqtt, id.clone(), password.clone(), *source);
                running.spawn(async move { login(addr, &id, &password, source).await });
            }
            Action::Publish {
                device,
                topic,
                channel,
                payload,
                n,
                retain,
            } => {
                let body = render(payload, Timestamp::now(), device.as_str(), *n).into_bytes();
                let inject = match topic {
                    Some(topic) => Inject::PublishTopic {
                        topic: topic.clone(),
                        payload: body,
                        retain: *retain,
                    },
                    None => Inject::Publish {
                        channel: *channel,
                        payload: body,
                        retain: *retain,
                    },
                };
                if !env.handle.inject(device, inject).await {
                    problems.push(format!("device {device} is not running"));
                }
            }
            Action::Subscribe { device, filter } => {
                let inject = Inject::Subscribe {
                    filter: filter.clone(),
                };
                if !env.handle.inject(device, inject).await {
                    problems.push(format!("device {device} is not running"));
                }
            }
            Action::Takeover {
                device,
                hold_ms,
                source,
            } => match env.population.get(device.as_str()) {
                Some(d) => {
                    let (addr, id, secret, hold, source) = (
                        env.mqtt,
                        d.id.to_string(),
                        d.secret.clone(),
                        *hold_ms,
                        *source,
                    );
                    running.spawn(async move { takeover(addr, &id, &secret, hold, source).await });
                }
                None => problems.push(format!("device {device} is not in the population")),
            },
            Action::Flows(records) => match &env.flows {
                Some(exporter) => {
                    let shifted: Vec<FlowRecord> = records
                        .iter()
                        .map(|r| {
                            let mut r = r.clone();
                            r.start = Timestamp::from_millis(onset + r.start.as_millis());
                            r.end = Timestamp::from_millis(onset + r.end.as_millis());
                            r
                        })
                        .collect();
                    let now = Timestamp::now().as_millis();
                    if let Err(err) = exporter.lock().await.send(&shifted, now).await {
                        problems.push(format!("{err:#}"));
                    }
                }
                None => problems.push("no flow collector configured (--flow)".to_owned()),
            },
            Action::TlsConnect {
                identity,
                certificate_of,
                kind,
                source,
            } => {
                let Some(tls) = env.tls.clone() else {
                    problems.push("no mTLS listener configured (--mqtt-tls)".to_owned());
                    continue;
                };
                let (identity, certificate_of, kind, source) = (
                    identity.to_string(),
                    certificate_of.to_string(),
                    *kind,
                    *source,
                );
                running.spawn(async move {
                    tls_connect(&tls, &identity, &certificate_of, kind, source).await
                });
            }
            Action::Indicator(bundle) => {
                if let Err(err) = (env.indicators)(bundle.clone()).await {
                    problems.push(format!("loading the indicator failed: {err:#}"));
                }
            }
        }
    }
    while let Some(done) = running.join_next().await {
        if let Ok(Err(err)) = done {
            problems.push(format!("{err:#}"));
        }
    }
    problems
}

async fn login(addr: SocketAddr, id: &str, password: &str, source: u8) -> Result<()> {
    let local = attacker_source(addr, source);
    match crate::mqtt::connect_from(
        addr,
        local,
        crate::mqtt::Version::V4,
        id,
        id,
        password,
        30,
        Duration::from_secs(5),
    )
    .await
    {
        Ok((_, _, crate::mqtt::ConnectOutcome::Accepted)) => {
            bail!("the broker accepted {id} with a wrong password")
        }
        Ok(_) | Err(_) => Ok(()),
    }
}

async fn takeover(
    addr: SocketAddr,
    id: &str,
    secret: &str,
    hold_ms: i64,
    source: u8,
) -> Result<()> {
    let local = attacker_source(addr, source);
    let result = crate::mqtt::connect_from(
        addr,
        local,
        crate::mqtt::Version::V4,
        id,
        id,
        secret,
        30,
        Duration::from_secs(5),
    )
    .await;
    if let Ok((stream, _, crate::mqtt::ConnectOutcome::Accepted)) = result {
        tokio::time::sleep(Duration::from_millis(hold_ms.max(0) as u64)).await;
        drop(stream);
    }
    Ok(())
}

async fn tls_connect(
    tls: &TlsClients,
    identity: &str,
    certificate_of: &str,
    kind: CertKind,
    source: u8,
) -> Result<()> {
    let cert = tls
        .certificates
        .get(&(certificate_of.to_owned(), kind))
        .with_context(|| {
            format!("no {kind:?} client certificate of {certificate_of} was issued")
        })?;
    let config = Arc::new(crate::mqtt::tls_client_config(&tls.ca_pem, cert)?);
    let local = attacker_source(tls.addr, source);
    match crate::mqtt::connect_tls_from(
        tls.addr,
        local,
        config,
        identity,
        identity,
        Duration::from_secs(5),
    )
    .await?
    {
        crate::mqtt::ConnectOutcome::Accepted => {
            bail!("the broker accepted {identity} with a {kind:?} certificate of {certificate_of}")
        }
        crate::mqtt::ConnectOutcome::Refused(_) => Ok(()),
    }
}

/// The loopback address scenario attacks come from (`127.0.77.<source>`), when the broker
/// is on loopback.
pub fn attacker_source(addr: SocketAddr, source: u8) -> Option<SocketAddr> {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            Some(SocketAddr::from(([127, 0, 77, source], 0)))
        }
        _ => None,
    }
}

/// An alert as the platform's API lists it, reduced to what scoring needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeenAlert {
    pub id: String,
    pub rule: String,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    pub ts: Timestamp,
    pub last_ts: Timestamp,
    #[serde(default)]
    pub title: String,
}

/// A scenario as it ran: its plan and its wall-clock onset.
#[derive(Debug, Clone)]
pub struct Ran {
    pub plan: Plan,
    /// Unix ms.
    pub onset: i64,
    /// Unix ms of the end of its settle time.
    pub until: i64,
}

/// The verdict for one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub scenario: String,
    pub detected: bool,
    /// First expected alert's `ts` minus onset, in seconds.
    pub time_to_detect_s: Option<f64>,
    /// Expected rules that fired, and the ones that did not.
    pub rules_fired: Vec<String>,
    pub rules_missing: Vec<String>,
    /// The alerts attributed to this scenario.
    pub alerts: Vec<SeenAlert>,
    /// Problems while injecting (an action that could not be carried out).
    pub problems: Vec<String>,
}

/// The whole run's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub scenarios: Vec<Verdict>,
    /// Alerts no scenario explains: raised on the benign background, or not expected.
    pub false_alerts: Vec<SeenAlert>,
}

/// Attributes `alerts` (raised since the run began) to the scenarios that ran: an alert
/// belongs to a scenario when its rule is expected (or allowed) there, it was raised (or
/// last repeated) between the scenario's onset and the end of its settle time, and the
/// device it names, if any, is one the scenario involves. Everything else is a false
/// alert.
pub fn score(ran: &[(Ran, Vec<String>)], alerts: &[SeenAlert]) -> Score {
    let mut attributed = vec![false; alerts.len()];
    let mut verdicts = Vec::new();
    for (run, problems) in ran {
        let plan = &run.plan;
        let mut mine = Vec::new();
        for (i, alert) in alerts.iter().enumerate() {
            if attributed[i] {
                continue;
            }
            let rule_ok = plan.expect.contains(&alert.rule) || plan.also.contains(&alert.rule);
            let in_window = |t: Timestamp| (run.onset..=run.until).contains(&t.as_millis());
            let time_ok = in_window(alert.ts) || in_window(alert.last_ts);
            let device_ok = alert
                .device_id
                .as_ref()
                .is_none_or(|d| plan.involved.is_empty() || plan.involved.contains(d));
            if rule_ok && time_ok && device_ok {
                attributed[i] = true;
                mine.push(alert.clone());
            }
        }
        let fired: BTreeSet<String> = mine
            .iter()
            .filter(|a| plan.expect.contains(&a.rule))
            .map(|a| a.rule.clone())
            .collect();
        let first = mine
            .iter()
            .filter(|a| plan.expect.contains(&a.rule))
            .map(|a| {
                // A repeat merged into an alert raised before this run is timed by its
                // last occurrence.
                if a.ts.as_millis() >= run.onset {
                    a.ts.as_millis()
                } else {
                    a.last_ts.as_millis()
                }
            })
            .min();
        verdicts.push(Verdict {
            scenario: plan.name.clone(),
            detected: first.is_some(),
            time_to_detect_s: first.map(|t| (t - run.onset) as f64 / 1000.0),
            rules_fired: fired.iter().cloned().collect(),
            rules_missing: plan
                .expect
                .iter()
                .filter(|r| !fired.contains(*r))
                .cloned()
                .collect(),
            alerts: mine,
            problems: problems.clone(),
        });
    }
    let false_alerts = alerts
        .iter()
        .zip(&attributed)
        .filter(|(_, a)| !**a)
        .map(|(alert, _)| alert.clone())
        .collect();
    Score {
        scenarios: verdicts,
        false_alerts,
    }
}
