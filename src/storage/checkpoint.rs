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
//!
//! Format: a few `key value` text lines ending with `crc <crc32c of the lines before>`. It is
//! replaced atomically (temp file, fdatasync, rename, directory fsync), so it is either the
//! old or the new version; a file that fails to parse or whose CRC does not match is ignored
//! (recovery then scans every segment).

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
}

impl Checkpoint {
    /// Serialize.
    pub fn encode(&self) -> Vec<u8> {
        let body = format!(
            "freshet-recovery-checkpoint 1\nrecovery_segment {}\nrecovery_position {}\nrecovery_offset {}\nlog_start_offset {}\n",
            self.recovery_segment, self.recovery_position, self.recovery_offset, self.log_start_offset
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
        Some(Checkpoint {
            recovery_segment,
            recovery_position,
            recovery_offset,
            log_start_offset,
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
        };
        let data = c.encode();
        assert_eq!(Checkpoint::decode(&data), Some(c));
        let mut bad = data.clone();
        bad[40] ^= 1;
        assert_eq!(Checkpoint::decode(&bad), None);
        assert_eq!(Checkpoint::decode(&data[..data.len() - 3]), None);
    }
}
