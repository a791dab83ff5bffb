//! The schema gate: every JSON schema a request brings (`response_format`,
//! tool parameters) is checked here before llama.cpp's converter sees it.
//! It refuses what the converter cannot handle (contradictory bounds, a
//! reversed character range: the converter or the grammar then loops,
//! bloats or aborts the process), what the grammar cannot enforce (output
//! would pass as valid without being so: `not`, lookaround, backreferences,
//! an unanchored `pattern`, bounds on `number`…), and what is too big to
//! enforce cheaply (deep nesting, huge repetition counts). Pure and
//! bounded: it never recurses deeper than [`MAX_DEPTH`] and visits each
//! `$ref` target once.

use std::collections::HashSet;

use serde_json::{Map, Value};

/// How deeply schemas may nest.
pub const MAX_DEPTH: usize = 32;
/// How many schema nodes one schema may have.
pub const MAX_NODES: usize = 4096;
/// The largest `minLength`/`maxLength`, and `minItems`/`maxItems`.
pub const MAX_LENGTH: u64 = 4096;
pub const MAX_ITEMS: u64 = 256;
/// The largest `pattern` (bytes) and its repetition budget: the product of
/// nested repetition counts (`(a{0,40}){0,40}` costs 1,600).
pub const MAX_PATTERN_BYTES: usize = 1024;
pub const MAX_PATTERN_REPEAT: u64 = 1024;
/// The longest property name.
pub const MAX_NAME_BYTES: usize = 256;

/// Why a schema is refused, and where in it (a JSON pointer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at `{path}`: {reason}")]
pub struct SchemaError {
    pub path: String,
    pub reason: String,
}

/// Keywords that constrain values but that the grammar cannot enforce.
const UNENFORCEABLE: [&str; 18] = [
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "patternProperties",
    "propertyNames",
    "multipleOf",
    "contains",
    "minContains",
    "maxContains",
    "minProperties",
    "maxProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
];

/// Keywords that may stand next to a `$ref` (annotations only: the
/// converter ignores a `$ref`'s siblings).
const ANNOTATIONS: [&str; 14] = [
    "$ref",
    "$defs",
    "definitions",
    "$schema",
    "$id",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
    "discriminator",
];

const TYPES: [&str; 7] = [
    "object", "array", "string", "integer", "number", "boolean", "null",
];

/// Checks `schema`; `Ok` means the converter can turn it into a grammar
/// that enforces it.
pub fn check(schema: &Value) -> Result<(), SchemaError> {
    let mut gate = Gate {
        root: schema,
        nodes: 0,
        visited: HashSet::new(),
    };
    gate.node(schema, "#", 0)
}

struct Gate<'a> {
    root: &'a Value,
    nodes: usize,
    visited: HashSet<String>,
}

fn fail<T>(path: &str, reason: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError {
        path: path.to_owned(),
        reason: reason.into(),
    })
}

