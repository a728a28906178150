//! The names of the files of a partition directory: formatted and parsed here, nowhere else.
//!
//! A file that belongs to a segment or an offset is named by that offset as 20 zero-padded
//! decimal digits (Kafka's `LogFileUtils`), then an extension:
//! - `<base>.log` the segment, `<base>.index` and `<base>.timeindex` its sparse indexes,
//!   `<base>.txnindex` its aborted transactions;
//! - `<offset>.snapshot` a producer state snapshot;
//! - `<base>.log.cleaned` a cleaned segment being written, `<base>.log.swap` one committed to
//!   replace the segments from `<base>` on (the cleaner's crash-safe swap).
//!
//! A name is recognised only in exactly that form (20 ASCII digits, a value that fits an `i64`,
//! the extension): anything else in the directory is not taken for a segment file. The
//! directory's other files have fixed names owned by their modules (`checkpoint::FILE_NAME`,
//! `cleaner::CLEANER_CHECKPOINT_FILE`); `*.tmp` files of interrupted atomic writes are named by
//! `io::write_file_atomic`.

/// Extension of a segment's log file.
pub const LOG_EXT: &str = "log";
/// Extension of a segment's offset index.
pub const INDEX_EXT: &str = "index";
/// Extension of a segment's time index.
pub const TIME_INDEX_EXT: &str = "timeindex";
/// Extension of a segment's aborted-transaction index.
pub const TXN_INDEX_EXT: &str = "txnindex";
/// Extension of a producer state snapshot.
pub const SNAPSHOT_EXT: &str = "snapshot";
/// Every file a segment has (the indexes and the transaction index may be missing).
pub const SEGMENT_EXTS: [&str; 4] = [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT, TXN_INDEX_EXT];
/// Suffix, after `<base>.log`, of a cleaned segment being written.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix, after `<base>.log`, of a cleaned segment committed to replace the old ones.
pub const SWAP_SUFFIX: &str = ".swap";
/// Suffix of a file an interrupted atomic write left behind.
pub const TMP_SUFFIX: &str = ".tmp";

/// Name of the file with extension `ext` (one of the `*_EXT`) for `offset`.
pub fn segment_file_name(offset: i64, ext: &str) -> String {
    format!("{offset:020}.{ext}")
}

/// Name of the cleaned segment for `base` while it is written.
pub fn cleaned_file_name(base: i64) -> String {
    format!("{}{CLEANED_SUFFIX}", segment_file_name(base, LOG_EXT))
}

/// Name of the cleaned segment for `base` once committed.
pub fn swap_file_name(base: i64) -> String {
    format!("{}{SWAP_SUFFIX}", segment_file_name(base, LOG_EXT))
}

/// The offset `name` stands for if it is `<20 digits>.<ext>`.
pub fn parse_segment_file_name(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The segment base of an offset or time index file name.
pub fn parse_index_file_name(name: &str) -> Option<i64> {
    parse_segment_file_name(name, INDEX_EXT)
        .or_else(|| parse_segment_file_name(name, TIME_INDEX_EXT))
}

/// The segment base and extension of any of a segment's files ([`SEGMENT_EXTS`]).
pub fn parse_segment_member(name: &str) -> Option<(i64, &'static str)> {
    SEGMENT_EXTS
        .iter()
        .find_map(|ext| parse_segment_file_name(name, ext).map(|b| (b, *ext)))
}

/// The segment base of a committed cleaned segment (`<base>.log.swap`).
pub fn parse_swap_file_name(name: &str) -> Option<i64> {
    parse_segment_file_name(name.strip_suffix(SWAP_SUFFIX)?, LOG_EXT)
}

/// Whether `name` is a cleaned segment still being written (`*.cleaned`).
pub fn is_cleaned_file_name(name: &str) -> bool {
    name.ends_with(CLEANED_SUFFIX)
}

/// Whether `name` is left from an interrupted atomic write (`*.tmp`).
pub fn is_tmp_file_name(name: &str) -> bool {
    name.ends_with(TMP_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for offset in [0, 42, i64::MAX] {
            for ext in SEGMENT_EXTS.iter().chain([&SNAPSHOT_EXT]) {
                let name = segment_file_name(offset, ext);
                assert_eq!(name.len(), 21 + ext.len());
                assert_eq!(parse_segment_file_name(&name, ext), Some(offset), "{name}");
            }
            assert_eq!(parse_swap_file_name(&swap_file_name(offset)), Some(offset));
            assert!(is_cleaned_file_name(&cleaned_file_name(offset)));
            assert_eq!(
                parse_segment_member(&segment_file_name(offset, TXN_INDEX_EXT)),
                Some((offset, TXN_INDEX_EXT))
            );
        }
        assert_eq!(segment_file_name(42, LOG_EXT), "00000000000000000042.log");
        assert_eq!(swap_file_name(7), "00000000000000000007.log.swap");
        assert_eq!(cleaned_file_name(7), "00000000000000000007.log.cleaned");
    }

    #[test]
    fn other_names_are_not_segment_files() {
        for name in [
            "42.log",
            "0000000000000000042.log",
            "000000000000000000042.log",
            "0000000000000000004x.log",
            "+0000000000000000042.log",
            "99999999999999999999.log", // past i64::MAX
            "00000000000000000042log",
            "00000000000000000042.log.swap",
            "00000000000000000042.log.tmp",
            "00000000000000000042.index",
            "leader-epoch-checkpoint",
            "",
        ] {
            assert_eq!(parse_segment_file_name(name, LOG_EXT), None, "{name}");
        }
        assert_eq!(
            parse_index_file_name("00000000000000000042.timeindex"),
            Some(42)
        );
        assert_eq!(
            parse_index_file_name("00000000000000000042.index"),
            Some(42)
        );
        assert_eq!(parse_index_file_name("00000000000000000042.txnindex"), None);
        assert_eq!(parse_swap_file_name("00000000000000000042.swap"), None);
        assert_eq!(
            parse_swap_file_name("00000000000000000042.index.swap"),
            None
        );
        assert_eq!(parse_segment_member("00000000000000000042.snapshot"), None);
    }
}
