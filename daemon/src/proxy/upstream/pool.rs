//! Keep-alive HTTP/1 connections to one provider, driven by the task that reads the response.
//!
//! hyper-util's pooled client runs every connection in a task of its own and hands each body
//! frame to the reader over a channel: one cross-task wake-up per frame, which the benchmark's
//! profile showed as the largest cost left on streams. Here nobody else polls a connection:
//! the request's task drives it while waiting for the response head, and the response body
//! drives it while the downstream connection reads the body. A burst of SSE events that
//! arrives in one read is decoded and handed on in the same wake-up, and the meter writes it
//! downstream as one frame (what nginx does). The price is this small pool.
//!
//! Idle connections wait, unpolled, in a stack per provider (most recently used first, so a
//! small working set stays warm and the rest age out). A connection is checked when it is
//! taken: one poll notices a far end that closed. A request that a reused connection could
//! not even start to send is retried once on a fresh connection; once any byte may have been
//! sent it never is (a chat completion must not run twice).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

pub type Connector = HttpsConnector<HttpConnector>;
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;
type Request = http::Request<Full<Bytes>>;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    #[error("{0}")]
    Lost(hyper::Error),
}

pub struct Pool {
    connector: Connector,
    /// Where connections go: scheme and authority of the provider's base URL.
    origin: http::Uri,
    /// Idle connections per event loop (index: [`crate::event_loops::current`]): a
    /// connection is only ever driven by the loop whose I/O driver it is registered with.
    idle: Box<[Mutex<VecDeque<Idle>>]>,
    /// Per shard.
    max_idle: usize,
    idle_timeout: Duration,
}

/// One HTTP/1 connection: the handle requests go in through, and the future that does its
/// I/O whenever it is polled.
///
/// The connection state (hyper's dispatcher and buffers, ~1.7 KB) is boxed: a `Conn` moves
/// through every request's futures and its response body, and inline it was copied each time.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    io: Box<http1::Connection<Io, Full<Bytes>>>,
    reused: bool,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Pool {
    /// `shards`: one per event loop plus one for every other thread (index 0).
    pub fn new(
        connector: Connector,
        origin: http::Uri,
        shards: usize,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            connector,
            origin,
            idle: (0..shards.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            max_idle,
            idle_timeout,
        });
        spawn_reaper(&pool);
        pool
    }

    /// Sends `request` (origin-form URI, `Host` set) on an idle connection or a new one.
    ///
    /// `sent` says, however this ends (the future may also be dropped), whether the request
    /// may have reached the provider: set once it is handed to a connection, cleared when the
    /// connection gives it back unwritten. A request that could not connect was never sent.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request,
        sent: &mut impl super::SentFlag,
    ) -> Result<http::Response<PooledBody>, SendError> {
        while let Some(conn) = self.checkout().await {
            sent.set_sent(true);
            match conn.send(request, self).await {
                Ok(response) => return Ok(response),
                // Not a byte was written: the idle connection had gone. Try the next one.
                Err((Failure::Unsent(Some(unsent)), _)) => {
                    sent.set_sent(false);
                    request = *unsent;
                }
                Err((failure, err)) => {
                    sent.set_sent(matches!(failure, Failure::MaybeSent));
                    return Err(SendError::Lost(err));
                }
            }
        }
        // Boxed: the connector's future is large and only needed for a new connection.
        let conn = Box::pin(self.connect()).await?;
        sent.set_sent(true);
        conn.send(request, self).await.map_err(|(failure, err)| {
            sent.set_sent(matches!(failure, Failure::MaybeSent));
            SendError::Lost(err)
        })
    }

    /// The most recently used idle connection that is still open and ready.
    async fn checkout(&self) -> Option<Conn> {
        loop {
            let mut idle = self.lock().pop_back()?;
            if idle.since.elapsed() >= self.idle_timeout {
                // Everything below it is older still.
                self.lock().clear();
                return None;
            }
            let usable = poll_fn(|cx| {
                if Pin::new(&mut idle.conn.io).poll(cx).is_ready() {
                    // The connection ended: closed by the far end, or failed.
                    return Poll::Ready(false);
                }
                Poll::Ready(matches!(
                    idle.conn.sender.poll_ready(cx),
                    Poll::Ready(Ok(()))
                ))
            })
            .await;
            if usable {
                return Some(idle.conn);
            }
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, io) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Lost)?;
        Ok(Conn {
            sender,
            io: Box::new(io),
            reused: false,
        })
    }

    fn checkin(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.lock();
        self.drop_expired(&mut idle, now);
        if idle.len() < self.max_idle {
            idle.push_back(Idle {
                conn: Conn {
                    reused: true,
                    ..conn
                },
                since: now,
            });
        }
    }

    /// Closes the idle connections that waited longer than the idle timeout (the oldest are
    /// at the front).
    fn drop_expired(&self, idle: &mut VecDeque<Idle>, now: Instant) {
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
    }

    /// The calling event loop's idle connections.
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        let shard = crate::event_loops::current() % self.idle.len();
        lock_shard(&self.idle[shard])
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.iter().map(|shard| lock_shard(shard).len()).sum()
    }
}

