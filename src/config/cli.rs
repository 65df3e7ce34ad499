//! `mirrorflow config …`: the configuration describing itself (schema, reference) and a starting
//! file (init). Here rather than in main.rs so the command line only dispatches to it.

use super::init::{self, Credentials, InitOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `mirrorflow config <action>`.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print a JSON Schema of pipeline.toml, for editors (Taplo, VS Code's Even Better TOML): save it and
    /// put `#:schema ./pipeline.schema.json` at the top of pipeline.toml.
    Schema,
    /// Print every key of pipeline.toml (meaning, type, default, range, example) as Markdown; this is
    /// docs/CONFIG.md.
    Reference,
    /// Write a commented starting pipeline.toml that `validate` accepts.
    Init(InitArgs),
}

/// `mirrorflow config init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    credentials: CredentialsArgs,
    /// `[destination] url` (s3://bucket/prefix, gs://…, az://…, file:///absolute/path); default: a
    /// `mirror` folder beside the file.
    #[arg(long, value_name = "URL")]
    destination: Option<String>,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
    /// The file to write ("-": standard output).
    #[arg(default_value = "pipeline.toml")]
    path: PathBuf,
}

/// Exactly one way to read Drive.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct CredentialsArgs {
    /// The bundled Drive emulator on 127.0.0.1:8700 (start it with --write-key .mirrorflow-emulator-key.json).
    #[arg(long)]
    emulator: bool,
    /// A service-account key JSON.
    #[arg(long, value_name = "KEY")]
    service_account: Option<PathBuf>,
    /// A "Desktop app" OAuth client JSON (your own Drive; then `mirrorflow auth login`).
    #[arg(long, value_name = "CLIENT")]
    installed: Option<PathBuf>,
}

impl CredentialsArgs {
    fn credentials(self) -> Credentials {
        match (self.service_account, self.installed) {
            (Some(key), _) => Credentials::ServiceAccount(key),
            (None, Some(client)) => Credentials::Installed(client),
            (None, None) => Credentials::Emulator,
        }
    }
}

/// Runs one `config` action: exit 0, or 2 naming what is wrong.
pub fn run(cmd: ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Schema => print(&super::schema::schema_text()),
        ConfigCommand::Reference => print(&super::reference::markdown()),
        ConfigCommand::Init(args) => match init_file(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn print(text: &str) -> ExitCode {
    // A closed stdout (`… | head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

fn init_file(args: InitArgs) -> Result<(), init::InitError> {
    let to_stdout = args.path == Path::new("-");
    let dir = if to_stdout { Path::new(".") } else { args.path.parent().unwrap_or(Path::new(".")) };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let dir =
        std::fs::canonicalize(dir).map_err(|source| init::InitError::Write { path: args.path.clone(), source })?;
    let options = InitOptions::new(args.credentials.credentials(), args.destination, &dir)?;
    if to_stdout {
        print(&init::render(&options));
        return Ok(());
    }
    init::write(&args.path, &options, args.force)?;
    let _ = writeln!(
        std::io::stderr(),
        "wrote {}; check it with: mirrorflow validate {}",
        args.path.display(),
        args.path.display()
    );
    Ok(())
}
