//! End-to-end tests of the resolver: real UDP and TCP sockets on 127.0.0.0/8, hickory's DNS
//! client, a local upstream server, a lists folder and a policy file in a temp dir.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    missing_docs,
    unreachable_pub
)]

mod clients;
mod differential;
mod filtering;
mod forwarding;
mod hardening;
mod harness;
mod rate_limit;
mod reload;
mod tcp;
mod upstream;
