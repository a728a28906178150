//! The per-partition recovery checkpoint file, `<dir>/recovery-checkpoint`.
//!
//! It records the last clean point of the log and the log start offset:
//! - `recovery_offset` at byte `recovery_position` of segment `recovery_segment`: every segment
//!   below `recovery_segment` is sealed, durable, truncated to its length and has complete
//!   index files; in segment `recovery_segment`, the bytes before `recovery_position` are
//!   durable whole batches ending right before `recovery_offset`, and its index files are
//!   valid for entries before that position. Recovery trusts that prefix and CRC-scans forward
//!   from it.
//! - `log_start_offset`: moved by retention and DeleteRecords, which write the checkpoint before
//!   they answer.
//! - `producers_empty_at` (optional, -1 if unknown): an offset at which the producer state was
//!   empty, written at a clean close instead of an empty producer snapshot.
//! - `high_watermark` (optional, -1 if unknown): the high watermark readers saw when it was
//!   written (at a clean close and at each segment roll), Kafka's
//!   `replication-offset-checkpoint`: a replicated partition's leader starts from it after a
//!   restart instead of from its log start until its followers fetch. Committed data only, so
//!   a lower bound of the true high watermark; capped by the log's durable end when used.
//!
//! Format: a few `key value` text lines ending with `crc <crc32c of the lines before>`. It is
//! replaced atomically (temp file, fdatasync, rename, directory fsync), so it is either the
//! old or the new version; a file that fails to parse or whose CRC does not match is ignored
//! (recovery then scans every segment).
//!
//! A clean close writes the active segment's durable end as the recovery point, so it also
//! serves as Kafka's clean-shutdown marker: the next open scans nothing, and a log found
//! shorter than its recovery point (a segment cut or removed) is damage, which takes the
//! partition offline rather than giving those offsets out again (see `storage::log`).

/// Name of the checkpoint file inside a partition directory.
pub const FILE_NAME: &str = "recovery-checkpoint";
/// Largest checkpoint file read.
pub const FILE_BYTES_MAX: u64 = 4096;

/// Contents of the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Base offset of the segment holding the recovery point.
    pub recovery_segment: i64,
    /// Byte position of the recovery point in that segment.
    pub recovery_position: u64,
    /// Offset of the first batch after the recovery point.
    pub recovery_offset: i64,
    /// The log start offset.
    pub log_start_offset: i64,
    /// An offset at which the partition's producer state was empty (written at a clean close
    /// instead of an empty producer snapshot), or -1: recovery starts its producer-state replay
    /// there when no newer snapshot exists.
    pub producers_empty_at: i64,
    /// The high watermark readers saw when this was written, or -1 (see the module doc).
    pub high_watermark: i64,
}

impl Checkpoint {
    /// Serialize.
    pub fn encode(&self) -> Vec<u8> {
        let body = format!(
            "freshet-recovery-checkpoint 1\nrecovery_segment {}\nrecovery_position {}\nrecovery_offset {}\nlog_start_offset {}\nproducers_empty_at {}\nhigh_watermark {}\n",
            self.recovery_segment,
            self.recovery_position,
            self.recovery_offset,
            self.log_start_offset,
            self.producers_empty_at,
            self.high_watermark
        );
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body}crc {crc}\n").into_bytes()
    }

    /// Parse; `None` if damaged.
    pub fn decode(data: &[u8]) -> Option<Checkpoint> {
        let text = std::str::from_utf8(data).ok()?;
        let crc_at = text.rfind("crc ")?;
        let (body, crc_line) = text.split_at(crc_at);
        let crc: u32 = crc_line.strip_prefix("crc ")?.trim().parse().ok()?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != "freshet-recovery-checkpoint 1" {
            return None;
        }
        let mut field = |name: &str| -> Option<i64> {
            let line = lines.next()?;
            line.strip_prefix(name)?.trim().parse().ok()
        };
        let recovery_segment = field("recovery_segment ")?;
        let recovery_position = u64::try_from(field("recovery_position ")?).ok()?;
        let recovery_offset = field("recovery_offset ")?;
        let log_start_offset = field("log_start_offset ")?;
        // Optional (absent from files written before producer state existed).
        let producers_empty_at = field("producers_empty_at ").unwrap_or(-1);
        // Optional (absent from files written before replication kept it).
        let high_watermark = field("high_watermark ").unwrap_or(-1);
        Some(Checkpoint {
            recovery_segment,
            recovery_position,
            recovery_offset,
            log_start_offset,
            producers_empty_at,
            high_watermark,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let c = Checkpoint {
            recovery_segment: 100,
            recovery_position: 4096,
            recovery_offset: 150,
            log_start_offset: 7,
            producers_empty_at: 150,
            high_watermark: 149,
        };
        let data = c.encode();
        assert_eq!(Checkpoint::decode(&data), Some(c));
        let mut bad = data.clone();
        bad[40] ^= 1;
        assert_eq!(Checkpoint::decode(&bad), None);
        assert_eq!(Checkpoint::decode(&data[..data.len() - 3]), None);
        // A file from before `producers_empty_at` still parses.
        let body = "freshet-recovery-checkpoint 1\nrecovery_segment 1\nrecovery_position 2\nrecovery_offset 3\nlog_start_offset 0\n";
        let old = format!("{body}crc {}\n", crc32c::crc32c(body.as_bytes()));
        assert_eq!(
            Checkpoint::decode(old.as_bytes()).map(|c| (c.producers_empty_at, c.high_watermark)),
            Some((-1, -1))
        );
    }
}
