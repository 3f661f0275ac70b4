//! Metering: the response body wrapper that passes frames through as they arrive, reads usage
//! from them, and settles the request's reservation however the response ends.
//!
//! Settlement happens exactly once, on the first of: the body ends (its last data frame, its
//! trailers, or the end of the stream; usage as reported, or estimated if the provider never
//! sent it), the body fails (stall, upstream reset), the
//! stream is cut because its usage so far reached its reservation, or the body is dropped
//! unfinished (the client went away). A request that never got a response body settles when
//! its [`Meter`] is dropped: free if it never reached the provider, else its input estimate
//! (the provider got the prompt and may bill it, answered or not). Each settlement leaves one
//! usage record on the writer's channel.
//!
//! Without the provider's final count (an interrupted stream, or one that ended after only an
//! interim report such as Anthropic's `message_start`), the output billed is never less than
//! what was seen streaming, and the cut compares that same count with the reservation: an
//! interim report cannot hide a stream's output from either.
//!
//! Once the request may have reached the provider (the upstream calls [`SentFlag::set_sent`]
//! on the meter), its reservation is also an open hold (`spend::holds`) that the usage writer
//! journals, so that a crash charges it at the next start; the settlement closes the hold
//! before its usage record is sent, and the record names the hold's journal row, if any.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use compact_str::CompactString;
use gateway_shared::{Nanodollars, Provider};
use hyper::body::{Body, Frame, SizeHint};

use super::upstream::SentFlag;
use super::usage::{Observed, UsageObserver, clamp};
use crate::clock::Clock;
use crate::http_util::BoxError;
use crate::metrics::Metrics;
use crate::spend::holds::HoldCharge;
use crate::spend::ledger::Reservation;
use crate::spend::price::{Price, Tokens};
use crate::store::usage::{CostSource, RecordId, UsageRecord};
use crate::store::writer::UsageWriter;

/// How a response ended, for pricing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The body ended normally.
    Complete,
    /// Cut short: client gone, stall, upstream error, or the reservation was reached.
    Interrupted,
    /// The provider answered with an error status: providers do not bill these.
    ProviderError,
    /// No response, and the request never reached the provider (no connection).
    NotSent,
    /// No response to a request the provider may have (timeout, lost connection, client
    /// gone while waiting): billed its input estimate.
    Unanswered,
    /// A body whose usage cannot be read (a content coding): billed its worst-case output.
    Unreadable,
}

/// One request's settlement obligation.
pub struct Meter {
    /// The usage record's id when the admission drew one (a cluster: its hold's id).
    pub id: RecordId,
    pub key_id: CompactString,
    pub provider: Provider,
    pub model: CompactString,
    /// `None`: the model has no price (recorded as unpriced, never as free).
    pub price: Option<Price>,
    pub reservation: Option<Reservation>,
    /// Upper bound of prompt tokens, for estimates when usage never arrives.
    pub input_tokens_bound: u64,
    pub status: u16,
    /// Whether the provider may have the request (set by `upstream.send`).
    pub sent: bool,
    /// The response body is in a content coding: its usage cannot be read, so an ending that
    /// would be billed from it is billed the reservation's output bound instead.
    pub unreadable: bool,
    pub started: Instant,
    pub writer: UsageWriter,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
}

