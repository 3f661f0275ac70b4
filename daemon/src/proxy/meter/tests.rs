//! The meter's tests: settlement on every ending, cuts, estimates, holds, over-reported usage.

use super::*;
use crate::clock::ManualClock;
use crate::proxy::usage::{Format, MAX_TOKENS_PER_REQUEST};
use crate::spend::ledger::{Ask, Ledger, Reserve, SpendState};
use std::collections::VecDeque;
use std::task::Waker;

/// $1 in, $10 out per million.
const PRICE: Price = Price {
    input: Nanodollars(1_000_000_000),
    output: Nanodollars(10_000_000_000),
    cache_read: Nanodollars(1_000_000_000),
    cache_write: Nanodollars(1_000_000_000),
    max_output_tokens: 1000,
};

/// A meter for an OpenAI request of 400 bytes that may produce 100 output tokens, its
/// ledger, and what it sends the usage writer.
fn new_meter() -> (Meter, Arc<Ledger>, impl Fn() -> Vec<UsageRecord>) {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(
        "2026-11-26T12:00:00Z".parse().expect("timestamp"),
    ));
    let ledger = Arc::new(Ledger::new(SpendState::default(), Arc::clone(&clock)));
    let ask = Ask {
        price: PRICE,
        input_tokens_bound: 400,
        output_tokens: 100,
        answers: 1,
        min_output_tokens: 1,
        clamp: false,
    };
    let reservation = ledger.reserve(None, None, &ask).expect("no limit");
    let (writer, sent) = UsageWriter::detached();
    let meter = Meter {
        id: RecordId::UNASSIGNED,
        key_id: "key".into(),
        provider: Provider::Openai,
        model: "gpt-test".into(),
        price: Some(PRICE),
        reservation: Some(reservation),
        input_tokens_bound: 400,
        status: 200,
        sent: true,
        unreadable: false,
        started: Instant::now(),
        writer,
        metrics: Arc::new(Metrics::new()),
        clock,
    };
    (meter, ledger, sent)
}

/// Bounds of a request of `bytes` bytes that may produce no output.
fn input(bytes: u64) -> Bounds {
    Bounds {
        input_bytes: bytes,
        output_tokens: 0,
    }
}

/// A response body of the given frames, every one ready at once.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// Polls `body` until it yields trailers, as hyper's server does, then drops it (hyper
/// does not poll for the end after trailers). Returns the data and the trailers.
fn serve_until_trailers<B: Body<Data = Bytes, Error = BoxError> + Unpin>(
    mut body: MeteredBody<B>,
) -> (Vec<u8>, Option<http::HeaderMap>) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut data = Vec::new();
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => return (data, frame.into_trailers().ok()),
            },
            Poll::Ready(None) => return (data, None),
            other => panic!("unexpected poll: {:?}", other.map(|f| f.map(|_| ()))),
        }
    }
}

#[test]
fn trailers_end_the_body_and_settle_it_as_reported() {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
    let json = r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4}}"#;
    let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
                  data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\n\
                  data: [DONE]\n\n";
    // A JSON body; an SSE stream; and one whose usage chunk is stripped with its last
    // event unfinished (held back by the observer until the end).
    let cases = [
        (Format::Json, false, json.to_owned(), json.to_owned()),
        (Format::Sse, false, stream.to_owned(), stream.to_owned()),
        (
            Format::Sse,
            true,
            stream.trim_end().to_owned(),
            stream
                .replace(
                    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\n",
                    "",
                )
                .trim_end()
                .to_owned(),
        ),
    ];
    for (format, strip, sent_text, expected) in cases {
        let (meter, ledger, sent) = new_meter();
        let (head, tail) = sent_text.split_at(sent_text.len() / 2);
        let frames = Frames(VecDeque::from([
            Frame::data(Bytes::from(head.to_owned())),
            Frame::data(Bytes::from(tail.to_owned())),
            Frame::trailers(trailers.clone()),
        ]));
        let observer = UsageObserver::new(crate::config::Kind::Openai, format, strip);
        let body = MeteredBody::new(frames, observer, meter, false);
        let (data, got) = serve_until_trailers(body);
        assert_eq!(
            String::from_utf8(data).expect("utf-8"),
            expected,
            "{format:?}"
        );
        assert_eq!(got.as_ref(), Some(&trailers), "the trailers pass");
        let records = sent();
        assert_eq!(records.len(), 1, "{format:?}");
        assert_eq!(records[0].source, CostSource::Reported, "{format:?}");
        assert_eq!(
            (records[0].tokens.input, records[0].tokens.output),
            (9, 4),
            "{format:?}"
        );
        let state = ledger.snapshot();
        assert_eq!(state.open_reservations, 0);
        assert_eq!(state.total, PRICE.cost(&records[0].tokens));
    }
}

