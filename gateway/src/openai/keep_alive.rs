//! The `keep_alive` request field (an extension Ollama's clients send): how
//! long the model stays loaded after this request — a duration (`"10m"`),
//! seconds, `0` (unload once idle) or a negative number (never unload).

use serde_json::Value;

use super::fields::Fields;
use crate::error::ApiError;
use crate::scheduler::KeepAlive;

pub fn parse(fields: &Fields) -> Result<Option<KeepAlive>, ApiError> {
    let parsed = match fields.get("keep_alive") {
        None => return Ok(None),
        Some(Value::String(text)) => KeepAlive::parse(text),
        Some(Value::Number(n)) => KeepAlive::from_seconds(n.as_f64().unwrap_or(f64::NAN)),
        Some(_) => Err("must be a duration (\"5m\"), seconds, 0 or -1".to_owned()),
    };
    parsed
        .map(Some)
        .map_err(|reason| ApiError::field("keep_alive", format!("`keep_alive` {reason}")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse_body(body: &str) -> Result<Option<KeepAlive>, ApiError> {
        parse(&Fields::parse(body.as_bytes()).unwrap())
    }

    #[test]
    fn strings_numbers_and_errors() {
        assert_eq!(parse_body("{}"), Ok(None));
        assert_eq!(
            parse_body(r#"{"keep_alive":"10m"}"#),
            Ok(Some(KeepAlive::For(Duration::from_secs(600))))
        );
        assert_eq!(
            parse_body(r#"{"keep_alive":0}"#),
            Ok(Some(KeepAlive::For(Duration::ZERO)))
        );
        assert_eq!(
            parse_body(r#"{"keep_alive":-1}"#),
            Ok(Some(KeepAlive::Forever))
        );
        for bad in [
            r#"{"keep_alive":"soon"}"#,
            r#"{"keep_alive":true}"#,
            r#"{"keep_alive":[]}"#,
        ] {
            let err = parse_body(bad).unwrap_err();
            assert_eq!(err.body()["error"]["param"], "keep_alive", "{bad}");
        }
    }
}
