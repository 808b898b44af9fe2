//! Runs a population against an MQTT broker: one task per device connection, connects
//! ramped up with bounded concurrency, telemetry at each class's cadence (or a total rate
//! in load-generator mode), command handling for actuators, reconnects with backoff, and
//! the attack schedule.

use std::collections::HashMap;
use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use model::topic::Channel;
use model::{DeviceClass, Timestamp};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::attacks::{self, AttackConfig, AttackContext};
use crate::mqtt::{self, ConnectOutcome, Incoming, Version};
use crate::population::Population;
use crate::stats::SimStats;
use crate::telemetry::{self, DeviceModel};

/// In load-generator mode a device wakes about once per `BATCH_TARGET` messages (but at
/// least every `MAX_TICK` and at most every `MIN_TICK`) and writes everything due since
/// its last wake in one batch: one syscall per batch instead of one per message.
const MIN_TICK: Duration = Duration::from_millis(10);
const MAX_TICK: Duration = Duration::from_millis(50);
const BATCH_TARGET: f64 = 8.0;
/// Publishes written in one batch at most; a device that is further behind loops again.
const MAX_BATCH: u64 = 64;
/// A device that falls further behind than this (the broker cannot keep up) drops the
/// backlog instead of bursting it later.
const MAX_BACKLOG: u64 = 256;
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to simulate and where.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The broker: the platform's embedded one, Mosquitto, or any MQTT broker.
    pub mqtt: SocketAddr,
    pub population: Arc<Population>,
    /// Load-generator mode: the total publishes per second, spread evenly across devices,
    /// instead of each class's natural cadence. Actuators then publish state only on
    /// connect and after commands.
    pub rate: Option<f64>,
    /// Stop after this long; `None` runs until shutdown.
    pub duration: Option<Duration>,
    pub attacks: AttackConfig,
    /// Seeds every device's random stream and the attack schedule.
    pub seed: u64,
    /// QoS for publishes: 0 (default) or 1.
    pub qos: u8,
    /// How many connects may be in flight at once.
    pub connect_concurrency: usize,
    /// The share of devices that speak MQTT 5.0; the rest speak 3.1.1.
    pub mqtt5_share: f64,
    /// Simulated seconds per real second, for the daily curves (1.0 = real time). The
    /// `ts` in payloads is simulated time.
    pub time_scale: f64,
    pub keep_alive_s: u16,
    /// The command gateway's Ed25519 public key. When set, actuators check every command
    /// with the `verifier` crate (signature, device id, counter, expiry) and acknowledge a
    /// refusal with `ok: false` and the reason; when unset they obey unsigned commands (for
    /// brokers without a gateway).
    pub gateway_key: Option<[u8; 32]>,
    /// When the broker is on loopback, device `i` connects from its own loopback address
    /// `127.<base + i / 65536>.<(i / 256) % 256>.<i % 256>` (as devices in a city each have
    /// their own address), so per-address rules see one device per address. `None`
    /// connects from the default address.
    pub source_base: Option<u8>,
}

/// What a scenario (or the honest life of a device) makes a running device do, through its
/// own connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inject {
    /// Force a siren's sounding state without a command and report it.
    Sounding(bool),
    /// Publish `payload` on one of the device's own channels.
    Publish {
        channel: Channel,
        payload: Vec<u8>,
        retain: bool,
    },
    /// Publish on any topic (a compromised device probing the broker's policy).
    PublishTopic {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    /// Subscribe to any filter (`#`, `$SYS/#`, another device's topics).
    Subscribe { filter: String },
    /// Drop off the network (without DISCONNECT unless `clean`) and reconnect after
    /// `duration`.
    Offline { duration: Duration, clean: bool },
    /// Install new firmware: disconnect, restart for `restart`, reconnect and report it.
    Firmware { version: String, restart: Duration },
}

