//! The legacy cluster metadata file, `cluster-metadata.json`, read once to migrate it.
//!
//! Before the metadata log (`shard::metadata_log`), the metadata was one JSON document in the
//! data directory, replaced atomically (`.tmp`, fdatasync, rename, directory fsync). The
//! metadata now lives in the internal log `<data_dir>/internal/__cluster_metadata-0/`; this
//! module reads the old document ([`load`]) so that the first start of this version migrates
//! it, and renames it to `cluster-metadata.json.migrated` ([`mark_migrated`]) once the log
//! holds it durably. Nothing writes the JSON format any more except tests ([`save`], to make
//! an old data directory). Blocking calls: run at startup, before the shards.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::metadata::ClusterMetadata;

/// File name of the metadata document inside the data directory.
pub const METADATA_FILE: &str = "cluster-metadata.json";
/// What [`mark_migrated`] renames it to.
pub const METADATA_FILE_MIGRATED: &str = "cluster-metadata.json.migrated";
/// The largest metadata document read; a larger one is refused (not valid metadata).
pub const METADATA_FILE_BYTES_MAX: u64 = 256 << 20;

/// Where `data_dir`'s metadata lives.
pub fn metadata_path(data_dir: &Path) -> PathBuf {
    data_dir.join(METADATA_FILE)
}

/// Loads the metadata, or `None` when the data directory has none yet (a new broker).
pub fn load(data_dir: &Path) -> std::io::Result<Option<ClusterMetadata>> {
    let path = metadata_path(data_dir);
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = Vec::new();
    file.take(METADATA_FILE_BYTES_MAX + 1)
        .read_to_end(&mut text)?;
    if text.len() as u64 > METADATA_FILE_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {METADATA_FILE_BYTES_MAX} bytes",
                path.display()
            ),
        ));
    }
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not valid metadata: {e}", path.display()),
        )
    })
}

/// Renames the migrated document to [`METADATA_FILE_MIGRATED`] (replacing an older one) and
/// fsyncs the directory: a later start finds no document to migrate.
pub fn mark_migrated(data_dir: &Path) -> std::io::Result<()> {
    fs::rename(
        metadata_path(data_dir),
        data_dir.join(METADATA_FILE_MIGRATED),
    )?;
    fs::File::open(data_dir)?.sync_all()
}

/// Replaces the stored document with `metadata`, durably and atomically, as the versions
/// before the metadata log did (tests make old data directories with it).
pub fn save(data_dir: &Path, metadata: &ClusterMetadata) -> std::io::Result<()> {
    let path = metadata_path(data_dir);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(metadata).map_err(std::io::Error::other)?;
    {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_data()?;
    }
    fs::rename(&tmp, &path)?;
    fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::metadata::MetadataCommand;

    #[test]
    fn saved_metadata_loads_back_identical() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let m = ClusterMetadata::default()
            .apply(&MetadataCommand::CreateTopic {
                name: "t".into(),
                partitions: 3,
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
                replication_factor: 1,
                assignments: None,
            })
            .unwrap();
        save(dir.path(), &m).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(m));
    }

    #[test]
    fn corrupt_metadata_is_an_error_not_an_empty_cluster() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(metadata_path(dir.path()), b"{ not json").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
