//! Threat indicators (STIX 2.1 patterns shared by partners or written by the city's analysts),
//! compiled once and matched against the live event stream.

use model::Timestamp;

/// One indicator the engine matches live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indicator {
    /// The STIX id (`indicator--<uuid>`), the key for updates and removals.
    pub id: String,
    /// The STIX pattern, e.g. `[ipv4-addr:value = '203.0.113.5']`.
    pub pattern: String,
    /// A name for the analyst (the indicator's `name`, or its id).
    pub name: String,
    /// Who shared it: a partner's name, or `local`.
    pub source: String,
    /// After this the indicator no longer matches (`valid_until`).
    pub valid_until: Option<Timestamp>,
}

/// An indicator the engine refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndicatorError {
    pub id: String,
    pub message: String,
}

/// The compiled indicator set.
#[derive(Debug, Default)]
pub(crate) struct IndicatorSet {
    pub(crate) by_id:
        std::collections::HashMap<String, (Indicator, stix::matcher::CompiledPattern)>,
}

impl IndicatorSet {
    /// Adds or replaces indicators; returns the ones whose pattern does not compile.
    pub(crate) fn upsert(&mut self, indicators: Vec<Indicator>) -> Vec<IndicatorError> {
        let mut refused = Vec::new();
        for indicator in indicators {
            match stix::matcher::CompiledPattern::new(&indicator.pattern) {
                Ok(compiled) => {
                    self.by_id
                        .insert(indicator.id.clone(), (indicator, compiled));
                }
                Err(err) => refused.push(IndicatorError {
                    id: indicator.id,
                    message: err.to_string(),
                }),
            }
        }
        refused
    }

    pub(crate) fn remove(&mut self, ids: &[String]) {
        for id in ids {
            self.by_id.remove(id);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}
