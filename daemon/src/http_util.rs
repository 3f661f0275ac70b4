//! Small HTTP plumbing shared by both listeners: the response body type, JSON responses and
//! a body read bounded in size and in how long it may stall.

use bytes::Bytes;
use gateway_shared::ErrorCode;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;

use crate::error::GatewayError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResponseBody = BoxBody<Bytes, BoxError>;
pub type Response = http::Response<ResponseBody>;

pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn json_response(status: u16, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(full(body));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serialises `value` as the JSON body of a response with `status`.
pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_response(status, bytes),
        Err(err) => GatewayError::internal(err).into_response(crate::error::Plane::Management),
    }
}

/// [`read_limited`] for a whole request.
pub async fn read_body(
    request: http::Request<Incoming>,
    limit: usize,
    gap: Duration,
) -> Result<Bytes, GatewayError> {
    let (parts, body) = request.into_parts();
    read_limited(&parts.headers, body, limit, gap).await
}

/// Reads a whole request body of at most `limit` bytes (413 `body_too_large` beyond it,
/// decided from `Content-Length` before reading when the client sent one), waiting at most
/// `gap` for each piece: 408 `request_timeout` and `Connection: close` when the body stalls.
/// A gap, not a total deadline: the attack is a body that stops arriving (each stalled
/// connection held open counts against `max_connections`), while a slow but steady upload of
/// a large allowed body must still get through.
///
/// The timer is only polled when the body is not ready, so a body that came with the headers
/// arms none, and it is moved only when it fires before the latest deadline (as in
/// `proxy::idle_timeout`).
pub async fn read_limited<B>(
    headers: &HeaderMap,
    mut body: B,
    limit: usize,
    gap: Duration,
) -> Result<Bytes, GatewayError>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = || {
        GatewayError::new(
            ErrorCode::BodyTooLarge,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let timer = tokio::time::sleep(gap);
    tokio::pin!(timer);
    let mut last_piece = tokio::time::Instant::now();
    let mut len = 0usize;
    // A body that arrives in one frame (most) is returned as that frame, with no copy.
    let mut whole: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            () = &mut timer => {
                let due = last_piece + gap;
                if due <= tokio::time::Instant::now() {
                    return Err(body_stalled(gap));
                }
                // Fired for an older deadline: wait out the rest of this one.
                timer.as_mut().reset(due);
                continue;
            }
        };
        let Some(frame) = frame else { break };
        last_piece = tokio::time::Instant::now();
        let frame = frame.map_err(|err| {
            GatewayError::new(
                ErrorCode::InvalidRequest,
                format!("The request body could not be read: {err}."),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(too_large());
        }
        match (&whole, &mut joined) {
            (None, _) => whole = Some(data),
            (Some(_), Some(joined)) => joined.extend_from_slice(&data),
            (Some(first), None) => {
                let mut both = bytes::BytesMut::with_capacity(first.len() + data.len());
                both.extend_from_slice(first);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Ok(match joined {
        Some(joined) => joined.freeze(),
        None => whole.unwrap_or_default(),
    })
}

/// How long a refused request's unread body may keep arriving before the connection is
/// closed anyway ([`discard_unread`]; never longer than the listener's header-read timeout,
/// the time a connection may already be held without a request), and the longest pause
/// within it.
pub const LINGER_TOTAL: Duration = Duration::from_secs(30);
const LINGER_GAP: Duration = Duration::from_secs(5);

/// Reads and drops what is left of a refused request's body, then lets the connection close.
///
/// Why: closing a socket with request bytes still unread makes the kernel answer with a reset,
/// and a client still sending (a large prompt with a revoked or rate-limited key) meets a
/// broken pipe and reports a connection error instead of our 401/429 — the official Node SDK
/// does exactly that. Reading the rest first (as nginx's lingering close does) lets the
/// client finish sending and read the answer. Bounded: at most `limit` bytes, a pause of
/// [`LINGER_GAP`] and `total` in all; beyond that the close is a reset as before. Run as a
/// task of its own after the answer is handed to hyper, which keeps reading the connection
/// for as long as the body is wanted.
pub async fn discard_unread<B>(mut body: B, limit: usize, total: Duration)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let deadline = tokio::time::Instant::now() + total;
    let mut read = 0usize;
    while read <= limit {
        let next = tokio::time::Instant::now() + LINGER_GAP;
        let frame = tokio::time::timeout_at(next.min(deadline), body.frame()).await;
        match frame {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read = read.saturating_add(data.len());
                }
            }
            // The end, a broken body, or out of time: nothing more to wait for.
            Ok(None | Some(Err(_))) | Err(_) => return,
        }
    }
}

/// 408 for a body that stopped arriving; the connection is closed after the answer, since
/// the rest of the body may still come and cannot be told from the next request.
fn body_stalled(gap: Duration) -> GatewayError {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    GatewayError::new(
        ErrorCode::RequestTimeout,
        format!(
            "The request body stalled: nothing of it arrived for {gap:?}; send the body \
             without long pauses."
        ),
    )
    .with_headers(headers)
}

/// The credential of an `Authorization: Bearer <token>` value, on every listener. The scheme
/// is matched in any case (RFC 7235 §2.1: `BEARER`, `bearer`, `Bearer`); spaces around and
/// after it are skipped. The rest is the token as sent: two credentials in one header are not
/// a key and fail the checksum (401), rather than one of them being picked.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim_start();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_matches([' ', '\t']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for value in [
            "Bearer tok",
            "bearer tok",
            "BEARER tok",
            "  Bearer \t tok  ",
        ] {
            assert_eq!(bearer_token(value), Some("tok"), "{value:?}");
        }
        for value in ["Basic dG9r", "Bearertok", "tok", ""] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::sync::mpsc;

    /// A request body fed by a channel: a frame per message, the end when the sender is dropped.
    struct Fed(mpsc::Receiver<Bytes>);

    impl hyper::body::Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }

    const GAP: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn an_unread_body_is_discarded_within_its_bounds() {
        // A body that ends is read to its end at once.
        let (tx, rx) = mpsc::channel(8);
        tx.send(Bytes::from_static(b"rest")).await.expect("send");
        drop(tx);
        let started = tokio::time::Instant::now();
        discard_unread(Fed(rx), 1024, LINGER_TOTAL).await;
        assert_eq!(started.elapsed(), Duration::ZERO);

        // One that trickles a byte every 4 s is given up at the total.
        let (tx, rx) = mpsc::channel(8);
        let trickle = tokio::spawn(async move {
            while tx.send(Bytes::from_static(b"x")).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
        });
        let started = tokio::time::Instant::now();
        discard_unread(Fed(rx), 1024, Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        trickle.abort();

        // One that stalls is given up after the longest pause.
        let (tx, rx) = mpsc::channel(8);
        let started = tokio::time::Instant::now();
        discard_unread(Fed(rx), 1024, LINGER_TOTAL).await;
        assert_eq!(started.elapsed(), LINGER_GAP);
        drop(tx);

        // One larger than the limit is given up once past it.
        let (tx, rx) = mpsc::channel(8);
        for _ in 0..3 {
            tx.send(Bytes::from(vec![0u8; 600])).await.expect("send");
        }
        let started = tokio::time::Instant::now();
        discard_unread(Fed(rx), 1024, LINGER_TOTAL).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "stopped past 1024 bytes");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_a_408_after_the_gap() {
        let (tx, rx) = mpsc::channel(8);
        tx.send(Bytes::from_static(b"{")).await.expect("send");
        let started = tokio::time::Instant::now();
        let err = read_limited(&HeaderMap::new(), Fed(rx), 1024, GAP)
            .await
            .expect_err("stalled");
        assert_eq!(err.code, ErrorCode::RequestTimeout);
        assert_eq!(err.code.status(), 408);
        assert_eq!(started.elapsed(), GAP);
        let closes = err
            .headers
            .as_ref()
            .and_then(|h| h.get(http::header::CONNECTION));
        assert_eq!(closes.map(HeaderValue::as_bytes), Some(&b"close"[..]));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_body_is_read_whole() {
        let (tx, rx) = mpsc::channel(8);
        let feeder = tokio::spawn(async move {
            // Ten pieces, each just inside the gap: five times the gap in all.
            for _ in 0..10 {
                tokio::time::sleep(GAP / 2).await;
                tx.send(Bytes::from_static(b"ab")).await.expect("send");
            }
        });
        let started = tokio::time::Instant::now();
        let body = read_limited(&HeaderMap::new(), Fed(rx), 1024, GAP)
            .await
            .expect("read whole");
        assert_eq!(body, "ab".repeat(10));
        assert_eq!(started.elapsed(), GAP * 5);
        feeder.await.expect("feeder");
    }

    #[tokio::test(start_paused = true)]
    async fn the_size_limit_still_holds() {
        let (tx, rx) = mpsc::channel(8);
        for _ in 0..3 {
            tx.send(Bytes::from_static(b"abcd")).await.expect("send");
        }
        drop(tx);
        let err = read_limited(&HeaderMap::new(), Fed(rx), 10, GAP)
            .await
            .expect_err("too large");
        assert_eq!(err.code, ErrorCode::BodyTooLarge);
        let mut declared = HeaderMap::new();
        declared.insert(http::header::CONTENT_LENGTH, HeaderValue::from(11));
        let (_tx, rx) = mpsc::channel(1);
        let err = read_limited(&declared, Fed(rx), 10, GAP)
            .await
            .expect_err("declared too large, refused before reading");
        assert_eq!(err.code, ErrorCode::BodyTooLarge);
    }
}
