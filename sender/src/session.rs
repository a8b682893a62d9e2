//! Opening, joining and closing a runbook's event: the one sequence both
//! faces (the CLI's `runbook walk` and the desktop app) go through, so every
//! rule about events has one home.
//!
//! ```text
//! Session::open(runbook, options)
//!   AWS mode: connect, and check that the ASG and the ECS service answer
//!   join the event another window or walk has open for this runbook, or open one
//!   [audience.dynamodb]: import it into the event's work directory (once an event)
//!   services: embedded (Services::embedded) or AWS (aws::control::services)
//!   Event::new + the once-a-second ticker
//! Session::close()
//!   a last sample, the recorder closed, this session's hold on the event
//!   released (the last one out closes it; a crashed holder stops beating)
//! ```
//!
//! The fire key is one rule on every path (`fanout::FireScope`): a launch is
//! keyed by the campaign id alone, so a campaign launches once, ever, from
//! any window, walk or mode; a silent rehearsal by campaign and event, so it
//! never uses up the launch; an event opened explicitly as new
//! (`new_event`, a demo walked again) by campaign and event.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audience::AudienceSource;
use crate::aws::dynamodb::ImportError;
use crate::aws::{Aws, AwsConfig, AwsError};
use crate::fleet::FleetError;
use crate::provider::ProviderChoice;
use crate::runbook::registry::{EventRegistry, HOLDER_BEAT, Hold, RegistryError};
use crate::runbook::{ActError, Event, Runbook, ServiceOptions, Services, ServicesError};

/// How to open an event.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Kickoff's data directory: `work/`, `events/` and, by default, the
    /// state database live here.
    pub data_dir: PathBuf,
    /// The state database (default: `kickoff.sqlite` in `data_dir`).
    pub state_db: Option<PathBuf>,
    /// The recorder file (default: a new file in `data_dir/events/`).
    pub record: Option<PathBuf>,
    /// Use this event id instead of the registry's open event of the
    /// runbook. Such an event counts as joined.
    pub event: Option<String>,
    /// The provider of the fire (embedded) or of test-sends (AWS).
    pub provider: ProviderChoice,
    /// Serve the zombie flags here (embedded mode only).
    pub flag_server: Option<SocketAddr>,
    /// AWS mode, with this profile; embedded mode when `None`.
    pub aws: Option<AwsConfig>,
    /// Open a new event even if the runbook has one open, and key its fire
    /// by that event: how a demo runbook is walked again. Without it, a
    /// (non-silent) fire is the campaign's launch, once ever.
    pub new_event: bool,
}

impl SessionOptions {
    /// Embedded mode in `data_dir` with the loopback gateway and a flag
    /// server on any free port.
    pub fn embedded(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            state_db: None,
            record: None,
            event: None,
            provider: ProviderChoice::gateway(),
            flag_server: Some(([127, 0, 0, 1], 0).into()),
            aws: None,
            new_event: false,
        }
    }
}

