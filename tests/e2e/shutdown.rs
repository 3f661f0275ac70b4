//! SIGTERM drains: in-flight streams finish, new requests are refused, exit 0 (SPEC §8).

use std::time::Duration;

use gateway_tests::{Gateway, GatewayOptions, MockProvider};
use serde_json::{Value, json};

#[tokio::test]
async fn sigterm_lets_twenty_open_streams_finish() {
    let mock = MockProvider::start().await;
    let mut gateway = Gateway::start_with(GatewayOptions {
        mock: Some(mock.clone()),
        proxy_config: "drain_timeout = \"20s\"".into(),
        ..Default::default()
    })
    .await;
    let (_, key, _) = gateway.admin().create_key(json!({"name": "drain"})).await;
    let base = gateway.proxy_url();
    let (first_event_tx, mut first_event_rx) = tokio::sync::mpsc::channel::<()>(20);
    let mut streams = Vec::new();
    for _ in 0..20 {
        let (base, key, tx) = (base.clone(), key.clone(), first_event_tx.clone());
        streams.push(tokio::spawn(async move {
            let mut response = reqwest::Client::new()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&key)
                .header("x-mock-events", "10")
                .header("x-mock-delay-ms", "150")
                .json(&json!({"model": "gpt-4o", "stream": true, "messages": []}))
                .send()
                .await
                .expect("stream request");
            assert_eq!(response.status(), 200);
            let mut body = Vec::new();
            let mut told = false;
            while let Some(chunk) = response
                .chunk()
                .await
                .expect("stream completes without error")
            {
                body.extend_from_slice(&chunk);
                if !told {
                    let _ = tx.send(()).await;
                    told = true;
                }
            }
            String::from_utf8(body).expect("utf-8")
        }));
    }
    for _ in 0..20 {
        first_event_rx.recv().await.expect("every stream starts");
    }

    let pid = gateway.pid().expect("pid");
    gateway_tests::gateway::signal(pid, rustix::process::Signal::TERM);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // While draining: health says so and new requests are refused with the SPEC error.
    let health = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("health");
    assert_eq!(health.status(), 503);
    let refused = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o", "messages": []}))
        .send()
        .await
        .expect("request during drain");
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "shutting_down");

    for stream in streams {
        let text = stream.await.expect("stream task");
        assert_eq!(text.matches("data: ").count(), 13, "every event arrived");
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
    let status = gateway.stop().await;
    assert!(status.success(), "exit 0 after draining: {status:?}");
    assert_eq!(
        mock.hits(),
        20,
        "the refused request never reached the provider"
    );
}

/// One server reports both backends up (SPEC §9's shape), on both listeners.
#[tokio::test]
async fn health_is_ok_while_serving() {
    let gateway = Gateway::start().await;
    let health = reqwest::get(format!("{}/healthz", gateway.proxy_url()))
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    assert_eq!(
        health.json::<Value>().await.expect("json"),
        json!({"status": "ok", "store": "ok", "limits": "ok"})
    );
    let admin = gateway.admin().get("/healthz").await;
    assert_eq!(admin.status, 200);
    assert_eq!(
        admin.body,
        json!({"status": "ok", "store": "ok", "limits": "ok"})
    );
}
