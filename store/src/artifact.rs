//! Docker's model artifact format (v0.1): the OCI manifest, its media types,
//! and the config JSON, read and written exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::gguf::{GgufSummary, format_parameters, format_size};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.ai.model.config.v0.1+json";
pub const GGUF_MEDIA_TYPE: &str = "application/vnd.docker.ai.gguf.v3";
pub const LICENSE_MEDIA_TYPE: &str = "application/vnd.docker.ai.license";
pub const CHAT_TEMPLATE_MEDIA_TYPE: &str = "application/vnd.docker.ai.chat.template.jinja";

/// Largest config blob accepted (they are a few kB; the GGUF metadata map
/// can hold a long chat template).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Largest chat template layer accepted.
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An OCI image manifest (the parts Herd reads; others are kept in the raw
/// bytes, which are stored exactly as pulled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    /// Parses and checks a manifest: OCI v2, Docker model config v0.1, at
    /// least one GGUF layer, well-formed digests.
    pub fn parse(bytes: &[u8], reference: &str) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidArtifact {
            reference: reference.to_owned(),
            reason,
        };
        let manifest: Self = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("the manifest is not valid JSON: {e}")))?;
        if manifest.schema_version != 2 {
            return Err(invalid(format!(
                "schemaVersion {} (expected 2)",
                manifest.schema_version
            )));
        }
        if let Some(media_type) = &manifest.media_type
            && media_type != MANIFEST_MEDIA_TYPE
        {
            return Err(invalid(format!("manifest media type `{media_type}`")));
        }
        if manifest.config.media_type != CONFIG_MEDIA_TYPE {
            return Err(StoreError::UnsupportedMediaType {
                reference: reference.to_owned(),
                found: manifest.config.media_type.clone(),
            });
        }
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            crate::reference::validate_digest(&descriptor.digest).map_err(invalid)?;
        }
        if manifest.gguf_layers().next().is_none() {
            return Err(invalid("it has no GGUF layer".into()));
        }
        // Small blobs are read into memory: bound them.
        if manifest.config.size > MAX_CONFIG_BYTES {
            return Err(invalid(format!(
                "the config is {} bytes (at most {MAX_CONFIG_BYTES})",
                manifest.config.size
            )));
        }
        for layer in &manifest.layers {
            if layer.media_type == CHAT_TEMPLATE_MEDIA_TYPE && layer.size > MAX_TEMPLATE_BYTES {
                return Err(invalid(format!(
                    "the chat template is {} bytes (at most {MAX_TEMPLATE_BYTES})",
                    layer.size
                )));
            }
        }
        if manifest
            .blobs()
            .try_fold(0u64, |sum, b| sum.checked_add(b.size))
            .is_none()
        {
            return Err(invalid("the blob sizes overflow".into()));
        }
        Ok(manifest)
    }

    /// The GGUF layers, in order (shards of one model).
    pub fn gguf_layers(&self) -> impl Iterator<Item = &Descriptor> {
        self.layers
            .iter()
            .filter(|l| l.media_type == GGUF_MEDIA_TYPE)
    }

    /// The layer of the chat template, if the artifact carries one.
    pub fn chat_template_layer(&self) -> Option<&Descriptor> {
        self.layers
            .iter()
            .find(|l| l.media_type == CHAT_TEMPLATE_MEDIA_TYPE)
    }

    /// Every blob the manifest references: config first, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// Bytes of all blobs (checked not to overflow at parse).
    pub fn total_size(&self) -> u64 {
        self.blobs().fold(0u64, |sum, d| sum.saturating_add(d.size))
    }
}

/// The config blob: `{"config":…,"descriptor":…,"rootfs":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    pub config: ModelConfig,
    #[serde(default)]
    pub descriptor: ConfigDescriptor,
    pub rootfs: RootFs,
}

/// What the model is, computed from its GGUF metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub quantization: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parameters: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub size: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gguf: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigDescriptor {
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

impl ConfigFile {
    /// The config of a packaged GGUF; `diff_ids` are the layer digests
    /// (layers are stored uncompressed).
    pub fn for_gguf(
        summary: &GgufSummary,
        context_size: Option<u64>,
        created: String,
        diff_ids: Vec<String>,
    ) -> Self {
        Self {
            config: ModelConfig {
                format: "gguf".into(),
                quantization: summary.quantization.clone(),
                parameters: format_parameters(summary.parameters),
                architecture: summary.architecture.clone(),
                size: format_size(summary.tensor_bytes),
                gguf: summary.metadata.clone(),
                context_size: context_size.or(summary.context_length),
            },
            descriptor: ConfigDescriptor {
                created: Some(created),
            },
            rootfs: RootFs {
                kind: "rootfs".into(),
                diff_ids,
            },
        }
    }

    pub fn parse(bytes: &[u8], reference: &str) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::InvalidArtifact {
            reference: reference.to_owned(),
            reason: format!("the config is not a model config: {e}"),
        })
    }

    /// Creation time as Unix seconds, 0 if absent or unreadable.
    pub fn created_unix(&self) -> i64 {
        self.descriptor
            .created
            .as_deref()
            .and_then(parse_rfc3339_seconds)
            .unwrap_or(0)
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS…Z` (UTC only).
fn parse_rfc3339_seconds(text: &str) -> Option<i64> {
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// `seconds` since the epoch as RFC 3339 UTC.
pub fn format_rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn manifest_json(config_type: &str) -> String {
        let digest = format!("sha256:{}", "0".repeat(64));
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_MEDIA_TYPE}",
            "config":{{"mediaType":"{config_type}","digest":"{digest}","size":10}},
            "layers":[{{"mediaType":"{GGUF_MEDIA_TYPE}","digest":"{digest}","size":20}}]}}"#
        )
    }

    #[test]
    fn accepts_docker_models_and_refuses_other_artifacts() {
        let ok = Manifest::parse(manifest_json(CONFIG_MEDIA_TYPE).as_bytes(), "x").unwrap();
        assert_eq!(ok.total_size(), 30);
        let err = Manifest::parse(
            manifest_json("application/vnd.oci.image.config.v1+json").as_bytes(),
            "x",
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedMediaType { .. }));
        assert!(Manifest::parse(b"{}", "x").is_err());
    }

    #[test]
    fn timestamps_round_trip() {
        for t in [0, 1_742_816_981, 1_795_000_000] {
            assert_eq!(parse_rfc3339_seconds(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(format_rfc3339(1_742_816_981), "2025-03-24T11:49:41Z");
        assert_eq!(
            parse_rfc3339_seconds("2025-03-24T11:49:41.123456Z"),
            Some(1_742_816_981)
        );
    }
}
