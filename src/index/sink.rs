//! The index sink: a task beside the pipeline that tails the store's audit log and applies it to
//! PostgreSQL, a batch per transaction with its cursor. It never blocks the committer: when
//! PostgreSQL is away it retries with backoff, and the audit log keeps the entries it has not applied
//! (`Store::set_index_acked` bounds pruning). Every row it writes carries the store's id: a sink only
//! ever replaces, deletes or prunes rows of its own store (or of the store it follows on the same
//! destination), so pipelines sharing a schema keep each other's rows.

use super::connect::Target;
use super::rows::{Row, RowChange, VersionRow, row_for, version_rows};
use super::{IndexError, quote_ident, schema};
use crate::internal_events::{IndexLagged, IndexRowsWritten, IndexSessionFailed, InternalEvent};
use crate::model::FileId;
use crate::state::{AuditEntry, RecordKind, Store};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::watch;
use tokio_postgres::types::{ToSql, Type};

/// Audit entries per transaction.
const BATCH: usize = 1000;
/// Records per statement of a rebuild.
const REBUILD_PAGE: usize = 1000;
/// First and longest wait between failed attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(30));
/// How often an idle sink looks for new entries without being woken.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the sink prunes `sync_audit_log` by the retention (and at each session's start).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What the sink needs: where the index is, the store it reads, the destination prefix (paths are
/// stored relative to it), and a signal that the committer wrote (any change of the receiver).
pub struct Sink<W> {
    /// Where PostgreSQL is.
    pub target: Target,
    /// The schema of mirrorflow's tables.
    pub schema: String,
    /// The store whose audit log feeds the index.
    pub store: Store,
    /// Destination prefix.
    pub prefix: String,
    /// Changes whenever the committer commits.
    pub wake: watch::Receiver<W>,
    /// `[state] audit_retention`: `sync_audit_log` keeps this store's entries as long as the store.
    pub audit_retention: Duration,
}

/// The running sink: its cursor as it advances (`None` until a session has confirmed it against
/// PostgreSQL: the store's own note of it may describe an index that was since dropped), and the task
/// to stop.
pub struct SinkHandle {
    acked: watch::Receiver<Option<u64>>,
    store: Store,
    task: tokio::task::JoinHandle<()>,
}

impl SinkHandle {
    /// Entries the index has not applied yet.
    pub fn lag(&self) -> Result<u64, IndexError> {
        Ok(self.store.audit_head()?.saturating_sub(self.acked.borrow().unwrap_or(0)))
    }

    /// Waits until the index has applied every entry committed so far, at most `timeout`; returns
    /// how many it is still behind (0: caught up).
    pub async fn wait_caught_up(&mut self, timeout: Duration) -> Result<u64, IndexError> {
        let head = self.store.audit_head()?;
        let reached = tokio::time::timeout(timeout, self.acked.wait_for(|acked| acked.is_some_and(|a| a >= head)))
            .await
            .is_ok_and(|r| r.is_ok());
        if reached { Ok(0) } else { self.lag() }
    }

    /// Stops the sink (a transaction in flight is rolled back by PostgreSQL: its entries are applied
    /// by the next run).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl<W: Send + Sync + 'static> Sink<W> {
    /// Starts the sink on its own task.
    pub fn spawn(self) -> Result<SinkHandle, IndexError> {
        let store = self.store.clone();
        let (acked_tx, acked_rx) = watch::channel(None);
        let task = tokio::spawn(self.run(acked_tx));
        Ok(SinkHandle { acked: acked_rx, store, task })
    }

    /// Sessions one after another: a failed one is logged, counted and retried after a backoff.
    async fn run(mut self, acked: watch::Sender<Option<u64>>) {
        let mut wait = BACKOFF.0;
        loop {
            let started = tokio::time::Instant::now();
            let Err(e) = self.session(&acked).await;
            let lag = self.store.audit_head().ok().map(|head| head.saturating_sub(acked.borrow().unwrap_or(0)));
            if started.elapsed() > BACKOFF.1 {
                wait = BACKOFF.0;
            }
            IndexSessionFailed { error: &e, retryable: e.is_retryable(), lag, retry_in: wait }.emit();
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(BACKOFF.1);
        }
    }

