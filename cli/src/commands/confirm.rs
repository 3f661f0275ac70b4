//! The one way gwctl asks before a step that cannot be undone (`keys revoke`, `keys rotate`
//! without a grace period, `admin-tokens revoke`).
//!
//! The question goes to a person or not at all: without a terminal on stdin gwctl refuses
//! instead of reading stdin, so a script that forgot `--yes` fails loudly with the usage exit
//! code rather than consuming its own input as an answer. Questions name keys and tokens by
//! the names the daemon sent, so what is asked is escaped for the terminal first.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;

use crate::{Refusal, sanitize};

/// Asks `prompt` on the terminal; `Ok(false)` when the answer is not yes. Without a terminal,
/// fails with a usage refusal saying what was not done and to pass `--yes`.
pub fn ask(prompt: &str, not_done: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Refusal::invalid(format!(
            "Refusing to {} without confirmation: stdin is not a terminal. Pass --yes.",
            sanitize::text(not_done)
        ))
        .into());
    }
    confirm(
        &sanitize::text(prompt),
        &mut stdin.lock(),
        &mut std::io::stderr().lock(),
    )
    .context("asking for confirmation")
}

/// Asks once; only `y` or `yes` (any case) confirms. End of input declines.
pub fn confirm(
    prompt: &str,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    out.write_all(prompt.as_bytes())?;
    out.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    let answer = answer.trim().to_ascii_lowercase();
    Ok(answer == "y" || answer == "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(answer: &str, expected: bool) {
        let mut shown = Vec::new();
        let confirmed = confirm("Sure? ", &mut answer.as_bytes(), &mut shown).expect("io");
        assert_eq!(confirmed, expected, "{answer:?}");
        assert_eq!(shown, b"Sure? ");
    }

    #[test]
    fn only_yes_confirms() {
        check("y\n", true);
        check("YES\n", true);
        check(" yes \n", true);
        check("\n", false);
        check("n\n", false);
        check("yep\n", false);
        check("", false);
    }
}
