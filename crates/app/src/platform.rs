//! The running platform: opens the store, starts the bus, the broker, detection, the store
//! writer and the HTTP API, and shuts them down in order.
//!
//! ```text
//! devices --MQTT--> ingest::mqtt::Broker --BusSink--> bus (obs.*) --+--> detect worker --> alerts --> store, bus (alerts)
//! routers --NetFlow/IPFIX--> ingest::flow --BusSink--^              |
//!                                                                   +--> store writer (events)
//! HTTP --> web::router --> store / this Platform (device registry, status)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use bus::{Bus, Message};
use detect::{DeviceMeta, Engine};
use ingest::mqtt::{Broker, BrokerHandle, EventSink, SinkClosed};
use model::{Credential, Device, DeviceId, DeviceStatus, Event, Timestamp};
use store::{DeviceQuery, Store};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{BusConfig, Config, Role, TelemetryStorage};
use crate::directory::Directory;
use crate::{inventory, metrics, tls, token};

/// Live counters the platform keeps beside the broker's.
#[derive(Debug, Default)]
pub struct Counters {
    pub events_published: AtomicU64,
    pub events_stored: AtomicU64,
    pub store_errors: AtomicU64,
    pub alerts_raised: AtomicU64,
    pub alerts_updated: AtomicU64,
    pub detect_events: AtomicU64,
    /// Messages per second over the last sampling interval, as f64 bits.
    pub messages_per_s_bits: AtomicU64,
    /// The store cannot be reached (a write is being retried, or its ping failed).
    pub store_unavailable: AtomicBool,
}

impl Counters {
    pub fn messages_per_s(&self) -> f64 {
        f64::from_bits(self.messages_per_s_bits.load(Ordering::Relaxed))
    }
}

/// A change the detection worker applies between event batches.
#[derive(Debug)]
pub enum DetectControl {
    /// A device was registered or changed.
    Device(DeviceId, DeviceMeta),
    /// Indicators to add or replace (keyed by STIX id).
    UpsertIndicators(Vec<detect::Indicator>),
    /// Indicators to stop matching (revoked or deleted), by STIX id.
    RemoveIndicators(Vec<String>),
    /// Where a device is (citizen reports are matched to sirens by it).
    Location(DeviceId, model::Location),
    /// An analyst marked what `rule` saw for `key` as normal.
    Learn { rule: String, key: String },
    /// An analyst silenced `rule` for `key`.
    Mute {
        rule: String,
        key: String,
        until: Option<Timestamp>,
    },
    /// A learn or mute was lifted.
    Unsuppress { rule: String, key: String },
}

/// What the HTTP layer, the CLI and the metrics exporter share.
pub(crate) struct Inner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub directory: Arc<Directory>,
    /// The embedded broker, in a process with the ingest role (not in bridge mode).
    pub broker: Option<BrokerHandle>,
    /// The consumer of the city's broker, in a process with the ingest role in bridge mode.
    pub bridge: Option<ingest::bridge::BridgeHandle>,
    pub flows: crate::flows::Flows,
    pub counters: Arc<Counters>,
    /// Changes for the detection worker (devices registered, indicators received).
    pub detect_control: mpsc::UnboundedSender<DetectControl>,
    pub started: Instant,
    /// The command gateway: the only path to an actuator.
    pub gateway: Arc<gateway::Gateway>,
    /// What the detection worker last reported about its engine.
    pub detect_status: crate::detect::SharedStatus,
    /// The ingest side's buffer in front of a bus that may go away (NATS, ingest role).
    pub spool: Option<Arc<crate::outage::Spool>>,
}

/// A running platform. Drop is not enough to stop it: call [`Platform::shutdown`].
pub struct Platform {
    inner: Arc<Inner>,
    http_addr: SocketAddr,
    admin_token: String,
    ready: Arc<AtomicBool>,
    shutdown_tx: watch::Sender<bool>,
    http_task: Option<JoinHandle<()>>,
    detect_task: Option<JoinHandle<()>>,
    writer_task: Option<JoinHandle<()>>,
    incidents: Arc<crate::incidents::IncidentService>,
    incident_task: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

/// The broker's output: every decoded event goes onto the bus.
struct BusSink {
    bus: Arc<dyn Bus>,
    counters: Arc<Counters>,
}

#[async_trait]
impl EventSink for BusSink {
    async fn send(&self, events: Vec<Event>) -> Result<(), SinkClosed> {
        let n = events.len() as u64;
        self.bus
            .publish(events.into_iter().map(Message::Event).collect())
            .await
            .map_err(|_| SinkClosed)?;
        self.counters
            .events_published
            .fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

/// The ingest side's event sink: on NATS, a buffer in front of the bus (`[bus]
/// buffer_messages`, see `app::outage`); in process, the bus itself (whose publish waits
/// for room and never fails but at shutdown).
fn ingest_sink(
    config: &Config,
    bus: &Arc<dyn Bus>,
    counters: &Arc<Counters>,
) -> (Arc<dyn EventSink>, Option<Arc<crate::outage::Spool>>) {
    match &config.bus {
        BusConfig::Nats(nats) if config.runs(Role::Ingest) => {
            let spool =
                crate::outage::Spool::new(bus.clone(), counters.clone(), nats.buffer_messages);
            (
                Arc::new(crate::outage::SpoolSink(spool.clone())),
                Some(spool),
            )
        }
        _ => (
            Arc::new(BusSink {
                bus: bus.clone(),
                counters: counters.clone(),
            }),
            None,
        ),
    }
}

/// The bridge's sink: on NATS, [`crate::outage::BridgeSink`] (the city's broker is the
/// buffer, so the bridge acknowledges only what the bus took); in process, the ingest sink.
fn bridge_sink(
    config: &Config,
    bus: &Arc<dyn Bus>,
    counters: &Arc<Counters>,
    sink: &Arc<dyn EventSink>,
) -> Arc<dyn EventSink> {
    match &config.bus {
        BusConfig::Nats(_) => Arc::new(crate::outage::BridgeSink {
            bus: bus.clone(),
            counters: counters.clone(),
        }),
        _ => sink.clone(),
    }
}

/// Opens the store the config names: the embedded file in the data directory, or the
/// PostgreSQL database (password from its file or the process environment).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    match config.store.postgres(&env)? {
        Some(pg) => {
            let url = pg.url.clone();
            let store = store::PgStore::connect(&pg)
                .await
                .with_context(|| format!("failed to open the postgres store {url}"))?;
            Ok(Arc::new(store))
        }
        None => Ok(Arc::new(
            store::EmbeddedStore::open(&config.store_path()).with_context(|| {
                format!("failed to open store {}", config.store_path().display())
            })?,
        )),
    }
}

impl Platform {
    /// Starts everything the config describes and returns once all listeners are bound.
    pub async fn start(config: Config) -> anyhow::Result<Platform> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create data dir {}", config.data_dir.display()))?;
        let store = open_store(&config).await?;
        let admin_token = token::ensure_admin(store.as_ref(), &config.admin_token_path()).await?;
        let signing_key = crate::advisories::signing_key(&config.data_dir)?;
        // The data files the config names, before anything listens.
        let firmware = crate::firmware::load(&config)?;
        let templates = crate::advisories::templates::load(&config.advisories)?;

