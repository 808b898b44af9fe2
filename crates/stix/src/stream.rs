//! Streaming evaluation: many compiled patterns against a stream of observations, with
//! bounded, time-windowed state. A detection engine implements [`ObservableView`] for its
//! own events and feeds them to a [`StreamMatcher`] in timestamp order.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use crate::matcher::{CompiledPattern, Observation};

/// How an event looks as STIX: a time range and cyber-observable objects.
///
/// `objects` returns STIX 2.1 SCOs (JSON objects with `type` and `id`; references between
/// them use those ids). The matcher evaluates comparisons against these objects.
pub trait ObservableView {
    /// A stable identifier for the event (reported in matches).
    fn observation_id(&self) -> String;
    /// `first_observed`, microseconds since the Unix epoch.
    fn first_observed_us(&self) -> i64;
    /// `last_observed`, microseconds since the Unix epoch (defaults to `first_observed`).
    fn last_observed_us(&self) -> i64 {
        self.first_observed_us()
    }
    /// `number_observed` (defaults to 1).
    fn number_observed(&self) -> u32 {
        1
    }
    /// The observable objects of the event.
    fn objects(&self) -> Vec<Value>;
}

impl Observation {
    /// Prepares an event once for evaluation against any number of patterns.
    pub fn from_view(view: &dyn ObservableView) -> Observation {
        Observation::new(
            view.observation_id(),
            view.first_observed_us(),
            view.last_observed_us(),
            view.number_observed(),
            view.objects().into_iter().map(Arc::new).collect(),
        )
    }
}

/// Most candidate bindings examined for one pattern on one event.
pub const MAX_BINDINGS_SCANNED: usize = 100_000;

/// Limits of the per-pattern state.
#[derive(Debug, Clone, Copy)]
pub struct StreamConfig {
    /// Observations older than this (by `last_observed`, relative to the newest
    /// `first_observed` seen) are dropped. Patterns with a top-level `WITHIN` use the
    /// smaller of this and their own window.
    pub window_us: i64,
    /// At most this many relevant observations are kept per pattern (oldest dropped first).
    pub max_observations_per_pattern: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            window_us: 3_600 * 1_000_000,
            max_observations_per_pattern: 1_024,
        }
    }
}

/// A pattern that matched, with the observation ids of the binding found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMatch {
    /// index of the pattern in the order given to [`StreamMatcher::new`]
    pub pattern: usize,
    /// observation ids bound to the pattern's observation expressions
    pub observation_ids: Vec<String>,
}

struct Slot {
    pattern: CompiledPattern,
    window_us: i64,
    buf: VecDeque<Arc<Observation>>,
}

/// Evaluates many patterns on a stream. Single-observation patterns are decided per event
/// with no state; the others keep, per pattern, only the observations that satisfy at
/// least one of their `[...]` parts, within the window.
pub struct StreamMatcher {
    slots: Vec<Slot>,
    config: StreamConfig,
    now_us: i64,
    dropped: u64,
}

impl StreamMatcher {
    /// Creates a stream matcher over compiled patterns.
    pub fn new(patterns: Vec<CompiledPattern>, config: StreamConfig) -> StreamMatcher {
        let slots = patterns
            .into_iter()
            .map(|p| {
                let window_us = p
                    .within_us()
                    .map_or(config.window_us, |w| w.min(config.window_us));
                Slot {
                    pattern: p,
                    window_us,
                    buf: VecDeque::new(),
                }
            })
            .collect();
        StreamMatcher {
            slots,
            config,
            now_us: i64::MIN,
            dropped: 0,
        }
    }

    /// Number of observations currently held across all patterns.
    pub fn held(&self) -> usize {
        self.slots.iter().map(|s| s.buf.len()).sum()
    }

    /// Observations dropped because a pattern's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Feeds one event; returns the patterns that now match with a binding that includes it.
    pub fn push_view(&mut self, view: &dyn ObservableView) -> Vec<StreamMatch> {
        self.push(Observation::from_view(view))
    }

    /// Feeds one prepared observation.
    pub fn push(&mut self, obs: Observation) -> Vec<StreamMatch> {
        let obs = Arc::new(obs);
        self.now_us = self.now_us.max(obs.first_observed_us());
        let now = self.now_us;
        let mut out = Vec::new();
        for (pi, slot) in self.slots.iter_mut().enumerate() {
            if slot.pattern.is_single_observation() {
                if slot.pattern.matches_one(&obs) {
                    out.push(StreamMatch {
                        pattern: pi,
                        observation_ids: vec![obs.id().to_owned()],
                    });
                }
                continue;
            }
            while slot
                .buf
                .front()
                .is_some_and(|o| o.last_observed_us().saturating_add(slot.window_us) < now)
            {
                slot.buf.pop_front();
            }
            if !slot.pattern.any_leaf_matches(&obs) {
                continue;
            }
            if slot.buf.len() >= self.config.max_observations_per_pattern {
                slot.buf.pop_front();
                self.dropped += 1;
            }
            slot.buf.push_back(Arc::clone(&obs));
            let held: Vec<&Observation> = slot.buf.iter().map(|o| &**o).collect();
            let newest = held.len() - 1;
            // a binding that does not use the new observation was reported before
            let found = slot
                .pattern
                .binding_with(&held, newest, MAX_BINDINGS_SCANNED);
            if let Some(b) = found {
                out.push(StreamMatch {
                    pattern: pi,
                    observation_ids: b.iter().map(|&i| held[i].id().to_owned()).collect(),
                });
            }
        }
        out
    }
}