    /// One connection's life: migrate, find the cursor (rebuilding when needed), then apply batches
    /// as they come. Returns only on an error.
    async fn session(&mut self, acked: &watch::Sender<Option<u64>>) -> Result<std::convert::Infallible, IndexError> {
        let mut client = self.target.connect().await.map_err(IndexError::Connect)?;
        schema::migrate(&mut client, &self.schema).await?;
        let store_id = self.store.store_id()?;
        let mut cursor = match self.cursor(&client, &store_id).await? {
            Some(at) => at,
            None => self.rebuild(&mut client, &store_id).await?,
        };
        let mut recorded = None;
        let mut pruned: Option<tokio::time::Instant> = None;
        loop {
            if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.prune(&client, &store_id).await?;
                pruned = Some(tokio::time::Instant::now());
            }
            if recorded != Some(cursor) {
                self.store.set_index_acked(cursor)?;
                acked.send_replace(Some(cursor));
                recorded = Some(cursor);
            }
            let head = self.store.audit_head()?;
            IndexLagged { events: head.saturating_sub(cursor) }.emit();
            let page = self.store.audit_page(cursor, BATCH)?;
            match page.first() {
                None => {
                    // A closed channel (the pipeline is stopping) must not turn this into a spin.
                    if let Ok(Err(_)) = tokio::time::timeout(IDLE_POLL, self.wake.changed()).await {
                        tokio::time::sleep(IDLE_POLL).await;
                    }
                }
                Some((first, _)) if *first != cursor + 1 => {
                    tracing::warn!(cursor, first, "index: audit entries it needs were pruned; rebuilding it");
                    cursor = self.rebuild(&mut client, &store_id).await?;
                }
                Some(_) => cursor = self.apply(&mut client, &store_id, cursor, &page).await?,
            }
        }
    }

    /// The cursor saved in PostgreSQL, if it can be continued from: written by this store, not past
    /// its newest entry, and naming the entry the store has at that seq (a store that lost its last
    /// batches in a crash numbers new entries like the lost ones: the fingerprint tells them apart).
    async fn cursor(&self, client: &tokio_postgres::Client, store_id: &str) -> Result<Option<u64>, IndexError> {
        let s = self.quoted_schema();
        let sql = format!("SELECT last_seq, last_entry FROM {s}.sink_cursor WHERE store_id = $1");
        let Some(row) = client.query_typed_opt(&sql, &[(&store_id, Type::TEXT)]).await? else { return Ok(None) };
        let (last, entry): (i64, Option<String>) = (row.get(0), row.get(1));
        let last = last as u64;
        if last > self.store.audit_head()? {
            tracing::warn!(
                cursor = last,
                "index: the index applied entries this store does not have (restored from a backup?); rebuilding it"
            );
            return Ok(None);
        }
        let same_entry = match (self.store.audit_entry(last)?, entry) {
            (Some(kept), Some(applied)) => kept.fingerprint() == applied,
            // Pruned since, or nothing applied yet.
            _ => true,
        };
        if !same_entry {
            tracing::warn!(
                cursor = last,
                "index: the store no longer holds the entry the index applied last; rebuilding it"
            );
        }
        Ok(same_entry.then_some(last))
    }

    /// The configured schema, quoted for SQL.
    fn quoted_schema(&self) -> String {
        quote_ident(&self.schema)
    }

    /// Rebuilds this store's rows from its records in one transaction and returns its cursor: the
    /// newest entry before the rebuild read anything (entries after it are applied next; applying
    /// one whose change the rebuild already saw writes the same row). Rows of other stores stay,
    /// except those of a store this one follows on the same destination (see [`Self::followed`]).
    async fn rebuild(&self, client: &mut tokio_postgres::Client, store_id: &str) -> Result<u64, IndexError> {
        let head = self.store.audit_head()?;
        // The floor first: entries after `head` are kept until applied.
        self.store.set_index_acked(head)?;
        let s = &self.quoted_schema();
        let mirror = self.store.bound_destination()?;
        let tx = client.transaction().await?;
        let followed = self.followed(&tx, store_id, mirror.as_deref()).await?;
        let mut replaced = followed.clone();
        replaced.push(store_id.to_string());
        for table in ["file_hierarchy", "file_versions"] {
            tx.execute_typed(
                &format!("DELETE FROM {s}.{table} WHERE store_id = ANY($1)"),
                &[(&replaced, Type::TEXT_ARRAY)],
            )
            .await?;
        }
        for table in ["sync_audit_log", "sink_cursor"] {
            tx.execute_typed(
                &format!("DELETE FROM {s}.{table} WHERE store_id = ANY($1)"),
                &[(&followed, Type::TEXT_ARRAY)],
            )
            .await?;
        }
        // Entries past the head were numbered by a history this store no longer has (restored from a
        // backup, or lost in a crash): the seqs it hands out next are theirs.
        tx.execute_typed(
            &format!("DELETE FROM {s}.sync_audit_log WHERE store_id = $1 AND seq > $2"),
            &[(&store_id, Type::TEXT), (&(head as i64), Type::INT8)],
        )
        .await?;
        let mut rows = 0;
        let kinds =
            [RecordKind::Folder, RecordKind::File, RecordKind::DeadLetter, RecordKind::Skip, RecordKind::Version];
        for kind in kinds {
            let mut after: Option<FileId> = None;
            loop {
                let ids = self.store.record_ids_page(kind, after.as_ref(), REBUILD_PAGE)?;
                let Some(last) = ids.last().cloned() else { break };
                let changes = self.changes(ids.iter())?;
                rows += write_rows(&tx, s, store_id, &changes).await?;
                after = Some(last);
            }
        }
        // The audit entries up to `head` the store still keeps, as the store has them now (older ones
        // the index holds stay until the retention prunes them).
        let mut after = 0;
        loop {
            let page = self.store.audit_page(after, BATCH)?;
            let page: Vec<_> = page.into_iter().take_while(|(seq, _)| *seq <= head).collect();
            let Some((last, _)) = page.last() else { break };
            after = *last;
            write_audit(&tx, s, store_id, &self.prefix, &page, Conflict::Replace).await?;
        }
        let entry = self.store.audit_entry(head)?.map(|e| e.fingerprint());
        tx.execute_typed(
            &format!(
                "INSERT INTO {s}.sink_cursor (store_id, mirror, last_seq, last_entry) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (store_id) DO UPDATE SET mirror = EXCLUDED.mirror, last_seq = EXCLUDED.last_seq,
                     last_entry = EXCLUDED.last_entry, updated_at = now()"
            ),
            &[(&store_id, Type::TEXT), (&mirror, Type::TEXT), (&(head as i64), Type::INT8), (&entry, Type::TEXT)],
        )
        .await?;
        // What the rebuild read is durable before PostgreSQL has it.
        self.store.sync()?;
        tx.commit().await?;
        IndexRowsWritten::Rebuilt { rows, cursor: head }.emit();
        Ok(head)
    }

    /// The other stores whose cursor names this store's destination: stores this one follows (a
    /// state directory started afresh, or restored from a backup older than its id). One destination
    /// is one mirror, described by one store's records (two stores on one destination would sweep each
    /// other's objects), so their rows are this store's to replace.
    async fn followed(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        store_id: &str,
        mirror: Option<&str>,
    ) -> Result<Vec<String>, IndexError> {
        let Some(mirror) = mirror else { return Ok(Vec::new()) };
        let s = self.quoted_schema();
        let sql = format!("SELECT store_id FROM {s}.sink_cursor WHERE mirror = $1 AND store_id <> $2");
        let params: [(&(dyn ToSql + Sync), Type); 2] = [(&mirror, Type::TEXT), (&store_id, Type::TEXT)];
        let followed: Vec<String> = tx.query_typed(&sql, &params).await?.iter().map(|r| r.get(0)).collect();
        if !followed.is_empty() {
            tracing::info!(
                ?followed,
                mirror,
                "index: this store replaces the rows of the stores before it on this destination"
            );
        }
        Ok(followed)
    }

    /// Deletes this store's `sync_audit_log` entries older than the retention (by the store's clock,
    /// as the store prunes its own log).
    async fn prune(&self, client: &tokio_postgres::Client, store_id: &str) -> Result<(), IndexError> {
        let cutoff_ms = crate::model::unix_ms().saturating_sub(self.audit_retention.as_millis() as u64);
        let s = self.quoted_schema();
        let pruned = client
            .execute_typed(
                &format!("DELETE FROM {s}.sync_audit_log WHERE store_id = $1 AND at < to_timestamp($2::int8 / 1000.0)"),
                &[(&store_id, Type::TEXT), (&(cutoff_ms as i64), Type::INT8)],
            )
            .await?;
        if pruned > 0 {
            tracing::info!(pruned, "index: audit entries older than the retention pruned");
        }
        Ok(())
    }

    /// What the index must write for each of `ids`: its row change and its `file_versions` rows.
    fn changes<'a>(
        &self,
        ids: impl Iterator<Item = &'a FileId>,
    ) -> Result<Vec<(RowChange, Vec<VersionRow>)>, IndexError> {
        ids.map(|id| {
            let change = row_for(&self.store, id, &self.prefix)?;
            let versions = version_rows(&self.store, &change, &self.prefix)?;
            Ok((change, versions))
        })
        .collect()
    }

    /// Applies one page of entries: the rows of every item they name, as the records say now, the
    /// entries themselves, and the cursor, in one transaction. Returns the new cursor.
    async fn apply(
        &self,
        client: &mut tokio_postgres::Client,
        store_id: &str,
        cursor: u64,
        page: &[(u64, AuditEntry)],
    ) -> Result<u64, IndexError> {
        let s = &self.quoted_schema();
        let ids: BTreeSet<&FileId> = page.iter().map(|(_, e)| &e.file_id).collect();
        let changes = self.changes(ids.into_iter())?;
        let last = page.last().map_or(cursor, |(seq, _)| *seq);
        let entry = page.last().map(|(_, e)| e.fingerprint());
        // Only durable entries reach PostgreSQL: a crash must never take back what the index applied.
        self.store.sync()?;
        let tx = client.transaction().await?;
        let rows = write_rows(&tx, s, store_id, &changes).await?;
        write_audit(&tx, s, store_id, &self.prefix, page, Conflict::Fail).await?;
        let mirror = self.store.bound_destination()?;
        let moved = tx
            .execute_typed(
                &format!(
                    "UPDATE {s}.sink_cursor SET last_seq = $1, last_entry = $4, mirror = coalesce($5, mirror),
                         updated_at = now()
                     WHERE store_id = $2 AND last_seq = $3"
                ),
                &[
                    (&(last as i64), Type::INT8),
                    (&store_id, Type::TEXT),
                    (&(cursor as i64), Type::INT8),
                    (&entry, Type::TEXT),
                    (&mirror, Type::TEXT),
                ],
            )
            .await?;
        if moved != 1 {
            return Err(IndexError::CursorMoved);
        }
        tx.commit().await?;
        IndexRowsWritten::Applied { rows }.emit();
        Ok(last)
    }
}

