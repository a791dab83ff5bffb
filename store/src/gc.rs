//! Garbage collection in the store: what a delete removes, what a failed
//! pull leaves behind, the sweep at open, and the pins that keep blobs in
//! use by a pull or package in this process out of reach of all three.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use crate::artifact::Manifest;
use crate::error::StoreError;
use crate::store::{Index, Store, read};

/// Keeps blobs pinned while it lives.
#[derive(Debug)]
pub(crate) struct Pins {
    pins: Arc<Mutex<HashMap<String, usize>>>,
    digests: Vec<String>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
        for digest in &self.digests {
            if let Some(count) = pins.get_mut(digest) {
                *count -= 1;
                if *count == 0 {
                    pins.remove(digest);
                }
            }
        }
    }
}

impl Store {
    /// Deletes those of `digests` that no stored model uses (the blobs of a
    /// failed pull).
    /// (`digests` are pinned once by the caller; other pins protect them.)
    pub(crate) fn discard_unreferenced(&self, digests: Vec<String>) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let in_use = self.blobs_in_use(&self.read_index()?);
        for digest in digests {
            if !in_use.contains(&digest) && self.pin_count(&digest) <= 1 {
                let _ = fs::remove_file(self.blob_path(&digest));
            }
        }
        Ok(())
    }

    /// Pins `digests` until the returned guard drops.
    pub(crate) fn pin(&self, digests: impl IntoIterator<Item = String>) -> Pins {
        let digests: Vec<String> = digests.into_iter().collect();
        let mut pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
        for digest in &digests {
            *pins.entry(digest.clone()).or_default() += 1;
        }
        Pins {
            pins: self.pins.clone(),
            digests,
        }
    }

    fn pin_count(&self, digest: &str) -> usize {
        self.pins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .copied()
            .unwrap_or(0)
    }

    fn blobs_in_use(&self, index: &Index) -> HashSet<String> {
        let mut in_use = HashSet::new();
        for entry in &index.models {
            if let Ok(other) =
                read(&self.manifest_path(&entry.id)).and_then(|b| Manifest::parse(&b, &entry.id))
            {
                in_use.extend(other.blobs().map(|b| b.digest.clone()));
            }
        }
        in_use
    }

    /// Deletes the manifest `id` and the blobs no model in `index` uses.
    pub(crate) fn collect(&self, index: &Index, id: &str) {
        let Ok(bytes) = read(&self.manifest_path(id)) else {
            return;
        };
        let Ok(manifest) = Manifest::parse(&bytes, id) else {
            return;
        };
        let in_use = self.blobs_in_use(index);
        for blob in manifest.blobs() {
            if !in_use.contains(&blob.digest) && self.pin_count(&blob.digest) == 0 {
                let _ = fs::remove_file(self.blob_path(&blob.digest));
            }
        }
        let _ = fs::remove_file(self.manifest_path(id));
        let _ = fs::remove_dir_all(self.bundle_dir(id));
        self.discard_partials(&in_use);
    }

    /// Removes `.partial` downloads of blobs no stored model uses, unless a
    /// pull is writing them (it holds the file's lock). Run when a model is
    /// deleted: what failed pulls left is dropped with it, rather than
    /// waiting a week for the sweep.
    fn discard_partials(&self, in_use: &HashSet<String>) {
        let Ok(entries) = fs::read_dir(self.root.join("blobs/sha256")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".partial") else {
                continue;
            };
            if in_use.contains(&format!("sha256:{hex}")) {
                continue;
            }
            let path = entry.path();
            let Ok(file) = fs::File::options().read(true).open(&path) else {
                continue;
            };
            // Held by a pull in progress: leave it.
            if file.try_lock().is_ok() {
                tracing::info!(file = %path.display(), "removing a partial download");
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// Removes what interrupted work left behind, once it is old enough
    /// that no live process can still be using it: files in `tmp/` (and
    /// bundle staging directories) older than an hour; manifests the index
    /// does not name and blobs no indexed manifest uses, older than an hour
    /// (a crash between the index write and the cleanup of a delete, or a
    /// pull that died before its index write); `.partial` downloads
    /// untouched for a week.
    pub(crate) fn sweep(&self) {
        const STALE: u64 = 3600;
        const STALE_PARTIAL: u64 = 7 * 24 * 3600;
        let age = |path: &Path| {
            fs::symlink_metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map_or(0, |d| d.as_secs())
        };
        if let Ok(entries) = fs::read_dir(self.root.join("tmp")) {
            for entry in entries.flatten() {
                let path = entry.path();
                if age(&path) > STALE {
                    let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
                }
            }
        }
        let Ok(_lock) = self.lock() else { return };
        let Ok(index) = self.read_index() else { return };
        let known: HashSet<&str> = index
            .models
            .iter()
            .filter_map(|m| m.id.strip_prefix("sha256:"))
            .collect();
        if let Ok(entries) = fs::read_dir(self.root.join("manifests/sha256")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(name.as_str()) && age(&entry.path()) > STALE {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let in_use = self.blobs_in_use(&index);
        if let Ok(entries) = fs::read_dir(self.root.join("blobs/sha256")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                let stale = match name.strip_suffix(".partial") {
                    Some(_) => age(&path) > STALE_PARTIAL,
                    None => {
                        let digest = format!("sha256:{name}");
                        !in_use.contains(&digest)
                            && self.pin_count(&digest) == 0
                            && age(&path) > STALE
                    }
                };
                if stale {
                    tracing::info!(file = %path.display(), "removing an unreferenced store file");
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs::File;
    use std::time::{Duration, SystemTime};

    use super::*;

    fn file_aged(path: &Path, age: Duration) {
        std::fs::write(path, b"x").unwrap();
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn opening_sweeps_old_leftovers_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "docker.io").unwrap();
        let blobs = dir.path().join("blobs/sha256");
        let hour = Duration::from_secs(3600);
        let old_orphan = blobs.join("a".repeat(64));
        let new_orphan = blobs.join("b".repeat(64));
        let old_partial = blobs.join(format!("{}.partial", "c".repeat(64)));
        let new_partial = blobs.join(format!("{}.partial", "d".repeat(64)));
        let old_manifest = dir.path().join("manifests/sha256").join("e".repeat(64));
        let old_tmp_dir = dir.path().join("tmp/bundle-x");
        file_aged(&old_orphan, 2 * hour);
        file_aged(&new_orphan, Duration::ZERO);
        file_aged(&old_partial, 8 * 24 * hour);
        file_aged(&new_partial, 2 * hour);
        file_aged(&old_manifest, 2 * hour);
        std::fs::create_dir_all(&old_tmp_dir).unwrap();
        File::open(&old_tmp_dir)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * hour)
            .unwrap();
        // A pinned old orphan (a pull in flight in this process) stays.
        let pinned = blobs.join("f".repeat(64));
        file_aged(&pinned, 2 * hour);
        let _pins = store.pin([format!("sha256:{}", "f".repeat(64))]);
        store.sweep();
        assert!(!old_orphan.exists());
        assert!(
            new_orphan.exists(),
            "may belong to a pull in flight elsewhere"
        );
        assert!(!old_partial.exists());
        assert!(new_partial.exists(), "kept to resume");
        assert!(!old_manifest.exists());
        assert!(!old_tmp_dir.exists());
        assert!(pinned.exists());
    }
}