impl<'a> Gate<'a> {
    fn node(&mut self, schema: &'a Value, path: &str, depth: usize) -> Result<(), SchemaError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return fail(path, format!("the schema has more than {MAX_NODES} parts"));
        }
        if depth > MAX_DEPTH {
            return fail(path, format!("schemas nest at most {MAX_DEPTH} deep"));
        }
        let Value::Object(map) = schema else {
            return fail(path, "a schema must be an object");
        };
        for keyword in UNENFORCEABLE {
            if map.contains_key(keyword) {
                return fail(path, format!("`{keyword}` cannot be enforced"));
            }
        }
        if map.get("uniqueItems") == Some(&Value::Bool(true)) {
            return fail(path, "`uniqueItems` cannot be enforced");
        }
        if let Some(reference) = map.get("$ref") {
            return self.reference(map, reference, path, depth);
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(alts) = map.get(key) {
                let Value::Array(alts) = alts else {
                    return fail(path, format!("`{key}` must be an array"));
                };
                if alts.is_empty() {
                    return fail(path, format!("`{key}` must not be empty"));
                }
                for (i, alt) in alts.iter().enumerate() {
                    self.node(alt, &format!("{path}/{key}/{i}"), depth + 1)?;
                }
            }
        }
        if let Some(Value::Array(all)) = map.get("allOf") {
            self.consistent(all, path)?;
        }
        let types = declared_types(map, path)?;
        if let Some(values) = map.get("enum") {
            match values {
                Value::Array(v) if !v.is_empty() => {}
                _ => return fail(path, "`enum` must be a non-empty array"),
            }
        }
        let has = |t: &str| types.as_ref().is_none_or(|ts| ts.contains(&t));
        if has("integer") || has("number") {
            self.numbers(map, path, types.as_deref())?;
        }
        if has("string") {
            self.string(map, path)?;
        }
        if has("array") {
            self.array(map, path, depth)?;
        }
        if has("object") {
            self.object(map, path, depth)?;
        }
        Ok(())
    }

    fn reference(
        &mut self,
        map: &'a Map<String, Value>,
        reference: &Value,
        path: &str,
        depth: usize,
    ) -> Result<(), SchemaError> {
        let Value::String(reference) = reference else {
            return fail(path, "`$ref` must be a string");
        };
        if let Some(extra) = map.keys().find(|k| !ANNOTATIONS.contains(&k.as_str())) {
            return fail(
                path,
                format!("`{extra}` next to `$ref` cannot be enforced; wrap them in `allOf`"),
            );
        }
        let Some(pointer) = reference.strip_prefix('#') else {
            return fail(
                path,
                format!("`$ref` {reference:?}: only references within the schema are supported"),
            );
        };
        if pointer.contains('~') || pointer.contains('%') {
            return fail(
                path,
                format!("`$ref` {reference:?}: escaped JSON pointers are not supported"),
            );
        }
        let Some(target) = self.root.pointer(pointer) else {
            return fail(path, format!("`$ref` {reference:?} does not resolve"));
        };
        if self.resolve(target).is_none() {
            return fail(
                path,
                format!("`$ref` {reference:?} only leads to other `$ref`s"),
            );
        }
        if self.visited.insert(pointer.to_owned()) {
            self.node(target, reference, depth + 1)?;
        }
        Ok(())
    }

    /// `allOf` parts must admit a common type.
    fn consistent(&self, all: &'a [Value], path: &str) -> Result<(), SchemaError> {
        let mut common: Option<Vec<&str>> = None;
        for part in all {
            let part = self.resolve(part);
            let Some(Value::Object(map)) = part else {
                continue;
            };
            if let Some(types) = declared_types(map, path)? {
                common = Some(match common {
                    None => types,
                    Some(c) => c.into_iter().filter(|t| types.contains(t)).collect(),
                });
            }
        }
        match common {
            Some(c) if c.is_empty() => fail(path, "the parts of `allOf` admit no common type"),
            _ => Ok(()),
        }
    }

    /// Follows `$ref`s (a few steps) to the schema they name.
    fn resolve(&self, mut schema: &'a Value) -> Option<&'a Value> {
        for _ in 0..8 {
            match schema.get("$ref").and_then(Value::as_str) {
                Some(r) => schema = self.root.pointer(r.strip_prefix('#')?)?,
                None => return Some(schema),
            }
        }
        None
    }

    fn numbers(
        &self,
        map: &Map<String, Value>,
        path: &str,
        types: Option<&[&str]>,
    ) -> Result<(), SchemaError> {
        let bound = |k: &str| -> Result<Option<f64>, SchemaError> {
            match map.get(k) {
                None => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64()),
                Some(_) => fail(path, format!("`{k}` must be a number")),
            }
        };
        let (min, max) = (bound("minimum")?, bound("maximum")?);
        let (xmin, xmax) = (bound("exclusiveMinimum")?, bound("exclusiveMaximum")?);
        let bounded = min.is_some() || max.is_some() || xmin.is_some() || xmax.is_some();
        if !bounded {
            return Ok(());
        }
        if types != Some(&["integer"][..]) {
            return fail(
                path,
                "bounds (`minimum`, `maximum`, …) can only be enforced on `\"type\": \"integer\"`",
            );
        }
        // As the converter reads them: fractional bounds rounded inwards.
        let lo = min
            .map(f64::ceil)
            .or(xmin.map(|x| x.floor() + 1.0))
            .unwrap_or(f64::MIN);
        let hi = max
            .map(f64::floor)
            .or(xmax.map(|x| x.ceil() - 1.0))
            .unwrap_or(f64::MAX);
        let limit = 1e15;
        if lo.abs() > limit && lo != f64::MIN || hi.abs() > limit && hi != f64::MAX {
            return fail(path, "integer bounds must be within ±10^15");
        }
        if lo > hi {
            return fail(path, "no integer lies between the minimum and the maximum");
        }
        Ok(())
    }

    fn string(&self, map: &Map<String, Value>, path: &str) -> Result<(), SchemaError> {
        let (min, max) = counts(map, "minLength", "maxLength", MAX_LENGTH, path)?;
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            return fail(path, "`minLength` is larger than `maxLength`");
        }
        match map.get("pattern") {
            None => Ok(()),
            Some(Value::String(p)) => {
                if min.is_some() || max.is_some() {
                    return fail(
                        path,
                        "`pattern` and length bounds together cannot be enforced",
                    );
                }
                check_pattern(p).or_else(|reason| fail(&format!("{path}/pattern"), reason))
            }
            Some(_) => fail(path, "`pattern` must be a string"),
        }
    }

    fn array(
        &mut self,
        map: &'a Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), SchemaError> {
        let (min, max) = counts(map, "minItems", "maxItems", MAX_ITEMS, path)?;
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            return fail(path, "`minItems` is larger than `maxItems`");
        }
        for key in ["items", "prefixItems"] {
            match map.get(key) {
                None | Some(Value::Bool(true)) => {}
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        self.node(item, &format!("{path}/{key}/{i}"), depth + 1)?;
                    }
                }
                Some(item) => self.node(item, &format!("{path}/{key}"), depth + 1)?,
            }
        }
        Ok(())
    }

    fn object(
        &mut self,
        map: &'a Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), SchemaError> {
        let properties = match map.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return fail(path, "`properties` must be an object"),
        };
        if let Some(properties) = properties {
            for (name, sub) in properties {
                if name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
                    return fail(
                        path,
                        format!(
                            "property names must be at most {MAX_NAME_BYTES} bytes without control characters"
                        ),
                    );
                }
                self.node(sub, &format!("{path}/properties/{name}"), depth + 1)?;
            }
        }
        let closed = map.get("additionalProperties") == Some(&Value::Bool(false));
        match map.get("additionalProperties") {
            None | Some(Value::Bool(_)) => {}
            Some(sub @ Value::Object(_)) => {
                self.node(sub, &format!("{path}/additionalProperties"), depth + 1)?;
            }
            Some(_) => return fail(path, "`additionalProperties` must be a boolean or a schema"),
        }
        match map.get("required") {
            None => Ok(()),
            Some(Value::Array(names)) => {
                for name in names {
                    let Value::String(name) = name else {
                        return fail(path, "`required` must list property names");
                    };
                    if closed && !properties.is_some_and(|p| p.contains_key(name)) {
                        return fail(
                            path,
                            format!(
                                "`{name}` is required but not allowed (additionalProperties: false)"
                            ),
                        );
                    }
                }
                Ok(())
            }
            Some(_) => fail(path, "`required` must be an array"),
        }
    }
}

