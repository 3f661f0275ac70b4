//! The mock's answer bodies in each provider's shape: completions, streams, model lists, and
//! Gemini's resumable upload.

use super::*;

/// What `GET /v1/models` answers for OpenAI and Anthropic (both use `data[].id`).
pub const LISTED_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "o3-mini",
    "claude-sonnet-4-5",
    "claude-3-5-haiku-latest",
];

pub(super) fn model_list() -> Value {
    let data: Vec<Value> = LISTED_MODELS
        .iter()
        .map(|id| {
            json!({"id": id, "object": "model", "type": "model", "created": 1_700_000_000,
                   "owned_by": "mock", "display_name": id, "created_at": "2025-01-01T00:00:00Z"})
        })
        .collect();
    json!({"object": "list", "data": data, "has_more": false, "first_id": LISTED_MODELS[0], "last_id": LISTED_MODELS[4]})
}

/// Gemini's resumable upload, as the google-genai SDKs use it: `start` answers with the URL
/// to send the bytes to (on the host the request was addressed to, like Google's own), the
/// bytes sent there with `upload, finalize` answer with the file.
pub(super) fn gemini_upload(request: &Recorded, path: &str) -> http::Response<Body> {
    let command = request.header("x-goog-upload-command").unwrap_or("");
    let mut response = if command == "start" {
        let host = request.header("host").unwrap_or("mock");
        let mut response = http::Response::new(
            Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed(),
        );
        response.headers_mut().insert(
            "x-goog-upload-url",
            http::HeaderValue::from_str(&format!(
                "http://{host}{path}?upload_id=mock-upload-1&upload_protocol=resumable"
            ))
            .expect("a header value"),
        );
        response.headers_mut().insert(
            "x-goog-upload-status",
            http::HeaderValue::from_static("active"),
        );
        response
    } else if command.contains("finalize") && request.uri.contains("upload_id=mock-upload-1") {
        let mut response = json_response(json!({"file": {
            "name": "files/mock-upload-1",
            "mimeType": request.header("content-type").unwrap_or("application/octet-stream"),
            "sizeBytes": request.body.len().to_string(),
            "uri": "https://generativelanguage.googleapis.com/v1beta/files/mock-upload-1",
            "state": "ACTIVE"
        }}));
        response.headers_mut().insert(
            "x-goog-upload-status",
            http::HeaderValue::from_static("final"),
        );
        response
    } else {
        let mut response = json_response(json!({"error": {"message": "mock: bad upload"}}));
        *response.status_mut() = http::StatusCode::BAD_REQUEST;
        return response;
    };
    *response.status_mut() = http::StatusCode::OK;
    response
}

pub(super) fn gemini_model_list() -> Value {
    let models: Vec<Value> = ["gemini-2.0-flash", "gemini-2.5-pro"]
        .iter()
        .map(|m| json!({"name": format!("models/{m}"), "displayName": m}))
        .collect();
    json!({ "models": models })
}

pub(super) fn openai_usage(usage: Usage) -> Value {
    json!({"prompt_tokens": usage.input, "completion_tokens": usage.output, "total_tokens": usage.input + usage.output,
           "prompt_tokens_details": {"cached_tokens": usage.cached}})
}

pub(super) fn openai_completion(model: &str, usage: Usage) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock."}, "finish_reason": "stop", "logprobs": null}],
        "usage": openai_usage(usage)
    })
}

pub(super) fn openai_stream(
    model: &str,
    request: &Value,
    events: usize,
    usage: Usage,
) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]})
    };
    let mut out = vec![format!(
        "data: {}\n\n",
        chunk(json!({"role": "assistant", "content": ""}), Value::Null)
    )];
    for i in 0..events {
        out.push(format!(
            "data: {}\n\n",
            chunk(json!({"content": format!("part{i} ")}), Value::Null)
        ));
    }
    out.push(format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
    if request["stream_options"]["include_usage"].as_bool() == Some(true) {
        let usage = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [],
            "usage": openai_usage(usage)});
        out.push(format!("data: {usage}\n\n"));
    }
    out.push("data: [DONE]\n\n".to_owned());
    out
}

pub(super) fn anthropic_message(model: &str, usage: Usage) -> Value {
    json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Hello from the mock."}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": usage.input, "output_tokens": usage.output, "cache_read_input_tokens": usage.cached, "cache_creation_input_tokens": usage.cache_write}
    })
}

pub(super) fn anthropic_stream(model: &str, events: usize, usage: Usage) -> Vec<String> {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": usage.input, "output_tokens": 1, "cache_read_input_tokens": usage.cached, "cache_creation_input_tokens": usage.cache_write}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for i in 0..events {
        out.push(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": format!("part{i} ")}})));
    }
    out.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push(event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": usage.output}})));
    out.push(event("message_stop", json!({"type": "message_stop"})));
    out
}

pub(super) fn gemini_model(rest: &str) -> String {
    rest.split('/')
        .nth(2)
        .and_then(|m| m.split(':').next())
        .unwrap_or("unknown")
        .to_owned()
}

pub(super) fn gemini_response(model: &str, part: usize, last: bool, usage: Usage) -> Value {
    let mut candidate = json!({"content": {"role": "model", "parts": [{"text": format!("part{part} ")}]}, "index": 0});
    if last {
        candidate["finishReason"] = json!("STOP");
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": usage.input, "cachedContentTokenCount": usage.cached,
            "candidatesTokenCount": if last { usage.output } else { (part as u64 + 1).min(usage.output) },
            "thoughtsTokenCount": usage.thoughts, "totalTokenCount": usage.input + usage.output + usage.thoughts},
        "modelVersion": model
    })
}

pub(super) fn gemini_stream(model: &str, events: usize, sse: bool, usage: Usage) -> Vec<String> {
    let events = events.max(1);
    let responses: Vec<Value> = (0..events)
        .map(|i| gemini_response(model, i, i + 1 == events, usage))
        .collect();
    if sse {
        return responses
            .iter()
            .map(|r| format!("data: {r}\r\n\r\n"))
            .collect();
    }
    // Without alt=sse Gemini streams one JSON array, element by element.
    let mut out = Vec::new();
    for (i, response) in responses.iter().enumerate() {
        let lead = if i == 0 { "[" } else { ",\r\n" };
        out.push(format!("{lead}{response}"));
    }
    out.push("]".to_owned());
    out
}
