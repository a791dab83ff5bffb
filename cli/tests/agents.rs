//! The shapes agent frameworks send (openai-agents, pydantic-ai, instructor,
//! langchain, the openai SDK's `parse()`), end to end on SmolLM2: pydantic
//! schemas with `$defs`/`$ref` as tool parameters and as `response_format`,
//! alone and together, streamed and not; calls cut by `max_tokens`;
//! `parallel_tool_calls`; typed errors; `x-request-id`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::schema::check;
use common::{Herd, MODEL, assert_error};
use serde_json::{Value, json};

/// What a chat reply said, streamed or not.
#[derive(Debug)]
struct Reply {
    content: String,
    calls: Vec<(String, Value)>,
    finish: String,
}

async fn ask(herd: &Herd, body: &Value, stream: bool) -> Reply {
    let mut body = body.clone();
    if !stream {
        let (status, out) = herd.post("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{out}");
        let choice = &out["choices"][0];
        return Reply {
            content: choice["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            calls: calls_of(&choice["message"]["tool_calls"]),
            finish: choice["finish_reason"].as_str().unwrap().to_owned(),
        };
    }
    body["stream"] = json!(true);
    let events = herd.stream("/v1/chat/completions", &body).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut reply = Reply {
        content: String::new(),
        calls: Vec::new(),
        finish: String::new(),
    };
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        let choice = &chunk["choices"][0];
        if let Some(text) = choice["delta"]["content"].as_str() {
            reply.content.push_str(text);
        }
        if choice["delta"].get("tool_calls").is_some() {
            let calls = &choice["delta"]["tool_calls"];
            for (i, call) in calls.as_array().unwrap().iter().enumerate() {
                assert_eq!(call["index"], i, "{chunk}");
            }
            reply.calls.extend(calls_of(calls));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            reply.finish = f.to_owned();
        }
    }
    reply
}

fn calls_of(calls: &Value) -> Vec<(String, Value)> {
    calls
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    assert!(c["id"].as_str().unwrap().starts_with("call_"), "{c}");
                    assert_eq!(c["type"], "function");
                    let args = c["function"]["arguments"].as_str().unwrap();
                    (
                        c["function"]["name"].as_str().unwrap().to_owned(),
                        serde_json::from_str(args).expect("arguments are JSON"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The reproduction: a tool whose parameters use `$defs`.
fn save_person() -> Value {
    json!({"type": "function", "function": {"name": "save", "parameters": {
        "$defs": {"P": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}}, "required": ["name"]}},
        "type": "object", "properties": {"p": {"$ref": "#/$defs/P"}}, "required": ["p"]}}})
}

/// `Order.model_json_schema()` for pydantic models with a nested model, a
/// list of models, an Enum and optional fields (bounded with
/// `Field(max_length=…)` so every reply fits its budget).
fn order_schema() -> Value {
    json!({
        "$defs": {
            "Item": {"properties": {
                    "sku": {"maxLength": 12, "title": "Sku", "type": "string"},
                    "qty": {"maximum": 99, "minimum": 1, "title": "Qty", "type": "integer"}},
                "required": ["sku", "qty"], "title": "Item", "type": "object"},
            "Size": {"enum": ["small", "large"], "title": "Size", "type": "string"},
            "Address": {"properties": {
                    "city": {"maxLength": 20, "title": "City", "type": "string"},
                    "zip": {"anyOf": [{"maxLength": 8, "type": "string"}, {"type": "null"}], "default": null, "title": "Zip"}},
                "required": ["city"], "title": "Address", "type": "object"},
        },
        "properties": {
            "items": {"items": {"$ref": "#/$defs/Item"}, "maxItems": 2, "minItems": 1, "title": "Items", "type": "array"},
            "size": {"$ref": "#/$defs/Size"},
            "ship_to": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}], "default": null},
            "gift": {"anyOf": [{"type": "boolean"}, {"type": "null"}], "default": null, "title": "Gift"},
        },
        "required": ["items", "size"],
        "title": "Order",
        "type": "object",
    })
}

fn place_order() -> Value {
    json!({"type": "function", "function": {
        "name": "place_order", "description": "Place a pizza order",
        "parameters": order_schema()}})
}

fn order_format() -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "Order", "strict": true, "schema": order_schema()}})
}

fn request(content: &str, max_tokens: u32) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "seed": 7,
        "max_tokens": max_tokens,
    })
}

