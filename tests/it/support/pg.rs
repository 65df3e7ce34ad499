//! PostgreSQL for the index tests: a database of its own per test on the server the test command
//! started (`MIRRORFLOW_TEST_PG_URL`, see scripts/test.sh), or a private cluster a test can stop and
//! start again (scripts/postgres.sh), and the queries that read the index back.

use super::{local_objects, open};
use md5::Digest;
use mirrorflow::index::rows::relative;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The server scripts/test.sh started; the index tests cannot run without one.
fn server_url() -> String {
    std::env::var("MIRRORFLOW_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("MIRRORFLOW_TEST_PG_URL is not set: run the tests with `bash scripts/test.sh`, which starts PostgreSQL")
    })
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    tokio::spawn(conn);
    client
}

/// A new, empty database on `server` (the shared server when `None`); returns its URL.
pub async fn fresh_database_on(server: &str) -> String {
    let name = format!("mf_{:016x}", rand::random::<u64>());
    connect(server).await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    with_database(server, &name)
}

/// A new, empty database on the shared server.
pub async fn fresh_database() -> String {
    fresh_database_on(&server_url()).await
}

/// `db` (a database of the shared server) reached through the transaction-mode PgBouncer in front of
/// that server (`MIRRORFLOW_TEST_PGBOUNCER_URL`, started by scripts/test.sh with scripts/pgbouncer.sh):
/// what Supabase's transaction pooler on port 6543 is.
pub fn through_pooler(db: &str) -> String {
    let pooler = std::env::var("MIRRORFLOW_TEST_PGBOUNCER_URL").unwrap_or_else(|_| {
        panic!(
            "MIRRORFLOW_TEST_PGBOUNCER_URL is not set: run the tests with `bash scripts/test.sh`, which starts a \
             PgBouncer in transaction mode (scripts/pgbouncer.sh)"
        )
    });
    let name = url::Url::parse(db).unwrap().path().trim_start_matches('/').to_string();
    with_database(&pooler, &name)
}

/// Leaves named prepared statements `s0`…`s9` in the server session the pooler hands `pooled`'s
/// database (the test pooler keeps one per database): what another client of a shared pool leaves
/// there when it dies between preparing a statement and closing it. tokio-postgres names its
/// statements `s0`, `s1`, … in every process, so the next process of that driver meets them.
pub async fn leave_prepared_statements(pooled: &str) {
    let sql: String = (0..10).map(|i| format!("PREPARE s{i} AS SELECT {i};")).collect();
    connect(pooled).await.batch_execute(&sql).await.unwrap();
}

/// How many of `s0`…`s9` the server session behind `pooled` still holds (the simple query
/// protocol: no statement of its own).
pub async fn prepared_statements_left(pooled: &str) -> usize {
    let sql = "SELECT count(*) FROM pg_prepared_statements WHERE name ~ '^s[0-9]$'";
    let messages = connect(pooled).await.simple_query(sql).await.unwrap();
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|n| n.parse().unwrap()),
            _ => None,
        })
        .unwrap()
}

/// A cluster of the test's own, for stopping and starting PostgreSQL under a running mirror.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh")
}

fn postgres_sh(cmd: &str, dir: &Path) -> String {
    let out = std::process::Command::new("bash").arg(script()).arg(cmd).arg(dir).output().unwrap();
    assert!(out.status.success(), "postgres.sh {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::Builder::new().prefix("mf-pg").tempdir_in("/tmp").unwrap();
        let url = postgres_sh("start", dir.path());
        Cluster { dir, url }
    }

    /// Stops the server at once (`-m immediate`: like a crash of the database host).
    pub fn stop(&self) {
        postgres_sh("stop", self.dir.path());
    }

    /// Starts it again on the same port.
    pub fn resume(&self) {
        postgres_sh("resume", self.dir.path());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        postgres_sh("stop", self.dir.path());
    }
}

