//! Flow decoder tests.
