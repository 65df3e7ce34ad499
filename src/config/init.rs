//! `mirrorflow config init`: a commented starting `pipeline.toml` that `validate` accepts. The keys
//! the chosen credentials need are set; every other key (the `[testing]` ones and the stages other than
//! the downloader and uploader apart) is there commented out with its default and meaning from
//! [`super::keys`], so the file is also a map of what can be set.

use super::keys::{self, Key};
use std::path::{Path, PathBuf};

/// The emulator's address and key file in a file written with `--emulator`.
pub const EMULATOR_URL: &str = "http://127.0.0.1:8700/";
/// Where `mirrorflow emulator --write-key` is told to write the key, beside the config.
pub const EMULATOR_KEY: &str = ".mirrorflow-emulator-key.json";

/// Which credentials the new file reads Drive with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The bundled emulator (its key is written by `mirrorflow emulator --write-key`).
    Emulator,
    /// A service-account key JSON.
    ServiceAccount(PathBuf),
    /// A "Desktop app" OAuth client JSON, signed in with `mirrorflow auth login`.
    Installed(PathBuf),
}

/// Why no file was written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The target exists and `--force` was not given.
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
    /// A credentials file given on the command line cannot be used.
    #[error("{path}: {reason}")]
    Credentials {
        /// The file given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The destination given is not a URL `validate` accepts.
    #[error("--destination {0:?}: {1}")]
    Destination(String, String),
    /// The file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The target.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The values `config init` sets, besides the commented defaults.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// How Drive is read.
    pub credentials: Credentials,
    /// `[destination] url`.
    pub destination: String,
}

impl InitOptions {
    /// Options for a file to be written in folder `dir`: credentials paths made absolute and checked,
    /// and the destination defaulting to `dir/mirror`.
    pub fn new(credentials: Credentials, destination: Option<String>, dir: &Path) -> Result<Self, InitError> {
        let credentials = match credentials {
            Credentials::Emulator => Credentials::Emulator,
            Credentials::ServiceAccount(p) => Credentials::ServiceAccount(checked(&p, false)?),
            Credentials::Installed(p) => Credentials::Installed(checked(&p, true)?),
        };
        let destination = match destination {
            Some(d) => {
                let probe = format!("[source]\ncredentials = \"k\"\n[destination]\nurl = {}\n", toml_string(&d));
                let problems = super::Config::parse(&probe).map(|c| c.problems()).unwrap_or_default();
                if let Some(p) = problems.iter().find(|p| p.starts_with("destination.url")) {
                    return Err(InitError::Destination(d, p.clone()));
                }
                d
            }
            None => format!("file://{}", dir.join("mirror").display()),
        };
        Ok(InitOptions { credentials, destination })
    }
}

/// `path` made absolute, refused unless it is a file of the expected kind.
fn checked(path: &Path, oauth_client: bool) -> Result<PathBuf, InitError> {
    let err = |reason: &str| InitError::Credentials { path: path.to_path_buf(), reason: reason.into() };
    let abs = std::fs::canonicalize(path).map_err(|e| err(&e.to_string()))?;
    if !abs.is_file() {
        return Err(err("not a file"));
    }
    match (super::is_oauth_client_file(&abs), oauth_client) {
        (true, false) => Err(err("this is an OAuth \"Desktop app\" client file: use --installed")),
        (false, true) => Err(err("not an OAuth \"Desktop app\" client file (it has no \"installed\" object)")),
        _ => Ok(abs),
    }
}

/// Writes the file; refuses to replace one unless `force`.
pub fn write(path: &Path, options: &InitOptions, force: bool) -> Result<(), InitError> {
    if path.exists() && !force {
        return Err(InitError::Exists(path.to_path_buf()));
    }
    std::fs::write(path, render(options)).map_err(|source| InitError::Write { path: path.to_path_buf(), source })
}

/// The keys `options` set, as (dotted key, TOML value).
fn set_keys(options: &InitOptions) -> Vec<(&'static str, String)> {
    let mut set = Vec::new();
    match &options.credentials {
        Credentials::Emulator => {
            set.push(("source.credentials", toml_string(EMULATOR_KEY)));
            set.push(("source.api_base_url", toml_string(EMULATOR_URL)));
            set.push(("source.docs_base_url", toml_string(EMULATOR_URL)));
            set.push(("source.drives", "[\"all\"]".into()));
        }
        Credentials::ServiceAccount(key) => {
            set.push(("source.credentials", toml_string(&key.display().to_string())));
            set.push(("source.drives", "[\"all\"]".into()));
        }
        Credentials::Installed(client) => {
            set.push(("source.credentials", toml_string(&client.display().to_string())));
            set.push(("source.token_cache", toml_string("token.json")));
            set.push(("source.drives", "[\"my-drive\"]".into()));
        }
    }
    set.push(("destination.url", toml_string(&options.destination)));
    set
}

/// The file's header: what it is and the next steps for these credentials.
fn header(options: &InitOptions) -> String {
    let next = match &options.credentials {
        Credentials::Emulator => format!(
            "# Start the bundled Drive emulator from this file's folder first (it writes the key):\n\
             #   mirrorflow emulator --listen 127.0.0.1:8700 --write-key {EMULATOR_KEY}\n"
        ),
        Credentials::ServiceAccount(_) => {
            "# Share the folders or shared drives to mirror with the service account's email.\n".into()
        }
        Credentials::Installed(_) => {
            "# Sign in once: mirrorflow auth login pipeline.toml (saves the sign-in to token_cache).\n".into()
        }
    };
    format!(
        "# mirrorflow pipeline, written by `mirrorflow config init`.\n{next}\
         # Then: mirrorflow validate pipeline.toml && mirrorflow run --once pipeline.toml\n\
         # Every key is described in docs/CONFIG.md (`mirrorflow config reference`); commented keys show\n\
         # their default. Relative paths are resolved against this file's folder.\n"
    )
}

