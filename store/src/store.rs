//! The content-addressed model store on disk.
//!
//! ```text
//! <root>/blobs/sha256/<hex>           verified blobs: configs, GGUF and license layers
//! <root>/blobs/sha256/<hex>.partial   a download in progress (resumed with HTTP Range)
//! <root>/manifests/sha256/<hex>       manifests, byte for byte; <hex> is the model ID
//! <root>/models.json                  the index: model IDs and their tags
//! <root>/bundles/sha256/<hex>/        links `model-0000N-of-0000M.gguf` → the blobs of
//!                                     a sharded model, named as llama.cpp finds shards
//! <root>/tmp/                         files being written
//! ```
//!
//! Every file is written to `tmp/`, fsynced and renamed into place, and a
//! blob only under the name of its verified sha256. A model becomes visible
//! when the index names it, and the index is written last (and atomically),
//! so a crash or a kill at any point leaves the store readable with no half
//! model in it. Index changes hold an exclusive lock on `<root>/.lock`, so
//! several processes (a worker and `herd package`) can share one store.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::artifact::{ConfigFile, Manifest};
use crate::error::StoreError;
use crate::reference::{ModelRef, as_model_id};

/// Disk space a pull leaves free (for the index, logs, everything else).
pub const FREE_SPACE_RESERVE: u64 = 256 << 20;

/// A model in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel {
    /// `sha256:<hex>` of the manifest.
    pub id: String,
    /// Full references (`registry/repository:tag`), in the order added.
    pub tags: Vec<String>,
    pub manifest: Manifest,
    pub config: ConfigFile,
}

impl StoredModel {
    /// The 12-hex short ID.
    pub fn short_id(&self) -> &str {
        let hex = self.id.strip_prefix("sha256:").unwrap_or(&self.id);
        &hex[..hex.len().min(12)]
    }
}

/// What a removal will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovalPlan {
    /// Only this tag (full form) goes; the model keeps its other tags.
    Untag(String),
    /// The whole model goes.
    Delete,
}

/// What a removal did, in Docker's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    pub untagged: Vec<String>,
    /// The model ID, when the model itself was deleted.
    pub deleted: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    pub(crate) models: Vec<IndexEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    pub(crate) id: String,
    tags: Vec<String>,
}

