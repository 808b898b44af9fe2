//! Attack scenarios the simulator plays against the broker, on a schedule replayable by
//! seed: an MQTT credential brute force against one camera, password spraying across many
//! devices, and an uncommanded siren actuation through the siren's own connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use model::{DeviceClass, DeviceId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use crate::mqtt::{self, ConnectOutcome, Version};
use crate::population::Population;
use crate::stats::SimStats;

/// Passwords an attacker tries first.
const COMMON_PASSWORDS: &[&str] = &[
    "admin",
    "123456",
    "password",
    "12345678",
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
];

/// When attacks run and how hard they push.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackConfig {
    pub enabled: bool,
    /// Delay from the start of the run to the first attack.
    pub first_after: Duration,
    /// The whole schedule repeats this often.
    pub repeat_every: Duration,
    /// Gap between the attacks of one cycle (brute force, spraying, siren).
    pub spacing: Duration,
    /// Connect attempts in one brute force.
    pub brute_force_attempts: u32,
    /// How long one brute force (and one spraying round) takes.
    pub brute_force_window: Duration,
    /// How many device ids one spraying round tries.
    pub spray_targets: usize,
    /// How long a siren sounds before the attacker turns it off again.
    pub siren_hold: Duration,
}

impl Default for AttackConfig {
    /// The demo schedule: brute force at 20 s, spraying at 32 s, a siren sounding from
    /// 44 s to 54 s; again every 5 minutes.
    fn default() -> AttackConfig {
        AttackConfig {
            enabled: true,
            first_after: Duration::from_secs(20),
            repeat_every: Duration::from_secs(300),
            spacing: Duration::from_secs(12),
            brute_force_attempts: 25,
            brute_force_window: Duration::from_secs(10),
            spray_targets: 20,
            siren_hold: Duration::from_secs(10),
        }
    }
}

impl AttackConfig {
    /// No attacks (pure load generation).
    pub fn disabled() -> AttackConfig {
        AttackConfig {
            enabled: false,
            ..AttackConfig::default()
        }
    }
}

/// What an attack does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttackKind {
    /// Repeated connects as one device with wrong passwords.
    BruteForce { target: DeviceId },
    /// One wrong password tried against each of many device ids.
    PasswordSpray { targets: Vec<DeviceId> },
    /// A siren reports `sounding: true` without a command, then `false` after `hold`.
    UncommandedSiren { siren: DeviceId },
}

impl AttackKind {
    /// The stable name used in logs: `brute_force`, `password_spray`, `uncommanded_siren`.
    pub fn name(&self) -> &'static str {
        match self {
            AttackKind::BruteForce { .. } => "brute_force",
            AttackKind::PasswordSpray { .. } => "password_spray",
            AttackKind::UncommandedSiren { .. } => "uncommanded_siren",
        }
    }
}

/// One attack in the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAttack {
    /// Offset from the start of the run.
    pub at: Duration,
    pub kind: AttackKind,
}

/// The attacks of schedule cycle `cycle` (0 = the first), chosen reproducibly from `seed`.
/// Attacks whose target class is missing from the population are left out.
pub fn plan_cycle(
    population: &Population,
    config: &AttackConfig,
    seed: u64,
    cycle: u32,
) -> Vec<PlannedAttack> {
    let mut rng = SmallRng::seed_from_u64(
        seed ^ 0xa77a_c4e5 ^ u64::from(cycle).wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    let base = config.first_after + config.repeat_every * cycle;
    let mut plan = Vec::new();
    let pick = |rng: &mut SmallRng, class| {
        let all: Vec<&DeviceId> = population.of_class(class).map(|d| &d.id).collect();
        (!all.is_empty()).then(|| all[rng.random_range(0..all.len())].clone())
    };
    if let Some(target) = pick(&mut rng, DeviceClass::Camera) {
        plan.push(PlannedAttack {
            at: base,
            kind: AttackKind::BruteForce { target },
        });
    }
    if !population.is_empty() {
        let n = config.spray_targets.min(population.len());
        let targets = rand::seq::index::sample(&mut rng, population.len(), n)
            .into_iter()
            .map(|i| population.devices[i].id.clone())
            .collect();
        plan.push(PlannedAttack {
            at: base + config.spacing,
            kind: AttackKind::PasswordSpray { targets },
        });
    }
    if let Some(siren) = pick(&mut rng, DeviceClass::Siren) {
        plan.push(PlannedAttack {
            at: base + config.spacing * 2,
            kind: AttackKind::UncommandedSiren { siren },
        });
    }
    plan
}

/// What an attack needs from the running simulation.
pub(crate) struct AttackContext {
    pub addr: SocketAddr,
    pub config: AttackConfig,
    pub stats: Arc<SimStats>,
    /// Per siren: a channel into its connection task that forces its sounding state.
    pub sirens: HashMap<DeviceId, mpsc::Sender<crate::runner::Inject>>,
    pub seed: u64,
}

/// The local address an attacker connects from: a distinct loopback address per attack
/// when the broker is on loopback (so the broker sees "one source"), else the default.
fn attacker_source(addr: SocketAddr, octet: u8) -> Option<SocketAddr> {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            Some(SocketAddr::from(([127, 0, 66, octet], 0)))
        }
        _ => None,
    }
}

