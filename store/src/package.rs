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
        let summary = GgufSummary::read(&request.gguf)?;
        let mut layers = vec![self.import_file(&request.gguf, GGUF_MEDIA_TYPE)?];
        for license in &request.licenses {
            layers.push(self.import_file(license, LICENSE_MEDIA_TYPE)?);
        }
        if let Some(template) = &request.chat_template {
            layers.push(self.import_file(template, CHAT_TEMPLATE_MEDIA_TYPE)?);
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
