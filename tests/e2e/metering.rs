//! What a request is billed when its usage is hard to read or never comes (SPEC §5): the
//! usage rows themselves, read from the database, for the endings the spend tests do not
//! cover — a body ended by trailers, a compressed body, `stream_options: null`, a request the
//! provider got but never answered.

use std::time::{Duration, Instant};

use gateway_tests::mock::{
    COMPLETION_TOKENS, PROMPT_TOKENS, RawProvider, Recorded, openai_answer, raw_chunked,
};
use gateway_tests::requests::chat;
use gateway_tests::{Gateway, GatewayOptions};
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
async fn with_raw_openai(raw: &RawProvider) -> Gateway {
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
    let raw = RawProvider::start(answer).await;
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
    let raw = RawProvider::start(answer).await;
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
