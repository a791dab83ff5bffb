//! URL → route. The OpenAI routes live under `/v1`, and also under Docker
//! Model Runner's `/engines/v1` and `/engines/llama.cpp/v1`.

use http::Method;

use crate::error::ApiError;

/// Docker Model Runner's admin paths under `/engines/` (not engine names).
const ADMIN_PATHS: &[&str] = &[
    "/engines/unload",
    "/engines/ps",
    "/engines/df",
    "/engines/status",
];

/// Engines a path may name under `/engines/{engine}/…`.
pub const ENGINES: &[&str] = &["llama.cpp"];

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: a plain "running" line.
    Root,
    /// `GET /healthz`: the process is up.
    Health,
    /// `GET /readyz`: it can serve — `ready`, `degraded` (serving with
    /// the last view of an unreachable state store) or 503 `not_ready`.
    Ready,
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    /// `GET /v1/models/{id}`; the id may contain `/` and `:`.
    Model(String),
    /// `GET /herd/v1/status`: live worker status.
    Status,
    /// Docker Model Runner's model-store API under `/models`.
    Store(StoreRoute),
    /// `POST /engines/unload` `{"models":[…]}` or `{"all":true}`: unload
    /// idle models now (Docker Model Runner's shape).
    Unload,
    /// `GET /engines/ps`: loaded models, where, how busy, until when kept.
    Running,
    /// `GET /engines/df`: disk used by stored models, per worker.
    DiskUsage,
    /// `GET /engines/status`: whether the engines (workers) run.
    EngineStatus,
    /// `POST /v1/messages` (also `/anthropic/v1/messages`): Anthropic
    /// Messages.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
    /// Ollama's API under `/api/`.
    Ollama(OllamaRoute),
    /// OpenAI Responses under `/v1/responses`.
    Responses(ResponsesRoute),
    /// `GET /metrics`: Prometheus metrics.
    Metrics,
    /// `GET /logs[?follow=true]`: recent log lines, then (following) new
    /// ones as they come.
    Logs,
}

impl Route {
    /// The route's name: a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Health => "healthz",
            Self::Ready => "readyz",
            Self::ChatCompletions => "chat_completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Models | Self::Model(_) => "models",
            Self::Status => "status",
            Self::Store(_) => "store",
            Self::Unload => "engines_unload",
            Self::Running => "engines_ps",
            Self::DiskUsage => "engines_df",
            Self::EngineStatus => "engines_status",
            Self::Metrics => "metrics",
            Self::Logs => "logs",
            Self::Messages => "messages",
            Self::CountTokens => "count_tokens",
            Self::Ollama(_) => "ollama",
            Self::Responses(_) => "responses",
        }
    }
}

/// The `/v1/responses` routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponsesRoute {
    /// `POST /v1/responses`.
    Create,
    /// `GET /v1/responses/{id}`.
    Get(String),
    /// `DELETE /v1/responses/{id}`.
    Delete(String),
    /// `GET /v1/responses/{id}/input_items`.
    InputItems(String),
}

/// The `/api/` routes (Ollama's API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OllamaRoute {
    Version,
    Tags,
    Ps,
    Show,
    Chat,
    Generate,
    Embed,
    Pull,
    Delete,
}

/// The `/models` routes. Names may contain `/` and `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRoute {
    /// `GET /models`.
    List,
    /// `POST /models/create` `{"from":"ref"}`: pull, streaming progress.
    Create,
    /// `GET /models/{name}`.
    Get(String),
    /// `DELETE /models/{name}[?force=true]`.
    Delete(String),
    /// `POST /models/{name}/tag?repo=&tag=`.
    Tag(String),
    /// `POST /models/{name}/push`, streaming progress.
    Push(String),
}

