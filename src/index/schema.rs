//! The index's tables, created and migrated by mirrorflow: numbered migrations applied in order, in
//! one transaction with their numbers recorded, under a transaction-level advisory lock
//! (`pg_advisory_xact_lock`, released at commit: it holds through a transaction pooler too) so two
//! starting runs never migrate at once. `{schema}` in a migration is the configured schema, quoted (`"user"` is a
//! plain name and a reserved word).

/// The migrations, oldest first; a migration is never edited once released, only followed.
const MIGRATIONS: &[(i32, &str)] = &[(1, MIGRATION_1), (2, MIGRATION_2)];

const MIGRATION_1: &str = r#"
CREATE TABLE {schema}.file_hierarchy (
    drive_file_id   text PRIMARY KEY,
    drive_id        text,
    parent_drive_id text,
    storage_path    text,
    name            text NOT NULL,
    mime_type       text NOT NULL,
    size            bigint,
    md5_checksum    text,
    modified_time   timestamptz,
    version         bigint,
    is_folder       boolean NOT NULL,
    is_trashed      boolean NOT NULL DEFAULT false,
    sync_status     text NOT NULL CHECK (sync_status IN ('synced', 'failed', 'skipped')),
    error           text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_hierarchy_parent ON {schema}.file_hierarchy (parent_drive_id);
CREATE INDEX file_hierarchy_storage_path ON {schema}.file_hierarchy (storage_path);
COMMENT ON TABLE {schema}.file_hierarchy IS 'One row per Drive file and folder in the mirror''s scope, written by mirrorflow from what it committed; a removed item''s row is deleted. Rows with a storage_path are exactly the mirrored objects.';
COMMENT ON COLUMN {schema}.file_hierarchy.drive_file_id IS 'Drive file (or folder) id.';
COMMENT ON COLUMN {schema}.file_hierarchy.drive_id IS 'Shared drive id; NULL in My Drive and Shared with me.';
COMMENT ON COLUMN {schema}.file_hierarchy.parent_drive_id IS 'Drive id of the parent folder mirrored; NULL at a root.';
COMMENT ON COLUMN {schema}.file_hierarchy.storage_path IS 'Object key relative to the destination prefix; NULL when no object holds the item (a folder''s is its key prefix, a failed or skipped file never mirrored has none).';
COMMENT ON COLUMN {schema}.file_hierarchy.name IS 'Drive name, as Drive spells it (the key is sanitized).';
COMMENT ON COLUMN {schema}.file_hierarchy.mime_type IS 'Drive MIME type (Google documents keep theirs; the object holds the export).';
COMMENT ON COLUMN {schema}.file_hierarchy.size IS 'Bytes of the stored object (exports included); NULL for folders.';
COMMENT ON COLUMN {schema}.file_hierarchy.md5_checksum IS 'Hex MD5 of the stored bytes (exports included).';
COMMENT ON COLUMN {schema}.file_hierarchy.modified_time IS 'Drive modifiedTime of the version mirrored.';
COMMENT ON COLUMN {schema}.file_hierarchy.version IS 'Drive version number of the version mirrored.';
COMMENT ON COLUMN {schema}.file_hierarchy.is_folder IS 'True for folders and shared-drive roots.';
COMMENT ON COLUMN {schema}.file_hierarchy.is_trashed IS 'Trashed in Drive (trashed items leave the mirror, so rows say false unless a policy keeps them).';
COMMENT ON COLUMN {schema}.file_hierarchy.sync_status IS 'synced; failed (dead-lettered, see error); skipped (Drive will not hand the file over, see error).';
COMMENT ON COLUMN {schema}.file_hierarchy.error IS 'Why the file failed or was skipped; NULL when synced.';
COMMENT ON COLUMN {schema}.file_hierarchy.updated_at IS 'When mirrorflow last wrote this row.';

CREATE TABLE {schema}.file_versions (
    drive_file_id     text NOT NULL,
    version_number    bigint NOT NULL,
    drive_revision_id text,
    storage_path      text NOT NULL,
    checksum          text,
    size_bytes        bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    is_current        boolean NOT NULL,
    PRIMARY KEY (drive_file_id, version_number)
);
COMMENT ON TABLE {schema}.file_versions IS 'The contents of each file the mirror holds: the current object, and with [destination] versions = N the earlier contents kept under .versions/.';
COMMENT ON COLUMN {schema}.file_versions.drive_file_id IS 'Drive file id.';
COMMENT ON COLUMN {schema}.file_versions.version_number IS 'Drive version number of that content.';
COMMENT ON COLUMN {schema}.file_versions.drive_revision_id IS 'Drive revision id, when known.';
COMMENT ON COLUMN {schema}.file_versions.storage_path IS 'Object key (relative to the prefix) holding that content.';
COMMENT ON COLUMN {schema}.file_versions.checksum IS 'Hex MD5 of that content.';
COMMENT ON COLUMN {schema}.file_versions.size_bytes IS 'Bytes of that content.';
COMMENT ON COLUMN {schema}.file_versions.created_at IS 'When mirrorflow stored that content.';
COMMENT ON COLUMN {schema}.file_versions.is_current IS 'True for the content at the file''s own key.';

CREATE TABLE {schema}.sync_audit_log (
    seq           bigint PRIMARY KEY,
    drive_file_id text NOT NULL,
    operation     text NOT NULL,
    storage_path  text,
    at            timestamptz NOT NULL,
    detail        jsonb
);
CREATE INDEX sync_audit_log_file ON {schema}.sync_audit_log (drive_file_id);
CREATE INDEX sync_audit_log_at ON {schema}.sync_audit_log (at);
COMMENT ON TABLE {schema}.sync_audit_log IS 'What mirrorflow did, in commit order: the audit log of its state store, each entry applied exactly once.';
COMMENT ON COLUMN {schema}.sync_audit_log.seq IS 'Audit seq: contiguous, in commit order.';
COMMENT ON COLUMN {schema}.sync_audit_log.drive_file_id IS 'Drive id of the file or folder concerned.';
COMMENT ON COLUMN {schema}.sync_audit_log.operation IS 'committed, folder, removed, dead_lettered, skipped, tree_moved, tree_removed, lost.';
COMMENT ON COLUMN {schema}.sync_audit_log.storage_path IS 'Object key written or removed, relative to the prefix.';
COMMENT ON COLUMN {schema}.sync_audit_log.at IS 'When the outcome was committed.';
COMMENT ON COLUMN {schema}.sync_audit_log.detail IS '{"reason": …} for skips and failures; NULL where the operation says it all.';

CREATE TABLE {schema}.sink_cursor (
    id         smallint PRIMARY KEY CHECK (id = 1),
    store_id   text NOT NULL,
    last_seq   bigint NOT NULL,
    last_entry text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE {schema}.sink_cursor IS 'mirrorflow''s position: the last audit seq applied, written in the same transaction as the rows it produced (exactly once).';
COMMENT ON COLUMN {schema}.sink_cursor.id IS 'Always 1: one cursor per schema.';
COMMENT ON COLUMN {schema}.sink_cursor.store_id IS 'Identity of the state store that feeds this schema; another store rebuilds the index.';
COMMENT ON COLUMN {schema}.sink_cursor.last_seq IS 'Last audit seq applied.';
COMMENT ON COLUMN {schema}.sink_cursor.last_entry IS 'Fingerprint of that entry (file id, operation, time): a store that lost it in a crash and numbered other entries alike is told apart, and the index rebuilt.';
COMMENT ON COLUMN {schema}.sink_cursor.updated_at IS 'When the cursor last moved.';
"#;

/// Several stores side by side: every row carries the `store_id` of the store it came from (the
/// keys become (store_id, …)), and the cursor is one per store, with the mirror (destination) it
/// feeds. Rows of an index from before it belong to the store its one cursor names; rows no cursor
/// names (none: a rebuild writes rows and cursor in one transaction) would be dropped.
const MIGRATION_2: &str = r#"
ALTER TABLE {schema}.file_hierarchy ADD COLUMN store_id text;
ALTER TABLE {schema}.file_versions ADD COLUMN store_id text;
ALTER TABLE {schema}.sync_audit_log ADD COLUMN store_id text;
UPDATE {schema}.file_hierarchy SET store_id = (SELECT store_id FROM {schema}.sink_cursor WHERE id = 1);
UPDATE {schema}.file_versions SET store_id = (SELECT store_id FROM {schema}.sink_cursor WHERE id = 1);
UPDATE {schema}.sync_audit_log SET store_id = (SELECT store_id FROM {schema}.sink_cursor WHERE id = 1);
DELETE FROM {schema}.file_hierarchy WHERE store_id IS NULL;
DELETE FROM {schema}.file_versions WHERE store_id IS NULL;
DELETE FROM {schema}.sync_audit_log WHERE store_id IS NULL;

ALTER TABLE {schema}.file_hierarchy ALTER COLUMN store_id SET NOT NULL,
    DROP CONSTRAINT file_hierarchy_pkey, ADD PRIMARY KEY (store_id, drive_file_id);
ALTER TABLE {schema}.file_versions ALTER COLUMN store_id SET NOT NULL,
    DROP CONSTRAINT file_versions_pkey, ADD PRIMARY KEY (store_id, drive_file_id, version_number);
ALTER TABLE {schema}.sync_audit_log ALTER COLUMN store_id SET NOT NULL,
    DROP CONSTRAINT sync_audit_log_pkey, ADD PRIMARY KEY (store_id, seq);
CREATE INDEX sync_audit_log_store_at ON {schema}.sync_audit_log (store_id, at);

ALTER TABLE {schema}.sink_cursor DROP COLUMN id, ADD COLUMN mirror text, ADD PRIMARY KEY (store_id);

COMMENT ON COLUMN {schema}.file_hierarchy.store_id IS 'The state store (one mirror) the row comes from: its sink_cursor row. Stores sharing the schema keep their rows side by side.';
COMMENT ON COLUMN {schema}.file_versions.store_id IS 'The state store (one mirror) the row comes from: its sink_cursor row.';
COMMENT ON COLUMN {schema}.sync_audit_log.store_id IS 'The state store (one mirror) whose audit log the entry is: seqs count per store.';
COMMENT ON COLUMN {schema}.sync_audit_log.seq IS 'Audit seq: contiguous per store, in commit order.';
COMMENT ON TABLE {schema}.sync_audit_log IS 'What mirrorflow did, in commit order: the audit log of each state store, each entry applied exactly once, kept for [state] audit_retention.';
COMMENT ON TABLE {schema}.sink_cursor IS 'Each store''s position: the last audit seq applied, written in the same transaction as the rows it produced (exactly once). One row per store.';
COMMENT ON COLUMN {schema}.sink_cursor.store_id IS 'Identity of a state store feeding this schema (random, made once and kept in the store).';
COMMENT ON COLUMN {schema}.sink_cursor.mirror IS 'The destination that store mirrors to (URL and endpoint); a new store of the same destination replaces the rows of the one before.';
"#;

/// Creates the schema and applies the migrations it lacks; returns the version it is at.
pub async fn migrate(client: &mut tokio_postgres::Client, schema: &str) -> Result<i32, tokio_postgres::Error> {
    migrate_to(client, schema, latest()).await
}

/// [`migrate`], stopping at migration `target`: the tests build an index as an earlier release
/// left it, to prove the migrations after it carry its rows over.
pub async fn migrate_to(
    client: &mut tokio_postgres::Client,
    schema: &str,
    target: i32,
) -> Result<i32, tokio_postgres::Error> {
    let schema = &super::quote_ident(schema);
    let tx = client.transaction().await?;
    // One migrator at a time per database (the key is arbitrary but fixed: "mirrorflow").
    tx.execute_typed("SELECT pg_advisory_xact_lock(7236271530846891375)", &[]).await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );
         COMMENT ON TABLE {schema}.schema_migrations IS 'Migrations of mirrorflow''s index schema applied so far.';"
    ))
    .await?;
    let row =
        tx.query_typed_one(&format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"), &[]).await?;
    let from: i32 = row.get(0);
    let mut at = from;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from && *v <= target) {
        tx.batch_execute(&sql.replace("{schema}", schema)).await?;
        tx.execute_typed(
            &format!("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"),
            &[(version, tokio_postgres::types::Type::INT4)],
        )
        .await?;
        at = *version;
    }
    tx.commit().await?;
    Ok(at)
}

/// The newest migration this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}
