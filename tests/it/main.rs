//! mirrorflow's integration tests, one binary (one link instead of one per file): each module tests one
//! property against the real things — the bundled Drive emulator over HTTP, the `mirrorflow` binary,
//! a local folder and a real S3 server (moto). `support` is the shared harness.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// The tests read the index over a direct connection, never through a pooler (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod support;

mod audit_log;
mod backpressure;
mod bad_config;
mod config_extremes;
mod content_dedup;
mod continuous;
mod crash_restart;
mod destination_refusals;
mod domain;
mod drive_as_documented;
mod dry_run;
mod emulator_big;
mod emulator_faults;
mod emulator_protocol;
mod faults;
mod files_as_documented;
mod index_pg;
mod mirror_local;
mod mirror_s3;
mod no_loss;
mod operate;
mod quickstart;
mod selection;
mod shard_config;
mod shared_with_me;
mod shortcuts;
mod sign_in;
mod skips;
mod supervision;
mod verify;
mod versions;
mod webhook;
