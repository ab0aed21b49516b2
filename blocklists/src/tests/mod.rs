//! The crate's larger tests: parsers, the model property test, the shared real lists, the
//! catalog and its cache, and the policy decision.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod catalog;
mod data;
mod model;
mod parse;
mod patterns;
mod policy;
mod topk;
mod wire;