        let bus: Arc<dyn Bus> = match &config.bus {
            BusConfig::InProcess { capacity } => Arc::new(bus::InProcessBus::new(*capacity)),
            BusConfig::Nats(nats) => Arc::new(
                bus::NatsBus::connect(nats.clone())
                    .await
                    .with_context(|| format!("failed to connect the bus to {}", nats.url))?,
            ),
        };
        let counters = Arc::new(Counters::default());

        // The directory and the engine start from the registry.
        let directory = Arc::new(Directory::new());
        let (mut engine, diagnostics) = crate::detect::build_engine(&config);
        for d in &diagnostics {
            tracing::warn!(problem = %d, "detection rule or zone skipped");
        }
        crate::detect::restore(&mut engine, store.as_ref()).await?;
        let detect_status: crate::detect::SharedStatus = Arc::new(parking_lot::RwLock::new(
            crate::detect::status_of(&engine, &diagnostics),
        ));
        let mut after = None;
        loop {
            let page = store
                .list_devices(&DeviceQuery {
                    after: after.clone(),
                    limit: 10_000,
                    ..DeviceQuery::default()
                })
                .await
                .context("failed to load the device registry")?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for device in page {
                engine.register_device(device.id.clone(), meta(&device));
                if let Some(location) = device.location {
                    engine.register_location(device.id.clone(), location);
                }
                directory.put(device);
            }
        }
        tracing::info!(devices = directory.len(), "device registry loaded");

        // Consumers subscribe before the broker can publish anything; a process subscribes
        // only the groups it runs (a durable group nobody consumes would hold the stream).
        let (ingest, detecting, api_role) = (
            config.runs(Role::Ingest),
            config.runs(Role::Detect),
            config.runs(Role::Api),
        );
        // With NATS, detection workers own partitions (`app::partitions`); in process one
        // worker reads everything.
        let partitioned = matches!(config.bus, BusConfig::Nats(_));
        let mut detect_sub = None;
        let mut detect_ownership = None;
        let mut writer_sub = None;
        let mut gateway_subs = None;
        let mut incidents_sub = None;
        let mut incidents_ownership = None;
        if detecting {
            if partitioned {
                let member = crate::partitions::member_id();
                tracing::info!(member = %member, "joining the detection workers");
                detect_ownership = Some(
                    bus.join(
                        crate::partitions::DETECT_GROUP,
                        &member,
                        crate::partitions::shards(bus.partitions()),
                    )
                    .await?,
                );
            } else {
                detect_sub = Some(bus.subscribe("obs.*", "detect").await?);
            }
            writer_sub = Some(bus.subscribe("obs.*", "store").await?);
            gateway_subs = Some((
                bus.subscribe("obs.state", "gateway").await?,
                bus.subscribe("alerts", "gateway").await?,
            ));
            if partitioned {
                incidents_ownership = Some(
                    bus.join(
                        crate::incidents::INCIDENTS_GROUP,
                        &crate::partitions::member_id(),
                        vec![crate::incidents::INCIDENTS_SHARD.to_owned()],
                    )
                    .await?,
                );
            } else {
                incidents_sub = Some(bus.subscribe("alerts", "incidents").await?);
            }
        }
        let readiness_sub = if api_role {
            Some(bus.subscribe("obs.*", "readiness").await?)
        } else {
            None
        };

