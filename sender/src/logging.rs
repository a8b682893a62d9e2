//! Logging for every binary (the CLI, workers, the gateway, the app): to
//! stderr, at `KICKOFF_LOG` (`error`, `warn`, `info`, `debug`, `trace`),
//! human-readable by default or, with `KICKOFF_LOG_FORMAT=json`, one JSON
//! object per line (`timestamp`, `level`, `fields`, `span`s) for CloudWatch
//! Logs and any log shipper.

use tracing::Level;

/// The log's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event, for people.
    Human,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `human` or `json` (any case); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "human" | "text" => Some(Self::Human),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// The level `KICKOFF_LOG` names, else `default`.
fn level(default: Level) -> Level {
    match std::env::var("KICKOFF_LOG").unwrap_or_default().trim().to_ascii_lowercase().as_str() {
        "trace" => Level::TRACE,
        "debug" => Level::DEBUG,
        "info" => Level::INFO,
        "warn" | "warning" => Level::WARN,
        "error" => Level::ERROR,
        _ => default,
    }
}

/// Starts logging to stderr as `KICKOFF_LOG` and `KICKOFF_LOG_FORMAT` say
/// (`default` when the level is unset). Does nothing if logging was
/// started before. An unknown format is logged as a warning and the
/// human format used.
pub fn init(default: Level) {
    let raw = std::env::var("KICKOFF_LOG_FORMAT").unwrap_or_default();
    let format = LogFormat::parse(&raw);
    let builder = tracing_subscriber::fmt().with_max_level(level(default)).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        Some(LogFormat::Json) => builder.json().with_current_span(false).flatten_event(true).try_init(),
        _ => builder.try_init(),
    };
    if format.is_none() {
        tracing::warn!("KICKOFF_LOG_FORMAT={raw:?} is neither `human` nor `json`: logging for people");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_unknown_ones_are_refused() {
        assert_eq!(LogFormat::parse("JSON"), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse(""), Some(LogFormat::Human));
        assert_eq!(LogFormat::parse("human"), Some(LogFormat::Human));
        assert_eq!(LogFormat::parse("xml"), None);
    }
}