/// The `type`s a schema declares (`None`: any). Enum and const values
/// count as their JSON types.
fn declared_types<'v>(
    map: &'v Map<String, Value>,
    path: &str,
) -> Result<Option<Vec<&'v str>>, SchemaError> {
    let types = match map.get("type") {
        None => None,
        Some(Value::String(t)) => Some(vec![t.as_str()]),
        Some(Value::Array(ts)) if !ts.is_empty() => Some(
            ts.iter()
                .map(|t| t.as_str().ok_or(()))
                .collect::<Result<Vec<_>, ()>>()
                .or_else(|()| fail(path, "`type` must name JSON types"))?,
        ),
        Some(_) => return fail(path, "`type` must be a string or a non-empty array"),
    };
    if let Some(ts) = &types
        && let Some(bad) = ts.iter().find(|t| !TYPES.contains(t))
    {
        return fail(path, format!("unknown type `{bad}`"));
    }
    Ok(types)
}

/// A pair of count bounds (`minLength`/`maxLength`, …), each at most `cap`.
fn counts(
    map: &Map<String, Value>,
    min: &str,
    max: &str,
    cap: u64,
    path: &str,
) -> Result<(Option<u64>, Option<u64>), SchemaError> {
    let read = |k: &str| match map.get(k) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= cap => Ok(Some(n)),
            Some(_) => fail(path, format!("`{k}` may be at most {cap}")),
            None => fail(path, format!("`{k}` must be a non-negative integer")),
        },
    };
    Ok((read(min)?, read(max)?))
}