        let (sink, spool) = ingest_sink(&config, &bus, &counters);
        let bridge = match &config.ingest.bridge {
            Some(b) if ingest => Some(
                crate::bridge::start(
                    b,
                    store.as_ref(),
                    directory.clone(),
                    bridge_sink(&config, &bus, &counters, &sink),
                )
                .await?,
            ),
            _ => None,
        };
        let broker = if ingest && bridge.is_none() {
            let mqtt = crate::city_pki::prepare(&config.data_dir, &config.ingest.mqtt)
                .context("failed to prepare the MQTT broker's certificates")?;
            let broker = Broker::start(mqtt, directory.clone(), sink.clone())
                .context("failed to start the MQTT broker")?;
            // Rate limits incident response put on devices hold across restarts until they
            // lapse.
            let limits = store
                .list_rate_limits(Timestamp::now())
                .await
                .context("failed to load the devices' rate limits")?;
            if !limits.is_empty() {
                tracing::info!(devices = limits.len(), "rate limits restored");
            }
            broker.restore_rate_limits(
                limits
                    .into_iter()
                    .map(|l| {
                        (
                            l.device_id.to_string(),
                            ingest::mqtt::DeviceLimit {
                                messages_per_s: l.messages_per_s,
                                burst: l.burst,
                                until: l.until,
                            },
                        )
                    })
                    .collect(),
            );
            Some(broker)
        } else {
            None
        };
        let warnings = Arc::new(crate::gateway::IssuedWarnings::default());
        warnings.refresh(store.as_ref()).await?;
        let gateway = crate::gateway::build(
            &config,
            store.clone(),
            bus.clone(),
            directory.clone(),
            broker
                .as_ref()
                .map(BrokerHandle::publisher)
                .or_else(|| bridge.as_ref().map(|b| b.publisher())),
            warnings.clone(),
        )?;
        crate::audit::record_or_log(
            store.as_ref(),
            "citysec",
            "config.loaded",
            None,
            "ok",
            serde_json::json!({
                "config_sha256": config_sha256(&config),
                "gateway_public_key": hex::encode(gateway.public_key()),
            }),
        )
        .await;
        let flow_config = ingest::flow::FlowConfig {
            enabled: config.ingest.flow.enabled && ingest,
            ..config.ingest.flow.clone()
        };
        let flows = crate::flows::Flows::start(&flow_config, directory.clone(), sink)?;

