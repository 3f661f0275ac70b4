//! The dashboard's input: a key press or a mouse event, in the mode the dashboard is in, to
//! the state change and the effects it asks for. A click on a button is that button's key
//! press, so the two paths cannot disagree.

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Position;

use super::*;

impl App {
    /// A left click on a button is its key press; on a row it selects the row. The wheel over
    /// the table moves the selection (the table scrolls to keep it in view). Anything aimed at
    /// a screen that has changed since the frame was drawn is dropped (see [`super::hits`]).
    pub(super) fn on_mouse(&mut self, mouse: MouseEvent) -> Vec<Effect> {
        let now = self.view();
        let Some(drawn) = &self.hits.view else {
            return Vec::new();
        };
        if drawn.screen != now.screen {
            return Vec::new();
        }
        let at = Position::new(mouse.column, mouse.row);
        match mouse.kind {
            MouseEventKind::Down(MouseButton::Left) if now.screen == Screen::Help => {
                // Help covers the screen's buttons; a click anywhere closes it, like Esc.
                self.help = false;
                Vec::new()
            }
            MouseEventKind::Down(MouseButton::Left) => {
                if let Some(button) = self.hits.button_at(at) {
                    // The same screen, but for the key the operator saw when clicking.
                    if drawn.key_id != now.key_id {
                        return Vec::new();
                    }
                    return self.click(button);
                }
                let row = self.hits.row_at(at).map(str::to_owned);
                if let Some(key_id) = row.filter(|id| self.visible().iter().any(|k| &k.id == id)) {
                    self.selected_id = Some(key_id);
                }
                Vec::new()
            }
            MouseEventKind::ScrollDown if self.hits.in_table(at) => self.move_and_follow(1),
            MouseEventKind::ScrollUp if self.hits.in_table(at) => self.move_and_follow(-1),
            _ => Vec::new(),
        }
    }

    /// A click on `button`: its key press. A search being typed is kept (as Enter would) and
    /// ended first, so the click acts instead of typing its letter into the search.
    pub(super) fn click(&mut self, button: Button) -> Vec<Effect> {
        self.searching = false;
        self.on_key(KeyEvent::new(button.key(), KeyModifiers::NONE))
    }

