//! The in-process backend: one bounded tokio channel per (pattern, group), shared by the
//! group's members; publishing waits for room in every matching group.
//!
//! There is one partition, and ownership is decided in memory: the members of a group, in
//! the order they joined, share the shards round-robin; a member that leaves or is dropped
//! hands its shards over at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::{Bus, Error, Message, Ownership, Result, Subscription};

type Receiver = Arc<tokio::sync::Mutex<mpsc::Receiver<Arc<Message>>>>;

/// The in-process bus. Cloning gives another handle to the same bus.
#[derive(Clone)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    state: Mutex<State>,
    groups: Mutex<BTreeMap<String, OwnershipGroup>>,
}

/// Where a member's share is announced (`None` once the bus is closed).
type ShareSender = watch::Sender<Option<BTreeSet<String>>>;

/// An ownership group's members in the order they joined.
#[derive(Default)]
struct OwnershipGroup {
    shards: Vec<String>,
    members: Vec<(u64, String, ShareSender)>,
    next: u64,
}

impl OwnershipGroup {
    /// Shard `i` goes to member `i mod n`.
    fn assign(&self) {
        let n = self.members.len().max(1);
        for (m, (_, _, tx)) in self.members.iter().enumerate() {
            let owned: BTreeSet<String> = self
                .shards
                .iter()
                .enumerate()
                .filter(|(i, _)| i % n == m)
                .map(|(_, s)| s.clone())
                .collect();
            tx.send_if_modified(|current| {
                if current.as_ref() == Some(&owned) {
                    false
                } else {
                    *current = Some(owned);
                    true
                }
            });
        }
    }
}

#[derive(Default)]
struct State {
    closed: bool,
    queues: Vec<Queue>,
}

