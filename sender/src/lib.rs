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
//! Dependencies run one way, lower to higher: a lower module defines a
//! trait, a higher one implements it or chooses between implementations.
//!
//! - [`clock`], [`spans`], [`rng`], [`sys`], [`logging`]: time as recorded
//!   (ms since the epoch, RFC 3339, durations in files); TOML spans as lines
//!   for file:line errors; a seedable PRNG; process statistics and data
//!   paths; the one logging setup of the CLI, workers and the app.
//! - [`audience`]: audience files (CSV, JSON Lines) validated line by line and
//!   compiled into checksummed shard snapshots; loaded with one read per shard,
//!   no heap object per device; where an event's audience comes from.
//! - [`campaign`]: the campaign file (TOML), checked with file:line errors,
//!   and the exact payload bytes per locale and platform.
//! - [`push`]: the [`push::Provider`] trait the notifiers send through; APNs
//!   and FCM v1 over HTTP/2 with their credentials; the null provider, the
//!   latency model and the receiver-side delivery tally.
//! - [`metrics`]: per-second counts, failures by reason, the delivery-time
//!   histogram, and the [`metrics::MetricsSink`] trait.
//! - [`plan`]: before the fire, the capacity and quota plan, expected
//!   delivery times and the backends' return-traffic forecast, with gates.
//! - [`gateway`]: the loopback APNs/FCM-compatible gateway, the embedded
//!   default (a server, not a client).
//! - [`provider`]: choosing and starting a provider (gateway, real, null,
//!   model): the one path the drill, `fire`, test-sends and the app take.
//! - [`queue`]: the messages between tiers and the in-process queue.
//! - [`fanout`]: the fire ledger (idempotent fire), dispatch and notifier
//!   tiers, abort, and the fire report.
//! - [`drill`]: generate or load, warm, fire, measure; [`drill::fire_local`],
//!   the fire sequence the CLI's `fire` shares.
//! - [`testsend`]: test-send to self and its confirmation, tied to the
//!   campaign's content hash.
//! - [`fleet`]: the ASG and ECS service behind the [`fleet::Fleet`] trait; the
//!   embedded simulation.
//! - [`zombie`]: zombie-mode flags per backend and the flag server.
//! - [`recorder`]: the flight recorder (SQLite per event), replay, charts
//!   and the after-event report.
//! - [`runbook`]: runbook files, the engine that walks them (gates, audit),
//!   the traits it drives and their embedded implementations; it knows
//!   nothing of AWS.
//! - [`aws`]: the same traits on SQS, ECS, ASG, S3 and CloudWatch; the worker.
//! - [`session`]: open, join and close an event, embedded or AWS: the one
//!   call the CLI walk and the desktop app make.

pub mod audience;
pub mod aws;
pub mod campaign;
pub mod clock;
pub mod drill;
pub mod fanout;
pub mod fleet;
pub mod gateway;
pub mod logging;
pub mod metrics;
pub mod plan;
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