/// Writes `changes` (deletes, upserts, then every item's `file_versions` rows replaced); returns the
/// `file_hierarchy` rows touched. Ids are distinct within `changes`.
async fn write_rows(
    tx: &tokio_postgres::Transaction<'_>,
    s: &str,
    store: &str,
    changes: &[(RowChange, Vec<VersionRow>)],
) -> Result<usize, IndexError> {
    let mut deleted: Vec<&str> = Vec::new();
    let mut rows: Vec<&Row> = Vec::new();
    for (change, _) in changes {
        match change {
            RowChange::Delete(id) => deleted.push(id.as_str()),
            RowChange::Upsert(r) => rows.push(r),
        }
    }
    if !deleted.is_empty() {
        tx.execute_typed(
            &format!("DELETE FROM {s}.file_hierarchy WHERE store_id = $1 AND drive_file_id = ANY($2)"),
            &[(&store, Type::TEXT), (&deleted, Type::TEXT_ARRAY)],
        )
        .await?;
    }
    if !rows.is_empty() {
        upsert_rows(tx, s, store, &rows).await?;
    }
    let all: Vec<&str> = deleted.iter().copied().chain(rows.iter().map(|r| r.id.as_str())).collect();
    let versions: Vec<&VersionRow> = changes.iter().flat_map(|(_, v)| v).collect();
    replace_versions(tx, s, store, &all, &versions).await?;
    Ok(deleted.len() + rows.len())
}

