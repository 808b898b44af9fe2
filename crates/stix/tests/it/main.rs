//! Integration tests of the stix crate: the test_data corpora, and differential tests
//! against the OASIS reference tools (stix2-matcher, stix2-patterns, stix2-validator,
//! stix2) when `CITYSEC_TEST_PYTHON` names a python that has them.

mod corpus_dirs;
mod differential;
mod oracle;
