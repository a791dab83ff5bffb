//! Reads a GGUF file's header — metadata and tensor shapes, not weights — to
//! fill a model artifact's config the way Docker's packager does.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::StoreError;

/// Arrays longer than this are left out of the metadata map (Docker's rule:
/// vocabularies are dropped, short lists kept).
const MAX_ARRAY_IN_MAP: u64 = 50;
/// Upper bounds that keep a corrupt header from allocating without limit.
const MAX_STRING_LEN: u64 = 64 << 20;
const MAX_COUNT: u64 = 1 << 32;

/// What a GGUF header says about the model.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufSummary {
    /// `general.architecture`, `llama` when absent.
    pub architecture: String,
    /// Total elements of all tensors.
    pub parameters: u64,
    /// Bytes of tensor data (file size minus header).
    pub tensor_bytes: u64,
    /// `general.file_type` as llama.cpp names it, e.g. `MOSTLY_Q4_1`.
    pub quantization: String,
    /// `<architecture>.context_length`.
    pub context_length: Option<u64>,
    /// Every scalar and short-array metadata value, as text.
    pub metadata: BTreeMap<String, String>,
}

/// Where things are in a GGUF file: enough to rewrite its header (the test
/// fixtures split a model into shards with it).
#[derive(Debug, Clone, PartialEq)]
pub struct GgufLayout {
    pub version: u32,
    pub kv_count: u64,
    /// Byte range of the metadata key/value section.
    pub kv_bytes: std::ops::Range<u64>,
    pub tensors: Vec<TensorInfo>,
    /// Where tensor data begins; tensor offsets are relative to it.
    pub data_start: u64,
    pub alignment: u64,
    pub file_len: u64,
}

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
}

impl GgufLayout {
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        read(path).map(|(_, layout)| layout)
    }
}

impl GgufSummary {
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        read(path).map(|(summary, _)| summary)
    }

    /// The summary of a model split into `shards` (in order): metadata from
    /// the first, parameters and tensor bytes summed over all.
    pub fn read_shards(shards: &[impl AsRef<Path>]) -> Result<Self, StoreError> {
        let mut summary: Option<Self> = None;
        for shard in shards {
            let next = Self::read(shard.as_ref())?;
            match &mut summary {
                None => summary = Some(next),
                Some(total) => {
                    total.parameters = total.parameters.saturating_add(next.parameters);
                    total.tensor_bytes = total.tensor_bytes.saturating_add(next.tensor_bytes);
                }
            }
        }
        summary.ok_or_else(|| StoreError::InvalidGguf {
            path: std::path::PathBuf::new(),
            reason: "no GGUF file given".into(),
        })
    }
}

fn read(path: &Path) -> Result<(GgufSummary, GgufLayout), StoreError> {
    let invalid = |reason: String| StoreError::InvalidGguf {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path)
        .map_err(StoreError::io(format!("cannot open {}", path.display())))?;
    let file_len = file
        .metadata()
        .map_err(StoreError::io(format!("cannot stat {}", path.display())))?
        .len();
    let mut reader = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        read: 0,
    };
    reader.parse(file_len).map_err(invalid)
}

struct Reader<R> {
    inner: R,
    read: u64,
}

enum Value {
    Int(i128),
    Float(f64),
    Bool(bool),
    Text(String),
    Array(Vec<Value>),
    LongArray,
}

impl Value {
    fn render(&self) -> Option<String> {
        Some(match self {
            Self::Int(v) => v.to_string(),
            Self::Float(v) => format!("{v:.6}"),
            Self::Bool(v) => v.to_string(),
            Self::Text(v) => v.clone(),
            Self::Array(items) => items
                .iter()
                .map(Self::render)
                .collect::<Option<Vec<_>>>()?
                .join(", "),
            Self::LongArray => return None,
        })
    }
}

impl<R: Read> Reader<R> {
    fn parse(&mut self, file_len: u64) -> Result<(GgufSummary, GgufLayout), String> {
        let mut magic = [0u8; 4];
        self.bytes(&mut magic)?;
        if &magic != b"GGUF" {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("unsupported GGUF version {version}"));
        }
        let tensor_count = self.count()?;
        let kv_count = self.count()?;
        let mut metadata = BTreeMap::new();
        let mut file_type = None;
        let mut alignment = 32u64;
        let kv_start = self.read;
        for _ in 0..kv_count {
            let key = self.string()?;
            let value_type = self.u32()?;
            let value = self.value(value_type)?;
            if key == "general.file_type"
                && let Value::Int(t) = value
            {
                file_type = Some(t);
            }
            if key == "general.alignment"
                && let Value::Int(a) = value
            {
                alignment = u64::try_from(a).unwrap_or(32).max(1);
            }
            if let Some(text) = value.render() {
                metadata.insert(key, text);
            }
        }
        let kv_end = self.read;
        let mut parameters = 0u64;
        let mut tensors = Vec::new();
        for _ in 0..tensor_count {
            let name = self.string()?;
            let n_dims = self.u32()?;
            if n_dims > 8 {
                return Err(format!("a tensor has {n_dims} dimensions"));
            }
            let mut dims = Vec::new();
            for _ in 0..n_dims {
                dims.push(self.u64()?);
            }
            let ggml_type = self.u32()?;
            let offset = self.u64()?;
            let elements = dims
                .iter()
                .try_fold(1u64, |n, d| n.checked_mul(*d))
                .ok_or_else(|| format!("tensor `{name}` has more than 2^64 elements"))?;
            parameters = parameters.saturating_add(elements);
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let data_start = self.read.div_ceil(alignment) * alignment;
        let architecture = metadata
            .get("general.architecture")
            .cloned()
            .unwrap_or_else(|| "llama".into());
        let context_length = metadata
            .get(&format!("{architecture}.context_length"))
            .and_then(|v| v.parse().ok());
        let summary = GgufSummary {
            quantization: file_type.map_or_else(|| "Unknown".into(), file_type_name),
            architecture,
            parameters,
            tensor_bytes: file_len.saturating_sub(data_start),
            context_length,
            metadata,
        };
        let layout = GgufLayout {
            version,
            kv_count,
            kv_bytes: kv_start..kv_end,
            tensors,
            data_start,
            alignment,
            file_len,
        };
        Ok((summary, layout))
    }

