//! `verify --repair`: a reconcile's findings repaired through one pipeline run, then verified again.
//! It sits above both `verify` and `pipeline`, so neither imports the other's command.

use crate::config::Config;
use crate::pipeline::{self, PipelineError, RunOptions};
use crate::verify::{Report, VerifyError, VerifyOptions, open_store, request_repairs, verify};

/// What `--repair` did.
#[derive(Debug)]
pub struct Repair {
    /// The verify after the repair.
    pub after: Report,
    /// Files in the dead-letter store after the repair's run.
    pub dead_lettered: usize,
}

/// Repairs what `found` lists through one pipeline run ([`request_repairs`], then `run --once`, so the
/// store records everything written), then verifies again.
pub async fn repair(cfg: &Config, found: &Report, opts: &VerifyOptions) -> Result<Repair, VerifyError> {
    let requested = match open_store(cfg)? {
        Some(store) => request_repairs(&store, found, opts.prune_unknown)?,
        None => 0,
    };
    tracing::info!(requests = requested, "repairing through the pipeline");
    let summary = pipeline::run(cfg, RunOptions { once: true, progress: opts.progress, ..Default::default() }).await?;
    let after = verify(cfg, opts).await?;
    Ok(Repair { after, dead_lettered: summary.dead_letters.len() })
}

impl From<PipelineError> for VerifyError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Drive(e) => VerifyError::Drive(e),
            PipelineError::Dest(e) => VerifyError::Dest(e),
            PipelineError::Store(e) => VerifyError::Store(e),
            PipelineError::Scope(s) => VerifyError::Scope(format!("source.drives: {s}")),
            other => VerifyError::Repair(Box::new(other)),
        }
    }
}
