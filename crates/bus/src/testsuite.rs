//! The conformance suite every [`Bus`] backend must pass.
//!
//! ```ignore
//! bus::testsuite!(async { bus::InProcessBus::new(64) });
//! ```
//!
//! expands to one `#[tokio::test]` per function of this module; the expression is evaluated
//! once per test and must yield a fresh bus with no subscribers. The checks consume
//! concurrently with publishing, so they hold for any queue size (even 1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use model::{
    Alert, AlertId, DeviceId, Event, EventKind, Reading, SecurityEvent, SecurityEventKind,
    Severity, Timestamp, Value,
};

use crate::{Bus, Error, Message, Ownership, Subscription, partition_of};

#[cfg(feature = "nats")]
pub mod server;

/// Expands to one `#[tokio::test]` per conformance check. The argument is an async
/// expression yielding a fresh bus.
#[macro_export]
macro_rules! testsuite {
    // `optional EXPR`: EXPR yields an `Option` of a bus; `None` (a peer that is not
    // installed, and not required) makes every check return at once.
    (optional $bus:expr) => {
        $crate::testsuite!(@names $bus);
    };
    ($bus:expr) => {
        $crate::testsuite!(@names async { ::std::option::Option::Some($bus.await) });
    };
    (@names $bus:expr) => {
        $crate::testsuite!(@tests $bus;
            pattern_matching,
            groups_compete_and_fan_out,
            order_per_publisher,
            slow_consumer_loses_nothing,
            close_drains_then_ends,
            next_batch_respects_max,
            ownership_covers_every_shard_once,
            a_dead_members_shards_are_taken_over,
            a_graceful_leave_hands_over,
            partition_subscriptions_see_their_partition,
        );
    };
    (@tests $bus:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let ::std::option::Option::Some(bus) = $bus.await else {
                    return;
                };
                $crate::testsuite::$name(::std::sync::Arc::new(bus)).await;
            }
        )*
    };
}

/// A guard against hangs: no check waits longer than this for a message.
const PATIENCE: Duration = Duration::from_secs(20);

/// A telemetry message from `device` carrying `seq`.
pub fn telemetry(device: &str, seq: u64) -> Message {
    Message::Event(Event {
        ts: Timestamp::from_millis(seq as i64),
        device_id: Some(DeviceId::new(device).expect("test device id is valid")),
        sector: Some(model::Sector::Water),
        kind: EventKind::Telemetry {
            readings: vec![Reading {
                name: "seq".to_owned(),
                value: Value::Number(seq as f64),
                unit: None,
            }],
        },
    })
}

/// A security message (`obs.security`).
pub fn security(seq: u64) -> Message {
    Message::Event(Event {
        ts: Timestamp::from_millis(seq as i64),
        device_id: None,
        sector: None,
        kind: EventKind::Security(SecurityEvent {
            action: SecurityEventKind::AuthFailure,
            client_id: None,
            username: None,
            peer: None,
            topic: None,
            reason: None,
        }),
    })
}

/// An alert message (`alerts`).
pub fn alert(seq: u64) -> Message {
    Message::Alert(Alert {
        id: AlertId(format!("a-{seq}")),
        rule: "test".to_owned(),
        key: String::new(),
        severity: Severity::Low,
        ts: Timestamp::from_millis(seq as i64),
        last_ts: Timestamp::from_millis(seq as i64),
        count: 1,
        device_id: None,
        zone: None,
        source: None,
        title: "t".to_owned(),
        explanation: "e".to_owned(),
        evidence: vec![],
    })
}

/// `(device, seq)` of a message built by [`telemetry`]; `("", ts)` for others.
pub fn key(message: &Message) -> (String, u64) {
    match message {
        Message::Event(e) => (
            e.device_id
                .as_ref()
                .map(|d| d.as_str().to_owned())
                .unwrap_or_default(),
            e.ts.as_millis() as u64,
        ),
        Message::Alert(a) => (a.id.0.clone(), a.ts.as_millis() as u64),
    }
}

/// Receives exactly `n` messages (fails on a hang or an early end).
pub async fn take(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Arc<Message>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = tokio::time::timeout(PATIENCE, sub.next_batch(n - out.len()))
            .await
            .expect("timed out waiting for messages")
            .expect("subscription ended early");
        assert!(!batch.is_empty(), "next_batch returned an empty batch");
        out.extend(batch);
    }
    out
}

/// Receives everything until the subscription ends (after `close`).
pub async fn drain(mut sub: Box<dyn Subscription>) -> Vec<Arc<Message>> {
    let mut out = Vec::new();
    while let Some(batch) = tokio::time::timeout(PATIENCE, sub.next_batch(100))
        .await
        .expect("timed out waiting for the subscription to end")
    {
        assert!(!batch.is_empty(), "next_batch returned an empty batch");
        out.extend(batch);
    }
    out
}

fn subjects(messages: &[Arc<Message>]) -> Vec<&'static str> {
    messages.iter().map(|m| m.subject()).collect()
}

