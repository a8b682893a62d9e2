//! What the runbook engine drives: the fleet, the workers, the flag store,
//! the test-send store, the recorder. [`Services::embedded`] builds the
//! embedded set: simulated fleet, in-process workers, the loopback push
//! gateway, SQLite flags and a loopback flag server. AWS mode builds the
//! same [`Services`] from its own implementations (`aws::control::services`);
//! this module knows nothing of AWS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::file::Runbook;
use super::workers::{EmbeddedWorkers, Workers};
use crate::fleet::{Fleet, FleetError, SimFleet};
use crate::metrics::prometheus::{PromSink, Tee};
use crate::provider::ProviderChoice;
use crate::recorder::live::LiveMetrics;
use crate::recorder::{Recorder, RecorderError};
use crate::testsend::{TestSendError, TestSendStore};
use crate::zombie::server::FlagServer;
use crate::zombie::{FlagError, FlagStore, SqliteFlagStore};

/// Everything a runbook event uses.
#[derive(Debug, Clone)]
pub struct Services {
    /// The fleet.
    pub fleet: Arc<dyn Fleet>,
    /// The workers.
    pub workers: Arc<dyn Workers>,
    /// Zombie flags.
    pub flags: Arc<dyn FlagStore>,
    /// Test-sends and confirmations.
    pub testsends: Arc<TestSendStore>,
    /// The flight recorder.
    pub recorder: Option<Arc<Recorder>>,
    /// The fire's live metrics (writes to the recorder).
    pub live: Arc<LiveMetrics>,
    /// Where client apps read the flags, if served here.
    pub flag_url: Option<String>,
    /// Where approvals of the arm are kept (`[approvals]`).
    pub approvals: Arc<dyn super::approvals::Approvals>,
    /// The scope the fire is keyed in (approvals are kept per fire).
    pub fire_scope: crate::fanout::FireScope,
    /// The APNs environment and key files of the provider test-sends (and,
    /// embedded, the fire) go through: checked before the arm.
    pub provider: crate::provider::ProviderFacts,
    /// The flag server served here (embedded mode): what reached it is the
    /// measured return traffic. Kept running as long as any clone of the
    /// services.
    pub flag_server: Option<Arc<FlagServer>>,
    /// Simulated client apps calling the flag server (embedded mode, for
    /// runbooks with backends).
    pub clients: Option<Arc<crate::zombie::clients::ClientSim>>,
}

/// Options of the services, embedded or AWS.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// State database (fire ledger, test-sends, zombie flags).
    pub state_db: PathBuf,
    /// Where the generated audience and reports go.
    pub work_dir: PathBuf,
    /// The recorder file (none: do not record).
    pub recorder: Option<PathBuf>,
    /// The provider (the loopback gateway by default). In AWS mode, the
    /// provider of test-sends (sent from here; the workers send the fire).
    pub provider: ProviderChoice,
    /// Serve the flags on 127.0.0.1 (port 0: any). Embedded mode only: in
    /// AWS mode client apps read the flags document from S3.
    pub flag_server: Option<std::net::SocketAddr>,
    /// What the event's fire is for, which makes its key in the ledger.
    pub fire_scope: crate::fanout::FireScope,
}

/// The services could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The flight recorder file.
    #[error(transparent)]
    Recorder(#[from] RecorderError),
    /// The zombie flag store.
    #[error(transparent)]
    Flags(#[from] FlagError),
    /// The test-send store.
    #[error(transparent)]
    TestSends(#[from] TestSendError),
    /// The flag server could not listen.
    #[error("flag server on {addr}: {source}")]
    FlagServer {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The runbook's fleet settings.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The approvals store could not be opened.
    #[error(transparent)]
    Approvals(#[from] super::approvals::ApprovalError),
}

impl ServiceOptions {
    /// The recorder (if any) and the live metrics that write to it.
    pub(crate) fn recorder(&self) -> Result<(Option<Arc<Recorder>>, Arc<LiveMetrics>), RecorderError> {
        let recorder = match &self.recorder {
            Some(p) => Some(Arc::new(Recorder::create(p)?)),
            None => None,
        };
        let live = Arc::new(LiveMetrics::new(recorder.clone()));
        Ok((recorder, live))
    }
}

impl Services {
    /// The embedded set for `runbook`.
    pub fn embedded(runbook: &Runbook, opts: &ServiceOptions) -> Result<Self, ServicesError> {
        let (recorder, live) = opts.recorder()?;
        let flags: Arc<dyn FlagStore> = Arc::new(SqliteFlagStore::open(&opts.state_db)?);
        // What the engine sends, for Prometheus at the flag server's /metrics.
        let sends = Arc::new(PromSink::new());
        let flag_server = match opts.flag_server {
            Some(addr) => Some(Arc::new(
                FlagServer::start(flags.clone(), addr, Some(sends.clone())).map_err(|source| ServicesError::FlagServer { addr, source })?,
            )),
            None => None,
        };
        // The return traffic, simulated for real: clients that open the app
        // call the flag server and the stand-in backends beside it.
        let clients = match &flag_server {
            Some(server) if !runbook.return_traffic.is_empty() => Some(Arc::new(
                crate::zombie::clients::ClientSim::start(server.addr(), runbook.return_traffic.clone())
                    .map_err(|source| ServicesError::FlagServer { addr: server.addr(), source })?,
            )),
            _ => None,
        };
        if let Some(r) = &recorder {
            r.meta("backend_load", if clients.is_some() { "measured: simulated clients at the loopback flag server" } else { "modelled" });
        }
        let workers = EmbeddedWorkers::new(
            runbook.audience.clone().unwrap_or_default(),
            opts.work_dir.clone(),
            opts.state_db.clone(),
            opts.provider.clone(),
            opts.fire_scope.clone(),
            Arc::new(Tee(live.clone(), sends)),
        )
        .with_outage_timeout(runbook.outage_timeout);
        Ok(Self {
            fleet: Arc::new(SimFleet::new(runbook.fleet.clone())?),
            workers: Arc::new(workers),
            flags,
            testsends: Arc::new(TestSendStore::open(&opts.state_db)?),
            recorder,
            live,
            flag_url: flag_server.as_ref().map(|s| s.url()),
            approvals: Arc::new(super::approvals::SqliteApprovals::open(&opts.state_db)?),
            fire_scope: opts.fire_scope.clone(),
            provider: opts.provider.facts(),
            flag_server,
            clients,
        })
    }
}

/// Polls often enough for progress bars, rarely enough to cost nothing.
pub const POLL: Duration = Duration::from_millis(200);
