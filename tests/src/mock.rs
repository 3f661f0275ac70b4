//! A mock provider speaking the OpenAI, Anthropic and Gemini wire formats, JSON and
//! streaming, on one port: each provider under its own path prefix (`/openai`, `/anthropic`,
//! `/gemini`), which doubles as a test that the gateway keeps a base URL's path.
//!
//! It records every request it receives (so "refused requests never reach the provider" and
//! "the provider sees its own credential, never the proxy key" can be asserted) and is
//! steered per request by `x-mock-*` headers, which the gateway forwards like any other:
//! - `x-mock-status: 500` — answer with that status and a provider-shaped error body;
//! - `x-mock-delay-ms: 1000` — pause between stream events;
//! - `x-mock-events: 7` — number of content events in a stream;
//! - `x-mock-stall: 1` — send headers and the first event, then go silent;
//! - `x-mock-cut-after: 3` — in a stream, send that many chunks, then half an event, then end
//!   the response abruptly (no terminating chunk);
//! - `x-mock-headers-delay-ms: 500` — wait before sending response headers;
//! - `x-mock-usage-delay-ms: 2000` — in a stream, pause before the event with the final usage
//!   (Anthropic's `message_delta`, OpenAI's usage chunk), after every content event;
//! - `x-mock-input-tokens`, `x-mock-output-tokens` — the usage to report (`max` for output:
//!   the request's own output limit); `x-mock-cached-tokens` (cache reads, all providers),
//!   `x-mock-cache-write-tokens` (Anthropic), `x-mock-thoughts-tokens` (Gemini).
//!
//! Servers that speak one of those formats under another prefix stand for the providers an
//! operator configures (SPEC §10): `/compat` is an OpenAI-compatible server (vLLM, Groq…),
//! `/nousage` one that never reports usage (neither in a body nor in a stream, asked or not),
//! `/claude` an Anthropic-compatible one, and `/azure` Azure OpenAI
//! (`openai/deployments/{deployment}/…?api-version=` and `openai/v1/…`; the answer names the
//! deployment as its model).
//!
//! [`MockProvider::scripted`] is a provider scripted byte for byte, for answers hyper's server
//! will not write: trailers (hyper sends them only to a client that sent `TE: trailers`,
//! which the gateway strips as hop-by-hop), a content coding nobody asked for, a connection
//! closed after the request without an answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod bodies;

pub use bodies::LISTED_MODELS;
use bodies::*;

/// The bytes hyper sends when it refuses a malformed request itself.
pub const HYPER_LIKE_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Fri, 27 Nov 2026 15:19:49 GMT\r\n\r\n";

/// Token counts every mock response reports, so costs are predictable.
pub const PROMPT_TOKENS: u64 = 11;
pub const COMPLETION_TOKENS: u64 = 7;

type Body = BoxBody<Bytes, std::io::Error>;

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as received.
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Clone)]
pub struct MockProvider {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Recorded>>>,
}

