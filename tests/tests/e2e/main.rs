//! End-to-end tests against the real `qorgan` binary.
