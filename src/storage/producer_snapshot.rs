//! Producer state snapshot files: `<offset, 20 digits>.snapshot` in a partition directory, as
//! Kafka keeps them.
//!
//! A snapshot at offset `S` holds the partition's [`ProducerStateTable`] after every batch
//! below `S` and none at or above it. The log writes one when a new segment becomes durable
//! (the state as of that segment's base offset, captured when the roll was decided) and one on
//! a clean close (at the log end) unless the state is empty: then the recovery checkpoint's
//! `producers_empty_at` records it instead, sparing a file write per idle partition. On open, the newest readable snapshot at or below the log
//! end is loaded and the batches from its offset on are replayed into it; snapshots above the
//! recovered log end (data lost since) are deleted. Files are replaced atomically, and only the
//! newest one is kept once a new one is durable. A missing or damaged snapshot costs only a
//! longer replay, never correctness.

use std::path::Path;

use super::file_names::{self, segment_file_name, SNAPSHOT_EXT};
use super::io;
use super::producer_state::ProducerStateTable;
use super::StorageError;

/// Largest snapshot file read.
pub const SNAPSHOT_BYTES_MAX: u64 = 256 << 20;

/// The offset a snapshot file name stands for.
pub fn parse_name(name: &str) -> Option<i64> {
    file_names::parse_segment_file_name(name, SNAPSHOT_EXT)
}

/// Write the snapshot of `table` at `offset` and remove older snapshot files.
pub async fn write(dir: &Path, offset: i64, data: Vec<u8>) -> Result<(), StorageError> {
    io::write_file_atomic(&dir.join(segment_file_name(offset, SNAPSHOT_EXT)), data).await?;
    let older: Vec<String> = io::list_dir(dir)
        .await?
        .into_iter()
        .filter(|n| parse_name(n).is_some_and(|o| o < offset))
        .collect();
    if !older.is_empty() {
        io::remove_files(dir, older).await?;
    }
    Ok(())
}

/// Load the newest readable snapshot at or below `log_end`: `(offset, table)`, or `(0, empty)`
/// if there is none. Snapshots above `log_end` are deleted.
pub async fn load(dir: &Path, log_end: i64) -> Result<(i64, ProducerStateTable), StorageError> {
    let mut offsets: Vec<i64> = io::list_dir(dir)
        .await?
        .iter()
        .filter_map(|n| parse_name(n))
        .collect();
    offsets.sort_unstable();
    let above: Vec<String> = offsets
        .iter()
        .filter(|o| **o > log_end)
        .map(|o| segment_file_name(*o, SNAPSHOT_EXT))
        .collect();
    if !above.is_empty() {
        tracing::warn!(dir = %dir.display(), ?above, "deleting producer snapshots above the log end");
        io::remove_files(dir, above).await?;
    }
    for offset in offsets.into_iter().rev().filter(|o| *o <= log_end) {
        let path = dir.join(segment_file_name(offset, SNAPSHOT_EXT));
        let Some(data) = io::read_small_file(&path, SNAPSHOT_BYTES_MAX).await? else {
            continue;
        };
        match ProducerStateTable::decode(&data) {
            Some(table) => return Ok((offset, table)),
            None => {
                tracing::warn!(path = %path.display(), "damaged producer snapshot ignored");
            }
        }
    }
    Ok((0, ProducerStateTable::new()))
}