    pub(super) fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind != KeyEventKind::Press {
            return Vec::new();
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            return vec![Effect::Quit];
        }
        if self.help {
            if matches!(key.code, KeyCode::Esc | KeyCode::Char('?' | 'q')) {
                self.help = false;
            }
            return Vec::new();
        }
        match &mut self.mode {
            Mode::Secret(modal) => match key.code {
                KeyCode::Enter | KeyCode::Esc => {
                    // Dropping the modal wipes the secret; nothing can bring it back.
                    self.mode = Mode::List;
                    self.set_status("The secret was dismissed and is no longer held.".to_owned());
                    Vec::new()
                }
                KeyCode::Char('c') => {
                    modal.copied = true;
                    vec![Effect::Clipboard(modal.secret.clone())]
                }
                _ => Vec::new(),
            },
            Mode::ConfirmRevoke { key_id, back, .. } => match key.code {
                KeyCode::Char('y' | 'Y') => {
                    let key_id = key_id.clone();
                    self.mode = back_to(back.clone());
                    self.set_status(format!("Revoking {key_id}…"));
                    vec![Effect::Revoke { key_id }]
                }
                KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => {
                    self.mode = back_to(back.clone());
                    self.set_status("Not revoked.".to_owned());
                    Vec::new()
                }
                _ => Vec::new(),
            },
            Mode::Create(form) | Mode::Edit { form, .. } => {
                let now = self.now;
                match key.code {
                    KeyCode::Esc => {
                        self.mode = match &self.mode {
                            Mode::Edit { back, .. } => back_to(back.clone()),
                            _ => Mode::List,
                        };
                        Vec::new()
                    }
                    KeyCode::Tab | KeyCode::Down => {
                        form.next();
                        Vec::new()
                    }
                    KeyCode::BackTab | KeyCode::Up => {
                        form.prev();
                        Vec::new()
                    }
                    KeyCode::Left => {
                        form.cycle(false, now);
                        Vec::new()
                    }
                    KeyCode::Right => {
                        form.cycle(true, now);
                        Vec::new()
                    }
                    KeyCode::Backspace => {
                        form.backspace(now);
                        Vec::new()
                    }
                    KeyCode::Char('u') if ctrl => {
                        form.clear_field(now);
                        Vec::new()
                    }
                    KeyCode::Char(c) if !ctrl => {
                        form.type_char(c, now);
                        Vec::new()
                    }
                    KeyCode::Enter if !form.submitting => {
                        form.error = None;
                        match form.submit(now) {
                            None => Vec::new(),
                            Some(submission) => {
                                form.submitting = true;
                                vec![match submission {
                                    Submission::Create(create) => Effect::Create(create),
                                    Submission::Update { key_id, update } => {
                                        Effect::Update { key_id, update }
                                    }
                                }]
                            }
                        }
                    }
                    _ => Vec::new(),
                }
            }
            Mode::List | Mode::Detail { .. } if self.searching => {
                match key.code {
                    KeyCode::Enter => self.searching = false,
                    KeyCode::Esc => {
                        self.searching = false;
                        self.search.clear();
                    }
                    KeyCode::Backspace => {
                        self.search.pop();
                    }
                    KeyCode::Up => self.move_selection(-1),
                    KeyCode::Down => self.move_selection(1),
                    KeyCode::Char(c) if !ctrl => self.search.push(c),
                    _ => {}
                }
                Vec::new()
            }
            Mode::List | Mode::Detail { .. } => self.on_browse_key(key),
        }
    }

    /// Keys of the list and the detail pane.
    pub(super) fn on_browse_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let in_detail = matches!(self.mode, Mode::Detail { .. });
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc if in_detail => {
                self.mode = Mode::List;
                self.usage = None;
                Vec::new()
            }
            KeyCode::Char('q') => vec![Effect::Quit],
            KeyCode::Esc if !self.search.is_empty() => {
                self.search.clear();
                Vec::new()
            }
            KeyCode::Esc => vec![Effect::Quit],
            KeyCode::Char('?') => {
                self.help = true;
                Vec::new()
            }
            KeyCode::Down | KeyCode::Char('j') => self.move_and_follow(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_and_follow(-1),
            KeyCode::PageDown => self.move_and_follow(10),
            KeyCode::PageUp => self.move_and_follow(-10),
            KeyCode::Home => self.move_and_follow(isize::MIN / 2),
            KeyCode::End => self.move_and_follow(isize::MAX / 2),
            KeyCode::Enter if !in_detail => match self.selected().map(|k| k.id.clone()) {
                Some(key_id) => self.open_detail(key_id),
                None => Vec::new(),
            },
            KeyCode::Char('/') => {
                self.searching = true;
                Vec::new()
            }
            KeyCode::Char('f') => {
                self.filter = match self.filter {
                    None => Some(KeyState::Active),
                    Some(KeyState::Active) => Some(KeyState::Exhausted),
                    Some(KeyState::Exhausted) => Some(KeyState::Expired),
                    Some(KeyState::Expired) => Some(KeyState::Revoked),
                    Some(KeyState::Revoked) => None,
                };
                Vec::new()
            }
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                Vec::new()
            }
            KeyCode::Char('R') | KeyCode::F(5) => {
                // Retry now, even if a slow request is still out: the operator asked.
                self.refreshing = false;
                self.refresh()
            }
            KeyCode::Char('c') => {
                self.mode = Mode::Create(Form::create().offering(self.providers.as_deref()));
                Vec::new()
            }
            KeyCode::Char('e') => {
                let Some(key) = self.current_key() else {
                    return Vec::new();
                };
                if key.state == KeyState::Revoked {
                    let text = format!(
                        "Key {} ({}) is revoked; a revoked key cannot be edited.",
                        key.name, key.id
                    );
                    self.set_error(text);
                    return Vec::new();
                }
                let form = Form::edit(key).offering(self.providers.as_deref());
                self.mode = Mode::Edit {
                    form,
                    back: self.back(),
                };
                Vec::new()
            }
            KeyCode::Char('r') => {
                let Some(key) = self.current_key() else {
                    return Vec::new();
                };
                if key.state == KeyState::Revoked {
                    let text = format!("Key {} ({}) is already revoked.", key.name, key.id);
                    self.set_error(text);
                    return Vec::new();
                }
                let (key_id, name) = (key.id.clone(), key.name.clone());
                self.mode = Mode::ConfirmRevoke {
                    key_id,
                    name,
                    back: self.back(),
                };
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}
