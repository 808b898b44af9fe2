//! The logic behind `citysec stix ...`, kept here so the CLI stays thin and the behaviour
//! is unit-tested: validate documents, check patterns, match a pattern against a file.

use serde_json::{Value, json};
use thiserror::Error;

use crate::matcher::{CompileError, CompiledPattern, ObservationError, observations_from_json};
use crate::object::{Issue, validate_document};
use crate::pattern::{ParseError, parse};

/// Largest number of bindings `match` reports by default.
pub const DEFAULT_MAX_MATCHES: usize = 100;

/// Errors of the tool functions that are not a verdict on the input.
#[derive(Debug, Error)]
pub enum ToolError {
    #[error("invalid json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid pattern: {0}")]
    Pattern(#[from] CompileError),
    #[error("invalid observations: {0}")]
    Observations(#[from] ObservationError),
}

/// Validates a STIX document given as text; an empty result means valid.
pub fn validate_text(text: &str) -> Result<Vec<Issue>, ToolError> {
    let v: Value = serde_json::from_str(text)?;
    Ok(validate_document(&v))
}

/// Checks a pattern; `Err` carries the position and what was expected.
pub fn check_pattern(pattern: &str) -> Result<(), ParseError> {
    parse(pattern).map(|_| ())
}

/// The result of matching one pattern against a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchReport {
    pub matched: bool,
    /// per binding, the observed-data ids in the order of the pattern's observation
    /// expressions (positions the reference matcher reports as `None` are left out)
    pub matches: Vec<Vec<String>>,
}

impl MatchReport {
    /// `{"matched": bool, "matches": [[ids...], ...]}`
    pub fn to_json(&self) -> Value {
        json!({"matched": self.matched, "matches": self.matches})
    }
}

/// Matches `pattern` against a document (a bundle, or a JSON array of bundles or of
/// observed-data objects and the objects they reference), reporting up to `max_matches`
/// bindings in the order stix2-matcher finds them.
pub fn match_text(pattern: &str, text: &str, max_matches: usize) -> Result<MatchReport, ToolError> {
    let compiled = CompiledPattern::new(pattern)?;
    let doc: Value = serde_json::from_str(text)?;
    let obs = observations_from_json(&doc)?;
    let bindings = compiled.bindings(&obs, max_matches.max(1));
    let matched = !bindings.is_empty();
    let matches = bindings
        .into_iter()
        .take(max_matches)
        .map(|b| {
            b.into_iter()
                .flatten()
                .map(|i| obs[i].id().to_owned())
                .collect()
        })
        .collect();
    Ok(MatchReport { matched, matches })
}
