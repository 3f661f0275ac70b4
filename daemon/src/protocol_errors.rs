//! hyper's own refusals, answered in the SPEC's error shape.
//!
//! A request hyper cannot parse (a malformed request line or header, a NUL in the path, two
//! `Content-Length`s, too many or too large headers, a URI too long) never reaches a service:
//! hyper answers it itself, 400, 431 or 414 with an empty body, and closes. SPEC §3 wants one
//! JSON error shape on every route, and hyper has no hook for that answer, so this wrapper
//! around a connection's socket recognises it on its way out, by its exact shape — that status
//! line, then only `connection: close`, `content-length: 0` and `date`, and nothing after —
//! and writes the same status with an `invalid_request` JSON body instead.
//!
//! Only while no request on the connection has reached the service ([`Served`]): once one
//! has, the bytes on their way out may be a provider's answer, and a provider's body or bare
//! 400 can have exactly that shape (a downloaded file holding an HTTP transcript); rewriting
//! it would corrupt the answer and desynchronise the connection. So a malformed *first*
//! request gets the JSON error, and one after a served request on a keep-alive connection
//! keeps hyper's empty answer. All else passes through; the check costs a flag and a
//! comparison of a write's last bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use gateway_shared::{ErrorBody, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's socket, with hyper's bare refusals rewritten.
pub struct ProtocolErrors<S> {
    inner: S,
    /// The rewritten refusal, still to be written before anything else.
    pending: Bytes,
    served: Served,
}

/// Set by the connection's service when hyper hands it a request: from then on nothing
/// written on the connection is rewritten.
#[derive(Clone, Debug, Default)]
pub struct Served(Arc<AtomicBool>);