/// The file's text.
pub fn render(options: &InitOptions) -> String {
    let set = set_keys(options);
    let all = keys::all();
    let mut out = header(options);
    for table in keys::tables() {
        if table.path == "testing" || table.path == "stages" {
            continue;
        }
        if table.path.starts_with("stages.") && !["stages.downloader", "stages.uploader"].contains(&table.path) {
            continue;
        }
        let in_table: Vec<&Key> = all.iter().filter(|k| k.table() == table.path && k.refused.is_none()).collect();
        let active = set.iter().any(|(k, _)| k.rsplit_once('.').is_some_and(|(t, _)| t == table.path));
        out.push('\n');
        comment(&mut out, table.doc);
        out.push_str(&format!("{}[{}]\n", if active { "" } else { "# " }, table.path));
        for key in in_table {
            let value = set.iter().find(|(k, _)| *k == key.path).map(|(_, v)| v.clone());
            let mut doc = key.doc.clone();
            if let Some(range) = key.range_text() {
                doc.push_str(&format!(" Range: {range}."));
            }
            comment(&mut out, &doc);
            match (value, key.default.or(key.implied)) {
                (Some(v), _) => out.push_str(&format!("{} = {v}\n", key.name())),
                (None, Some(d)) => out.push_str(&format!("# {} = {d}\n", key.name())),
                (None, None) => out.push_str(&format!("# {} = {}\n", key.name(), key.example)),
            }
        }
    }
    out
}

/// `text` as `# ` lines of at most about 100 columns.
fn comment(out: &mut String, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + word.len() > 96 {
            out.push_str(&format!("# {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("# {line}\n"));
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Writes the file `options` describes into `dir` and loads it as `validate` does.
    fn load(dir: &Path, options: &InitOptions) -> Result<Config, String> {
        let path = dir.join("pipeline.toml");
        write(&path, options, true).map_err(|e| e.to_string())?;
        Config::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn init_with_the_emulator_is_accepted_once_the_emulator_wrote_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = InitOptions::new(Credentials::Emulator, None, dir.path()).expect("options");
        let err = load(dir.path(), &options).expect_err("no key yet");
        assert!(err.contains("source.credentials"), "{err}");
        std::fs::write(dir.path().join(EMULATOR_KEY), r#"{"type": "service_account"}"#).expect("key");
        let c = load(dir.path(), &options).expect("accepted");
        assert_eq!(c.source.api_base_url, EMULATOR_URL);
        assert_eq!(c.destination.url, format!("file://{}/mirror", dir.path().display()));
    }

    #[test]
    fn init_with_a_service_account_key_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("sa.json");
        std::fs::write(&key, r#"{"type": "service_account"}"#).expect("key");
        let options =
            InitOptions::new(Credentials::ServiceAccount(key.clone()), Some("s3://bucket/drive".into()), dir.path())
                .expect("options");
        let c = load(dir.path(), &options).expect("accepted");
        assert_eq!(c.source.credentials, std::fs::canonicalize(&key).expect("abs"));
        assert_eq!(c.source.drives, vec!["all"]);
        assert_eq!(c.destination.url, "s3://bucket/drive");
    }

    #[test]
    fn init_with_an_installed_client_sets_the_token_cache_validate_requires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = dir.path().join("client_secret.json");
        std::fs::write(&client, r#"{"installed": {"client_id": "x"}}"#).expect("client");
        let options = InitOptions::new(Credentials::Installed(client), None, dir.path()).expect("options");
        let c = load(dir.path(), &options).expect("accepted");
        assert_eq!(c.source.token_cache, Some(dir.path().join("token.json")));
    }

    #[test]
    fn init_refuses_a_client_given_as_a_key_a_bad_destination_and_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = dir.path().join("client.json");
        std::fs::write(&client, r#"{"installed": {}}"#).expect("client");
        let err = InitOptions::new(Credentials::ServiceAccount(client.clone()), None, dir.path()).expect_err("refused");
        assert!(err.to_string().contains("--installed"), "{err}");
        let missing = InitOptions::new(Credentials::ServiceAccount(dir.path().join("nope.json")), None, dir.path());
        assert!(missing.is_err());
        let relative =
            InitOptions::new(Credentials::Installed(client.clone()), Some("ftp://example.com/x".into()), dir.path());
        assert!(matches!(relative, Err(InitError::Destination(..))), "{relative:?}");
        let options = InitOptions::new(Credentials::Installed(client), None, dir.path()).expect("options");
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, "keep me").expect("existing");
        assert!(matches!(write(&path, &options, false), Err(InitError::Exists(_))));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "keep me");
    }

    #[test]
    fn init_mentions_every_documented_key_outside_testing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = InitOptions::new(Credentials::Emulator, None, dir.path()).expect("options");
        let text = render(&options);
        for key in keys::all() {
            let shown = ["stages.downloader.", "stages.uploader."].iter().any(|t| key.path.starts_with(t))
                || !key.path.starts_with("stages.");
            if key.path.starts_with("testing.") || !shown {
                continue;
            }
            let line = format!("{} = ", key.name());
            assert!(text.contains(&line), "{} is not in the file", key.path);
        }
    }
}