/// Anthropic after `message_start` (input 10, placeholder output 1) and `deltas` content
/// deltas, with no `message_delta` yet.
fn anthropic_midstream(deltas: u64) -> Observed {
    Observed {
        reported: Some(Tokens {
            input: 10,
            output: 1,
            ..Default::default()
        }),
        partial: true,
        content_events: deltas,
        content_chars: 0,
    }
}

/// A body that sends one frame and then waits forever.
struct Unfinished(Option<Bytes>);

impl Body for Unfinished {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.0.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => Poll::Pending,
        }
    }
}

/// Polls `body` once: the data frame it must yield.
fn first_data<B: Body<Data = Bytes, Error = BoxError> + Unpin>(body: &mut MeteredBody<B>) -> Bytes {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().expect("data"),
        other => panic!("unexpected poll: {:?}", other.map(|f| f.map(|_| ()))),
    }
}

#[test]
fn an_encoded_body_is_billed_its_output_bound_and_passed_on_untouched() {
    let gzip = Bytes::from_static(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03not usage");
    let check = |sent: Vec<UsageRecord>, ledger: &Ledger| {
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].source, CostSource::Estimated);
        assert_eq!(
            (sent[0].tokens.input, sent[0].tokens.output),
            (100, 100),
            "a quarter of the 400 bytes, and the 100 output tokens reserved"
        );
        assert_eq!(ledger.snapshot().open_reservations, 0);
    };
    // To its end.
    let (mut meter, ledger, sent) = new_meter();
    meter.unreadable = true;
    let frames = Frames(VecDeque::from([Frame::data(gzip.clone())]));
    let observer = UsageObserver::new(crate::config::Kind::Openai, Format::Encoded, true);
    let mut body = MeteredBody::new(frames, observer, meter, true);
    assert_eq!(first_data(&mut body), gzip, "untouched");
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(
        Pin::new(&mut body).poll_frame(&mut cx),
        Poll::Ready(None)
    ));
    check(sent(), &ledger);
    // Left unfinished by the client: billed the same (what streamed is unknown), and
    // never cut (nothing can be counted).
    let (mut meter, ledger, sent) = new_meter();
    meter.unreadable = true;
    let observer = UsageObserver::new(crate::config::Kind::Openai, Format::Encoded, true);
    let mut body = MeteredBody::new(Unfinished(Some(gzip.clone())), observer, meter, false);
    assert_eq!(first_data(&mut body), gzip);
    assert!(sent().is_empty(), "still open");
    drop(body);
    check(sent(), &ledger);
}