/// One connect attempt with a wrong password; counts it and whether it was refused.
async fn try_login(ctx: &AttackContext, source: Option<SocketAddr>, id: &str, password: &str) {
    ctx.stats.attack_attempts.fetch_add(1, Ordering::Relaxed);
    let result = mqtt::connect_from(
        ctx.addr,
        source,
        Version::V4,
        id,
        id,
        password,
        30,
        Duration::from_secs(5),
    )
    .await;
    match result {
        Ok((mut stream, _, ConnectOutcome::Accepted)) => {
            ctx.stats.attack_accepted.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                device_id = id,
                "attack login was accepted with a wrong password"
            );
            let mut buf = bytes::BytesMut::new();
            mqtt::encode_disconnect(&mut buf);
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &buf).await;
        }
        Ok((_, _, ConnectOutcome::Refused(_))) => {
            ctx.stats.attack_refused.fetch_add(1, Ordering::Relaxed);
        }
        Err(err) => {
            tracing::debug!(device_id = id, error = %err, "attack connect failed");
        }
    }
}

/// Runs one attack to completion.
pub(crate) async fn execute(ctx: &AttackContext, attack: &PlannedAttack, cycle: u32) {
    ctx.stats.attacks_launched.fetch_add(1, Ordering::Relaxed);
    let mut rng = SmallRng::seed_from_u64(ctx.seed ^ u64::from(cycle) ^ 0xbad_c0de);
    match &attack.kind {
        AttackKind::BruteForce { target } => {
            let source = attacker_source(ctx.addr, 10 + (cycle % 200) as u8);
            tracing::warn!(attack = "brute_force", device_id = %target, attempts = ctx.config.brute_force_attempts, source = ?source, "launching attack");
            let gap = ctx.config.brute_force_window / ctx.config.brute_force_attempts.max(1);
            for i in 0..ctx.config.brute_force_attempts {
                let password = match COMMON_PASSWORDS.get(i as usize) {
                    Some(p) => (*p).to_string(),
                    None => format!("{:06}", rng.random_range(0..1_000_000)),
                };
                try_login(ctx, source, target.as_str(), &password).await;
                tokio::time::sleep(gap).await;
            }
        }
        AttackKind::PasswordSpray { targets } => {
            let source = attacker_source(ctx.addr, 210 + (cycle % 40) as u8);
            let password = COMMON_PASSWORDS[rng.random_range(0..COMMON_PASSWORDS.len())];
            tracing::warn!(attack = "password_spray", targets = targets.len(), password, source = ?source, "launching attack");
            let gap = ctx.config.brute_force_window / (targets.len().max(1) as u32);
            for target in targets {
                try_login(ctx, source, target.as_str(), password).await;
                tokio::time::sleep(gap).await;
            }
        }
        AttackKind::UncommandedSiren { siren } => {
            tracing::warn!(attack = "uncommanded_siren", device_id = %siren, hold_s = ctx.config.siren_hold.as_secs_f64(), "launching attack");
            let Some(tx) = ctx.sirens.get(siren) else {
                tracing::warn!(device_id = %siren, "siren not simulated, attack skipped");
                return;
            };
            if tx
                .send(crate::runner::Inject::Sounding(true))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(ctx.config.siren_hold).await;
            let _ = tx.send(crate::runner::Inject::Sounding(false)).await;
        }
    }
}
