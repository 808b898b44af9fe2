//! An online, unsupervised anomaly score for flows: per device class, destination zone
//! and service, a running model of each flow feature (log bytes, log packets, log bytes
//! per packet, log duration) learned from the traffic itself, and a score that says how far a flow lies from it. It catches
//! what the rules have no name for (a camera suddenly sending jumbo bursts, a meter
//! streaming), and only learns from flows it does not find anomalous, so an attacker cannot
//! teach it quickly.
//!
//! The score is the mean of the squared z-scores of the features (a diagonal Mahalanobis
//! distance): about 1 for typical flows, and above `flow.anomaly_score` (default 12) only
//! for flows several features away from anything the class does.

use model::FlowRecord;

/// The number of features per flow.
pub const FEATURES: usize = 4;

/// The features of one flow.
pub fn features(flow: &FlowRecord) -> [f64; FEATURES] {
    let bytes = flow.bytes as f64;
    let packets = flow.packets.max(1) as f64;
    let duration_ms = (flow.end.as_millis() - flow.start.as_millis()).max(0) as f64;
    [
        bytes.ln_1p(),
        packets.ln_1p(),
        (bytes / packets).ln_1p(),
        duration_ms.ln_1p(),
    ]
}

/// A running diagonal Gaussian over the features.
#[derive(Debug, Clone, Default)]
pub struct Model {
    n: f64,
    mean: [f64; FEATURES],
    m2: [f64; FEATURES],
}

impl Model {
    /// How many flows the model has learned from.
    pub fn samples(&self) -> u64 {
        self.n as u64
    }

    /// The anomaly score of `x` (0 before anything was learned).
    pub fn score(&self, x: &[f64; FEATURES]) -> f64 {
        if self.n < 2.0 {
            return 0.0;
        }
        let mut sum = 0.0;
        for ((value, mean), m2) in x.iter().zip(&self.mean).zip(&self.m2) {
            // a floor on the spread, so a feature that never varied (every flow one packet)
            // does not make any change look infinite
            let var = (m2 / (self.n - 1.0)).max(0.25);
            let d = value - mean;
            sum += d * d / var;
        }
        sum / FEATURES as f64
    }

    /// The weight, means and sums of squared deviations (what a snapshot keeps).
    pub fn parts(&self) -> (f64, [f64; FEATURES], [f64; FEATURES]) {
        (self.n, self.mean, self.m2)
    }

    /// A model from its parts; `None` unless they are finite, the weight within its bound
    /// and every sum of squares non-negative.
    pub fn from_parts(n: f64, mean: [f64; FEATURES], m2: [f64; FEATURES]) -> Option<Model> {
        let ok = (0.0..=100_000.0).contains(&n)
            && mean.iter().all(|v| v.is_finite())
            && m2.iter().all(|v| v.is_finite() && *v >= 0.0);
        ok.then_some(Model { n, mean, m2 })
    }

    /// Learns from `x`. The weight saturates so the model keeps adapting slowly.
    pub fn learn(&mut self, x: &[f64; FEATURES]) {
        self.n = (self.n + 1.0).min(100_000.0);
        for (i, value) in x.iter().enumerate() {
            let d = value - self.mean[i];
            self.mean[i] += d / self.n;
            self.m2[i] += d * (value - self.mean[i]);
            if self.n >= 100_000.0 {
                self.m2[i] *= 1.0 - 1e-5;
            }
        }
    }
}
