//! A sliding count window with bounded memory: it keeps at most `cap` timestamps, which
//! is all a threshold rule needs to know whether `cap` events fell in the window.

use std::collections::VecDeque;

use model::Timestamp;

#[derive(Debug, Clone)]
pub(crate) struct Window {
    times: VecDeque<i64>,
    cap: usize,
}

impl Window {
    pub(crate) fn new(cap: usize) -> Window {
        Window {
            times: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Records an event at `ts` and returns how many recorded events fall within
    /// `window_ms` of it (at most `cap`).
    pub(crate) fn push(&mut self, ts: Timestamp, window_ms: i64) -> usize {
        let now = ts.as_millis();
        while self.times.front().is_some_and(|&t| now - t > window_ms) {
            self.times.pop_front();
        }
        if self.times.len() == self.cap {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len()
    }

    pub(crate) fn is_stale(&self, now: Timestamp, window_ms: i64) -> bool {
        self.times
            .back()
            .is_none_or(|&t| now.as_millis() - t > window_ms)
    }
}
