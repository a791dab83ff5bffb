//! Typed reads of a JSON request object whose errors name the field, so a
//! client learns exactly which parameter is wrong.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The top-level object of a request body.
#[derive(Debug)]
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Parses `body` as a JSON object.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        match value {
            Value::Object(map) => Ok(Self(map)),
            _ => Err(ApiError::InvalidJson(
                "the body must be a JSON object".into(),
            )),
        }
    }

    /// The value of `name`, treating JSON `null` as absent.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn required_str(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(Value::String(_)) => {
                Err(ApiError::field(name, format!("`{name}` must not be empty")))
            }
            Some(_) => Err(ApiError::field(name, format!("`{name}` must be a string"))),
            None => Err(ApiError::field(name, format!("`{name}` is required"))),
        }
    }

    /// A string if present (any string, empty included).
    pub fn optional_str(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::field(name, format!("`{name}` must be a string"))),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::field(name, format!("`{name}` must be a boolean"))),
        }
    }

    /// A number within `[min, max]`.
    pub fn f32_in(&self, name: &str, min: f32, max: f32) -> Result<Option<f32>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let v = n.as_f64().unwrap_or(f64::NAN) as f32;
                if v.is_finite() && (min..=max).contains(&v) {
                    Ok(Some(v))
                } else {
                    Err(ApiError::field(
                        name,
                        format!("`{name}` must be between {min} and {max}, got {n}"),
                    ))
                }
            }
            Some(_) => Err(ApiError::field(name, format!("`{name}` must be a number"))),
        }
    }

    /// An integer within `[min, max]`.
    pub fn u64_in(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(ApiError::field(
                    name,
                    format!("`{name}` must be an integer between {min} and {max}, got {n}"),
                )),
            },
            Some(_) => Err(ApiError::field(
                name,
                format!("`{name}` must be an integer"),
            )),
        }
    }

    /// A seed: any integer, negative ones reinterpreted as their bits.
    pub fn seed(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_i64().map(|i| i as u64))
                .map(Some)
                .ok_or_else(|| ApiError::field(name, format!("`{name}` must be an integer"))),
            Some(_) => Err(ApiError::field(
                name,
                format!("`{name}` must be an integer"),
            )),
        }
    }

    /// `stop`: a string or an array of up to 4 strings, each at most
    /// 1024 bytes (the worker's limit).
    pub fn stop(&self) -> Result<Vec<String>, ApiError> {
        const MAX_STOP_BYTES: usize = 1024;
        let stops = self.stop_strings()?;
        if stops.iter().any(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::field(
                "stop",
                format!("a `stop` sequence may be at most {MAX_STOP_BYTES} bytes long"),
            ));
        }
        Ok(stops)
    }

    fn stop_strings(&self) -> Result<Vec<String>, ApiError> {
        const MAX_STOPS: usize = 4;
        match self.get("stop") {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => {
                if items.len() > MAX_STOPS {
                    return Err(ApiError::field(
                        "stop",
                        format!("`stop` takes at most {MAX_STOPS} sequences"),
                    ));
                }
                items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(ApiError::field("stop", "`stop` must contain only strings")),
                    })
                    .collect()
            }
            Some(_) => Err(ApiError::field(
                "stop",
                "`stop` must be a string or an array of strings",
            )),
        }
    }

    /// Refuses any field not in `known`, naming it: APIs whose every field
    /// Herd reads refuse the rest instead of silently dropping them.
    pub fn refuse_unknown(&self, known: &[&str], api: &str) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(name) => Err(ApiError::unsupported(
                name,
                format!("`{name}` is not supported by Herd's {api} API"),
            )),
        }
    }

    /// Rejects a parameter Herd does not implement unless it has one of its
    /// neutral values (`null`, `false`, `0`, `""`, an empty object or array).
    pub fn reject_unless_neutral(&self, name: &str, why: &str) -> Result<(), ApiError> {
        let neutral = match self.get(name) {
            None => true,
            Some(Value::Bool(b)) => !b,
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if neutral {
            Ok(())
        } else {
            Err(ApiError::unsupported(
                name,
                format!("`{name}` is not supported: {why}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(json: &str) -> Fields {
        Fields::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn non_object_bodies_are_invalid_json() {
        assert!(matches!(
            Fields::parse(b"[1]"),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(Fields::parse(b"{"), Err(ApiError::InvalidJson(_))));
    }

    #[test]
    fn errors_name_the_field() {
        let e = f(r#"{"temperature":"hot"}"#)
            .f32_in("temperature", 0.0, 2.0)
            .unwrap_err();
        assert!(matches!(e, ApiError::InvalidField { ref param, .. } if param == "temperature"));
        let e = f(r#"{"temperature":3}"#)
            .f32_in("temperature", 0.0, 2.0)
            .unwrap_err();
        assert!(e.to_string().contains("between 0 and 2"));
        let e = f(r#"{}"#).required_str("model").unwrap_err();
        assert!(e.to_string().contains("`model` is required"));
    }

    #[test]
    fn null_means_absent() {
        assert_eq!(
            f(r#"{"top_p":null}"#).f32_in("top_p", 0.0, 1.0).unwrap(),
            None
        );
    }

    #[test]
    fn stop_sequences_are_bounded_in_length() {
        let long = "x".repeat(1025);
        let e = f(&format!(r#"{{"stop":"{long}"}}"#)).stop().unwrap_err();
        assert!(matches!(e, ApiError::InvalidField { ref param, .. } if param == "stop"));
        let e = f(&format!(r#"{{"stop":["a","{long}"]}}"#))
            .stop()
            .unwrap_err();
        assert!(matches!(e, ApiError::InvalidField { ref param, .. } if param == "stop"));
        let ok = "x".repeat(1024);
        assert_eq!(
            f(&format!(r#"{{"stop":"{ok}"}}"#)).stop().unwrap(),
            vec![ok]
        );
    }

    #[test]
    fn stop_accepts_string_or_list() {
        assert_eq!(f(r#"{"stop":"x"}"#).stop().unwrap(), vec!["x"]);
        assert_eq!(f(r#"{"stop":["a","b"]}"#).stop().unwrap(), vec!["a", "b"]);
        assert!(f(r#"{"stop":[1]}"#).stop().is_err());
        assert!(f(r#"{"stop":["a","b","c","d","e"]}"#).stop().is_err());
    }

    #[test]
    fn neutral_values_of_unsupported_fields_pass() {
        for body in [
            r#"{}"#,
            r#"{"x":null}"#,
            r#"{"x":false}"#,
            r#"{"x":0}"#,
            r#"{"x":0.0}"#,
            r#"{"x":""}"#,
            r#"{"x":{}}"#,
            r#"{"x":[]}"#,
        ] {
            assert!(f(body).reject_unless_neutral("x", "why").is_ok(), "{body}");
        }
        for body in [
            r#"{"x":true}"#,
            r#"{"x":3}"#,
            r#"{"x":"text"}"#,
            r#"{"x":{"a":1}}"#,
            r#"{"x":[1]}"#,
        ] {
            let err = f(body).reject_unless_neutral("x", "why").unwrap_err();
            assert!(
                matches!(err, ApiError::Unsupported { ref param, .. } if param == "x"),
                "{body}: {err:?}"
            );
        }
    }

    #[test]
    fn seeds_may_be_negative() {
        assert_eq!(f(r#"{"seed":-1}"#).seed("seed").unwrap(), Some(u64::MAX));
    }
}
