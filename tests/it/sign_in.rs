//! A person's own account: `[source] credentials` may be an `authorized_user` file (what
//! `gcloud auth application-default login` writes) or a "Desktop app" OAuth client signed in with
//! `mirrorflow auth login` (PKCE on a loopback port, the sign-in saved in `[source] token_cache`).
//! Access tokens come from the refresh token at the file's token endpoint and are refreshed as they
//! expire; nothing secret is printed; a refresh token the endpoint refuses (revoked) ends the run at
//! once with exit 1 and says to sign in again.

use crate::support::*;
use serde_json::json;

/// Points `config` at `credentials` instead of the service-account key.
fn use_credentials(env: &TestEnv, config: &std::path::Path, credentials: &std::path::Path) {
    let original = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, original.replace(&env.key.display().to_string(), &credentials.display().to_string()))
        .unwrap();
}

/// A config whose credentials are an `authorized_user` file with a refresh token the emulator minted;
/// that token's JSON (`refresh_token`, `client_id`, `client_secret`, `token_uri`).
async fn authorized_user_config(env: &TestEnv, name: &str, extra: &str) -> (std::path::PathBuf, serde_json::Value) {
    let minted = env.control("refresh_token", json!({})).await;
    let credentials = env.dir.path().join(format!("{name}-user.json"));
    let mut file = minted.clone();
    file["type"] = json!("authorized_user");
    std::fs::write(&credentials, file.to_string()).unwrap();
    let config = env.config(name, &env.local_dest(&format!("{name}-mirror")), extra);
    use_credentials(env, &config, &credentials);
    (config, minted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorized_user_file_mirrors_and_a_revoked_sign_in_ends_the_run_clearly() {
    let env = TestEnv::start(small_corpus(false)).await;
    let (config, minted) = authorized_user_config(&env, "user", "").await;
    let secret = |k: &str| minted[k].as_str().unwrap().to_string();
    // Access tokens live 2 s: the run refreshes them as it goes.
    env.control("faults", json!({"token_lifetime_secs": 2})).await;

    // Debug logs of everything (yup-oauth2 logs tokens at debug): still no secret in the output.
    let path = config.clone();
    let run = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
            .args(["run", "--once", path.to_str().unwrap()])
            .env("MIRRORFLOW_LOG", "debug")
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking(run).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
    let stats = env.stats().await;
    assert!(stats["requests"]["token 200"].as_u64().unwrap_or(0) >= 1, "{stats}");
    for s in ["client_secret", "refresh_token"] {
        assert!(!text(&out).contains(&secret(s)), "{s} printed:\n{}", text(&out));
    }

    // The user revokes the app's access: the next run ends at once, with what to do.
    env.control("revoke_refresh_tokens", json!({})).await;
    env.control("mutate", json!({"ops": [{"op": "random", "count": 5, "seed": 3}]})).await;
    let before = env.stats().await["requests"]["token 400"].as_u64().unwrap_or(0);
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("revoked") && said.contains("sign in again"), "{said}");
    assert!(!said.contains(&secret("refresh_token")), "{said}");
    let refused = env.stats().await["requests"]["token 400"].as_u64().unwrap_or(0) - before;
    assert!((1..=4).contains(&refused), "the refused refresh token was tried {refused} times (no retry loop)");
    // Nothing was dead-lettered for it: no file is at fault.
    let dlq = mirrorflow(&["dlq", "list", config.to_str().unwrap()]).await;
    assert!(String::from_utf8_lossy(&dlq.stdout).contains("empty"), "{}", text(&dlq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_client_file_or_an_unknown_kind_is_refused_with_what_to_use() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("kinds", &env.local_dest("mirror"), "");
    let text_cfg = std::fs::read_to_string(&config).unwrap();
    for (name, body) in [
        ("client.json", json!({"installed": {"client_id": "x", "client_secret": "y"}})),
        ("web.json", json!({"web": {"client_id": "x", "client_secret": "y"}})),
        ("odd.json", json!({"type": "external_account"})),
    ] {
        let path = env.dir.path().join(name);
        std::fs::write(&path, body.to_string()).unwrap();
        std::fs::write(&config, text_cfg.replace(&env.key.display().to_string(), &path.display().to_string())).unwrap();
        let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
        let said = text(&out);
        // A Desktop client without a token cache is a config problem (exit 2), found before any request.
        let code = if name == "client.json" { 2 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{said}");
        let says_what_to_do = match name {
            "client.json" => said.contains("token_cache") && said.contains("auth login"),
            "web.json" => said.contains("Desktop app"),
            _ => said.contains("authorized_user") && said.contains("service"),
        };
        assert!(says_what_to_do, "{name}: {said}");
    }
}

/// `mirrorflow auth login --no-browser`, with this test as the browser: reads the consent URL the
/// command prints, follows it (the emulator consents and redirects to the command's loopback port),
/// and returns the command's output.
async fn login(config: &std::path::Path) -> std::process::Output {
    login_with(config, &[]).await
}

/// [`login`] with more arguments (`--port N`).
async fn login_with(config: &std::path::Path, more: &[&str]) -> std::process::Output {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mirrorflow"))
        .args(["auth", "login", "--no-browser", "--timeout", "60s"])
        .args(more)
        .arg(config)
        .env("MIRRORFLOW_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let url = loop {
        let line = lines.next_line().await.unwrap().expect("auth login printed no consent URL");
        printed.push_str(&format!("{line}\n"));
        if line.starts_with("http") {
            break line;
        }
    };
    let page = reqwest::get(&url).await.unwrap();
    let final_url = page.url().to_string();
    let body = page.text().await.unwrap();
    assert!(final_url.starts_with("http://127.0.0.1:") && body.contains("signed in"), "{final_url}: {body}");
    while let Some(line) = lines.next_line().await.unwrap() {
        printed.push_str(&format!("{line}\n"));
    }
    let mut out = child.wait_with_output().await.unwrap();
    out.stdout = [printed.into_bytes(), out.stdout].concat();
    out
}

/// A config whose credentials are a new "Desktop app" OAuth client, with `[source] token_cache` at
/// the returned path (nobody signed in yet); the client file's JSON.
async fn desktop_config(
    env: &TestEnv,
    name: &str,
    extra: &str,
) -> (std::path::PathBuf, std::path::PathBuf, serde_json::Value) {
    let client = env.control("oauth_client", json!({})).await;
    let client_path = env.dir.path().join(format!("{name}-client_secret_desktop.json"));
    std::fs::write(&client_path, client.to_string()).unwrap();
    let cache = env.dir.path().join(format!("{name}-signed-in/token.json"));
    let extra = format!("src.token_cache = \"{}\"\n{extra}", cache.display());
    let config = env.config(name, &env.local_dest(&format!("{name}-mirror")), &extra);
    use_credentials(env, &config, &client_path);
    (config, cache, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_with_a_desktop_client_mirrors_refreshes_and_logs_out() {
    let env = TestEnv::start(small_corpus(false)).await;
    let (config, cache, client) = desktop_config(&env, "desktop", "").await;
    let client_secret = client["installed"]["client_secret"].as_str().unwrap().to_string();
    let cfg = config.to_str().unwrap();

    // Before any sign-in, a run says what to do.
    let out = mirrorflow(&["run", "--once", cfg]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("auth login"), "{}", text(&out));

    env.control("faults", json!({"token_lifetime_secs": 2})).await;
    let out = login(&config).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("Signed in as mirrorflow-emulator@"), "{}", text(&out));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cache).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "token cache mode {mode:o}");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    let refresh_token = saved["refresh_token"].as_str().unwrap().to_string();
    let access_token = saved["access_token"].as_str().unwrap().to_string();
    assert_eq!(saved["scopes"], json!(["https://www.googleapis.com/auth/drive.readonly"]));
    let no_secret = |out: &std::process::Output| {
        for s in [&refresh_token, &access_token, &client_secret] {
            assert!(!text(out).contains(s.as_str()), "a secret was printed:\n{}", text(out));
        }
    };
    no_secret(&out);
    let status = mirrorflow(&["auth", "status", cfg]).await;
    assert!(text(&status).contains("signed in as mirrorflow-emulator@") && text(&status).contains("drive.readonly"));

    // The run refreshes the 2-second access tokens from the cached refresh token.
    let out = mirrorflow(&["run", "--once", cfg]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    no_secret(&out);
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
    let refreshed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_ne!(refreshed["access_token"].as_str(), Some(access_token.as_str()), "the refreshed token was not saved");

    // Access revoked in the Google account: the run ends at once and says to sign in again; it does.
    env.control("revoke_refresh_tokens", json!({})).await;
    env.control("mutate", json!({"ops": [{"op": "random", "count": 5, "seed": 4}]})).await;
    let out = mirrorflow(&["run", "--once", cfg]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("revoked") && text(&out).contains("auth login"), "{}", text(&out));
    assert_eq!(login(&config).await.status.code(), Some(0));
    let out = mirrorflow(&["run", "--once", cfg]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;

    // Logout revokes at the endpoint and deletes the cache; the next run needs a sign-in.
    let before = env.stats().await["requests"]["revoke 200"].as_u64().unwrap_or(0);
    let out = mirrorflow(&["auth", "logout", cfg]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!cache.exists());
    assert_eq!(env.stats().await["requests"]["revoke 200"].as_u64().unwrap_or(0), before + 1);
    let out = mirrorflow(&["run", "--once", cfg]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("auth login"), "{}", text(&out));
}

/// On a headless machine the consent page is opened elsewhere through `ssh -L N:127.0.0.1:N`, which
/// needs the port before the URL is printed: `--port N` receives the redirect on exactly that port,
/// and a port already taken is refused with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_receives_the_redirect_on_the_port_asked_for() {
    let env = TestEnv::start(small_corpus(false)).await;
    let (config, cache, _) = desktop_config(&env, "port", "").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = login_with(&config, &["--port", &port.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let redirect: String =
        url::form_urlencoded::byte_serialize(format!("http://127.0.0.1:{port}/").as_bytes()).collect();
    assert!(text(&out).contains(&format!("redirect_uri={redirect}")), "{}", text(&out));
    assert!(cache.exists());

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port().to_string();
    let args = ["auth", "login", "--no-browser", "--timeout", "5s", "--port", &busy, config.to_str().unwrap()];
    let out = mirrorflow(&args).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&format!("127.0.0.1:{busy}")) && text(&out).contains("--port"), "{}", text(&out));
    assert!(!text(&out).contains("code_challenge"), "no consent URL for a sign-in that cannot finish");
    drop(taken);
}

/// The breaker's cool-down is short so that a run which (wrongly) trips it still ends soon; each
/// test checks that the breaker never opened at all.
const SHORT_COOLDOWN: &str = "breaker_cooldown = \"2s\"";

/// The three kinds of credentials, each in a config of its own (signed in, for the Desktop client).
async fn configs_of_every_kind(env: &TestEnv) -> Vec<(&'static str, std::path::PathBuf)> {
    let service_account = env.config("sa", &env.local_dest("sa-mirror"), SHORT_COOLDOWN);
    let (user, _) = authorized_user_config(env, "user", SHORT_COOLDOWN).await;
    let (desktop, _, _) = desktop_config(env, "desktop", SHORT_COOLDOWN).await;
    assert_eq!(login(&desktop).await.status.code(), Some(0));
    vec![("service account", service_account), ("authorized_user", user), ("auth login", desktop)]
}

/// Sum of the emulator's request counts whose key matches `keep` (`"<endpoint> <status>"`).
fn requests(stats: &serde_json::Value, keep: impl Fn(&str, &str) -> bool) -> u64 {
    let counts = stats["requests"].as_object().cloned().unwrap_or_default();
    counts
        .iter()
        .filter(|(k, _)| k.rsplit_once(' ').is_some_and(|(endpoint, status)| keep(endpoint, status)))
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum()
}

/// Drive voids the access tokens in the middle of a run (every 25th call): each kind of credentials
/// gets a new token once per revocation (not once per refused call) and the run ends with an exact
/// mirror; the 401s never open the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_revoked_mid_run_are_renewed_and_the_mirror_is_exact_for_every_kind_of_credentials() {
    let env = TestEnv::start(small_corpus(false)).await;
    for (kind, config) in configs_of_every_kind(&env).await {
        env.control("stats/reset", json!({})).await;
        let every = 25;
        env.control("faults", json!({"revoke_access_tokens_every": every})).await;
        let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
        let said = text(&out);
        assert_eq!(out.status.code(), Some(0), "{kind}: {said}");
        assert!(!said.contains("circuit open"), "{kind}: a 401 tripped the breaker:\n{said}");
        assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
        let stats = env.stats().await;
        let api_calls = requests(&stats, |endpoint, _| !["token", "consent", "revoke"].contains(&endpoint));
        let refused = requests(&stats, |endpoint, status| endpoint != "token" && status == "401");
        let revocations = api_calls / every;
        let minted = requests(&stats, |endpoint, status| endpoint == "token" && status == "200");
        assert!(revocations >= 2 && refused >= revocations, "{kind}: the run was not cut by revocations: {stats}");
        // One new token per revocation (plus the first one, and one spare for a call refused on the
        // eve of a renewal): concurrent 401s do not each refresh.
        assert!(minted <= revocations + 2, "{kind}: {minted} tokens for {revocations} revocations: {stats}");
        env.control("faults", json!({})).await;
        env.control("mutate", json!({"ops": [{"op": "random", "count": 5, "seed": 11}]})).await;
    }
}

/// The user removes the app's access in the middle of a run: the 401 that follows forces a refresh,
/// the token endpoint refuses the refresh token, and the run ends at once with exit 1 and what to do
/// (sign in again), not after the breaker and the retries give up on the 401s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_refused_mid_run_ends_it_with_sign_in_again_and_never_opens_the_breaker() {
    let env = TestEnv::start(small_corpus(false)).await;
    for kind in ["authorized_user", "auth login"] {
        // Signed in afresh for each kind: the revocation removes every refresh token.
        let (config, remedy) = if kind == "auth login" {
            let (desktop, _, _) = desktop_config(&env, "desktop", SHORT_COOLDOWN).await;
            assert_eq!(login(&desktop).await.status.code(), Some(0));
            (desktop, "auth login")
        } else {
            (authorized_user_config(&env, "user", SHORT_COOLDOWN).await.0, "sign in again")
        };
        env.control("stats/reset", json!({})).await;
        env.control("faults", json!({"revoke_refresh_tokens_at_call": 30})).await;
        let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{kind}: {said}");
        assert!(said.contains("revoked") && said.contains(remedy), "{kind}: {said}");
        assert!(!said.contains("circuit open"), "{kind}: the breaker opened:\n{said}");
        let stats = env.stats().await;
        assert!(requests(&stats, |_, status| status == "401") >= 1, "{kind}: no call was refused: {stats}");
        let refused = requests(&stats, |endpoint, status| endpoint == "token" && status == "400");
        assert!((1..=4).contains(&refused), "{kind}: the refused refresh token was tried {refused} times");
        let dlq = mirrorflow(&["dlq", "list", config.to_str().unwrap()]).await;
        assert!(String::from_utf8_lossy(&dlq.stdout).contains("empty"), "{kind}: {}", text(&dlq));
        env.control("faults", json!({})).await;
    }
}