/// One group's queue for one pattern.
struct Queue {
    pattern: Pattern,
    group: String,
    tx: mpsc::Sender<Arc<Message>>,
    /// Held weakly: when every member has gone, the queue goes too.
    rx: Weak<tokio::sync::Mutex<mpsc::Receiver<Arc<Message>>>>,
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus")
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

impl InProcessBus {
    /// A bus whose groups each buffer at most `capacity_per_group` messages (at least 1).
    pub fn new(capacity_per_group: usize) -> InProcessBus {
        InProcessBus {
            inner: Arc::new(Inner {
                capacity: capacity_per_group.max(1),
                state: Mutex::new(State::default()),
                groups: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is only ever left consistent (no user code runs under the lock), so a
        // poisoned lock is still usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The senders of every live queue whose pattern matches `subject`.
    fn route(state: &State, subject: &str) -> Vec<mpsc::Sender<Arc<Message>>> {
        state
            .queues
            .iter()
            .filter(|q| q.pattern.matches(subject))
            .map(|q| q.tx.clone())
            .collect()
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, messages: Vec<Message>) -> Result<()> {
        // Route each distinct subject once per call (there are only a handful).
        let mut routes: Vec<(&'static str, Vec<mpsc::Sender<Arc<Message>>>)> = Vec::new();
        {
            let mut state = self.state();
            if state.closed {
                return Err(Error::Closed);
            }
            state.queues.retain(|q| q.rx.strong_count() > 0);
            for message in &messages {
                let subject = message.subject();
                if !routes.iter().any(|(s, _)| *s == subject) {
                    routes.push((subject, InProcessBus::route(&state, subject)));
                }
            }
        }
        for message in messages {
            let subject = message.subject();
            let Some((_, senders)) = routes.iter().find(|(s, _)| *s == subject) else {
                continue;
            };
            if senders.is_empty() {
                continue;
            }
            let message = Arc::new(message);
            for tx in senders {
                // An error means every member of that group has gone; nobody to deliver to.
                let _ = tx.send(message.clone()).await;
            }
        }
        Ok(())
    }

    async fn subscribe(&self, pattern: &str, group: &str) -> Result<Box<dyn Subscription>> {
        let parsed = Pattern::parse(pattern)?;
        let mut state = self.state();
        if state.closed {
            return Err(Error::Closed);
        }
        let existing = state
            .queues
            .iter()
            .find(|q| q.pattern.text == pattern && q.group == group)
            .and_then(|q| q.rx.upgrade());
        let rx = match existing {
            Some(rx) => rx,
            None => {
                state
                    .queues
                    .retain(|q| !(q.pattern.text == pattern && q.group == group));
                let (tx, rx) = mpsc::channel(self.inner.capacity);
                let rx: Receiver = Arc::new(tokio::sync::Mutex::new(rx));
                state.queues.push(Queue {
                    pattern: parsed,
                    group: group.to_owned(),
                    tx,
                    rx: Arc::downgrade(&rx),
                });
                rx
            }
        };
        Ok(Box::new(InProcessSubscription { rx }))
    }

    async fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        // Dropping the senders ends each queue once it is drained (and once publishes in
        // flight, which hold their own senders, have finished).
        state.queues.clear();
        drop(state);
        // Ownership handles end too.
        let mut groups = self.inner.groups.lock().unwrap_or_else(|p| p.into_inner());
        for group in groups.values_mut() {
            for (_, _, tx) in &group.members {
                tx.send_replace(None);
            }
        }
    }

    async fn subscribe_partition(
        &self,
        pattern: &str,
        group: &str,
        partition: Option<u32>,
    ) -> Result<Box<dyn Subscription>> {
        if partition.is_some_and(|p| p != 0) || (partition.is_some() && pattern.ends_with('>')) {
            return Err(Error::InvalidPattern(format!(
                "{pattern} in partition {partition:?}"
            )));
        }
        self.subscribe(pattern, group).await
    }

    async fn join(
        &self,
        group: &str,
        member: &str,
        shards: Vec<String>,
    ) -> Result<Box<dyn Ownership>> {
        if self.state().closed {
            return Err(Error::Closed);
        }
        let mut groups = self.inner.groups.lock().unwrap_or_else(|p| p.into_inner());
        let entry = groups.entry(group.to_owned()).or_default();
        entry.shards = shards;
        let id = entry.next;
        entry.next += 1;
        let (tx, mut rx) = watch::channel(None);
        entry.members.push((id, member.to_owned(), tx));
        entry.assign();
        // The first share is what `owned` says, not a change.
        let _ = rx.borrow_and_update();
        Ok(Box::new(InProcessOwnership {
            bus: self.inner.clone(),
            group: group.to_owned(),
            member: member.to_owned(),
            id,
            rx,
        }))
    }
}

struct InProcessOwnership {
    bus: Arc<Inner>,
    group: String,
    member: String,
    id: u64,
    rx: watch::Receiver<Option<BTreeSet<String>>>,
}

impl InProcessOwnership {
    fn remove(&self) {
        let mut groups = self.bus.groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(group) = groups.get_mut(&self.group) {
            group.members.retain(|(id, _, _)| *id != self.id);
            group.assign();
        }
    }
}

impl Drop for InProcessOwnership {
    fn drop(&mut self) {
        self.remove();
    }
}

#[async_trait]
impl Ownership for InProcessOwnership {
    fn member(&self) -> &str {
        &self.member
    }

    fn owned(&self) -> BTreeSet<String> {
        self.rx.borrow().clone().unwrap_or_default()
    }

    async fn changed(&mut self) -> Option<BTreeSet<String>> {
        self.rx.changed().await.ok()?;
        self.rx.borrow_and_update().clone()
    }

    async fn leave(self: Box<Self>) {
        // Dropping removes the member.
    }
}

struct InProcessSubscription {
    rx: Receiver,
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn next_batch(&mut self, max: usize) -> Option<Vec<Arc<Message>>> {
        let max = max.max(1);
        let mut rx = self.rx.lock().await;
        let mut batch = Vec::with_capacity(max.min(4096));
        if rx.recv_many(&mut batch, max).await == 0 {
            return None;
        }
        Some(batch)
    }
}

/// A parsed subject pattern: tokens separated by `.`, where `*` matches one token and a
/// final `>` matches one or more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    One,
    Rest,
}

impl Pattern {
    pub(crate) fn parse(text: &str) -> Result<Pattern> {
        let invalid = || Error::InvalidPattern(text.to_owned());
        let parts: Vec<&str> = text.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            tokens.push(match *part {
                "" => return Err(invalid()),
                "*" => Token::One,
                ">" if i + 1 == parts.len() => Token::Rest,
                p if p.contains(['*', '>']) || p.contains(char::is_whitespace) => {
                    return Err(invalid());
                }
                p => Token::Literal(p.to_owned()),
            });
        }
        Ok(Pattern {
            text: text.to_owned(),
            tokens,
        })
    }

    pub(crate) fn matches(&self, subject: &str) -> bool {
        let mut parts = subject.split('.');
        for token in &self.tokens {
            match token {
                Token::Rest => return parts.next().is_some(),
                Token::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Token::Literal(literal) => {
                    if parts.next() != Some(literal.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}