/// Control of a running simulation: one channel into each device's connection task.
#[derive(Debug, Clone, Default)]
pub struct SimHandle {
    pub devices: HashMap<model::DeviceId, mpsc::Sender<Inject>>,
}

impl SimHandle {
    /// Sends `inject` to device `id`'s task; false when the device is not simulated or
    /// its task has ended.
    pub async fn inject(&self, id: &model::DeviceId, inject: Inject) -> bool {
        match self.devices.get(id) {
            Some(tx) => tx.send(inject).await.is_ok(),
            None => false,
        }
    }
}

/// The loopback address device `index` connects from, for `base` (see
/// [`SimConfig::source_base`]).
pub fn device_source(base: u8, index: usize) -> SocketAddr {
    let hi = base.saturating_add(u8::try_from(index / 65_536).unwrap_or(u8::MAX));
    SocketAddr::from(([127, hi, (index / 256 % 256) as u8, (index % 256) as u8], 0))
}

impl SimConfig {
    /// The defaults: natural cadences, attacks on, QoS 0, 20% MQTT 5, real time.
    pub fn new(mqtt: SocketAddr, population: Arc<Population>) -> SimConfig {
        SimConfig {
            mqtt,
            population,
            rate: None,
            duration: None,
            attacks: AttackConfig::default(),
            seed: 1,
            qos: 0,
            connect_concurrency: 64,
            mqtt5_share: 0.2,
            time_scale: 1.0,
            keep_alive_s: 60,
            source_base: Some(1),
            gateway_key: None,
        }
    }
}

/// Simulated time: the wall clock at start, advanced `scale` times faster.
struct SimClock {
    start: Instant,
    start_ms: i64,
    scale: f64,
}

impl SimClock {
    fn now_ms(&self) -> i64 {
        self.ms_at(Instant::now())
    }

    /// Simulated time at a real instant.
    fn ms_at(&self, at: Instant) -> i64 {
        let real = at.saturating_duration_since(self.start).as_secs_f64() * 1000.0;
        self.start_ms + (real * self.scale) as i64
    }
}

/// What every device task shares.
struct Shared {
    addr: SocketAddr,
    population: Arc<Population>,
    stats: Arc<SimStats>,
    clock: SimClock,
    connect_slots: Semaphore,
    /// Seconds between one device's publishes in load-generator mode.
    load_interval: Option<f64>,
    qos: u8,
    keep_alive_s: u16,
    mqtt5_share: f64,
    seed: u64,
    source_base: Option<u8>,
    /// Whether a connect failure was already logged at warn level (later ones go to debug).
    failure_logged: AtomicBool,
    gateway_key: Option<[u8; 32]>,
}

/// A per-device seed derived from the run's seed (SplitMix64 finaliser).
fn device_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The MQTT version device `index` of a run seeded with `seed` speaks: MQTT 5.0 for about
/// `mqtt5_share` of devices, chosen reproducibly; 3.1.1 for the rest.
pub fn device_version(seed: u64, index: usize, mqtt5_share: f64) -> Version {
    let draw = device_seed(seed ^ 0x5e55_1075, index) >> 11;
    if (draw as f64) < mqtt5_share.clamp(0.0, 1.0) * (1u64 << 53) as f64 {
        Version::V5
    } else {
        Version::V4
    }
}

/// Runs the simulation until `duration` elapses or `shutdown` turns true, then
/// disconnects every device cleanly. A dropped `shutdown` sender never stops the run.
pub async fn run(
    config: SimConfig,
    stats: Arc<SimStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let (_handle, task) = spawn(config, stats, shutdown)?;
    task.await.context("simulation task panicked")?
}

