//! Fuzzing the config loader: whatever an operator's file says, start-up stops with a message
//! (naming a line of the file when it names one at all) or runs with a validated config; it
//! never panics.

use crate::config::Config;

/// The whole input is the file's text (inputs that are not UTF-8 are not files it reads).
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(err) = Config::from_text(text) else {
        return;
    };
    let message = format!("{err:#}");
    let lines = text.lines().count().max(1);
    if let Some(rest) = message.strip_prefix("line ") {
        let number: usize = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("a line that is not a number: {message}"));
        assert!(
            (1..=lines).contains(&number),
            "line {number} of a {lines}-line file: {message}"
        );
    }
}
