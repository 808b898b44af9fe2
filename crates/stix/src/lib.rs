//! STIX 2.1 for citysec: the object model with validation and deterministic SCO ids
//! ([`object`]), the patterning language ([`pattern`]), a compiled matcher with
//! stix2-matcher semantics ([`matcher`]), a streaming matcher for live events
//! ([`stream`]) and the logic behind `citysec stix ...` ([`tool`]).
//!
//! This crate knows nothing about the rest of citysec; it could be published alone.
#![doc = include_str!("docs/conformance.md")]
// Validation rules read best as one nested `if` per requirement.
#![allow(clippy::collapsible_if, clippy::collapsible_match)]

pub mod codec;
#[doc(hidden)]
pub mod corpus;
pub mod matcher;
pub mod object;
pub mod pattern;
pub mod stream;
pub mod time;
pub mod tool;

#[cfg(test)]
mod tests;
