//! `herd package`: a GGUF file (plus licenses and an optional chat template)
//! becomes a Docker model artifact in the local store.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::artifact::{
    CHAT_TEMPLATE_MEDIA_TYPE, CONFIG_MEDIA_TYPE, ConfigFile, Descriptor, GGUF_MEDIA_TYPE,
    LICENSE_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, Manifest, format_rfc3339,
};
use crate::error::StoreError;
use crate::gguf::GgufSummary;
use crate::reference::ModelRef;
use crate::store::{Store, StoredModel};

/// The layer annotation Docker Model Runner writes with a file's name.
pub const FILEPATH_ANNOTATION: &str = "org.cncf.model.filepath";

/// What to package.
#[derive(Debug, Clone, Default)]
pub struct PackageRequest {
    pub gguf: PathBuf,
    pub licenses: Vec<PathBuf>,
    pub chat_template: Option<PathBuf>,
    /// Overrides the GGUF's training context in the config.
    pub context_size: Option<u64>,
    /// The creation time (Unix seconds); now if unset.
    pub created_unix: Option<i64>,
}

impl Store {
    /// Packages `request` into this store under `tag`. The GGUF is copied
    /// into the store once, hashed on the way.
    pub fn package(
        &self,
        request: &PackageRequest,
        tag: &ModelRef,
    ) -> Result<StoredModel, StoreError> {
        if tag.digest().is_some() {
            return Err(StoreError::InvalidReference {
                reference: tag.full(),
                reason: "the target of a package must be a tag, not a digest".into(),
            });
        }
        let shards = shard_files(&request.gguf)?;
        // Imported blobs are not in the index until `add_model`: keep
        // garbage collection away from them (their digests are pinned as
        // they become known).
        let mut pins = Vec::new();
        let summary = GgufSummary::read_shards(&shards)?;
        let mut files: Vec<(&Path, &str)> = shards
            .iter()
            .map(|shard| (shard.as_path(), GGUF_MEDIA_TYPE))
            .collect();
        files.extend(
            request
                .licenses
                .iter()
                .map(|l| (l.as_path(), LICENSE_MEDIA_TYPE)),
        );
        if let Some(template) = &request.chat_template {
            files.push((template.as_path(), CHAT_TEMPLATE_MEDIA_TYPE));
        }
        let mut layers = Vec::new();
        for (file, media_type) in files {
            let layer = self.import_file(file, media_type)?;
            pins.push(self.pin([layer.digest.clone()]));
            layers.push(layer);
        }
        let created = request.created_unix.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        let config = ConfigFile::for_gguf(
            &summary,
            request.context_size,
            format_rfc3339(created),
            layers.iter().map(|l| l.digest.clone()).collect(),
        );
        let config_bytes = serde_json::to_vec(&config).map_err(|e| StoreError::Io {
            context: "cannot encode the model config".into(),
            source: std::io::Error::other(e),
        })?;
        let config_digest = self.write_blob(&config_bytes)?;
        pins.push(self.pin([config_digest.clone()]));
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            config: Descriptor {
                media_type: CONFIG_MEDIA_TYPE.into(),
                digest: config_digest,
                size: config_bytes.len() as u64,
                annotations: None,
            },
            layers,
        };
        let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| StoreError::Io {
            context: "cannot encode the manifest".into(),
            source: std::io::Error::other(e),
        })?;
        self.add_model(&manifest_bytes, Some(tag))
    }

    /// Copies a file into the blob store, hashing it; returns its layer
    /// descriptor.
    fn import_file(&self, path: &Path, media_type: &str) -> Result<Descriptor, StoreError> {
        let context = || format!("cannot read {}", path.display());
        let mut source = std::fs::File::open(path).map_err(StoreError::io(context()))?;
        let (tmp, mut file) = self.temp_file()?;
        let result = (|| {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = source.read(&mut buf).map_err(StoreError::io(context()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n])
                    .map_err(StoreError::io(format!("cannot write {}", tmp.display())))?;
                size += n as u64;
            }
            file.sync_all()
                .map_err(StoreError::io(format!("cannot sync {}", tmp.display())))?;
            let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
            if self.has_blob(&digest) {
                let _ = std::fs::remove_file(&tmp);
            } else {
                self.commit_blob(&tmp, &digest)?;
            }
            let annotations = path.file_name().map(|name| {
                [(
                    FILEPATH_ANNOTATION.to_owned(),
                    name.to_string_lossy().into_owned(),
                )]
                .into()
            });
            Ok(Descriptor {
                media_type: media_type.into(),
                digest,
                size,
                annotations,
            })
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// `<prefix>-0000N-of-0000M.gguf`: how llama.cpp names the shards of a split
/// model (1-based).
pub fn shard_name(prefix: &str, index: usize, count: usize) -> String {
    format!("{prefix}-{index:05}-of-{count:05}.gguf")
}

/// The files of the model `first` names: itself, or, when it is the first
/// shard of a split model (`…-00001-of-0000M.gguf`), every shard in order.
fn shard_files(first: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let invalid = |reason: String| StoreError::InvalidGguf {
        path: first.to_owned(),
        reason,
    };
    let name = first
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((prefix, index, count)) = parse_shard_name(&name) else {
        return Ok(vec![first.to_owned()]);
    };
    if index != 1 {
        return Err(invalid(format!(
            "this is shard {index} of {count}; name the first shard"
        )));
    }
    let dir = first.parent().unwrap_or(Path::new("."));
    (1..=count)
        .map(|i| {
            let path = dir.join(shard_name(prefix, i, count));
            if path.is_file() {
                Ok(path)
            } else {
                Err(invalid(format!("shard {} is missing", path.display())))
            }
        })
        .collect()
}

/// `("model", 1, 3)` from `model-00001-of-00003.gguf`.
fn parse_shard_name(name: &str) -> Option<(&str, usize, usize)> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(count) {
        return None;
    }
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (index >= 1 && index <= count && count > 1).then_some((prefix, index, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_round_trip() {
        assert_eq!(shard_name("m", 2, 3), "m-00002-of-00003.gguf");
        assert_eq!(parse_shard_name("m-00002-of-00003.gguf"), Some(("m", 2, 3)));
        assert_eq!(
            parse_shard_name("a-b-00001-of-00002.gguf"),
            Some(("a-b", 1, 2))
        );
        assert_eq!(parse_shard_name("model.gguf"), None);
        assert_eq!(parse_shard_name("m-1-of-2.gguf"), None);
        assert_eq!(parse_shard_name("m-00003-of-00002.gguf"), None);
    }
}
