//! A city on the real platform for gateway tests and the end-to-end bench: the platform
//! (`app::Platform`, embedded broker, store, detection, gateway) in a temporary data dir,
//! the seed's population registered and run by the simulator (actuators verifying commands
//! with the gateway's key), except the seed's scenario siren, which the caller drives as an
//! MQTT client ([`Siren`]) so it can time what reaches the device.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use model::DeviceId;
use model::topic::Channel;
use sim::attacks::{AttackConfig, AttackKind, plan_cycle};
use sim::mqtt::{self, ConnectOutcome, Incoming, Version};
use sim::population::{Population, SimDevice};
use sim::{SimConfig, SimStats};
use store::AlertQuery;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub struct City {
    pub platform: app::Platform,
    pub population: Arc<Population>,
    /// The scenario's siren (the seed's `uncommanded_siren` target), not run by the sim.
    pub siren: SimDevice,
    pub stats: Arc<SimStats>,
    stop: watch::Sender<bool>,
    run: JoinHandle<Result<()>>,
    _dir: tempfile::TempDir,
}

impl City {
    /// Starts the platform and the simulated city of `devices` devices for `seed`, and waits
    /// until every simulated device is online.
    pub async fn start(seed: u64, devices: usize) -> Result<City> {
        City::start_with(seed, devices, None, |_| {}).await
    }

