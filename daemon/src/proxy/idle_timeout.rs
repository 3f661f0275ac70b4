//! A response body that fails when the provider goes silent for too long.
//!
//! A total deadline would cut long, healthy streams (reasoning models stream for minutes);
//! what signals a dead upstream is silence. The timer restarts on every frame.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::http_util::BoxError;

pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
}

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the provider sent nothing for {0:?}")]
pub struct Stalled(pub Duration);

impl<B> IdleTimeout<B> {
    /// Re-arms `sleep` (the timer that waited for the response head) for the body.
    pub fn new(inner: B, idle: Duration, mut sleep: Pin<Box<Sleep>>) -> Self {
        sleep.as_mut().reset(Instant::now() + idle);
        Self { inner, idle, sleep }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.sleep.as_mut().reset(Instant::now() + this.idle);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
