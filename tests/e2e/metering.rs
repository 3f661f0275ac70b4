//! What a request is billed when its usage is hard to read or never comes (SPEC §5): the
//! usage rows themselves, read from the database, for the endings the spend tests do not
//! cover — a body ended by trailers, a compressed body, `stream_options: null`, a request the
//! provider got but never answered.

use std::time::{Duration, Instant};

use gateway_tests::mock::{COMPLETION_TOKENS, PROMPT_TOKENS, Recorded, openai_answer, raw_chunked};
use gateway_tests::requests::{anthropic_messages, chat, self_view};
use gateway_tests::{Gateway, GatewayOptions, MockProvider};
use serde_json::{Value, json};

/// One usage row, as stored.
#[derive(Clone, Debug)]
struct Row {
    status: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_nanos: i64,
    source: String,
}

/// The key's usage rows in the order they were written, once there are `count` of them (the
/// writer commits in batches).
async fn rows(gateway: &Gateway, key_id: &str, count: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = read_rows(gateway, key_id);
        if rows.len() >= count {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} usage rows: {rows:?}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn read_rows(gateway: &Gateway, key_id: &str) -> Vec<Row> {
    let conn = rusqlite::Connection::open_with_flags(
        gateway.data_dir.join("gateway.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open database");
    let mut statement = conn
        .prepare(
            "SELECT status, input_tokens, output_tokens, cost_nanos, source FROM usage \
             WHERE key_id = ?1 ORDER BY id",
        )
        .expect("prepare");
    statement
        .query_map([key_id], |row| {
            Ok(Row {
                status: row.get(0)?,
                input_tokens: row.get(1)?,
                output_tokens: row.get(2)?,
                cost_nanos: row.get(3)?,
                source: row.get(4)?,
            })
        })
        .expect("query")
        .map(|row| row.expect("row"))
        .collect()
}

/// A gateway whose OpenAI is `raw`.
async fn with_raw_openai(raw: &MockProvider) -> Gateway {
    Gateway::start_with(GatewayOptions {
        extra_config: format!(
            "[providers.openai]\nbase_url = {:?}\napi_key_env = \"GW_TEST_OPENAI_KEY\"\n",
            raw.base_url("openai")
        ),
        ..Default::default()
    })
    .await
}

/// The row of a request billed exactly what the mock reported.
fn assert_reported(row: &Row) {
    assert_eq!(row.source, "reported", "{row:?}");
    assert_eq!(
        (row.input_tokens, row.output_tokens),
        (PROMPT_TOKENS as i64, COMPLETION_TOKENS as i64),
        "{row:?}"
    );
}

/// `"stream_options": null` is no options: the gateway asks for usage, hides the usage chunk
/// from the client and bills what was reported.
#[tokio::test]
async fn a_stream_with_null_stream_options_is_asked_for_usage() {
    let (gateway, mock) = Gateway::with_mock("", "").await;
    let (id, key, _) = gateway.admin().create_key(json!({"name": "nulls"})).await;
    let response = chat(
        &gateway.proxy_url(),
        &key,
        json!({"model": "gpt-4o", "stream": true, "stream_options": null, "messages": []}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(
        !text.contains("\"usage\""),
        "the usage chunk the client did not ask for is hidden: {text}"
    );
    let sent: Value = mock.last().json();
    assert_eq!(
        sent["stream_options"],
        json!({"include_usage": true}),
        "{sent}"
    );
    let rows = rows(&gateway, &id, 1).await;
    assert_eq!(rows[0].status, 200);
    assert_reported(&rows[0]);
    assert!(rows[0].cost_nanos > 0);
}

/// A chunked body that ends with trailers is complete: billed as reported, JSON and SSE.
#[tokio::test]
async fn a_body_ended_by_trailers_is_billed_as_reported() {
    fn answer(request: &Recorded) -> Vec<u8> {
        let stream = request.json()["stream"] == true;
        let content_type = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        raw_chunked(
            &format!("content-type: {content_type}\r\ntrailer: x-checksum\r\n"),
            &openai_answer("gpt-4o", stream),
            "x-checksum: 1234\r\n",
        )
    }
    let raw = MockProvider::scripted(answer).await;
    let gateway = with_raw_openai(&raw).await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "trailers"}))
        .await;
    for stream in [false, true] {
        let response = chat(
            &gateway.proxy_url(),
            &key,
            json!({"model": "gpt-4o", "stream": stream, "messages": []}),
            &[],
        )
        .await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("the whole body");
        if stream {
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        } else {
            let body: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(body["usage"]["completion_tokens"], COMPLETION_TOKENS);
        }
    }
    let rows = rows(&gateway, &id, 2).await;
    for row in &rows {
        assert_eq!(row.status, 200);
        assert_reported(row);
    }
}

/// A gzip body as a provider or CDN would send it (only its magic matters: nobody unpacks it).
const GZIP: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03compressed usage";

/// Providers are asked for plain text (a request without `Accept-Encoding` accepts any
/// coding, and a CDN may compress); a body compressed all the same reaches the client
/// untouched and is billed the output its reservation allowed, as estimated.
#[tokio::test]
async fn providers_are_asked_for_plain_text_and_a_compressed_body_is_billed_its_bound() {
    fn answer(request: &Recorded) -> Vec<u8> {
        let plain = request.header("accept-encoding") == Some("identity")
            && request.header("x-mock-compress").is_none();
        let (coding, body) = if plain {
            ("", openai_answer("gpt-4o", false))
        } else {
            ("content-encoding: gzip\r\n", GZIP.to_vec())
        };
        let mut out = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{coding}content-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
    let raw = MockProvider::scripted(answer).await;
    let gateway = with_raw_openai(&raw).await;
    let (id, key, _) = gateway.admin().create_key(json!({"name": "codings"})).await;
    let request = json!({"model": "gpt-4o", "max_tokens": 100, "messages": []});

    let response = chat(
        &gateway.proxy_url(),
        &key,
        request.clone(),
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-encoding").is_none());
    let body: Value = response.json().await.expect("plain JSON");
    assert_eq!(body["usage"]["completion_tokens"], COMPLETION_TOKENS);
    assert_eq!(
        raw.received()[0].header("accept-encoding"),
        Some("identity"),
        "the client's codings are not passed on"
    );

    let response = chat(
        &gateway.proxy_url(),
        &key,
        request,
        &[("x-mock-compress", "1")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-encoding")
            .map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    assert_eq!(response.bytes().await.expect("body"), GZIP, "untouched");

    let rows = rows(&gateway, &id, 2).await;
    assert_reported(&rows[0]);
    let compressed = &rows[1];
    assert_eq!(compressed.source, "estimated", "{compressed:?}");
    assert_eq!(compressed.output_tokens, 100, "max_tokens: {compressed:?}");
    assert!(compressed.input_tokens > 0, "{compressed:?}");
    // gpt-4o: $10 per million output tokens.
    assert!(compressed.cost_nanos > 100 * 10_000, "{compressed:?}");
}

/// A client that leaves after the provider got its request, before the response head, is
/// billed the input estimate: the provider bills the prompt either way (SPEC §5: never $0
/// when tokens flowed). The reservation is released.
#[tokio::test]
async fn a_client_gone_before_the_response_head_is_billed_its_input() {
    let (gateway, mock) = Gateway::with_mock("", "").await;
    let (id, key, _) = gateway.admin().create_key(json!({"name": "leaver"})).await;
    let base = gateway.proxy_url();
    let request = {
        let (base, key) = (base.clone(), key.clone());
        tokio::spawn(async move {
            chat(
                &base,
                &key,
                json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "a prompt the provider reads"}]}),
                &[("x-mock-headers-delay-ms", "5000")],
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.hits() == 0 {
        assert!(Instant::now() < deadline, "the mock never got the request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    request.abort();
    let left = Instant::now();

    let rows = rows(&gateway, &id, 1).await;
    assert!(
        left.elapsed() < Duration::from_secs(4),
        "settled when the client left, not when the provider answered"
    );
    let row = &rows[0];
    assert_eq!(row.status, 0, "no response: {row:?}");
    assert_eq!(row.source, "estimated", "{row:?}");
    assert_eq!(row.output_tokens, 0, "{row:?}");
    assert!(row.input_tokens > 0 && row.cost_nanos > 0, "{row:?}");
    let view = self_view(&base, &key).await;
    assert_eq!(view["requests_in_flight"], 0, "{view}");
    assert_eq!(view["reserved_usd"], 0.0, "{view}");
}

/// After the request was sent, a provider that times out or drops the connection without an
/// answer is billed the input estimate; one that could not be reached at all costs nothing.
#[tokio::test]
async fn unanswered_requests_are_billed_their_input_and_unreachable_ones_nothing() {
    // A port nothing listens on: bind one, learn it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mock = MockProvider::start().await;
    // Reads each request and closes the connection without an answer.
    let silent = MockProvider::scripted(|_| Vec::new()).await;
    let gateway = Gateway::start_with(GatewayOptions {
        proxy_config: "upstream_idle_timeout = \"400ms\"".into(),
        extra_config: format!(
            "[providers.openai]\nbase_url = \"http://{closed}\"\napi_key_env = \"GW_TEST_OPENAI_KEY\"\n\
             [providers.anthropic]\nbase_url = {:?}\napi_key_env = \"GW_TEST_ANTHROPIC_KEY\"\n\
             [providers.gemini]\nbase_url = {:?}\napi_key_env = \"GW_TEST_GEMINI_KEY\"\n",
            mock.base_url("anthropic"),
            silent.base_url("gemini"),
        ),
        ..Default::default()
    })
    .await;
    let (id, key, _) = gateway
        .admin()
        .create_key(json!({"name": "unanswered"}))
        .await;
    let base = gateway.proxy_url();

    let refused = chat(&base, &key, json!({"model": "gpt-4o", "messages": []}), &[]).await;
    assert_eq!(refused.status(), 502);

    let timed_out = anthropic_messages(
        &base,
        &key,
        json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}),
        &[("x-mock-headers-delay-ms", "3000")],
    )
    .await;
    assert_eq!(timed_out.status(), 504);

    let dropped = reqwest::Client::new()
        .post(format!(
            "{base}/gemini/v1beta/models/gemini-2.0-flash:generateContent"
        ))
        .header("x-goog-api-key", &key)
        .json(&json!({"contents": [{"parts": [{"text": "hello"}]}]}))
        .send()
        .await
        .expect("request");
    assert_eq!(dropped.status(), 502);
    assert_eq!(silent.received().len(), 1, "the provider got it");

    let rows = rows(&gateway, &id, 3).await;
    let (refused, timed_out, dropped) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(refused.status, 502);
    assert_eq!(
        (
            refused.input_tokens,
            refused.cost_nanos,
            refused.source.as_str()
        ),
        (0, 0, "reported"),
        "never reached the provider: {refused:?}"
    );
    for row in [timed_out, dropped] {
        assert_eq!(row.source, "estimated", "{row:?}");
        assert!(row.input_tokens > 0 && row.cost_nanos > 0, "{row:?}");
        assert_eq!(row.output_tokens, 0, "{row:?}");
    }
    assert_eq!(timed_out.status, 504);
    assert_eq!(dropped.status, 502);
}
