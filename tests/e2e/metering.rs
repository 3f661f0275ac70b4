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