impl Meter {
    /// Settles the reservation and queues the usage record. Idempotent.
    pub fn settle(&mut self, observed: &Observed, outcome: Outcome) {
        let Some(mut reservation) = self.reservation.take() else {
            return;
        };
        // Closed before the record is sent: the usage writer relies on that order.
        let journaled_hold = reservation
            .take_hold()
            .and_then(|hold| self.writer.close_hold(hold));
        let outcome = match outcome {
            Outcome::Complete | Outcome::Interrupted if self.unreadable => Outcome::Unreadable,
            outcome => outcome,
        };
        let bounds = Bounds {
            input_bytes: self.input_tokens_bound,
            output_tokens: reservation.output_tokens(),
        };
        let (tokens, source) = settlement(observed, outcome, bounds);
        // Billed as reported, but said: such a request can pass the key's cap (SPEC §5).
        let over_allowed = self.price.is_some()
            && source == CostSource::Reported
            && tokens.output > bounds.output_tokens;
        if over_allowed {
            self.metrics
                .upstream(self.provider)
                .usage_over_allowed
                .inc();
            over_allowed_warning(self, tokens.output, bounds.output_tokens);
        }
        let (cost, source) = match self.price {
            Some(price) => (price.cost(&tokens), source),
            None => (Nanodollars::ZERO, CostSource::Unpriced),
        };
        let at = self.clock.now();
        let spend = reservation.settle_at(cost, at);
        self.metrics
            .upstream(self.provider)
            .spend_nanodollars
            .inc_by(cost.0);
        let record = UsageRecord {
            id: self.id,
            // Settled once (the reservation is gone now): the strings move into the record.
            key_id: std::mem::take(&mut self.key_id),
            at,
            provider: self.provider,
            model: std::mem::take(&mut self.model),
            status: self.status,
            tokens,
            cost,
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            source,
            over_allowed,
            spend,
            journaled_hold,
        };
        tracing::debug!(key_id = %record.key_id, cost = %cost, source = source.as_str(), "request settled");
        self.writer.record(record);
    }

    /// The reservation's amount, when a cut at it applies.
    fn cut_at(&self) -> Option<Nanodollars> {
        self.reservation.as_ref().map(Reservation::amount)
    }
}