impl MockProvider {
    pub async fn start() -> MockProvider {
        crate::install_crypto_provider();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(respond(request, state).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MockProvider { addr, received }
    }

    /// The base URL of one provider on this mock.
    pub fn base_url(&self, provider: &str) -> String {
        format!("http://{}/{provider}", self.addr)
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn hits(&self) -> usize {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn last(&self) -> Recorded {
        self.received().pop().expect("the mock received a request")
    }
}

impl MockProvider {
    /// A provider that answers each request with the bytes a script returns for it (the
    /// whole HTTP/1.1 response, written as they are); an empty answer closes the connection
    /// without one. Requests are read as HTTP/1.1 with a `content-length` body (what the
    /// gateway sends) and recorded like the regular mock's. For what hyper's server will not
    /// send: trailers to a client that did not ask for them, a close before any answer.
    pub async fn scripted(answer: fn(&Recorded) -> Vec<u8>) -> MockProvider {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind scripted mock");
        let addr = listener.local_addr().expect("scripted mock addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_raw(stream, answer, Arc::clone(&state)));
            }
        });
        MockProvider { addr, received }
    }
}

/// Requests on one connection, one after the other, each answered by `answer`.
async fn serve_raw(
    mut stream: tokio::net::TcpStream,
    answer: fn(&Recorded) -> Vec<u8>,
    received: Arc<Mutex<Vec<Recorded>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut start = lines.next().unwrap_or("").split(' ');
        let method = start.next().unwrap_or("").to_owned();
        let uri = start.next().unwrap_or("").to_owned();
        let mut headers = http::HeaderMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            if let Some((name, value)) = line.split_once(':')
                && let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name.trim().as_bytes()),
                    http::HeaderValue::from_str(value.trim()),
                )
            {
                headers.append(name, value);
            }
        }
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = Bytes::copy_from_slice(&buf[head_end..head_end + length]);
        buf.drain(..head_end + length);
        let recorded = Recorded {
            method,
            uri,
            headers,
            body,
        };
        received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(recorded.clone());
        let response = answer(&recorded);
        if response.is_empty() || stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// `body` as a chunked HTTP/1.1 200 with `headers`, in one chunk, ended by `trailers`
/// (`name: value` lines) or by no trailer at all when empty.
pub fn raw_chunked(headers: &str, body: &[u8], trailers: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\n{headers}transfer-encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(format!("\r\n0\r\n{trailers}\r\n").as_bytes());
    out
}

/// An OpenAI chat completion reporting [`PROMPT_TOKENS`] and [`COMPLETION_TOKENS`], as the
/// mock's JSON answer, or its SSE stream (with the usage chunk) when `stream` is set.
pub fn openai_answer(model: &str, stream: bool) -> Vec<u8> {
    let usage = Usage {
        input: PROMPT_TOKENS,
        output: COMPLETION_TOKENS,
        cached: 0,
        cache_write: 0,
        thoughts: 0,
    };
    if stream {
        let request = json!({"stream_options": {"include_usage": true}});
        openai_stream(model, &request, 3, usage)
            .concat()
            .into_bytes()
    } else {
        openai_completion(model, usage).to_string().into_bytes()
    }
}

