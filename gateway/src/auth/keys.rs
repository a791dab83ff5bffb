//! The keys file: TOML, one `[[keys]]` table per API key, written by
//! `herd keys` and read by the gateway. Only the SHA-256 digest of each key
//! is stored; the key itself is shown once, when it is created.
//!
//! ```toml
//! [[keys]]
//! name = "team-a"            # the tenant its requests are queued as
//! role = "user"              # or "admin": also /models writes, /engines/unload, /logs
//! sha256 = "9f86d0…"         # hex digest of the key
//! hint = "sk-herd-1a2b"      # the key's first characters, to recognise it
//! models = ["ai/smollm2*"]   # globs (`*`, `?`); default: every model
//! requests_per_minute = 60   # each limit is optional
//! tokens_per_minute = 100000
//! max_concurrent = 4
//! created_at = 1764806400    # Unix seconds
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::limits::Limits;

/// The prefix of keys `herd keys create` makes.
pub const KEY_PREFIX: &str = "sk-herd-";
/// Characters of a key kept as its hint.
const HINT_CHARS: usize = KEY_PREFIX.len() + 4;
/// Longest key name (it becomes the tenant).
const MAX_NAME_BYTES: usize = 128;

/// What a key may do besides inference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Inference and the read-only routes.
    #[default]
    User,
    /// Also `/models` writes, `/engines/unload` and `/logs`.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub name: String,
    #[serde(default)]
    pub role: Role,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hint: String,
    #[serde(default = "every_model")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub created_at: u64,
}

fn every_model() -> Vec<String> {
    vec!["*".to_owned()]
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    #[serde(default)]
    pub keys: Vec<KeyRecord>,
}

/// A keys file that cannot be used, naming what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read keys file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write keys file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse keys file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("keys file: `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

/// The SHA-256 digest of a presented key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a hex SHA-256 digest.
pub fn parse_digest(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new random key: `sk-herd-` and 64 hex characters, 244 random bits
/// (two v4 UUIDs, whose 6 fixed bits each are kept out of the count) from
/// `rand`'s thread-local ChaCha12 CSPRNG, seeded and reseeded from the
/// operating system's (uuid's `fast-rng`: request ids need no syscall).
pub fn generate() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{KEY_PREFIX}{}{}", hex(a.as_bytes()), hex(b.as_bytes()))
}

impl KeyRecord {
    /// A record for `key` (its digest and hint).
    pub fn new(name: &str, role: Role, key: &str, models: Vec<String>, limits: Limits) -> Self {
        Self {
            name: name.to_owned(),
            role,
            sha256: hex(&digest(key)),
            hint: key.chars().take(HINT_CHARS).collect(),
            models: if models.is_empty() {
                every_model()
            } else {
                models
            },
            requests_per_minute: limits.requests_per_minute,
            tokens_per_minute: limits.tokens_per_minute,
            max_concurrent: limits.max_concurrent,
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

impl KeyRecord {
    /// The key's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            max_concurrent: self.max_concurrent,
        }
    }
}

/// Checks a key name: it becomes a tenant and a log field.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!("must be 1-{MAX_NAME_BYTES} bytes"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII, without spaces".into());
    }
    Ok(())
}

