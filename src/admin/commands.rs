//! The bodies of the commands that read the state store (`status`, `log`, `dlq list`, `dlq retry`,
//! `versions list`) and of `verify`'s report, written to any writer: the command line runs them over
//! a store it opened itself, a running mirror over its own store handle for the admin socket. One
//! body for both, so a running mirror answers exactly what a stopped one would.

use super::{AdminError, Exit, Output};
use crate::model::{FileId, Refresh};
use crate::state::Store;
use std::path::Path;

/// `status --json`. Fields in name order: the bytes are those of the map the command printed before
/// it had a type (serde_json sorts a map's keys).
#[derive(serde::Serialize)]
struct StatusJson<'a> {
    bytes: u64,
    checkpoint: Option<&'a CheckpointJson>,
    dead_lettered: usize,
    files: usize,
    folders: usize,
    in_flight: usize,
    index: Option<&'a IndexJson>,
    last_run: Option<&'a crate::status::LiveStatus>,
    skipped: &'a std::collections::BTreeMap<String, usize>,
}

/// The saved checkpoint in `status`.
#[derive(serde::Serialize)]
struct CheckpointJson {
    checkpoint_age_seconds: u64,
    drives: &'static str,
    last_poll_unix_ms: u64,
    phase: String,
    start_token: String,
}

impl CheckpointJson {
    fn new(c: &crate::state::Checkpoint, now: u64) -> Self {
        let phase = match &c.phase {
            crate::state::FeedPhase::Listing { job, .. } => format!("initial listing, pass {}", job + 1),
            crate::state::FeedPhase::Changes { token } => format!("following changes from token {token}"),
        };
        CheckpointJson {
            checkpoint_age_seconds: now.saturating_sub(c.read_at_unix_ms) / 1000,
            drives: "all in scope (one change feed)",
            last_poll_unix_ms: c.read_at_unix_ms,
            phase,
            start_token: c.start_token.clone(),
        }
    }
}

/// How far the PostgreSQL index is behind the audit log, in `status`.
#[derive(serde::Serialize)]
struct IndexJson {
    applied_seq: u64,
    audit_head: u64,
    lag_events: u64,
}

/// One line of `log --json` (fields in name order, as the untyped map printed them).
#[derive(serde::Serialize)]
struct LogLineJson<'a> {
    at: String,
    detail: Option<&'a str>,
    file_id: &'a str,
    key: Option<&'a str>,
    operation: &'a str,
    seq: u64,
}

/// `mirrorflow status`: the saved checkpoint, what the store holds, and the live status.
/// `state_dir` holds the live status; `index_configured` says whether `[index]` names a database.
pub fn status(
    state_dir: &Path,
    index_configured: bool,
    store: &Store,
    json: bool,
    out: &mut Output<'_>,
) -> Result<Exit, AdminError> {
    let live = crate::status::LiveStatus::read(state_dir);
    let counts = store.counts()?;
    let checkpoint = store.checkpoint()?;
    let now = crate::model::unix_ms();
    let cp = checkpoint.as_ref().map(|c| CheckpointJson::new(c, now));
    let head = store.audit_head()?;
    let index = store.index_acked()?.map(|acked| IndexJson {
        applied_seq: acked,
        audit_head: head,
        lag_events: head.saturating_sub(acked),
    });
    let in_flight = live.as_ref().map_or(0, |l| l.in_flight);
    if json {
        let v = StatusJson {
            bytes: counts.bytes,
            checkpoint: cp.as_ref(),
            dead_lettered: counts.dead_lettered,
            files: counts.files,
            folders: counts.folders,
            in_flight,
            index: index.as_ref(),
            last_run: live.as_ref(),
            skipped: &counts.skipped,
        };
        writeln!(out.out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(Exit::Success);
    }
    match &cp {
        Some(c) => writeln!(out.out, "checkpoint: {} (last poll {}s ago)", c.phase, c.checkpoint_age_seconds)?,
        None => writeln!(out.out, "checkpoint: none (the next run lists everything)")?,
    }
    writeln!(
        out.out,
        "files mirrored: {}\nbytes mirrored: {}\nfolders: {}\ndead-lettered: {}",
        counts.files, counts.bytes, counts.folders, counts.dead_lettered
    )?;
    if !counts.skipped.is_empty() {
        let by_reason: Vec<String> = counts.skipped.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        writeln!(out.out, "skipped (Drive will not hand them over): {}", by_reason.join(", "))?;
    }
    if let Some(shard) = live.as_ref().and_then(|l| l.shard).filter(|s| s.count() > 1) {
        writeln!(out.out, "shard: {shard} (this process mirrors the users and shared drives hashed to it)")?;
    }
    if let Some(v) = live.as_ref().and_then(|l| l.verify.as_ref()) {
        writeln!(out.out, "{}", scheduled_verify_line(v, now))?;
    }
    match (store.index_acked()?, index_configured) {
        (Some(acked), _) => writeln!(
            out.out,
            "index (PostgreSQL): {} event(s) behind (applied up to audit seq {acked} of {head})",
            head.saturating_sub(acked)
        )?,
        (None, true) => writeln!(out.out, "index (PostgreSQL): not built yet (the next run builds it)")?,
        (None, false) => {}
    }
    Ok(Exit::Success)
}

/// One line about `[verify] every`'s last runs, from the live status.
fn scheduled_verify_line(v: &crate::verify::schedule::VerifyStatus, now_ms: u64) -> String {
    let ago = |t: Option<u64>| match t {
        Some(t) => format!("{}s ago", now_ms.saturating_sub(t) / 1000),
        None => "never".into(),
    };
    let mut line = format!(
        "scheduled verify: {} run(s), last {}, last clean {}; last found {} missing, {} mismatched, {} extra",
        v.runs,
        ago(v.last_run_unix_ms),
        ago(v.last_clean_unix_ms),
        v.missing,
        v.mismatched,
        v.extra,
    );
    if let Some(e) = &v.last_error {
        line.push_str(&format!(" (last error: {e})"));
    }
    line
}

/// `mirrorflow log`: the audit log from `since_unix_ms` on, oldest first, of one file or all.
pub fn log(
    store: &Store,
    since_unix_ms: u64,
    file: Option<&FileId>,
    json: bool,
    out: &mut Output<'_>,
) -> Result<Exit, AdminError> {
    let mut shown = 0u64;
    let mut failed: Option<std::io::Error> = None;
    store.for_each_audit(since_unix_ms, file, |seq, e| {
        let at =
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_unix_ms));
        let key = e.key.as_ref().map(|k| k.0.as_str());
        let line = if json {
            let line = LogLineJson {
                at: at.to_string(),
                detail: e.detail.as_deref(),
                file_id: &e.file_id.0,
                key,
                operation: &e.what,
                seq,
            };
            serde_json::to_string(&line).unwrap_or_default()
        } else {
            let detail = e.detail.as_deref().map(|d| format!("  ({d})")).unwrap_or_default();
            format!("{at}  {:<13}  {}  [{}]{detail}", e.what, key.unwrap_or("-"), e.file_id.0)
        };
        shown += 1;
        match writeln!(out.out, "{line}") {
            Ok(()) => true,
            Err(err) => {
                failed = Some(err);
                false
            }
        }
    })?;
    match failed {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Some(e) => return Err(e.into()),
        None if shown == 0 && !json => writeln!(out.err, "no entries match")?,
        None => {}
    }
    Ok(Exit::Success)
}

