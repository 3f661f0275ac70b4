//! Source-tree rules that clippy does not check (rust-analyzer's tidy test).

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let root = workspace_root();
    let mut missing = Vec::new();
    for dir in [
        "shared/src",
        "daemon/src",
        "cli/src",
        "tests/src",
        "tests/e2e",
    ] {
        for file in rust_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&file).expect("read");
            if !text.trim_start().starts_with("//!") {
                missing.push(
                    file.strip_prefix(&root)
                        .unwrap_or(&file)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` module doc: {missing:#?}"
    );
}

#[test]
fn no_banned_patterns() {
    let root = workspace_root();
    let mut found = Vec::new();
    let rules: &[(&str, &[&str])] = &[
        ("println!(", &["daemon/src"]),
        ("dbg!(", &["shared/src", "daemon/src", "cli/src"]),
        (
            concat!("#[should", "_panic"),
            &["shared/src", "daemon/src", "cli/src", "tests"],
        ),
        (
            concat!("#[ig", "nore"),
            &["shared/src", "daemon/src", "cli/src", "tests"],
        ),
        ("SystemTime::now", &["shared/src", "daemon/src"]),
    ];
    for (pattern, dirs) in rules {
        for dir in *dirs {
            for file in rust_files(&root.join(dir)) {
                let text = std::fs::read_to_string(&file).expect("read");
                // `eprintln!` (stderr) is allowed; `println!` (stdout) is not.
                let hit = text
                    .match_indices(pattern)
                    .any(|(at, _)| !text[..at].ends_with('e'));
                if hit {
                    found.push(format!(
                        "{pattern} in {}",
                        file.strip_prefix(&root).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn timestamp_now_is_only_read_in_the_clock() {
    let root = workspace_root();
    for file in rust_files(&root.join("daemon/src")) {
        if file.ends_with("clock.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            !text.contains("Timestamp::now()"),
            "{} reads the system clock",
            file.display()
        );
    }
}