/// Warns that a provider reported more output than the request allowed: the provider and
/// model, never the key. At most one line per [`OVER_ALLOWED_WARNING_EVERY`] in the whole
/// process (a server that always over-reports would write one per request); the metric and
/// the usage rows count every one.
fn over_allowed_warning(meter: &Meter, reported: u64, allowed: u64) {
    static NEXT_AT_SECS: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    let now = meter.clock.monotonic().as_secs();
    let next = NEXT_AT_SECS.load(Ordering::Relaxed);
    if now < next
        || NEXT_AT_SECS
            .compare_exchange(
                next,
                now + OVER_ALLOWED_WARNING_EVERY.as_secs(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
    {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    tracing::warn!(
        provider = %meter.provider,
        model = %meter.model,
        reported_output_tokens = reported,
        allowed_output_tokens = allowed,
        similar_since_last_warning = suppressed,
        "the provider reported more output than the request allowed; billed as reported, \
         which can take a key past its spend limit (usage rows are marked over_allowed)"
    );
}

const OVER_ALLOWED_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The upstream marks the request sent here: from then on, until it settles, its reservation
/// is an open hold, charged at the next start if the process dies now. A request handed back
/// unwritten (`false`) keeps its hold while it is retried on another connection; one that
/// fails to connect then settles as never sent, closing it.
impl SentFlag for Meter {
    fn set_sent(&mut self, sent: bool) {
        self.sent = sent;
        let Some(reservation) = self.reservation.as_mut() else {
            return;
        };
        if !sent || reservation.hold().is_some() {
            return;
        }
        let hold = self.writer.open_hold(&HoldCharge {
            key_id: &self.key_id,
            provider: self.provider,
            model: &self.model,
            input_tokens: self.input_tokens_bound,
            output_tokens: reservation.output_tokens(),
            cost: reservation.amount(),
            unpriced: self.price.is_none(),
        });
        reservation.set_hold(hold);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let outcome = if self.sent {
            Outcome::Unanswered
        } else {
            Outcome::NotSent
        };
        self.settle(&Observed::default(), outcome);
    }
}

/// The response body: frames in, frames out, usage observed on the way.
pub struct MeteredBody<B> {
    inner: Option<B>,
    observer: UsageObserver,
    meter: Meter,
    /// Cut the stream once its usage so far reaches the reservation (keys with a limit).
    enforce_cut: bool,
    /// Bytes held back by the observer, sent when the body ends.
    tail: Option<Bytes>,
    /// An upstream error that arrived behind batched data: reported once that data has had a
    /// chance to be written (see `poll_frame`).
    pending_error: Option<BoxError>,
    /// Whether the poll that lets hyper flush before the error has happened.
    flushed_before_error: bool,
    /// Trailers that arrived behind batched data.
    pending_trailers: Option<Frame<Bytes>>,
}

/// Frames to send as one. Most batches are a single frame: no copy then.
#[derive(Default)]
struct Batch {
    first: Option<Bytes>,
    joined: Option<bytes::BytesMut>,
}

/// Largest batch sent as one frame.
const MAX_BATCH_BYTES: usize = 64 * 1024;

impl Batch {
    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match (&mut self.joined, self.first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&data),
            (None, None) => self.first = Some(data),
            (None, Some(first)) => {
                let mut joined = bytes::BytesMut::with_capacity(first.len() + data.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&data);
                self.joined = Some(joined);
            }
        }
    }

    fn len(&self) -> usize {
        self.joined
            .as_ref()
            .map_or_else(|| self.first.as_ref().map_or(0, Bytes::len), |j| j.len())
    }

    fn take(&mut self) -> Option<Bytes> {
        self.joined
            .take()
            .map(bytes::BytesMut::freeze)
            .or_else(|| self.first.take())
    }
}

/// Why a stream was cut, as its last event (or body error) says.
const CUT_MESSAGE: &str = "The answer was cut short: its usage reached what this key's spend \
limit could reserve for it. Ask for fewer output tokens, or raise the key's limit.";

impl<B> MeteredBody<B> {
    pub fn new(inner: B, observer: UsageObserver, meter: Meter, enforce_cut: bool) -> Self {
        Self {
            inner: Some(inner),
            observer,
            meter,
            enforce_cut,
            tail: None,
            pending_error: None,
            flushed_before_error: false,
            pending_trailers: None,
        }
    }

    fn end(&mut self, outcome: Outcome) {
        self.inner = None;
        let observed = self.observer.observed;
        self.meter.settle(&observed, outcome);
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    /// Drains every frame that is already available and sends them as one (like nginx: one
    /// write per wake-up, not one per event), but never waits for a frame that has not
    /// arrived: the first event goes out as soon as nothing else is ready.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(err) = this.pending_error.take() {
            // hyper abandons the connection on a body error without flushing what it has
            // buffered (the response head, the last frames): one `Pending` first lets it write
            // them, so the client gets every byte the provider sent before the failure.
            if !this.flushed_before_error {
                this.flushed_before_error = true;
                this.pending_error = Some(err);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(Some(Err(err)));
        }
        if let Some(trailers) = this.pending_trailers.take() {
            return Poll::Ready(Some(Ok(trailers)));
        }
        let mut batch = Batch::default();
        loop {
            let Some(inner) = this.inner.as_mut() else {
                if let Some(tail) = this.tail.take() {
                    batch.push(tail);
                }
                return Poll::Ready(batch.take().map(|data| Ok(Frame::data(data))));
            };
            let frame = match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => {
                    return match batch.take() {
                        Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                        None => Poll::Pending,
                    };
                }
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(err))) => {
                    // What the observer held back (an event it had not seen the end of) was
                    // sent by the provider: it goes out too, then the error.
                    batch.push(this.observer.finish());
                    this.end(Outcome::Interrupted);
                    if let Some(data) = batch.take() {
                        this.pending_error = Some(err);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    // Nothing to send but perhaps the response head: let hyper write it.
                    this.pending_error = Some(err);
                    this.flushed_before_error = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    let tail = this.observer.finish();
                    this.end(Outcome::Complete);
                    this.tail = Some(tail).filter(|t| !t.is_empty());
                    continue;
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                // Trailers are the body's last frame, and hyper's server drops the body once
                // it has them, without polling for the end: settle now, as at the end. They
                // go out after what is batched and what the observer held back.
                Err(trailers) => {
                    batch.push(this.observer.finish());
                    this.end(Outcome::Complete);
                    return match batch.take() {
                        Some(data) => {
                            this.pending_trailers = Some(trailers);
                            Poll::Ready(Some(Ok(Frame::data(data))))
                        }
                        None => Poll::Ready(Some(Ok(trailers))),
                    };
                }
            };
            let out = this.observer.observe(data);
            let at_end = this.inner.as_ref().is_some_and(Body::is_end_stream);
            if at_end {
                // A body of known length: hyper stops polling once it has every byte, so
                // this is the last frame it will ask for. Settle now.
                this.tail = Some(this.observer.finish()).filter(|t| !t.is_empty());
                this.end(Outcome::Complete);
            } else if this.enforce_cut && reached_reservation(&this.observer.observed, &this.meter)
            {
                tracing::info!(key_id = %this.meter.key_id, "stream cut: its usage reached its reservation");
                let held = this.observer.finish();
                let notice = this.observer.cut_notice(CUT_MESSAGE);
                this.end(Outcome::Interrupted);
                if notice.is_none() {
                    // No event can say it: an error ends the body, so the client sees the
                    // answer cut short rather than complete.
                    this.pending_error = Some(CUT_MESSAGE.into());
                }
                this.tail = Some(Bytes::from([held, notice.unwrap_or_default()].concat()))
                    .filter(|t| !t.is_empty());
            }
            batch.push(out);
            if batch.len() >= MAX_BATCH_BYTES {
                return Poll::Ready(batch.take().map(|data| Ok(Frame::data(data))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none()
            && self.tail.is_none()
            && self.pending_error.is_none()
            && self.pending_trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            // Stripping can shorten the body: promise an exact length only when not stripping.
            Some(inner) if !self.observer.may_change_bytes() => inner.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            // Dropped before its end: the client went away (or the server is stopping).
            self.end(Outcome::Interrupted);
        }
    }
}

/// What a request could use at most: its body's bytes (a bound on its prompt tokens) and the
/// output tokens its reservation allows.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    input_bytes: u64,
    output_tokens: u64,
}

/// The tokens a request is billed for, and how they were arrived at.
fn settlement(observed: &Observed, outcome: Outcome, bounds: Bounds) -> (Tokens, CostSource) {
    let input_tokens_bound = bounds.input_bytes;
    match outcome {
        // Nothing can be read: the input estimate and all the output the request could have
        // had, so that a compressed answer is never cheaper than a plain one.
        Outcome::Unreadable => (
            clamp(Tokens {
                output: bounds.output_tokens,
                ..estimate(&Observed::default(), input_tokens_bound)
            }),
            CostSource::Estimated,
        ),
        Outcome::ProviderError | Outcome::NotSent if observed.reported.is_none() => {
            (Tokens::default(), CostSource::Reported)
        }
        Outcome::Complete if observed.has_final_report() => (
            clamp(observed.reported.unwrap_or_default()),
            CostSource::Reported,
        ),
        _ => (
            estimate(observed, input_tokens_bound),
            CostSource::Estimated,
        ),
    }
}

/// Input plus the output so far: the larger of what was reported (unless final) and what
/// streamed, so never zero once tokens flowed. Input as reported, else a quarter of the
/// request's bytes.
fn estimate(observed: &Observed, input_tokens_bound: u64) -> Tokens {
    let output = observed.output_tokens_so_far();
    clamp(match observed.reported {
        Some(reported) => Tokens { output, ..reported },
        None => Tokens {
            input: input_tokens_bound.div_ceil(4),
            output,
            ..Tokens::default()
        },
    })
}

/// Whether the usage so far (what settling now would bill: the larger of the reported and
/// the streamed count) costs the whole reservation. A few multiplications, once per frame,
/// on keys with a limit only.
fn reached_reservation(observed: &Observed, meter: &Meter) -> bool {
    match (meter.price, meter.cut_at()) {
        (Some(price), Some(limit)) => {
            usage_reaches(observed, meter.input_tokens_bound, &price, limit)
        }
        _ => false,
    }
}

fn usage_reaches(
    observed: &Observed,
    input_tokens_bound: u64,
    price: &Price,
    limit: Nanodollars,
) -> bool {
    price.cost(&estimate(observed, input_tokens_bound)) >= limit
}

#[cfg(test)]
mod tests;
