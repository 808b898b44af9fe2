//! Shard ownership on NATS: leases in a JetStream key-value bucket (feature `nats`).
//!
//! The bucket `<stream>_leases` keeps one entry per key and expires every entry
//! [`NatsConfig::lease_ms`] after its last write (the bucket's `max_age`). A member of group
//! `g` writes `g.members.<member>` every tick (a fifth of the lease) so every member knows
//! how many are alive, and holds shard `s` by the entry `g.shards.<s>`, whose value is its
//! member id: `create` takes a free shard (it fails if the entry exists), a revision-checked
//! `update` renews it, and a revision-checked `delete` gives it up.
//!
//! **Why two members never own one shard at once.** A member notes the instant `t` just
//! before it sends a `create` or `update`; the server writes the entry at some instant
//! `>= t`, so the entry cannot expire, and nobody else can `create` it, before `t + lease`.
//! The member counts the shard as its own only until `t + lease - margin` (margin two
//! fifths of the lease; renewals every tick, a fifth, so two renewals may fail in a row
//! without a loss). Every call to the server is bounded by a tick and the member checks its
//! leases before each call, so even a member whose calls hang reports the loss by
//! `t + lease - margin + tick = t + 4/5 lease`: a fifth of the lease before anyone else can
//! take the shard, which is the time its consumer has to stop processing it. An update that
//! answers late is not trusted beyond its `t`. The argument needs only that the member's and
//! the server's clocks run at the same rate over a few seconds (monotonic clocks; expiry on
//! the server may come late, never early).
//!
//! Balance: every tick a member renews all its shards at once, then counts the live member
//! entries `m` in the latest listing of the bucket (a task of its own lists it every tick:
//! a listing is an ordered consumer and can take longer than a tick under load) and aims at
//! `ceil(shards / m)`; above it, it gives up the surplus (reported at once, deleted when its
//! consumer confirms by asking for the next change), below it, it creates free shards
//! (trying them from an offset that depends on its id, so members do not all race for the
//! same one). A dead member's shards are free once their entries expire, so a partition
//! moves about `lease + tick + a listing` after its owner's last renewal (plus the new
//! owner's takeover of the consumer, see `subscribe_partition`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Error, Ownership, Result};

/// Characters a key-value key may hold; anything else in a member or shard name becomes `_`.
fn key_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '=' => c,
            _ => '_',
        })
        .collect()
}

/// Opens (or creates) the lease bucket of a stream.
pub(crate) async fn bucket(
    js: &jetstream::Context,
    stream: &str,
    lease: Duration,
) -> Result<kv::Store> {
    let name = format!("{stream}_leases");
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    // The bucket's stream is created as the key-value layer lays it out (one entry per key,
    // rollups, no deletes of history), directly: async-nats's `create_key_value` cannot
    // read the answer of the NATS 2.9 servers Debian ships.
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: lease,
        storage: jetstream::stream::StorageType::Memory,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        duplicate_window: lease.min(Duration::from_secs(120)),
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Unavailable(format!("failed to create lease bucket {name}: {e}")))?;
    js.get_key_value(&name)
        .await
        .map_err(|e| Error::Unavailable(format!("failed to open lease bucket {name}: {e}")))
}

/// What the renewing task holds.
struct Held {
    revision: u64,
    /// Ours until then at the latest (see the module docs).
    until: Instant,
    /// Given up for rebalancing, at this change version: deleted once confirmed.
    releasing: Option<u64>,
}

struct Task {
    kv: kv::Store,
    group: String,
    member: String,
    member_key: String,
    shards: Vec<String>,
    lease: Duration,
    tick: Duration,
    held: BTreeMap<String, Held>,
    /// What the handle sees: (version, owned set).
    tx: watch::Sender<(u64, BTreeSet<String>)>,
    confirmed: watch::Receiver<u64>,
    version: u64,
    /// The bucket's keys as last listed.
    keys: watch::Receiver<Option<BTreeSet<String>>>,
    _lister: Lister,
}

/// The task listing the bucket's keys; aborted with the member's task.
struct Lister(tokio::task::JoinHandle<()>);

impl Drop for Lister {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lists the bucket's keys every `tick` (each listing bounded by `lease`) into `tx`.
async fn list(
    kv: kv::Store,
    tick: Duration,
    lease: Duration,
    tx: watch::Sender<Option<BTreeSet<String>>>,
) {
    loop {
        let listing = async {
            let keys = kv.keys().await?;
            Ok::<_, kv::HistoryError>(
                keys.filter_map(|k| async { k.ok() })
                    .collect::<BTreeSet<String>>()
                    .await,
            )
        };
        if let Ok(Ok(keys)) = tokio::time::timeout(lease, listing).await {
            tx.send_replace(Some(keys));
        }
        tokio::time::sleep(tick).await;
    }
}

impl Task {
    fn shard_key(&self, shard: &str) -> String {
        format!("{}.shards.{}", self.group, key_safe(shard))
    }