impl Served {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl<S> ProtocolErrors<S> {
    /// The wrapped socket, and the flag its service must [`Served::mark`] on every request.
    pub fn new(inner: S) -> (Self, Served) {
        let served = Served::default();
        let wrapped = Self {
            inner,
            pending: Bytes::new(),
            served: served.clone(),
        };
        (wrapped, served)
    }
}

/// The refusals hyper writes itself, by status line, and what we say instead.
const REFUSALS: [(&[u8], &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\n",
        "The request is not valid HTTP/1.1: its request line or one of its headers is malformed.",
    ),
    (
        b"HTTP/1.1 414 URI Too Long\r\n",
        "The request's URI is too long.",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        "The request's headers are too many or too large.",
    ),
];

/// The longest refusal hyper writes: the 431 status line, its three headers and the end.
const LONGEST_REFUSAL: usize = 160;

/// Where in `bytes` a refusal of hyper's starts, when they end with one, and its message.
fn refusal(bytes: &[u8]) -> Option<(usize, &'static str)> {
    // hyper writes `date` last; our own heads end that way too, bodies almost never.
    if !bytes.ends_with(b" GMT\r\n\r\n") {
        return None;
    }
    let from = bytes.len().saturating_sub(LONGEST_REFUSAL);
    let at = from + memchr::memmem::rfind(&bytes[from..], b"HTTP/1.1 4")?;
    let tail = &bytes[at..];
    let (status_line, message) = REFUSALS
        .iter()
        .find(|(status_line, _)| tail.starts_with(status_line))?;
    let headers = &tail[status_line.len()..];
    let headers = headers
        .strip_prefix(b"connection: close\r\n".as_slice())
        .unwrap_or(headers);
    let date = headers.strip_prefix(b"content-length: 0\r\ndate: ".as_slice())?;
    let date = date.strip_suffix(b"\r\n\r\n".as_slice())?;
    (!date.contains(&b'\n')).then_some((at, *message))
}

/// The answer written instead: hyper's status, the JSON error, and the connection closing.
fn rewritten(status_line: &[u8], message: &str) -> Bytes {
    let body = ErrorBody::new(ErrorCode::InvalidRequest, message.to_owned()).to_json();
    let mut answer = Vec::with_capacity(status_line.len() + body.len() + 96);
    answer.extend_from_slice(status_line);
    answer.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    answer.extend_from_slice(body.as_bytes());
    Bytes::from(answer)
}

impl<S: AsyncWrite + Unpin> ProtocolErrors<S> {
    /// Writes what is pending; `Ready(Ok)` once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(written);
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `refusal` (all of `len` bytes hyper handed over) and starts writing our answer.
    fn replace(
        &mut self,
        cx: &mut Context<'_>,
        refusal: &[u8],
        message: &str,
    ) -> Poll<io::Result<usize>> {
        let status_line_end = refusal
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(refusal.len(), |end| end + 2);
        self.pending = rewritten(&refusal[..status_line_end], message);
        // Whatever is not written now is written before anything else, or at the flush.
        if let Poll::Ready(Err(err)) = self.drain(cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(refusal.len()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProtocolErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProtocolErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        if this.served.any() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        match refusal(buf) {
            Some((0, message)) => this.replace(cx, buf, message),
            // Our answers before it go out first; hyper hands over the rest again.
            Some((at, _)) => Pin::new(&mut this.inner).poll_write(cx, &buf[..at]),
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        if this.served.any() {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        let Some(last) = bufs.iter().rposition(|b| !b.is_empty()) else {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        };
        match refusal(&bufs[last]) {
            Some((0, message)) if bufs[..last].iter().all(|b| b.is_empty()) => {
                this.replace(cx, &bufs[last], message)
            }
            Some((0, _)) => Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..last]),
            Some((at, _)) => {
                let before: Vec<io::IoSlice<'_>> = bufs[..last]
                    .iter()
                    .map(|b| io::IoSlice::new(b))
                    .chain(std::iter::once(io::IoSlice::new(&bufs[last][..at])))
                    .collect();
                Pin::new(&mut this.inner).poll_write_vectored(cx, &before)
            }
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BARE_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Fri, 27 Nov 2026 15:19:49 GMT\r\n\r\n";
    const BARE_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Fri, 27 Nov 2026 15:19:49 GMT\r\n\r\n";
    const OURS: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: Fri, 27 Nov 2026 15:19:49 GMT\r\n\r\n";

    /// What the peer reads after `writes` go through the wrapper and it shuts down.
    async fn through(writes: &[&[u8]]) -> String {
        through_served(writes, false).await
    }

    /// Like [`through`], with the service marked as having served a request first.
    async fn through_served(writes: &[&[u8]], served: bool) -> String {
        let (ours, mut peer) = tokio::io::duplex(64);
        let (mut wrapped, flag) = ProtocolErrors::new(ours);
        if served {
            flag.mark();
        }
        let writes: Vec<Vec<u8>> = writes.iter().map(|w| w.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for write in writes {
                wrapped.write_all(&write).await.expect("write");
            }
            wrapped.shutdown().await.expect("shutdown");
        });
        let mut seen = Vec::new();
        peer.read_to_end(&mut seen).await.expect("read");
        writer.await.expect("writer");
        String::from_utf8(seen).expect("utf-8")
    }

    #[test]
    fn recognises_hypers_bare_refusals_and_nothing_else() {
        assert_eq!(refusal(BARE_400).map(|(at, _)| at), Some(0));
        assert_eq!(refusal(BARE_431).map(|(at, _)| at), Some(0));
        let pipelined = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".as_slice(),
            BARE_400,
        ]
        .concat();
        assert_eq!(refusal(&pipelined).map(|(at, _)| at), Some(40));
        assert_eq!(refusal(OURS), None, "an answer with a content type is ours");
        assert_eq!(refusal(b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\ndate: x GMT\r\n\r\n"), None);
        assert_eq!(refusal(b"{\"choices\": []}"), None);
        assert_eq!(refusal(&BARE_400[1..]), None, "not from a status line");
    }

    #[tokio::test]
    async fn a_bare_refusal_leaves_as_the_json_error_and_the_connection_closes() {
        let seen = through(&[BARE_431]).await;
        let (head, body) = seen.split_once("\r\n\r\n").expect("a head and a body");
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(body["error"]["type"], "gateway_error");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("headers"))
        );
    }

    #[tokio::test]
    async fn answers_before_a_refusal_and_other_answers_pass_untouched() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".as_slice();
        let seen = through(&[&[answer, BARE_400].concat()]).await;
        assert!(
            seen.starts_with(std::str::from_utf8(answer).expect("utf-8")),
            "{seen}"
        );
        assert!(
            seen[answer.len()..]
                .starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json"),
            "{seen}"
        );
        let untouched = through(&[OURS, b"{}"]).await;
        assert_eq!(untouched.as_bytes(), [OURS, b"{}"].concat());
    }

    /// Once a request was served, what goes out may be a provider's answer: a body or a bare
    /// provider 400 shaped exactly like hyper's refusal passes as it is.
    #[tokio::test]
    async fn nothing_is_rewritten_once_a_request_was_served() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 101\r\n\r\n".as_slice();
        let seen = through_served(&[head, BARE_400], true).await;
        assert_eq!(seen.as_bytes(), [head, BARE_400].concat());
        let seen = through_served(&[BARE_400], true).await;
        assert_eq!(seen.as_bytes(), BARE_400);
    }
}