/// A finished reply either calls tools whose arguments match their
/// schemas, or answers: in `answer`'s schema when given.
fn assert_valid(reply: &Reply, tools: &[(&str, Value)], answer: Option<&Value>) {
    assert_ne!(reply.finish, "length", "the reply must fit: {reply:?}");
    if reply.calls.is_empty() {
        assert_eq!(reply.finish, "stop", "{reply:?}");
        if let Some(schema) = answer {
            let value: Value = serde_json::from_str(&reply.content)
                .unwrap_or_else(|e| panic!("content is not JSON ({e}): {reply:?}"));
            check(schema, &value).unwrap_or_else(|e| panic!("{e}: {reply:?}"));
        }
        return;
    }
    assert_eq!(reply.finish, "tool_calls", "{reply:?}");
    assert!(reply.content.is_empty(), "{reply:?}");
    for (name, args) in &reply.calls {
        let (_, schema) = tools
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("unknown tool {name}"));
        check(schema, args).unwrap_or_else(|e| panic!("{name}: {e}: {reply:?}"));
    }
}

#[tokio::test]
async fn ref_schemas_work_as_tool_parameters_and_response_format_alone_and_together() {
    let herd = Herd::start(2).await;
    let person = save_person()["function"]["parameters"].clone();

    // The reproduction: refused with "ffi error -3" before.
    let mut body = request("Bob is 4", 60);
    body["tool_choice"] = json!("required");
    body["tools"] = json!([save_person()]);
    for stream in [false, true] {
        let reply = ask(&herd, &body, stream).await;
        assert!(!reply.calls.is_empty(), "{reply:?}");
        assert_valid(&reply, &[("save", person.clone())], None);
    }

    let order = order_schema();
    let tools = [("place_order", order.clone()), ("save", person.clone())];
    let question = "Order two large pizzas margherita to Rome.";
    let named = json!({"type": "function", "function": {"name": "place_order"}});
    let cases: [(&str, Option<Value>, Option<Value>); 5] = [
        ("tools", Some(named.clone()), None),
        ("response_format", None, Some(order_format())),
        ("both, auto", Some(json!("auto")), Some(order_format())),
        (
            "both, required",
            Some(json!("required")),
            Some(order_format()),
        ),
        ("both, named", Some(named.clone()), Some(order_format())),
    ];
    for (case, tool_choice, format) in cases {
        let mut body = request(question, 300);
        if let Some(choice) = &tool_choice {
            body["tools"] = json!([place_order(), save_person()]);
            body["tool_choice"] = choice.clone();
        }
        if let Some(format) = &format {
            body["response_format"] = format.clone();
        }
        let mut replies = Vec::new();
        for stream in [false, true] {
            let reply = ask(&herd, &body, stream).await;
            println!("{case} (stream {stream}): {reply:?}");
            assert_valid(&reply, &tools, format.as_ref().map(|_| &order));
            if tool_choice.as_ref() != Some(&json!("auto")) {
                assert_eq!(
                    reply.calls.is_empty(),
                    tool_choice.is_none(),
                    "{case}: {reply:?}"
                );
            }
            if tool_choice.as_ref() == Some(&named) {
                assert_eq!(reply.calls[0].0, "place_order", "{case}: {reply:?}");
            }
            replies.push((reply.content, reply.calls));
        }
        assert_eq!(replies[0], replies[1], "{case}: streamed and not agree");
    }

    // A recursive model (pydantic `children: list["Node"]`) resolves too.
    let tree = json!({
        "$defs": {"Node": {"properties": {"name": {"maxLength": 10, "type": "string"},
            "children": {"items": {"$ref": "#/$defs/Node"}, "maxItems": 2, "type": "array"}},
            "required": ["name"], "type": "object"}},
        "allOf": [{"$ref": "#/$defs/Node"}],
    });
    let mut body = request("A family tree: Ann has a son Bo.", 200);
    body["tools"] = json!([{"type": "function", "function": {"name": "tree", "parameters": tree}}]);
    body["tool_choice"] = json!("required");
    let reply = ask(&herd, &body, false).await;
    assert!(
        reply.calls.len() == 1 || reply.finish == "length",
        "{reply:?}"
    );
    if reply.finish != "length" {
        assert_valid(&reply, &[("tree", tree)], None);
    }
}

#[tokio::test]
async fn a_call_cut_by_max_tokens_never_leaks_the_wrapper() {
    let herd = Herd::start(2).await;
    let weather = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}});
    let mut body = request("Weather in Paris?", 6);
    body["tools"] = json!([weather]);
    body["tool_choice"] = json!("required");
    for stream in [false, true] {
        let reply = ask(&herd, &body, stream).await;
        assert_eq!(reply.finish, "length", "{reply:?}");
        assert!(
            reply.content.is_empty() && reply.calls.is_empty(),
            "{reply:?}"
        );
    }
    // With `auto`, a cut answer keeps its text, never the wrapper.
    body["tool_choice"] = json!("auto");
    for max_tokens in [1, 3, 6, 12] {
        body["max_tokens"] = json!(max_tokens);
        for stream in [false, true] {
            let reply = ask(&herd, &body, stream).await;
            assert!(
                !reply.content.contains("tool_call") && !reply.content.contains("\"response\""),
                "{reply:?}"
            );
        }
    }
    // Compact JSON: the whole call fits a small budget.
    body["tool_choice"] = json!("required");
    body["max_tokens"] = json!(24);
    let reply = ask(&herd, &body, false).await;
    assert_eq!(reply.finish, "tool_calls", "{reply:?}");
    assert_eq!(reply.calls[0].0, "get_weather");
}

