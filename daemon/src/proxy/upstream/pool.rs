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
mod tests;
