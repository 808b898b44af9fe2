//! Detection over owned partitions (a NATS bus): the detection workers of all processes
//! share the bus partitions and one more shard, `global`, through the ownership group
//! `detect` (`bus::Bus::join`), so each device's state lives in exactly one worker.
//!
//! Each owned partition has its own engine (`detect::Scope::Local`: the rules whose state
//! stays within one device) reading `obs.*` of that partition in group `detect`; the owner
//! of `global` runs one engine of `detect::Scope::Shared` (the cross-device rules:
//! source-keyed windows, comparisons with neighbours, class models) over every partition in
//! group `detect-global`. Each engine knows every device, every indicator and every learn
//! and mute.
//!
//! Taking a shard over: subscribe first (`Bus::subscribe_partition` takes over the old
//! owner's consumer, so what it had not acknowledged comes at once), then load what the
//! shard's engine last saved it had learned (`detect::Learned`, saved by every owner each
//! `[detect] learned_save_s` and when it leaves), then rebuild the windows by replaying the
//! shard's stored events of the last `rebuild_window`, with what the bus still holds for
//! the shard because some group has not acknowledged it (`Bus::retained`: events the old
//! owner processed that the store writers had not written yet), in time order, then adopt
//! the shard's stored alerts still within the merge window as the engine's open alerts
//! (`Engine::adopt_open_alerts`), so repeats after the move merge into the alert the dead
//! owner raised. Alerts the replay raises have the ids the dead owner's
//! engine gave them; each is stored and published only if the store does not already hold
//! it with at least that count (the dead owner may not have flushed it; the store never
//! lowers a count), and not at all if an adopted alert covers its rule and key; one the
//! store holds that was last seen within a lease plus `REPUBLISH_HORIZON` is published
//! again as stored (the dead owner may have died between storing and publishing). Events
//! redelivered after the takeover that the replay already counted are skipped by their
//! digest (SHA-256 of the event's JSON). Losing a shard drops its engine.
//!
//! What a rebuild cannot bring back: what was learned between the dead owner's last save
//! and the start of the rebuild window, when `learned_save_s` is longer than that window.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bus::{Bus, Message, Ownership, Subscription};
use detect::{Engine, Scope};
use model::{Alert, Event, Timestamp};
use store::{EventQuery, Store};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::directory::Directory;
use crate::platform::{Counters, DetectControl};

/// The shard whose owner runs the cross-device rules.
pub const GLOBAL_SHARD: &str = "global";
/// The ownership group (and the consumer group of the partition engines).
pub const DETECT_GROUP: &str = "detect";
/// The consumer group of the cross-device engine.
pub const GLOBAL_GROUP: &str = "detect-global";
/// How long the digests of replayed events are kept to skip their redelivery.
const REPLAY_MEMORY: Duration = Duration::from_secs(120);
/// Alerts the previous owner stored within a lease plus this before the rebuild, and the
/// replay raised again, are published again (it may have died before publishing them):
/// longer than a rebuild, short enough not to bring back alerts whose incidents analysts
/// have closed since.
const REPUBLISH_HORIZON: Duration = Duration::from_secs(10);
/// At most this many events are replayed into one rebuild.
const MAX_REPLAY: usize = 2_000_000;

/// A member id unique to this process: `<hostname>-<pid>-<random>`.
pub fn member_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    format!("{host}-{}-{}", std::process::id(), hex::encode(random))
}

/// The shards of group `detect`: every partition, then `global`.
pub fn shards(partitions: u32) -> Vec<String> {
    (0..partitions)
        .map(|p| p.to_string())
        .chain([GLOBAL_SHARD.to_owned()])
        .collect()
}

fn digest(event: &Event) -> [u8; 32] {
    use sha2::Digest;
    let json = serde_json::to_vec(event).unwrap_or_default();
    sha2::Sha256::digest(&json).into()
}

/// One owned shard.
struct Slot {
    engine: Engine,
    /// The partition it runs (none: `global`, every device).
    partition: Option<u32>,
    /// Tells this slot's deliveries from those of an earlier reader of the same shard.
    generation: u64,
    /// Digests of the events the rebuild replayed, until `forget_replay_at`.
    replayed: HashSet<[u8; 32]>,
    forget_replay_at: Instant,
    _reader: Reader,
}

/// The task reading a shard's subscription; aborted when dropped.
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A batch from a shard (and the slot generation that read it); `done` lets the reader ask
/// for (and so acknowledge) the next.
type Delivery = ((String, u64), Vec<Arc<Message>>, oneshot::Sender<()>);

/// What the worker needs besides the bus.
pub(crate) struct Worker {
    pub config: Config,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    pub directory: Arc<Directory>,
    pub counters: Arc<Counters>,
    pub status: crate::detect::SharedStatus,
    pub diagnostics: Vec<detect::Diagnostic>,
}

