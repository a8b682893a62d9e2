//! Kickoff sender integration tests: one binary, one module per area.

mod util;

mod audience_files;
mod aws;
mod cli;
mod dynamodb;
mod fire;
mod frames;
mod layout;
mod plan;
mod props;
mod push;
mod resume;
mod runbook;
