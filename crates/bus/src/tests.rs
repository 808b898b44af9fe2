//! Tests for the in-process bus: the conformance suite, pattern parsing, backpressure and
//! the throughput benchmark.

use std::sync::Arc;

use crate::inprocess::Pattern;
use crate::testsuite::{self, drain, take, telemetry};
use crate::{Bus, InProcessBus, Message};

crate::testsuite!(async { InProcessBus::new(64) });

mod capacity_one {
    // The same suite with the smallest queue, where every publish waits on the consumer.
    crate::testsuite!(async { crate::InProcessBus::new(1) });
}

#[test]
fn patterns() {
    let cases = [
        ("obs.*", "obs.telemetry", true),
        ("obs.*", "obs", false),
        ("obs.*", "obs.a.b", false),
        ("obs.>", "obs.a.b", true),
        ("obs.>", "obs", false),
        (">", "alerts", true),
        (">", "obs.telemetry", true),
        ("alerts", "alerts", true),
        ("alerts", "alerts.x", false),
        ("*.telemetry", "obs.telemetry", true),
        ("*.telemetry", "obs.state", false),
        ("obs.telemetry", "obs.telemetry", true),
    ];
    for (pattern, subject, expected) in cases {
        let parsed = Pattern::parse(pattern).unwrap();
        assert_eq!(parsed.matches(subject), expected, "{pattern} vs {subject}");
    }
    for bad in ["", ".", "obs.", "obs..x", ">.x", "ob*", "a>", "a b"] {
        assert!(Pattern::parse(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn publish_waits_for_room() {
    let bus = InProcessBus::new(4);
    let mut sub = bus.subscribe("obs.telemetry", "g").await.unwrap();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.publish((0..10).map(|i| telemetry("pump-1", i)).collect())
                .await
                .unwrap();
        })
    };
    // On a single-threaded runtime the publisher runs until the queue of 4 is full.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !publisher.is_finished(),
        "publish must wait for the consumer"
    );
    let got = take(&mut sub, 10).await;
    publisher.await.unwrap();
    let seqs: Vec<u64> = got.iter().map(|m| testsuite::key(m).1).collect();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn group_without_members_does_not_block_publishers() {
    let bus = InProcessBus::new(2);
    let gone = bus.subscribe("obs.*", "gone").await.unwrap();
    drop(gone);
    let mut live = bus.subscribe("obs.*", "live").await.unwrap();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.publish((0..100).map(|i| telemetry("pump-1", i)).collect())
                .await
                .unwrap();
        })
    };
    assert_eq!(take(&mut live, 100).await.len(), 100);
    publisher.await.unwrap();
    // A new member of the old group starts a fresh queue.
    let fresh = bus.subscribe("obs.*", "gone").await.unwrap();
    bus.publish(vec![telemetry("pump-1", 7)]).await.unwrap();
    bus.close().await;
    assert_eq!(drain(fresh).await.len(), 1);
}

#[tokio::test]
async fn members_of_a_group_share_one_queue() {
    let bus = InProcessBus::new(16);
    let mut a = bus.subscribe("obs.*", "g").await.unwrap();
    let b = bus.subscribe("obs.*", "g").await.unwrap();
    bus.publish((0..5).map(|i| telemetry("pump-1", i)).collect())
        .await
        .unwrap();
    let first = take(&mut a, 5).await;
    assert_eq!(first.len(), 5);
    bus.close().await;
    assert!(drain(b).await.is_empty(), "b must not see what a took");
}

#[tokio::test]
async fn one_allocation_per_message_across_groups() {
    let bus = InProcessBus::new(16);
    let mut a = bus.subscribe(">", "a").await.unwrap();
    let mut b = bus.subscribe("obs.*", "b").await.unwrap();
    bus.publish(vec![telemetry("pump-1", 1)]).await.unwrap();
    let from_a = take(&mut a, 1).await;
    let from_b = take(&mut b, 1).await;
    assert!(Arc::ptr_eq(&from_a[0], &from_b[0]));
}

/// `RUN_SLOW_BENCHES=1 cargo test -p bus --release benchmark_throughput -- --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_throughput() {
    if std::env::var_os("RUN_SLOW_BENCHES").is_none() {
        eprintln!("skipping benchmark_throughput: set RUN_SLOW_BENCHES=1");
        return;
    }
    for groups in [1usize, 2] {
        let bus = InProcessBus::new(8_192);
        let mut consumers = Vec::new();
        for g in 0..groups {
            let mut sub = bus.subscribe("obs.*", &format!("g{g}")).await.unwrap();
            consumers.push(tokio::spawn(async move {
                let mut n = 0usize;
                while let Some(batch) = sub.next_batch(1_000).await {
                    n += batch.len();
                }
                n
            }));
        }
        let batch: Vec<Message> = (0..1_000).map(|i| telemetry("pump-1", i)).collect();
        let batches = 3_000;
        let start = std::time::Instant::now();
        for _ in 0..batches {
            bus.publish(batch.clone()).await.unwrap();
        }
        bus.close().await;
        let mut delivered = 0;
        for consumer in consumers {
            delivered += consumer.await.unwrap();
        }
        let elapsed = start.elapsed();
        let published = batches * batch.len();
        assert_eq!(delivered, published * groups);
        eprintln!(
            "bus: {published} messages to {groups} group(s) in {elapsed:?} = {:.0} msg/s published, \
             {:.0} deliveries/s (includes cloning each batch)",
            published as f64 / elapsed.as_secs_f64(),
            delivered as f64 / elapsed.as_secs_f64(),
        );
    }
}