        let (detect_control, control_rx) = mpsc::unbounded_channel();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            config: config.clone(),
            store: store.clone(),
            bus: bus.clone(),
            directory,
            broker,
            bridge,
            flows,
            counters: counters.clone(),
            detect_control,
            started: Instant::now(),
            gateway: gateway.clone(),
            detect_status: detect_status.clone(),
            spool: spool.clone(),
        });

        // The one engine of this process starts from what it had learned before a restart.
        if detect_sub.is_some() && config.detect.learned_save_s > 0 {
            crate::detect::load_learned(
                &mut engine,
                store.as_ref(),
                &crate::detect::learned_key(None, ""),
                |_| true,
            )
            .await;
        }
        let detect_task = match (detect_sub, detect_ownership) {
            (Some(sub), _) => Some(tokio::spawn(detect_worker(
                engine,
                diagnostics,
                detect_status,
                sub,
                control_rx,
                store.clone(),
                bus.clone(),
                counters.clone(),
            ))),
            (None, Some(ownership)) => {
                let worker = crate::partitions::Worker {
                    config: config.clone(),
                    bus: bus.clone(),
                    store: store.clone(),
                    directory: inner.directory.clone(),
                    counters: counters.clone(),
                    status: detect_status,
                    diagnostics,
                };
                drop(engine);
                Some(tokio::spawn(worker.run(ownership, control_rx)))
            }
            (None, None) => None,
        };
        let writer_task = writer_sub.map(|sub| {
            tokio::spawn(store_writer(
                sub,
                store.clone(),
                config.store.telemetry(),
                counters.clone(),
            ))
        });
        let tracker = Arc::new(crate::readiness::Tracker::default());
        let readiness = Arc::new(crate::readiness::ReadinessService {
            store: store.clone(),
            directory: inner.directory.clone(),
            tracker: tracker.clone(),
            conduits: config.detect.conduits.clone(),
            firmware,
            intel: crate::readiness::IntelSources::from_config(&config.taxii),
        });
        let advisories = Arc::new(crate::advisories::AdvisoryService::new(
            store.clone(),
            inner.directory.clone(),
            config.advisories.clone(),
            templates,
            signing_key,
            warnings,
        )?);
        // Incidents, response actions and SIEM forwarding. The gateway and audit ports are
        // where the command gateway and the audit log plug in.
        let forwarder = Arc::new(
            crate::integrations::Forwarder::start(config.integrations.clone())
                .context("failed to start the integrations")?,
        );
        let actuators: Arc<dyn crate::response::ActuatorGateway> =
            Arc::new(crate::gateway::PlaybookGateway(gateway.clone()));
        let auditor: Arc<dyn crate::response::Auditor> = Arc::new(crate::audit::StoreAuditor {
            store: store.clone(),
        });
        let incidents = Arc::new(
            crate::incidents::IncidentService::start(
                config.incidents.clone(),
                config.playbooks.clone(),
                store.clone(),
                crate::response::Executor {
                    inner: inner.clone(),
                    gateway: actuators,
                },
                auditor,
                forwarder.clone(),
            )
            .await
            .context("failed to start the incident service")?
            .share_to(&config.taxii),
        );
        let incident_task = match (incidents_sub, incidents_ownership) {
            (Some(sub), _) => Some(tokio::spawn(incidents.clone().run(sub))),
            (None, Some(ownership)) => Some(tokio::spawn(
                incidents.clone().run_singleton(bus.clone(), ownership),
            )),
            (None, None) => None,
        };
        let mut background = Vec::new();
        if let Some((states, alerts)) = gateway_subs {
            background.push(tokio::spawn(crate::gateway::run(
                gateway.clone(),
                states,
                alerts,
            )));
            background.push(tokio::spawn(retention(
                store.clone(),
                config.store.event_retention_days(),
                shutdown_rx.clone(),
            )));
        }
        if let Some(sub) = readiness_sub {
            background.push(tokio::spawn(crate::readiness::track(sub, tracker)));
            background.push(tokio::spawn(crate::readiness::recorder(
                readiness.clone(),
                Duration::from_secs(config.readiness.interval_s),
                shutdown_rx.clone(),
            )));
            // Partner feeds and TAXII publishing live with the API.
            background.extend(crate::intel::start(inner.clone(), shutdown_rx.clone()));
        }
        if let Some(spool) = spool {
            background.push(tokio::spawn(spool.drain()));
        }
        // Several ingest processes on one broker: one at a time reads each broker's log.
        if partitioned
            && let (Some(bridge), Some(section)) = (&inner.bridge, &config.ingest.bridge)
            && section.security_signals == ingest::bridge::SecuritySignals::MosquittoLog
        {
            let readers = bridge.log_readers();
            background.push(tokio::spawn(crate::bridge::share_log_reading(
                bus.clone(),
                crate::partitions::member_id(),
                move |i, on| readers.set(i, on),
                bridge.brokers(),
                shutdown_rx.clone(),
            )));
        }
        background.push(tokio::spawn(crate::outage::watch_store(
            store.clone(),
            counters.clone(),
            shutdown_rx.clone(),
        )));
        if inner.broker.is_some() {
            background.push(tokio::spawn(rate_sampler(
                inner.clone(),
                shutdown_rx.clone(),
            )));
        }
        if incident_task.is_some() {
            // Confirmed incidents' held-back repeats are shared where incidents are worked.
            background.push(tokio::spawn(
                incidents.clone().flush_shared(shutdown_rx.clone()),
            ));
        }

        // HTTP last: readiness means everything behind it runs.
        let ready = Arc::new(AtomicBool::new(false));
        let api = web::ApiState {
            store: store.clone(),
            platform: Arc::new(ApiPlatform(inner.clone(), incidents.clone())),
            metrics: {
                let inner = inner.clone();
                let forwarder = forwarder.clone();
                Arc::new(move || {
                    let mut text = metrics::render(&inner);
                    text.push_str(&crate::integrations::render_metrics(&forwarder));
                    text
                })
            },
            ready: ready.clone(),
            metrics_public: config.http.metrics_public,
            advisories,
            reports: Arc::new(crate::reports::ReportSink {
                store: store.clone(),
                bus: bus.clone(),
            }),
            report_limits: config.reports.clone(),
            readiness,
        };
        // Without the api role a process still answers its probes and scrapes on the same
        // listener: `/healthz`, `/readyz` and `/metrics` only.
        let mut router = if api_role {
            web::router(api)
        } else {
            web::ops_router(api)
        };
        if config.taxii.enabled && api_role {
            router = router.merge(crate::intel::router(&config.taxii, store.clone()));
        }
        let listener = tokio::net::TcpListener::bind(&config.http.listen)
            .await
            .with_context(|| format!("failed to bind http listener {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let mut http_shutdown = shutdown_rx.clone();
        let graceful = async move {
            let _ = http_shutdown.wait_for(|stop| *stop).await;
        };
        let http_task = match (&config.http.tls_cert, &config.http.tls_key) {
            (Some(cert), Some(key)) => {
                // TAXII partners may identify by client certificate: ask for one then.
                let client_certs = config.taxii.enabled
                    && config
                        .taxii
                        .partners
                        .iter()
                        .any(|p| p.cert_sha256.is_some());
                let tls = tls::TlsListener::new(
                    listener,
                    tls::server_config_with_client_certs(cert, key, client_certs)?,
                )?;
                tokio::spawn(async move {
                    // The peer address reaches handlers (login rate limits per source).
                    let service = router
                        .layer(axum::middleware::from_fn(tls::peer_connect_info))
                        .into_make_service_with_connect_info::<tls::Peer>();
                    if let Err(err) = axum::serve(tls, service)
                        .with_graceful_shutdown(graceful)
                        .await
                    {
                        tracing::error!(error = %err, "https server failed");
                    }
                })
            }
            _ => tokio::spawn(async move {
                let service = router.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(err) = axum::serve(listener, service)
                    .with_graceful_shutdown(graceful)
                    .await
                {
                    tracing::error!(error = %err, "http server failed");
                }
            }),
        };
        ready.store(true, Ordering::Release);
        tracing::info!(roles = ?config.roles, http = %http_addr, mqtt = ?inner.broker.as_ref().map(BrokerHandle::local_addr), "platform started");

        Ok(Platform {
            inner,
            http_addr,
            admin_token,
            ready,
            shutdown_tx,
            http_task: Some(http_task),
            detect_task,
            writer_task,
            incidents,
            incident_task,
            background,
        })
    }

    /// The HTTP listener's address: the API, or only the probes and metrics in a process
    /// without the api role.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `https` when the API listener has a certificate, else `http`.
    pub fn http_scheme(&self) -> &'static str {
        if self.inner.config.http.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The MQTT listener's address.
    ///
    /// # Panics
    /// In a process without the ingest role (a caller's mistake); see
    /// [`Platform::try_mqtt_addr`].
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.try_mqtt_addr()
            .expect("mqtt_addr of a process without the ingest role")
    }

    /// The MQTT listener's address, when this process runs the ingest role.
    pub fn try_mqtt_addr(&self) -> Option<SocketAddr> {
        self.inner.broker.as_ref().map(BrokerHandle::local_addr)
    }

    /// The consumer of the city's broker, when this process runs ingest in bridge mode.
    /// The config this process runs.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn bridge(&self) -> Option<&ingest::bridge::BridgeHandle> {
        self.inner.bridge.as_ref()
    }

    /// The flow collector's UDP address, when `[ingest.flow]` enables it.
    pub fn flow_addr(&self) -> Option<SocketAddr> {
        self.inner.flows.local_addr()
    }

    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.inner
            .broker
            .as_ref()
            .and_then(BrokerHandle::tls_local_addr)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn admin_token_path(&self) -> std::path::PathBuf {
        self.inner.config.admin_token_path()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    /// The incident service (correlation, response actions, SIEM forwarding).
    pub fn incidents(&self) -> Arc<crate::incidents::IncidentService> {
        self.incidents.clone()
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.inner.counters.clone()
    }

    /// The command gateway (see `app::gateway::all_clear`).
    pub fn gateway(&self) -> Arc<gateway::Gateway> {
        self.inner.gateway.clone()
    }

    /// Live figures (the same as `GET /api/v1/status`).
    pub fn status(&self) -> web::Status {
        status(&self.inner)
    }

    /// Registers (or replaces) devices: store, broker directory and detection.
    pub async fn register_devices(&self, devices: Vec<Device>) -> anyhow::Result<()> {
        register(&self.inner, devices)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))
    }

    /// Stops accepting connections, drains the pipeline into the store and closes it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.ready.store(false, Ordering::Release);
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.http_task {
            let _ = task.await;
        }
        // The broker flushes what its sessions already handed to the sink.
        if let Some(broker) = &self.inner.broker {
            broker.shutdown().await;
        }
        if let Some(bridge) = &self.inner.bridge {
            bridge.shutdown().await;
        }
        self.inner.flows.shutdown().await;
        if let Some(spool) = &self.inner.spool {
            crate::outage::flush_at_shutdown(spool).await;
        }
        // Subscribers drain what was published and then end.
        self.inner.bus.close().await;
        for task in [self.detect_task, self.writer_task, self.incident_task]
            .into_iter()
            .flatten()
        {
            let _ = task.await;
        }
        self.incidents
            .forwarder()
            .shutdown(Duration::from_secs(2))
            .await;
        for task in self.background {
            task.abort();
        }
        self.inner
            .store
            .close()
            .await
            .context("failed to close the store")?;
        tracing::info!(
            events_stored = self.inner.counters.events_stored.load(Ordering::Relaxed),
            "platform stopped"
        );
        Ok(())
    }
}

