//! Tests of app::intel: the TAXII server over the real store, access and TLP, feeds, publishing.
