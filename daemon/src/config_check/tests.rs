//! The check's tests: every error found with its line, and none made up by the recovery.

use super::*;

fn lines(findings: &[Finding]) -> Vec<Option<usize>> {
    findings.iter().map(|f| f.line).collect()
}

fn sorted_lines(report: &Report) -> Vec<usize> {
    let mut lines: Vec<usize> = report.errors.iter().filter_map(|f| f.line).collect();
    lines.sort_unstable();
    lines
}

#[test]
fn a_valid_file_has_no_errors() {
    let report = check_text(
        "data_dir = \"/nonexistent/gw-check\"\n[proxy]\nlisten = \"127.0.0.1:8080\"\n\
         [[prices]]\nmodel = \"my-*\"\ninput = 1\noutput = 2\nmax_output_tokens = 100\n",
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[test]
fn every_error_is_found_with_its_line() {
    let text = "worker_threads = 5000\n\
                [proxy]\n\
                listen = \"everywhere\"\n\
                trusted_proxy = []\n\
                max_connections = 0\n\
                [admin]\n\
                socket_mode = \"0666\"\n\
                [providers.gemini]\n\
                base_url = \"ftp://example.com\"\n\
                [spend]\n\
                clamp_output = \"yes\"\n";
    let report = check_text(text);
    assert_eq!(
        sorted_lines(&report),
        vec![1, 3, 4, 5, 7, 8, 11],
        "{:#?}",
        report.errors
    );
    for finding in &report.errors {
        let line = finding.line.expect("a line");
        assert!(
            finding.message.starts_with(&format!("line {line}")),
            "{finding:?}"
        );
    }
    let all: String = report
        .errors
        .iter()
        .map(|f| f.message.clone() + "\n")
        .collect();
    for needle in [
        "worker_threads",
        "proxy.listen",
        "trusted_proxy",
        "proxy.max_connections",
        "admin.socket_mode",
        "providers.gemini",
        "clamp_output",
    ] {
        assert!(all.contains(needle), "{needle}: {all}");
    }
}

/// A refused `[[prices]]` entry is taken out whole: what is left of it would only be
/// "missing field" errors the check itself caused.
#[test]
fn a_bad_price_entry_is_one_error() {
    let text = "[[prices]]\nmodel = \"a-*\"\ninput = 1\noutput = 2\nmax_output_tokens = 9\n\
                [[prices]]\nmodel = \"b-*\"\ninput = -1\noutput = 2\nmax_output_tokens = 9\n\
                [proxy]\nlisten = \"nowhere\"\n";
    let report = check_text(text);
    assert_eq!(report.errors.len(), 2, "{:#?}", report.errors);
    assert!(
        report
            .errors
            .iter()
            .all(|f| !f.message.contains("missing field"))
    );
    assert!(sorted_lines(&report).contains(&12), "{:#?}", report.errors);
}

#[test]
fn a_syntax_error_ends_the_check_naming_its_line() {
    let report = check_text("[proxy]\nlisten = \"127.0.0.1:8080\"\nmax_connections = = 3\n");
    assert_eq!(lines(&report.errors), vec![Some(3)], "{:#?}", report.errors);
    assert!(report.errors[0].message.contains("TOML parse error"));
}

/// `[cluster]` with a variable that is not set: the missing URL is the error; the section
/// "needing" the setting once it is taken out is not reported again.
/// The check does not run in the daemon's environment (install.sh's shell, not the unit's
/// `Environment=`): a `[cluster]` variable unset here is a warning with its line, and the
/// rest of the section is still checked (the lease below its minimum).
#[test]
fn a_cluster_variable_unset_here_is_a_warning_and_the_rest_is_checked() {
    let text = "[cluster]\npostgres_url_env = \"GW_CHECK_UNSET_PG_7c1\"\n\
                redis_url_env = \"GW_CHECK_UNSET_REDIS_7c1\"\nhold_lease = \"1s\"\n";
    let report = check_text(text);
    assert_eq!(lines(&report.errors), vec![Some(4)], "{:#?}", report.errors);
    assert!(report.errors[0].message.contains("hold_lease"));
    let unset: Vec<_> = report
        .warnings
        .iter()
        .filter(|w| w.message.contains("is not set here"))
        .collect();
    assert_eq!(
        lines(&unset.iter().map(|w| (*w).clone()).collect::<Vec<_>>()),
        vec![Some(2), Some(3)],
        "{:#?}",
        report.warnings
    );
    assert!(unset[0].message.contains("GW_CHECK_UNSET_PG_7c1"));
    assert!(unset[1].message.contains("GW_CHECK_UNSET_REDIS_7c1"));
}

/// A variable that is set is read as at start-up: no usable URL in it is an error, and the
/// URL (password and all) is not echoed.
#[test]
fn a_cluster_variable_set_to_no_usable_url_is_an_error() {
    let text = "[cluster]\npostgres_url_env = \"GW_PG\"\nredis_url_env = \"GW_REDIS\"\n";
    let env = |name: &str| match name {
        "GW_PG" => Ok("mysql://gw:Qm4xT9pw@db/gw".to_owned()),
        "GW_REDIS" => Ok("redis://127.0.0.1:6379/0".to_owned()),
        _ => Err(VarError::NotPresent),
    };
    let report = check_text_in(text, &env);
    assert_eq!(lines(&report.errors), vec![Some(2)], "{:#?}", report.errors);
    assert!(
        report.errors[0]
            .message
            .contains("no usable PostgreSQL URL")
    );
    assert!(!report.errors[0].message.contains("Qm4xT9"));
    assert!(
        report
            .warnings
            .iter()
            .all(|w| !w.message.contains("not set here"))
    );
}

#[test]
fn an_unreadable_provider_credential_is_a_warning_with_its_line() {
    let text = "[proxy]\nlisten = \"127.0.0.1:8080\"\n\
                [providers.anthropic]\napi_key_env = \"GW_CHECK_UNSET_KEY_7c1\"\n\
                [providers.gemini]\napi_key_file = \"/nonexistent/gw-check/gemini\"\n";
    let report = check_text(text);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let warnings: Vec<_> = report
        .warnings
        .iter()
        .filter(|w| w.message.contains("anthropic") || w.message.contains("gemini"))
        .collect();
    assert_eq!(warnings.len(), 2, "{:#?}", report.warnings);
    assert_eq!(warnings[0].line, Some(4), "{warnings:#?}");
    assert!(
        warnings[0]
            .message
            .contains("GW_CHECK_UNSET_KEY_7c1 is not set")
    );
    assert_eq!(warnings[1].line, Some(6), "{warnings:#?}");
}

#[test]
fn admin_tls_files_are_loaded_and_a_data_dir_that_is_a_file_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").expect("write");
    let text = format!(
        "data_dir = {:?}\n[admin]\ntls_cert = {:?}\ntls_key = {:?}\n",
        not_a_dir.display().to_string(),
        dir.path().join("missing-cert.pem").display().to_string(),
        dir.path().join("missing-key.pem").display().to_string(),
    );
    let report = check_text(&text);
    assert_eq!(sorted_lines(&report), vec![1, 3], "{:#?}", report.errors);
    assert!(
        report
            .errors
            .iter()
            .any(|f| f.message.contains("missing-cert.pem")),
        "{:#?}",
        report.errors
    );
}

#[test]
fn a_missing_file_is_an_error_without_a_line() {
    let report = check_file(Some(Path::new("/nonexistent/gw-check.toml")));
    assert_eq!(lines(&report.errors), vec![None]);
    assert!(
        report.errors[0]
            .message
            .contains("/nonexistent/gw-check.toml")
    );
}

#[test]
fn a_file_of_thousands_of_bad_lines_stops_at_the_cap_and_ends_quickly() {
    // Each error is found by checking the whole text again: without a cap, thousands of unknown
    // settings took minutes (quadratic, twice over) and the check must end.
    let text: String = (0..10_000).map(|i| format!("unknown_{i} = 1\n")).collect();
    let started = std::time::Instant::now();
    let report = check_text(&text);
    let took = started.elapsed();
    assert_eq!(
        report.errors.len(),
        MAX_ERRORS,
        "{:?}",
        report.errors.last()
    );
    assert!(report.stopped_early);
    // Which ones come first is toml's order (its tables sort their keys), not the file's.
    let mut found = sorted_lines(&report);
    found.dedup();
    assert_eq!(found.len(), MAX_ERRORS, "each error once, with its line");
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
}

#[test]
fn a_file_with_fewer_errors_than_the_cap_is_checked_to_its_end() {
    let text: String = (0..MAX_ERRORS - 1)
        .map(|i| format!("unknown_{i} = 1\n"))
        .collect();
    let report = check_text(&text);
    assert_eq!(report.errors.len(), MAX_ERRORS - 1);
    assert!(!report.stopped_early);
}