    fn margin(&self) -> Duration {
        self.lease * 2 / 5
    }

    /// Drops every shard whose lease may have lapsed and reports it at once.
    fn expire_now(&mut self) {
        let now = Instant::now();
        let before = self.held.len();
        self.held.retain(|shard, h| {
            let keep = h.until > now;
            if !keep {
                tracing::warn!(shard, "lease not renewed in time; shard lost");
            }
            keep
        });
        if self.held.len() != before {
            self.publish();
        }
    }

    async fn bounded<T, E>(
        &self,
        call: impl std::future::Future<Output = std::result::Result<T, E>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.tick, call).await {
            Ok(Ok(value)) => Some(value),
            _ => None,
        }
    }

    fn publish(&mut self) {
        let owned: BTreeSet<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.releasing.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        if self.tx.borrow().1 != owned {
            self.version += 1;
            let version = self.version;
            self.tx.send_replace((version, owned));
        }
    }

    /// One round: heartbeat, renew, lose what expired, release what was confirmed, balance.
    async fn round(&mut self) {
        let _ = self
            .bounded(self.kv.put(&self.member_key, self.member.clone().into()))
            .await;
        // Renew every held shard at once (one round trip, however many shards), each call
        // bounded by a tick.
        self.expire_now();
        let sent = Instant::now();
        let renewals: Vec<(String, u64)> = self
            .held
            .iter()
            .map(|(s, h)| (s.clone(), h.revision))
            .collect();
        let results = futures_util::future::join_all(renewals.iter().map(|(shard, revision)| {
            let key = self.shard_key(shard);
            let kv = self.kv.clone();
            let member = self.member.clone();
            let tick = self.tick;
            async move {
                tokio::time::timeout(tick, kv.update(&key, member.into(), *revision))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
            }
        }))
        .await;
        let margin = self.margin();
        for ((shard, _), renewed) in renewals.iter().zip(results) {
            // Refused (someone else's revision) or unanswered: ours until `until`.
            if let (Some(h), Some(revision)) = (self.held.get_mut(shard), renewed) {
                h.revision = revision;
                h.until = sent + self.lease - margin;
            }
        }
        self.expire_now();
        // Release what the consumer confirmed it stopped.
        let confirmed = *self.confirmed.borrow();
        let releasable: Vec<(String, u64)> = self
            .held
            .iter()
            .filter(|(_, h)| h.releasing.is_some_and(|v| v <= confirmed))
            .map(|(s, h)| (s.clone(), h.revision))
            .collect();
        for (shard, revision) in releasable {
            let key = self.shard_key(&shard);
            let _ = self
                .bounded(self.kv.delete_expect_revision(&key, Some(revision)))
                .await;
            self.held.remove(&shard);
        }
        self.balance().await;
        self.publish();
    }

    async fn balance(&mut self) {
        // The latest listing of the bucket (taken by `list`, beside this task, since a
        // listing is an ordered consumer and may take longer than a tick under load).
        let Some(keys) = self.keys.borrow().clone() else {
            return;
        };
        let members_prefix = format!("{}.members.", self.group);
        let members = keys
            .iter()
            .filter(|k| k.starts_with(&members_prefix))
            .count()
            .max(1);
        let target = self.shards.len().div_ceil(members);
        let kept = self.held.values().filter(|h| h.releasing.is_none()).count();
        if kept > target {
            // Give up the surplus: the last shards in order, reported now, deleted once the
            // consumer confirms.
            let surplus: Vec<String> = self
                .held
                .iter()
                .filter(|(_, h)| h.releasing.is_none())
                .map(|(s, _)| s.clone())
                .rev()
                .take(kept - target)
                .collect();
            let version = self.version + 1;
            for shard in surplus {
                if let Some(h) = self.held.get_mut(&shard) {
                    h.releasing = Some(version);
                }
            }
            return;
        }
        let mut want = target - kept;
        if want == 0 {
            return;
        }
        let n = self.shards.len();
        let offset = (crate::partition_of(&self.member, n as u32) as usize) % n.max(1);
        for i in 0..n {
            if want == 0 {
                break;
            }
            let shard = self.shards[(offset + i) % n].clone();
            let key = self.shard_key(&shard);
            if self.held.contains_key(&shard) || keys.contains(&key) {
                continue;
            }
            self.expire_now();
            let sent = Instant::now();
            if let Some(revision) = self
                .bounded(self.kv.create(&key, self.member.clone().into()))
                .await
            {
                self.held.insert(
                    shard,
                    Held {
                        revision,
                        until: sent + self.lease - self.margin(),
                        releasing: None,
                    },
                );
                want -= 1;
            }
        }
    }

