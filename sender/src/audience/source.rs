//! Where an event's audience comes from: a compiled directory, an audience
//! file compiled on first use, or generated devices (demos and rehearsals).
//! The embedded workers and AWS mode's uploader both start here.

use std::path::{Path, PathBuf};

use super::generate::{self, GenerateSpec};
use super::{Audience, AudienceError, CompileOptions, store};

/// An audience as a runbook names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum AudienceSource {
    /// Generate this many devices.
    Generate {
        /// Devices.
        devices: u64,
        /// Seed.
        seed: u64,
    },
    /// A compiled audience directory, or an audience file to compile.
    Path(PathBuf),
}

impl Default for AudienceSource {
    /// Without an audience, 10,000 generated devices: enough for a demo walk.
    fn default() -> Self {
        Self::Generate { devices: 10_000, seed: 1 }
    }
}

impl AudienceSource {
    /// The audience as a compiled directory: the directory itself, or
    /// compiled (generated) into `work/audience`. A generated audience is
    /// made once per work directory.
    pub fn prepare(&self, work: &Path) -> Result<PathBuf, AudienceError> {
        match self {
            Self::Path(p) if p.join(store::MANIFEST).is_file() => Ok(p.clone()),
            Self::Path(file) => {
                let out = work.join("audience");
                let opts = CompileOptions { force: true, ..CompileOptions::default() };
                super::compile(std::slice::from_ref(file), &out, &opts, &mut |_| {})?;
                Ok(out)
            }
            Self::Generate { devices, seed } => {
                let out = work.join("audience");
                if out.join(store::MANIFEST).is_file() {
                    return Ok(out);
                }
                let spec = GenerateSpec { devices: *devices, seed: *seed, ..GenerateSpec::default() };
                let shards = devices.div_ceil(10_000).clamp(1, 32) as u32;
                generate::compile_generated(&spec, &out, shards, true, &|_| {})?;
                Ok(out)
            }
        }
    }

    /// Prepares the audience in `work` (created if missing) and loads it.
    /// Blocking: file I/O and, the first time, compiling.
    pub fn load(&self, work: &Path) -> Result<(PathBuf, Audience), AudienceError> {
        std::fs::create_dir_all(work).map_err(|source| AudienceError::Io { path: work.to_owned(), source })?;
        let dir = self.prepare(work)?;
        let audience = Audience::load(&dir)?;
        Ok((dir, audience))
    }
}
