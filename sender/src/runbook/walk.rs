//! Walking a runbook without a person at each prompt: `--yes` (run every
//! step in order, taking backup plans when a step fails) and `--script`
//! (one command per line).
//!
//! Script commands, one per line (`#` starts a comment):
//!
//! ```text
//! run STEP               run a step (as the walking operator)
//! skip STEP REASON...    skip a step
//! zombie on BACKEND 2m   switch zombie mode on for 2 minutes
//! zombie off BACKEND
//! disarm
//! abort REASON...
//! wait 5s                pause
//! auto                   run every remaining step (like --yes)
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::engine::{ActError, Actor, Event, StepState};
use crate::zombie::Switch;

/// A script command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run a step.
    Run(String),
    /// Skip a step.
    Skip(String, String),
    /// Zombie mode on for a duration.
    ZombieOn(String, Duration),
    /// Zombie mode off.
    ZombieOff(String),
    /// Disarm.
    Disarm,
    /// Abort.
    Abort(String),
    /// Pause.
    Wait(Duration),
    /// Run every remaining step.
    Auto,
    /// Resume the event's interrupted fire.
    Resume,
}

/// A line of a walk script that is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {message}", path = path.display())]
pub struct ScriptError {
    /// The script.
    pub path: std::path::PathBuf,
    /// Its line.
    pub line: usize,
    /// What is wrong, with the line's text.
    pub message: String,
}

/// Parses a script; errors name the file and line.
pub fn parse_script(text: &str, path: &Path) -> Result<Vec<(usize, Command)>, ScriptError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |m: &str| ScriptError { path: path.to_owned(), line: n + 1, message: format!("{m}: {line:?}") };
        let words: Vec<&str> = line.split_whitespace().collect();
        let rest = |i: usize| words[i..].join(" ");
        let dur = |s: &str| crate::clock::parse_duration(s, crate::clock::MAX_SETTING).map_err(|e| err(&format!("bad duration ({e})")));
        let cmd = match words.as_slice() {
            ["run", step] => Command::Run((*step).to_owned()),
            ["skip", step, _, ..] => Command::Skip((*step).to_owned(), rest(2)),
            ["zombie", "on", backend, d] => Command::ZombieOn((*backend).to_owned(), dur(d)?),
            ["zombie", "off", backend] => Command::ZombieOff((*backend).to_owned()),
            ["disarm"] => Command::Disarm,
            ["abort", _, ..] => Command::Abort(rest(1)),
            ["wait", d] => Command::Wait(dur(d)?),
            ["auto"] => Command::Auto,
            ["resume"] => Command::Resume,
            _ => {
                return Err(err(
                    "expected run STEP | skip STEP REASON | zombie on BACKEND DURATION | zombie off BACKEND | disarm | abort REASON | wait DURATION | auto | resume",
                ));
            }
        };
        out.push((n + 1, cmd));
    }
    Ok(out)
}

/// What the walk reports as it goes.
pub trait WalkObserver: Send + Sync {
    /// A step is about to run.
    fn step_starting(&self, event: &Event, step: &str);
    /// A step ended (or was refused).
    fn step_ended(&self, event: &Event, step: &str, result: &Result<super::StepStatus, ActError>);
}

/// Runs every remaining step in order. A failed step with a backup step
/// hands over to it; a failed step without one stops the walk with its
/// error (and its backup plan's text). A fire found interrupted (its process
/// died) is resumed, once.
pub async fn auto(event: &Arc<Event>, actor: &Actor, observer: &dyn WalkObserver) -> Result<(), ActError> {
    let mut resumed = false;
    loop {
        let state = event.state();
        let next = state.steps.iter().find(|(s, _)| matches!(s.state, StepState::Ready | StepState::Pending));
        let Some((status, _)) = next else { return Ok(()) };
        let id = status.id.clone();
        observer.step_starting(event, &id);
        let result = event.run_step(&id, actor).await;
        observer.step_ended(event, &id, &result);
        match result {
            Ok(_) => {}
            Err(e @ ActError::Failed { .. }) => {
                let step = event.runbook().step(&id).expect("exists");
                if !resumed && event.state().interrupted.is_some() {
                    resumed = true;
                    event.resume(actor)?;
                    continue;
                }
                if step.backup.as_ref().and_then(|b| b.step.as_ref()).is_none() {
                    return Err(e);
                }
                // The backup step is now pending; the loop picks it up.
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs a script.
pub async fn run_script(
    event: &Arc<Event>,
    actor: &Actor,
    script: &[(usize, Command)],
    observer: &dyn WalkObserver,
) -> Result<(), (usize, ActError)> {
    for (line, cmd) in script {
        let line = *line;
        let r = match cmd {
            Command::Run(step) => {
                observer.step_starting(event, step);
                let r = event.run_step(step, actor).await;
                observer.step_ended(event, step, &r);
                r.map(|_| ())
            }
            Command::Skip(step, why) => event.skip(step, actor, why).map(|_| ()),
            Command::ZombieOn(b, d) => event.switch_zombie(actor, &Switch::on(b, *d, &actor.name, "script")).map(|_| ()),
            Command::ZombieOff(b) => event.switch_zombie(actor, &Switch::off(b, &actor.name, "script")).map(|_| ()),
            Command::Disarm => event.disarm(actor),
            Command::Abort(why) => event.abort(actor, why),
            Command::Wait(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Command::Auto => auto(event, actor, observer).await,
            Command::Resume => event.resume(actor).map(|_| ()),
        };
        r.map_err(|e| (line, e))?;
    }
    Ok(())
}
