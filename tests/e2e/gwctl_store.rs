//! gwctl against what a store really holds (issue #20, point 9): text written before the
//! daemon refused control characters, shown without a raw control byte reaching the
//! terminal; and a list of 100,000 keys printed page by page in flat memory.
//!
//! Both start from rows written straight into the daemon's SQLite store (its own schema, made
//! by its migrations on a first start), because the API refuses such names and creating a
//! hundred thousand keys one request at a time would take minutes.

use std::path::Path;
use std::process::Stdio;

use gateway_tests::{Gateway, GwctlOutput, binaries};
use serde_json::json;

/// A name that retitles the terminal (OSC 0 … BEL), clears the screen through a C1 CSI,
/// reverses the rest of the line (RLO), returns the carriage and ends in DEL.
pub const HOSTILE_NAME: &str = "evil\u{1b}]0;pwned\u{7}\u{9b}2J\u{202e}exe.txt\r\u{7f}";
/// How gwctl shows it in tables: every control character escaped, visibly, one way.
pub const HOSTILE_NAME_SHOWN: &str = r"evil\u{1b}]0;pwned\u{7}\u{9b}2J\u{202e}exe.txt\u{d}\u{7f}";
pub const HOSTILE_GLOB: &str = "gpt-\u{1b}[31m*\u{2066}";
pub const HOSTILE_GLOB_SHOWN: &str = r"gpt-\u{1b}[31m*\u{2066}";