    fn value(&mut self, value_type: u32) -> Result<Value, String> {
        Ok(match value_type {
            0 => Value::Int(self.fixed::<1>()?[0].into()),
            1 => Value::Int(i8::from_le_bytes(self.fixed()?).into()),
            2 => Value::Int(u16::from_le_bytes(self.fixed()?).into()),
            3 => Value::Int(i16::from_le_bytes(self.fixed()?).into()),
            4 => Value::Int(self.u32()?.into()),
            5 => Value::Int(i32::from_le_bytes(self.fixed()?).into()),
            6 => Value::Float(f32::from_le_bytes(self.fixed()?).into()),
            7 => Value::Bool(self.fixed::<1>()?[0] != 0),
            8 => Value::Text(self.string()?),
            9 => {
                let item_type = self.u32()?;
                let n = self.count()?;
                if item_type == 9 {
                    return Err("nested arrays are not supported".into());
                }
                let mut items = Vec::new();
                for _ in 0..n {
                    let item = self.value(item_type)?;
                    if n <= MAX_ARRAY_IN_MAP {
                        items.push(item);
                    }
                }
                if n <= MAX_ARRAY_IN_MAP {
                    Value::Array(items)
                } else {
                    Value::LongArray
                }
            }
            10 => Value::Int(self.u64()?.into()),
            11 => Value::Int(i64::from_le_bytes(self.fixed()?).into()),
            12 => Value::Float(f64::from_le_bytes(self.fixed()?)),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }

    fn bytes(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.inner
            .read_exact(buf)
            .map_err(|e| format!("truncated header: {e}"))?;
        self.read += buf.len() as u64;
        Ok(())
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut buf = [0u8; N];
        self.bytes(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }

    fn count(&mut self) -> Result<u64, String> {
        let n = self.u64()?;
        if n > MAX_COUNT {
            return Err(format!("implausible count {n}"));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u64()?;
        if len > MAX_STRING_LEN {
            return Err(format!("implausible string length {len}"));
        }
        let mut buf = vec![0u8; len as usize];
        self.bytes(&mut buf)?;
        String::from_utf8(buf).map_err(|_| "a string is not UTF-8".to_owned())
    }
}

/// llama.cpp's `llama_ftype` names, as Docker's packager writes them.
fn file_type_name(file_type: i128) -> String {
    let name = match file_type {
        0 => "ALL_F32",
        1 => "MOSTLY_F16",
        2 => "MOSTLY_Q4_0",
        3 => "MOSTLY_Q4_1",
        7 => "MOSTLY_Q8_0",
        8 => "MOSTLY_Q5_0",
        9 => "MOSTLY_Q5_1",
        10 => "MOSTLY_Q2_K",
        11 => "MOSTLY_Q3_K_S",
        12 => "MOSTLY_Q3_K_M",
        13 => "MOSTLY_Q3_K_L",
        14 => "MOSTLY_Q4_K_S",
        15 => "MOSTLY_Q4_K_M",
        16 => "MOSTLY_Q5_K_S",
        17 => "MOSTLY_Q5_K_M",
        18 => "MOSTLY_Q6_K",
        19 => "MOSTLY_IQ2_XXS",
        20 => "MOSTLY_IQ2_XS",
        21 => "MOSTLY_Q2_K_S",
        22 => "MOSTLY_IQ3_XS",
        23 => "MOSTLY_IQ3_XXS",
        24 => "MOSTLY_IQ1_S",
        25 => "MOSTLY_IQ4_NL",
        26 => "MOSTLY_IQ3_S",
        27 => "MOSTLY_IQ3_M",
        28 => "MOSTLY_IQ2_S",
        29 => "MOSTLY_IQ2_M",
        30 => "MOSTLY_IQ4_XS",
        31 => "MOSTLY_IQ1_M",
        32 => "MOSTLY_BF16",
        36 => "MOSTLY_TQ1_0",
        37 => "MOSTLY_TQ2_0",
        38 => "MOSTLY_MXFP4_MOE",
        _ => "Unknown",
    };
    name.to_owned()
}

/// `134.52 M`: base 1000, two decimals, a trailing `.00` dropped.
pub fn format_parameters(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "B", "T"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let text = format!("{value:.2}");
    let text = text.strip_suffix(".00").unwrap_or(&text);
    format!("{text} {}", UNITS[unit]).trim_end().to_owned()
}

/// `93.23 MiB`: IEC units, two decimals.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.2}");
    let text = text.strip_suffix(".00").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A tiny GGUF header written by hand: two keys, one 2-D tensor.
    fn tiny_gguf() -> Vec<u8> {
        let mut out = Vec::new();
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        };
        out.extend(b"GGUF");
        out.extend(3u32.to_le_bytes());
        out.extend(1u64.to_le_bytes()); // tensors
        out.extend(4u64.to_le_bytes()); // kvs
        string(&mut out, "general.architecture");
        out.extend(8u32.to_le_bytes());
        string(&mut out, "llama");
        string(&mut out, "general.file_type");
        out.extend(4u32.to_le_bytes());
        out.extend(3u32.to_le_bytes());
        string(&mut out, "llama.context_length");
        out.extend(4u32.to_le_bytes());
        out.extend(8192u32.to_le_bytes());
        string(&mut out, "tokenizer.ggml.scores");
        out.extend(9u32.to_le_bytes());
        out.extend(6u32.to_le_bytes());
        out.extend(60u64.to_le_bytes());
        for i in 0..60 {
            out.extend((i as f32).to_le_bytes());
        }
        string(&mut out, "w");
        out.extend(2u32.to_le_bytes());
        out.extend(64u64.to_le_bytes());
        out.extend(32u64.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(0u64.to_le_bytes());
        while out.len() % 32 != 0 {
            out.push(0);
        }
        out.extend(vec![0u8; 64 * 32 * 4]);
        out
    }

    #[test]
    fn reads_a_hand_written_header() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&tiny_gguf()).unwrap();
        let summary = GgufSummary::read(file.path()).unwrap();
        assert_eq!(summary.architecture, "llama");
        assert_eq!(summary.quantization, "MOSTLY_Q4_1");
        assert_eq!(summary.parameters, 64 * 32);
        assert_eq!(summary.tensor_bytes, 64 * 32 * 4);
        assert_eq!(summary.context_length, Some(8192));
        assert_eq!(summary.metadata["llama.context_length"], "8192");
        assert!(!summary.metadata.contains_key("tokenizer.ggml.scores"));
    }

    #[test]
    fn truncated_or_foreign_files_are_errors_not_panics() {
        let full = tiny_gguf();
        for len in [0, 3, 4, 8, 20, 40, 100, 200] {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            file.write_all(&full[..len.min(full.len())]).unwrap();
            let result = GgufSummary::read(file.path());
            assert!(
                matches!(result, Err(StoreError::InvalidGguf { .. })),
                "{len}"
            );
        }
    }

    #[test]
    fn a_tensor_too_large_to_count_is_an_error() {
        let mut bytes = tiny_gguf();
        let dims: Vec<u8> = [64u64.to_le_bytes(), 32u64.to_le_bytes()].concat();
        let at = bytes.windows(16).position(|w| w == dims).unwrap();
        let huge = (1u64 << 33).to_le_bytes();
        bytes[at..at + 8].copy_from_slice(&huge);
        bytes[at + 8..at + 16].copy_from_slice(&huge);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&bytes).unwrap();
        let err = GgufSummary::read(file.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidGguf { reason, .. } if reason.contains("elements")),
            "{err:?}"
        );
    }

    #[test]
    fn sizes_and_counts_read_like_dockers() {
        assert_eq!(format_parameters(134_515_008), "134.52 M");
        assert_eq!(format_parameters(361_820_000), "361.82 M");
        assert_eq!(format_parameters(7_000_000_000), "7 B");
        assert_eq!(format_parameters(999), "999");
        assert_eq!(format_size(268_803_456), "256.35 MiB");
        assert_eq!(format_size(1024), "1 KiB");
    }

    /// Fuzz target: the GGUF reader on mutated headers (and raw bytes)
    /// returns a result, never panics or runs away. `cargo test` runs a
    /// bounded random pass; `cargo bolero test` fuzzes it for real.
    #[test]
    fn fuzz_gguf_reader() {
        let seed = tiny_gguf();
        bolero::check!()
            .with_type::<(Vec<(u16, u8)>, u16, bool)>()
            .with_iterations(3000)
            .for_each(|(edits, cut, raw)| {
                let mut bytes = if *raw { Vec::new() } else { seed.clone() };
                for (at, byte) in edits {
                    if bytes.is_empty() || *raw {
                        bytes.push(*byte);
                    } else {
                        let at = usize::from(*at) % bytes.len();
                        bytes[at] = *byte;
                    }
                }
                bytes.truncate(usize::from(*cut).max(1));
                let len = bytes.len() as u64;
                let mut reader = Reader {
                    inner: std::io::Cursor::new(bytes),
                    read: 0,
                };
                let _ = reader.parse(len);
            });
    }
}