/// SHA-256 of the config as loaded (after interpolation), so the audit log shows when the
/// configuration changed between starts.
fn config_sha256(config: &Config) -> String {
    use sha2::Digest;
    let text = toml::to_string(config).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

pub(crate) fn meta(device: &Device) -> DeviceMeta {
    DeviceMeta {
        class: device.class,
        zone: device.zone.clone(),
        firmware: device.firmware.clone(),
        addresses: device.addresses.clone(),
        quarantined: device.status == DeviceStatus::Quarantined,
        credentials: device
            .credentials
            .iter()
            .map(|c| match c {
                Credential::Secret { hash } => hash.clone(),
                Credential::Certificate { sha256 } => format!("cert:{sha256}"),
            })
            .collect(),
    }
}

pub(crate) fn status(inner: &Inner) -> web::Status {
    let counters = &inner.counters;
    web::Status {
        devices_registered: inner.directory.len() as u64,
        devices_online: inner.broker.as_ref().map_or(0, |b| {
            b.metrics().connections_current.load(Ordering::Relaxed)
        }),
        messages_per_s: counters.messages_per_s(),
        alerts_total: counters.alerts_raised.load(Ordering::Relaxed),
        uptime_s: inner.started.elapsed().as_secs(),
        bus_up: crate::outage::bus_up(inner.bus.as_ref(), inner.spool.as_deref()),
        store_up: !counters.store_unavailable.load(Ordering::Acquire),
        events_buffered: inner.spool.as_ref().map_or(0, |s| s.len() as u64),
        events_refused: crate::outage::refused(inner),
    }
}

async fn register(inner: &Inner, devices: Vec<Device>) -> Result<(), web::PlatformError> {
    for chunk in devices.chunks(5_000) {
        inner.store.upsert_devices(chunk).await?;
    }
    for device in devices {
        let _ = inner
            .detect_control
            .send(DetectControl::Device(device.id.clone(), meta(&device)));
        if let Some(location) = device.location {
            let _ = inner
                .detect_control
                .send(DetectControl::Location(device.id.clone(), location));
        }
        inner.directory.put(device);
    }
    Ok(())
}

/// Runs the detection engine over the event stream. Alerts are stored before they are
/// announced on the bus, so an alert that anyone saw is durable.
#[allow(clippy::too_many_arguments)]
async fn detect_worker(
    mut engine: Engine,
    diagnostics: Vec<detect::Diagnostic>,
    status: crate::detect::SharedStatus,
    mut sub: Box<dyn bus::Subscription>,
    mut control: mpsc::UnboundedReceiver<DetectControl>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    counters: Arc<Counters>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut alerts = Vec::new();
    let key = crate::detect::learned_key(None, "");
    let mut saver = crate::detect::LearnedSaver::new(store.clone(), engine.config().learned_save_s);
    loop {
        tokio::select! {
            batch = sub.next_batch(4096) => {
                let Some(batch) = batch else { break };
                for message in &batch {
                    if let Message::Event(event) = message.as_ref() {
                        engine.process(event, &mut alerts);
                    }
                }
                counters.detect_events.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            Some(change) = control.recv() => apply_control(&mut engine, &change),
            _ = tick.tick() => {
                engine.tick(Timestamp::now());
                *status.write() = crate::detect::status_of(&engine, &diagnostics);
                saver.tick(|| vec![(key.clone(), engine.learned(|_| true))]);
            }
        }
        if !alerts.is_empty() {
            flush_alerts(&mut alerts, store.as_ref(), bus.as_ref(), &counters).await;
        }
    }
    if !alerts.is_empty() {
        flush_alerts(&mut alerts, store.as_ref(), bus.as_ref(), &counters).await;
    }
    // Stopping: what was learned is saved for the next start.
    saver.finish(|| vec![(key, engine.learned(|_| true))]).await;
}

/// Applies one control change to an engine.
pub(crate) fn apply_control(engine: &mut Engine, change: &DetectControl) {
    match change {
        DetectControl::Device(id, meta) => engine.register_device(id.clone(), meta.clone()),
        DetectControl::UpsertIndicators(indicators) => {
            for refused in engine.upsert_indicators(indicators.clone()) {
                tracing::warn!(indicator = %refused.id, error = %refused.message, "indicator refused");
            }
        }
        DetectControl::RemoveIndicators(ids) => engine.remove_indicators(ids),
        DetectControl::Location(id, location) => engine.register_location(id.clone(), *location),
        DetectControl::Learn { rule, key } => engine.learn(rule, key),
        DetectControl::Mute { rule, key, until } => engine.mute(rule, key, *until),
        DetectControl::Unsuppress { rule, key } => engine.unsuppress(rule, key),
    }
}

pub(crate) async fn flush_alerts(
    alerts: &mut Vec<model::Alert>,
    store: &dyn Store,
    bus: &dyn Bus,
    counters: &Counters,
) {
    // Within one batch an alert may have been updated several times: keep the last.
    let mut latest: Vec<model::Alert> = Vec::with_capacity(alerts.len());
    for alert in alerts.drain(..) {
        if alert.count == 1 {
            counters.alerts_raised.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.alerts_updated.fetch_add(1, Ordering::Relaxed);
        }
        match latest.iter_mut().find(|a| a.id == alert.id) {
            Some(slot) => *slot = alert,
            None => latest.push(alert),
        }
    }
    for alert in &latest {
        let device_id = alert.device_id.as_ref().map_or("-", |d| d.as_str());
        if alert.count == 1 {
            tracing::warn!(alert_id = %alert.id, rule = %alert.rule, severity = %alert.severity, device_id, "{}", alert.title);
        } else {
            tracing::debug!(alert_id = %alert.id, rule = %alert.rule, count = alert.count, device_id, "alert repeated");
        }
    }
    retry_store("alerts", counters, || store.upsert_alerts(&latest)).await;
    // Other consumers (the console's live queue) read alerts from the bus; a closed bus at
    // shutdown is fine because the alerts are already stored.
    let _ = bus
        .publish(latest.into_iter().map(Message::Alert).collect())
        .await;
}

/// Runs a store write until it succeeds, backing off up to 5 s between attempts: what the
/// pipeline has taken from the bus is never dropped, and while the store is down the bus
/// fills and pushes back on the broker.
async fn retry_store<'a, F, Fut>(what: &str, counters: &Counters, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = store::Result<()>> + 'a,
{
    let mut delay = Duration::from_millis(50);
    let mut failed = false;
    while let Err(err) = write().await {
        counters.store_errors.fetch_add(1, Ordering::Relaxed);
        if matches!(err, store::Error::Unavailable(_)) {
            counters.store_unavailable.store(true, Ordering::Release);
        }
        // Once per outage, not once per attempt (the store errors counter has them all).
        if !failed {
            tracing::error!(error = %err, what, "failed to write to the store; retrying (nothing is acknowledged on the bus until it succeeds)");
            failed = true;
        } else {
            tracing::debug!(error = %err, what, "store write still failing");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    if failed {
        counters.store_unavailable.store(false, Ordering::Release);
        tracing::info!(what, "store write succeeded after retrying");
    }
}

/// Persists the event stream in batches.
pub(crate) async fn store_writer(
    mut sub: Box<dyn bus::Subscription>,
    store: Arc<dyn Store>,
    telemetry: TelemetryStorage,
    counters: Arc<Counters>,
) {
    let mut events = Vec::with_capacity(8192);
    while let Some(batch) = sub.next_batch(8192).await {
        events.extend(batch.iter().filter_map(|m| match m.as_ref() {
            Message::Event(event) => match (&event.kind, telemetry) {
                (model::EventKind::Telemetry { .. }, TelemetryStorage::None) => None,
                _ => Some(event.clone()),
            },
            Message::Alert(_) => None,
        }));
        if events.is_empty() {
            continue;
        }
        retry_store("events", &counters, || store.append_events(&events)).await;
        counters
            .events_stored
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        events.clear();
    }
}

/// Samples the broker's message counter once a second for the messages/s figure.
async fn rate_sampler(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let Some(broker) = &inner.broker else {
        return;
    };
    let metrics = broker.metrics();
    let mut last = metrics.messages_received.load(Ordering::Relaxed);
    let mut last_at = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = metrics.messages_received.load(Ordering::Relaxed);
        let elapsed = last_at.elapsed().as_secs_f64().max(1e-3);
        let rate = now.saturating_sub(last) as f64 / elapsed;
        inner
            .counters
            .messages_per_s_bits
            .store(rate.to_bits(), Ordering::Relaxed);
        last = now;
        last_at = Instant::now();
    }
}

/// Deletes events older than the retention period, hourly.
async fn retention(store: Arc<dyn Store>, days: u32, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let cutoff = Timestamp::now().saturating_sub_ms(i64::from(days) * 86_400_000);
        match store.prune_events(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned old events"),
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "failed to prune events"),
        }
    }
}

/// The API's view of the platform.
struct ApiPlatform(Arc<Inner>, Arc<crate::incidents::IncidentService>);

#[async_trait]
impl web::Platform for ApiPlatform {
    async fn add_device(
        &self,
        request: web::NewDevice,
    ) -> Result<(Device, Option<String>), web::PlatformError> {
        let inner = &self.0;
        if inner.store.get_device(&request.id).await?.is_some() {
            return Err(web::PlatformError::conflict(format!(
                "device {} already exists",
                request.id
            )));
        }
        let (device, secret) = new_device(request, Timestamp::now())?;
        inner.store.insert_device(&device).await?;
        let _ = inner
            .detect_control
            .send(DetectControl::Device(device.id.clone(), meta(&device)));
        inner.directory.put(device.clone());
        tracing::info!(device_id = %device.id, class = %device.class, "device registered");
        crate::audit::record_or_log(
            inner.store.as_ref(),
            "api",
            "device.registered",
            Some(device.id.as_str()),
            "ok",
            serde_json::json!({"class": device.class, "zone": device.zone}),
        )
        .await;
        Ok((device, secret))
    }

    async fn import_devices(
        &self,
        body: &[u8],
        format: web::ImportFormat,
    ) -> Result<web::ImportReport, web::PlatformError> {
        let format = match format {
            web::ImportFormat::Json => inventory::Format::Json,
            web::ImportFormat::Csv => inventory::Format::Csv,
        };
        let body = body.to_vec();
        let (devices, errors) =
            tokio::task::spawn_blocking(move || inventory::parse(&body, format, Timestamp::now()))
                .await
                .map_err(|e| web::PlatformError::internal(e.to_string()))?
                .map_err(web::PlatformError::invalid)?;
        let imported = devices.len() as u64;
        register(&self.0, devices).await?;
        tracing::info!(
            imported,
            refused = errors.len(),
            "device inventory imported"
        );
        crate::audit::record_or_log(
            self.0.store.as_ref(),
            "api",
            "devices.imported",
            None,
            "ok",
            serde_json::json!({"imported": imported, "refused": errors.len()}),
        )
        .await;
        Ok(web::ImportReport {
            imported,
            errors: errors
                .into_iter()
                .map(|e| web::ImportRowError {
                    row: e.row as u64,
                    message: e.message,
                })
                .collect(),
        })
    }

    async fn revoke_device(
        &self,
        id: &DeviceId,
        reason: &str,
    ) -> Result<Device, web::PlatformError> {
        let inner = &self.0;
        inner
            .store
            .set_device_status(id, DeviceStatus::Revoked)
            .await?;
        let device = inner
            .store
            .get_device(id)
            .await?
            .ok_or_else(|| web::PlatformError::not_found(format!("device {id} not found")))?;
        inner.directory.put(device.clone());
        if let Some(broker) = &inner.broker {
            broker.disconnect_device(id.as_str(), reason);
        }
        tracing::warn!(device_id = %id, reason, "device revoked");
        crate::audit::record_or_log(
            inner.store.as_ref(),
            "api",
            "device.revoked",
            Some(id.as_str()),
            "ok",
            serde_json::json!({"reason": reason}),
        )
        .await;
        Ok(device)
    }

    fn status(&self) -> web::Status {
        status(&self.0)
    }

    fn unavailable(&self) -> Vec<String> {
        crate::outage::unavailable(
            self.0.bus.as_ref(),
            self.0.spool.as_deref(),
            &self.0.counters,
        )
    }

    async fn ingest_flows(&self, body: &[u8]) -> Result<web::FlowReport, web::PlatformError> {
        self.0.flows.ingest_json(body).await
    }

    async fn learn_alert(
        &self,
        alert: &model::Alert,
        actor: &str,
        reason: &str,
    ) -> Result<store::Suppression, web::PlatformError> {
        let s =
            crate::detect::suppression_for(alert, "learned", None, actor, reason, Timestamp::now());
        self.0.store.put_suppression(&s).await?;
        let _ = self.0.detect_control.send(DetectControl::Learn {
            rule: s.rule.clone(),
            key: s.key.clone(),
        });
        tracing::info!(rule = %s.rule, key = %s.key, actor, reason, "alert learned");
        Ok(s)
    }

    async fn mute_alert(
        &self,
        alert: &model::Alert,
        until: Option<Timestamp>,
        actor: &str,
        reason: &str,
    ) -> Result<store::Suppression, web::PlatformError> {
        let s =
            crate::detect::suppression_for(alert, "muted", until, actor, reason, Timestamp::now());
        self.0.store.put_suppression(&s).await?;
        let _ = self.0.detect_control.send(DetectControl::Mute {
            rule: s.rule.clone(),
            key: s.key.clone(),
            until,
        });
        tracing::info!(rule = %s.rule, key = %s.key, actor, reason, "alert muted");
        Ok(s)
    }

    async fn lift_suppression(
        &self,
        rule: &str,
        key: &str,
        actor: &str,
    ) -> Result<(), web::PlatformError> {
        self.0.store.delete_suppression(rule, key).await?;
        let _ = self.0.detect_control.send(DetectControl::Unsuppress {
            rule: rule.to_owned(),
            key: key.to_owned(),
        });
        tracing::info!(rule, key, actor, "suppression lifted");
        Ok(())
    }

    async fn add_indicators(
        &self,
        body: serde_json::Value,
        actor: &str,
    ) -> Result<web::detect::IndicatorReport, web::PlatformError> {
        let (indicators, report) =
            crate::detect::add_indicators(self.0.store.as_ref(), &body, actor, Timestamp::now())
                .await?;
        if !indicators.is_empty() {
            let _ = self
                .0
                .detect_control
                .send(DetectControl::UpsertIndicators(indicators));
        }
        tracing::info!(
            accepted = report.accepted,
            refused = report.refused.len(),
            actor,
            "indicators added"
        );
        Ok(report)
    }

    fn detect_status(&self) -> web::detect::DetectStatus {
        self.0.detect_status.read().clone()
    }

    async fn update_incident(
        &self,
        id: &model::IncidentId,
        request: web::IncidentRequest,
        actor: &web::Principal,
    ) -> Result<web::IncidentUpdate, web::PlatformError> {
        self.1.update(id, request, actor).await
    }

    fn integrations_status(&self) -> Option<serde_json::Value> {
        Some(self.1.forwarder().status())
    }

    fn zone_plan(&self) -> web::console::ZonePlan {
        crate::console::zone_plan(&self.0.config)
    }

    async fn sharing(&self) -> Result<Option<serde_json::Value>, web::PlatformError> {
        let view = crate::console::sharing(&self.0.config, self.0.store.as_ref()).await?;
        Ok(Some(view))
    }

    async fn submit_command(
        &self,
        principal: &web::Principal,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, web::PlatformError> {
        let who = gateway::Principal::new(principal.name.clone(), principal.role.as_str());
        let request: gateway::CommandRequest = serde_json::from_value(request)
            .map_err(|e| web::PlatformError::invalid(format!("invalid command: {e}")))?;
        let command = self
            .0
            .gateway
            .submit(&who, request, Timestamp::now())
            .await
            .map_err(gateway_error)?;
        serde_json::to_value(command).map_err(|e| web::PlatformError::internal(e.to_string()))
    }

    async fn approve_command(
        &self,
        principal: &web::Principal,
        id: &str,
        payload_sha256: &str,
    ) -> Result<serde_json::Value, web::PlatformError> {
        let who = gateway::Principal::new(principal.name.clone(), principal.role.as_str());
        let command = self
            .0
            .gateway
            .approve(&who, id, payload_sha256, Timestamp::now())
            .await
            .map_err(gateway_error)?;
        serde_json::to_value(command).map_err(|e| web::PlatformError::internal(e.to_string()))
    }

    async fn get_command(&self, id: &str) -> Result<Option<serde_json::Value>, web::PlatformError> {
        match self.0.gateway.get(id).await {
            Ok(command) => serde_json::to_value(command)
                .map(Some)
                .map_err(|e| web::PlatformError::internal(e.to_string())),
            Err(gateway::GatewayError::NotFound(_)) => Ok(None),
            Err(err) => Err(gateway_error(err)),
        }
    }
}

fn gateway_error(err: gateway::GatewayError) -> web::PlatformError {
    web::PlatformError::new(err.code(), err.to_string())
}

/// Builds a device from an API request, hashing (or generating) its secret.
pub fn new_device(
    request: web::NewDevice,
    now: Timestamp,
) -> Result<(Device, Option<String>), web::PlatformError> {
    request.validate().map_err(web::PlatformError::invalid)?;
    let sector = request.sector();
    let mut credentials = Vec::new();
    let mut generated = None;
    if request.generate_secret {
        let secret = ingest::credentials::generate_secret();
        credentials.push(Credential::Secret {
            hash: ingest::credentials::hash_secret(&secret),
        });
        generated = Some(secret);
    } else if let Some(secret) = &request.secret {
        credentials.push(Credential::Secret {
            hash: ingest::credentials::hash_password(secret),
        });
    }
    if let Some(fp) = request.cert_sha256 {
        credentials.push(Credential::Certificate { sha256: fp });
    }
    let device = Device {
        id: request.id,
        sector,
        class: request.class,
        zone: request.zone,
        owner: request.owner,
        vendor: request.vendor,
        model: request.model,
        firmware: request.firmware,
        location: request.location,
        addresses: request.addresses,
        credentials,
        status: DeviceStatus::Active,
        created_at: now,
    };
    Ok((device, generated))
}

/// Builds a device from the JSON body `POST /api/v1/devices` takes (used by the CLI's
/// offline mode, so both paths validate alike).
pub fn device_from_request(
    body: serde_json::Value,
    now: Timestamp,
) -> Result<(Device, Option<String>), String> {
    let request: web::NewDevice = serde_json::from_value(body).map_err(|e| e.to_string())?;
    new_device(request, now).map_err(|e| e.message)
}
