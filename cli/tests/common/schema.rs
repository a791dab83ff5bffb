//! A small JSON Schema checker for tests: the keywords agent frameworks'
//! schemas use (`type`, `properties`, `required`, `additionalProperties`,
//! `items`, `enum`, `const`, `anyOf`, `oneOf`, `allOf`, local `$ref`s into
//! `$defs`/`definitions`, string and number bounds). Returns why a value
//! does not match.

use serde_json::Value;

/// Checks `value` against `schema` (the root, for `$ref`s).
pub fn check(schema: &Value, value: &Value) -> Result<(), String> {
    at(schema, schema, value, "$")
}

fn at(root: &Value, schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let fail = |why: String| Err(format!("{path}: {why} (value {value})"));
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = resolve(root, r).ok_or_else(|| format!("{path}: unresolved $ref {r}"))?;
        return at(root, target, value, path);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alts)) = schema.get(key) {
            let matching = alts
                .iter()
                .filter(|alt| at(root, alt, value, path).is_ok())
                .count();
            let ok = if key == "oneOf" {
                matching == 1
            } else {
                matching >= 1
            };
            if !ok {
                return fail(format!("{matching} alternatives of {key} match"));
            }
        }
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for sub in all {
            at(root, sub, value, path)?;
        }
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        return fail(format!("not the const {c}"));
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(value)
    {
        return fail("not in the enum".into());
    }
    match schema.get("type") {
        Some(Value::String(t)) => check_type(t, value).or_else(fail)?,
        Some(Value::Array(types))
            if !types
                .iter()
                .filter_map(Value::as_str)
                .any(|t| check_type(t, value).is_ok()) =>
        {
            return fail(format!("none of the types {types:?}"));
        }
        _ => {}
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(Value::Array(required)) = schema.get("required") {
                for name in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(name) {
                        return fail(format!("`{name}` is required"));
                    }
                }
            }
            for (k, v) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => at(root, sub, v, &format!("{path}.{k}"))?,
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return fail(format!("`{k}` is not allowed"));
                        }
                        Some(sub @ Value::Object(_)) => at(root, sub, v, &format!("{path}.{k}"))?,
                        _ => {}
                    },
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    at(root, sub, item, &format!("{path}[{i}]"))?;
                }
            }
            let n = items.len() as u64;
            if schema
                .get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
                || schema
                    .get("maxItems")
                    .and_then(Value::as_u64)
                    .is_some_and(|m| n > m)
            {
                return fail("item count out of bounds".into());
            }
        }
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if schema
                .get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
                || schema
                    .get("maxLength")
                    .and_then(Value::as_u64)
                    .is_some_and(|m| n > m)
            {
                return fail("length out of bounds".into());
            }
        }
        Value::Number(x) => {
            let x = x.as_f64().unwrap_or(f64::NAN);
            if schema
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| x < m)
                || schema
                    .get("maximum")
                    .and_then(Value::as_f64)
                    .is_some_and(|m| x > m)
            {
                return fail("out of range".into());
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_type(t: &str, value: &Value) -> Result<(), String> {
    let ok = match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("not of type {t}"))
    }
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}