/// `(storage_path, md5)` of every file row of `store` that holds an object.
pub async fn file_rows(client: &tokio_postgres::Client, store: &str) -> BTreeMap<String, Option<String>> {
    client
        .query(
            "SELECT storage_path, md5_checksum FROM mirrorflow.file_hierarchy
             WHERE store_id = $1 AND NOT is_folder AND storage_path IS NOT NULL",
            &[&store],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The audit seqs the index holds for `store` (the only store when `None`), in order, and its cursor.
pub async fn audit_seqs(client: &tokio_postgres::Client, store: Option<&str>) -> (Vec<i64>, i64) {
    let seqs = client
        .query(
            "SELECT seq FROM mirrorflow.sync_audit_log WHERE store_id = coalesce($1, store_id) ORDER BY seq",
            &[&store],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let cursor = client
        .query_one("SELECT last_seq FROM mirrorflow.sink_cursor WHERE store_id = coalesce($1, store_id)", &[&store])
        .await
        .unwrap()
        .get(0);
    (seqs, cursor)
}

/// The identity of the store of `config` (its rows in the index carry it).
pub fn store_id(config: &Path) -> String {
    open(config).1.store_id().unwrap()
}

/// Asserts the index of `config` is the mirror in `dir`: the file rows of its store holding an
/// object are exactly the objects (relative key → md5 of the bytes), every folder record is a row at
/// its key, and the audit log is the store's, each seq once, with the cursor at the store's newest
/// entry. Rows of other stores sharing the schema are not looked at.
pub async fn assert_index_equals_mirror(config: &Path, dir: &Path, db: &str) {
    let me = store_id(config);
    let objects: BTreeMap<String, Option<String>> =
        local_objects(dir).into_iter().map(|(k, bytes)| (k, Some(hex::encode(md5::Md5::digest(&bytes))))).collect();
    let client = connect(db).await;
    let rows = file_rows(&client, &me).await;
    let missing: Vec<_> = objects.keys().filter(|k| !rows.contains_key(*k)).collect();
    let extra: Vec<_> = rows.keys().filter(|k| !objects.contains_key(*k)).collect();
    if !missing.is_empty() || !extra.is_empty() {
        let (_cfg, store, dest) = open(config);
        let mut why = String::new();
        store
            .for_each_file(|rec| {
                let rel = relative(&rec.key, dest.prefix());
                if missing.contains(&&rel) || extra.contains(&&rel) {
                    why.push_str(&format!("\nrecord: {rec:?}"));
                    let audit: Vec<_> =
                        store.audit_since(0).unwrap().into_iter().filter(|(_, e)| e.file_id == rec.id).collect();
                    why.push_str(&format!("\n  audit: {audit:?}"));
                }
            })
            .unwrap();
        for k in missing.iter().chain(extra.iter()) {
            let sql = "SELECT drive_file_id, sync_status FROM mirrorflow.file_hierarchy
                       WHERE store_id = $1 AND storage_path = $2";
            let r = client.query(sql, &[&me, k]).await.unwrap();
            let found: Vec<(String, String)> = r.iter().map(|r| (r.get(0), r.get(1))).collect();
            why.push_str(&format!("\nrows at {k}: {found:?}"));
        }
        let (seqs, cursor) = audit_seqs(&client, Some(&me)).await;
        why.push_str(&format!(
            "\nindex cursor {cursor}, {} entries; store head {}",
            seqs.len(),
            store.audit_head().unwrap()
        ));
        panic!("objects without a row: {missing:?}\nrows without an object: {extra:?}{why}");
    }
    for (key, md5) in &objects {
        assert_eq!(&rows[key], md5, "md5 of {key}");
    }
    let (_cfg, store, dest) = open(config);
    let folders: BTreeMap<String, String> = client
        .query(
            "SELECT drive_file_id, storage_path FROM mirrorflow.file_hierarchy WHERE store_id = $1 AND is_folder",
            &[&me],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let recorded: BTreeMap<String, String> = store
        .all_folders()
        .unwrap()
        .into_iter()
        .filter(|f| !f.trashed)
        .map(|f| (f.id.0.clone(), relative(&f.key, dest.prefix())))
        .collect();
    assert_eq!(folders, recorded, "folder rows");
    let (seqs, cursor) = audit_seqs(&client, Some(&me)).await;
    let kept: Vec<i64> = store.audit_since(0).unwrap().into_iter().map(|(seq, _)| seq as i64).collect();
    assert_eq!(cursor, store.audit_head().unwrap() as i64, "the index applied every entry");
    assert_eq!(seqs, kept, "the index holds each audit entry once, in order");
    assert_eq!(store.index_acked().unwrap(), Some(cursor as u64), "the store knows how far the index is");
}
