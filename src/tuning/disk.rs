//! `freshet tune disk --data-dir D`: measure the data disk the way Freshet writes to it, and
//! the profile file the broker reads at start.
//!
//! # What is measured (on a scratch file in `D`, removed afterwards)
//! - **Write bandwidth** per I/O size (4 KiB .. 4 MiB) and queue depth (1 .. 16): O_DIRECT
//!   writes through the storage engine's own write path ([`DataFile::write_padded`]: copy into
//!   aligned buffers, `depth` writes in flight, all awaited), sequential, over a preallocated
//!   and already written file (the steady state of a busy segment).
//! - **fdatasync latency**: a 4 KiB write into preallocated, unwritten space (as the broker
//!   appends) then an fdatasync, repeated; p50, p99, max.
//! - **Read bandwidth**: O_DIRECT reads of the best write size, sequential, one in flight.
//!
//! The *best write size* is the smallest size whose best queue depth reaches 90% of the
//! highest bandwidth seen; the *best queue depth* is the smallest depth reaching 90% of that
//! size's best (Redpanda's iotune looks for the same knee).
//!
//! # What the broker does with it ([`DiskProfile::io_sizes`], [`install_profile`])
//! - `write_bytes_max` = the best write size (64 KiB .. 4 MiB): the size of each O_DIRECT
//!   write of a flush round.
//! - `flush_bytes_max` = 4 x bandwidth x fdatasync p50 (4 .. 64 MiB): at most the bytes one
//!   flush round writes. Appends gather while a sync runs; a round larger than a few sync
//!   times' worth of writing only adds latency, a smaller one would split what the disk can
//!   take in one go into several syncs.
//! - `preallocate_step_bytes` = 50 ms of writing at full bandwidth (8 .. 128 MiB): a busy
//!   partition calls fallocate at most about 20 times a second.
//!
//! Without a profile file the broker uses the defaults of [`crate::storage::log`] and says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::BrokerConfig;
use crate::storage::io::DataFile;
use crate::storage::io_sizes::{self, IoSizes};

/// Name of the profile file in the data directory.
pub const PROFILE_FILE_NAME: &str = "disk-profile.toml";
/// Name of the scratch file the probe writes (removed at the end).
pub const SCRATCH_FILE_NAME: &str = ".freshet-tune-disk-scratch";
/// I/O sizes tried.
pub const WRITE_SIZES: &[usize] = &[
    4 << 10,
    16 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
    4 << 20,
];
/// Queue depths tried.
pub const QUEUE_DEPTHS: &[usize] = &[1, 2, 4, 8, 16];

/// One measured point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Bytes per write.
    pub write_bytes: u64,
    /// Writes in flight.
    pub queue_depth: u32,
    /// Measured bandwidth.
    pub bytes_per_sec: u64,
}

/// The file `freshet tune disk` writes and the broker reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskProfile {
    /// Format version (1).
    pub version: u32,
    /// When it was measured (Unix ms).
    pub measured_at_unix_ms: i64,
    /// The directory measured.
    pub data_dir: String,
    /// True for a short (`--quick`) run: fewer bytes per point, less precise.
    pub quick: bool,
    /// Highest write bandwidth seen.
    pub write_bytes_per_sec: u64,
    /// Read bandwidth (best write size, one read in flight).
    pub read_bytes_per_sec: u64,
    /// Best write size (see the module docs).
    pub best_write_bytes: u64,
    /// Best queue depth at that size.
    pub best_queue_depth: u32,
    /// fdatasync after a 4 KiB write: median, 99th percentile, max (microseconds).
    pub fdatasync_p50_us: u64,
    /// 99th percentile.
    pub fdatasync_p99_us: u64,
    /// Max.
    pub fdatasync_max_us: u64,
    /// Every point measured.
    pub points: Vec<Point>,
}

fn clamp_pow2_bytes(v: u64, lo: u64, hi: u64, unit: u64) -> u64 {
    let v = v.clamp(lo, hi);
    (v / unit).max(1) * unit
}

