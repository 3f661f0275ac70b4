//! The README's worked cluster example ("Running more than one gatewayd"), run as written:
//! its `[cluster]` section and its `gwctl keys create` line are read from README.md, two
//! replicas share a real PostgreSQL and a real Redis, and a round-robin client that skips
//! replicas whose `/healthz` is not 200 plays the load balancer. If the README's example
//! stops working (a setting renamed, a flag changed), this test fails.

use std::time::Duration;

use gateway_tests::Cluster;
use gateway_tests::requests::chat_gpt4o;
use serde_json::Value;

/// The README's text between `heading` and the next `### ` heading.
fn readme_section(heading: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme.find(heading).expect("the worked example's heading");
    let rest = &readme[start + heading.len()..];
    let end = rest.find("\n### ").unwrap_or(rest.len());
    rest[..end].to_owned()
}

/// The first fenced block of `language` in `text`.
fn fenced(text: &str, language: &str) -> String {
    let open = format!("```{language}\n");
    let start = text.find(&open).expect("a fenced block") + open.len();
    let end = start + text[start..].find("```").expect("its end");
    text[start..end].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_cluster_example_works_as_written() {
    let section = readme_section("### A worked example: two replicas, one PostgreSQL, one Redis");
    let config: toml::Table = fenced(&section, "toml")
        .parse()
        .expect("the example's TOML");
    let cluster_section = config["cluster"].as_table().expect("[cluster]");
    assert!(cluster_section.contains_key("postgres_url_file"));
    assert!(cluster_section.contains_key("redis_url_file"));
    // The example's own settings beyond where the URLs live (the test's URL files stand in
    // for /etc/gatewayd/*.url; data_dir, sockets and ports are the harness's).
    let extra: String = cluster_section
        .iter()
        .filter(|(name, _)| !name.ends_with("_url_file") && !name.ends_with("_url_env"))
        .map(|(name, value)| format!("{name} = {value}\n"))
        .collect();
    let mut cluster = Cluster::start(0).await;
    cluster.add(&extra).await;
    cluster.add(&extra).await;
    let (a, b) = (&cluster.replicas[0], &cluster.replicas[1]);

    // `gwctl cluster status`: both replicas (once a heartbeat, every 10 s, has read the
    // other's), PostgreSQL and Redis answering.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = a.gwctl(&["cluster", "status", "-o", "json"]).await;
        let status = status.assert_success().json();
        if status["replicas"].as_array().map(Vec::len) == Some(2) {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status["mode"], "cluster", "{status}");
    assert_eq!(
        status["backends"],
        serde_json::json!({
            "store": {"kind": "postgres", "status": "ok"},
            "limits": {"kind": "redis", "status": "ok"}
        })
    );

    // The example's `gwctl keys create` line, as written.
    let commands = fenced(&section, "sh");
    let create = commands
        .lines()
        .find(|line| line.contains(" keys create "))
        .expect("a keys create line");
    let args: Vec<&str> = create
        .split("keys create")
        .nth(1)
        .expect("its arguments")
        .split('#')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let mut argv = vec!["keys", "create", "-o", "json"];
    argv.extend(&args);
    let created = a.gwctl(&argv).await;
    let created = created.assert_success().json();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let rpm = created["rate_limit_rpm"]
        .as_u64()
        .expect("the example's key has a rate limit");

    // The load balancer: round robin over the replicas whose /healthz answers 200.
    let healthy = {
        let mut healthy = Vec::new();
        for replica in [a, b] {
            let health = reqwest::get(format!("{}/healthz", replica.proxy_url()))
                .await
                .expect("healthz");
            assert_eq!(health.status(), 200);
            let body: Value = health.json().await.expect("json");
            assert_eq!(body["limits"], "ok", "{body}");
            healthy.push(replica.proxy_url());
        }
        healthy
    };
    // The key's whole minute, spread over both replicas; then one more, refused by either.
    let mut ok = 0;
    for i in 0..rpm {
        let url = &healthy[usize::try_from(i).unwrap_or(0) % healthy.len()];
        let status = chat_gpt4o(url, &secret).await.status().as_u16();
        assert_eq!(status, 200, "request {i} of {rpm}");
        ok += 1;
    }
    for url in &healthy {
        let refused = chat_gpt4o(url, &secret).await;
        assert_eq!(
            refused.status(),
            429,
            "the {rpm}-a-minute window is the cluster's"
        );
    }
    eprintln!("readme example: {ok} admitted across two replicas, then 429 on both");

    // Both replicas show the same spend for it (self-service and the management view).
    let mut seen = Vec::new();
    for replica in [a, b] {
        let view = gateway_tests::requests::self_view(&replica.proxy_url(), &secret).await;
        seen.push((
            view["spend_period_usd"].clone(),
            view["rate_limit_remaining"].clone(),
        ));
    }
    assert_eq!(seen[0], seen[1], "every replica answers the same numbers");
    assert_eq!(seen[0].1, 0);
}