/// Why an event could not be opened. Each variant is a different thing
/// for the operator to do.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// AWS mode: the profile is wrong or AWS does not answer.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// AWS mode: the ASG or the ECS service does not answer.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The state database's event registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The event's services (recorder, flag store, flag server).
    #[error(transparent)]
    Services(#[from] ServicesError),
    /// The event itself (its campaign).
    #[error(transparent)]
    Event(#[from] ActError),
    /// The runbook's `[audience.dynamodb]` could not be imported.
    #[error("the audience from DynamoDB table {table}: {source}")]
    Audience {
        /// The table.
        table: String,
        /// What went wrong.
        #[source]
        source: ImportError,
    },
}

/// An open event: the engine, its ticker and its place in the registry.
/// Dropping it stops the ticker; [`Session::close`] also ends the event.
#[derive(Debug)]
pub struct Session {
    event: Arc<Event>,
    /// The once-a-second sampler; lives as long as the session.
    ticker: tokio::task::JoinHandle<()>,
    record: PathBuf,
    /// This session's hold on the event in the registry.
    hold: Hold,
    registry: Arc<EventRegistry>,
    /// Beats the hold while the session lives.
    beat: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Opens `runbook`'s event, or joins the one another window or walk has
    /// open. In AWS mode the profile is checked, and AWS must answer,
    /// before anything is opened. Call on a tokio runtime with I/O.
    pub async fn open(runbook: Runbook, opts: SessionOptions) -> Result<Self, SessionError> {
        let aws = match &opts.aws {
            Some(config) => {
                let aws = Aws::connect(config.clone()).await?;
                crate::fleet::check(&crate::aws::fleet::AwsFleet::new(&aws)).await?;
                Some(aws)
            }
            None => None,
        };
        let state_db = opts.state_db.clone().unwrap_or_else(|| crate::sys::state_db_in(&opts.data_dir));
        let registry = Arc::new(EventRegistry::open(&state_db)?);
        let hold = match &opts.event {
            Some(id) => registry.join(id)?,
            None if opts.new_event => registry.open_new(&runbook)?,
            None => registry.join_or_open(&runbook)?,
        };
        let event_id = hold.event_id.clone();
        // Beaten from now on: reading the audience from DynamoDB can take
        // longer than a hold stays fresh, and a stale hold would let another
        // window open a second event beside this one.
        let beat = {
            let (registry, hold) = (registry.clone(), hold.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(HOLDER_BEAT);
                loop {
                    every.tick().await;
                    if let Err(e) = registry.beat(&hold) {
                        tracing::warn!(error = %e, "could not tell the registry this event is still open");
                    }
                }
            })
        };
        let silent =
            runbook.silent || crate::campaign::Campaign::load(&runbook.campaign).is_ok_and(|c| c.mode == crate::campaign::Mode::Silent);
        let fire_scope = crate::fanout::FireScope::of(silent, opts.new_event, &event_id);
        let record = opts.record.clone().unwrap_or_else(|| {
            crate::recorder::event_path(&opts.data_dir.join("events"), &format!("{}-{}", runbook.name, std::process::id()))
        });
        let work_dir = opts.data_dir.join("work").join(event_id.replace(['@', ':'], "-"));
        let mut runbook = runbook;
        let table = runbook.audience.as_ref().and_then(AudienceSource::dynamodb_table).map(str::to_owned);
        if let Err(source) = crate::aws::audience::resolve(&mut runbook, &work_dir, aws.as_ref()).await {
            beat.abort();
            let _ = registry.leave(&hold);
            return Err(SessionError::Audience { table: table.unwrap_or_default(), source });
        }
        let service_opts = ServiceOptions {
            state_db,
            work_dir,
            recorder: Some(record.clone()),
            provider: opts.provider.clone(),
            flag_server: opts.flag_server,
            fire_scope,
        };
        let services = match aws {
            None => Services::embedded(&runbook, &service_opts),
            Some(aws) => crate::aws::control::services(&runbook, &service_opts, aws),
        };
        let opened = services.map_err(SessionError::from).and_then(|s| Ok(Event::new(&event_id, runbook, s)?));
        let event = match opened {
            Ok(event) => event,
            Err(e) => {
                beat.abort();
                let _ = registry.leave(&hold);
                return Err(e);
            }
        };
        let ticker = event.start_ticker();
        Ok(Self { event, ticker, record, hold, registry, beat })
    }

    /// The event.
    pub fn event(&self) -> &Arc<Event> {
        &self.event
    }

    /// The recorder file.
    pub fn record(&self) -> &Path {
        &self.record
    }

    /// Whether this session joined an event opened elsewhere.
    pub fn joined(&self) -> bool {
        self.hold.joined
    }

    /// Whether a send of this event is under way (fired, neither watched
    /// to its end nor aborted).
    pub fn sending(&self) -> bool {
        let s = self.event.state();
        s.fired.is_some() && s.summary.is_none() && s.aborted.is_none()
    }

    /// Ends the event here: a last sample, the recorder closed, the workers
    /// stopped, and this session's hold released (the last one out closes
    /// the event in the registry).
    pub async fn close(self) {
        self.event.close().await;
        self.beat.abort();
        if let Err(e) = self.registry.leave(&self.hold) {
            tracing::warn!(error = %e, "could not release the event in the registry");
        }
        // The ticker stops on drop.
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.ticker.abort();
        self.beat.abort();
    }
}