/// The characters that must never reach a terminal from the daemon: C0 (a line break is
/// gwctl's own), DEL, C1, and the bidi embeddings, overrides and isolates.
pub fn is_terminal_control(c: char) -> bool {
    (c.is_control() && c != '\n') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[track_caller]
fn assert_terminal_safe(what: &str, text: &str) {
    let found: Vec<char> = text.chars().filter(|&c| is_terminal_control(c)).collect();
    assert!(
        found.is_empty(),
        "{what} wrote raw control characters {found:?}:\n{}",
        text.escape_debug()
    );
}

#[track_caller]
fn assert_output_safe(what: &str, out: &GwctlOutput) {
    assert_terminal_safe(&format!("{what} (stdout)"), &out.stdout);
    assert_terminal_safe(&format!("{what} (stderr)"), &out.stderr);
}

/// Stops the daemon, runs `write` on its database, starts it again (it loads keys at start).
pub async fn write_store(gateway: &mut Gateway, write: impl FnOnce(&rusqlite::Transaction<'_>)) {
    let status = gateway.stop().await;
    assert!(status.success(), "gatewayd stopped: {status:?}");
    let mut conn = rusqlite::Connection::open(gateway.data_dir.join("gateway.db")).expect("open");
    let tx = conn.transaction().expect("transaction");
    write(&tx);
    tx.commit().expect("commit");
    drop(conn);
    gateway.start_again().await;
}

#[tokio::test]
async fn issue20_control_characters_from_the_store_never_reach_the_terminal() {
    let mut gateway = Gateway::start().await;
    let admin = gateway.admin();
    let (id, _, _) = admin.create_key(json!({"name": "placeholder"})).await;
    let token = admin
        .post("/v1/admin-tokens", json!({"name": "placeholder-token"}))
        .await;
    assert_eq!(token.status, 201, "{:?}", token.body);
    write_store(&mut gateway, |tx| {
        tx.execute(
            "UPDATE keys SET name = ?1, allowed_models = ?2 WHERE id = ?3",
            rusqlite::params![HOSTILE_NAME, json!([HOSTILE_GLOB]).to_string(), id],
        )
        .expect("hostile key");
        tx.execute("UPDATE admin_tokens SET name = ?1", [HOSTILE_NAME])
            .expect("hostile token");
        tx.execute(
            "UPDATE audit SET actor = ?1, details = ?2 WHERE key_id = ?3",
            rusqlite::params![HOSTILE_NAME, json!({"name": HOSTILE_NAME}).to_string(), id],
        )
        .expect("hostile audit row");
        let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
        tx.execute(
            "INSERT INTO usage_daily VALUES (?1, ?2, 'openai', ?3, 1, 10, 20, 0, 0, 1000, 0, 0)",
            rusqlite::params![id, today, HOSTILE_GLOB],
        )
        .expect("hostile usage row");
    })
    .await;

    // Tables and labelled lines: escaped, visibly.
    for args in [
        &["keys", "list"][..],
        &["keys", "show", &id],
        &["keys", "show", HOSTILE_NAME],
        &["keys", "edit", &id, "--rpm", "5"],
        &["keys", "usage", &id],
        &["audit"],
        &["audit", "--key", HOSTILE_NAME],
        &["admin-tokens", "list"],
    ] {
        let out = gateway.gwctl(args).await;
        out.assert_success();
        assert_output_safe(&format!("{args:?}"), &out);
        let shown = match args[0] {
            "keys" if args[1] == "usage" => HOSTILE_GLOB_SHOWN,
            _ => HOSTILE_NAME_SHOWN,
        };
        assert!(
            out.stdout.contains(shown),
            "{args:?} does not show {shown}:\n{}",
            out.stdout
        );
    }
    let details = gateway.gwctl(&["keys", "show", &id]).await;
    assert!(details.stdout.contains(HOSTILE_GLOB_SHOWN), "{details:?}");

    // Messages that name the key: the question gwctl cannot ask without a terminal.
    let refused = gateway.gwctl(&["keys", "revoke", &id]).await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert_output_safe("keys revoke without --yes", &refused);
    assert!(refused.stderr.contains(HOSTILE_NAME_SHOWN), "{refused:?}");

    // JSON: escaped as JSON (`\u001b`, `\u009b`, `\u202e`), so a script reads back exactly
    // what is stored, and a person reading it in a terminal sees no control byte either.
    for args in [
        &["-o", "json", "keys", "list"][..],
        &["-o", "json", "keys", "show", &id],
        &["-o", "json", "audit"],
        &["-o", "json", "admin-tokens", "list"],
        &["-o", "json", "keys", "usage", &id],
    ] {
        let out = gateway.gwctl(args).await;
        out.assert_success();
        assert_output_safe(&format!("{args:?}"), &out);
        let text = out.json().to_string();
        assert!(
            text.contains(&json!(HOSTILE_NAME).to_string())
                || text.contains(&json!(HOSTILE_GLOB).to_string()),
            "{args:?} lost the stored text:\n{}",
            out.stdout
        );
    }
    let listed = gateway.gwctl(&["-o", "json", "keys", "list"]).await.json();
    assert_eq!(listed["keys"][0]["name"], HOSTILE_NAME);
    assert_eq!(listed["keys"][0]["allowed_models"], json!([HOSTILE_GLOB]));
}

/// Enough keys that holding them all shows: 100 pages of the daemon's largest page.
const MANY_KEYS: usize = 100_000;
/// The bound from issue #20: `keys list` with 100k keys once held 314 MB.
const MAX_RSS_KIB: u64 = 50 * 1024;

#[tokio::test]
async fn issue20_keys_list_streams_a_hundred_thousand_keys_in_flat_memory() {
    let mut gateway = Gateway::start().await;
    write_store(&mut gateway, |tx| {
        let mut insert = tx
            .prepare(
                "INSERT INTO keys (id, hash, prefix, name, allowed_providers, allowed_models, \
                 allowed_ips, rate_limit_rpm, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, '[]', '[\"gpt-4o*\",\"claude-*\"]', '[]', 60, ?5, ?5)",
            )
            .expect("prepare");
        for n in 0..MANY_KEYS {
            insert
                .execute(rusqlite::params![
                    format!("key_{n:020}"),
                    format!("{n:064x}"),
                    format!("sk-proxy-{:04}", n % 10_000),
                    format!("service-{n}"),
                    "2027-01-01T00:00:00Z",
                ])
                .expect("insert");
        }
    })
    .await;

    let table = peak_rss(&gateway.socket, &["keys", "list"]).await;
    eprintln!(
        "gwctl keys list, {MANY_KEYS} keys: peak RSS {} KiB",
        table.peak_kib
    );
    assert_eq!(table.lines, MANY_KEYS + 1, "a header and a row a key");
    assert!(
        table.peak_kib <= MAX_RSS_KIB,
        "`gwctl keys list` peaked at {} KiB with {MANY_KEYS} keys (bound {MAX_RSS_KIB} KiB)",
        table.peak_kib
    );
    let json = peak_rss(&gateway.socket, &["-o", "json", "keys", "list"]).await;
    eprintln!(
        "gwctl -o json keys list, {MANY_KEYS} keys: peak RSS {} KiB",
        json.peak_kib
    );
    assert!(
        json.peak_kib <= MAX_RSS_KIB,
        "`gwctl -o json keys list` peaked at {} KiB with {MANY_KEYS} keys (bound {MAX_RSS_KIB} KiB)",
        json.peak_kib
    );
    let document = json.document.expect("one JSON document");
    assert_eq!(document.keys.len(), MANY_KEYS);
    assert_eq!(document.next_cursor, None);
}

/// What a run printed (counted as it streamed, never kept) and its peak resident set.
struct Measured {
    peak_kib: u64,
    lines: usize,
    document: Option<KeyListShape>,
}

/// The shape of `keys list`'s JSON, read without keeping the keys.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyListShape {
    keys: Vec<serde::de::IgnoredAny>,
    next_cursor: Option<String>,
}

/// Runs gwctl under GNU time, which reads the child's peak RSS from `wait4`'s rusage: exact
/// and after the fact, where polling `/proc` could miss the peak. (The workspace forbids the
/// `unsafe` that calling `wait4` here would take, and rustix does not wrap it.)
async fn peak_rss(socket: &Path, args: &[&str]) -> Measured {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "this test measures memory with GNU time: install it (apt-get install time)"
    );
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let mut child = std::process::Command::new(time)
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(binaries::gwctl())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("GWCTL_SOCKET")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running gwctl under /usr/bin/time");
    let stdout = child.stdout.take().expect("piped stdout");
    let is_json = args.contains(&"json");
    // Read on a thread as it comes: gwctl writes as it pages, and a full pipe would stop it.
    let reader = std::thread::spawn(move || {
        let stdout = std::io::BufReader::new(stdout);
        if is_json {
            let document = serde_json::from_reader::<_, KeyListShape>(stdout);
            (0, Some(document.map_err(|e| e.to_string())))
        } else {
            use std::io::BufRead;
            let mut n_lines = 0;
            for line in stdout.lines() {
                line.expect("a line of UTF-8");
                n_lines += 1;
            }
            (n_lines, None)
        }
    });
    let (lines, document) = tokio::task::spawn_blocking(move || reader.join())
        .await
        .expect("join")
        .expect("reader");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("gwctl ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "gwctl {args:?} failed: {stderr}");
    let report = std::fs::read_to_string(report.path()).expect("time's report");
    let peak_kib = report
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in time's report: {report:?}"));
    Measured {
        peak_kib,
        lines,
        document: document.map(|d| d.unwrap_or_else(|e| panic!("not one JSON document: {e}"))),
    }
}