/// Checks a `pattern` against what the converter turns into an exact
/// grammar: anchored `^…$`; groups `(…)` and `(?:…)`; classes with ordered
/// ranges that match something; quantifiers `* + ? {m} {m,} {m,n}` with
/// bounded nested repetition and nothing empty repeated; no backreferences,
/// lookaround or inner anchors.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "a pattern may be at most {MAX_PATTERN_BYTES} bytes"
        ));
    }
    let Some(body) = pattern
        .strip_prefix('^')
        .and_then(|p| p.strip_suffix('$'))
        .filter(|p| !p.ends_with('\\') || p.ends_with("\\\\"))
    else {
        return Err("patterns must be anchored with `^` and `$` to be enforced".into());
    };
    let chars: Vec<char> = body.chars().collect();
    // The grammar copies a repeated part once per count: the cost of a
    // sequence is the sum of its parts' costs, a repeated part's cost its
    // own times the count. Per open group: the enclosing level's cost so
    // far, whether the group has an empty alternative, where its current
    // alternative starts.
    let mut stack: Vec<(u64, bool, usize)> = Vec::new();
    let mut cost: u64 = 0;
    let mut alt_start = 0usize;
    let mut i = 0;
    let over = |c: u64| -> Result<(), String> {
        if c > MAX_PATTERN_REPEAT {
            Err(format!(
                "repetition in a pattern is limited to {MAX_PATTERN_REPEAT} copies (this one: {c})"
            ))
        } else {
            Ok(())
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let atom_end = match c {
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err("trailing backslash".into());
                };
                if next.is_ascii_digit() && next != '0' || next == 'k' {
                    return Err("backreferences cannot be enforced".into());
                }
                if matches!(next, 'b' | 'B' | 'A' | 'z' | 'Z' | 'G') {
                    return Err(format!("`\\{next}` cannot be enforced"));
                }
                i + match next {
                    'u' => 6,
                    'x' => 4,
                    _ => 2,
                }
            }
            '(' => {
                if chars.get(i + 1) == Some(&'?') {
                    if chars.get(i + 2) != Some(&':') {
                        return Err("lookaround, named groups and flags cannot be enforced".into());
                    }
                    i += 2;
                }
                stack.push((cost, false, alt_start));
                if stack.len() > 16 {
                    return Err("groups nest at most 16 deep".into());
                }
                cost = 0;
                i += 1;
                alt_start = i;
                continue;
            }
            ')' => {
                let Some((outer, empty_alt, outer_start)) = stack.pop() else {
                    return Err("unbalanced parentheses".into());
                };
                let empty = empty_alt || alt_start == i;
                let (times, repeated, next) = quantifier(&chars, i + 1)?;
                if repeated && empty {
                    return Err("a repeated group must not match the empty string".into());
                }
                cost = outer.saturating_add(cost.max(1).saturating_mul(times));
                over(cost)?;
                alt_start = outer_start;
                i = next;
                continue;
            }
            '|' => {
                if (alt_start == i || chars.get(i + 1).is_none_or(|n| *n == ')' || *n == '|'))
                    && let Some(top) = stack.last_mut()
                {
                    top.1 = true;
                }
                i += 1;
                alt_start = i;
                continue;
            }
            '^' | '$' => return Err("anchors inside a pattern cannot be enforced".into()),
            '[' => class(&chars, i)?,
            '*' | '+' | '?' | '{' => return Err("nothing to repeat".into()),
            '}' | ']' => return Err(format!("unsupported character `{c}`")),
            _ => i + 1,
        };
        let (times, _, next) = quantifier(&chars, atom_end)?;
        cost = cost.saturating_add(times);
        over(cost)?;
        i = next;
    }
    if !stack.is_empty() {
        return Err("unbalanced parentheses".into());
    }
    Ok(())
}

