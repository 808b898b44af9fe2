//! TAXII 2.1 (OASIS, 2021) for sharing STIX content: a server and a client.
//!
//! The server ([`server::router`]) is an axum `Router` answering every TAXII 2.1 endpoint
//! (discovery, API roots, status, collections, objects, object, manifest, versions) with
//! the filters, content negotiation, headers and error bodies the specification names.
//! Access (who may read or write which collection) and TLP 2.0 on what leaves are decided
//! here from a [`access::ServerConfig`]; storage and authentication are a [`Backend`] the
//! embedding application implements. Paging uses a stateless cursor ([`cursor::Cursor`]).
//!
//! The client ([`client::Client`]) talks to any TAXII 2.1 server (blocking, over `ureq`).
//!
//! This crate knows nothing of citysec beyond `stix`; it could be published unchanged.

pub mod access;
pub mod backend;
pub mod client;
pub mod cursor;
pub mod query;
pub mod server;
pub mod types;

pub use crate::backend::{Backend, BackendError};

/// The TAXII 2.1 media type.
pub const MEDIA_TYPE_TAXII: &str = "application/taxii+json;version=2.1";
/// The STIX 2.1 media type (objects inside envelopes).
pub const MEDIA_TYPE_STIX: &str = "application/stix+json;version=2.1";

#[cfg(test)]
mod tests;
