//! Durable storage of the cluster metadata.
//!
//! The metadata is small and changes rarely (topic create/delete/alter), so it is kept as one
//! JSON document replaced atomically: write `cluster-metadata.json.tmp`, fdatasync it, rename
//! it over `cluster-metadata.json`, fsync the directory. A crash leaves either the old or the
//! new document, never a mix. These are blocking calls: shards run them through the runtime
//! seam's blocking thread pool (`rt::spawn_blocking`), never on the reactor thread.
//!
//! Not yet: keeping metadata as an internal log on the storage engine (as Kafka's KRaft
//! `__cluster_metadata`), which the consumer-groups issue brings for committed offsets.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::metadata::ClusterMetadata;

/// File name of the metadata document inside the data directory.
pub const METADATA_FILE: &str = "cluster-metadata.json";

/// Where `data_dir`'s metadata lives.
pub fn metadata_path(data_dir: &Path) -> PathBuf {
    data_dir.join(METADATA_FILE)
}

/// Loads the metadata, or `None` when the data directory has none yet (a new broker).
pub fn load(data_dir: &Path) -> std::io::Result<Option<ClusterMetadata>> {
    let path = metadata_path(data_dir);
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not valid metadata: {e}", path.display()),
        )
    })
}

/// Replaces the stored metadata with `metadata`, durably and atomically.
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
