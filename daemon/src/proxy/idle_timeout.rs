//! A response body that fails when the provider goes silent for too long.
//!
//! A total deadline would cut long, healthy streams (reasoning models stream for minutes);
//! what signals a dead upstream is silence. Each frame moves the deadline; the timer itself
//! is only moved when it fires early (a frame came in the meantime), not on every frame:
//! re-registering a timer costs more than reading the clock, and most bodies end long before
//! the first deadline.

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
    /// Fires at or before `last_activity + idle`.
    sleep: Pin<Box<Sleep>>,
    last_activity: Instant,
}

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the provider sent nothing for {0:?}")]
pub struct Stalled(pub Duration);

impl<B> IdleTimeout<B> {
    /// Takes over `sleep` (the timer that waited for the response head, due no later than
    /// `idle` from now) for the body.
    pub fn new(inner: B, idle: Duration, sleep: Pin<Box<Sleep>>) -> Self {
        Self {
            inner,
            idle,
            sleep,
            last_activity: Instant::now(),
        }
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
                this.last_activity = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => loop {
                if this.sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = this.last_activity + this.idle;
                if due <= Instant::now() {
                    return Poll::Ready(Some(Err(Box::new(Stalled(this.idle)))));
                }
                // Fired for an older deadline: wait out the rest of this one.
                this.sleep.as_mut().reset(due);
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body fed by a channel: a frame per message, the end when the sender is dropped.
    struct Fed(mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    fn body(idle: Duration) -> (mpsc::Sender<Bytes>, IdleTimeout<Fed>) {
        let (tx, rx) = mpsc::channel(8);
        let head_wait = Box::pin(tokio::time::sleep(idle));
        (tx, IdleTimeout::new(Fed(rx), idle, head_wait))
    }

    #[tokio::test(start_paused = true)]
    async fn frames_closer_than_the_limit_keep_the_body_alive_and_silence_ends_it() {
        let idle = Duration::from_millis(500);
        let (tx, mut body) = body(idle);
        let feeder = tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                tx.send(Bytes::from_static(b"x")).await.expect("send");
            }
            // Then silent, the sender kept open.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        let started = Instant::now();
        for _ in 0..6 {
            let frame = body.frame().await.expect("a frame").expect("not stalled");
            assert_eq!(frame.into_data().expect("data"), "x");
        }
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(1800),
            "3× the limit in all"
        );
        let err = body.frame().await.expect("an end").expect_err("stalled");
        assert!(err.is::<Stalled>());
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(2300),
            "the limit after the last frame, not after the first deadline"
        );
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_ends_in_time_ends_cleanly() {
        let (tx, mut body) = body(Duration::from_millis(500));
        tx.send(Bytes::from_static(b"all")).await.expect("send");
        drop(tx);
        assert!(body.frame().await.expect("a frame").is_ok());
        assert!(body.frame().await.is_none());
    }
}