impl KeysFile {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: Self = toml::from_str(&text).map_err(|source| KeysError::Parse {
            path: path.to_owned(),
            source,
        })?;
        file.validate()?;
        Ok(file)
    }

    /// Reads `path`, or an empty file if there is none yet.
    pub fn load_or_empty(path: &Path) -> Result<Self, KeysError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            _ => Self::load(path),
        }
    }

    pub fn validate(&self) -> Result<(), KeysError> {
        let invalid = |i: usize, field: &str, reason: String| KeysError::Invalid {
            field: format!("keys[{i}].{field}"),
            reason,
        };
        let mut names = std::collections::HashSet::new();
        let mut digests = std::collections::HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            check_name(&key.name).map_err(|r| invalid(i, "name", r))?;
            if !names.insert(key.name.as_str()) {
                return Err(invalid(i, "name", format!("`{}` is used twice", key.name)));
            }
            let digest = parse_digest(&key.sha256)
                .ok_or_else(|| invalid(i, "sha256", "must be 64 hex characters".into()))?;
            if !digests.insert(digest) {
                return Err(invalid(i, "sha256", "the same key is listed twice".into()));
            }
            if key.models.is_empty() || key.models.iter().any(|m| m.is_empty()) {
                return Err(invalid(
                    i,
                    "models",
                    "must list at least one non-empty pattern (`*` for all)".into(),
                ));
            }
            let l = key.limits();
            if l.requests_per_minute == Some(0)
                || l.tokens_per_minute == Some(0)
                || l.max_concurrent == Some(0)
            {
                return Err(invalid(
                    i,
                    "limits",
                    "a limit must be at least 1 (leave it out for none)".into(),
                ));
            }
        }
        Ok(())
    }

    /// Writes the file: to a temporary file beside it, readable by its
    /// owner only, then renamed over it (the gateway never reads half a
    /// file).
    pub fn save(&self, path: &Path) -> Result<(), KeysError> {
        let write_err = |source| KeysError::Write {
            path: path.to_owned(),
            source,
        };
        let text = toml::to_string_pretty(self).map_err(|e| write_err(std::io::Error::other(e)))?;
        let text = format!(
            "# Herd API keys, managed with `herd keys`. Only SHA-256 digests of the keys are kept.\n\n{}\n",
            text.trim_end()
        );
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(write_err)?;
            file.write_all(text.as_bytes()).map_err(write_err)?;
            file.sync_all().map_err(write_err)?;
        }
        std::fs::rename(&tmp, path).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_round_trips_and_keeps_only_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let key = generate();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 64);
        assert_ne!(key, generate());
        let limits = Limits {
            requests_per_minute: Some(60),
            tokens_per_minute: None,
            max_concurrent: Some(2),
        };
        let file = KeysFile {
            keys: vec![KeyRecord::new("team-a", Role::Admin, &key, vec![], limits)],
        };
        file.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&key[KEY_PREFIX.len() + 4..]), "{text}");
        assert!(text.contains("requests_per_minute = 60"), "{text}");
        let loaded = KeysFile::load(&path).unwrap();
        assert_eq!(loaded, file);
        assert_eq!(loaded.keys[0].models, ["*"]);
        assert_eq!(parse_digest(&loaded.keys[0].sha256), Some(digest(&key)));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn bad_files_name_the_field() {
        let digest = "ab".repeat(32);
        for (text, field) in [
            ("[[keys]]\nname = ''\nsha256 = 'x'", "keys[0].name"),
            ("[[keys]]\nname = 'a b'\nsha256 = 'x'", "keys[0].name"),
            ("[[keys]]\nname = 'a'\nsha256 = 'xyz'", "keys[0].sha256"),
            (
                &format!("[[keys]]\nname = 'a'\nsha256 = '{digest}'\nmodels = []"),
                "keys[0].models",
            ),
            (
                &format!("[[keys]]\nname = 'a'\nsha256 = '{digest}'\nmax_concurrent = 0"),
                "keys[0].limits",
            ),
            (
                &format!(
                    "[[keys]]\nname = 'a'\nsha256 = '{digest}'\n[[keys]]\nname = 'a'\nsha256 = '{}'",
                    "cd".repeat(32)
                ),
                "keys[1].name",
            ),
            (
                &format!(
                    "[[keys]]\nname = 'a'\nsha256 = '{digest}'\n[[keys]]\nname = 'b'\nsha256 = '{digest}'"
                ),
                "keys[1].sha256",
            ),
        ] {
            let file: KeysFile = toml::from_str(text).unwrap();
            let err = file.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
        assert!(
            toml::from_str::<KeysFile>("[[keys]]\nname = 'a'\nsha256 = 'x'\nrole = 'root'")
                .is_err()
        );
        assert!(toml::from_str::<KeysFile>("[[keys]]\nname = 'a'\nsha256 = 'x'\nrpm = 1").is_err());
    }
}
