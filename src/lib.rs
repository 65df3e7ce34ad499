//! mirrorflow: a one-way, continuously updated mirror of Google Drive in object storage, built as a
//! typed pipeline of supervised actors joined by bounded channels.
//!
//! change-feed → dedup → planner → downloader → chunk-uploader → verifier → committer → fjall

// The product's surface: configuration, the pipeline, its state and reports, and the boundaries
// (Drive, destination) with their model. The rest is how the pipeline is built.
pub(crate) mod actors;
pub(crate) mod adapters;
pub mod admin;
pub mod adopt;
pub mod breaker;
pub mod cluster;
pub mod config;
pub mod dest;
pub mod domain;
pub mod drive;
#[allow(unsafe_code)] // the FFI to aws-lc's MD5/SHA-256 with plain-data state (resumable uploads)
pub mod hashing;
pub mod health;
pub mod index;
pub(crate) mod internal_events;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod open;
pub mod pipeline;
pub mod progress;
pub mod repair;
pub mod retry;
pub mod stages;
pub mod state;
pub mod status;
pub mod top;
pub mod verify;

/// Installs aws-lc-rs as the process-wide rustls provider (several crates here use rustls; without one
/// chosen explicitly rustls panics at the first TLS handshake). Safe to call many times.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