async fn respond(
    request: http::Request<Incoming>,
    received: Arc<Mutex<Vec<Recorded>>>,
) -> http::Response<Body> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(recorded.clone());

    let control = Control::from(&recorded);
    if let Some(delay) = control.headers_delay {
        tokio::time::sleep(delay).await;
    }
    let path = parts.uri.path();
    let (prefix, rest) = path[1..].split_once('/').unwrap_or(("", ""));
    let mut control = control;
    // The configured providers' stand-ins, as the built-in format they speak.
    let (provider, rest, deployment) = match prefix {
        "compat" => ("openai", rest.to_owned(), None),
        "nousage" => {
            control.no_usage = true;
            ("openai", rest.to_owned(), None)
        }
        "claude" => ("anthropic", rest.to_owned(), None),
        "azure" => azure_path(rest),
        other => (other, rest.to_owned(), None),
    };
    let rest = rest.as_str();
    if let Some(status) = control.status {
        return error_response(provider, status);
    }
    let json_body = recorded.json();
    let model = deployment.unwrap_or_else(|| {
        json_body["model"]
            .as_str()
            .unwrap_or("unknown-model")
            .to_owned()
    });
    let streaming = json_body["stream"].as_bool().unwrap_or(false);
    match (provider, rest) {
        ("openai", "v1/models") | ("anthropic", "v1/models") => json_response(model_list()),
        // Answers shaped like the HTTP parser's own refusals: a file holding an HTTP
        // transcript, and a bare 400 (the gateway must pass both through untouched).
        ("openai", "v1/files/transcript/content") => http::Response::new(
            Full::new(Bytes::from_static(HYPER_LIKE_400))
                .map_err(|never| match never {})
                .boxed(),
        ),
        ("openai", "v1/files/bare-400/content") => {
            let mut response = http::Response::new(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *response.status_mut() = http::StatusCode::BAD_REQUEST;
            response
        }
        ("gemini", rest) if rest.ends_with("/models") => json_response(gemini_model_list()),
        ("openai", "v1/chat/completions") if streaming => {
            let mut chunks = openai_stream(&model, &json_body, control.events, control.usage);
            if control.no_usage {
                chunks.retain(|chunk| !chunk.contains("\"usage\""));
            }
            stream_response(chunks, &control)
        }
        ("openai", "v1/chat/completions") => {
            let mut completion = openai_completion(&model, control.usage);
            if control.no_usage
                && let Some(fields) = completion.as_object_mut()
            {
                fields.remove("usage");
            }
            json_response(completion)
        }
        ("openai", "v1/embeddings") => json_response(json!({
            "object": "list", "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "usage": {"prompt_tokens": control.usage.input, "total_tokens": control.usage.input}
        })),
        ("anthropic", "v1/messages") if streaming => stream_response(
            anthropic_stream(&model, control.events, control.usage),
            &control,
        ),
        ("anthropic", "v1/messages") => json_response(anthropic_message(&model, control.usage)),
        ("gemini", rest) if rest.contains(":streamGenerateContent") => {
            let sse = parts
                .uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
            let model = gemini_model(rest);
            stream_response(
                gemini_stream(&model, control.events, sse, control.usage),
                &control,
            )
        }
        ("gemini", rest) if rest.contains(":generateContent") => {
            json_response(gemini_response(&gemini_model(rest), 1, true, control.usage))
        }
        ("gemini", rest) if rest.starts_with("upload/") && rest.ends_with("/files") => {
            gemini_upload(&recorded, path)
        }
        _ => {
            let mut response =
                json_response(json!({"error": {"message": format!("mock: no route {path}")}}));
            *response.status_mut() = http::StatusCode::NOT_FOUND;
            response
        }
    }
}

/// Azure OpenAI's paths as the OpenAI ones they stand for: `openai/deployments/{d}/chat/…`
/// (the deployment is the model the answer names) and `openai/v1/…`; `openai/models` lists.
fn azure_path(rest: &str) -> (&'static str, String, Option<String>) {
    if let Some(after) = rest.strip_prefix("openai/deployments/")
        && let Some((deployment, tail)) = after.split_once('/')
    {
        return ("openai", format!("v1/{tail}"), Some(deployment.to_owned()));
    }
    if rest == "openai/models" {
        return ("openai", "v1/models".to_owned(), None);
    }
    match rest.strip_prefix("openai/") {
        Some(v1) => ("openai", v1.to_owned(), None),
        None => ("azure", rest.to_owned(), None),
    }
}

/// Per-request steering from `x-mock-*` headers.
struct Control {
    status: Option<u16>,
    delay: Duration,
    events: usize,
    stall: bool,
    /// Send this many chunks, then half an event, then end the stream abruptly.
    cut_after: Option<usize>,
    headers_delay: Option<Duration>,
    usage_delay: Option<Duration>,
    usage: Usage,
    /// Report no usage at all (the `/nousage` server).
    no_usage: bool,
}

/// The token counts a mock response reports.
#[derive(Clone, Copy)]
struct Usage {
    input: u64,
    output: u64,
    cached: u64,
    cache_write: u64,
    thoughts: u64,
}