/// A model store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) root: PathBuf,
    default_registry: String,
    /// Blobs that pulls and packages in this process are working with:
    /// garbage collection leaves them alone until they are in the index.
    pub(crate) pins: Arc<Mutex<HashMap<String, usize>>>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`; `default_registry` is
    /// where references without a registry point.
    pub fn open(root: impl Into<PathBuf>, default_registry: &str) -> Result<Self, StoreError> {
        // Every short name is completed with it, so it must be a registry.
        crate::reference::check_registry(default_registry)?;
        let root = root.into();
        for dir in ["blobs/sha256", "manifests/sha256", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path)
                .map_err(StoreError::io(format!("cannot create {}", path.display())))?;
        }
        let store = Self {
            root,
            default_registry: default_registry.to_owned(),
            pins: Arc::default(),
        };
        store.sweep();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn default_registry(&self) -> &str {
        &self.default_registry
    }

    /// Parses a reference against this store's default registry.
    pub fn parse_ref(&self, text: &str) -> Result<ModelRef, StoreError> {
        ModelRef::parse(text, &self.default_registry)
    }

    /// The user-facing form of a stored full reference.
    pub fn familiar(&self, full: &str) -> String {
        self.parse_ref(full)
            .map_or_else(|_| full.to_owned(), |r| r.familiar(&self.default_registry))
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs").join(digest.replacen(':', "/", 1))
    }

    pub(crate) fn partial_path(&self, digest: &str) -> PathBuf {
        let mut path = self.blob_path(digest).into_os_string();
        path.push(".partial");
        PathBuf::from(path)
    }

    pub(crate) fn manifest_path(&self, id: &str) -> PathBuf {
        self.root.join("manifests").join(id.replacen(':', "/", 1))
    }

    /// Checks that `bytes` more fit on the store's file system, keeping
    /// `FREE_SPACE_RESERVE` free; passes when the space cannot be read.
    pub fn check_space(&self, bytes: u64) -> Result<(), StoreError> {
        let Ok(stat) = rustix::fs::statvfs(&self.root) else {
            return Ok(());
        };
        let available = stat.f_bavail.saturating_mul(stat.f_frsize);
        if bytes.saturating_add(FREE_SPACE_RESERVE) > available {
            return Err(StoreError::InsufficientStorage {
                needed: bytes,
                available,
            });
        }
        Ok(())
    }

    /// Bytes a pull of `blob` still has to fetch (less what a `.partial`
    /// file holds).
    pub(crate) fn missing_bytes(&self, digest: &str, size: u64) -> u64 {
        if self.has_blob(digest) {
            return 0;
        }
        let partial = fs::metadata(self.partial_path(digest)).map_or(0, |m| m.len());
        size.saturating_sub(partial)
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The GGUF file to load, used in place: the GGUF layer's blob, or for
    /// a sharded model the first shard's link in its bundle (see
    /// [`Store::prepare_gguf`]).
    pub fn gguf_path(&self, model: &StoredModel) -> Option<PathBuf> {
        let layers: Vec<_> = model.manifest.gguf_layers().collect();
        match layers.as_slice() {
            [] => None,
            [only] => Some(self.blob_path(&only.digest)),
            shards => Some(self.bundle_dir(&model.id).join(crate::package::shard_name(
                "model",
                1,
                shards.len(),
            ))),
        }
    }

    pub(crate) fn bundle_dir(&self, id: &str) -> PathBuf {
        self.root.join("bundles").join(id.replacen(':', "/", 1))
    }

    /// [`Store::gguf_path`], after making it loadable: a sharded model gets
    /// a directory of links named `model-0000N-of-0000M.gguf`, the names
    /// llama.cpp derives the other shards' paths from.
    pub fn prepare_gguf(&self, model: &StoredModel) -> Result<PathBuf, StoreError> {
        let path = self
            .gguf_path(model)
            .ok_or_else(|| StoreError::InvalidArtifact {
                reference: model.id.clone(),
                reason: "it has no GGUF layer".into(),
            })?;
        let shards: Vec<_> = model.manifest.gguf_layers().collect();
        let bundle = self.bundle_dir(&model.id);
        if shards.len() < 2 || bundle.is_dir() {
            return Ok(path);
        }
        // Build the links aside, then rename the directory into place.
        let staging = self
            .root
            .join("tmp")
            .join(format!("bundle-{}", uuid_like()));
        let io = |what: String| StoreError::io(what);
        fs::create_dir_all(&staging).map_err(io(format!("cannot create {}", staging.display())))?;
        for (i, shard) in shards.iter().enumerate() {
            let hex = shard.digest.trim_start_matches("sha256:");
            let target = Path::new("../../../blobs/sha256").join(hex);
            let link = staging.join(crate::package::shard_name("model", i + 1, shards.len()));
            std::os::unix::fs::symlink(&target, &link)
                .map_err(io(format!("cannot link {}", link.display())))?;
        }
        if let Some(parent) = bundle.parent() {
            fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        if let Err(e) = fs::rename(&staging, &bundle) {
            let _ = fs::remove_dir_all(&staging);
            // Another loader won the race; its bundle is the same.
            if !bundle.is_dir() {
                return Err(io(format!("cannot create {}", bundle.display()))(e));
            }
        }
        Ok(path)
    }

    /// Every model, newest first.
    pub fn list(&self) -> Result<Vec<StoredModel>, StoreError> {
        let index = self.read_index()?;
        // An entry removed (or damaged) since the index was read is left out
        // rather than failing the whole list.
        let mut models: Vec<StoredModel> = index
            .models
            .iter()
            .filter_map(|entry| match self.load(entry) {
                Ok(model) => Some(model),
                Err(e) => {
                    tracing::warn!(id = %entry.id, error = %e, "skipping an unreadable stored model");
                    None
                }
            })
            .collect();
        models.sort_by_key(|m| std::cmp::Reverse(m.config.created_unix()));
        Ok(models)
    }

    /// The model a reference or ID names.
    pub fn resolve(&self, text: &str) -> Result<StoredModel, StoreError> {
        let index = self.read_index()?;
        let entry = self.find(&index, text)?;
        self.load(entry)
    }

    /// The ID of the model a reference or ID names, from the index alone.
    pub fn resolve_id(&self, text: &str) -> Result<String, StoreError> {
        let index = self.read_index()?;
        Ok(self.find(&index, text)?.id.clone())
    }

    fn find<'a>(&self, index: &'a Index, text: &str) -> Result<&'a IndexEntry, StoreError> {
        let not_found = || StoreError::NotFound(text.to_owned());
        if let Some(hex) = as_model_id(text.trim()) {
            let mut matches = index.models.iter().filter(|m| {
                m.id.strip_prefix("sha256:")
                    .is_some_and(|h| h.starts_with(hex))
            });
            if let Some(found) = matches.next() {
                return Ok(found);
            }
        }
        let reference = self.parse_ref(text)?;
        if let Some(digest) = reference.digest() {
            return index
                .models
                .iter()
                .find(|m| m.id == digest)
                .ok_or_else(not_found);
        }
        let full = reference.full();
        index
            .models
            .iter()
            .find(|m| m.tags.contains(&full))
            .ok_or_else(not_found)
    }

    fn load(&self, entry: &IndexEntry) -> Result<StoredModel, StoreError> {
        let manifest_bytes = read(&self.manifest_path(&entry.id))?;
        let manifest = Manifest::parse(&manifest_bytes, &entry.id)?;
        let config =
            ConfigFile::parse(&read(&self.blob_path(&manifest.config.digest))?, &entry.id)?;
        Ok(StoredModel {
            id: entry.id.clone(),
            tags: entry.tags.clone(),
            manifest,
            config,
        })
    }

    /// The raw manifest bytes of a stored model (its ID is their digest).
    pub fn manifest_bytes(&self, id: &str) -> Result<Vec<u8>, StoreError> {
        read(&self.manifest_path(id))
    }

    /// Records a model whose blobs are all stored: writes the manifest, then
    /// adds the model and `tag` to the index. Returns the model.
    pub fn add_model(
        &self,
        manifest_bytes: &[u8],
        tag: Option<&ModelRef>,
    ) -> Result<StoredModel, StoreError> {
        let id = sha256_digest(manifest_bytes);
        let manifest = Manifest::parse(manifest_bytes, &id)?;
        if let Some(tag) = tag
            && tag.digest().is_some()
        {
            return Err(StoreError::InvalidReference {
                reference: tag.full(),
                reason: "a tag cannot name a digest".into(),
            });
        }
        let _lock = self.lock()?;
        for blob in manifest.blobs() {
            if !self.has_blob(&blob.digest) {
                // Not the artifact's fault: something removed it meanwhile.
                return Err(StoreError::Io {
                    context: format!(
                        "blob {} of {id} vanished from the store; retry",
                        blob.digest
                    ),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
        }
        self.write_atomic(&self.manifest_path(&id), manifest_bytes)?;
        let mut index = self.read_index()?;
        if let Some(tag) = tag {
            untag_everywhere(&mut index, &tag.full());
        }
        match index.models.iter_mut().find(|m| m.id == id) {
            Some(entry) => {
                if let Some(tag) = tag {
                    entry.tags.push(tag.full());
                }
            }
            None => index.models.push(IndexEntry {
                id: id.clone(),
                tags: tag.map(ModelRef::full).into_iter().collect(),
            }),
        }
        self.write_index(&index)?;
        drop(_lock);
        self.resolve(&id)
    }

    /// Adds the tag `target` to the model `source` names (moving it from any
    /// other model, as Docker does).
    pub fn tag(&self, source: &str, target: &str) -> Result<StoredModel, StoreError> {
        let target = self.parse_ref(target)?;
        if target.digest().is_some() {
            return Err(StoreError::InvalidReference {
                reference: target.full(),
                reason: "a tag cannot name a digest".into(),
            });
        }
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let id = self.find(&index, source)?.id.clone();
        let full = target.full();
        untag_everywhere(&mut index, &full);
        if let Some(entry) = index.models.iter_mut().find(|m| m.id == id) {
            entry.tags.push(full);
        }
        self.write_index(&index)?;
        drop(_lock);
        self.resolve(&id)
    }

    /// What removing `text` from a model with `tags` does, by Docker's
    /// rules: a tag of a model with other tags is only untagged; an ID or
    /// digest of a model with several tags needs `force`; `force` always
    /// deletes the whole model.
    pub fn plan_removal(
        &self,
        tags: &[String],
        text: &str,
        force: bool,
    ) -> Result<RemovalPlan, StoreError> {
        let tag = self
            .parse_ref(text)
            .ok()
            .filter(|r| r.digest().is_none())
            .map(|r| r.full())
            .filter(|full| tags.contains(full));
        match (force, tags.len() > 1, tag) {
            (false, true, Some(full)) => Ok(RemovalPlan::Untag(full)),
            (false, true, None) => Err(StoreError::MultiplyTagged {
                reference: text.to_owned(),
                tags: tags.len(),
            }),
            _ => Ok(RemovalPlan::Delete),
        }
    }

    /// Removes a tag, or a whole model. A tag of a model with other tags is
    /// only untagged; an ID of a model with several tags needs `force`;
    /// `force` always deletes the whole model. Blobs no other model uses are
    /// deleted with it.
    pub fn remove(&self, text: &str, force: bool) -> Result<Removal, StoreError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let entry = self.find(&index, text)?.clone();
        let mut removal = Removal::default();
        if let RemovalPlan::Untag(full) = self.plan_removal(&entry.tags, text, force)? {
            untag_everywhere(&mut index, &full);
            self.write_index(&index)?;
            removal.untagged.push(full);
            return Ok(removal);
        }
        index.models.retain(|m| m.id != entry.id);
        // The index goes first: from here the model is invisible, and a
        // crash leaves only unreferenced files behind.
        self.write_index(&index)?;
        removal.untagged = entry.tags.clone();
        removal.deleted = Some(entry.id.clone());
        self.collect(&index, &entry.id);
        Ok(removal)
    }

    /// A new file in `tmp/` to write a blob into.
    pub(crate) fn temp_file(&self) -> Result<(PathBuf, File), StoreError> {
        let path = self
            .root
            .join("tmp")
            .join(format!("{}-{}", std::process::id(), uuid_like()));
        let file = File::create(&path)
            .map_err(StoreError::io(format!("cannot create {}", path.display())))?;
        Ok((path, file))
    }

    /// Moves a fully written, fsynced file with the given verified digest
    /// into the blob store.
    pub(crate) fn commit_blob(&self, from: &Path, digest: &str) -> Result<PathBuf, StoreError> {
        let to = self.blob_path(digest);
        fs::rename(from, &to).map_err(StoreError::io(format!(
            "cannot move {} to {}",
            from.display(),
            to.display()
        )))?;
        sync_dir(to.parent().unwrap_or(&self.root));
        Ok(to)
    }

    /// Writes `bytes` as a blob; returns its digest.
    pub(crate) fn write_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let digest = sha256_digest(bytes);
        if !self.has_blob(&digest) {
            self.write_atomic(&self.blob_path(&digest), bytes)?;
        }
        Ok(digest)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let (tmp, mut file) = self.temp_file()?;
        let context = || format!("cannot write {}", tmp.display());
        file.write_all(bytes).map_err(StoreError::io(context()))?;
        file.sync_all().map_err(StoreError::io(context()))?;
        drop(file);
        fs::rename(&tmp, path).map_err(StoreError::io(format!(
            "cannot move {} to {}",
            tmp.display(),
            path.display()
        )))?;
        sync_dir(path.parent().unwrap_or(&self.root));
        Ok(())
    }

    /// Changes whenever the set of models or tags changes (the index is
    /// replaced on every change): a cheap `stat`, for callers that cache
    /// [`Store::list`].
    pub fn revision(&self) -> Option<(u64, std::time::SystemTime, u64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(self.root.join("models.json")).ok()?;
        Some((meta.ino(), meta.modified().ok()?, meta.len()))
    }

    pub(crate) fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.root.join("models.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Io {
                context: format!("the index {} is corrupt", path.display()),
                source: std::io::Error::other(e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(StoreError::io(format!("cannot read {}", path.display()))(e)),
        }
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| StoreError::Io {
            context: "cannot encode the index".into(),
            source: std::io::Error::other(e),
        })?;
        self.write_atomic(&self.root.join("models.json"), &bytes)
    }

    /// An exclusive lock on the index, across processes.
    pub(crate) fn lock(&self) -> Result<File, StoreError> {
        let path = self.root.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io(format!("cannot open {}", path.display())))?;
        file.lock()
            .map_err(StoreError::io(format!("cannot lock {}", path.display())))?;
        Ok(file)
    }
}

fn untag_everywhere(index: &mut Index, full: &str) {
    for model in &mut index.models {
        model.tags.retain(|t| t != full);
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, StoreError> {
    fs::read(path).map_err(StoreError::io(format!("cannot read {}", path.display())))
}

fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_needs_a_real_default_registry() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["reg example", "", "http://docker.io"] {
            let err = Store::open(dir.path(), bad).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidReference { .. }),
                "{bad}: {err:?}"
            );
        }
        assert!(Store::open(dir.path(), "localhost:5000").is_ok());
    }
}