pub async fn pattern_matching<B: Bus>(bus: Arc<B>) {
    let mut consumers = Vec::new();
    for (pattern, group) in [
        ("obs.*", "star"),
        ("obs.telemetry", "exact"),
        (">", "all"),
        ("obs.>", "obs-rest"),
        ("alerts", "alerts"),
        ("obs.telemetry.x", "none"),
    ] {
        let sub = bus.subscribe(pattern, group).await.unwrap();
        consumers.push(tokio::spawn(drain(sub)));
    }
    assert!(matches!(
        bus.subscribe("obs..x", "bad").await,
        Err(Error::InvalidPattern(_))
    ));
    assert!(matches!(
        bus.subscribe("obs.>.x", "bad").await,
        Err(Error::InvalidPattern(_))
    ));
    bus.publish(vec![telemetry("pump-1", 1), security(2), alert(3)])
        .await
        .unwrap();
    bus.close().await;
    let mut got = Vec::new();
    for consumer in consumers {
        got.push(subjects(&consumer.await.unwrap()));
    }
    let expected: [&[&str]; 6] = [
        &["obs.telemetry", "obs.security"],
        &["obs.telemetry"],
        &["obs.telemetry", "obs.security", "alerts"],
        &["obs.telemetry", "obs.security"],
        &["alerts"],
        &[],
    ];
    assert_eq!(got, expected);
}

pub async fn groups_compete_and_fan_out<B: Bus>(bus: Arc<B>) {
    let g1 = bus.subscribe("obs.*", "g").await.unwrap();
    let g2 = bus.subscribe("obs.*", "g").await.unwrap();
    let h = bus.subscribe("obs.*", "h").await.unwrap();
    let n = 1_000u64;
    let members = [tokio::spawn(drain(g1)), tokio::spawn(drain(g2))];
    let other = tokio::spawn(drain(h));
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        bus.publish(chunk.iter().map(|&i| telemetry("pump-1", i)).collect())
            .await
            .unwrap();
    }
    bus.close().await;
    let mut group_seen = Vec::new();
    for member in members {
        group_seen.extend(member.await.unwrap().iter().map(|m| key(m).1));
    }
    group_seen.sort_unstable();
    assert_eq!(
        group_seen,
        (0..n).collect::<Vec<_>>(),
        "group g must see each message exactly once"
    );
    let other_seen: Vec<u64> = other.await.unwrap().iter().map(|m| key(m).1).collect();
    assert_eq!(other_seen, (0..n).collect::<Vec<_>>());
}

pub async fn order_per_publisher<B: Bus>(bus: Arc<B>) {
    let sub = bus.subscribe(">", "one").await.unwrap();
    let publishers = 4;
    let per = 2_000u64;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            let device = format!("pub-{p}");
            for start in (0..per).step_by(25) {
                let batch = (start..start + 25).map(|i| telemetry(&device, i)).collect();
                bus.publish(batch).await.unwrap();
            }
        }));
    }
    let consumer = tokio::spawn(drain(sub));
    for task in tasks {
        task.await.unwrap();
    }
    bus.close().await;
    let mut per_publisher: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for message in consumer.await.unwrap() {
        let (device, seq) = key(&message);
        per_publisher.entry(device).or_default().push(seq);
    }
    assert_eq!(per_publisher.len(), publishers);
    for (device, seqs) in per_publisher {
        assert_eq!(seqs, (0..per).collect::<Vec<_>>(), "order of {device}");
    }
}

pub async fn slow_consumer_loses_nothing<B: Bus>(bus: Arc<B>) {
    let mut sub = bus.subscribe("obs.telemetry", "slow").await.unwrap();
    let n = 20_000u64;
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let batch = (0..n).map(|i| telemetry("pump-1", i)).collect();
            bus.publish(batch).await.unwrap();
        })
    };
    let mut seen = Vec::with_capacity(n as usize);
    while seen.len() < n as usize {
        let batch = tokio::time::timeout(PATIENCE, sub.next_batch(7))
            .await
            .expect("timed out")
            .expect("ended early");
        assert!((1..=7).contains(&batch.len()));
        seen.extend(batch.iter().map(|m| key(m).1));
        tokio::task::yield_now().await;
    }
    publisher.await.unwrap();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
    bus.close().await;
    assert!(drain(sub).await.is_empty());
}

pub async fn close_drains_then_ends<B: Bus>(bus: Arc<B>) {
    let sub = bus.subscribe("obs.*", "g").await.unwrap();
    // Consume concurrently: the suite must not assume any buffer size.
    let consumer = tokio::spawn(drain(sub));
    bus.publish((0..10).map(|i| telemetry("pump-1", i)).collect())
        .await
        .unwrap();
    bus.close().await;
    assert!(matches!(
        bus.publish(vec![telemetry("pump-1", 99)]).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        bus.subscribe("obs.*", "late").await,
        Err(Error::Closed)
    ));
    let seqs: Vec<u64> = consumer.await.unwrap().iter().map(|m| key(m).1).collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
}