/// Reads a quantifier at `i`: its largest finite count (1 for `*`, `+`,
/// `?`, an unbounded `{m,}` counts `m`), whether there was one, and where
/// the pattern goes on.
fn quantifier(chars: &[char], i: usize) -> Result<(u64, bool, usize), String> {
    match chars.get(i) {
        Some('*' | '+' | '?') => Ok((1, true, lazy(chars, i + 1))),
        Some('{') => {
            let end = chars[i..]
                .iter()
                .position(|c| *c == '}')
                .ok_or("unterminated `{`")?;
            let inner: String = chars[i + 1..i + end].iter().collect();
            let parse = |s: &str| s.trim().parse::<u64>().map_err(|_| "invalid count in `{}`");
            let (lo, hi) = match inner.split_once(',') {
                None => {
                    let n = parse(&inner)?;
                    (n, n)
                }
                Some((lo, "")) => {
                    let lo = parse(lo)?;
                    (lo, lo)
                }
                Some((lo, hi)) => (if lo.is_empty() { 0 } else { parse(lo)? }, parse(hi)?),
            };
            if lo > hi {
                return Err("a repetition's minimum is larger than its maximum".into());
            }
            if hi > MAX_PATTERN_REPEAT {
                return Err(format!(
                    "repetition counts may be at most {MAX_PATTERN_REPEAT}"
                ));
            }
            Ok((hi.max(1), true, lazy(chars, i + end + 1)))
        }
        _ => Ok((1, false, i)),
    }
}

fn lazy(chars: &[char], i: usize) -> usize {
    if matches!(chars.get(i), Some('?' | '+')) {
        i + 1
    } else {
        i
    }
}