/// Resolves `method` and `path` (no query string).
pub fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    if path == "/models" || path.starts_with("/models/") {
        return store_route(method, path).map(Route::Store);
    }
    let api_path = if ADMIN_PATHS.contains(&path) {
        path
    } else {
        strip_engine_prefix(path)?
    };
    let (route, allowed) = match api_path {
        "/api/version" => (Route::Ollama(OllamaRoute::Version), "GET"),
        "/api/tags" => (Route::Ollama(OllamaRoute::Tags), "GET"),
        "/api/ps" => (Route::Ollama(OllamaRoute::Ps), "GET"),
        "/api/show" => (Route::Ollama(OllamaRoute::Show), "POST"),
        "/api/chat" => (Route::Ollama(OllamaRoute::Chat), "POST"),
        "/api/generate" => (Route::Ollama(OllamaRoute::Generate), "POST"),
        "/api/embed" => (Route::Ollama(OllamaRoute::Embed), "POST"),
        "/api/pull" => (Route::Ollama(OllamaRoute::Pull), "POST"),
        "/api/delete" => (Route::Ollama(OllamaRoute::Delete), "DELETE"),
        "/engines/unload" => (Route::Unload, "POST"),
        "/engines/ps" => (Route::Running, "GET"),
        "/engines/df" => (Route::DiskUsage, "GET"),
        "/engines/status" => (Route::EngineStatus, "GET"),
        "/" => (Route::Root, "GET"),
        "/healthz" => (Route::Health, "GET"),
        "/readyz" => (Route::Ready, "GET"),
        "/herd/v1/status" => (Route::Status, "GET"),
        "/metrics" => (Route::Metrics, "GET"),
        "/logs" => (Route::Logs, "GET"),
        "/v1/chat/completions" => (Route::ChatCompletions, "POST"),
        "/v1/completions" => (Route::Completions, "POST"),
        "/v1/embeddings" => (Route::Embeddings, "POST"),
        "/v1/messages" | "/anthropic/v1/messages" => (Route::Messages, "POST"),
        "/v1/messages/count_tokens" | "/anthropic/v1/messages/count_tokens" => {
            (Route::CountTokens, "POST")
        }
        "/v1/models" | "/v1/models/" => (Route::Models, "GET"),
        "/v1/responses" => (Route::Responses(ResponsesRoute::Create), "POST"),
        p if p.starts_with("/v1/responses/") => {
            let rest = percent_decode(&p["/v1/responses/".len()..]);
            return match rest.strip_suffix("/input_items") {
                Some(id) if method == Method::GET => {
                    Ok(Route::Responses(ResponsesRoute::InputItems(id.to_owned())))
                }
                None if method == Method::GET => Ok(Route::Responses(ResponsesRoute::Get(rest))),
                None if method == Method::DELETE => {
                    Ok(Route::Responses(ResponsesRoute::Delete(rest)))
                }
                _ => Err(ApiError::MethodNotAllowed {
                    method: method.to_string(),
                    path: path.to_owned(),
                    allowed: "GET, DELETE",
                }),
            };
        }
        p => match p.strip_prefix("/v1/models/") {
            Some(id) => (Route::Model(percent_decode(id)), "GET"),
            None => {
                return Err(ApiError::RouteNotFound {
                    method: method.to_string(),
                    path: path.to_owned(),
                });
            }
        },
    };
    let ok = match allowed {
        "GET" => method == Method::GET || method == Method::HEAD,
        "DELETE" => method == Method::DELETE,
        _ => method == Method::POST,
    };
    if ok {
        Ok(route)
    } else {
        Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_owned(),
            allowed,
        })
    }
}

