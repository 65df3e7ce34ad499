//! `mirrorflow log`: the audit log read back from the store — what was written, to which key, and why
//! a file was skipped or failed — filtered by file and by time, as text or JSON lines.

use crate::support::*;
use serde_json::Value;

fn entries(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// `log --json --file <id>`.
async fn log_of(id: &str, config: &str) -> Vec<Value> {
    let out = mirrorflow(&["log", "--json", "--file", id, config]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    entries(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_says_what_was_done_to_each_file_and_why_some_were_not() {
    let env = TestEnv::start(small_corpus(true)).await;
    let tree = env.tree().await;
    let (big, limit) = oversized(&tree);
    let disabled = tree.items.iter().find(|i| i.name == drive_emulator::DOWNLOAD_DISABLED_NAME).unwrap().id.clone();
    let config = env.config("log", &env.local_dest("mirror"), &format!("src.max_file_size = {limit}"));
    let c = config.to_str().unwrap();
    let empty = mirrorflow(&["log", c]).await;
    assert_eq!(empty.status.code(), Some(0), "{}", text(&empty));
    assert!(empty.stdout.is_empty(), "no state yet: {}", text(&empty));

    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(3), "the oversized file is dead-lettered\n{}", text(&out));
    let out = mirrorflow(&["log", "--json", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = entries(&out);
    let expected = expected_files(&tree);
    let committed = all.iter().filter(|e| e["operation"] == "committed").count();
    assert_eq!(committed, expected.len() - 1, "one entry per file written (all but the dead-lettered one)");
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first, each seq once");

    let big_entries = log_of(&big, c).await;
    assert_eq!(big_entries.len(), 1, "{big_entries:?}");
    assert_eq!(big_entries[0]["operation"], "dead_lettered");
    assert!(big_entries[0]["detail"].as_str().unwrap().starts_with("fileTooLarge: "), "{big_entries:?}");
    let skipped = log_of(&disabled, c).await;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0]["operation"], "skipped");
    let detail = skipped[0]["detail"].as_str().unwrap();
    assert!(detail.starts_with(&format!("download_disabled: {}", drive_emulator::DOWNLOAD_DISABLED_NAME)), "{detail}");

    // Time filters: everything was done within the last hour, nothing after now.
    let recent = mirrorflow(&["log", "--json", "--since", "1h", c]).await;
    assert_eq!(entries(&recent).len(), all.len());
    let none = mirrorflow(&["log", "--json", "--since", "0s", c]).await;
    assert!(entries(&none).is_empty(), "{}", text(&none));
    let human = mirrorflow(&["log", "--file", &big, c]).await;
    let line = String::from_utf8_lossy(&human.stdout);
    assert!(line.contains("dead_lettered") && line.contains(&big) && line.contains("fileTooLarge"), "{line}");
    let bad = mirrorflow(&["log", "--since", "soon", c]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}
