//! What the last frame drew where, so that a mouse click means what the operator saw.
//!
//! The product docs say "click Create Key", "click the edit button", "click the revoke
//! button", so the dashboard takes clicks as well as keys. A click is only a position; what it
//! hits depends on the layout, which depends on the terminal's size and on the state. Rather
//! than compute the layout a second time (and let the two drift apart), the renderer returns
//! the rectangles it really drew buttons and rows into, the loop stores them in the app, and
//! `App::update` resolves a click against them.
//!
//! Between a frame and a click, events can change the screen (a burst of events is applied
//! before the next frame). Hit areas are therefore tagged with the [`View`] they were drawn
//! for: a click on a button is acted on only while the same screen shows the same key, else
//! it is dropped, so it can never act on a key the operator did not see. A button press is
//! the key press it stands for ([`Button::key`]): the two ways in cannot behave differently.

use crossterm::event::KeyCode;
use ratatui::layout::{Position, Rect};

/// Which screen is in front, as far as clicks are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    List,
    Detail,
    /// The create or edit form: its layout is not tracked, so clicks there are ignored.
    Form,
    ConfirmRevoke,
    Secret,
    Help,
}

/// The screen in front and the key its buttons act on: the selected row in the list, the
/// detail pane's key, the key a confirmation names, the key a secret belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub screen: Screen,
    pub key_id: Option<String>,
}

/// A clickable button, drawn as `[ label ]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Button {
    Create,
    Edit,
    Revoke,
    Details,
    Refresh,
    Help,
    Quit,
    /// The detail pane back to the list.
    Back,
    /// The revoke confirmation's yes.
    ConfirmRevoke,
    /// The revoke confirmation's no.
    Keep,
    CopySecret,
    DismissSecret,
}

impl Button {
    pub fn label(self) -> &'static str {
        match self {
            Button::Create => "[ Create Key ]",
            Button::Edit => "[ Edit ]",
            Button::Revoke | Button::ConfirmRevoke => "[ Revoke ]",
            Button::Details => "[ Details ]",
            Button::Refresh => "[ Refresh ]",
            Button::Help => "[ Help ]",
            Button::Quit => "[ Quit ]",
            Button::Back => "[ Back ]",
            Button::Keep => "[ Keep it ]",
            Button::CopySecret => "[ Copy ]",
            Button::DismissSecret => "[ Dismiss ]",
        }
    }

    /// The key press a click on this button is: the binding the hint bar and help list.
    pub fn key(self) -> KeyCode {
        match self {
            Button::Create | Button::CopySecret => KeyCode::Char('c'),
            Button::Edit => KeyCode::Char('e'),
            Button::Revoke => KeyCode::Char('r'),
            Button::Details | Button::DismissSecret => KeyCode::Enter,
            Button::Refresh => KeyCode::Char('R'),
            Button::Help => KeyCode::Char('?'),
            Button::Quit => KeyCode::Char('q'),
            Button::Back => KeyCode::Esc,
            Button::ConfirmRevoke => KeyCode::Char('y'),
            Button::Keep => KeyCode::Char('n'),
        }
    }
}

/// The clickable parts of one frame. Only the screen in front registers any: a bar half
/// hidden behind a form or modal is drawn but not clickable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hits {
    /// What was in front when these were drawn; `None` before the first frame.
    pub view: Option<View>,
    pub buttons: Vec<(Rect, Button)>,
    /// The keys table's rows on screen, each with its key's id.
    pub rows: Vec<(Rect, String)>,
    /// The keys table (header and rows), where the wheel moves the selection.
    pub table: Option<Rect>,
}

impl Hits {
    pub fn button_at(&self, at: Position) -> Option<Button> {
        self.buttons
            .iter()
            .find(|(rect, _)| rect.contains(at))
            .map(|(_, button)| *button)
    }

    pub fn row_at(&self, at: Position) -> Option<&str> {
        self.rows
            .iter()
            .find(|(rect, _)| rect.contains(at))
            .map(|(_, key_id)| key_id.as_str())
    }

    pub fn in_table(&self, at: Position) -> bool {
        self.table.is_some_and(|rect| rect.contains(at))
    }
}