impl DiskProfile {
    /// The storage engine's sizes derived from this profile (see the module docs).
    pub fn io_sizes(&self) -> IoSizes {
        let write = clamp_pow2_bytes(self.best_write_bytes, 64 << 10, 4 << 20, 4096);
        let bw = self.write_bytes_per_sec.max(1) as u128;
        let sync_us = self.fdatasync_p50_us.max(100) as u128;
        let flush = (4 * bw * sync_us / 1_000_000).min(u64::MAX as u128) as u64;
        let flush = clamp_pow2_bytes(flush, (4 << 20).max(write), 64 << 20, write);
        let prealloc = (bw * 50 / 1000).min(u64::MAX as u128) as u64;
        let prealloc = clamp_pow2_bytes(prealloc, 8 << 20, 128 << 20, 1 << 20);
        IoSizes {
            write_bytes_max: write as usize,
            flush_bytes_max: flush as usize,
            preallocate_step_bytes: prealloc,
        }
    }

    /// Read a profile; `Ok(None)` if the file does not exist.
    pub fn load(path: &Path) -> Result<Option<DiskProfile>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Write the profile (atomically: temp file, rename).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        let text = format!(
            "# Written by `freshet tune disk`; read by `freshet start` (see tuning/README.md).\n{text}"
        );
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// One line for logs and the command's output.
    pub fn summary(&self) -> String {
        format!(
            "write {:.0} MB/s (best {} KiB x {} in flight), read {:.0} MB/s, fdatasync p50 {:.2} ms p99 {:.2} ms",
            self.write_bytes_per_sec as f64 / 1e6,
            self.best_write_bytes / 1024,
            self.best_queue_depth,
            self.read_bytes_per_sec as f64 / 1e6,
            self.fdatasync_p50_us as f64 / 1000.0,
            self.fdatasync_p99_us as f64 / 1000.0
        )
    }
}

/// Where the broker looks for the profile: `disk_profile` if set, else in the data directory.
pub fn profile_path(config: &BrokerConfig) -> PathBuf {
    if config.disk_profile.as_os_str().is_empty() {
        config.data_dir.join(PROFILE_FILE_NAME)
    } else {
        config.disk_profile.clone()
    }
}

/// At broker start: read the profile, install the sizes it gives (or keep the defaults) and
/// log which. A damaged profile is reported and ignored.
pub fn install_profile(config: &BrokerConfig) -> IoSizes {
    let path = profile_path(config);
    match DiskProfile::load(&path) {
        Ok(Some(p)) => {
            let sizes = p.io_sizes();
            io_sizes::set(sizes);
            tracing::info!(
                path = %path.display(),
                measured = %p.summary(),
                write_bytes_max = sizes.write_bytes_max,
                flush_bytes_max = sizes.flush_bytes_max,
                preallocate_step_bytes = sizes.preallocate_step_bytes,
                "using disk profile"
            );
            sizes
        }
        Ok(None) => {
            let sizes = io_sizes::get();
            tracing::info!(
                path = %path.display(),
                write_bytes_max = sizes.write_bytes_max,
                flush_bytes_max = sizes.flush_bytes_max,
                preallocate_step_bytes = sizes.preallocate_step_bytes,
                "no disk profile (run `freshet tune disk --data-dir <data_dir>`); using default write sizes"
            );
            sizes
        }
        Err(e) => {
            let sizes = io_sizes::get();
            tracing::warn!(error = %e, "disk profile unreadable; using default write sizes");
            sizes
        }
    }
}

/// Options of a probe run.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Directory to measure (the broker's data directory).
    pub data_dir: PathBuf,
    /// Short run (about a second): fewer bytes per point.
    pub quick: bool,
}

/// Run the probe on its own executor (see the module docs).
pub fn probe(opts: &ProbeOptions) -> Result<DiskProfile, String> {
    std::fs::create_dir_all(&opts.data_dir)
        .map_err(|e| format!("{}: {e}", opts.data_dir.display()))?;
    let dir = opts.data_dir.clone();
    let quick = opts.quick;
    crate::rt::run_on_new_executor(1 << 20, 256, async move { probe_async(&dir, quick).await })
        .map_err(|e| format!("cannot start an I/O executor (memlock?): {e}"))?
}

fn storage_err(e: crate::storage::StorageError) -> String {
    e.to_string()
}

