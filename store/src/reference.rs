//! Model references, parsed and normalised the way Docker Model Runner does:
//! `smollm2` → `ai/smollm2:latest` on the default registry;
//! `host:port/ns/name:tag`; `name@sha256:<hex>`.
//!
//! A reference's canonical text ([`ModelRef::full`]) always names the
//! registry and a tag or digest; [`ModelRef::familiar`] drops the default
//! registry again for display.

use std::fmt;

use crate::error::StoreError;

/// The registry of references that name none (Docker Hub).
pub const DOCKER_HUB: &str = "docker.io";
/// The namespace of single-component names (`smollm2` → `ai/smollm2`).
pub const DEFAULT_NAMESPACE: &str = "ai";
/// The tag of references that name neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised model reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ModelRef {
    /// Parses `text`, filling in `default_registry`, the `ai/` namespace and
    /// the `latest` tag where the text leaves them out.
    pub fn parse(text: &str, default_registry: &str) -> Result<Self, StoreError> {
        let invalid = |why: &str| StoreError::InvalidReference {
            reference: text.to_owned(),
            reason: why.to_owned(),
        };
        let text_trimmed = text.trim();
        if text_trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let (name_tag, digest) = match text_trimmed.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|why| invalid(&why))?;
                (rest, Some(digest.to_owned()))
            }
            None => (text_trimmed, None),
        };
        // A tag is a `:` after the last `/` (a `:` before it is a port).
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&name_tag[..i], Some(&name_tag[i + 1..]))
            }
            None => (name_tag, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|why| invalid(&why))?;
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if is_registry(first) => {
                validate_registry(first).map_err(|why| invalid(&why))?;
                (first.to_owned(), rest)
            }
            _ => (default_registry.to_owned(), name),
        };
        // Docker Model Runner's rule: only a name with no `/` at all gets
        // the `ai/` namespace (`reg.example.com/name` stays `name` there).
        let repository = if name.contains('/') {
            path.to_owned()
        } else {
            format!("{DEFAULT_NAMESPACE}/{path}")
        };
        validate_repository(&repository).map_err(|why| invalid(&why))?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Self {
            registry: normalise_registry(&registry),
            repository,
            tag,
            digest,
        })
    }

    /// The same reference without its digest (the tag part only).
    pub fn without_digest(&self) -> Self {
        Self {
            digest: None,
            tag: Some(self.tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_owned())),
            ..self.clone()
        }
    }

    /// A reference to the same repository at `digest`, without a tag.
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_owned()),
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository[:tag][@digest]`: the form the store keeps.
    pub fn full(&self) -> String {
        self.to_string()
    }

    /// The full form without the registry when it is `default_registry`,
    /// e.g. `ai/smollm2:latest`: the form users type and see.
    pub fn familiar(&self, default_registry: &str) -> String {
        let full = self.full();
        if self.registry == normalise_registry(default_registry) {
            full[self.registry.len() + 1..].to_owned()
        } else {
            full
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Whether `text` is a model ID or a prefix of one the store can resolve:
/// `sha256:<64 hex>`, 64 hex, or a 12-hex short ID.
pub fn as_model_id(text: &str) -> Option<&str> {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    let is_hex = hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_hex && (hex.len() == 12 || hex.len() == 64)).then_some(hex)
}

/// Whether two registry hosts are the same (`index.docker.io` is
/// `docker.io`).
pub fn same_registry(a: &str, b: &str) -> bool {
    normalise_registry(a) == normalise_registry(b)
}

/// Checks a registry host (`host[:port]`), e.g. a configured default.
pub fn check_registry(host: &str) -> Result<(), StoreError> {
    validate_registry(host).map_err(|reason| StoreError::InvalidReference {
        reference: host.to_owned(),
        reason,
    })
}

/// Docker's rule: a first component with a `.` or `:`, or `localhost`, is a
/// registry host.
fn is_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn normalise_registry(registry: &str) -> String {
    match registry {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        other => other.to_owned(),
    }
}

fn validate_registry(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    // DNS labels (or an IPv4 address): letters, digits and inner `-`,
    // separated by single dots; no empty label (`..`, a leading dot).
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("`{host}` is not a valid registry host"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("`{port}` is not a valid port"));
    }
    Ok(())
}

/// Path components: lower-case letters and digits, separated by `.`, `_`,
/// `__` or runs of `-`.
fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.len() > MAX_NAME_LEN {
        return Err(format!("the name is longer than {MAX_NAME_LEN} characters"));
    }
    for component in repository.split('/') {
        if component.is_empty() {
            return Err("the name has an empty path component".into());
        }
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("`{component}` must be lower case"));
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(format!(
                "`{component}` must start and end with a letter or digit"
            ));
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if alnum(b) {
                i += 1;
                continue;
            }
            // A separator: `.`, `_`, `__` or `-`+, between alphanumerics.
            let start = i;
            match b {
                b'.' => i += 1,
                b'_' => {
                    i += if bytes.get(i + 1) == Some(&b'_') {
                        2
                    } else {
                        1
                    }
                }
                b'-' => {
                    while bytes.get(i) == Some(&b'-') {
                        i += 1;
                    }
                }
                _ => {
                    return Err(format!(
                        "`{component}` may hold only a-z, 0-9, `.`, `_` and `-`"
                    ));
                }
            }
            if !bytes.get(i).is_some_and(|&b| alnum(b)) {
                return Err(format!(
                    "`{}` is not a valid separator in `{component}`",
                    &component[start..i.min(component.len())]
                ));
            }
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{tag}` is not a valid tag (letters, digits, `_`, `.`, `-`; at most {MAX_TAG_LEN})"
        ))
    }
}