#[tokio::test]
async fn parallel_tool_calls_false_allows_one_call_and_bad_values_are_refused() {
    let herd = Herd::start(2).await;
    let weather = json!({"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}});
    let mut body = request(
        "Call get_weather for Paris, then for Lima, then for Oslo, all at once.",
        120,
    );
    body["tools"] = json!([weather]);
    body["tool_choice"] = json!("required");
    let schema = weather["function"]["parameters"].clone();
    let reply = ask(&herd, &body, false).await;
    assert!(!reply.calls.is_empty(), "{reply:?}");
    assert_valid(&reply, &[("get_weather", schema.clone())], None);
    println!("parallel allowed: {} calls", reply.calls.len());
    body["parallel_tool_calls"] = json!(false);
    for stream in [false, true] {
        let reply = ask(&herd, &body, stream).await;
        assert_eq!(reply.calls.len(), 1, "{reply:?}");
        assert_valid(&reply, &[("get_weather", schema.clone())], None);
    }
    body["parallel_tool_calls"] = json!("no");
    let (status, out) = herd.post("/v1/chat/completions", &body).await;
    let err = assert_error(status, &out, 400);
    assert_eq!(err["param"], "parallel_tool_calls", "{out}");
}

#[tokio::test]
async fn engine_errors_keep_their_class_param_and_code() {
    let herd = Herd::start(1).await;
    // Token ids are the model's own: OpenAI's tokenizer ids may be outside.
    let (status, out) = herd
        .post(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": [[100000]]}),
        )
        .await;
    let err = assert_error(status, &out, 400);
    assert_eq!(
        (&err["param"], &err["code"]),
        (&json!("input"), &json!("invalid_token")),
        "{out}"
    );

    let mut body = request("x", 5);
    body["tools"] = json!([
        {"type": "function", "function": {"name": "ok", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "bad", "parameters": {"$ref": "#/$defs/Missing"}}},
    ]);
    let (status, out) = herd.post("/v1/chat/completions", &body).await;
    let err = assert_error(status, &out, 400);
    assert_eq!(err["param"], "tools[1].function.parameters", "{out}");
    assert_eq!(err["code"], "invalid_schema", "{out}");
    assert!(
        !err["message"].as_str().unwrap().contains("ffi error"),
        "{out}"
    );

    let mut body = request("x", 5);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "https://example.com/s.json"}}});
    let (status, out) = herd.post("/v1/chat/completions", &body).await;
    let err = assert_error(status, &out, 400);
    assert_eq!(
        (&err["param"], &err["code"]),
        (&json!("response_format"), &json!("invalid_schema")),
        "{out}"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let herd = Herd::start(1).await;
    let id_of = |resp: &reqwest::Response| {
        resp.headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let mut ids = Vec::new();
    for (method, path, body) in [
        ("GET", "/v1/models", None),
        ("GET", "/nowhere", None),
        ("GET", "/models", None),
        ("POST", "/v1/chat/completions", Some(request("Hi", 2))),
        (
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": MODEL})),
        ),
        (
            "POST",
            "/v1/chat/completions",
            Some({
                let mut b = request("Hi", 2);
                b["stream"] = json!(true);
                b
            }),
        ),
    ] {
        let url = format!("{}{path}", herd.url);
        let req = match body {
            Some(b) => herd.http.post(url).json(&b),
            None => herd.http.request(method.parse().unwrap(), url),
        };
        let resp = req.send().await.unwrap();
        let id = id_of(&resp).unwrap_or_else(|| panic!("no x-request-id on {method} {path}"));
        assert!(id.starts_with("req_") && id.len() > 20, "{id}");
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every request gets its own id");

    // A client's own id is kept; an unusable one is replaced.
    let resp = herd
        .http
        .post(format!("{}/v1/chat/completions", herd.url))
        .header("x-request-id", "trace-42")
        .json(&request("Hi", 2))
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&resp).as_deref(), Some("trace-42"));
    let resp = herd
        .http
        .get(format!("{}/v1/models", herd.url))
        .header("x-request-id", "x".repeat(500))
        .send()
        .await
        .unwrap();
    assert!(id_of(&resp).unwrap().starts_with("req_"));
}