async fn probe_async(dir: &Path, quick: bool) -> Result<DiskProfile, String> {
    crate::storage::prime_disk(dir).await.map_err(storage_err)?;
    let path = dir.join(SCRATCH_FILE_NAME);
    let file_len: u64 = if quick { 32 << 20 } else { 256 << 20 };
    let point_bytes: u64 = if quick { 4 << 20 } else { 64 << 20 };
    let point_time = if quick {
        Duration::from_millis(25)
    } else {
        Duration::from_millis(400)
    };
    let file = DataFile::open_rw(&path).await.map_err(storage_err)?;
    let result = measure(&file, file_len, point_bytes, point_time, quick).await;
    let _ = std::fs::remove_file(&path);
    let mut p = result?;
    p.data_dir = dir.display().to_string();
    Ok(p)
}

async fn measure(
    file: &DataFile,
    file_len: u64,
    point_bytes: u64,
    point_time: Duration,
    quick: bool,
) -> Result<DiskProfile, String> {
    file.truncate(0).await.map_err(storage_err)?;
    file.preallocate(file_len).await.map_err(storage_err)?;
    let big = vec![0xa5u8; (4 << 20) * QUEUE_DEPTHS.iter().max().copied().unwrap_or(1)];
    // Write the whole file once: later points overwrite allocated blocks.
    fill(file, file_len, &big).await?;

    let points = write_points(file, file_len, point_bytes, point_time, &big).await?;
    let (best_bw, best_size, best_depth) = best_write(&points);

    let lat_us = sync_latencies(file, file_len, quick, &big).await?;
    let pct = |q: f64| lat_us[((lat_us.len() as f64 - 1.0) * q).round() as usize];

    let read_bw = read_bandwidth(file, file_len, point_bytes, best_size).await?;

    Ok(DiskProfile {
        version: 1,
        measured_at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        data_dir: String::new(),
        quick,
        write_bytes_per_sec: best_bw,
        read_bytes_per_sec: read_bw,
        best_write_bytes: best_size,
        best_queue_depth: best_depth,
        fdatasync_p50_us: pct(0.5),
        fdatasync_p99_us: pct(0.99),
        fdatasync_max_us: lat_us.last().copied().unwrap_or(0),
        points,
    })
}

/// Writes `file` whole once, then syncs it.
async fn fill(file: &DataFile, file_len: u64, big: &[u8]) -> Result<(), String> {
    let mut pos = 0u64;
    while pos < file_len {
        let n = (4u64 << 20).min(file_len - pos) as usize;
        file.write_padded(pos, &[&big[..n]], 1 << 20)
            .await
            .map_err(storage_err)?;
        pos += n as u64;
    }
    file.sync().await.map_err(storage_err)?;

    Ok(())
}

/// Write bandwidth for each write size and queue depth that fits the file.
async fn write_points(
    file: &DataFile,
    file_len: u64,
    point_bytes: u64,
    point_time: Duration,
    big: &[u8],
) -> Result<Vec<Point>, String> {
    let mut points = Vec::new();
    for &size in WRITE_SIZES {
        for &depth in QUEUE_DEPTHS {
            let round = (size * depth) as u64;
            if round > file_len {
                continue;
            }
            let start = Instant::now();
            let mut written = 0u64;
            let mut pos = 0u64;
            while written < point_bytes.max(round) && (written == 0 || start.elapsed() < point_time)
            {
                if pos + round > file_len {
                    pos = 0;
                }
                file.write_padded(pos, &[&big[..round as usize]], size)
                    .await
                    .map_err(storage_err)?;
                pos += round;
                written += round;
            }
            let secs = start.elapsed().as_secs_f64().max(1e-6);
            points.push(Point {
                write_bytes: size as u64,
                queue_depth: depth as u32,
                bytes_per_sec: (written as f64 / secs) as u64,
            });
            crate::rt::yield_now().await;
        }
        file.sync().await.map_err(storage_err)?;
    }
    Ok(points)
}

/// The best write bandwidth, the smallest write size within 90% of it, and the lowest queue
/// depth within 90% of that size's best.
fn best_write(points: &[Point]) -> (u64, u64, u32) {
    let best_bw = points.iter().map(|p| p.bytes_per_sec).max().unwrap_or(0);
    let best_at = |size: u64| {
        points
            .iter()
            .filter(|p| p.write_bytes == size)
            .map(|p| p.bytes_per_sec)
            .max()
            .unwrap_or(0)
    };
    let best_size = WRITE_SIZES
        .iter()
        .map(|&s| s as u64)
        .find(|&s| best_at(s) as f64 >= 0.9 * best_bw as f64)
        .unwrap_or(1 << 20);
    let size_best = best_at(best_size);
    let best_depth = points
        .iter()
        .filter(|p| p.write_bytes == best_size && p.bytes_per_sec as f64 >= 0.9 * size_best as f64)
        .map(|p| p.queue_depth)
        .min()
        .unwrap_or(1);

    (best_bw, best_size, best_depth)
}

