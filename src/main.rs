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
use mirrorflow::admin::Request;
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
    /// With `[source] subjects` (several users of a domain): act on this user's drive alone — its
    /// state, dead letters, log and objects under users/<EMAIL>/ (status, log, dlq, verify, run, run
    /// --dry-run, versions).
    #[arg(long, global = true, value_name = "EMAIL")]
    user: Option<String>,
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
    /// not. A running mirror answers through its admin socket (admin.sock in the state folder).
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
    /// with a server-side copy, at most N per key. `list` asks a running mirror through its admin
    /// socket; `restore` needs the mirror stopped.
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
    /// A live view of a running mirror: per stage items/s, queue depth against capacity and restarts;
    /// files and bytes mirrored, dead letters, breakers, checkpoint lag. `q` or Ctrl-C quits; plain
    /// lines, one block a tick, when stdout is not a terminal.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        every: std::time::Duration,
        /// Stop after this many refreshes (default: until `q` or Ctrl-C).
        #[arg(long)]
        ticks: Option<u64>,
        /// The pipeline configuration.
        config: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) generated from this CLI.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print mirrorflow's man page (roff, section 1) generated from this CLI, or write one page per
    /// command into a folder.
    Man {
        /// Write mirrorflow.1 and a page for each command into this folder instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
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
    /// Serve a Workspace domain with these users (comma-separated emails), each with their own My
    /// Drive of --files files and a member of every shared drive; the key then acts as the user its
    /// JWT `sub` names (domain-wide delegation).
    #[arg(long, value_delimiter = ',', value_name = "EMAILS")]
    users: Vec<String>,
    /// Administrators of the domain (comma-separated; added to --users), who may list the users.
    #[arg(long, value_delimiter = ',', value_name = "EMAILS")]
    admin: Vec<String>,
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
    load_scoped(path).map_err(|e| {
        err_line!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// `--user EMAIL`, when given.
static USER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The configuration file, narrowed to one user's drive with `--user`.
fn load_scoped(path: &std::path::Path) -> Result<Config, String> {
    let cfg = Config::load(path).map_err(|e| e.to_string())?;
    match USER.get() {
        Some(email) => mirrorflow::domain::units::user_config(&cfg, email).map_err(|e| e.to_string()),
        None => Ok(cfg),
    }
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
    if let Some(email) = cli.user {
        let _ = USER.set(email);
    }
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
        Command::Status { json, config } => match domain_status(&config, json) {
            Ok(true) => Ok(ExitCode::SUCCESS),
            Ok(false) => ask_state(&config, Request::Status { json }),
            Err(e) => Err(e),
        },
        Command::Dlq { action: DlqAction::List { json, config } } => ask_state(&config, Request::DlqList { json }),
        Command::Dlq { action: DlqAction::Retry { config, ids } } => ask_state(&config, Request::DlqRetry { ids }),
        Command::Log { since, file, json, config } => {
            let since_unix_ms = since.map_or(0, |d| mirrorflow::state::unix_ms().saturating_sub(d.as_millis() as u64));
            ask_state(&config, Request::Log { since_unix_ms, file, json })
        }
        Command::Versions { action: VersionsAction::List { json, config, file } } => {
            ask_state(&config, Request::VersionsList { file, json })
        }
        Command::Top { every, ticks, config } => top(&config, every, ticks),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "mirrorflow",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man(dir.as_deref()),
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
    let cfg = load_scoped(path).map_err(UsageError)?;
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
    if cfg.source.subjects.is_some() {
        return run_domain(&cfg, once).await;
    }
    match pipeline::run(&cfg, RunOptions { once, progress, ..Default::default() }).await {
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
                    | pipeline::PipelineError::Shard(_)
                    | pipeline::PipelineError::OtherDestination { .. }
            ) {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

/// `run` over several users of a domain (`[source] subjects`): a line per unit that failed or
/// dead-lettered files; exit 1 when a unit failed (the others were mirrored), 3 when files were
/// dead-lettered, 5 when interrupted.
async fn run_domain(cfg: &Config, once: bool) -> ExitCode {
    let shard = match cfg.cluster.shard() {
        Ok(s) => s,
        Err(e) => {
            err_line!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match mirrorflow::domain::run(cfg, &RunOptions { once, ..Default::default() }, &shard).await {
        Ok(summary) => {
            let written: u64 =
                summary.units.iter().filter_map(|r| r.outcome.as_ref().ok()).map(|s| s.progress.committed).sum();
            out_line!(
                "mirrorflow: {} drive(s) of the domain mirrored by this process, {} elsewhere; {written} files written this run",
                summary.units.len(),
                summary.elsewhere
            );
            for r in &summary.units {
                if let Ok(s) = &r.outcome
                    && !s.dead_letters.is_empty()
                {
                    out_line!(
                        "  {}: {} file(s) dead-lettered (mirrorflow dlq list --user …)",
                        r.unit.label(),
                        s.dead_letters.len()
                    );
                }
            }
            let failed: Vec<_> = summary.failures().collect();
            for (unit, why) in &failed {
                err_line!("mirrorflow: {} failed: {why}", unit.label());
            }
            if summary.interrupted {
                return ExitCode::from(EXIT_INTERRUPTED);
            }
            if !failed.is_empty() {
                return ExitCode::from(EXIT_FAILED);
            }
            if summary.dead_letters() > 0 { ExitCode::from(EXIT_DEAD_LETTERED) } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            err_line!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// `status` of a domain (`[source] subjects`, no `--user`): the last round's result of every unit this
/// shard mirrors, from `domain.json`; false when the config mirrors one account.
fn domain_status(path: &std::path::Path, json: bool) -> anyhow::Result<bool> {
    let cfg = Config::load(path).map_err(|e| UsageError(e.to_string()))?;
    if cfg.source.subjects.is_none() || USER.get().is_some() {
        return Ok(false);
    }
    let file = cfg.state.dir.join("domain.json");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(_) => {
            out_line!("no round over the domain has ended yet ({} does not exist)", file.display());
            return Ok(true);
        }
    };
    if json {
        out_line!("{}", text.trim_end());
        return Ok(true);
    }
    let report: mirrorflow::domain::DomainReport = serde_json::from_str(&text)?;
    out_line!("shard: {}", report.shard);
    for u in &report.units {
        match &u.error {
            Some(e) => out_line!("  {}: FAILED: {e}", u.unit),
            None => {
                out_line!("  {}: ok, {} written in the last round, {} dead-lettered", u.unit, u.written, u.dead_letters)
            }
        }
    }
    out_line!("(details of one user: mirrorflow status --user EMAIL {})", path.display());
    Ok(true)
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
        Err(v::VerifyError::Locked(_)) => return verify_running(&cfg, &a),
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
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut output = mirrorflow::admin::Output { out: &mut out, err: &mut err };
    match mirrorflow::admin::commands::verify_report(report, json, dead_lettered, &mut output) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            err_line!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
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

/// The store, destination and file id a `versions` command names; an unknown file is a usage error.
fn versions_target(
    path: &std::path::Path,
    file: &str,
) -> anyhow::Result<(mirrorflow::state::Store, mirrorflow::dest::Destination, mirrorflow::model::FileId)> {
    let cfg = load_scoped(path).map_err(UsageError)?;
    let store = mirrorflow::open::state_store(&cfg).map_err(|e| {
        if e.is_locked() {
            anyhow::anyhow!(
                "a mirrorflow run holds the state in {}: `versions` reads it once that run stops",
                cfg.state.dir.display()
            )
        } else {
            anyhow::Error::new(e).context("opening the state store")
        }
    })?;
    match mirrorflow::open::check_binding(&cfg, &store) {
        Ok(()) => {}
        Err(mirrorflow::open::BindingError::Store(e)) => return Err(e.into()),
        Err(mirrorflow::open::BindingError::Other(o)) => return Err(UsageError(o.to_string()).into()),
    }
    let dest = mirrorflow::open::destination(&cfg)?;
    let Some(id) = mirrorflow::dest::versions::find_file(&store, &dest, file)? else {
        return Err(UsageError(format!("no mirrored file has the id or key {file:?}")).into());
    };
    Ok((store, dest, id))
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

/// `status`, `log`, `dlq` and `versions list`: answered from the store, or through the admin socket of
/// the run that holds it.
fn ask_state(path: &std::path::Path, request: Request) -> anyhow::Result<ExitCode> {
    let cfg = load_scoped(path).map_err(UsageError)?;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut output = mirrorflow::admin::Output { out: &mut out, err: &mut err };
    match mirrorflow::admin::answer(&cfg, path, &request, &mut output) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) if e.exit() == mirrorflow::admin::Exit::Usage => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

/// `verify` against a running mirror: asked through its admin socket (a repair goes through its
/// pipeline).
fn verify_running(cfg: &Config, a: &VerifyArgs) -> ExitCode {
    let request =
        Request::Verify { checksum: a.checksum, repair: a.repair, prune_unknown: a.prune_unknown, json: a.json };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    match mirrorflow::admin::ask(
        &cfg.state.dir,
        &request,
        &mut mirrorflow::admin::Output { out: &mut out, err: &mut err },
    ) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            err_line!("error: {e}");
            ExitCode::from(e.exit().code())
        }
    }
}

/// `mirrorflow top`.
fn top(path: &std::path::Path, every: std::time::Duration, ticks: Option<u64>) -> anyhow::Result<ExitCode> {
    let cfg = load_scoped(path).map_err(UsageError)?;
    mirrorflow::top::run(&cfg.state.dir, every, ticks)?;
    Ok(ExitCode::SUCCESS)
}

/// `mirrorflow man`: the page on stdout, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write the pages to {}", dir.display()))?;
        }
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
    }
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
        domain_users: drive_emulator::DomainUser::domain(&a.users, &a.admin, a.files, a.shared_drives),
        ..Default::default()
    };
    drive_emulator::run_cli(cfg, a.listen, a.write_key).await.context("emulator")?;
    Ok(ExitCode::SUCCESS)
}
