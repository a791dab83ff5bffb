//! `POST /engines/unload`, Docker Model Runner's shape: `{"models":[…]}` or
//! `{"all":true}` (`backend` is accepted and ignored: Herd has one).
//! Unloads every replica of those models that nothing runs on or waits
//! for; busy ones are left loaded and listed as skipped.

use http::StatusCode;
use pingora::protocols::http::ServerSession;
use serde_json::{Value, json};

use super::respond;
use crate::dispatch::Dispatcher;
use crate::error::ApiError;
use crate::openai::fields::Fields;
use crate::scheduler::{ModelKey, UnloadReport};

pub async fn serve(dispatcher: &Dispatcher, session: &mut ServerSession, body: &[u8]) -> bool {
    match unload(dispatcher, body) {
        Ok(report) => {
            let entry = |o: &crate::scheduler::core::UnloadOrder| json!({ "model": o.name, "worker": &*o.worker });
            let body = json!({
                "unloaded_runners": report.unloaded.len(),
                "unloaded": report.unloaded.iter().map(entry).collect::<Vec<_>>(),
                "skipped": report.skipped_busy.iter().map(|o| {
                    let mut e = entry(o);
                    e["reason"] = json!("busy");
                    e
                }).collect::<Vec<_>>(),
            });
            respond::json(
                session,
                StatusCode::OK,
                serde_json::to_vec(&body).unwrap_or_default(),
            )
            .await
        }
        Err(err) => respond::error(session, &err).await,
    }
}

fn unload(dispatcher: &Dispatcher, body: &[u8]) -> Result<UnloadReport, ApiError> {
    let fields = if body.is_empty() {
        Fields::parse(b"{}")?
    } else {
        Fields::parse(body)?
    };
    let all = fields.bool("all")?.unwrap_or(false);
    let names = match fields.get("models") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::field("models", "`models` must hold model names"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::field(
                "models",
                "`models` must be an array of model names",
            ));
        }
    };
    let scheduler = dispatcher.scheduler();
    if all {
        return Ok(scheduler.unload_now(None));
    }
    if names.is_empty() {
        return Err(ApiError::field(
            "models",
            "name the models to unload in `models`, or set `all` to true",
        ));
    }
    let keys: Vec<ModelKey> = names
        .iter()
        .map(|name| scheduler.resolve(name).map(|r| r.key))
        .collect::<Result<_, _>>()?;
    Ok(scheduler.unload_now(Some(&keys)))
}