#[test]
fn more_output_than_allowed_is_billed_as_reported_and_marked() {
    for (output, marked) in [(100, false), (101, true), (6_000, true)] {
        let (mut meter, ledger, records) = new_meter();
        let metrics = Arc::clone(&meter.metrics);
        let observed = Observed {
            reported: Some(Tokens {
                input: 10,
                output,
                ..Tokens::default()
            }),
            ..Observed::default()
        };
        meter.settle(&observed, Outcome::Complete);
        let records = records();
        assert_eq!(records[0].tokens.output, output, "billed as reported");
        assert_eq!(records[0].over_allowed, marked, "{output}");
        assert_eq!(ledger.snapshot().total, PRICE.cost(&records[0].tokens));
        let counted = metrics.upstream(Provider::Openai).usage_over_allowed.get();
        assert_eq!(counted, u64::from(marked));
    }
    // An estimate is the gateway's own count, never marked.
    let (mut meter, _, records) = new_meter();
    meter.settle(&Observed::default(), Outcome::Interrupted);
    assert!(!records()[0].over_allowed);
}

#[test]
fn a_request_the_provider_may_have_is_billed_its_input_without_a_response() {
    for (sent, status, expected) in [
        (true, 0, (100, CostSource::Estimated)),
        (true, 504, (100, CostSource::Estimated)),
        (false, 502, (0, CostSource::Reported)),
    ] {
        let (mut meter, ledger, records) = new_meter();
        meter.sent = sent;
        meter.status = status;
        drop(meter);
        let records = records();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(
            (record.tokens.input, record.source),
            expected,
            "sent {sent}, status {status}"
        );
        assert_eq!(record.tokens.output, 0);
        assert_eq!(record.status, status);
        assert_eq!(record.cost, PRICE.cost(&record.tokens));
        assert_eq!(ledger.snapshot().open_reservations, 0, "released");
    }
}

#[test]
fn an_interim_report_never_hides_what_streamed() {
    let observed = anthropic_midstream(200);
    for outcome in [Outcome::Interrupted, Outcome::Complete] {
        let (tokens, source) = settlement(&observed, outcome, input(5_000));
        assert_eq!(source, CostSource::Estimated, "{outcome:?}");
        assert_eq!(
            tokens,
            Tokens {
                input: 10,
                output: 200,
                ..Default::default()
            },
            "{outcome:?}: input as reported, output as streamed"
        );
    }
    // The final (cumulative) count replaces the interim one and is billed as reported.
    let done = Observed {
        reported: Some(Tokens {
            input: 10,
            output: 201,
            ..Default::default()
        }),
        partial: false,
        ..observed
    };
    assert_eq!(
        settlement(&done, Outcome::Complete, input(5_000)),
        (done.reported.expect("reported"), CostSource::Reported)
    );
    // An interim count above what streamed is kept.
    let ahead = Observed {
        reported: Some(Tokens {
            input: 10,
            output: 500,
            ..Default::default()
        }),
        ..observed
    };
    assert_eq!(
        settlement(&ahead, Outcome::Interrupted, input(0)).0.output,
        500
    );
    // Nothing reported: a quarter of the request's bytes, and what streamed.
    let unreported = Observed {
        content_events: 3,
        ..Observed::default()
    };
    assert_eq!(
        settlement(&unreported, Outcome::Interrupted, input(401)).0,
        Tokens {
            input: 101,
            output: 3,
            ..Default::default()
        }
    );
    assert_eq!(
        settlement(&Observed::default(), Outcome::ProviderError, input(401)),
        (Tokens::default(), CostSource::Reported)
    );
}

#[test]
fn the_cut_counts_what_streamed_past_an_interim_report() {
    // $3 in, $15 out per million; 100 output tokens and 50 input reserved.
    let price = Price {
        input: Nanodollars(3_000_000_000),
        output: Nanodollars(15_000_000_000),
        cache_read: Nanodollars(3_000_000_000),
        cache_write: Nanodollars(3_000_000_000),
        max_output_tokens: 1000,
    };
    let reservation = price.cost(&Tokens {
        input: 50,
        output: 100,
        ..Default::default()
    });
    assert!(!usage_reaches(
        &anthropic_midstream(50),
        50,
        &price,
        reservation
    ));
    assert!(
        usage_reaches(&anthropic_midstream(200), 50, &price, reservation),
        "200 deltas past a max_tokens of 100: the placeholder output of 1 must not hide them"
    );
    // Nothing reported at all: the streamed floor alone reaches it too.
    let unreported = Observed {
        content_events: 200,
        ..Observed::default()
    };
    assert!(usage_reaches(&unreported, 50, &price, reservation));
    // A final report is taken as it is.
    let reported = Observed {
        reported: Some(Tokens {
            input: 50,
            output: 99,
            ..Default::default()
        }),
        content_events: 300,
        ..Observed::default()
    };
    assert!(!usage_reaches(&reported, 50, &price, reservation));
}

