//! Redis away: every call answers `Unavailable` within the timeout (refused, killed,
//! paused), the URL's password never in the text, and service resumes without a new
//! handle once Redis is back (empty: the ledger is rebuilt, the scripts reloaded).

use std::time::{Duration, Instant};

use super::private::{PrivateRedis, free_port};
use super::*;

const PASSWORD: &str = "hunter2-limits-secret";

async fn connect(url: &str) -> Result<RedisLimits, LimitsError> {
    RedisLimits::connect(&SecretUrl::redis(url).expect("url"), "gwl", TIMEOUT).await
}

fn unavailable_in_time(result: Result<Outcome, LimitsError>, started: Instant) {
    let elapsed = started.elapsed();
    let Err(error) = result else {
        panic!("admitted by a Redis that is away: {result:?}");
    };
    assert!(error.is_unavailable(), "{error:?}");
    assert!(!error.to_string().contains(PASSWORD), "{error}");
    assert!(
        elapsed < TIMEOUT + Duration::from_millis(500),
        "answered after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_is_unavailable_within_the_timeout_and_then_back() {
    let mut redis = PrivateRedis::start(PASSWORD).await;
    let limits = connect(&redis.url()).await.expect("connect");
    let admission = Admission {
        what: "",
        rate_limit: Some(5),
        ..ask("k", hold(1))
    };
    assert!(matches!(
        limits.admit(&admission).await.expect("admit"),
        Outcome::NeedRebuild { .. }
    ));
    seeded(&limits, "k").await;
    assert!(matches!(
        limits.admit(&admission).await.expect("admit"),
        Outcome::Admitted { .. }
    ));

    redis.kill();
    let started = Instant::now();
    unavailable_in_time(limits.admit(&admission).await, started);
    let started = Instant::now();
    let ping = limits.ping().await;
    assert!(ping.is_err_and(|e| e.is_unavailable()));
    assert!(started.elapsed() < TIMEOUT + Duration::from_millis(500));

    // Back, empty (and without the scripts): the same handle reconnects, reloads them, and
    // the ledger asks to be rebuilt.
    redis.start_again().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        match limits.admit(&admission).await {
            Ok(outcome) => break outcome,
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("not back after a restart: {e}"),
        }
    };
    assert!(
        matches!(outcome, Outcome::NeedRebuild { .. }),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_does_not_answer_is_unavailable_within_the_timeout() {
    let redis = PrivateRedis::start(PASSWORD).await;
    let limits = connect(&redis.url()).await.expect("connect");
    seeded(&limits, "k").await;
    let admission = Admission {
        what: "",
        spend: spend(100, 10, None),
        ..ask("k", hold(1))
    };
    redis.pause(true);
    let started = Instant::now();
    unavailable_in_time(limits.admit(&admission).await, started);
    redis.pause(false);
    // The admission that timed out may have been counted: retried by id, never twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match limits.admit(&admission).await {
            Ok(outcome) => {
                assert!(
                    matches!(outcome, Outcome::Admitted { held: 10, .. }),
                    "{outcome:?}"
                );
                break;
            }
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("not back after a pause: {e}"),
        }
    }
    let peek = limits.peek("k", "k", None, None).await.expect("peek");
    assert_eq!((peek.held, peek.open_holds), (10, 1));
}

#[tokio::test]
async fn connecting_fails_in_time_and_never_shows_the_password() {
    // Nothing listens.
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", free_port());
    let started = Instant::now();
    let error = connect(&url).await.err().expect("nothing listens");
    assert!(error.is_unavailable(), "{error:?}");
    assert!(!error.to_string().contains(PASSWORD), "{error}");
    assert!(started.elapsed() < TIMEOUT + Duration::from_millis(500));
    // A wrong password.
    let redis = PrivateRedis::start(PASSWORD).await;
    let wrong = format!("redis://:wrong-{PASSWORD}@127.0.0.1:{}", redis.port);
    let error = connect(&wrong).await.err().expect("wrong password");
    assert!(!error.to_string().contains(PASSWORD), "{error}");
    // A prefix with a hash tag of its own is refused.
    let error = RedisLimits::connect(
        &SecretUrl::redis(&redis.url()).expect("url"),
        "g{w}",
        TIMEOUT,
    )
    .await
    .err()
    .expect("prefix");
    assert_eq!(error, LimitsError::InvalidName("the key prefix"));
}

/// Runs `call` on `loops`' event loop and returns its answer.
async fn on_loop<T: Send + 'static>(
    loops: &crate::event_loops::EventLoops,
    call: impl Future<Output = T> + Send + 'static,
) -> T {
    let (answer, answered) = tokio::sync::oneshot::channel();
    loops.spawn(async move {
        let _ = answer.send(call.await);
    });
    answered.await.expect("the loop answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_loops_own_connection_opens_on_the_loop_and_a_restart_fails_no_call_once_redis_answers()
 {
    let mut redis = PrivateRedis::start(PASSWORD).await;
    let limits = connect(&redis.url()).await.expect("connect");
    let loops = crate::event_loops::EventLoops::start(1, None).expect("a loop");
    // The first call on the loop goes through the shared connection and opens the loop's.
    let opened = Instant::now();
    loop {
        let here = limits.clone();
        let on_its_own = on_loop(&loops, async move {
            here.ping().await.expect("ping");
            here.connections.here().1
        })
        .await;
        if on_its_own {
            break;
        }
        assert!(opened.elapsed() < Duration::from_secs(10), "never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Redis restarted: the loop's connection still holds the old socket. Once the shared
    // connection (the health probe's) answers again, no call on the loop fails.
    redis.kill();
    redis.start_again().await;
    let back = Instant::now();
    while limits.ping().await.is_err() {
        assert!(back.elapsed() < Duration::from_secs(10), "never back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for attempt in 0..3 {
        let here = limits.clone();
        let answer = on_loop(&loops, async move {
            here.admit(&Admission {
                what: "",
                rate_limit: Some(5),
                ..ask("k", hold(100 + attempt))
            })
            .await
        })
        .await;
        assert!(
            matches!(answer, Ok(Outcome::NeedRebuild { .. })),
            "call {attempt} on the loop after the restart: {answer:?}"
        );
    }
    loops.shutdown();
}
