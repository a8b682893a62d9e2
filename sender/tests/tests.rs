//! Kickoff sender integration tests: one binary, one module per area.

mod util;

/// Runs the async test `$name(engine)` once per HTTP/2 send engine, as
/// `$name::h2` and `$name::nghttp2`: the same suite on both (push.rs,
/// frames.rs; each imports `SendEngine`).
macro_rules! both_engines {
    ($name:ident) => {
        mod $name {
            use super::SendEngine;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn h2() {
                super::$name(SendEngine::H2).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nghttp2() {
                super::$name(SendEngine::Nghttp2).await;
            }
        }
    };
}

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