/// `mirrorflow dlq list`.
pub fn dlq_list(store: &Store, json: bool, out: &mut Output<'_>) -> Result<Exit, AdminError> {
    let dl = store.dead_letters()?;
    if json {
        writeln!(out.out, "{}", serde_json::to_string_pretty(&dl)?)?;
    } else if dl.is_empty() {
        writeln!(out.out, "the dead-letter store is empty")?;
    } else {
        for d in &dl {
            writeln!(out.out, "{}  {:?}  {}  attempts={}  {}", d.id, d.name, d.reason, d.attempts, d.last_error)?;
        }
    }
    Ok(Exit::Success)
}

/// Who serves a `dlq retry`'s refresh requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryBy {
    /// A stopped mirror: the next `run` of this config file.
    NextRun(String),
    /// The running mirror answering on the admin socket: its feed, woken at once.
    Running,
}

/// `mirrorflow dlq retry`: asks Drive again for the dead-lettered files (all when `ids` is empty) and
/// releases them. The change token is kept: each file is fetched as it is now (and removed if it is
/// gone), so changes made meanwhile, deletions included, still arrive through the feed. Returns how
/// many were released.
pub fn dlq_retry(store: &Store, ids: &[FileId], by: &RetryBy) -> Result<usize, AdminError> {
    let targets: Vec<FileId> =
        store.dead_letters()?.into_iter().map(|d| d.id).filter(|id| ids.is_empty() || ids.contains(id)).collect();
    let requests: Vec<Refresh> = targets.iter().cloned().map(Refresh::File).collect();
    match by {
        // Beside a running committer only the refresh keyspace may be written (no audit seq taken).
        RetryBy::Running => store.add_refresh_requests(&requests)?,
        RetryBy::NextRun(_) => store.request_refresh(&requests)?,
    }
    let n = if targets.is_empty() { 0 } else { store.clear_dead_letters(&targets)? };
    if *by == RetryBy::Running {
        crate::metrics::dlq_files(store.dead_letter_count()?);
    }
    Ok(n)
}

/// `mirrorflow versions list` of the file `file` names (an id or a key).
pub fn versions_list(
    store: &Store,
    dest: &crate::dest::Destination,
    file: &str,
    json: bool,
    out: &mut Output<'_>,
) -> Result<Exit, AdminError> {
    let Some(id) = crate::dest::versions::find_file(store, dest, file)? else {
        return Err(AdminError::Usage(format!("no mirrored file has the id or key {file:?}")));
    };
    let kept = store.kept_versions(&id)?;
    if json {
        writeln!(out.out, "{}", serde_json::to_string_pretty(&kept)?)?;
    } else if kept.is_empty() {
        writeln!(out.out, "{id}: no earlier contents kept (set [destination] versions = N to keep them)")?;
    } else {
        for v in &kept {
            writeln!(
                out.out,
                "{}  version {}  {} bytes  md5 {}  {}",
                v.name,
                v.version,
                v.size,
                v.md5.as_deref().unwrap_or("-"),
                v.object
            )?;
        }
    }
    Ok(Exit::Success)
}

/// Writes a verify report; the exit says whether the mirror equals Drive (`dead_lettered` after a
/// repair: files that could not be mirrored).
pub fn verify_report(
    report: &crate::verify::Report,
    json: bool,
    dead_lettered: usize,
    out: &mut Output<'_>,
) -> Result<Exit, AdminError> {
    if json {
        report.write_json(&mut out.out)?
    } else {
        report.write_human(&mut out.out)?
    }
    Ok(match (report.equal(), dead_lettered) {
        (true, _) => Exit::Success,
        (false, n) if n > 0 => {
            writeln!(out.err, "{n} file(s) could not be mirrored (see `mirrorflow dlq list`)")?;
            Exit::DeadLettered
        }
        (false, _) => Exit::Differences,
    })
}
