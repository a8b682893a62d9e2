//! Kickoff's sender: everything but the user interface.
//!
//! When a TV ad airs, one press of a square button must reach millions of
//! phones within seconds, exactly once. This crate holds the audience store,
//! the campaign, the fan-out engine and the drills. The desktop app
//! (`src-tauri/`) and the `kickoff-sender` CLI are two thin faces of it: both
//! call the same functions here, and this crate never depends on either.
//!
//! # Layout
//!
//! - [`audience`]: audience files (CSV, JSON Lines) validated line by line and
//!   compiled into checksummed shard snapshots; loaded with one read per shard,
//!   no heap object per device.
//! - [`campaign`]: the campaign file (TOML), checked with file:line errors,
//!   and the exact payload bytes per locale and platform.
//! - [`push`]: the [`push::Provider`] trait the notifiers send through; APNs
//!   and FCM v1 over HTTP/2 with their credentials; the loopback gateway; the
//!   null provider, the latency model and the receiver-side delivery tally.
//! - [`fanout`]: the fire ledger (idempotent fire), dispatch and notifier
//!   tiers, abort, and the fire report.
//! - [`queue`]: the messages between tiers and the in-process queue.
//! - [`metrics`]: per-second counts, failures by reason, the delivery-time
//!   histogram, and the [`metrics::MetricsSink`] trait.
//! - [`drill`]: generate or load, warm, fire, measure. Shared by CLI and app.
//! - [`testsend`]: test-send to self and its confirmation, tied to the
//!   campaign's content hash.
//! - [`runbook`]: runbook files, the engine that walks them (gates, audit),
//!   and the services it drives.
//! - [`fleet`]: the ASG and ECS service behind the [`fleet::Fleet`] trait; the
//!   embedded simulation.
//! - [`recorder`]: the flight recorder (SQLite per event), replay, charts
//!   and the after-event report.
//! - [`zombie`]: zombie-mode flags per backend and the flag server.
//! - [`rng`], [`sys`]: a seedable PRNG; process statistics and data paths.

pub mod audience;
pub mod aws;
pub mod campaign;
pub mod clock;
pub mod drill;
pub mod fanout;
pub mod fleet;
pub mod gateway;
pub mod metrics;
pub mod provider;
pub mod push;
pub mod queue;
pub mod recorder;
pub mod rng;
pub mod runbook;
pub mod session;
pub mod spans;
pub mod sys;
pub mod testsend;
pub mod zombie;