#[test]
fn absurd_counts_are_clamped_per_request() {
    let observed = Observed {
        reported: Some(Tokens {
            input: u64::MAX,
            output: 9_000_000_000_000_000_000,
            cache_read: 7,
            cache_write: u64::MAX,
        }),
        ..Observed::default()
    };
    let (tokens, _) = settlement(&observed, Outcome::Complete, input(0));
    assert_eq!(
        tokens,
        Tokens {
            input: MAX_TOKENS_PER_REQUEST,
            output: MAX_TOKENS_PER_REQUEST,
            cache_read: 7,
            cache_write: MAX_TOKENS_PER_REQUEST,
        }
    );
    let (tokens, _) = settlement(&observed, Outcome::Interrupted, input(u64::MAX));
    assert_eq!(tokens.output, MAX_TOKENS_PER_REQUEST);
    let streamed = Observed {
        content_events: u64::MAX,
        ..Observed::default()
    };
    let (tokens, _) = settlement(&streamed, Outcome::Interrupted, input(u64::MAX));
    assert_eq!(tokens.input, MAX_TOKENS_PER_REQUEST);
    assert_eq!(tokens.output, MAX_TOKENS_PER_REQUEST);
}

#[test]
fn a_request_holds_from_the_moment_it_is_sent_until_it_settles() {
    // Never sent: no hold.
    let (mut meter, _, records) = new_meter();
    let writer = meter.writer.clone();
    meter.set_sent(false);
    assert_eq!(writer.open_holds(), 0);
    drop(meter);
    assert_eq!(records()[0].journaled_hold, None);

    // Sent, handed back unwritten and sent again: one hold, closed as it settles.
    let (mut meter, _, records) = new_meter();
    let writer = meter.writer.clone();
    meter.set_sent(true);
    let hold = meter.reservation.as_ref().and_then(Reservation::hold);
    assert!(hold.is_some());
    meter.set_sent(false);
    meter.set_sent(true);
    assert_eq!(meter.reservation.as_ref().and_then(Reservation::hold), hold);
    assert_eq!(writer.open_holds(), 1);
    meter.settle(&Observed::default(), Outcome::Complete);
    assert_eq!(writer.open_holds(), 0);
    assert_eq!(records()[0].journaled_hold, None, "never journaled");

    // Journaled while open (two batches saw it): its record names the row to delete.
    let (mut meter, _, records) = new_meter();
    let writer = meter.writer.clone();
    meter.set_sent(true);
    let mut journaled = Vec::new();
    let now = meter.clock.now();
    writer.holds().take_to_journal(now, &mut journaled);
    writer.holds().take_to_journal(now, &mut journaled);
    assert_eq!(journaled.len(), 1);
    // What a crash would charge: the whole reservation (400 bytes in, 100 tokens out).
    assert_eq!(
        (journaled[0].input_tokens, journaled[0].output_tokens),
        (400, 100)
    );
    assert_eq!(
        journaled[0].cost,
        PRICE.cost(&Tokens {
            input: 400,
            output: 100,
            ..Default::default()
        })
    );
    drop(meter);
    assert_eq!(records()[0].journaled_hold, Some(journaled[0].id));
    assert_eq!(writer.open_holds(), 0);
}
