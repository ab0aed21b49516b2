//! End-to-end tests of the cabinet API: real HTTP on 127.0.0.1, a real sled store in a temp
//! dir, a real (in-process) SMTP sink; `binary` drives the `qorgan` binary itself.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    missing_docs,
    unreachable_pub
)]

mod abuse;
mod billing;
mod binary;
mod captcha;
mod cli;
mod crash;
mod dnsfilter;
mod errors;
mod flow;
mod isolation;
mod measure;
mod outbox;
mod policy;
mod support;
/// The resolver tests' local upstream (fixed answers on 127.0.0.1), shared rather than copied.
#[path = "../../../resolver/tests/resolver/upstream.rs"]
#[allow(dead_code)]
mod upstream;
