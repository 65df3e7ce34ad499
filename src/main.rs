//! The `mirrorflow` command line. Only argument handling and exit codes live here.

/// `println!` that ignores a closed stdout (`mirrorflow status | head -1` must not panic).
macro_rules! out_line {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! err_line {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mirrorflow::config::Config;
use mirrorflow::pipeline::{self, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc, as Vector ships: fjall's memtables are skip lists of many small nodes freed together at
/// each flush, and glibc's per-thread arenas kept that memory fragmented (peak RSS 225 MiB at a million
/// files against 178 MiB with jemalloc, and 12 % less CPU; BENCHMARKS.md, scenario `million`).
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code: a file could not be mirrored (see `mirrorflow dlq list`).
const EXIT_DEAD_LETTERED: u8 = 3;
/// Exit code: bad usage or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit code: the run failed (Drive or destination unreachable, store error, stage failing too often).
const EXIT_FAILED: u8 = 1;
/// Exit code: `verify` found differences between the mirror and Drive.
const EXIT_DIFFERENCES: u8 = 4;
/// Exit code: `run --once` was stopped by SIGINT/SIGTERM before it finished (state kept; run again).
const EXIT_INTERRUPTED: u8 = 5;

#[derive(Parser)]
#[command(
    name = "mirrorflow",
    version,
    about = "Keep a one-way mirror of Google Drive in object storage (S3, Supabase, GCS, Azure, a local folder).",
    after_help = "EXIT CODES:\n  0  done: every file mirrored or skipped\n  1  the run failed (Drive or destination unreachable after retries, state store error), or run --once\n     left the PostgreSQL index ([index]) behind after index.catch_up_timeout\n  2  bad usage or configuration\n  3  some files could not be mirrored; they are in the dead-letter store (mirrorflow dlq list)\n  4  verify found differences between the mirror and Drive (missing, mismatched or extra objects)\n  5  run --once was interrupted (SIGINT/SIGTERM) before it finished; state is kept and the next run resumes\n     (continuous mode stops on a signal as its normal end: 0, or 3)\n\nQUICK START (offline, against the bundled Drive emulator):\n  bash scripts/quickstart.sh"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mirror Drive into the destination; keeps following changes unless --once.
    Run {
        /// Do the initial sync (or catch up from the saved checkpoint) and exit.
        #[arg(long)]
        once: bool,
        /// Hide the progress line.
        #[arg(long)]
        quiet: bool,
        /// List what the run would upload, replace, move and remove (with sizes) and change nothing:
        /// neither the destination nor the state. Exit 0.
        #[arg(long, conflicts_with = "once")]
        dry_run: bool,
        /// With --dry-run: print one JSON object.
        #[arg(long, requires = "dry_run")]
        json: bool,
        /// The pipeline configuration.
        config: PathBuf,
    },
    /// Compare the mirror with Drive, key by key: missing, mismatched and extra objects.
    ///
    /// Lists every drive in scope from Drive and every object under the destination's prefix. Sizes are
    /// compared, and md5s where the destination tells them without reading (an S3 single-part ETag,
    /// the `drive-md5` metadata); --checksum reads and hashes every object. Exit 0 when the mirror
    /// equals Drive, 4 when it does not.
    Verify {
        /// Read and hash every object (finds same-size corruption on any destination).
        #[arg(long)]
        checksum: bool,
        /// Fetch missing and mismatched files again, remove extras per `deletes`, then verify again
        /// (exit 0 when equal, 3 when some files were dead-lettered).
        #[arg(long)]
        repair: bool,
        /// With --repair: also remove (per `deletes`) the objects outside the mirror's folders
        /// (my-drive/, shared-drives/, shared-with-me/); without it they are only reported.
        #[arg(long, requires = "repair")]
        prune_unknown: bool,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Hide the progress line.
        #[arg(long)]
        quiet: bool,
        /// The pipeline configuration.
        config: PathBuf,
    },
    /// Check a configuration file and print every problem found.
    Validate {
        /// The pipeline configuration.
        config: PathBuf,
    },
    /// The configuration itself: its JSON Schema, its reference (docs/CONFIG.md), a starting file.
    Config {
        #[command(subcommand)]
        action: mirrorflow::config::cli::ConfigCommand,
    },
    /// Show the saved checkpoint and what the store holds.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The pipeline configuration.
        config: PathBuf,
    },
    /// Inspect or retry files that could not be mirrored.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// What was done, when, to which key: the audit log, with the reason for skips and failures.
    ///
    /// Read from the state store, which keeps entries for [state] audit_retention (30 days by
    /// default); oldest first. Every written, moved, removed and dead-lettered file is there, and every
    /// file Drive refused (downloads disabled, abusive, no export, download quota); unchanged files are
    /// not. Reads the store, so it answers once a running mirror has stopped.
    Log {
        /// Only entries from this long ago on ("2h", "30m", "7days").
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        /// Only the entries of this Drive file id.
        #[arg(long)]
        file: Option<String>,
        /// One JSON object per line (seq, at, operation, key, file_id, detail).
        #[arg(long)]
        json: bool,
        /// The pipeline configuration.
        config: PathBuf,
    },
    /// Earlier contents of a file kept under <prefix>/.versions/ ([destination] versions = N).
    ///
    /// Before a file's object is replaced by new content or removed, mirrorflow keeps its content
    /// with a server-side copy, at most N per key. Reads the store, so it answers once a running
    /// mirror has stopped.
    Versions {
        #[command(subcommand)]
        action: VersionsAction,
    },
    /// Sign in with your own Google account (an OAuth "Desktop app" client in [source] credentials).
    Auth {
        #[command(subcommand)]
        action: AuthAction,
    },
    /// Start the bundled Google Drive v3 emulator (for trying mirrorflow offline and for tests).
    Emulator(EmulatorArgs),
}

#[derive(Subcommand)]
enum AuthAction {
    /// Sign in: opens Google's consent page, receives its answer on a loopback port and saves the
    /// sign-in to [source] token_cache (mode 0600). Run it again whenever a run says to sign in again.
    Login {
        /// Print the consent URL instead of opening a browser (open it on any machine that can reach
        /// this one's loopback port, e.g. through `ssh -L`).
        #[arg(long)]
        no_browser: bool,
        /// Receive Google's answer on this loopback port instead of a random one, so an
        /// `ssh -L N:127.0.0.1:N` tunnel can be opened before the URL is printed.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        /// How long to wait for the consent.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The pipeline configuration.
        config: PathBuf,
    },
    /// Show who is signed in, with which scopes.
    Status {
        /// The pipeline configuration.
        config: PathBuf,
    },
    /// Revoke the sign-in at Google and delete the token cache.
    Logout {
        /// The pipeline configuration.
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// List dead-lettered files with their reasons.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The pipeline configuration.
        config: PathBuf,
    },
    /// Forget dead-lettered files (all, or the given ids) and mirror everything again from a full
    /// listing; files already mirrored are skipped.
    Retry {
        /// The pipeline configuration.
        config: PathBuf,
        /// File ids to retry (default: all).
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
enum VersionsAction {
    /// The kept versions of a file, oldest first (name, Drive version, size, md5, object).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The pipeline configuration.
        config: PathBuf,
        /// A Drive file id, or the file's key in the destination (relative to the prefix).
        file: String,
    },
    /// Put a kept version back as the file's current object (the mirror only: Drive is never
    /// written). The content there now is kept first, so a restore can be undone; the next change
    /// of the file in Drive replaces it, and `verify` reports it as differing from Drive meanwhile.
    Restore {
        /// The pipeline configuration.
        config: PathBuf,
        /// A Drive file id, or the file's key in the destination (relative to the prefix).
        file: String,
        /// The version's name (as `versions list` shows it) or its Drive version number.
        #[arg(long)]
        to: String,
        /// Write the version to this key (relative to the prefix, outside the mirror's folders, and
        /// free) instead of the file's own key; the file's record and object stay as they are. A
        /// restore never overwrites another file's object: when another file holds the key now,
        /// restore refuses (exit 2) and names it.
        #[arg(long = "as", value_name = "KEY")]
        as_key: Option<String>,
    },
}

#[derive(Args)]
struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: std::net::SocketAddr,
    /// Corpus seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Binary files in My Drive.
    #[arg(long, default_value_t = 200)]
    files: usize,
    /// Folders in My Drive.
    #[arg(long, default_value_t = 20)]
    folders: usize,
    /// Folder depth.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// Google Docs, Sheets, Slides and Drawings.
    #[arg(long, default_value_t = 8)]
    gdocs: usize,
    /// Shared drives.
    #[arg(long, default_value_t = 1)]
    shared_drives: usize,
    /// Add hostile names, shortcuts, an abuse-flagged file and an oversized export.
    #[arg(long)]
    hostile: bool,
    /// Add one big file of this many MiB.
    #[arg(long, default_value_t = 0)]
    big_file_mib: u64,
    /// Write a service-account key for this emulator to PATH (use it as [source] credentials).
    #[arg(long)]
    write_key: Option<PathBuf>,
}

fn init_logs(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("MIRRORFLOW_LOG").unwrap_or_else(|_| "mirrorflow=info,warn".into());
    // yup-oauth2 logs refresh tokens and token responses at debug level: never below warn, whatever
    // MIRRORFLOW_LOG asks, so no secret reaches a log.
    let filter = match "yup_oauth2=warn".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    // A closed stderr must not turn the logger's own write errors into panics; no colour codes unless a
    // terminal reads them.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        err_line!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logs(cli.json_logs);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(cmd: Command) -> ExitCode {
    let r = match cmd {
        Command::Run { dry_run: true, json, quiet, config, .. } => return dry_run(&config, json, quiet).await,
        Command::Run { once, quiet, config, .. } => return run(&config, once, quiet).await,
        Command::Validate { config } => return validate(&config),
        Command::Config { action } => return mirrorflow::config::cli::run(action),
        Command::Verify { checksum, repair, prune_unknown, json, quiet, config } => {
            return verify(&config, VerifyArgs { checksum, repair, prune_unknown, json, quiet }).await;
        }
        Command::Status { json, config } => status(&config, json),
        Command::Dlq { action: DlqAction::List { json, config } } => dlq_list(&config, json),
        Command::Dlq { action: DlqAction::Retry { config, ids } } => dlq_retry(&config, ids),
        Command::Log { since, file, json, config } => log(&config, since, file, json),
        Command::Versions { action: VersionsAction::List { json, config, file } } => {
            versions_list(&config, &file, json)
        }
        Command::Versions { action: VersionsAction::Restore { config, file, to, as_key } } => {
            versions_restore(&config, &file, &to, as_key.as_deref()).await
        }
        Command::Auth { action } => auth(action).await,
        Command::Emulator(a) => emulator(a).await,
    };
    match r {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            err_line!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            err_line!("error: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// The OAuth client and token cache of a config, or a usage error saying what is missing.
fn sign_in_setup(
    path: &std::path::Path,
) -> anyhow::Result<(Config, mirrorflow::drive::login::InstalledClient, PathBuf)> {
    let cfg = Config::load(path).map_err(|e| UsageError(e.to_string()))?;
    let file = &cfg.source.credentials;
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let client = mirrorflow::drive::login::InstalledClient::parse(file, &text).map_err(|e| {
        UsageError(format!("source.credentials: {e} (auth login needs a \"Desktop app\" OAuth client file)"))
    })?;
    let cache = cfg.source.token_cache.clone().ok_or_else(|| {
        UsageError("source.token_cache: set it to where the sign-in is saved, e.g. \"token.json\"".into())
    })?;
    Ok((cfg, client, cache))
}

async fn auth(action: AuthAction) -> anyhow::Result<ExitCode> {
    use mirrorflow::drive::{login, token_cache::SignIn};
    match action {
        AuthAction::Login { no_browser, port, timeout, config } => {
            let (cfg, client, cache) = sign_in_setup(&config)?;
            let options = login::LoginOptions {
                scope: mirrorflow::drive::auth::scope_url(&cfg.source.scope).unwrap_or_default(),
                api_base_url: cfg.source.api_base_url.clone(),
                wait: timeout,
                port,
            };
            let present = |url: &str| {
                if no_browser || !open_browser(url) {
                    out_line!("Open this URL in a browser on this machine and allow access:\n{url}");
                } else {
                    err_line!("Opened the consent page in your browser. If nothing opened, visit:\n{url}");
                }
            };
            let sign_in = login::login(&client, &options, present).await?;
            sign_in.save(&cache)?;
            out_line!("Signed in as {} ({}); saved to {}", sign_in.account, sign_in.scopes.join(" "), cache.display());
            Ok(ExitCode::SUCCESS)
        }
        AuthAction::Status { config } => {
            let (_, _, cache) = sign_in_setup(&config)?;
            match SignIn::load(&cache)? {
                Some(s) => out_line!(
                    "signed in as {}\nscopes: {}\ntoken cache: {}",
                    s.account,
                    s.scopes.join(" "),
                    cache.display()
                ),
                None => {
                    out_line!(
                        "not signed in (no token cache at {}); run `mirrorflow auth login {}`",
                        cache.display(),
                        config.display()
                    );
                    return Ok(ExitCode::from(EXIT_FAILED));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuthAction::Logout { config } => {
            let (_, client, cache) = sign_in_setup(&config)?;
            let Some(sign_in) = SignIn::load(&cache)? else {
                out_line!("not signed in (no token cache at {})", cache.display());
                return Ok(ExitCode::SUCCESS);
            };
            let revoked = login::revoke(&client, &sign_in).await;
            std::fs::remove_file(&cache).with_context(|| format!("cannot delete {}", cache.display()))?;
            revoked.context("the token cache is deleted, but Google did not confirm the revocation: remove mirrorflow's access at https://myaccount.google.com/permissions")?;
            out_line!("signed out {}: access revoked and {} deleted", sign_in.account, cache.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens `url` in the desktop's browser; false when there is none to open.
fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn run(path: &std::path::Path, once: bool, quiet: bool) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let progress = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    match pipeline::run(&cfg, RunOptions { once, progress }).await {
        Ok(summary) => {
            let p = &summary.progress;
            out_line!(
                "mirrorflow: {} files mirrored ({} bytes), {} removed, {} skipped, {} dead-lettered this run",
                p.committed,
                p.bytes,
                p.removed,
                p.skipped,
                p.dead_lettered
            );
            if let Some(line) = mirrorflow::progress::refused_line(p) {
                out_line!("mirrorflow: {line}");
            }
            if once && summary.interrupted {
                err_line!(
                    "mirrorflow: interrupted before the mirror was complete; state is kept and the next run resumes"
                );
                return ExitCode::from(EXIT_INTERRUPTED);
            }
            if let Some(behind) = summary.index_behind.filter(|b| *b > 0) {
                err_line!(
                    "mirrorflow: the mirror is complete, but the PostgreSQL index is {behind} event(s) behind after \
                     waiting index.catch_up_timeout; the next run catches it up"
                );
                return ExitCode::from(EXIT_FAILED);
            }
            if summary.dead_letters.is_empty() {
                return ExitCode::SUCCESS;
            }
            out_line!("{} file(s) could not be mirrored:", summary.dead_letters.len());
            for d in &summary.dead_letters {
                out_line!("  {}  {:?}  {}: {}", d.id, d.name, d.reason, d.last_error);
            }
            out_line!(
                "(see `mirrorflow dlq list {}`; retry with `mirrorflow dlq retry {}`)",
                path.display(),
                path.display()
            );
            ExitCode::from(EXIT_DEAD_LETTERED)
        }
        Err(e) => {
            err_line!("error: {e}");
            if matches!(
                e,
                pipeline::PipelineError::Scope(_)
                    | pipeline::PipelineError::Index(_)
                    | pipeline::PipelineError::Metrics(_)
                    | pipeline::PipelineError::OtherDestination { .. }
            ) {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

/// `run --dry-run`: a reconcile read as the actions the next run would take.
async fn dry_run(path: &std::path::Path, json: bool, quiet: bool) -> ExitCode {
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let progress = !quiet && !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let opts = mirrorflow::verify::VerifyOptions { checksum: false, progress, prune_unknown: false };
    match mirrorflow::verify::dry_run(&cfg, &opts).await {
        Ok(plan) if json => match serde_json::to_string(&plan) {
            Ok(text) => {
                out_line!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                err_line!("error: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        },
        Ok(plan) => {
            let _ = plan.write_human(&mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Err(e) => {
            err_line!("error: {e}");
            ExitCode::from(if e.is_usage() { EXIT_USAGE } else { EXIT_FAILED })
        }
    }
}

/// `verify`'s flags.
struct VerifyArgs {
    checksum: bool,
    repair: bool,
    prune_unknown: bool,
    json: bool,
    quiet: bool,
}

async fn verify(path: &std::path::Path, a: VerifyArgs) -> ExitCode {
    use mirrorflow::verify::{self as v, VerifyOptions};
    let cfg = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let opts = VerifyOptions {
        checksum: a.checksum,
        prune_unknown: a.prune_unknown,
        progress: !a.quiet && !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let failed = |e: v::VerifyError| {
        err_line!("error: {e}");
        ExitCode::from(if e.is_usage() { EXIT_USAGE } else { EXIT_FAILED })
    };
    let found = match v::verify(&cfg, &opts).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    if !a.repair || found.equal() {
        return print_verify(&found, a.json, 0);
    }
    if !a.json {
        let _ = found.write_human(&mut std::io::stdout());
        out_line!("repairing…");
    }
    match mirrorflow::repair::repair(&cfg, &found, &opts).await {
        Ok(r) => print_verify(&r.after, a.json, r.dead_lettered),
        Err(e) => failed(e),
    }
}

/// Prints a verify report; the exit code says whether the mirror equals Drive.
fn print_verify(report: &mirrorflow::verify::Report, json: bool, dead_lettered: usize) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let written = if json { report.write_json(&mut out) } else { report.write_human(&mut out) };
    if let Err(e) = written {
        err_line!("error: {e}");
        return ExitCode::from(EXIT_FAILED);
    }
    match (report.equal(), dead_lettered) {
        (true, _) => ExitCode::SUCCESS,
        (false, n) if n > 0 => {
            err_line!("{n} file(s) could not be mirrored (see `mirrorflow dlq list`)");
            ExitCode::from(EXIT_DEAD_LETTERED)
        }
        (false, _) => ExitCode::from(EXIT_DIFFERENCES),
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    match load_config(path) {
        Ok(_) => {
            out_line!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn open_store(path: &std::path::Path) -> anyhow::Result<mirrorflow::state::Store> {
    let cfg = Config::load(path).map_err(|e| UsageError(e.to_string()))?;
    mirrorflow::state::Store::open_with(&cfg.state.dir, cfg.state.store_memory())
        .with_context(|| format!("opening state in {}", cfg.state.dir.display()))
}

fn status(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(path).map_err(|e| UsageError(e.to_string()))?;
    let live = mirrorflow::status::LiveStatus::read(&cfg.state.dir);
    let store = match mirrorflow::state::Store::open_with(&cfg.state.dir, cfg.state.store_memory()) {
        Ok(s) => s,
        Err(e) => {
            // A running pipeline holds the store's lock: show what it publishes instead.
            let Some(live) = live else { return Err(e).context("opening the state store") };
            out_line!("{}", serde_json::to_string_pretty(&serde_json::json!({"live": live}))?);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let counts = store.counts()?;
    let checkpoint = store.checkpoint()?;
    let now = mirrorflow::state::unix_ms();
    let cp = checkpoint.as_ref().map(|c| {
        let phase = match &c.phase {
            mirrorflow::state::FeedPhase::Listing { job, .. } => format!("initial listing, pass {}", job + 1),
            mirrorflow::state::FeedPhase::Changes { token } => format!("following changes from token {token}"),
        };
        serde_json::json!({"drives": "all in scope (one change feed)", "phase": phase, "start_token": c.start_token,
            "last_poll_unix_ms": c.read_at_unix_ms, "checkpoint_age_seconds": now.saturating_sub(c.read_at_unix_ms) / 1000})
    });
    let head = store.audit_head()?;
    let index = store.index_acked()?.map(
        |acked| serde_json::json!({"applied_seq": acked, "audit_head": head, "lag_events": head.saturating_sub(acked)}),
    );
    let v = serde_json::json!({
        "checkpoint": cp,
        "index": index,
        "files": counts.files, "folders": counts.folders, "bytes": counts.bytes, "dead_lettered": counts.dead_lettered,
        "skipped": counts.skipped,
        "in_flight": live.as_ref().map_or(0, |l| l.in_flight),
        "last_run": live,
    });
    if json {
        out_line!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &cp {
        Some(c) => out_line!(
            "checkpoint: {} (last poll {}s ago)",
            c["phase"].as_str().unwrap_or(""),
            c["checkpoint_age_seconds"]
        ),
        None => out_line!("checkpoint: none (the next run lists everything)"),
    }
    out_line!(
        "files mirrored: {}\nbytes mirrored: {}\nfolders: {}\ndead-lettered: {}",
        counts.files,
        counts.bytes,
        counts.folders,
        counts.dead_lettered
    );
    if !counts.skipped.is_empty() {
        let by_reason: Vec<String> = counts.skipped.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        out_line!("skipped (Drive will not hand them over): {}", by_reason.join(", "));
    }
    if let Some(v) = live.as_ref().and_then(|l| l.verify.as_ref()) {
        out_line!("{}", scheduled_verify_line(v, now));
    }
    match (store.index_acked()?, cfg.index.url().is_some()) {
        (Some(acked), _) => out_line!(
            "index (PostgreSQL): {} event(s) behind (applied up to audit seq {acked} of {head})",
            head.saturating_sub(acked)
        ),
        (None, true) => out_line!("index (PostgreSQL): not built yet (the next run builds it)"),
        (None, false) => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// One line about `[verify] every`'s last runs, from the live status.
fn scheduled_verify_line(v: &mirrorflow::verify::schedule::VerifyStatus, now_ms: u64) -> String {
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

/// `mirrorflow log`: streams the audit log, oldest first, filtered by time and file.
fn log(
    path: &std::path::Path,
    since: Option<std::time::Duration>,
    file: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(path).map_err(|e| UsageError(e.to_string()))?;
    let dir = &cfg.state.dir;
    if !dir.exists() {
        err_line!("nothing is logged yet: there is no state in {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let store = mirrorflow::state::Store::open(dir).map_err(|e| {
        if e.is_locked() {
            anyhow::anyhow!("a mirrorflow run holds the state in {}: `log` reads it once that run stops", dir.display())
        } else {
            anyhow::Error::new(e).context(format!("opening the state in {}", dir.display()))
        }
    })?;
    let now_ms = mirrorflow::state::unix_ms();
    let since_ms = since.map(|d| now_ms.saturating_sub(d.as_millis() as u64)).unwrap_or(0);
    use std::io::Write as _;
    let file = file.map(mirrorflow::model::FileId);
    let mut shown = 0u64;
    let mut failed: Option<std::io::Error> = None;
    store.for_each_audit(since_ms, file.as_ref(), |seq, e| {
        let at = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_unix_ms));
        let key = e.key.as_ref().map(|k| k.0.as_str());
        let line = if json {
            serde_json::json!({"seq": seq, "at": at.to_string(), "operation": e.what, "key": key, "file_id": e.file_id.0, "detail": e.detail})
                .to_string()
        } else {
            let detail = e.detail.as_deref().map(|d| format!("  ({d})")).unwrap_or_default();
            format!("{at}  {:<13}  {}  [{}]{detail}", e.what, key.unwrap_or("-"), e.file_id.0)
        };
        shown += 1;
        match writeln!(std::io::stdout(), "{line}") {
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
        None if shown == 0 && !json => err_line!("no entries match"),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// The store, destination and file id a `versions` command names; an unknown file is a usage error.
fn versions_target(
    path: &std::path::Path,
    file: &str,
) -> anyhow::Result<(mirrorflow::state::Store, mirrorflow::dest::Destination, mirrorflow::model::FileId)> {
    let cfg = Config::load(path).map_err(|e| UsageError(e.to_string()))?;
    let store = mirrorflow::state::Store::open_with(&cfg.state.dir, cfg.state.store_memory()).map_err(|e| {
        if e.is_locked() {
            anyhow::anyhow!(
                "a mirrorflow run holds the state in {}: `versions` reads it once that run stops",
                cfg.state.dir.display()
            )
        } else {
            anyhow::Error::new(e).context("opening the state store")
        }
    })?;
    let configured = mirrorflow::pipeline::destination_identity(&cfg.destination);
    if let Some(recorded) = store.bound_destination()?.filter(|r| *r != configured) {
        return Err(UsageError(format!(
            "the state in {} belongs to destination {recorded:?}, but the configuration names {configured:?}",
            cfg.state.dir.display()
        ))
        .into());
    }
    let dest = mirrorflow::dest::Destination::from_config(&cfg.destination, &cfg.retry)?;
    let Some(id) = mirrorflow::dest::versions::find_file(&store, &dest, file)? else {
        return Err(UsageError(format!("no mirrored file has the id or key {file:?}")).into());
    };
    Ok((store, dest, id))
}

fn versions_list(path: &std::path::Path, file: &str, json: bool) -> anyhow::Result<ExitCode> {
    let (store, _dest, id) = versions_target(path, file)?;
    let kept = store.kept_versions(&id)?;
    if json {
        out_line!("{}", serde_json::to_string_pretty(&kept)?);
    } else if kept.is_empty() {
        out_line!("{id}: no earlier contents kept (set [destination] versions = N to keep them)");
    } else {
        for v in &kept {
            out_line!(
                "{}  version {}  {} bytes  md5 {}  {}",
                v.name,
                v.version,
                v.size,
                v.md5.as_deref().unwrap_or("-"),
                v.object
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn versions_restore(
    path: &std::path::Path,
    file: &str,
    to: &str,
    as_key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    use mirrorflow::dest::versions;
    mirrorflow::install_crypto_provider();
    let (store, dest, id) = versions_target(path, file)?;
    match versions::restore(&dest, &store, &id, to, as_key).await {
        Ok((v, key)) => {
            out_line!("{id}: version {} (Drive version {}) restored to {key}", v.name, v.version);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_usage() => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

fn dlq_list(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let dl = open_store(path)?.dead_letters()?;
    if json {
        out_line!("{}", serde_json::to_string_pretty(&dl)?);
    } else if dl.is_empty() {
        out_line!("the dead-letter store is empty");
    } else {
        for d in &dl {
            out_line!("{}  {:?}  {}  attempts={}  {}", d.id, d.name, d.reason, d.attempts, d.last_error);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dlq_retry(path: &std::path::Path, ids: Vec<String>) -> anyhow::Result<ExitCode> {
    let store = open_store(path)?;
    let ids: Vec<_> = ids.into_iter().map(mirrorflow::model::FileId).collect();
    let targets: Vec<_> =
        store.dead_letters()?.into_iter().map(|d| d.id).filter(|id| ids.is_empty() || ids.contains(id)).collect();
    // The change token is kept: each file is fetched from Drive as it is now (and removed if it is
    // gone), so changes made meanwhile, deletions included, still arrive through the feed.
    let requests: Vec<_> = targets.iter().cloned().map(mirrorflow::model::Refresh::File).collect();
    store.request_refresh(&requests)?;
    let n = if targets.is_empty() { 0 } else { store.clear_dead_letters(&targets)? };
    out_line!(
        "{n} file(s) released from the dead-letter store; run `mirrorflow run --once {}` to mirror them again",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn emulator(a: EmulatorArgs) -> anyhow::Result<ExitCode> {
    let cfg = drive_emulator::EmulatorConfig {
        seed: a.seed,
        files: a.files,
        folders: a.folders,
        depth: a.depth,
        gdocs: a.gdocs,
        shared_drives: a.shared_drives,
        hostile: a.hostile,
        big_file_mib: a.big_file_mib,
        ..Default::default()
    };
    drive_emulator::run_cli(cfg, a.listen, a.write_key).await.context("emulator")?;
    Ok(ExitCode::SUCCESS)
}
