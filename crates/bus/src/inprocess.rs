//! The in-process backend: one bounded tokio channel per (pattern, group), shared by the
//! group's members; publishing waits for room in every matching group.

use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::{Bus, Error, Message, Result, Subscription};

type Receiver = Arc<tokio::sync::Mutex<mpsc::Receiver<Arc<Message>>>>;

/// The in-process bus. Cloning gives another handle to the same bus.
#[derive(Clone)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    state: Mutex<State>,
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
