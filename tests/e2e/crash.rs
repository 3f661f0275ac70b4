//! What a `kill -9` may and may not lose: requests in flight are charged their holds at the
//! next start (SPEC §9.4's rule for a replica that vanishes, on one server), usage of
//! requests answered 50 ms before the kill is on disk, and a graceful stop leaves no hold
//! behind to charge twice.

use std::time::{Duration, Instant};

use gateway_tests::requests::{BUDGET_PRICES, chat, self_view};
use gateway_tests::{Gateway, MockProvider};
use serde_json::{Value, json};

/// A dime: what one request of [`dime`] holds.
const DIME_NANOS: i64 = 100_000_000;

fn dime(stream: bool) -> Value {
    json!({"model": "budget-model", "max_tokens": 1000, "stream": stream, "messages": []})
}

fn database(gateway: &Gateway) -> rusqlite::Connection {
    rusqlite::Connection::open(gateway.data_dir.join("gateway.db")).expect("open the database")
}

/// Rows in the holds journal (none if the table does not exist).
fn journaled_holds(gateway: &Gateway) -> i64 {
    database(gateway)
        .query_row("SELECT COUNT(*) FROM holds", [], |r| r.get(0))
        .unwrap_or(0)
}

/// (cost in nano-dollars, source, status) of each usage row of `key_id`.
fn usage_rows(gateway: &Gateway, key_id: &str) -> Vec<(i64, String, i64)> {
    database(gateway)
        .prepare("SELECT cost_nanos, source, status FROM usage WHERE key_id = ?1 ORDER BY id")
        .expect("prepare")
        .query_map([key_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// Polls `done` every 10 ms for up to 10 s; returns whether it came true.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Starts `n` requests of a dime that the mock holds (no response head for a minute), plus
/// one stream of a dime that stalls after its first event, and waits until the provider has
/// all of them. Returns what keeps them open.
async fn in_flight(
    gateway: &Gateway,
    mock: &MockProvider,
    key: &str,
    n: usize,
) -> (Vec<tokio::task::JoinHandle<()>>, reqwest::Response) {
    let base = gateway.proxy_url();
    let mut waiting = Vec::new();
    for _ in 0..n {
        let (base, key) = (base.clone(), key.to_owned());
        waiting.push(tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&key)
                .header("x-mock-headers-delay-ms", "60000")
                .json(&dime(false))
                .send()
                .await;
        }));
    }
    let mut stream = chat(&base, key, dime(true), &[("x-mock-stall", "1")]).await;
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
        .await
        .expect("the first event arrives")
        .expect("chunk");
    assert!(first.is_some(), "the stream is open");
    assert!(
        eventually(|| mock.hits() == n + 1).await,
        "the provider got {} of {} requests",
        mock.hits(),
        n + 1
    );
    (waiting, stream)
}