fn store_route(method: &Method, path: &str) -> Result<StoreRoute, ApiError> {
    let not_allowed = |allowed| ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
        allowed,
    };
    let get = method == Method::GET || method == Method::HEAD;
    let rest = path
        .strip_prefix("/models")
        .unwrap_or("")
        .trim_start_matches('/');
    if rest.is_empty() {
        return if get {
            Ok(StoreRoute::List)
        } else {
            Err(not_allowed("GET"))
        };
    }
    if rest == "create" && method == Method::POST {
        return Ok(StoreRoute::Create);
    }
    if method == Method::POST {
        if let Some(name) = rest.strip_suffix("/tag") {
            return Ok(StoreRoute::Tag(model_name(name)?));
        }
        if let Some(name) = rest.strip_suffix("/push") {
            return Ok(StoreRoute::Push(model_name(name)?));
        }
    }
    let name = model_name(rest)?;
    if get {
        Ok(StoreRoute::Get(name))
    } else if method == Method::DELETE {
        Ok(StoreRoute::Delete(name))
    } else {
        Err(not_allowed("GET, DELETE"))
    }
}

/// A model name from a `/models/…` path: percent-decoded, then at most
/// 512 visible ASCII characters (references are ASCII; anything else is a
/// 400 before the worker is asked).
fn model_name(segment: &str) -> Result<String, ApiError> {
    let name = percent_decode(segment);
    if name.is_empty() || name.len() > 512 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::field(
            "name",
            "a model name in the path must be 1-512 visible ASCII characters",
        ));
    }
    Ok(name)
}

