//! The raw key while the secret-once modal shows it, and never after.
//!
//! SPEC §1 says the secret is shown exactly once. The modal owns it in this type: `Debug`
//! prints `***` so it cannot leak through a log or a test failure, and `Drop` overwrites the
//! bytes (`zeroize`) so dismissing the modal leaves nothing to find in memory, not just nothing
//! reachable from `App`.

use std::fmt;

use zeroize::Zeroizing;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Takes the string's own buffer, so no unwiped copy is left behind in `text`.
    pub fn take(text: &mut String) -> Self {
        Self(Zeroizing::new(std::mem::take(text)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_moves_the_text_and_debug_hides_it() {
        let mut text = String::from("sk-proxy-SECRET");
        let secret = Secret::take(&mut text);
        assert!(text.is_empty());
        assert_eq!(secret.expose(), "sk-proxy-SECRET");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
