//! A person's own account: `[source] credentials` may be an `authorized_user` file (what
//! `gcloud auth application-default login` writes). Access tokens come from its refresh token at the
//! file's token endpoint and are refreshed as they expire; nothing secret is printed; a refresh token
//! the endpoint refuses (revoked) ends the run at once with exit 1 and says to sign in again.

use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorized_user_file_mirrors_and_a_revoked_sign_in_ends_the_run_clearly() {
    let env = TestEnv::start(small_corpus(false)).await;
    let minted = env.control("refresh_token", json!({})).await;
    let secret = |k: &str| minted[k].as_str().unwrap().to_string();
    let credentials = env.dir.path().join("user.json");
    let file = json!({
        "type": "authorized_user",
        "client_id": secret("client_id"),
        "client_secret": secret("client_secret"),
        "refresh_token": secret("refresh_token"),
        "token_uri": secret("token_uri"),
    });
    std::fs::write(&credentials, file.to_string()).unwrap();
    let config = env.config("user", &env.local_dest("mirror"), "");
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, original.replace(&env.key.display().to_string(), &credentials.display().to_string()))
        .unwrap();
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
        ("odd.json", json!({"type": "external_account"})),
    ] {
        let path = env.dir.path().join(name);
        std::fs::write(&path, body.to_string()).unwrap();
        std::fs::write(&config, text_cfg.replace(&env.key.display().to_string(), &path.display().to_string())).unwrap();
        let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(said.contains("authorized_user") && said.contains("service"), "{name}: {said}");
    }
}
