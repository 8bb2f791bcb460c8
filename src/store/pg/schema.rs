//! The workspace's tables in its PostgreSQL schema, versioned: a migration
//! holds an advisory lock, so two processes never migrate at once, and a
//! build refuses a schema newer than it knows.
//!
//! Times the engine stamps are microseconds since the epoch (`bigint`), as
//! in SQLite, so that both indexes hold the same values; times that only
//! PostgreSQL stamps (a blob object's last use, an upload's start) are the
//! server's `now()`, one clock for every machine. Names sort as bytes
//! (`COLLATE "C"`), as SQLite's do.

use super::conn::{Pg, db_err};
use crate::store::{StoreError, StoreErrorKind};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Each migration takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE sessions (
        id          uuid PRIMARY KEY,
        created_at  bigint NOT NULL,
        created_by  text NOT NULL,
        expires_at  bigint,
        write_mode  text NOT NULL,
        closed_at   bigint,
        ingested    bigint NOT NULL DEFAULT 0,
        overwritten bigint NOT NULL DEFAULT 0,
        unchanged   bigint NOT NULL DEFAULT 0,
        kept        bigint NOT NULL DEFAULT 0,
        failed      bigint NOT NULL DEFAULT 0,
        bytes       bigint NOT NULL DEFAULT 0,
        deleted     bigint NOT NULL DEFAULT 0,
        reverts     uuid
    );
    CREATE TABLE blobs (
        hash       bytea PRIMARY KEY,
        size       bigint NOT NULL,
        data       bytea,
        created_at bigint NOT NULL
    );
    -- Not compressed: most files are compressed already, and trying costs
    -- more than it saves.
    ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;
    -- Rows up to a page stay in it: a 4 KiB file costs one heap row, not
    -- two TOAST chunks and their index entries.
    ALTER TABLE blobs SET (toast_tuple_target = 8160);
    CREATE TABLE entries (
        name        text COLLATE \"C\" PRIMARY KEY,
        hash        bytea NOT NULL REFERENCES blobs (hash),
        size        bigint NOT NULL,
        meta        text,
        session_id  uuid NOT NULL,
        ingested_at bigint NOT NULL,
        version     bigint NOT NULL,
        deleted     boolean NOT NULL DEFAULT false
    );
    CREATE INDEX entries_by_hash ON entries (hash);
    CREATE TABLE history (
        id          bigserial PRIMARY KEY,
        name        text COLLATE \"C\" NOT NULL,
        version     bigint NOT NULL,
        hash        bytea NOT NULL REFERENCES blobs (hash),
        size        bigint NOT NULL,
        meta        text,
        session_id  uuid NOT NULL,
        ingested_at bigint NOT NULL,
        replaced_at bigint NOT NULL,
        deleted     boolean NOT NULL DEFAULT false
    );
    CREATE INDEX history_by_name ON history (name, version);
    CREATE INDEX history_by_hash ON history (hash);
    CREATE TABLE sources (
        dir      bytea NOT NULL,
        file     bytea NOT NULL,
        size     bigint NOT NULL,
        mtime_ns bigint NOT NULL,
        name     text COLLATE \"C\" NOT NULL,
        hash     bytea NOT NULL,
        meta     text,
        PRIMARY KEY (dir, file)
    );
    CREATE INDEX sources_by_name ON sources (name);
    CREATE TABLE file_outcomes (
        id         bigserial PRIMARY KEY,
        session_id uuid NOT NULL,
        name       text NOT NULL,
        source     bytea,
        outcome    text NOT NULL,
        reason     text,
        message    text,
        size       bigint,
        hash       bytea
    );
    CREATE INDEX file_outcomes_by_session ON file_outcomes (session_id, id);
    -- The object store's catalogue: which object holds a blob's bytes, and
    -- when the blob was last written or reused (gc's grace counts from it).
    CREATE TABLE objects (
        hash       bytea PRIMARY KEY,
        key        text NOT NULL UNIQUE,
        size       bigint NOT NULL,
        touched_at timestamptz NOT NULL DEFAULT now()
    );
    -- Uploads in flight: an object written but not yet catalogued. A
    -- crashed upload's object is removed once its lease is stale.
    CREATE TABLE uploads (
        key        text PRIMARY KEY,
        started_at timestamptz NOT NULL DEFAULT now()
    );
"];

fn schema_err(what: &str) -> impl FnOnce(tokio_postgres::Error) -> StoreError + '_ {
    db_err(what)
}

/// Brings the schema to [`SCHEMA_VERSION`] (creating it if `create`), then
/// records `blobs` as the blob store's location if given, or checks it
/// against the recorded one. Returns the recorded location.
pub(crate) async fn prepare(
    pg: &Pg,
    create: bool,
    blobs: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let schema = &pg.addr.schema;
    let mut conn = pg.conn().await?;
    let tx = conn
        .transaction()
        .await
        .map_err(schema_err("checking the schema"))?;
    // One migration at a time, across every process and machine.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('intake schema'), hashtext($1))",
        &[schema],
    )
    .await
    .map_err(schema_err("locking the schema"))?;
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass(quote_ident($1) || '.settings') IS NOT NULL",
            &[schema],
        )
        .await
        .map_err(schema_err("checking the schema"))?
        .get(0);
    let mut version = 0;
    if exists {
        let row = tx
            .query_opt(
                "SELECT value FROM settings WHERE key = 'schema_version'",
                &[],
            )
            .await
            .map_err(schema_err("reading the schema version"))?;
        version = match row {
            Some(r) => r.get::<_, &str>(0).parse().map_err(|_| {
                StoreError::corrupt(format!(
                    "{}: the schema version is not a number",
                    pg.label()
                ))
            })?,
            None => 0,
        };
    } else if !create {
        return Err(StoreError::not_found(format!(
            "{}: no intake workspace in schema {schema} (run `intake init` first)",
            pg.label()
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::corrupt(format!(
            "the workspace index has schema version {version}, newer than this intake understands ({SCHEMA_VERSION}); upgrade intake"
        )));
    }
    if version < SCHEMA_VERSION {
        // The schema name is checked to be a plain identifier.
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}"
        ))
        .await
        .map_err(schema_err("creating the schema"))?;
        while version < SCHEMA_VERSION {
            tx.batch_execute(MIGRATIONS[version as usize])
                .await
                .map_err(schema_err("migrating the schema"))?;
            version += 1;
        }
        tx.execute(
            "INSERT INTO settings (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&version.to_string()],
        )
        .await
        .map_err(schema_err("migrating the schema"))?;
    }
    let recorded: Option<String> = tx
        .query_opt("SELECT value FROM settings WHERE key = 'blobs'", &[])
        .await
        .map_err(schema_err("reading the blob store's location"))?
        .map(|r| r.get(0));
    let location = match (recorded, blobs) {
        (Some(r), Some(b)) if r != b => {
            return Err(StoreError::bare(
                StoreErrorKind::Corrupt,
                format!(
                    "{}: the workspace keeps its blobs at {r}, not {b}",
                    pg.label()
                ),
            ));
        }
        (Some(r), _) => Some(r),
        (None, Some(b)) => {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('blobs', $1)",
                &[&b],
            )
            .await
            .map_err(schema_err("recording the blob store's location"))?;
            Some(b.to_owned())
        }
        (None, None) => None,
    };
    tx.commit()
        .await
        .map_err(schema_err("committing the schema"))?;
    Ok(location)
}