/// `/engines/v1/x` and `/engines/llama.cpp/v1/x` → `/v1/x`; any other engine
/// name is an error listing the known ones.
fn strip_engine_prefix(path: &str) -> Result<&str, ApiError> {
    let Some(rest) = path.strip_prefix("/engines/") else {
        return Ok(path);
    };
    if rest.starts_with("v1/") || rest == "v1" {
        return Ok(&path["/engines".len()..]);
    }
    let (engine, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if ENGINES.contains(&engine) {
        return Ok(if tail.is_empty() {
            "/"
        } else {
            &rest[engine.len()..]
        });
    }
    Err(ApiError::UnknownEngine {
        name: percent_decode(engine),
        known: ENGINES.join(", "),
    })
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn openai_routes_under_every_prefix() {
        for prefix in ["", "/engines", "/engines/llama.cpp"] {
            let p = |s: &str| format!("{prefix}{s}");
            assert_eq!(
                route(&Method::POST, &p("/v1/chat/completions")).unwrap(),
                Route::ChatCompletions
            );
            assert_eq!(
                route(&Method::POST, &p("/v1/completions")).unwrap(),
                Route::Completions
            );
            assert_eq!(
                route(&Method::GET, &p("/v1/models")).unwrap(),
                Route::Models
            );
            assert_eq!(
                route(&Method::POST, &p("/v1/messages")).unwrap(),
                Route::Messages
            );
            assert_eq!(
                route(&Method::POST, &p("/v1/messages/count_tokens")).unwrap(),
                Route::CountTokens
            );
            assert_eq!(
                route(&Method::GET, &p("/v1/models/ai/smollm2:latest")).unwrap(),
                Route::Model("ai/smollm2:latest".into())
            );
        }
    }

    #[test]
    fn responses_routes() {
        for prefix in ["", "/engines", "/engines/llama.cpp"] {
            let p = |s: &str| format!("{prefix}{s}");
            assert_eq!(
                route(&Method::POST, &p("/v1/responses")).unwrap(),
                Route::Responses(ResponsesRoute::Create)
            );
            assert_eq!(
                route(&Method::GET, &p("/v1/responses/resp_1")).unwrap(),
                Route::Responses(ResponsesRoute::Get("resp_1".into()))
            );
            assert_eq!(
                route(&Method::DELETE, &p("/v1/responses/resp_1")).unwrap(),
                Route::Responses(ResponsesRoute::Delete("resp_1".into()))
            );
            assert_eq!(
                route(&Method::GET, &p("/v1/responses/resp_1/input_items")).unwrap(),
                Route::Responses(ResponsesRoute::InputItems("resp_1".into()))
            );
        }
        assert!(matches!(
            route(&Method::POST, "/v1/responses/resp_1"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
    }

    #[test]
    fn ollama_routes() {
        assert_eq!(
            route(&Method::POST, "/api/chat").unwrap(),
            Route::Ollama(OllamaRoute::Chat)
        );
        assert_eq!(
            route(&Method::DELETE, "/api/delete").unwrap(),
            Route::Ollama(OllamaRoute::Delete)
        );
        assert_eq!(
            route(&Method::GET, "/api/tags").unwrap(),
            Route::Ollama(OllamaRoute::Tags)
        );
        assert!(matches!(
            route(&Method::POST, "/api/delete"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
    }

    #[test]
    fn anthropic_prefix() {
        assert_eq!(
            route(&Method::POST, "/anthropic/v1/messages").unwrap(),
            Route::Messages
        );
        assert_eq!(
            route(&Method::POST, "/anthropic/v1/messages/count_tokens").unwrap(),
            Route::CountTokens
        );
    }

    #[test]
    fn docker_store_routes() {
        let r = |m: Method, p: &str| route(&m, p).unwrap();
        assert_eq!(r(Method::GET, "/models"), Route::Store(StoreRoute::List));
        assert_eq!(
            r(Method::POST, "/models/create"),
            Route::Store(StoreRoute::Create)
        );
        assert_eq!(
            r(Method::GET, "/models/ai/smollm2:latest"),
            Route::Store(StoreRoute::Get("ai/smollm2:latest".into()))
        );
        assert_eq!(
            r(Method::DELETE, "/models/localhost:5000/a/b:v1"),
            Route::Store(StoreRoute::Delete("localhost:5000/a/b:v1".into()))
        );
        assert_eq!(
            r(Method::POST, "/models/ai/smollm2/tag"),
            Route::Store(StoreRoute::Tag("ai/smollm2".into()))
        );
        assert_eq!(
            r(Method::POST, "/models/ai%2Fsmollm2/push"),
            Route::Store(StoreRoute::Push("ai/smollm2".into()))
        );
        assert!(matches!(
            route(&Method::PUT, "/models/x"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            route(&Method::POST, "/models"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
    }

    #[test]
    fn non_ascii_model_names_are_refused() {
        for path in [
            "/models/ünï",
            "/models/%C3%BC",
            "/models/a%00b",
            "/models/a%20b/tag",
        ] {
            for method in [Method::GET, Method::DELETE, Method::POST] {
                let err = route(&method, path);
                assert!(
                    matches!(&err, Err(ApiError::InvalidField { param, .. }) if param == "name")
                        || method == Method::POST && !path.ends_with("/tag"),
                    "{method} {path}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn encoded_model_ids_are_decoded() {
        assert_eq!(
            route(&Method::GET, "/v1/models/ai%2Fsmollm2%3Alatest").unwrap(),
            Route::Model("ai/smollm2:latest".into())
        );
    }

    #[test]
    fn unknown_engine_lists_the_known_ones() {
        let err = route(&Method::POST, "/engines/vllm/v1/chat/completions").unwrap_err();
        assert_eq!(err.status(), http::StatusCode::NOT_FOUND);
        assert!(err.to_string().contains("vllm") && err.to_string().contains("llama.cpp"));
    }

    #[test]
    fn wrong_method_and_unknown_path() {
        let err = route(&Method::GET, "/v1/chat/completions").unwrap_err();
        assert_eq!(err.status(), http::StatusCode::METHOD_NOT_ALLOWED);
        let err = route(&Method::GET, "/v2/nothing").unwrap_err();
        assert_eq!(err.status(), http::StatusCode::NOT_FOUND);
    }

    proptest! {
        #[test]
        fn percent_decoding_never_panics(s in "\\PC{0,20}") {
            let _ = percent_decode(&s);
            let _ = route(&Method::GET, &format!("/{s}"));
        }

        #[test]
        fn encoded_ids_round_trip(id in "[a-z0-9/:._-]{1,30}") {
            let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
            prop_assert_eq!(percent_decode(&encoded), id);
        }
    }
}
