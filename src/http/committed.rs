//! `isolation=read_committed` for push streams: which batches of a read a committed reader
//! sees. The read itself stops at the last stable offset (`PartitionLog::read_upto`, as a
//! READ_COMMITTED Fetch); the aborted transactions overlapping it come from the log's
//! aborted-transaction index (`PartitionLog::aborted_transactions`, the list a Fetch answer
//! carries), and [`visible_batches`] drops their batches as Kafka's consumer does
//! (`CompletedFetch.nextFetchedRecord`): an aborted transaction's producer is "aborting" from
//! its first offset until its next control batch (the abort marker); its transactional
//! batches in that span are skipped (`storage::txn_index::aborted_batches`).
//!
//! Pure code, no I/O; bad bytes (a batch without a header) are kept and left to the decoder,
//! which logs and skips them.

use bytes::Bytes;

/// The batches of `batches` (in offset order) a read_committed reader sees, given the aborted
/// transactions `aborted` as (producer id, first offset) overlapping them. Control batches are
/// kept (the stream skips their records anyway) so that the position moves past them.
pub fn visible_batches(batches: Vec<Bytes>, aborted: &[(i64, i64)]) -> Vec<Bytes> {
    let flags = crate::storage::txn_index::aborted_batches(&batches, aborted);
    batches
        .into_iter()
        .zip(flags)
        .filter_map(|(b, aborted)| (!aborted).then_some(b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use freshet_protocol::batch::{
        self, encode_batch, header_mut, set_base_offset, Compression, ATTR_TRANSACTIONAL,
    };

    /// A batch of `n` records at `base` from producer `pid`, transactional or not.
    fn batch_at(base: i64, n: usize, pid: i64, transactional: bool, control: bool) -> Bytes {
        let records: Vec<batch::NewRecord> = (0..n)
            .map(|i| (None, Some(Bytes::from(format!("r{i}"))), 1))
            .collect();
        let mut b = encode_batch(&records, Compression::None).unwrap().to_vec();
        set_base_offset(&mut b, base);
        let h = header_mut(&mut b).unwrap();
        h.producer_id.set(pid);
        let mut attributes = h.attributes.get();
        if transactional {
            attributes |= ATTR_TRANSACTIONAL;
        }
        if control {
            attributes |= batch::ATTR_CONTROL;
        }
        h.attributes.set(attributes);
        Bytes::from(b)
    }

    fn bases(batches: &[Bytes]) -> Vec<i64> {
        batches
            .iter()
            .map(|b| batch::header(b).unwrap().base_offset())
            .collect()
    }

    #[test]
    fn aborted_transactions_batches_are_dropped_until_their_marker() {
        // Producer 7 aborts (0..=1, marker 4), producer 8 commits interleaved (2, marker 5),
        // producer 7 then writes a committed transaction (6, marker 7); 9 is not transactional.
        let batches = vec![
            batch_at(0, 2, 7, true, false),
            batch_at(2, 1, 8, true, false),
            batch_at(3, 1, 9, false, false),
            batch_at(4, 1, 7, true, true),
            batch_at(5, 1, 8, true, true),
            batch_at(6, 1, 7, true, false),
            batch_at(7, 1, 7, true, true),
        ];
        let kept = visible_batches(batches.clone(), &[(7, 0)]);
        assert_eq!(bases(&kept), vec![2, 3, 4, 5, 6, 7]);
        // Nothing aborted: everything stays.
        assert_eq!(
            bases(&visible_batches(batches.clone(), &[])),
            vec![0, 2, 3, 4, 5, 6, 7]
        );
        // An abort that began before the read (first offset below it) covers it too.
        let kept = visible_batches(batches[1..].to_vec(), &[(8, 1)]);
        assert_eq!(bases(&kept), vec![3, 4, 5, 6, 7]);
        // Bytes without a header are kept for the decoder to refuse.
        assert_eq!(
            visible_batches(vec![Bytes::from_static(b"xx")], &[(7, 0)]).len(),
            1
        );
    }
}
