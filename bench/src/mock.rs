//! The fast mock provider: an OpenAI-shaped chat completions endpoint that answers at once.
//!
//! The benchmark measures what a proxy adds, so the provider must cost as little as possible
//! and always the same: responses are prebuilt `Bytes` (cloning them is a reference count),
//! nothing is parsed but two substring checks on the request body. It runs in its own
//! process (`gateway-bench mock`), so its CPU is never charged to a proxy.
//!
//! - JSON (no `"stream":true`): one body with `content-length` and a `usage` object.
//! - SSE (`"stream":true`): 7 `data:` chunk events, a usage chunk when the request asked for it
//!   with `stream_options.include_usage` (gatewayd injects that and strips the extra chunk),
//!   then `data: [DONE]`. All events are ready at once, as from a fast provider, so hyper
//!   writes them back to back; with the header `x-mock-split: 1` the body yields between
//!   events, so each event leaves in a write (and usually a TCP segment) of its own.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Events in a streamed answer, not counting the usage chunk and `[DONE]`.
pub const SSE_EVENTS: usize = 7;
/// Header that asks for one write per event.
pub const SPLIT_HEADER: &str = "x-mock-split";

/// Prebuilt answers.
struct Answers {
    json: Bytes,
    events: Vec<Bytes>,
    usage_event: Bytes,
    done: Bytes,
}

impl Answers {
    fn new() -> Answers {
        let json = serde_json::json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "bench-model",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there, how are you today?"},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
        });
        let events = (0..SSE_EVENTS)
            .map(|i| {
                let delta = if i == 0 {
                    serde_json::json!({"role": "assistant", "content": ""})
                } else {
                    serde_json::json!({"content": format!("word{i} ")})
                };
                let finish = if i + 1 == SSE_EVENTS {
                    serde_json::json!("stop")
                } else {
                    serde_json::Value::Null
                };
                let chunk = serde_json::json!({
                    "id": "chatcmpl-bench",
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": "bench-model",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                });
                Bytes::from(format!("data: {chunk}\n\n"))
            })
            .collect();
        let usage = serde_json::json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "bench-model",
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
        });
        Answers {
            json: Bytes::from(json.to_string()),
            events,
            usage_event: Bytes::from(format!("data: {usage}\n\n")),
            done: Bytes::from_static(b"data: [DONE]\n\n"),
        }
    }
}

/// Runs the mock until the process is killed, printing `mock listening ADDR` when ready.
pub fn serve(workers: usize) -> anyhow::Result<()> {
    let runtime = crate::runtime(workers)?;
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        announce("mock", addr)?;
        let answers = Arc::new(Answers::new());
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let answers = Arc::clone(&answers);
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let answers = Arc::clone(&answers);
                    async move { Ok::<_, Infallible>(answer(&answers, request).await) }
                });
                // Errors are clients going away at the end of a cell.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Prints the ready line the parent waits for.
pub fn announce(what: &str, addr: SocketAddr) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{what} listening {addr}")?;
    out.flush().context("flushing stdout")
}

async fn answer(answers: &Answers, request: http::Request<Incoming>) -> http::Response<MockBody> {
    let split = request.headers().contains_key(SPLIT_HEADER);
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let stream = contains(&body, b"\"stream\":true");
    let mut response = http::Response::builder().status(200);
    if !stream {
        let body = MockBody::Full(Full::new(answers.json.clone()));
        response = response.header("content-type", "application/json");
        return response
            .body(body)
            .unwrap_or_else(|_| http::Response::new(MockBody::Full(Full::default())));
    }
    let mut frames: Vec<Bytes> = answers.events.clone();
    if contains(&body, b"\"include_usage\":true") {
        frames.push(answers.usage_event.clone());
    }
    frames.push(answers.done.clone());
    frames.reverse();
    let body = MockBody::Events(Events {
        frames,
        split,
        yielded: false,
    });
    response
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_else(|_| http::Response::new(MockBody::Full(Full::default())))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A JSON answer or an event stream.
enum MockBody {
    Full(Full<Bytes>),
    Events(Events),
}

/// Events, last first (popped from the end).
struct Events {
    frames: Vec<Bytes>,
    /// Return `Pending` (waking at once) between events, so hyper flushes each on its own.
    split: bool,
    yielded: bool,
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(full) => Pin::new(full).poll_frame(cx),
            MockBody::Events(events) => {
                if events.split && !events.yielded && !events.frames.is_empty() {
                    events.yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                events.yielded = false;
                Poll::Ready(events.frames.pop().map(|data| Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(full) => full.is_end_stream(),
            MockBody::Events(events) => events.frames.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(full) => full.size_hint(),
            MockBody::Events(_) => SizeHint::default(),
        }
    }
}