impl Control {
    fn from(recorded: &Recorded) -> Control {
        let number = |name: &str| recorded.header(name).and_then(|v| v.parse::<u64>().ok());
        Control {
            no_usage: false,
            status: number("x-mock-status").and_then(|s| u16::try_from(s).ok()),
            delay: Duration::from_millis(number("x-mock-delay-ms").unwrap_or(0)),
            events: number("x-mock-events").map_or(3, |n| n as usize),
            stall: recorded.header("x-mock-stall").is_some(),
            cut_after: number("x-mock-cut-after").map(|n| n as usize),
            headers_delay: number("x-mock-headers-delay-ms").map(Duration::from_millis),
            usage_delay: number("x-mock-usage-delay-ms").map(Duration::from_millis),
            usage: Usage {
                input: number("x-mock-input-tokens").unwrap_or(PROMPT_TOKENS),
                output: match recorded.header("x-mock-output-tokens") {
                    Some("max") => requested_output(&recorded.json()).unwrap_or(COMPLETION_TOKENS),
                    _ => number("x-mock-output-tokens").unwrap_or(COMPLETION_TOKENS),
                },
                cached: number("x-mock-cached-tokens").unwrap_or(0),
                cache_write: number("x-mock-cache-write-tokens").unwrap_or(0),
                thoughts: number("x-mock-thoughts-tokens").unwrap_or(0),
            },
        }
    }
}

/// The output limit a request set, in any provider's field.
fn requested_output(body: &Value) -> Option<u64> {
    body["max_completion_tokens"]
        .as_u64()
        .or(body["max_tokens"].as_u64())
        .or(body["generationConfig"]["maxOutputTokens"].as_u64())
}

fn json_response(value: Value) -> http::Response<Body> {
    let mut response = http::Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    );
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        "x-ratelimit-limit-requests",
        http::HeaderValue::from_static("10000"),
    );
    response
}

fn error_response(provider: &str, status: u16) -> http::Response<Body> {
    let body = match provider {
        "anthropic" => {
            json!({"type": "error", "error": {"type": "api_error", "message": "mock provider failure"}})
        }
        "gemini" => {
            json!({"error": {"code": status, "message": "mock provider failure", "status": "INTERNAL"}})
        }
        _ => {
            json!({"error": {"message": "mock provider failure", "type": "server_error", "param": null, "code": null}})
        }
    };
    let mut response = json_response(body);
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert("x-mock-error", http::HeaderValue::from_static("1"));
    response
}

/// Streams `chunks` with `control.delay` between them, or stalls after the first.
fn stream_response(chunks: Vec<String>, control: &Control) -> http::Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    let delay = control.delay;
    let stall = control.stall;
    let cut_after = control.cut_after;
    let usage_delay = control.usage_delay;
    let sse = chunks.first().is_some_and(|c| !c.starts_with('['));
    tokio::spawn(async move {
        for (i, chunk) in chunks.into_iter().enumerate() {
            if cut_after == Some(i) {
                let half = Bytes::from_static(b"data: {\"choices\": [{\"delta\": {\"con");
                let _ = tx.send(Ok(Frame::data(half))).await;
                let _ = tx
                    .send(Err(std::io::Error::other("mock: stream cut")))
                    .await;
                return;
            }
            if let Some(pause) = usage_delay.filter(|_| is_final_usage(&chunk)) {
                tokio::time::sleep(pause).await;
            }
            if i > 0 {
                if stall {
                    // Hold the connection open, silent, until the client gives up.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream_from(rx));
    let mut response = http::Response::new(BodyExt::boxed(body));
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    response
        .headers_mut()
        .insert("content-type", http::HeaderValue::from_static(content_type));
    response
}

/// Whether a stream chunk is the one carrying the final usage (`x-mock-usage-delay-ms`).
fn is_final_usage(chunk: &str) -> bool {
    chunk.starts_with("event: message_delta") || chunk.contains("\"choices\":[],")
}

/// A `Stream` over an mpsc receiver, without pulling in tokio-stream.
fn tokio_stream_from<T>(rx: mpsc::Receiver<T>) -> impl futures_core_stream::Stream<Item = T> {
    futures_core_stream::ReceiverStream(rx)
}

/// A `Stream` over an iterator, for request bodies in tests.
pub struct IterStream<I>(pub I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

mod futures_core_stream {
    //! The minimal `Stream` adapter `StreamBody` needs.
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub use futures_core::Stream;

    pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);

    impl<T> Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