impl Worker {
    /// Runs until the bus closes (then leaves the group, so the others take over at once).
    pub(crate) async fn run(
        self,
        mut ownership: Box<dyn Ownership>,
        mut control: mpsc::UnboundedReceiver<DetectControl>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Delivery>(4);
        let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
        // Indicators arrive from partner feeds only through `control`: kept for new engines.
        let mut indicators: BTreeMap<String, detect::Indicator> = BTreeMap::new();
        let mut alerts = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut saver =
            crate::detect::LearnedSaver::new(self.store.clone(), self.config.detect.learned_save_s);
        let mut owned = ownership.owned();
        self.apply(&owned, &mut slots, &indicators, &tx).await;
        loop {
            tokio::select! {
                delivery = rx.recv() => {
                    let Some(((shard, generation), batch, done)) = delivery else { break };
                    if let Some(slot) = slots.get_mut(&shard).filter(|s| s.generation == generation) {
                        for message in &batch {
                            if let Message::Event(event) = message.as_ref() {
                                if !slot.replayed.is_empty() && slot.replayed.contains(&digest(event)) {
                                    continue;
                                }
                                slot.engine.process(event, &mut alerts);
                            }
                        }
                        // Counted once per event: by its partition's engine, not again by
                        // the cross-device one.
                        if shard != GLOBAL_SHARD {
                            self.counters.detect_events.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        }
                    }
                    if !alerts.is_empty() {
                        crate::platform::flush_alerts(&mut alerts, self.store.as_ref(), self.bus.as_ref(), &self.counters).await;
                    }
                    let _ = done.send(());
                }
                changed = ownership.changed() => {
                    let Some(now_owned) = changed else { break };
                    owned = now_owned;
                    self.apply(&owned, &mut slots, &indicators, &tx).await;
                }
                Some(change) = control.recv() => {
                    if let DetectControl::UpsertIndicators(list) = &change {
                        for i in list {
                            indicators.insert(i.id.clone(), i.clone());
                        }
                    }
                    if let DetectControl::RemoveIndicators(ids) = &change {
                        for id in ids {
                            indicators.remove(id);
                        }
                    }
                    for slot in slots.values_mut() {
                        crate::platform::apply_control(&mut slot.engine, &change);
                    }
                }
                _ = tick.tick() => {
                    let now = Timestamp::now();
                    let instant = Instant::now();
                    for slot in slots.values_mut() {
                        slot.engine.tick(now);
                        if !slot.replayed.is_empty() && instant >= slot.forget_replay_at {
                            slot.replayed = HashSet::new();
                        }
                    }
                    if let Some(slot) = slots.values().next() {
                        *self.status.write() = crate::detect::status_of(&slot.engine, &self.diagnostics);
                    }
                    // A shard owned without an engine (its takeover failed): try again.
                    if owned.iter().any(|s| !slots.contains_key(s)) {
                        self.apply(&owned, &mut slots, &indicators, &tx).await;
                    }
                    saver.tick(|| self.learned(&slots));
                }
            }
        }
        // Leaving in order (a restart, a scale-down): save what was learned, so the next
        // owners start from it, then hand the shards over.
        saver.finish(|| self.learned(&slots)).await;
        drop(slots);
        ownership.leave().await;
    }

    /// What each engine has learned about its own devices, under its store key.
    fn learned(&self, slots: &BTreeMap<String, Slot>) -> Vec<(String, detect::Learned)> {
        let partitions = self.bus.partitions();
        slots
            .iter()
            .map(|(shard, slot)| {
                let learned = slot.engine.learned(|d| {
                    slot.partition
                        .is_none_or(|p| bus::partition_of(d.as_str(), partitions) == p)
                });
                (crate::detect::learned_key(Some(partitions), shard), learned)
            })
            .collect()
    }

    /// Drops the engines of shards no longer owned and builds those newly owned.
    async fn apply(
        &self,
        owned: &BTreeSet<String>,
        slots: &mut BTreeMap<String, Slot>,
        indicators: &BTreeMap<String, detect::Indicator>,
        tx: &mpsc::Sender<Delivery>,
    ) {
        let before: BTreeSet<String> = slots.keys().cloned().collect();
        slots.retain(|shard, _| owned.contains(shard));
        for lost in before.difference(owned) {
            tracing::info!(shard = %lost, "detection shard given up");
        }
        let gained: Vec<String> = owned.difference(&before).cloned().collect();
        if gained.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut fresh = BTreeMap::new();
        for shard in &gained {
            match self.take(shard, indicators, tx).await {
                Ok(slot) => {
                    fresh.insert(shard.clone(), slot);
                }
                // The shard stays owned without an engine until the next tick tries again;
                // its messages wait in the bus.
                Err(e) => {
                    tracing::error!(shard = %shard, error = %e, "failed to take a detection shard over")
                }
            }
        }
        let replayed = self.rebuild(&mut fresh).await;
        tracing::info!(shards = ?gained, replayed, elapsed_ms = started.elapsed().as_millis() as u64, "detection shards taken over");
        slots.extend(fresh);
    }