    /// Deletes every entry this member holds (a graceful leave).
    async fn leave(&mut self) {
        let held: Vec<(String, u64)> = self
            .held
            .iter()
            .map(|(s, h)| (s.clone(), h.revision))
            .collect();
        for (shard, revision) in held {
            let key = self.shard_key(&shard);
            let _ = self
                .bounded(self.kv.delete_expect_revision(&key, Some(revision)))
                .await;
        }
        self.held.clear();
        let _ = self.bounded(self.kv.delete(&self.member_key)).await;
        self.tx.send_replace((self.version + 1, BTreeSet::new()));
    }
}

/// The handle of a member (see [`crate::Ownership`]).
pub(crate) struct NatsOwnership {
    member: String,
    rx: watch::Receiver<(u64, BTreeSet<String>)>,
    confirm: watch::Sender<u64>,
    /// The version `changed` returned last (what the consumer has acted upon when it asks
    /// again).
    seen: u64,
    leave: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for NatsOwnership {
    fn drop(&mut self) {
        // Without `leave` this is a crash: stop renewing, release nothing.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub(crate) async fn join(
    kv: kv::Store,
    group: &str,
    member: &str,
    shards: Vec<String>,
    lease: Duration,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<Box<dyn Ownership>> {
    if group.is_empty()
        || group.contains(|c: char| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_'))
    {
        return Err(Error::InvalidPattern(group.to_owned()));
    }
    let (tx, rx) = watch::channel((0, BTreeSet::new()));
    let (confirm, confirmed) = watch::channel(0);
    let tick = (lease / 5).max(Duration::from_millis(10));
    let (keys_tx, mut keys) = watch::channel(None);
    let lister = Lister(tokio::spawn(list(kv.clone(), tick, lease, keys_tx)));
    // The member entry first, so the others count this member from their next listing.
    kv.put(
        format!("{group}.members.{}", key_safe(member)),
        member.to_owned().into(),
    )
    .await
    .map_err(|e| Error::Unavailable(format!("failed to join {group}: {e}")))?;
    // The first share needs a listing that includes this member.
    let _ = tokio::time::timeout(lease, async {
        loop {
            if keys.changed().await.is_err() {
                return;
            }
            let ok = keys
                .borrow()
                .as_ref()
                .is_some_and(|k| k.contains(&format!("{group}.members.{}", key_safe(member))));
            if ok {
                return;
            }
        }
    })
    .await;
    let mut task = Task {
        kv,
        group: group.to_owned(),
        member: member.to_owned(),
        member_key: format!("{group}.members.{}", key_safe(member)),
        shards,
        lease,
        tick,
        held: BTreeMap::new(),
        tx,
        confirmed,
        version: 0,
        keys,
        _lister: lister,
    };
    task.round().await;
    let (leave_tx, mut leave_rx) = tokio::sync::oneshot::channel::<()>();
    let closed_flag = closed.clone();
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(task.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if closed_flag.load(std::sync::atomic::Ordering::Acquire) {
                        task.leave().await;
                        return;
                    }
                    task.round().await;
                }
                _ = &mut leave_rx => {
                    task.leave().await;
                    return;
                }
            }
        }
    });
    let mut rx = rx;
    let seen = rx.borrow_and_update().0;
    Ok(Box::new(NatsOwnership {
        member: member.to_owned(),
        rx,
        confirm,
        seen,
        leave: Some(leave_tx),
        task: Some(handle),
        closed,
    }))
}

#[async_trait]
impl Ownership for NatsOwnership {
    fn member(&self) -> &str {
        &self.member
    }

    fn owned(&self) -> BTreeSet<String> {
        self.rx.borrow().1.clone()
    }

    async fn changed(&mut self) -> Option<BTreeSet<String>> {
        // Confirms the change seen last: its released shards may go now.
        self.confirm.send_replace(self.seen);
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.rx.changed().await.ok()?;
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let (version, owned) = self.rx.borrow_and_update().clone();
        self.seen = version;
        Some(owned)
    }

    async fn leave(mut self: Box<Self>) {
        if let Some(leave) = self.leave.take() {
            let _ = leave.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