/// Starts the simulation like [`run`] and returns at once with a [`SimHandle`] to steer
/// individual devices, and the task that ends when the simulation does.
pub fn spawn(
    config: SimConfig,
    stats: Arc<SimStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<(SimHandle, tokio::task::JoinHandle<Result<()>>)> {
    if config.population.is_empty() {
        bail!("population is empty");
    }
    if let Some(key) = &config.gateway_key {
        verifier::Verifier::new(key, 0).map_err(|e| anyhow::anyhow!("gateway key: {e}"))?;
    }
    if config.qos > 1 {
        bail!("qos {} is not supported (0 or 1)", config.qos);
    }
    if let Some(rate) = config.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        bail!("rate must be a positive number of messages per second, got {rate}");
    }
    let devices = config.population.len();
    let shared = Arc::new(Shared {
        addr: config.mqtt,
        population: config.population.clone(),
        stats: stats.clone(),
        clock: SimClock {
            start: Instant::now(),
            start_ms: Timestamp::now().as_millis(),
            scale: config.time_scale.max(0.0),
        },
        connect_slots: Semaphore::new(config.connect_concurrency.max(1)),
        load_interval: config.rate.map(|rate| devices as f64 / rate),
        qos: config.qos,
        keep_alive_s: config.keep_alive_s.max(5),
        mqtt5_share: config.mqtt5_share,
        seed: config.seed,
        source_base: match config.mqtt {
            SocketAddr::V4(v4) if v4.ip().is_loopback() => config.source_base,
            _ => None,
        },
        failure_logged: AtomicBool::new(false),
        gateway_key: config.gateway_key,
    });
    tracing::info!(
        devices,
        broker = %config.mqtt,
        rate = ?config.rate,
        attacks = config.attacks.enabled,
        "simulation starting"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut handle = SimHandle::default();
    let mut sirens = HashMap::new();
    for (index, device) in config.population.devices.iter().enumerate() {
        let (tx, rx) = mpsc::channel(16);
        if device.class == DeviceClass::Siren {
            sirens.insert(device.id.clone(), tx.clone());
        }
        handle.devices.insert(device.id.clone(), tx);
        tasks.spawn(device_task(shared.clone(), index, rx, stop_rx.clone()));
    }
    if config.attacks.enabled {
        let ctx = AttackContext {
            addr: config.mqtt,
            config: config.attacks.clone(),
            stats: stats.clone(),
            sirens,
            seed: config.seed,
        };
        tasks.spawn(attack_schedule(
            ctx,
            config.population.clone(),
            stop_rx.clone(),
        ));
    }

    let duration = config.duration;
    let task = tokio::spawn(supervise(duration, shutdown, stop_tx, tasks, stats));
    Ok((handle, task))
}

async fn supervise(
    duration: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
    stop_tx: watch::Sender<bool>,
    mut tasks: JoinSet<()>,
    stats: Arc<SimStats>,
) -> Result<()> {
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => pending().await,
        }
    };
    let stop_requested = async {
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            if shutdown.changed().await.is_err() {
                pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = deadline => {}
        _ = stop_requested => {}
    }
    tracing::info!(stats = ?stats.snapshot(), "simulation stopping");
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!("device tasks did not stop within 5 s, aborting them");
        tasks.abort_all();
    }
    Ok(())
}

async fn attack_schedule(
    ctx: AttackContext,
    population: Arc<Population>,
    mut stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let ctx = Arc::new(ctx);
    let mut running = JoinSet::new();
    for cycle in 0u32.. {
        for attack in attacks::plan_cycle(&population, &ctx.config, ctx.seed, cycle) {
            tokio::select! {
                _ = tokio::time::sleep_until(start + attack.at) => {}
                _ = stop.changed() => return,
            }
            let ctx = ctx.clone();
            running.spawn(async move { attacks::execute(&ctx, &attack, cycle).await });
            while running.try_join_next().is_some() {}
        }
        if ctx.config.repeat_every.is_zero() {
            break;
        }
    }
    let _ = stop.changed().await;
}

/// Why a session ended without an error.
enum SessionEnd {
    Stopped,
    /// Off the network for this long (an outage, a restart), then reconnect.
    Offline(Duration),
}