/// Three dimes against a $0.30 cap are in flight (two waiting for an answer, one stream
/// stalled mid-answer) when the daemon is killed. The provider bills them; so must the key:
/// before holds were journaled, the restarted daemon had forgotten them, the key's spend was
/// $0 and it admitted another $0.30 (a crash loop could spend past any cap).
#[tokio::test]
async fn requests_in_flight_at_a_kill_dash_nine_are_charged_their_holds_at_the_next_start() {
    let (mut gateway, mock) = Gateway::with_mock("", BUDGET_PRICES).await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "crash", "spend_limit_usd": 0.3}))
        .await;
    let (waiting, stream) = in_flight(&gateway, &mock, &key, 2).await;
    let view = self_view(&gateway.proxy_url(), &key).await;
    assert_eq!(view["requests_in_flight"], 3, "{view}");
    // The cap is full of holds: a fourth dime is refused.
    let fourth = chat(&gateway.proxy_url(), &key, dime(false), &[]).await;
    assert_eq!(fourth.status(), 402);

    // The writer journals a hold within two batches of its request being sent. (Without a
    // journal there is nothing to wait for: the assertions after the restart say what is
    // lost.)
    eventually(|| journaled_holds(&gateway) == 3).await;
    gateway.kill9().await;
    drop((waiting, stream));
    gateway.start_again().await;

    let rows = usage_rows(&gateway, &id);
    assert_eq!(
        rows,
        vec![(DIME_NANOS, "estimated".to_owned(), 0); 3],
        "one estimated row per request in flight, charged its hold"
    );
    assert_eq!(journaled_holds(&gateway), 0, "charged once, then gone");
    let view = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(
        (
            &view["spend_period_usd"],
            &view["request_count"],
            &view["state"]
        ),
        (&json!(0.3), &json!(3), &json!("exhausted")),
        "{view}"
    );
    let after = chat(&gateway.proxy_url(), &key, dime(false), &[]).await;
    assert_eq!(after.status(), 402, "the cap holds across the crash");
    let body: Value = after.json().await.expect("json");
    assert_eq!(body["error"]["code"], "spend_limit_exceeded");

    // Another start charges nothing again.
    gateway.restart().await;
    assert_eq!(usage_rows(&gateway, &id).len(), 3);
    let view = gateway.admin().get(&format!("/v1/keys/{id}")).await.body;
    assert_eq!(view["spend_period_usd"], json!(0.3), "{view}");
}

/// SIGTERM settles every request (those still open when the drain ends are cut and billed as
/// the meter bills them: here their free input), and the journal is empty after it, so the
/// next start charges nothing twice.
#[tokio::test]
async fn a_graceful_stop_settles_every_hold_and_leaves_none_to_charge() {
    let (mut gateway, mock) = Gateway::with_mock("drain_timeout = \"1s\"", BUDGET_PRICES).await;
    let (id, key, _) = gateway.admin().create_key(json!({"name": "drained"})).await;
    let (waiting, stream) = in_flight(&gateway, &mock, &key, 2).await;
    assert!(
        eventually(|| journaled_holds(&gateway) == 3).await,
        "the three requests in flight were never journaled"
    );
    let status = gateway.stop().await;
    assert!(status.success(), "{status:?}");
    drop((waiting, stream));
    assert_eq!(
        journaled_holds(&gateway),
        0,
        "the journal is empty after a stop"
    );
    let rows = usage_rows(&gateway, &id);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter().all(|(cost, _, _)| *cost < DIME_NANOS),
        "settled by the meter, not charged their holds: {rows:?}"
    );

    gateway.start_again().await;
    assert_eq!(usage_rows(&gateway, &id), rows, "nothing charged again");
    assert!(
        !gateway.logs().contains("were charged their holds"),
        "no crash to charge for"
    );
}

/// The kill -9 window: usage of a request answered 50 ms or more before the daemon dies is
/// on disk (the writer gathers for 10 ms, then commits), and its hold is not charged again.
#[tokio::test]
async fn usage_of_requests_answered_fifty_ms_before_a_kill_dash_nine_is_never_lost() {
    let (mut gateway, _mock) = Gateway::with_mock("", BUDGET_PRICES).await;
    let (id, key, _) = gateway.admin().create_key(json!({"name": "window"})).await;
    let base = gateway.proxy_url();
    let mut answers = Vec::new();
    for _ in 0..50 {
        let (base, key) = (base.clone(), key.clone());
        answers.push(tokio::spawn(async move {
            let response = chat(&base, &key, dime(false), &[]).await;
            let status = response.status();
            let body = response.bytes().await;
            status == 200 && body.is_ok()
        }));
    }
    for answer in answers {
        assert!(answer.await.expect("task"), "answered");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    gateway.kill9().await;
    gateway.start_again().await;
    let rows = usage_rows(&gateway, &id);
    assert_eq!(rows.len(), 50, "lost {} of 50", 50 - rows.len() as i64);
    assert!(
        rows.iter()
            .all(|(_, source, status)| source == "reported" && *status == 200),
        "{rows:?}"
    );
}