    /// Like [`City::start`], with the data directory at `data_dir` (default: a temporary
    /// one) and the config changed by `tweak`.
    pub async fn start_with(
        seed: u64,
        devices: usize,
        data_dir: Option<&std::path::Path>,
        tweak: impl FnOnce(&mut app::Config),
    ) -> Result<City> {
        let dir = tempfile::tempdir()?;
        let data = data_dir.map_or_else(|| dir.path().join("data"), std::path::Path::to_owned);
        let env: HashMap<String, String> =
            [("CITYSEC_DATA_DIR".to_owned(), data.display().to_string())].into();
        let mut config = app::Config::default_with_env(&env)?;
        config.http.listen = "127.0.0.1:0".into();
        config.ingest.mqtt.listen = "127.0.0.1:0".into();
        tweak(&mut config);
        let population = Population::generate(devices, seed);
        let siren = plan_cycle(&population, &AttackConfig::default(), seed, 0)
            .into_iter()
            .find_map(|a| match a.kind {
                AttackKind::UncommandedSiren { siren } => Some(siren),
                _ => None,
            })
            .context("the seed's plan has no siren")?;
        let siren = population.get(siren.as_str()).context("siren")?.clone();
        let (registry, errors) = app::inventory::parse(
            population.to_json().as_bytes(),
            app::inventory::Format::Json,
            model::Timestamp::now(),
        )
        .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(errors.is_empty(), "{errors:?}");
        let platform = app::Platform::start(config).await?;
        platform.register_devices(registry).await?;

        let others = Population {
            devices: population
                .devices
                .iter()
                .filter(|d| d.id != siren.id)
                .cloned()
                .collect(),
        };
        let expected = others.len() as u64;
        let mut sim = SimConfig::new(platform.mqtt_addr(), Arc::new(others));
        sim.attacks = AttackConfig::disabled();
        sim.seed = seed;
        sim.gateway_key = Some(platform.gateway().public_key());
        sim.connect_concurrency = 16;
        let stats = Arc::new(SimStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let run = tokio::spawn(sim::run(sim, stats.clone(), stop_rx));
        let deadline = Instant::now() + Duration::from_secs(20);
        while stats.snapshot().devices_connected < expected {
            if Instant::now() > deadline {
                bail!("only {:?} devices connected", stats.snapshot());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(City {
            platform,
            population: Arc::new(population),
            siren,
            stats,
            stop,
            run,
            _dir: dir,
        })
    }

    /// Stops the simulator and the platform.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        self.run.await??;
        self.platform.shutdown().await
    }

    /// Polls the store until the siren's `actuation.uncommanded` alert has at least `count`
    /// occurrences; returns when it saw it.
    pub async fn alert_stored(
        &self,
        device: &DeviceId,
        count: u32,
        timeout: Duration,
    ) -> Result<Instant> {
        alert_stored(self.platform.store(), device.clone(), count, timeout).await
    }
}

/// Polls `store` every millisecond until `device`'s `actuation.uncommanded` alert has at
/// least `count` occurrences; returns when it saw it.
pub async fn alert_stored(
    store: Arc<dyn store::Store>,
    device: DeviceId,
    count: u32,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let alerts = store
            .list_alerts(&AlertQuery {
                device_id: Some(device.clone()),
                rule: Some("actuation.uncommanded".into()),
                limit: 1,
                ..AlertQuery::default()
            })
            .await?;
        if alerts.first().is_some_and(|a| a.count >= count) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("no alert #{count} for {device} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The scenario siren, driven by the test: publishes state, receives and verifies commands.
pub struct Siren {
    stream: TcpStream,
    rbuf: BytesMut,
    prefix: String,
    id: DeviceId,
    pub verifier: verifier::Verifier,
    pkid: u16,
}

impl Siren {
    pub async fn connect(
        addr: std::net::SocketAddr,
        device: &SimDevice,
        key: [u8; 32],
    ) -> Result<Siren> {
        let id = device.id.as_str();
        let (mut stream, mut rbuf, outcome) = mqtt::connect(
            addr,
            Version::V4,
            id,
            id,
            &device.secret,
            60,
            Duration::from_secs(5),
        )
        .await?;
        if let ConnectOutcome::Refused(reason) = outcome {
            bail!("siren refused: {reason}");
        }
        let mut wbuf = BytesMut::new();
        let filter = model::topic::device_topic(device.sector, &device.id, Channel::Cmd);
        mqtt::encode_subscribe(Version::V4, 1, &filter, 1, &mut wbuf)?;
        stream.write_all(&wbuf).await?;
        loop {
            let (packet, _) = mqtt::next_packet(Version::V4, &mut stream, &mut rbuf).await?;
            if packet == Incoming::SubAck {
                break;
            }
        }
        Ok(Siren {
            stream,
            rbuf,
            prefix: model::topic::device_prefix(device.sector, &device.id),
            id: device.id.clone(),
            verifier: verifier::Verifier::new(&key, 0).map_err(|e| anyhow::anyhow!("{e}"))?,
            pkid: 1,
        })
    }

    async fn publish(&mut self, channel: &str, payload: &str) -> Result<()> {
        self.pkid = self.pkid.wrapping_add(1).max(2);
        let mut wbuf = BytesMut::new();
        mqtt::encode_publish(
            Version::V4,
            &[&self.prefix, channel],
            1,
            self.pkid,
            payload.as_bytes(),
            &mut wbuf,
        );
        self.stream.write_all(&wbuf).await?;
        Ok(())
    }

    /// Publishes `n` telemetry readings at once (QoS 1).
    pub async fn telemetry_burst(&mut self, n: usize) -> Result<()> {
        for i in 0..n {
            self.publish(
                "/telemetry",
                &format!(r#"{{"battery_v":{}}}"#, 12.0 + (i % 10) as f64 / 10.0),
            )
            .await?;
        }
        Ok(())
    }

    /// Reports `sounding`; returns when the bytes were written.
    pub async fn report(&mut self, sounding: bool) -> Result<Instant> {
        let ts = model::Timestamp::now().to_rfc3339();
        self.publish(
            "/state",
            &format!(r#"{{"sounding":{sounding},"ts":"{ts}"}}"#),
        )
        .await?;
        Ok(Instant::now())
    }

    /// Waits for the next command on the cmd topic; returns when it arrived and its bytes.
    pub async fn next_command(&mut self, timeout: Duration) -> Result<(Instant, Vec<u8>)> {
        let read = async {
            loop {
                let (packet, pkid) =
                    mqtt::next_packet(Version::V4, &mut self.stream, &mut self.rbuf).await?;
                if let Incoming::Publish { topic, payload } = packet
                    && topic.ends_with("/cmd")
                {
                    let at = Instant::now();
                    if pkid != 0 {
                        let mut wbuf = BytesMut::new();
                        mqtt::encode_puback(pkid, &mut wbuf);
                        self.stream.write_all(&wbuf).await?;
                    }
                    return anyhow::Ok((at, payload));
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .context("no command reached the siren")?
    }

    /// Verifies a command as the device would and acknowledges it (ok or the refusal).
    pub async fn verify_and_ack(
        &mut self,
        payload: &[u8],
    ) -> Result<std::result::Result<serde_json::Value, verifier::Refusal>> {
        let now = u64::try_from(model::Timestamp::now().as_millis()).unwrap_or(0);
        let body: serde_json::Value = serde_json::from_slice(payload)?;
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        let verdict = self
            .verifier
            .check(self.id.as_str(), payload, now)
            .map(|_| body.clone());
        let ack = match &verdict {
            Ok(_) => format!(r#"{{"id":"{id}","ok":true}}"#),
            Err(refusal) => format!(r#"{{"id":"{id}","ok":false,"error":"{refusal}"}}"#),
        };
        self.publish("/ack", &ack).await?;
        Ok(verdict)
    }
}

/// Percentile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
