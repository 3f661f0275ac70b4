//! toml's parse errors as start-up and `--check-config` print them: `line L, column C`
//! and what is wrong, never the text of the file. The line refused is often a secret
//! written where the file takes only where to find it (`api_key = "sk-…"`), and serde's
//! messages quote the value refused and unknown names; these messages go to the terminal
//! and the journal.

/// toml's error as `line L, column C: message`, without the quoted line toml's own
/// `Display` adds: the line refused is often a secret written where the file takes only
/// where to find it (`api_key = "sk-…"`, `postgres_url = "postgres://user:password@…"`), and
/// this message goes to the terminal and the journal.
pub(super) fn parse_error(text: &str, err: &toml::de::Error) -> anyhow::Error {
    let message = without_values(err.message().trim_end());
    let message = message.as_str();
    let Some(mut start) = err.span().map(|span| span.start.min(text.len())) else {
        return anyhow::anyhow!("TOML parse error: {message}");
    };
    // An error at the very end of a file that ends with a newline ("unclosed array") is on
    // its last line, not on a line after it that the file does not have.
    if start == text.len() && text.ends_with('\n') {
        start -= 1;
    }
    let before = text.get(..start).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    // toml's message does not always name the setting (`invalid type: integer`); the quoted
    // line did. The key the line sets says it instead, when it looks like one of ours (a
    // secret pasted as a key is not shown either).
    let line_text = text[line_start..].lines().next().unwrap_or_default();
    let key = line_text
        .split_once('=')
        .map(|(key, _)| key.trim())
        .filter(|key| {
            !key.is_empty()
                && key.len() <= 32
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        });
    match key {
        Some(key) => {
            anyhow::anyhow!("line {line}, column {column} ({key}): TOML parse error: {message}")
        }
        None => anyhow::anyhow!("line {line}, column {column}: TOML parse error: {message}"),
    }
}

/// serde's message with the text it quotes from the file taken out: the value refused
/// (`invalid type: string "…"`, said as `string`) and an unknown name (`unknown field `…``,
/// kept when it looks like a setting's name, a typo to correct). Either may be a secret
/// pasted in the wrong place. What it expected (`expected one of `listen`, …`) is ours.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let string = rest.find("string \"");
        let name = ["unknown field `", "unknown variant `"]
            .iter()
            .filter_map(|marker| rest.find(marker).map(|at| at + marker.len()))
            .min();
        if let Some(start) = name.filter(|&name| string.is_none_or(|at| name < at)) {
            out.push_str(&rest[..start]);
            let quoted = &rest[start..];
            let end = quoted.find('`').unwrap_or(quoted.len());
            let name = &quoted[..end];
            if !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                out.push_str(name);
            } else {
                out.push_str("(not shown)");
            }
            rest = &quoted[end..];
        } else if let Some(at) = string {
            out.push_str(&rest[..at + "string".len()]);
            rest = after_quoted(&rest[at + "string \"".len()..]);
        } else {
            out.push_str(rest);
            return out;
        }
    }
}

/// What follows a string serde quoted with `{:?}`, from just after its opening `"`: past
/// its closing quote (escaped quotes skipped), or nothing when it does not close.
fn after_quoted(text: &str) -> &str {
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return &text[at + 1..],
            _ => {}
        }
    }
    ""
}
