//! The log's side of the aborted-transaction index ([`crate::storage::txn_index`]): reading it
//! for a read_committed fetch, writing the pending entries of sealed segments, and checking the
//! files on open. A child module of `log` so that the rest of the log only calls in at a few
//! points.

use super::super::txn_index::{self, AbortedTxn};
use super::{PartitionLog, Shared};
use crate::storage::file_names::segment_file_name;
use crate::storage::StorageError;

/// Attempts at reading the index files while segments are deleted or swapped underneath.
const ABORTED_READ_ATTEMPTS_MAX: usize = 4;

impl PartitionLog {
    /// Aborted transactions overlapping `[from, to)` as (producer id, first offset), read
    /// from the index files (and pending entries) of the segments from the one holding `from`
    /// on, until an entry's last stable offset shows no later abort can overlap.
    pub async fn aborted_transactions(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, i64)>, StorageError> {
        // A file that vanished between planning and reading was deleted with its segment or
        // merged into another by the cleaner: plan again to see the merged one.
        for _ in 0..ABORTED_READ_ATTEMPTS_MAX {
            if let Some(found) = self.aborted_transactions_once(from, to).await? {
                return Ok(found);
            }
        }
        Err(StorageError::Io {
            op: "read transaction index",
            source: std::io::Error::other("index files kept changing under the read"),
        })
    }