pub async fn next_batch_respects_max<B: Bus>(bus: Arc<B>) {
    let mut sub = bus.subscribe("obs.telemetry", "g").await.unwrap();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.publish((0..10).map(|i| telemetry("pump-1", i)).collect())
                .await
                .unwrap();
        })
    };
    let mut seen = BTreeSet::new();
    while seen.len() < 10 {
        let batch = tokio::time::timeout(PATIENCE, sub.next_batch(3))
            .await
            .expect("timed out")
            .expect("ended early");
        assert!((1..=3).contains(&batch.len()), "{}", batch.len());
        seen.extend(batch.iter().map(|m| key(m).1));
    }
    assert_eq!(seen.len(), 10);
    publisher.await.unwrap();
}

fn shard_names(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// Waits until `members` own every one of `shards` exactly once, each at most its fair
/// share, driving each member's `changed` (which confirms handovers). Returns the shares.
pub async fn settle(members: &mut [Box<dyn Ownership>], shards: usize) -> Vec<BTreeSet<String>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let fair = shards.div_ceil(members.len().max(1));
    loop {
        let shares: Vec<BTreeSet<String>> = members.iter().map(|m| m.owned()).collect();
        let total: usize = shares.iter().map(|s| s.len()).sum();
        let union: BTreeSet<&String> = shares.iter().flatten().collect();
        if total == shards && union.len() == shards && shares.iter().all(|s| s.len() <= fair) {
            return shares;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ownership did not settle: {shares:?}"
        );
        for member in members.iter_mut() {
            let _ = tokio::time::timeout(Duration::from_millis(20), member.changed()).await;
        }
    }
}

pub async fn ownership_covers_every_shard_once<B: Bus>(bus: Arc<B>) {
    let shards = 8;
    let mut members: Vec<Box<dyn Ownership>> = Vec::new();
    for n in 1..=3 {
        let member = bus
            .join("own", &format!("member-{n}"), shard_names(shards))
            .await
            .unwrap();
        assert_eq!(member.member(), format!("member-{n}"));
        members.push(member);
        let shares = settle(&mut members, shards).await;
        assert_eq!(shares.len(), n);
    }
    // Another group shares the same shard names independently.
    let mut other = vec![bus.join("other", "member-1", shard_names(2)).await.unwrap()];
    settle(&mut other, 2).await;
    bus.close().await;
}

pub async fn a_dead_members_shards_are_taken_over<B: Bus>(bus: Arc<B>) {
    let shards = 6;
    let mut members = vec![
        bus.join("own", "alive", shard_names(shards)).await.unwrap(),
        bus.join("own", "doomed", shard_names(shards))
            .await
            .unwrap(),
    ];
    settle(&mut members, shards).await;
    // Dropped without leaving: no more renewals, nothing released.
    let dead = members.pop().unwrap();
    drop(dead);
    let shares = settle(&mut members, shards).await;
    assert_eq!(shares[0].len(), shards);
    bus.close().await;
}

pub async fn a_graceful_leave_hands_over<B: Bus>(bus: Arc<B>) {
    let shards = 6;
    let mut members = vec![
        bus.join("own", "stays", shard_names(shards)).await.unwrap(),
        bus.join("own", "leaves", shard_names(shards))
            .await
            .unwrap(),
    ];
    settle(&mut members, shards).await;
    members.pop().unwrap().leave().await;
    let shares = settle(&mut members, shards).await;
    assert_eq!(shares[0].len(), shards);
    bus.close().await;
}

pub async fn partition_subscriptions_see_their_partition<B: Bus>(bus: Arc<B>) {
    let partitions = bus.partitions();
    assert!(partitions >= 1);
    assert!(matches!(
        bus.subscribe_partition("obs.telemetry", "pp", Some(partitions))
            .await,
        Err(Error::InvalidPattern(_))
    ));
    assert!(matches!(
        bus.subscribe_partition("obs.>", "pp", Some(0)).await,
        Err(Error::InvalidPattern(_))
    ));
    let mut consumers = Vec::new();
    for p in 0..partitions {
        let sub = bus
            .subscribe_partition("obs.telemetry", "pp", Some(p))
            .await
            .unwrap();
        consumers.push(tokio::spawn(drain(sub)));
    }
    let whole = tokio::spawn(drain(
        bus.subscribe_partition("obs.*", "whole", None)
            .await
            .unwrap(),
    ));
    let devices: Vec<String> = (0..40).map(|i| format!("dev-{i}")).collect();
    bus.publish(
        devices
            .iter()
            .enumerate()
            .map(|(i, d)| telemetry(d, i as u64))
            .collect(),
    )
    .await
    .unwrap();
    bus.close().await;
    for (p, consumer) in consumers.into_iter().enumerate() {
        let got: BTreeSet<String> = consumer.await.unwrap().iter().map(|m| key(m).0).collect();
        let want: BTreeSet<String> = devices
            .iter()
            .filter(|d| partition_of(d, partitions) == p as u32)
            .cloned()
            .collect();
        assert_eq!(got, want, "partition {p}");
    }
    assert_eq!(whole.await.unwrap().len(), devices.len());
}
