//! Rows of the PostgreSQL index as the engine's types.

use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use crate::hash::Hash;
use crate::store::sqlite::from_micros;
use crate::store::{Entry, StoreError};

/// One column of a row, a wrong type being a corrupt index.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::corrupt(format!("index database: column {i}: {e}")))
}

pub(super) fn hash_col(row: &Row, i: usize) -> Result<Hash, StoreError> {
    let b: &[u8] = col(row, i)?;
    Hash::from_slice(b)
        .ok_or_else(|| StoreError::corrupt(format!("a hash of {} bytes, not 32", b.len())))
}

pub(super) fn count(row: &Row, i: usize) -> Result<u64, StoreError> {
    Ok(col::<i64>(row, i)? as u64)
}

pub(super) const ENTRY_COLS: &str =
    "name, hash, size, meta, session_id, ingested_at, version, deleted";

pub(super) fn entry_row(row: &Row) -> Result<Entry, StoreError> {
    Ok(Entry {
        name: col(row, 0)?,
        hash: hash_col(row, 1)?,
        size: count(row, 2)?,
        meta: col(row, 3)?,
        session_id: col(row, 4)?,
        ingested_at: from_micros(col(row, 5)?),
        version: count(row, 6)?,
        replaced_at: None,
        deleted: col(row, 7)?,
    })
}

/// `found` (in any order) put in the order of `names`.
pub(super) fn in_order(names: &[&str], found: Vec<Entry>) -> Vec<Option<Entry>> {
    let mut by_name: std::collections::HashMap<String, Entry> =
        found.into_iter().map(|e| (e.name.clone(), e)).collect();
    names.iter().map(|n| by_name.remove(*n)).collect()
}