/// `sha256:` and 64 lower-case hex digits.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("`{digest}` is not a sha256 digest"))?;
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!("`{digest}` is not a sha256 digest (64 hex digits)"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HUB: &str = DOCKER_HUB;

    fn full(text: &str) -> String {
        ModelRef::parse(text, HUB).unwrap().full()
    }

    #[test]
    fn short_names_get_namespace_registry_and_tag() {
        assert_eq!(full("smollm2"), "docker.io/ai/smollm2:latest");
        assert_eq!(full("ai/smollm2"), "docker.io/ai/smollm2:latest");
        assert_eq!(full("me/model:q4"), "docker.io/me/model:q4");
        assert_eq!(full("index.docker.io/ai/x"), "docker.io/ai/x:latest");
        assert_eq!(
            ModelRef::parse("smollm2:135m", HUB).unwrap().familiar(HUB),
            "ai/smollm2:135m"
        );
    }

    #[test]
    fn registries_ports_and_digests() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            full("127.0.0.1:5000/ns/name:v1"),
            "127.0.0.1:5000/ns/name:v1"
        );
        assert_eq!(full("localhost/name"), "localhost/name:latest");
        assert_eq!(full("reg.example.com/name"), "reg.example.com/name:latest");
        let by_digest = ModelRef::parse(&format!("ai/smollm2@{digest}"), HUB).unwrap();
        assert_eq!(by_digest.tag(), None);
        assert_eq!(by_digest.digest(), Some(digest.as_str()));
        assert_eq!(by_digest.familiar(HUB), format!("ai/smollm2@{digest}"));
        let other = ModelRef::parse("localhost:5000/a/b", "localhost:5000").unwrap();
        assert_eq!(other.familiar("localhost:5000"), "a/b:latest");
    }

    #[test]
    fn path_like_registries_are_refused() {
        for text in ["../x", "./x", "a..b/x", ".local/x", "-a.b/x", "a.b-/x"] {
            assert!(ModelRef::parse(text, "index.docker.io").is_err(), "{text}");
        }
        assert!(ModelRef::parse("my-reg.example.com:5000/a/b", "x.io").is_ok());
    }

    #[test]
    fn bad_references_are_refused_with_a_reason() {
        for bad in [
            "",
            "  ",
            "UPPER",
            "a//b",
            "name:",
            "name:-tag",
            "a/b@sha256:123",
            "a/b@md5:abc",
            "-lead",
            "trail-",
            "a..b",
            "a___b",
            "name with space",
            "host:99999/a/b",
        ] {
            let err = ModelRef::parse(bad, HUB).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidReference { .. }),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn model_ids() {
        assert_eq!(as_model_id("0123456789ab"), Some("0123456789ab"));
        let long = "a".repeat(64);
        assert_eq!(as_model_id(&format!("sha256:{long}")), Some(long.as_str()));
        assert_eq!(as_model_id("0123456789"), None);
        assert_eq!(as_model_id("smollm2"), None);
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}"
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,80}") {
            let _ = ModelRef::parse(&text, HUB);
        }

        #[test]
        fn the_full_form_is_a_fixed_point(
            registry in prop_oneof![Just(None), Just(Some("localhost:5000".to_owned())), Just(Some("reg.example.com".to_owned()))],
            parts in prop::collection::vec(component(), 1..4),
            tag in prop::option::of("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,20}"),
            digest in prop::option::of("[0-9a-f]{64}"),
        ) {
            let mut parts = parts;
            if registry.is_none() {
                // A first component with a dot would name a registry.
                parts[0] = parts[0].replace('.', "-");
            }
            let mut text = parts.join("/");
            if let Some(registry) = &registry {
                text = format!("{registry}/{text}");
            }
            if let Some(tag) = &tag {
                text = format!("{text}:{tag}");
            }
            if let Some(digest) = &digest {
                text = format!("{text}@sha256:{digest}");
            }
            let parsed = ModelRef::parse(&text, HUB).unwrap();
            // Normalising twice changes nothing, from either printed form.
            prop_assert_eq!(&ModelRef::parse(&parsed.full(), HUB).unwrap(), &parsed);
            prop_assert_eq!(&ModelRef::parse(&parsed.familiar(HUB), HUB).unwrap(), &parsed);
            prop_assert_eq!(parsed.tag().is_some() || parsed.digest().is_some(), true);
            prop_assert_eq!(parsed.registry(), registry.as_deref().unwrap_or(HUB));
            if parts.len() == 1 && registry.is_none() {
                prop_assert!(parsed.repository().starts_with("ai/"));
            }
            if registry.is_some() {
                prop_assert_eq!(parsed.repository(), parts.join("/"));
            }
        }
    }

    /// Fuzz target: any text parses to a reference or an error, and a
    /// parsed reference's canonical form parses back to itself.
    #[test]
    fn fuzz_reference_parser() {
        bolero::check!()
            .with_type::<String>()
            .with_iterations(5000)
            .for_each(|text| {
                if let Ok(r) = ModelRef::parse(text, HUB) {
                    let again = ModelRef::parse(&r.full(), HUB).expect("canonical form parses");
                    assert_eq!(again, r, "{text:?}");
                }
            });
    }
}
