//! Push notifications: a `change` notification from Drive triggers a poll long before
//! `poll_interval`, for the user's log and for each shared drive's own log (one channel each); a forged
//! notification is rejected with 401; the channels are stopped on shutdown.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_triggers_a_poll_and_a_forged_one_is_rejected() {
    let env = TestEnv::start(small_corpus(false)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = env.config("hook", &env.local_dest("mirror"), "");
    let hook = format!(
        "poll_interval = \"1h\"\n\n[source.webhook]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}/drive-hook\"\n"
    );
    let t = std::fs::read_to_string(&config)
        .unwrap()
        .replace("drives = [\"all\"]\n", &format!("drives = [\"all\"]\n{hook}"));
    std::fs::write(&config, t).unwrap();
    let child = spawn_continuous(&config);
    let mirror = env.dir.path().join("mirror");
    let expected = expected_files(&env.tree().await).len();
    poll_until(|| count_files(&mirror) >= expected).await;

    // Forged: wrong token.
    let forged = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/drive-hook"))
        .header("X-Goog-Channel-ID", "not-ours")
        .header("X-Goog-Channel-Token", "guess")
        .header("X-Goog-Resource-State", "change")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);

    // A real change: the emulator notifies the channel; the new file arrives long before the 1h poll.
    let root = env.tree().await.root_id;
    env.control(
        "mutate",
        serde_json::json!({"ops": [{"op": "create", "parent": root, "name": "pushed.txt", "size": 321}]}),
    )
    .await;
    poll_until(|| mirror.join("my-drive/pushed.txt").exists()).await;

    // A change in a shared drive lands only in that drive's own log (as Google documents it): its own
    // channel brings it long before the 1h poll too.
    let tree = env.tree().await;
    let drive = &tree.drives[0];
    env.control(
        "mutate",
        serde_json::json!({"ops": [{"op": "create", "parent": drive.id, "name": "pushed-in-drive.txt", "size": 322}]}),
    )
    .await;
    let in_drive = mirror.join("shared-drives").join(&drive.name).join("pushed-in-drive.txt");
    poll_until(|| in_drive.exists()).await;
    let stats = env.stats().await;
    assert!(stats["requests"].as_object().unwrap().keys().any(|k| k.starts_with("changes.watch 200")), "{stats}");

    let out = sigterm_and_wait(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stats = env.stats().await;
    assert!(stats["requests"].as_object().unwrap().keys().any(|k| k.starts_with("channels.stop 2")), "{stats}");
}

/// Runs `mirrorflow run` (continuous, polling only hourly) over `env` with a webhook on a free port.
fn spawn_with_webhook(env: &TestEnv, name: &str, extra: &str) -> (tokio::process::Child, std::path::PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = env.config(name, &env.local_dest(name), extra);
    let hook = format!(
        "poll_interval = \"1h\"\n\n[source.webhook]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}/drive-hook\"\n"
    );
    let t = std::fs::read_to_string(&config)
        .unwrap()
        .replace("drives = [\"all\"]\n", &format!("drives = [\"all\"]\n{hook}"));
    std::fs::write(&config, t).unwrap();
    (spawn_continuous(&config), env.dir.path().join(name))
}

fn changes_lists(stats: &serde_json::Value) -> u64 {
    stats["requests"]["changes.list 200"].as_u64().unwrap_or(0)
}

/// The user's log is watched with the parameters it is read with (`restrictToMyDrive`): a change to an
/// item shared with the user, outside their My Drive, which the feed's `changes.list` leaves out, does
/// not wake the feed; a change in My Drive still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_logs_channel_hears_only_the_changes_its_list_reads() {
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let shared = tree.items.iter().find(|i| i.name == drive_emulator::SHARED_FILE_NAME).unwrap();
    assert!(shared.shared_with_me);
    let (child, mirror) = spawn_with_webhook(&env, "hook", "");
    let expected = expected_files(&tree).len();
    poll_until(|| count_files(&mirror) >= expected).await;
    // Settled: the feed has caught up and waits for the hourly poll or a notification.
    let mut before = changes_lists(&env.stats().await);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let now = changes_lists(&env.stats().await);
        if now == before {
            break;
        }
        before = now;
    }

    env.control("mutate", serde_json::json!({"ops": [{"op": "rename", "id": shared.id, "name": "renamed by owner"}]}))
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(changes_lists(&env.stats().await), before, "woken for a change its changes.list does not read");

    let root = env.tree().await.root_id;
    env.control(
        "mutate",
        serde_json::json!({"ops": [{"op": "create", "parent": root, "name": "pushed.txt", "size": 321}]}),
    )
    .await;
    poll_until(|| mirror.join("my-drive/pushed.txt").exists()).await;
    let out = sigterm_and_wait(child).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Google delivers push notifications only to HTTPS: `validate` refuses a plain `http` public_url on a
/// public host, naming the key and its line (exit 2); loopback `http` stays allowed for the emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_a_public_url_that_is_not_https() {
    let env = TestEnv::start(small_corpus(false)).await;
    let config = env.config("plain", &env.local_dest("plain"), "");
    let text_of = std::fs::read_to_string(&config).unwrap().replace(
        "drives = [\"all\"]\n",
        "drives = [\"all\"]\n[source.webhook]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://mirror.example.com/hook\"\n",
    );
    std::fs::write(&config, &text_of).unwrap();
    let line = text_of.lines().position(|l| l.starts_with("public_url")).unwrap() + 1;
    let out = mirrorflow(&["validate", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("source.webhook.public_url") && err.contains("https"), "{}", text(&out));
    assert!(err.contains(&format!("(line {line})")), "{}", text(&out));

    std::fs::write(&config, text_of.replace("http://mirror.example.com/hook", "http://127.0.0.1:8080/hook")).unwrap();
    let out = mirrorflow(&["validate", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A channel Drive refuses outright (here a 400 `push.webhookUrlNotHttps`, for an address `validate`
/// would have refused) is asked for once, not again every few seconds forever: polling carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_channel_is_not_asked_for_again() {
    let ctx = crate::support::emu::start(drive_emulator::EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let drive = std::sync::Arc::new(crate::support::emu::drive_client(&ctx, dir.path()).await);
    let hook = mirrorflow::drive::webhook::Webhook::start(
        "127.0.0.1:0".parse().unwrap(),
        "http://mirror.example.com/hook".into(),
        std::time::Duration::from_secs(3600),
        drive,
        std::sync::Arc::new(tokio::sync::Notify::new()),
        vec![mirrorflow::drive::Corpus::MyDrive],
    )
    .await
    .expect("the listen address binds");
    // The first retry after a passing failure comes 5 s later; wait past it.
    tokio::time::sleep(std::time::Duration::from_millis(6500)).await;
    let stats = ctx.control_get("stats").await;
    assert_eq!(stats["requests"]["changes.watch 400"], 1, "{stats}");
    assert!(stats["requests"].get("changes.watch 200").is_none(), "{stats}");
    hook.stop().await;
    ctx.emu.shutdown().await;
}
