//! What the dashboard asks the outside world to do, as data returned by `App::update`.
//!
//! Keeping requests as values is what lets the state machine stay pure: tests assert "this key
//! press asks to revoke key_x" without a daemon, and the worker is the only code that turns an
//! effect into I/O. Two effects never reach the worker: `Quit` ends the loop, and `Clipboard`
//! must be written by the thread that owns the terminal so it cannot tear a frame.

use gateway_shared::api::{CreateKey, UpdateKey};
use jiff::civil::Date;

use super::secret::Secret;

#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Fetch every key (all pages).
    Refresh,
    /// Fetch a key's usage over `from..=to` for the detail pane.
    LoadUsage {
        key_id: String,
        from: Date,
        to: Date,
    },
    Create(CreateKey),
    Update {
        key_id: String,
        update: UpdateKey,
    },
    Revoke {
        key_id: String,
    },
    /// Put the secret on the terminal's clipboard with OSC 52. Carries its own copy, wiped when
    /// the effect is dropped.
    Clipboard(Secret),
    Quit,
}
