//! `/v1/embeddings`: request parsing and the response object.

use base64::Engine as _;
use herd_proto::v1 as pb;
use serde::Serialize;
use serde_json::Value;

use super::fields::Fields;
use crate::error::ApiError;

/// Most inputs accepted in one request (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

/// How vectors are written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    /// Little-endian f32 bytes, base64-encoded.
    Base64,
}

/// A validated embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub encoding: Encoding,
    pub embed: pb::EmbedRequest,
    /// How long the model stays loaded after this request.
    pub keep_alive: Option<crate::scheduler::KeepAlive>,
}

/// Parses a `/v1/embeddings` body: `input` is a string, an array of
/// strings, an array of token ids, or an array of such arrays.
pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    let fields = Fields::parse(body)?;
    let model = fields.required_str("model")?.to_owned();
    fields.optional_str("user")?;
    let inputs = match fields.get("input") {
        None => return Err(ApiError::field("input", "`input` is required")),
        Some(Value::String(s)) => vec![text(s)?],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::field("input", "`input` must not be empty"));
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![tokens(items, "input")?]
        }
        Some(Value::Array(items)) => {
            if items.len() > MAX_INPUTS {
                return Err(ApiError::field(
                    "input",
                    format!("`input` takes at most {MAX_INPUTS} items"),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => text(s),
                    Value::Array(ids) => tokens(ids, &format!("input[{i}]")),
                    _ => Err(ApiError::field(
                        &format!("input[{i}]"),
                        "each input must be a string or an array of token ids",
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        Some(_) => {
            return Err(ApiError::field(
                "input",
                "`input` must be a string, an array of strings, or token ids",
            ));
        }
    };
    let encoding = match fields.get("encoding_format") {
        None => Encoding::Float,
        Some(Value::String(s)) if s == "float" => Encoding::Float,
        Some(Value::String(s)) if s == "base64" => Encoding::Base64,
        Some(_) => {
            return Err(ApiError::field(
                "encoding_format",
                "`encoding_format` must be `float` or `base64`",
            ));
        }
    };
    if fields.get("dimensions").is_some() {
        return Err(ApiError::unsupported(
            "dimensions",
            "`dimensions` is not supported: vectors have the model's own size",
        ));
    }
    Ok(EmbeddingsRequest {
        keep_alive: super::keep_alive::parse(&fields)?,
        model: model.clone(),
        encoding,
        embed: pb::EmbedRequest { model, inputs },
    })
}

fn text(s: &str) -> Result<pb::EmbedInput, ApiError> {
    if s.is_empty() {
        return Err(ApiError::field("input", "inputs must not be empty strings"));
    }
    Ok(pb::EmbedInput {
        input: Some(pb::embed_input::Input::Text(s.to_owned())),
    })
}

fn tokens(items: &[Value], param: &str) -> Result<pb::EmbedInput, ApiError> {
    if items.is_empty() {
        return Err(ApiError::field(
            param,
            format!("`{param}` must not be empty"),
        ));
    }
    let ids = items
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| ApiError::field(param, "token ids must be non-negative integers"))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(pb::EmbedInput {
        input: Some(pb::embed_input::Input::Tokens(pb::TokenIds { ids })),
    })
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    total_tokens: u32,
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: Usage,
}

/// The `list` of `embedding` objects, in input order.
pub fn response(model: &str, encoding: Encoding, result: pb::EmbedResponse) -> Vec<u8> {
    let data = result
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, e)| Item {
            object: "embedding",
            index,
            embedding: match encoding {
                Encoding::Float => Vector::Float(e.values),
                Encoding::Base64 => {
                    let bytes: Vec<u8> = e.values.iter().flat_map(|v| v.to_le_bytes()).collect();
                    Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            },
        })
        .collect();
    serde_json::to_vec(&List {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens: result.prompt_tokens,
            total_tokens: result.prompt_tokens,
        },
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(body: &[u8]) -> usize {
        parse_embeddings(body).unwrap().embed.inputs.len()
    }

    #[test]
    fn every_input_form_parses() {
        assert_eq!(count(br#"{"model":"m","input":"a"}"#), 1);
        assert_eq!(count(br#"{"model":"m","input":["a","b","c"]}"#), 3);
        assert_eq!(count(br#"{"model":"m","input":[1,2,3]}"#), 1);
        assert_eq!(count(br#"{"model":"m","input":[[1,2],[3]]}"#), 2);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        for (body, param) in [
            (&br#"{"model":"m"}"#[..], "input"),
            (br#"{"model":"m","input":[]}"#, "input"),
            (br#"{"model":"m","input":[{}]}"#, "input[0]"),
            (br#"{"model":"m","input":[-1]}"#, "input"),
            (br#"{"model":"m","input":"a","dimensions":8}"#, "dimensions"),
            (
                br#"{"model":"m","input":"a","encoding_format":"hex"}"#,
                "encoding_format",
            ),
            (br#"{"model":"m","input":"a","user":1}"#, "user"),
        ] {
            match parse_embeddings(body).unwrap_err() {
                ApiError::InvalidField { param: p, .. }
                | ApiError::Unsupported { param: p, .. } => {
                    assert_eq!(p, param, "{}", String::from_utf8_lossy(body))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let out = response(
            "m",
            Encoding::Base64,
            pb::EmbedResponse {
                embeddings: vec![pb::Embedding { values: vec![1.0] }],
                prompt_tokens: 1,
            },
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        let b = v["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
        assert_eq!(bytes, 1.0f32.to_le_bytes());
        assert_eq!(v["usage"]["total_tokens"], 1);
    }
}