fn lock_shard(shard: &Mutex<VecDeque<Idle>>) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

/// Without traffic nothing checks idle connections in or out: a timer closes the expired ones,
/// so a quiet gateway does not hold sockets the provider has long closed. Ends with the pool.
fn spawn_reaper(pool: &Arc<Pool>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let pool = Arc::downgrade(pool);
    runtime.spawn(async move {
        let period = match pool.upgrade() {
            Some(pool) => (pool.idle_timeout / 2).max(Duration::from_millis(10)),
            None => return,
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else {
                return;
            };
            let now = Instant::now();
            for shard in &pool.idle {
                pool.drop_expired(&mut lock_shard(shard), now);
            }
        }
    });
}

impl Conn {
    /// Writes the request and reads the response head, driving the connection meanwhile.
    /// On failure, says whether any of the request may have been written.
    async fn send(
        mut self,
        request: Request,
        pool: &Arc<Pool>,
    ) -> Result<http::Response<PooledBody>, (Failure, hyper::Error)> {
        let mut response = pin!(self.sender.try_send_request(request));
        let mut io_done = false;
        let result = poll_fn(|cx| {
            if !io_done && Pin::new(&mut self.io).poll(cx).is_ready() {
                io_done = true;
            }
            response.as_mut().poll(cx)
        })
        .await;
        match result {
            Ok(response) => Ok(response.map(|body| PooledBody {
                body,
                conn: (!io_done).then_some(self),
                pool: Arc::clone(pool),
            })),
            Err(mut err) => {
                let failure = match err.take_message() {
                    Some(unsent) => Failure::Unsent(self.reused.then(|| Box::new(unsent))),
                    None => Failure::MaybeSent,
                };
                Err((failure, err.into_error()))
            }
        }
    }
}

/// How [`Conn::send`] failed: whether the provider may have the request.
enum Failure {
    /// Not a byte was written. The request comes back when the connection was a reused one
    /// (the only case worth a retry); boxed, as failures are rare and the request is large.
    Unsent(Option<Box<Request>>),
    /// Some or all of it may have been written.
    MaybeSent,
}