async fn upsert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    s: &str,
    store: &str,
    rows: &[&Row],
) -> Result<(), IndexError> {
    let col = |f: fn(&Row) -> Option<String>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let ids = col(|r| Some(r.id.0.clone()));
    let drive_ids = col(|r| r.drive_id.clone());
    let parents = col(|r| r.parent.clone());
    let paths = col(|r| r.storage_path.clone());
    let names = col(|r| Some(r.name.clone()));
    let mimes = col(|r| Some(r.mime_type.clone()));
    let md5s = col(|r| r.md5.clone());
    let modified = col(|r| r.modified_time.clone());
    let statuses = col(|r| Some(r.status.as_str().to_string()));
    let errors = col(|r| r.error.clone());
    let sizes: Vec<Option<i64>> = rows.iter().map(|r| r.size).collect();
    let versions: Vec<Option<i64>> = rows.iter().map(|r| r.version).collect();
    let folders: Vec<bool> = rows.iter().map(|r| r.is_folder).collect();
    let trashed: Vec<bool> = rows.iter().map(|r| r.is_trashed).collect();
    let sql = format!(
        "INSERT INTO {s}.file_hierarchy (store_id, drive_file_id, drive_id, parent_drive_id, storage_path, name,
             mime_type, size, md5_checksum, modified_time, version, is_folder, is_trashed, sync_status, error,
             updated_at)
         SELECT $15::text, id, d, p, sp, n, mt, sz, md5, m::timestamptz, v, f, t, st, e, now()
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
                     $9::text[], $10::int8[], $11::bool[], $12::bool[], $13::text[], $14::text[])
              AS u(id, d, p, sp, n, mt, sz, md5, m, v, f, t, st, e)
         ON CONFLICT (store_id, drive_file_id) DO UPDATE SET
             drive_id = EXCLUDED.drive_id, parent_drive_id = EXCLUDED.parent_drive_id,
             storage_path = EXCLUDED.storage_path, name = EXCLUDED.name, mime_type = EXCLUDED.mime_type,
             size = EXCLUDED.size, md5_checksum = EXCLUDED.md5_checksum, modified_time = EXCLUDED.modified_time,
             version = EXCLUDED.version, is_folder = EXCLUDED.is_folder, is_trashed = EXCLUDED.is_trashed,
             sync_status = EXCLUDED.sync_status, error = EXCLUDED.error, updated_at = now()"
    );
    let text = Type::TEXT_ARRAY;
    tx.execute_typed(
        &sql,
        &[
            (&ids, text.clone()),
            (&drive_ids, text.clone()),
            (&parents, text.clone()),
            (&paths, text.clone()),
            (&names, text.clone()),
            (&mimes, text.clone()),
            (&sizes, Type::INT8_ARRAY),
            (&md5s, text.clone()),
            (&modified, text.clone()),
            (&versions, Type::INT8_ARRAY),
            (&folders, Type::BOOL_ARRAY),
            (&trashed, Type::BOOL_ARRAY),
            (&statuses, text.clone()),
            (&errors, text),
            (&store, Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}

/// Replaces the `file_versions` rows of `ids` with `versions`.
async fn replace_versions(
    tx: &tokio_postgres::Transaction<'_>,
    s: &str,
    store: &str,
    ids: &[&str],
    versions: &[&VersionRow],
) -> Result<(), IndexError> {
    tx.execute_typed(
        &format!("DELETE FROM {s}.file_versions WHERE store_id = $1 AND drive_file_id = ANY($2)"),
        &[(&store, Type::TEXT), (&ids, Type::TEXT_ARRAY)],
    )
    .await?;
    if versions.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = versions.iter().map(|v| v.id.as_str()).collect();
    let numbers: Vec<i64> = versions.iter().map(|v| v.version_number).collect();
    let paths: Vec<&str> = versions.iter().map(|v| v.storage_path.as_str()).collect();
    let md5s: Vec<Option<&str>> = versions.iter().map(|v| v.checksum.as_deref()).collect();
    let sizes: Vec<i64> = versions.iter().map(|v| v.size).collect();
    let kept_at: Vec<Option<i64>> = versions.iter().map(|v| v.kept_at_ms.map(|ms| ms as i64)).collect();
    let current: Vec<bool> = versions.iter().map(|v| v.is_current).collect();
    tx.execute_typed(
        &format!(
            "INSERT INTO {s}.file_versions (store_id, drive_file_id, version_number, storage_path, checksum,
                 size_bytes, created_at, is_current)
             SELECT $8::text, id, v, sp, md5, sz, coalesce(to_timestamp(ms / 1000.0), now()), cur
             FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::bool[])
                 AS u(id, v, sp, md5, sz, ms, cur)"
        ),
        &[
            (&ids, Type::TEXT_ARRAY),
            (&numbers, Type::INT8_ARRAY),
            (&paths, Type::TEXT_ARRAY),
            (&md5s, Type::TEXT_ARRAY),
            (&sizes, Type::INT8_ARRAY),
            (&kept_at, Type::INT8_ARRAY),
            (&current, Type::BOOL_ARRAY),
            (&store, Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}

/// What an audit seq already in `sync_audit_log` means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Conflict {
    /// A bug: the cursor exists so that no entry is applied twice (the statement fails).
    Fail,
    /// A rebuild copying what the store keeps: the store's entry replaces the row (the same entry,
    /// unless the store lost it in a crash and numbered another alike).
    Replace,
}

/// Appends the entries to `sync_audit_log`.
async fn write_audit(
    tx: &tokio_postgres::Transaction<'_>,
    s: &str,
    store: &str,
    prefix: &str,
    page: &[(u64, AuditEntry)],
    conflict: Conflict,
) -> Result<(), IndexError> {
    let seqs: Vec<i64> = page.iter().map(|(seq, _)| *seq as i64).collect();
    let ids: Vec<&str> = page.iter().map(|(_, e)| e.file_id.as_str()).collect();
    let ops: Vec<&str> = page.iter().map(|(_, e)| e.what.as_str()).collect();
    let paths: Vec<Option<String>> =
        page.iter().map(|(_, e)| e.key.as_ref().map(|k| super::rows::relative(k, prefix))).collect();
    let at: Vec<i64> = page.iter().map(|(_, e)| e.at_unix_ms as i64).collect();
    let details: Vec<Option<String>> =
        page.iter().map(|(_, e)| e.detail.as_ref().map(|d| serde_json::json!({ "reason": d }).to_string())).collect();
    tx.execute_typed(
        &format!(
            "INSERT INTO {s}.sync_audit_log (store_id, seq, drive_file_id, operation, storage_path, at, detail)
             SELECT $7::text, seq, id, op, sp, to_timestamp(ms / 1000.0), d::jsonb
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[]) AS u(seq, id, op, sp, ms, d)
             {}",
            match conflict {
                Conflict::Replace => "ON CONFLICT (store_id, seq) DO UPDATE SET drive_file_id = EXCLUDED.drive_file_id,
                    operation = EXCLUDED.operation, storage_path = EXCLUDED.storage_path, at = EXCLUDED.at,
                    detail = EXCLUDED.detail",
                Conflict::Fail => "",
            }
        ),
        &[
            (&seqs, Type::INT8_ARRAY),
            (&ids, Type::TEXT_ARRAY),
            (&ops, Type::TEXT_ARRAY),
            (&paths, Type::TEXT_ARRAY),
            (&at, Type::INT8_ARRAY),
            (&details, Type::TEXT_ARRAY),
            (&store, Type::TEXT),
        ],
    )
    .await?;
    Ok(())
}
