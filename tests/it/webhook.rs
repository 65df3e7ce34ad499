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