/// Checks the class starting at `i` (`[`); returns the index after it.
fn class(chars: &[char], start: usize) -> Result<usize, String> {
    let mut i = start + 1;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut escapes = HashSet::new();
    let mut members = 0;
    while let Some(&c) = chars.get(i) {
        if c == ']' && members > 0 {
            if negated
                && ["sS", "dD", "wW"]
                    .iter()
                    .any(|p| p.chars().all(|e| escapes.contains(&e)))
            {
                return Err("a character class that matches nothing".into());
            }
            return Ok(i + 1);
        }
        let (item, next) = if c == '\\' {
            let e = *chars.get(i + 1).ok_or("unterminated character class")?;
            escapes.insert(e);
            let literal = match e {
                'n' => Some('\n'),
                't' => Some('\t'),
                'r' => Some('\r'),
                'd' | 'D' | 'w' | 'W' | 's' | 'S' => None,
                c if c.is_ascii_punctuation() => Some(c),
                'u' | 'x' => None,
                _ => return Err(format!("unsupported escape `\\{e}` in a character class")),
            };
            (literal, i + 2)
        } else {
            (Some(c), i + 1)
        };
        members += 1;
        // A range `a-b`.
        if chars.get(next) == Some(&'-')
            && let Some(&hi) = chars.get(next + 1)
            && hi != ']'
        {
            let hi = if hi == '\\' {
                chars
                    .get(next + 2)
                    .copied()
                    .filter(char::is_ascii_punctuation)
            } else {
                Some(hi)
            };
            match (item, hi) {
                (Some(lo), Some(hi)) if lo <= hi => {}
                (Some(_), Some(_)) => return Err("a character range is reversed".into()),
                _ => return Err("a character range needs plain characters at both ends".into()),
            }
            let width = if chars.get(next + 1) == Some(&'\\') {
                3
            } else {
                2
            };
            i = next + width;
            continue;
        }
        i = next;
    }
    Err("unterminated character class".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(schema: Value) -> SchemaError {
        check(&schema).expect_err(&schema.to_string())
    }

    #[test]
    fn ordinary_schemas_pass() {
        for schema in [
            json!({"type": "object"}),
            json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": false}),
            json!({"$defs": {"P": {"type": "object", "properties": {"kid": {"$ref": "#/$defs/P"}}}},
                   "allOf": [{"$ref": "#/$defs/P"}]}),
            json!({"type": "integer", "minimum": 1, "maximum": 99}),
            json!({"type": "string", "pattern": "^[a-z]{2,8}(-[0-9]+)?$"}),
            json!({"type": "string", "pattern": "^\\d{3}-\\d{4}$"}),
            json!({"anyOf": [{"type": "string"}, {"type": "null"}], "default": null}),
            json!({"enum": ["small", "large"], "type": "string"}),
            json!({"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3}),
            json!({"$ref": "#/$defs/A", "description": "d", "$defs": {"A": {"type": "string"}}}),
        ] {
            check(&schema).unwrap_or_else(|e| panic!("{schema}: {e}"));
        }
    }

    #[test]
    fn what_crashed_or_wedged_the_worker_is_refused() {
        refused(json!({"type": "string", "minLength": 5, "maxLength": 2}));
        refused(json!({"type": "integer", "minimum": 10, "maximum": 2}));
        refused(json!({"type": "integer", "exclusiveMinimum": 2, "exclusiveMaximum": 3}));
        refused(json!({"type": "string", "pattern": "^[z-a]$"}));
        refused(json!({"type": "string", "pattern": "^((a{0,40}){0,40}){0,40}$"}));
        refused(json!({"type": "string", "pattern": "^(a{0,1000}){0,1000}$"}));
        refused(json!({"type": "string", "maxLength": 1000000}));
        refused(json!({"type": "array", "minItems": 9, "maxItems": 3}));
        refused(json!({"type": "string", "pattern": "^(|a)*$"}));
    }

    #[test]
    fn what_the_grammar_cannot_enforce_is_refused() {
        for pattern in [
            "^(a)\\1$",
            "^(?=a)a$",
            "^(?!a).$",
            "^[^\\s\\S]$",
            "[a-z]+",
            "^a^b$",
        ] {
            let e = refused(json!({"type": "string", "pattern": pattern}));
            assert!(e.path.ends_with("/pattern"), "{pattern}: {e}");
        }
        refused(json!({"allOf": [{"type": "string"}, {"type": "integer"}]}));
        refused(json!({"not": {"type": "string"}}));
        refused(json!({"type": "number", "minimum": 0}));
        refused(json!({"type": "object", "properties": {"a\u{0}b": {}}}));
        refused(json!({"type": "object", "required": ["x"], "additionalProperties": false}));
        refused(json!({"$ref": "https://example.com/s.json"}));
        refused(json!({"$ref": "#/nowhere"}));
        refused(json!({"$ref": "#/$defs/A", "maxLength": 3, "$defs": {"A": {"type": "string"}}}));
        refused(json!(true));
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut deep = json!({"type": "string"});
        for _ in 0..(MAX_DEPTH + 2) {
            deep = json!({"type": "array", "items": deep});
        }
        refused(deep);
        let wide: serde_json::Map<String, Value> = (0..MAX_NODES + 1)
            .map(|i| (format!("p{i}"), json!({"type": "string"})))
            .collect();
        refused(json!({"type": "object", "properties": wide}));
    }

    #[test]
    fn refs_may_loop_without_looping_the_gate() {
        refused(
            json!({"$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"$ref": "#/$defs/A"}},
                       "$ref": "#/$defs/A"}),
        );
        check(
            &json!({"$defs": {"A": {"type": "array", "items": {"$ref": "#/$defs/A"}}},
                      "$ref": "#/$defs/A"}),
        )
        .unwrap();
    }
}
