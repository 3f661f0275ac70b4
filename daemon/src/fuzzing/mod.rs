//! The entry points of fuzzing: one function per `cargo fuzz` target in `fuzz/`, each driving
//! the real parser with arbitrary bytes and asserting what must hold for every input.
//!
//! Why one module: the parsers are private to their modules, and the fuzz targets (a crate of
//! their own, built with libFuzzer on a nightly-flagged toolchain) and the corpus replay test
//! below (plain `cargo test`, stable) must exercise the same code with the same checks. Both
//! call these functions, so an input the fuzzer kept is replayed in CI without libFuzzer.
//!
//! A function never reports bad input as an error (bad input is the point); it panics only
//! when an invariant breaks, and that panic is the finding. Inputs that choose a variant (a
//! provider, a format, a method) start with one selector byte read as `byte - b'0'`, so that
//! hand-written seeds pick theirs with an ASCII digit.

mod config_file;
mod management;
mod request;
mod usage;

pub use config_file::config_file;
pub use management::{management_body, money, period};
pub use request::{client_headers, request_body, route};
pub use usage::{gemini_array, usage_observer};

/// A target's function: it takes any bytes and panics only on a finding.
pub type Target = fn(&[u8]);

/// Every target: its name (`fuzz/fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/`) and the
/// function both the target and the replay test call.
pub const TARGETS: &[(&str, Target)] = &[
    ("usage_observer", usage_observer),
    ("gemini_array", gemini_array),
    ("request_body", request_body),
    ("route", route),
    ("client_headers", client_headers),
    ("config_file", config_file),
    ("money", money),
    ("period", period),
    ("management_body", management_body),
];

/// The selector byte of an input (see the module doc) and the rest of it.
fn selector(data: &[u8]) -> Option<(u8, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((first.wrapping_sub(b'0'), rest))
}

/// Three ways to cut `bytes` into chunks, the first of them whole: a parser fed any of them
/// must come to the same result. The others are one byte at a time, and chunks of 1 to 16
/// bytes whose lengths are read from the bytes themselves (a split that varies with the input
/// without a second input to choose it).
fn splits(bytes: &[u8]) -> [Vec<&[u8]>; 3] {
    let mut varied = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + usize::from(bytes[at] % 16) + 1).min(bytes.len());
        varied.push(&bytes[at..end]);
        at = end;
    }
    [vec![bytes], bytes.chunks(1).collect(), varied]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .join("fuzz")
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
            .map(|entry| {
                entry
                    .expect("directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    /// Every file of every target's corpus, through the same function the fuzz target calls:
    /// what the fuzzer once found (and was fixed) stays fixed, without libFuzzer or nightly.
    #[test]
    fn every_corpus_file_replays_without_a_finding() {
        let mut failures = Vec::new();
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let dir = fuzz_dir().join("corpus").join(name);
            let files = names_in(&dir);
            assert!(!files.is_empty(), "{}: no seed inputs", dir.display());
            for file in files {
                let path = dir.join(&file);
                let data = std::fs::read(&path).expect("corpus file");
                // Each file on its own: one finding must not hide the others.
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    failures.push(path.display().to_string());
                }
                replayed += 1;
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {replayed} corpus inputs fail (the panic of each is printed above): {failures:#?}",
            failures.len()
        );
    }

    /// The table, the fuzz targets and the corpus directories name the same targets, so a
    /// target cannot be fuzzed without being replayed, or replayed from a corpus nobody fuzzes.
    #[test]
    fn every_target_has_a_fuzz_target_and_a_corpus() {
        let mut table: Vec<String> = TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
        table.sort();
        assert_eq!(names_in(&fuzz_dir().join("corpus")), table);
        let targets: Vec<String> = names_in(&fuzz_dir().join("fuzz_targets"))
            .into_iter()
            .filter_map(|file| file.strip_suffix(".rs").map(str::to_owned))
            .collect();
        assert_eq!(targets, table);
    }

    #[test]
    fn splits_cover_the_bytes_each_way() {
        let bytes = b"data: x\n\n\x05abcdefghij";
        for split in splits(bytes) {
            assert_eq!(split.concat(), bytes.to_vec());
        }
        assert_eq!(splits(b"")[2].len(), 0);
    }
}