    async fn aborted_transactions_once(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Option<Vec<(i64, i64)>>, StorageError> {
        let shared = &*self.shared;
        // (base, has a file, pending entries) per candidate segment, taken at once.
        let plan: Vec<(i64, bool, Vec<AbortedTxn>)> = {
            let inner = shared.inner.borrow();
            let first = inner.segment_for(from).unwrap_or(0);
            inner
                .segments
                .iter()
                .skip(first)
                .map(|s| s.base_offset)
                .filter_map(|b| {
                    let pending = inner.txn_index.pending.get(&b).cloned().unwrap_or_default();
                    let disk = inner.txn_index.on_disk.contains(&b);
                    (disk || !pending.is_empty()).then_some((b, disk, pending))
                })
                .collect()
        };
        let mut lists = Vec::with_capacity(plan.len());
        for (base, disk, pending) in plan {
            let mut entries = if disk {
                // Gone meanwhile (its segment was deleted): nothing of it is readable anyway.
                txn_index::read(&shared.dir, base)
                    .await?
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            entries.extend(pending);
            let done = entries.iter().any(|e| e.last_stable_offset >= to);
            lists.push(entries);
            if done {
                break;
            }
        }
        Ok(Some(txn_index::collect_overlapping(lists, from, to)))
    }
}

/// Write the pending entries of the segments below `below` into their files (merged with what
/// the files hold). Called before a roll's producer snapshot and at close.
pub(super) async fn persist_below(shared: &Shared, below: i64) -> Result<(), StorageError> {
    let todo = shared.inner.borrow().txn_index.pending_below(below);
    for (base, entries) in todo {
        let on_disk = shared.inner.borrow().txn_index.on_disk.contains(&base);
        let mut all = if on_disk {
            txn_index::read(&shared.dir, base)
                .await?
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        all.extend_from_slice(&entries);
        normalize(&mut all);
        txn_index::write(&shared.dir, base, &all).await?;
        shared
            .inner
            .borrow_mut()
            .txn_index
            .mark_written(base, entries.len());
    }
    Ok(())
}

/// Marker order without duplicates (a merge may see an entry twice).
pub(super) fn normalize(entries: &mut Vec<AbortedTxn>) {
    entries.sort_by_key(|e| e.last_offset);
    entries.dedup_by_key(|e| e.last_offset);
}

/// On open: find the index files, drop those of segments that are gone, and check the rest.
/// Returns false if one is damaged (recovery must then replay from the log start).
pub(super) async fn load_on_open(shared: &Shared) -> Result<bool, StorageError> {
    let names = crate::storage::io::list_dir(&shared.dir).await?;
    let bases: Vec<i64> = names
        .iter()
        .filter_map(|n| txn_index::parse_name(n))
        .collect();
    let mut orphans = Vec::new();
    let mut intact = true;
    for base in bases {
        let known = shared.inner.borrow().segment_index(base).is_some();
        if !known {
            orphans.push(segment_file_name(base, txn_index::EXT));
            continue;
        }
        match txn_index::read(&shared.dir, base).await {
            Ok(_) => {
                shared.inner.borrow_mut().txn_index.on_disk.insert(base);
            }
            Err(e) => {
                tracing::warn!(dir = %shared.dir.display(), base, error = %e, "damaged transaction index: replaying the log from its start");
                orphans.push(segment_file_name(base, txn_index::EXT));
                intact = false;
            }
        }
    }
    if !orphans.is_empty() {
        crate::storage::io::remove_files(&shared.dir, orphans).await?;
    }
    Ok(intact)
}

/// Before replaying the log from `from`: entries whose markers lie at or above `from` are
/// re-derived by the replay, so they are dropped from the files of the segments at and after
/// the one holding `from` (a file keeps its older entries: nothing else would restore them).
pub(super) async fn reset_from(shared: &Shared, from: i64) -> Result<(), StorageError> {
    let bases: Vec<i64> = {
        let inner = shared.inner.borrow();
        let first = inner.segment_for(from).unwrap_or(0);
        inner
            .segments
            .iter()
            .skip(first)
            .map(|s| s.base_offset)
            .filter(|b| inner.txn_index.on_disk.contains(b))
            .collect()
    };
    for base in bases {
        let all = txn_index::read(&shared.dir, base)
            .await?
            .unwrap_or_default();
        let kept: Vec<AbortedTxn> = all
            .iter()
            .copied()
            .filter(|e| e.last_offset < from)
            .collect();
        if kept.len() == all.len() {
            continue;
        }
        if kept.is_empty() {
            let name = segment_file_name(base, txn_index::EXT);
            crate::storage::io::remove_files(&shared.dir, vec![name]).await?;
            shared.inner.borrow_mut().txn_index.forget(base);
        } else {
            txn_index::write(&shared.dir, base, &kept).await?;
        }
    }
    Ok(())
}

/// Merge the index entries of the cleaner's `group` (segment bases, the first is the new
/// segment's base) into the first one's file, before the swap's commit point. Returns the
/// names of the other files, to be removed with their segments.
pub(super) async fn merge_for_swap(
    shared: &Shared,
    group: &[i64],
) -> Result<Vec<String>, StorageError> {
    let Some(&base) = group.first() else {
        return Ok(Vec::new());
    };
    let mut all = Vec::new();
    let mut any = false;
    for &b in group {
        let (disk, pending) = {
            let inner = shared.inner.borrow();
            (
                inner.txn_index.on_disk.contains(&b),
                inner.txn_index.pending.get(&b).cloned().unwrap_or_default(),
            )
        };
        if disk {
            all.extend(txn_index::read(&shared.dir, b).await?.unwrap_or_default());
        }
        any |= disk || !pending.is_empty();
        all.extend(pending);
    }
    if !any {
        return Ok(Vec::new());
    }
    normalize(&mut all);
    txn_index::write(&shared.dir, base, &all).await?;
    let mut inner = shared.inner.borrow_mut();
    let mut others = Vec::new();
    for &b in group {
        inner.txn_index.forget(b);
        if b != base {
            others.push(segment_file_name(b, txn_index::EXT));
        }
    }
    inner.txn_index.on_disk.insert(base);
    Ok(others)
}

/// The index entry of an aborted transaction; `first_unstable` is the first offset of the
/// oldest transaction still open after it (the LSO then, else the marker's offset + 1).
pub(super) fn aborted_entry(
    d: crate::storage::producer_state::CompletedTxn,
    first_unstable: Option<i64>,
) -> AbortedTxn {
    AbortedTxn {
        producer_id: d.producer_id,
        first_offset: d.first_offset,
        last_offset: d.last_offset,
        last_stable_offset: first_unstable.unwrap_or(d.last_offset + 1),
    }
}