async fn device_task(
    shared: Arc<Shared>,
    index: usize,
    mut inject: mpsc::Receiver<Inject>,
    mut stop: watch::Receiver<bool>,
) {
    let device = &shared.population.devices[index];
    let mut firmware = device.firmware.clone();
    let source = shared.source_base.map(|base| device_source(base, index));
    let seed = device_seed(shared.seed, index);
    let mut rng = SmallRng::seed_from_u64(seed);
    let version = device_version(shared.seed, index, shared.mqtt5_share);
    let mut model = DeviceModel::new(device.class, seed);
    // The device's command verifier keeps its last counter across reconnects.
    let mut guard = match (&shared.gateway_key, device.class.is_actuator()) {
        (Some(key), true) => verifier::Verifier::new(key, 0).ok(),
        _ => None,
    };
    let mut backoff = INITIAL_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = async {
            let _slot = shared
                .connect_slots
                .acquire()
                .await
                .context("connect slots closed")?;
            let id = device.id.as_str();
            let (mut stream, mut rbuf, outcome) = mqtt::connect_from(
                shared.addr,
                source,
                version,
                id,
                id,
                &device.secret,
                shared.keep_alive_s,
                CONNECT_TIMEOUT,
            )
            .await?;
            if let ConnectOutcome::Refused(reason) = outcome {
                bail!("broker refused connect: {reason}");
            }
            if device.class.is_actuator() {
                let mut wbuf = BytesMut::with_capacity(64);
                let filter = model::topic::device_topic(device.sector, &device.id, Channel::Cmd);
                mqtt::encode_subscribe(version, 1, &filter, 1, &mut wbuf)?;
                stream.write_all(&wbuf).await.context("send subscribe")?;
                loop {
                    let (packet, _) = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        mqtt::next_packet(version, &mut stream, &mut rbuf),
                    )
                    .await
                    .context("suback timed out")??;
                    if packet == Incoming::SubAck {
                        break;
                    }
                }
            }
            anyhow::Ok((stream, rbuf))
        };
        let connected = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        match connected {
            Ok((stream, rbuf)) => {
                shared.stats.connects.fetch_add(1, Ordering::Relaxed);
                shared
                    .stats
                    .devices_connected
                    .fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let end = session(
                    &shared,
                    index,
                    version,
                    &mut model,
                    &mut guard,
                    &mut rng,
                    stream,
                    rbuf,
                    &mut inject,
                    &mut firmware,
                    &mut stop,
                )
                .await;
                shared
                    .stats
                    .devices_connected
                    .fetch_sub(1, Ordering::Relaxed);
                match end {
                    Ok(SessionEnd::Stopped) => return,
                    Ok(SessionEnd::Offline(duration)) => {
                        tokio::select! {
                            _ = tokio::time::sleep(duration) => {}
                            _ = stop.changed() => return,
                        }
                        backoff = INITIAL_BACKOFF;
                        continue;
                    }
                    Err(err) => {
                        tracing::debug!(device_id = %device.id, error = %format!("{err:#}"), "session ended, reconnecting");
                    }
                }
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = INITIAL_BACKOFF;
                }
            }
            Err(err) => {
                shared
                    .stats
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                let error = format!("{err:#}");
                if shared.failure_logged.swap(true, Ordering::Relaxed) {
                    tracing::debug!(device_id = %device.id, error, "connect failed");
                } else {
                    tracing::warn!(
                        device_id = %device.id,
                        error,
                        "device connect failed (further failures are logged at debug level)"
                    );
                }
            }
        }
        let jitter = rng.random_range(0.5..1.5);
        tokio::select! {
            _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Publishes until stopped or the connection fails.
#[allow(clippy::too_many_arguments)]
async fn session(
    shared: &Shared,
    index: usize,
    version: Version,
    model: &mut DeviceModel,
    guard: &mut Option<verifier::Verifier>,
    rng: &mut SmallRng,
    mut stream: TcpStream,
    mut rbuf: BytesMut,
    inject: &mut mpsc::Receiver<Inject>,
    firmware: &mut String,
    stop: &mut watch::Receiver<bool>,
) -> Result<SessionEnd> {
    let device = &shared.population.devices[index];
    let prefix = model::topic::device_prefix(device.sector, &device.id);
    let actuator = device.class.is_actuator();
    let qos = shared.qos;
    let mut pkid: u16 = 0;
    let mut next_pkid = move || {
        pkid = pkid.wrapping_add(1).max(1);
        pkid
    };
    let mut wbuf = BytesMut::new();
    let mut payload = Vec::new();
    let stats = &shared.stats;
    let mut unacked = Unacked { qos, count: 0 };
    // The last reading's time: readings of one session are strictly increasing, from the
    // firmware report on.
    let mut last_ms;

    // Every device reports its firmware on connect.
    {
        last_ms = shared.clock.now_ms();
        let ts = Timestamp::from_millis(last_ms).to_rfc3339();
        let hello = serde_json::json!({"firmware": firmware.as_str(), "ts": ts}).to_string();
        mqtt::encode_publish(
            version,
            &[&prefix, "/telemetry"],
            qos,
            next_pkid(),
            hello.as_bytes(),
            &mut wbuf,
        );
        flush(&mut stream, &mut wbuf, 1, stats, &mut unacked).await?;
    }
    // Actuators announce their state on connect.
    if actuator {
        let ts = Timestamp::from_millis(shared.clock.now_ms()).to_rfc3339();
        model.state(&ts, &mut payload);
        mqtt::encode_publish(
            version,
            &[&prefix, "/state"],
            qos,
            next_pkid(),
            &payload,
            &mut wbuf,
        );
        payload.clear();
        flush(&mut stream, &mut wbuf, 1, stats, &mut unacked).await?;
    }

    let interval = shared
        .load_interval
        .unwrap_or_else(|| telemetry::cadence(device.class).as_secs_f64());
    // A random phase so devices' publishes spread evenly over the interval.
    let origin = Instant::now() + Duration::from_secs_f64(interval * rng.random::<f64>());
    let min_gap = Duration::from_secs_f64(interval * BATCH_TARGET).clamp(MIN_TICK, MAX_TICK);
    let mut sent: u64 = 0;
    let mut next_wake = origin;
    let keep_alive = Duration::from_secs(u64::from(shared.keep_alive_s));
    let mut last_write = Instant::now();

    loop {
        let ping_at = last_write + keep_alive / 2;
        let wake = next_wake.min(ping_at);
        tokio::select! {
            _ = stop.changed() => {
                drain_acks(version, &mut stream, &mut rbuf, &mut unacked, stats).await;
                mqtt::encode_disconnect(&mut wbuf);
                let _ = stream.write_all(&wbuf).await;
                return Ok(SessionEnd::Stopped);
            }
            read = stream.read_buf(&mut rbuf) => {
                if read.context("read from broker")? == 0 {
                    bail!("broker closed the connection");
                }
                let mut published = 0;
                while let Some((packet, packet_id)) = mqtt::read_packet(version, &mut rbuf)? {
                    match packet {
                        Incoming::Publish { topic, payload: cmd } if topic.ends_with("/cmd") => {
                            stats.cmds_received.fetch_add(1, Ordering::Relaxed);
                            if packet_id != 0 {
                                mqtt::encode_puback(packet_id, &mut wbuf);
                            }
                            let ts = Timestamp::from_millis(shared.clock.now_ms()).to_rfc3339();
                            // The device's own clock is the wall clock, not simulated time.
                            let now = u64::try_from(Timestamp::now().as_millis()).unwrap_or(0);
                            if let Some(refusal) = guard
                                .as_mut()
                                .and_then(|v| v.check(device.id.as_str(), &cmd, now).err())
                            {
                                stats.cmds_refused.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(device_id = %device.id, reason = %refusal, "command refused by the device's verifier");
                                let ack = telemetry::refusal_ack(&cmd, &refusal.to_string(), &ts);
                                mqtt::encode_publish(version, &[&prefix, "/ack"], qos, next_pkid(), &ack, &mut wbuf);
                                published += 1;
                                continue;
                            }
                            match model.apply_command(&cmd, &ts) {
                                Some(outcome) => {
                                    tracing::info!(device_id = %device.id, action = %outcome.action, ok = outcome.ok, "command received");
                                    mqtt::encode_publish(version, &[&prefix, "/ack"], qos, next_pkid(), &outcome.ack, &mut wbuf);
                                    model.state(&ts, &mut payload);
                                    mqtt::encode_publish(version, &[&prefix, "/state"], qos, next_pkid(), &payload, &mut wbuf);
                                    payload.clear();
                                    published += 2;
                                }
                                None => {
                                    tracing::info!(device_id = %device.id, "ignoring command that is not a json object with an action");
                                }
                            }
                        }
                        Incoming::PubAck { accepted } => unacked.acked(accepted, stats),
                        Incoming::Disconnect => bail!("broker sent disconnect"),
                        _ => {}
                    }
                }
                if !wbuf.is_empty() {
                    flush(&mut stream, &mut wbuf, published, stats, &mut unacked).await?;
                    last_write = Instant::now();
                }
                // Keep the read buffer small for idle devices.
                if rbuf.capacity() > 4096 && rbuf.is_empty() {
                    rbuf = BytesMut::new();
                }
            }
            Some(injected) = inject.recv() => {
                let publishes = u64::from(!matches!(injected, Inject::Subscribe { .. }));
                match injected {
                    Inject::Sounding(sounding) => {
                        model.set_sounding(sounding);
                        tracing::warn!(device_id = %device.id, sounding, "siren state forced without a command");
                        let ts = Timestamp::from_millis(shared.clock.now_ms()).to_rfc3339();
                        model.state(&ts, &mut payload);
                        mqtt::encode_publish(version, &[&prefix, "/state"], qos, next_pkid(), &payload, &mut wbuf);
                        payload.clear();
                    }
                    Inject::Publish { channel, payload: body, retain } => {
                        let topic = format!("{prefix}/{}", channel.as_str());
                        mqtt::encode_publish_retain(version, &topic, qos, next_pkid(), &body, retain, &mut wbuf);
                    }
                    Inject::PublishTopic { topic, payload: body, retain } => {
                        mqtt::encode_publish_retain(version, &topic, qos, next_pkid(), &body, retain, &mut wbuf);
                    }
                    Inject::Subscribe { filter } => {
                        mqtt::encode_subscribe(version, next_pkid(), &filter, 0, &mut wbuf)?;
                    }
                    Inject::Offline { duration, clean } => {
                        if clean {
                            mqtt::encode_disconnect(&mut wbuf);
                            let _ = stream.write_all(&wbuf).await;
                        }
                        tracing::debug!(device_id = %device.id, offline_s = duration.as_secs_f64(), "device offline");
                        return Ok(SessionEnd::Offline(duration));
                    }
                    Inject::Firmware { version: new, restart } => {
                        mqtt::encode_disconnect(&mut wbuf);
                        let _ = stream.write_all(&wbuf).await;
                        tracing::debug!(device_id = %device.id, firmware = %new, "installing firmware, restarting");
                        *firmware = new;
                        return Ok(SessionEnd::Offline(restart));
                    }
                }
                flush(&mut stream, &mut wbuf, publishes, stats, &mut unacked).await?;
                last_write = Instant::now();
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now < next_wake {
                    // Keep-alive only.
                    mqtt::encode_pingreq(&mut wbuf);
                    flush(&mut stream, &mut wbuf, 0, stats, &mut unacked).await?;
                    last_write = now;
                    continue;
                }
                let due = ((now - origin).as_secs_f64() / interval) as u64 + 1;
                if due > sent + MAX_BACKLOG {
                    sent = due - MAX_BACKLOG;
                }
                let batch = (due - sent).min(MAX_BATCH);
                let mut count = 0;
                for i in 0..batch {
                    // Each reading carries the time it was due (a batch holds readings taken
                    // one interval apart), and one device's readings never share a
                    // millisecond.
                    let due_at = origin + Duration::from_secs_f64((sent + i) as f64 * interval);
                    let sim_ms = shared.clock.ms_at(due_at).max(last_ms + 1);
                    last_ms = sim_ms;
                    let ts = Timestamp::from_millis(sim_ms).to_rfc3339();
                    model.telemetry(device.id.as_str(), sim_ms, &ts, &mut payload);
                    mqtt::encode_publish(version, &[&prefix, "/telemetry"], qos, next_pkid(), &payload, &mut wbuf);
                    payload.clear();
                    count += 1;
                    if actuator && shared.load_interval.is_none() && model.state_due() {
                        model.state(&ts, &mut payload);
                        mqtt::encode_publish(version, &[&prefix, "/state"], qos, next_pkid(), &payload, &mut wbuf);
                        payload.clear();
                        count += 1;
                    }
                }
                sent += batch;
                flush(&mut stream, &mut wbuf, count, stats, &mut unacked).await?;
                last_write = Instant::now();
                next_wake = if sent < due {
                    last_write
                } else {
                    let next_due = origin + Duration::from_secs_f64(sent as f64 * interval);
                    next_due.max(last_write + min_gap)
                };
                if shared.load_interval.is_none() || wbuf.capacity() > 16 * 1024 {
                    // At natural cadences a device is idle for seconds: hold no buffers
                    // meanwhile (about 500 bytes per device).
                    wbuf = BytesMut::new();
                    payload = Vec::new();
                }
            }
        }
    }
}

/// Writes the buffer; `messages` publishes in it are counted as sent and, at QoS 1, as
/// awaiting the broker's acknowledgement in `unacked`.
async fn flush(
    stream: &mut TcpStream,
    wbuf: &mut BytesMut,
    messages: u64,
    stats: &SimStats,
    unacked: &mut Unacked,
) -> Result<()> {
    stream.write_all(wbuf).await.context("write to broker")?;
    stats
        .bytes_sent
        .fetch_add(wbuf.len() as u64, Ordering::Relaxed);
    if messages > 0 {
        stats.messages_sent.fetch_add(messages, Ordering::Relaxed);
        if unacked.qos > 0 {
            unacked.count += messages;
        }
    }
    wbuf.clear();
    Ok(())
}

/// A session's QoS 1 publishes the broker has not acknowledged yet.
struct Unacked {
    qos: u8,
    count: u64,
}

impl Unacked {
    fn acked(&mut self, accepted: bool, stats: &SimStats) {
        self.count = self.count.saturating_sub(1);
        if accepted {
            stats.messages_acked.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.messages_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How long a stopping device waits for the broker to acknowledge what it published.
const STOP_DRAIN: Duration = Duration::from_secs(5);

/// Reads acknowledgements until none is outstanding (or [`STOP_DRAIN`] passes), so a run
/// that stops reports exactly what the broker accepted.
async fn drain_acks(
    version: Version,
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    unacked: &mut Unacked,
    stats: &SimStats,
) {
    let deadline = tokio::time::Instant::now() + STOP_DRAIN;
    while unacked.count > 0 {
        match tokio::time::timeout_at(deadline, stream.read_buf(rbuf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
        loop {
            match mqtt::read_packet(version, rbuf) {
                Ok(Some((Incoming::PubAck { accepted }, _))) => unacked.acked(accepted, stats),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}