/// A response body that drives its connection, and gives the connection back to the pool
/// once the whole body has been read.
pub struct PooledBody {
    body: Incoming,
    /// `None` once the connection ended (or failed): it is not reusable then.
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

impl PooledBody {
    /// Lets the connection read and decode what has arrived. Drops it when it ends.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = self.conn.as_mut()
            && Pin::new(&mut conn.io).poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    /// After the last byte: one more poll lets the connection settle into keep-alive; back
    /// to the pool if it did.
    fn release(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        self.drive(&mut cx);
        if let Some(mut conn) = self.conn.take()
            && matches!(conn.sender.poll_ready(&mut cx), Poll::Ready(Ok(())))
        {
            self.pool.checkin(conn);
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // hyper stops polling a body of known length once it has every byte, so the poll that
        // would have seen the end may never come: the connection is reusable all the same.
        if self.conn.is_some() && self.body.is_end_stream() {
            self.release();
        }
    }
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("connection", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // Two rounds: the first poll of a body only tells the connection it is wanted.
        for round in 0..2 {
            this.drive(cx);
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending if round == 0 && this.conn.is_some() => continue,
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(err))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(frame) => {
                    if frame.is_none() || this.body.is_end_stream() {
                        this.release();
                    }
                    return Poll::Ready(frame);
                }
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    /// A server that runs `serve` on every connection it accepts, and counts them.
    async fn counting_server<F, Fut>(serve: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        (addr, accepted)
    }

    /// An echo server that counts the connections it accepts.
    async fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        counting_server(|stream| async move {
            let service = service_fn(|req: http::Request<Incoming>| async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, Infallible>(http::Response::new(Full::new(body)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })
        .await
    }

    fn pool(addr: std::net::SocketAddr) -> Arc<Pool> {
        pool_with_idle_timeout(addr, Duration::from_secs(30))
    }

    fn pool_with_idle_timeout(addr: std::net::SocketAddr, idle: Duration) -> Arc<Pool> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let origin: http::Uri = format!("http://{addr}").parse().unwrap();
        Pool::new(connector, origin, 1, 4, idle)
    }

    fn request(addr: std::net::SocketAddr, body: &'static str) -> Request {
        http::Request::builder()
            .method("POST")
            .uri("/echo")
            .header(http::header::HOST, addr.to_string())
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (addr, accepted) = server().await;
        let pool = pool(addr);
        for i in 0..20 {
            let text: &'static str = if i % 2 == 0 { "even" } else { "odd" };
            let response = pool.send(request(addr, text), &mut false).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, text.as_bytes());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout_without_traffic() {
        let (addr, _) = server().await;
        let pool = pool_with_idle_timeout(addr, Duration::from_millis(50));
        let response = pool.send(request(addr, "x"), &mut false).await.unwrap();
        response.into_body().collect().await.unwrap();
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pool.idle_count(), 0, "the reaper closed it");
    }

    #[tokio::test]
    async fn a_body_dropped_after_its_last_byte_gives_its_connection_back() {
        let (addr, accepted) = server().await;
        let pool = pool(addr);
        for _ in 0..3 {
            // An empty body is complete before anyone polls it (hyper never does).
            let body = pool
                .send(request(addr, ""), &mut false)
                .await
                .unwrap()
                .into_body();
            assert!(body.is_end_stream());
            drop(body);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unfinished_body_is_not_reused() {
        let (addr, accepted) = server().await;
        let pool = pool(addr);
        let response = pool
            .send(request(addr, "abandoned"), &mut false)
            .await
            .unwrap();
        drop(response);
        assert_eq!(pool.idle_count(), 0);
        let response = pool.send(request(addr, "next"), &mut false).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "next".as_bytes());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_and_keep_at_most_max_idle() {
        let (addr, accepted) = server().await;
        let pool = pool(addr);
        let mut responses = Vec::new();
        for _ in 0..6 {
            responses.push(pool.send(request(addr, "x"), &mut false).await.unwrap());
        }
        for response in responses {
            response.into_body().collect().await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 6);
        assert_eq!(pool.idle_count(), 4);
    }

    #[tokio::test]
    async fn a_connection_the_far_end_closed_is_replaced_without_failing_the_request() {
        // A server that answers one request per connection and then closes it, without
        // announcing it (no `Connection: close`).
        let (addr, accepted) = counting_server(|mut stream| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            // Dropped here: the socket closes while the client holds it as idle.
        })
        .await;
        let pool = pool(addr);
        for _ in 0..5 {
            let response = pool.send(request(addr, ""), &mut false).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "ok".as_bytes());
            // Let the close reach us, as it would between two requests.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn connect_failure_is_a_connect_error_and_nothing_was_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut sent = false;
        let err = pool(addr)
            .send(request(addr, ""), &mut sent)
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
        assert!(!sent, "never reached the provider");
    }

    #[tokio::test]
    async fn a_request_read_and_never_answered_may_have_been_sent() {
        // Reads the whole request, then closes without a word.
        let (addr, _) = counting_server(|mut stream| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.ends_with(b"unanswered") {
                let n = stream.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        let mut sent = false;
        let err = pool(addr)
            .send(request(addr, "unanswered"), &mut sent)
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Lost(_)), "{err:?}");
        assert!(sent, "the provider has the request");

        // Still waiting for the answer when the caller gives up: sent too.
        let (addr, _) = counting_server(|mut stream| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 4096];
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        let pool = pool(addr);
        let mut sent = false;
        let waiting = pool.send(request(addr, "slow"), &mut sent);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), waiting)
                .await
                .is_err()
        );
        assert!(sent);
    }

    #[test]
    fn frames_stream_through_as_they_arrive() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await.unwrap();
                stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
                    )
                    .await
                    .unwrap();
                release_rx.await.unwrap();
                stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.unwrap();
                let _ = stream.read(&mut buf).await;
            });
            let pool = pool(addr);
            let mut body = pool
                .send(request(addr, ""), &mut false)
                .await
                .unwrap()
                .into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(first, "first".as_bytes());
            release_tx.send(()).unwrap();
            let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(second, "second".as_bytes());
            assert!(body.frame().await.is_none());
            assert_eq!(pool.idle_count(), 1);
        });
    }
}
