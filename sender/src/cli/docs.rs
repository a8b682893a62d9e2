//! `completions` and `man`: shell completions and man pages, generated
//! from the command definitions so they never drift from them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// `completions SHELL`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

/// `man --out DIR`.
#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Where the pages go (created if needed): kickoff-sender.1,
    /// kickoff-sender-runbook-walk.1, ...
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn command() -> clap::Command {
    super::Cli::command()
}

#[allow(clippy::print_stdout)]
pub(crate) fn completions_cmd(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = command();
    let name = cmd.get_name().to_owned();
    clap_complete::generate(args.shell, &mut cmd, name, &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn man_cmd(args: &ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut cmd = command();
    cmd.build();
    let written = write_pages(&cmd, &args.out)?;
    eprintln!("{written} man pages in {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes `cmd`'s page and its subcommands'. Built, every command knows its
/// display name (`kickoff-sender-runbook-walk`): the page's name.
fn write_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<usize> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page).with_context(|| format!("rendering {name}"))?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    let mut written = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        written += write_pages(sub, dir)?;
    }
    Ok(written)
}