    /// Subscribes to a shard and builds its engine (without events yet).
    async fn take(
        &self,
        shard: &str,
        indicators: &BTreeMap<String, detect::Indicator>,
        tx: &mpsc::Sender<Delivery>,
    ) -> anyhow::Result<Slot> {
        let partition = if shard == GLOBAL_SHARD {
            None
        } else {
            Some(shard.parse::<u32>()?)
        };
        let sub = match partition {
            None => {
                self.bus
                    .subscribe_partition("obs.*", GLOBAL_GROUP, None)
                    .await?
            }
            Some(p) => {
                self.bus
                    .subscribe_partition("obs.*", DETECT_GROUP, Some(p))
                    .await?
            }
        };
        let (mut engine, _) = crate::detect::build_engine(&self.config);
        engine.set_scope(if shard == GLOBAL_SHARD {
            Scope::Shared
        } else {
            Scope::Local
        });
        crate::detect::restore(&mut engine, self.store.as_ref()).await?;
        for refused in engine.upsert_indicators(indicators.values().cloned().collect()) {
            tracing::warn!(indicator = %refused.id, error = %refused.message, "indicator refused");
        }
        for device in self.directory.snapshot() {
            engine.register_device(device.id.clone(), crate::platform::meta(&device));
            if let Some(location) = device.location {
                engine.register_location(device.id.clone(), location);
            }
        }
        // What the previous owner learned (its last save), before the replay brings the
        // windows and the last values up to date.
        let partitions = self.bus.partitions();
        crate::detect::load_learned(
            &mut engine,
            self.store.as_ref(),
            &crate::detect::learned_key(Some(partitions), shard),
            |d| partition.is_none_or(|p| bus::partition_of(d.as_str(), partitions) == p),
        )
        .await;
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            engine,
            partition,
            generation,
            replayed: HashSet::new(),
            forget_replay_at: Instant::now() + REPLAY_MEMORY,
            _reader: Reader(tokio::spawn(read(
                (shard.to_owned(), generation),
                sub,
                tx.clone(),
            ))),
        })
    }

    /// Replays the stored events of the last window into the new engines, in time order;
    /// stores and announces the alerts the store does not hold yet. Returns how many events
    /// were replayed.
    async fn rebuild(&self, fresh: &mut BTreeMap<String, Slot>) -> usize {
        if fresh.is_empty() {
            return 0;
        }
        let partitions = self.bus.partitions();
        let extra: Vec<u64> = crate::detect::load_rules(&self.config)
            .0
            .thresholds
            .iter()
            .map(|t| t.window_s)
            .collect();
        let window = self.config.detect.rebuild_window_ms(extra);
        let started = Instant::now();
        let since = Timestamp::from_millis(Timestamp::now().as_millis() - window);
        // Newest first from the store, a page at a time.
        let mut events: Vec<Event> = Vec::new();
        let mut before = None;
        loop {
            let page = match self
                .store
                .list_events(&EventQuery {
                    since: Some(since),
                    before,
                    limit: 10_000,
                    ..EventQuery::default()
                })
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "failed to read events to rebuild detection state");
                    break;
                }
            };
            let Some(last) = page.last() else { break };
            before = Some(last.ts);
            let full = page.len() == 10_000;
            events.extend(page);
            if !full || events.len() >= MAX_REPLAY {
                break;
            }
        }
        events.reverse();
        // What the old owner processed but the store's group had not written yet is still
        // held by the bus (interest retention keeps it for the store's consumer): replayed
        // too, once, in time order with the rest.
        let stored = events.len();
        let store_ms = started.elapsed().as_millis() as u64;
        // Each event's digest, once: what skips the bus's copies of stored events here,
        // and their redelivery to the new subscriptions later.
        let mut events: Vec<([u8; 32], Event)> =
            events.into_iter().map(|e| (digest(&e), e)).collect();
        let mut seen: HashSet<[u8; 32]> = events.iter().map(|(d, _)| *d).collect();
        let slices: Vec<Option<u32>> = if fresh.contains_key(GLOBAL_SHARD) {
            vec![None]
        } else {
            fresh.values().map(|slot| slot.partition).collect()
        };
        let mut reads = tokio::task::JoinSet::new();
        for slice in slices {
            let bus = self.bus.clone();
            reads.spawn(async move { bus.retained("obs.*", slice, MAX_REPLAY).await });
        }
        while let Some(read) = reads.join_next().await {
            let read = read.unwrap_or_else(|e| Err(bus::Error::Unavailable(e.to_string())));
            match read {
                Ok(held) => {
                    for message in held {
                        if let Message::Event(event) = message
                            && event.ts >= since
                        {
                            let d = digest(&event);
                            if seen.insert(d) {
                                events.push((d, event));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "failed to read the events the bus still holds to rebuild detection state")
                }
            }
        }
        if events.len() > stored {
            tracing::info!(
                from_bus = events.len() - stored,
                store_ms,
                bus_ms = started.elapsed().as_millis() as u64 - store_ms,
                "replaying events the store had not written yet"
            );
            events.sort_by_key(|(_, e)| e.ts);
        }
        let mut alerts = Vec::new();
        let mut replayed = 0;
        for (d, event) in &events {
            let device = event.device_id.as_ref().map_or("", |d| d.as_str());
            let shard = bus::partition_of(device, partitions).to_string();
            for name in [shard.as_str(), GLOBAL_SHARD] {
                if let Some(slot) = fresh.get_mut(name) {
                    slot.engine.process(event, &mut alerts);
                    slot.replayed.insert(*d);
                    replayed += 1;
                }
            }
        }
        // Alerts the dead owner raised that are still open (within the merge window) become
        // the new engines' open alerts, so repeats after the move merge into them rather
        // than opening a second alert from the shorter history the replay saw.
        let now = Timestamp::now();
        let merge = self.config.detect.merge_window_ms();
        let stored = self
            .store
            .list_alerts(&store::AlertQuery {
                since: Some(Timestamp::from_millis(now.as_millis() - 24 * 3_600_000)),
                limit: 50_000,
                ..store::AlertQuery::default()
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "failed to read open alerts to rebuild detection state");
                Vec::new()
            });
        let mut displaced: HashSet<String> = HashSet::new();
        for (name, slot) in fresh.iter_mut() {
            let mine: Vec<Alert> = stored
                .iter()
                .filter(|a| now.as_millis() - a.last_ts.as_millis() <= merge)
                .filter(|a| {
                    let shared = slot.engine.is_cross_device(&a.rule);
                    if name == GLOBAL_SHARD {
                        shared
                    } else {
                        let device = a.device_id.as_ref().map_or("", |d| d.as_str());
                        !shared && bus::partition_of(device, partitions).to_string() == *name
                    }
                })
                .cloned()
                .collect();
            for id in slot.engine.adopt_open_alerts(mine, now) {
                displaced.insert(id.0);
            }
        }
        // The latest version of each alert, stored and announced only when it adds to what
        // the store holds.
        let mut latest: BTreeMap<String, Alert> = BTreeMap::new();
        for alert in alerts {
            if !displaced.contains(&alert.id.0) {
                latest.insert(alert.id.0.clone(), alert);
            }
        }
        let mut news = Vec::new();
        let mut again = Vec::new();
        let lease_ms = match &self.config.bus {
            crate::config::BusConfig::Nats(nats) => nats.lease_ms as i64,
            _ => 0,
        };
        let recent = now.as_millis() - lease_ms - REPUBLISH_HORIZON.as_millis() as i64;
        for alert in latest.into_values() {
            match self.store.get_alert(&alert.id).await {
                // Stored by the dead owner in its last moments: it may have died between
                // storing and publishing, so it is published (again) for correlation and
                // the gateway, which both take a repeat of what they saw as nothing new.
                Ok(Some(stored)) if stored.count >= alert.count => {
                    if stored.last_ts.as_millis() >= recent {
                        again.push(stored);
                    }
                }
                _ => news.push(alert),
            }
        }
        if !again.is_empty() {
            tracing::info!(
                alerts = again.len(),
                "published again the latest alerts of the previous owner"
            );
            let _ = self
                .bus
                .publish(again.into_iter().map(Message::Alert).collect())
                .await;
        }
        if !news.is_empty() {
            tracing::info!(
                alerts = news.len(),
                "rebuild raised alerts the store did not hold"
            );
            crate::platform::flush_alerts(
                &mut news,
                self.store.as_ref(),
                self.bus.as_ref(),
                &self.counters,
            )
            .await;
        }
        replayed
    }
}

/// Forwards a shard's batches to the worker; asks for the next (acknowledging this one)
/// only once the worker has processed it.
async fn read(shard: (String, u64), mut sub: Box<dyn Subscription>, tx: mpsc::Sender<Delivery>) {
    while let Some(batch) = sub.next_batch(4096).await {
        let (done, processed) = oneshot::channel();
        if tx.send((shard.clone(), batch, done)).await.is_err() {
            return;
        }
        if processed.await.is_err() {
            return;
        }
    }
}
