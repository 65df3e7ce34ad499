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
    let (_, before) = pg::audit_seqs(&client, None).await;
    drop(client);
    cluster.stop();
    env.control("mutate", json!({"ops": [{"op": "random", "count": 60, "seed": 5}]})).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    cluster.resume();
    let client = pg::connect(&db).await;
    let mut caught_up = false;
    for _ in 0..600 {
        if pg::audit_seqs(&client, None).await.1 > before {
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
    assert_eq!(comments, 16, "every column of file_hierarchy is commented");

    // The index dropped behind mirrorflow's back: a run with nothing new in Drive builds it again
    // before it says the index is caught up (the store's note of its position is not trusted).
    client.batch_execute("DROP SCHEMA mirrorflow CASCADE").await.unwrap();
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_index_equals_mirror(&config, &dir, &db).await;
}

/// Copies the directory `from` to `to` as it is (a backup, or its restore).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    let out = std::process::Command::new("cp").arg("-a").arg(from).arg(to).output().unwrap();
    assert!(out.status.success(), "cp -a {}: {}", from.display(), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_restored_from_a_backup_rebuilds_its_index_and_later_runs_write_to_it() {
    let env = TestEnv::start(small_corpus(false)).await;
    let db = pg::fresh_database().await;
    let dir = env.dir.path().join("mirror");
    let config = env.config("restore", &Dest::Local(dir.clone()), &index_extra(&db, "60s"));
    let c = config.to_str().unwrap();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A backup of the state (and of the mirror, taken with it), then a run the index applies.
    let state = env.dir.path().join("restore-state");
    let backup = env.dir.path().join("backup");
    std::fs::create_dir(&backup).unwrap();
    copy_dir(&state, &backup.join("state"));
    copy_dir(&dir, &backup.join("mirror"));
    env.control("mutate", json!({"ops": [{"op": "random", "count": 40, "seed": 11}]})).await;
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Restored: the store's audit seqs fall behind the index's, and the next entries reuse them.
    copy_dir(&backup.join("state"), &state);
    copy_dir(&backup.join("mirror"), &dir);
    for seed in [12, 13] {
        env.control("mutate", json!({"ops": [{"op": "random", "count": 40, "seed": seed}]})).await;
        let out = mirrorflow(&["run", "--once", c]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
        assert_index_equals_mirror(&config, &dir, &db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_on_one_schema_keep_each_others_rows_across_runs() {
    let env = TestEnv::start(small_corpus(false)).await;
    let db = pg::fresh_database().await;
    let dirs = [env.dir.path().join("mirror-a"), env.dir.path().join("mirror-b")];
    let configs = [
        env.config("a", &Dest::Local(dirs[0].clone()), &index_extra(&db, "60s")),
        env.config("b", &Dest::Local(dirs[1].clone()), &index_extra(&db, "60s")),
    ];
    for round in 0..2u64 {
        for config in &configs {
            let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        }
        for (config, dir) in configs.iter().zip(&dirs) {
            assert_index_equals_mirror(config, dir, &db).await;
        }
        env.control("mutate", json!({"ops": [{"op": "random", "count": 40, "seed": 20 + round}]})).await;
    }
    let client = pg::connect(&db).await;
    let stores: i64 = client.query_one("SELECT count(*) FROM mirrorflow.sink_cursor", &[]).await.unwrap().get(0);
    assert_eq!(stores, 2, "one cursor per store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_errors_show_the_sqlstate_and_the_servers_message() {
    let env = TestEnv::start(small_corpus(false)).await;
    let db = pg::fresh_database().await;
    // A role that may connect but not create the schema.
    let role = format!("mf_nocreate_{:08x}", rand::random::<u32>());
    let admin = pg::connect(&db).await;
    admin.batch_execute(&format!("CREATE ROLE {role} LOGIN")).await.unwrap();
    let mut url = url::Url::parse(&db).unwrap();
    url.set_username(&role).unwrap();
    let dir = env.dir.path().join("mirror");
    let config = env.config("denied", &Dest::Local(dir), &index_extra(url.as_str(), "3s"));
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    admin.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("SQLSTATE 42501") && said.contains("permission denied for database"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_named_by_a_reserved_word_holds_the_index() {
    let env = TestEnv::start(small_corpus(false)).await;
    let db = pg::fresh_database().await;
    let dir = env.dir.path().join("mirror");
    let extra = format!("{}schema = \"user\"\n", index_extra(&db, "60s"));
    let config = env.config("user", &Dest::Local(dir.clone()), &extra);
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let client = pg::connect(&db).await;
    let rows: i64 = client.query_one(r#"SELECT count(*) FROM "user".file_hierarchy"#, &[]).await.unwrap().get(0);
    let objects = local_objects(&dir).len() as i64;
    assert!(rows >= objects && objects > 0, "{rows} rows for {objects} objects");
    let cursor: i64 = client.query_one(r#"SELECT last_seq FROM "user".sink_cursor"#, &[]).await.unwrap().get(0);
    assert_eq!(cursor as u64, open(&config).1.audit_head().unwrap());

    // A name that is not a plain identifier is refused before anything runs, naming the key.
    let bad = env.config("bad", &Dest::Local(env.dir.path().join("bad")), &extra.replace("\"user\"", "\"a;b\""));
    let out = mirrorflow(&["validate", bad.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("index.schema"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_prunes_its_audit_log_by_the_stores_retention() {
    let env = TestEnv::start(small_corpus(false)).await;
    let db = pg::fresh_database().await;
    let dir = env.dir.path().join("mirror");
    let config = env.config("retention", &Dest::Local(dir), &index_extra(&db, "60s"));
    let c = config.to_str().unwrap();
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let client = pg::connect(&db).await;
    let (first, head) = pg::audit_seqs(&client, None).await;
    assert!(!first.is_empty());

    // The first run's entries are made two hours old in PostgreSQL (the shortest retention is 1h).
    client.execute("UPDATE mirrorflow.sync_audit_log SET at = at - interval '2 hours'", &[]).await.unwrap();
    let text_of = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text_of.replace("[state]\n", "[state]\naudit_retention = \"1h\"\n")).unwrap();
    env.control("mutate", json!({"ops": [{"op": "random", "count": 20, "seed": 31}]})).await;
    let out = mirrorflow(&["run", "--once", c]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (kept, cursor) = pg::audit_seqs(&client, None).await;
    assert!(cursor > head, "the second run applied its entries");
    assert!(kept.iter().all(|seq| *seq > head), "entries past the retention are still in PostgreSQL: {kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_the_previous_release_is_migrated_in_place_to_rows_per_store() {
    use mirrorflow::index::schema;
    let db = pg::fresh_database().await;
    let mut client = pg::connect(&db).await;
    // The index as the previous release left it: no store column, one cursor for the schema.
    assert_eq!(schema::migrate_to(&mut client, "mirrorflow", 1).await.unwrap(), 1);
    client
        .batch_execute(
            "INSERT INTO mirrorflow.file_hierarchy (drive_file_id, storage_path, name, mime_type, is_folder, sync_status)
                 VALUES ('f1', 'a.txt', 'a.txt', 'text/plain', false, 'synced');
             INSERT INTO mirrorflow.file_versions (drive_file_id, version_number, storage_path, is_current)
                 VALUES ('f1', 3, 'a.txt', true);
             INSERT INTO mirrorflow.sync_audit_log (seq, drive_file_id, operation, at) VALUES (1, 'f1', 'committed', now());
             INSERT INTO mirrorflow.sink_cursor (id, store_id, last_seq, last_entry) VALUES (1, 'old-store', 1, 'fp');",
        )
        .await
        .unwrap();

    assert_eq!(schema::migrate(&mut client, "mirrorflow").await.unwrap(), schema::latest());
    let owner = |table: &'static str| {
        let client = &client;
        async move {
            let sql = format!("SELECT store_id, drive_file_id FROM mirrorflow.{table}");
            let rows = client.query(&sql, &[]).await.unwrap();
            rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))).collect::<Vec<_>>()
        }
    };
    let old = vec![("old-store".to_string(), "f1".to_string())];
    assert_eq!(owner("file_hierarchy").await, old);
    assert_eq!(owner("file_versions").await, old);
    assert_eq!(owner("sync_audit_log").await, old);
    let cursor = client.query_one("SELECT store_id, last_seq, last_entry FROM mirrorflow.sink_cursor", &[]).await;
    let cursor = cursor.unwrap();
    let cursor: (String, i64, String) = (cursor.get(0), cursor.get(1), cursor.get(2));
    assert_eq!(cursor, ("old-store".to_string(), 1, "fp".to_string()));

    // Another store's rows now sit beside them: the same file id, the same seq, a cursor of its own.
    client
        .batch_execute(
            "INSERT INTO mirrorflow.file_hierarchy (store_id, drive_file_id, name, mime_type, is_folder, sync_status)
                 VALUES ('new-store', 'f1', 'a.txt', 'text/plain', false, 'synced');
             INSERT INTO mirrorflow.sync_audit_log (store_id, seq, drive_file_id, operation, at)
                 VALUES ('new-store', 1, 'f1', 'committed', now());
             INSERT INTO mirrorflow.sink_cursor (store_id, last_seq) VALUES ('new-store', 1);",
        )
        .await
        .unwrap();
    assert_eq!(schema::migrate(&mut client, "mirrorflow").await.unwrap(), schema::latest(), "applied once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_with_an_index_of_the_previous_release_carries_on_with_its_own_rows() {
    let env = TestEnv::start(small_corpus(false)).await;
    let dir = env.dir.path().join("mirror");
    let db = pg::fresh_database().await;
    let plain = env.config("old", &Dest::Local(dir.clone()), "");
    let out = mirrorflow(&["run", "--once", plain.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let config = env.config("old", &Dest::Local(dir.clone()), &index_extra(&db, "60s"));
    let me = pg::store_id(&config);
    // This store's index as the previous release wrote it, with a row the store no longer has and a
    // cursor past the store's head (a rebuild is due).
    let mut client = pg::connect(&db).await;
    mirrorflow::index::schema::migrate_to(&mut client, "mirrorflow", 1).await.unwrap();
    client
        .execute(
            "INSERT INTO mirrorflow.file_hierarchy (drive_file_id, storage_path, name, mime_type, is_folder, sync_status)
                 VALUES ('gone', 'gone.txt', 'gone.txt', 'text/plain', false, 'synced')",
            &[],
        )
        .await
        .unwrap();
    client
        .execute("INSERT INTO mirrorflow.sink_cursor (id, store_id, last_seq) VALUES (1, $1, 1000000)", &[&me])
        .await
        .unwrap();
    let out = mirrorflow(&["run", "--once", config.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_index_equals_mirror(&config, &dir, &db).await;
    let ghosts: i64 = client
        .query_one("SELECT count(*) FROM mirrorflow.file_hierarchy WHERE drive_file_id = 'gone'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ghosts, 0, "the migrated rows were this store's, and its rebuild replaced them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_is_kept_through_a_transaction_mode_pooler() {
    // Supabase's transaction pooler (6543) hands each transaction whichever server session is free,
    // with what other clients left in it: here another client's named prepared statements.
    let env = TestEnv::start(small_corpus(false)).await;
    let db = pg::fresh_database().await;
    let pooled = pg::through_pooler(&db);
    pg::leave_prepared_statements(&pooled).await;
    let dir = env.dir.path().join("mirror");
    let config = env.config("pooled", &Dest::Local(dir.clone()), &index_extra(&pooled, "20s"));
    let c = config.to_str().unwrap();
    // Built from the records (migrations, a rebuild), then fed batch by batch across runs.
    for round in 0..3u64 {
        if round > 0 {
            env.control("mutate", json!({"ops": [{"op": "random", "count": 40, "seed": 90 + round}]})).await;
        }
        let out = mirrorflow(&["run", "--once", c]).await;
        assert_eq!(out.status.code(), Some(0), "round {round}: {}", text(&out));
        assert_exact_mirror(&config, &expected_files(&env.tree().await)).await;
        assert_index_equals_mirror(&config, &dir, &db).await;
    }
    assert_eq!(pg::prepared_statements_left(&pooled).await, 10, "the sink ran in the session the other client left");
}
