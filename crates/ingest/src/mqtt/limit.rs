//! Per-device publish limits: a token bucket per device that incident response puts on a
//! device (`rate_limit`), applied by [`crate::mqtt::session::Connection`] to every PUBLISH
//! of the device's sessions. Pure: time is an argument, in milliseconds.

use model::Timestamp;

/// A device's limit: refilled at `messages_per_s`, holding at most `burst` messages, until
/// `until` (then it lapses by itself).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceLimit {
    pub messages_per_s: f64,
    pub burst: u32,
    pub until: Timestamp,
}

impl DeviceLimit {
    /// Whether the limit still holds at `now`.
    pub fn active(&self, now: Timestamp) -> bool {
        now < self.until
    }

    /// A session publishing more than this many messages over its limit within one second
    /// is disconnected (MQTT 5: reason 0x96, message rate too high).
    pub fn flood_threshold(&self) -> u64 {
        // Ten times the allowance of a second, plus the burst.
        (self.messages_per_s.max(1.0) * 10.0) as u64 + u64::from(self.burst)
    }
}

impl std::fmt::Display for DeviceLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} msg/s, burst {}, until {}",
            self.messages_per_s,
            self.burst,
            self.until.to_rfc3339()
        )
    }
}

/// What the bucket says about one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Within the limit (one token taken).
    Allowed,
    /// Over the limit: drop it.
    Dropped,
    /// The limit lapsed at this publish; it is allowed and the bucket is gone.
    Lapsed,
}

/// One session's bucket for its device's limit.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub limit: DeviceLimit,
    tokens: f64,
    last_ms: i64,
    /// Drops within the current one-second window (for the flood rule).
    window_start_ms: i64,
    window_drops: u64,
}

impl Bucket {
    /// A full bucket (a limit applied at once allows its burst).
    pub fn new(limit: DeviceLimit, now: Timestamp) -> Bucket {
        Bucket {
            limit,
            tokens: f64::from(limit.burst),
            last_ms: now.as_millis(),
            window_start_ms: now.as_millis(),
            window_drops: 0,
        }
    }

    /// Takes a token for one publish at `now`.
    pub fn take(&mut self, now: Timestamp) -> Take {
        if !self.limit.active(now) {
            return Take::Lapsed;
        }
        let now_ms = now.as_millis();
        // A clock that steps back refills nothing and takes nothing away.
        let elapsed_ms = now_ms.saturating_sub(self.last_ms).max(0);
        self.last_ms = self.last_ms.max(now_ms);
        let burst = f64::from(self.limit.burst);
        self.tokens =
            (self.tokens + elapsed_ms as f64 * self.limit.messages_per_s / 1000.0).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Take::Allowed
        } else {
            if now_ms.saturating_sub(self.window_start_ms) >= 1000 {
                self.window_start_ms = now_ms;
                self.window_drops = 0;
            }
            self.window_drops += 1;
            Take::Dropped
        }
    }

    /// Whether the drops within the current second exceed [`DeviceLimit::flood_threshold`].
    pub fn flooding(&self) -> bool {
        self.window_drops > self.limit.flood_threshold()
    }
}