/// fdatasync latencies (µs, sorted) after a small write into preallocated, never written
/// space, as the broker appends (the sync then also commits the extent conversion, a journal
/// write).
async fn sync_latencies(
    file: &DataFile,
    file_len: u64,
    quick: bool,
    big: &[u8],
) -> Result<Vec<u64>, String> {
    let syncs = if quick { 20 } else { 200 };
    file.preallocate(file_len + syncs as u64 * 4096)
        .await
        .map_err(storage_err)?;
    let mut lat_us = Vec::with_capacity(syncs);
    for i in 0..syncs {
        let pos = file_len + i as u64 * 4096;
        file.write_padded(pos, &[&big[..4096]], 4096)
            .await
            .map_err(storage_err)?;
        let t = Instant::now();
        file.sync().await.map_err(storage_err)?;
        lat_us.push(t.elapsed().as_micros() as u64);
    }
    lat_us.sort_unstable();
    lat_us.sort_unstable();
    Ok(lat_us)
}

/// Read bandwidth at the best size.
async fn read_bandwidth(
    file: &DataFile,
    file_len: u64,
    point_bytes: u64,
    best_size: u64,
) -> Result<u64, String> {
    let read_len = file_len.min(point_bytes.max(best_size));
    let start = Instant::now();
    let mut pos = 0u64;
    while pos < read_len {
        let n = best_size.min(read_len - pos) as usize;
        let got = file.read(pos, n).await.map_err(storage_err)?;
        if got.is_empty() {
            break;
        }
        pos += got.len() as u64;
    }
    Ok((pos as f64 / start.elapsed().as_secs_f64().max(1e-6)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(bw: u64, best: u64, sync_us: u64) -> DiskProfile {
        DiskProfile {
            version: 1,
            measured_at_unix_ms: 0,
            data_dir: "/d".into(),
            quick: true,
            write_bytes_per_sec: bw,
            read_bytes_per_sec: bw,
            best_write_bytes: best,
            best_queue_depth: 4,
            fdatasync_p50_us: sync_us,
            fdatasync_p99_us: sync_us * 4,
            fdatasync_max_us: sync_us * 5,
            points: vec![Point {
                write_bytes: best,
                queue_depth: 4,
                bytes_per_sec: bw,
            }],
        }
    }

    #[test]
    fn sizes_follow_the_measurements_within_bounds() {
        // 2 GB/s, 1 MiB writes, 3.5 ms syncs: 28 MB per 4 syncs, 100 MB per 50 ms.
        let s = profile(2_000_000_000, 1 << 20, 3_500).io_sizes();
        assert_eq!(s.write_bytes_max, 1 << 20);
        assert_eq!(
            s.flush_bytes_max,
            26 << 20,
            "4 x 2 GB/s x 3.5 ms in whole writes"
        );
        assert_eq!(s.preallocate_step_bytes, 95 << 20);
        // A slow disk: floors.
        let s = profile(50_000_000, 4096, 20_000).io_sizes();
        assert_eq!(s.write_bytes_max, 64 << 10);
        assert_eq!(s.flush_bytes_max, 4 << 20);
        assert_eq!(s.preallocate_step_bytes, 8 << 20);
        // A very fast one: ceilings.
        let s = profile(20_000_000_000, 8 << 20, 10_000).io_sizes();
        assert_eq!(s.write_bytes_max, 4 << 20);
        assert_eq!(s.flush_bytes_max, 64 << 20);
        assert_eq!(s.preallocate_step_bytes, 128 << 20);
    }

    #[test]
    fn profile_file_round_trips() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join(PROFILE_FILE_NAME);
        assert_eq!(DiskProfile::load(&path), Ok(None));
        let p = profile(1_000_000_000, 256 << 10, 2_000);
        p.save(&path).expect("save");
        assert_eq!(DiskProfile::load(&path), Ok(Some(p)));
        std::fs::write(&path, "not = [toml").expect("write");
        assert!(DiskProfile::load(&path).is_err());
    }
}
