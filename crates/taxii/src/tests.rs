//! Unit tests of the taxii crate: filters, cursors, media types, access and TLP.
