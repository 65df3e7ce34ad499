//! The PostgreSQL index (`[index]`) against a real server: after any history it equals the mirror
//! (every object's key and md5 as a row, no row without an object), it holds every audit entry once,
//! and PostgreSQL going away never stops the mirror: the index catches up when it is back.

use crate::support::pg::{self, Cluster, assert_index_equals_mirror};
use crate::support::*;
use serde_json::json;

fn index_extra(url: &str, timeout: &str) -> String {
    format!("[index]\nurl = \"{url}\"\ncatch_up_timeout = \"{timeout}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_equals_the_mirror_after_the_hostile_corpus_random_changes_and_a_repair() {
    let mut corpus = small_corpus(true);
    corpus.files = 150;
    corpus.folders = 20;
    let env = TestEnv::start(corpus).await;
    let db = pg::fresh_database().await;
    let dir = env.dir.path().join("mirror");
    let config = env.config("index", &Dest::Local(dir.clone()), &index_extra(&db, "60s"));
    let c = config.to_str().unwrap();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_index_equals_mirror(&config, &dir, &db).await;
    let client = pg::connect(&db).await;
    let skipped: i64 = client
        .query_one(
            "SELECT count(*) FROM mirrorflow.file_hierarchy WHERE sync_status = 'skipped' AND error IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(skipped > 0, "the hostile corpus's refused files are rows with their reason");

    for round in 0..2u64 {
        env.control("mutate", json!({"ops": [{"op": "random", "count": 150, "seed": 70 + round}]})).await;
        let out = mirrorflow(&["run", "--once", c]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
        assert_index_equals_mirror(&config, &dir, &db).await;
    }

    // Damage behind mirrorflow's back, repaired by verify: the index follows the repair.
    let objects = local_objects(&dir);
    let mut names = objects.keys().filter(|k| !k.ends_with(".url"));
    let (gone, corrupt) = (names.next().unwrap().clone(), names.next().unwrap().clone());
    std::fs::remove_file(dir.join(&gone)).unwrap();
    std::fs::write(dir.join(&corrupt), b"not what Drive holds").unwrap();
    let out = mirrorflow(&["verify", "--checksum", "--repair", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
    assert_index_equals_mirror(&config, &dir, &db).await;

    // A second run with nothing new applies nothing twice and keeps the index as it is.
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_index_equals_mirror(&config, &dir, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_never_stops_the_mirror_and_the_index_catches_up() {
    let env = TestEnv::start(small_corpus(false)).await;
    let cluster = Cluster::start();
    let db = pg::fresh_database_on(&cluster.url).await;
    let dir = env.dir.path().join("mirror");
    let extra = format!("src.poll_interval = \"200ms\"\n{}", index_extra(&db, "2s"));
    let config = env.config("away", &Dest::Local(dir.clone()), &extra);
    let c = config.to_str().unwrap();

    // PostgreSQL down for a whole --once run: the mirror is complete, the exit says the index is behind.
    cluster.stop();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("index is"), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
    cluster.resume();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_index_equals_mirror(&config, &dir, &db).await;

    // Stopped under a running mirror, while changes come: the mirror goes on; back, it catches up.
    let child = spawn_continuous(&config);
    let client = pg::connect(&db).await;
    let (_, before) = pg::audit_seqs(&client).await;
    drop(client);
    cluster.stop();
    env.control("mutate", json!({"ops": [{"op": "random", "count": 60, "seed": 5}]})).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    cluster.resume();
    let client = pg::connect(&db).await;
    let mut caught_up = false;
    for _ in 0..600 {
        if pg::audit_seqs(&client).await.1 > before {
            caught_up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(caught_up, "the running sink applied nothing after PostgreSQL came back");
    let out = sigterm_and_wait(child).await;
    assert!(matches!(out.status.code(), Some(0)), "{}", text(&out));
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
    assert_index_equals_mirror(&config, &dir, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_added_to_an_existing_mirror_is_built_from_the_records() {
    let env = TestEnv::start(small_corpus(false)).await;
    let dir = env.dir.path().join("mirror");
    let plain = env.config("later", &Dest::Local(dir.clone()), "");
    let out = mirrorflow(&["run", "--once", plain.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let db = pg::fresh_database().await;
    let config = env.config("later", &Dest::Local(dir.clone()), &index_extra(&db, "60s"));
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_index_equals_mirror(&config, &dir, &db).await;
    let client = pg::connect(&db).await;
    let comments: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'mirrorflow' AND c.relname = 'file_hierarchy' AND d.objsubid > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(comments, 15, "every column of file_hierarchy is commented");

    // The index dropped behind mirrorflow's back: a run with nothing new in Drive builds it again
    // before it says the index is caught up (the store's note of its position is not trusted).
    client.batch_execute("DROP SCHEMA mirrorflow CASCADE").await.unwrap();
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_index_equals_mirror(&config, &dir, &db).await;
}
