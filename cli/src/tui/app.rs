//! The dashboard's whole state and the one function that changes it.
//!
//! `App::update(event) -> Vec<Effect>` is pure: no I/O, no clock (the instant arrives in
//! `Event::Tick`), no terminal. That is what lets every key binding and every answer from the
//! daemon be tested as "this event in, this state and these effects out" (DESIGN §3.6), and
//! what keeps the screen responsive: nothing here can block. The renderer reads this state and
//! nothing else; what it drew where comes back as [`Hits`], kept here so that a click is
//! resolved against the frame the operator saw, and a click on a button is that button's key
//! press.

use gateway_shared::KeyState;
use gateway_shared::api::{KeyView, UsageReport};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use super::effect::Effect;
use super::event::{Event, Failure};
use super::form::{Form, Submission};
use super::hits::{Button, Hits, Screen, View};
use super::secret::Secret;

/// How many days the detail pane's chart covers, today included.
pub const USAGE_DAYS: i64 = 30;

#[derive(Debug)]
pub struct App {
    /// The latest instant from the refresh clock; relative times are computed against it.
    pub now: Timestamp,
    /// Where the daemon is (a socket path or URL), for the title line.
    pub target: String,
    keys: Vec<KeyView>,
    /// The first answer has arrived (until then the table says "loading").
    pub loaded: bool,
    /// A key list request is in flight; ticks do not pile up more.
    pub refreshing: bool,
    pub last_refresh: Option<Timestamp>,
    /// Why the daemon cannot be reached, while it cannot: the banner.
    pub down: Option<String>,
    pub filter: Option<KeyState>,
    pub sort: Sort,
    pub search: String,
    /// `/` was pressed: typed characters go to the search.
    pub searching: bool,
    /// Kept by id so that a refresh or a re-sort does not move the cursor to another key.
    selected_id: Option<String>,
    pub mode: Mode,
    pub usage: Option<UsagePane>,
    pub status: Option<Status>,
    /// The `?` overlay, above whatever mode is showing.
    pub help: bool,
    /// Where the last frame drew its buttons and rows; set by the loop after each draw.
    pub hits: Hits,
    /// The daemon's provider names (built-in and configured, SPEC §10), once it said them:
    /// what the create and edit forms offer.
    pub providers: Option<Vec<String>>,
}

#[derive(Debug)]
pub enum Mode {
    List,
    Detail {
        key_id: String,
    },
    Create(Form),
    Edit {
        form: Form,
        back: Back,
    },
    ConfirmRevoke {
        key_id: String,
        name: String,
        back: Back,
    },
    /// The only place the raw key ever lives; leaving this mode drops (and wipes) it.
    Secret(SecretModal),
}

/// Where a form or confirmation returns to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Back {
    List,
    Detail(String),
}

#[derive(Debug)]
pub struct SecretModal {
    pub key: Box<KeyView>,
    secret: Secret,
    /// The operator pressed `c`: the modal says so.
    pub copied: bool,
}

impl SecretModal {
    pub fn secret(&self) -> &str {
        self.secret.expose()
    }
}

/// The detail pane's usage: the last report for this key, kept while a newer one loads so the
/// chart does not blink on every refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct UsagePane {
    pub key_id: String,
    pub report: Option<UsageReport>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Name,
    State,
    /// Most spent first (period spend for a periodic limit, else total).
    Spend,
    /// Most recently used first.
    LastUsed,
    /// Oldest first, as the daemon lists them.
    Created,
}

impl Sort {
    const ALL: [Sort; 5] = [
        Self::Name,
        Self::State,
        Self::Spend,
        Self::LastUsed,
        Self::Created,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::State => "state",
            Self::Spend => "spend",
            Self::LastUsed => "last used",
            Self::Created => "created",
        }
    }

    fn next(self) -> Self {
        let at = Self::ALL.iter().position(|s| *s == self).unwrap_or(0);
        Self::ALL[(at + 1) % Self::ALL.len()]
    }
}

impl App {
    pub fn new(now: Timestamp, target: impl Into<String>) -> Self {
        Self {
            now,
            target: target.into(),
            keys: Vec::new(),
            loaded: false,
            refreshing: false,
            last_refresh: None,
            down: None,
            filter: None,
            sort: Sort::Name,
            search: String::new(),
            searching: false,
            selected_id: None,
            mode: Mode::List,
            usage: None,
            status: None,
            help: false,
            hits: Hits::default(),
            providers: None,
        }
    }

    /// The effects to run before the first event: load the keys.
    pub fn start(&mut self) -> Vec<Effect> {
        self.refresh()
    }

    /// The raw key, while the secret modal shows it; `None` at every other moment.
    pub fn secret(&self) -> Option<&str> {
        match &self.mode {
            Mode::Secret(modal) => Some(modal.secret()),
            _ => None,
        }
    }

    pub fn keys(&self) -> &[KeyView] {
        &self.keys
    }

    pub fn key(&self, key_id: &str) -> Option<&KeyView> {
        self.keys.iter().find(|k| k.id == key_id)
    }

    /// The keys the table shows: filtered by state, searched by name, sorted.
    pub fn visible(&self) -> Vec<&KeyView> {
        let needle = self.search.to_lowercase();
        let mut keys: Vec<&KeyView> = self
            .keys
            .iter()
            .filter(|k| self.filter.is_none_or(|state| k.state == state))
            .filter(|k| needle.is_empty() || k.name.to_lowercase().contains(&needle))
            .collect();
        let by_name = |a: &&KeyView, b: &&KeyView| a.name.cmp(&b.name).then(a.id.cmp(&b.id));
        match self.sort {
            Sort::Name => keys.sort_by(by_name),
            Sort::State => keys.sort_by(|a, b| {
                state_rank(a.state)
                    .cmp(&state_rank(b.state))
                    .then(by_name(a, b))
            }),
            Sort::Spend => {
                keys.sort_by(|a, b| shown_spend(b).cmp(&shown_spend(a)).then(by_name(a, b)))
            }
            Sort::LastUsed => {
                keys.sort_by(|a, b| b.last_used_at.cmp(&a.last_used_at).then(by_name(a, b)))
            }
            Sort::Created => {
                keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)))
            }
        }
        keys
    }

    /// The row under the cursor, as an index into [`App::visible`].
    pub fn selected_index(&self) -> Option<usize> {
        let visible = self.visible();
        if visible.is_empty() {
            return None;
        }
        let at = self
            .selected_id
            .as_ref()
            .and_then(|id| visible.iter().position(|k| &k.id == id));
        Some(at.unwrap_or(0))
    }

    pub fn selected(&self) -> Option<&KeyView> {
        let at = self.selected_index()?;
        self.visible().get(at).copied()
    }

    pub fn update(&mut self, event: Event) -> Vec<Effect> {
        match event {
            Event::Key(key) => self.on_key(key),
            Event::Mouse(mouse) => self.on_mouse(mouse),
            Event::Resize => Vec::new(),
            Event::InputClosed | Event::Signal(_) => vec![Effect::Quit],
            Event::Tick(now) => {
                self.now = now;
                self.refresh()
            }
            Event::Keys(Ok(keys)) => {
                self.keys = keys;
                self.loaded = true;
                self.refreshing = false;
                self.down = None;
                self.last_refresh = Some(self.now);
                Vec::new()
            }
            Event::Providers(Ok(list)) => {
                self.providers = Some(list.providers.iter().map(|p| p.name.to_string()).collect());
                Vec::new()
            }
            // The forms keep their general hint; the daemon still checks every name.
            Event::Providers(Err(_)) => Vec::new(),
            Event::Keys(Err(failure)) => {
                self.refreshing = false;
                self.fail(failure);
                Vec::new()
            }
            Event::Usage { key_id, result } => {
                if let Some(pane) = self.usage.as_mut().filter(|p| p.key_id == key_id) {
                    match result {
                        Ok(report) => {
                            pane.report = Some(report);
                            pane.error = None;
                        }
                        Err(failure) => pane.error = Some(failure.message),
                    }
                }
                Vec::new()
            }
            Event::Created(Ok(mut created)) => {
                // Always shown, whatever the operator did meanwhile: it is the only chance.
                let secret = Secret::take(&mut created.secret);
                let key = created.key;
                self.selected_id = Some(key.id.clone());
                self.upsert(key.clone());
                self.set_status(format!("Created key {} ({}).", key.name, key.id));
                self.mode = Mode::Secret(SecretModal {
                    key: Box::new(key),
                    secret,
                    copied: false,
                });
                self.refresh()
            }
            Event::Created(Err(failure)) => {
                self.form_failed(failure);
                Vec::new()
            }
            Event::Updated(Ok(key)) => {
                self.set_status(format!("Saved key {} ({}).", key.name, key.id));
                if let Mode::Edit { form, back } = &self.mode
                    && matches!(&form.kind, super::form::FormKind::Edit(k) if k.id == key.id)
                {
                    self.mode = back_to(back.clone());
                }
                self.upsert(key);
                Vec::new()
            }
            Event::Updated(Err(failure)) => {
                self.form_failed(failure);
                Vec::new()
            }
            Event::Revoked(Ok(key)) => {
                self.set_status(format!("Revoked key {} ({}).", key.name, key.id));
                self.upsert(key);
                Vec::new()
            }
            Event::Revoked(Err(failure)) => {
                self.fail(failure);
                Vec::new()
            }
        }
    }

    /// The screen in front and the key its buttons act on, as the renderer tags its hits.
    pub fn view(&self) -> View {
        let (screen, key_id) = match &self.mode {
            _ if self.help => (Screen::Help, None),
            Mode::List => (Screen::List, self.selected().map(|k| k.id.clone())),
            Mode::Detail { key_id } => (Screen::Detail, Some(key_id.clone())),
            Mode::Create(_) | Mode::Edit { .. } => (Screen::Form, None),
            Mode::ConfirmRevoke { key_id, .. } => (Screen::ConfirmRevoke, Some(key_id.clone())),
            Mode::Secret(modal) => (Screen::Secret, Some(modal.key.id.clone())),
        };
        View { screen, key_id }
    }

    /// The key the detail pane shows, or the one under the cursor.
    fn current_key(&self) -> Option<&KeyView> {
        match &self.mode {
            Mode::Detail { key_id } => self.key(key_id),
            _ => self.selected(),
        }
    }

    fn back(&self) -> Back {
        match &self.mode {
            Mode::Detail { key_id } => Back::Detail(key_id.clone()),
            _ => Back::List,
        }
    }

    fn open_detail(&mut self, key_id: String) -> Vec<Effect> {
        self.selected_id = Some(key_id.clone());
        self.usage = Some(UsagePane {
            key_id: key_id.clone(),
            report: None,
            error: None,
        });
        self.mode = Mode::Detail {
            key_id: key_id.clone(),
        };
        vec![self.load_usage(key_id)]
    }

    fn load_usage(&self, key_id: String) -> Effect {
        let to = self.today();
        let from = to.checked_sub((USAGE_DAYS - 1).days()).unwrap_or(to);
        Effect::LoadUsage { key_id, from, to }
    }

    pub fn today(&self) -> Date {
        self.now.to_zoned_datetime(TimeZone::UTC).date()
    }

    /// Moves the cursor; in the detail pane the pane follows it to the next key.
    fn move_and_follow(&mut self, delta: isize) -> Vec<Effect> {
        self.move_selection(delta);
        match (&self.mode, self.selected().map(|k| k.id.clone())) {
            (Mode::Detail { key_id }, Some(selected)) if *key_id != selected => {
                self.open_detail(selected)
            }
            _ => Vec::new(),
        }
    }

    fn move_selection(&mut self, delta: isize) {
        let visible = self.visible();
        let Some(at) = self.selected_index() else {
            return;
        };
        let to = at.saturating_add_signed(delta).min(visible.len() - 1);
        let id = visible[to].id.clone();
        self.selected_id = Some(id);
    }

    /// A key list request, plus the detail pane's usage, unless one is already out.
    fn refresh(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        if !self.refreshing {
            self.refreshing = true;
            effects.push(Effect::Refresh);
            if let Mode::Detail { key_id } = &self.mode {
                effects.push(self.load_usage(key_id.clone()));
            }
        }
        effects
    }

    fn upsert(&mut self, key: KeyView) {
        match self.keys.iter_mut().find(|k| k.id == key.id) {
            Some(slot) => *slot = key,
            None => self.keys.push(key),
        }
    }

    fn form_failed(&mut self, failure: Failure) {
        match &mut self.mode {
            Mode::Create(form) | Mode::Edit { form, .. } => {
                form.submitting = false;
                form.error = Some(failure.message.clone());
                if failure.unreachable {
                    self.down = Some(failure.message);
                }
            }
            _ => self.fail(failure),
        }
    }

    fn fail(&mut self, failure: Failure) {
        if failure.unreachable {
            self.down = Some(failure.message);
        } else {
            self.set_error(failure.message);
        }
    }

    fn set_status(&mut self, text: String) {
        self.status = Some(Status { text, error: false });
    }

    fn set_error(&mut self, text: String) {
        self.status = Some(Status { text, error: true });
    }
}

fn back_to(back: Back) -> Mode {
    match back {
        Back::List => Mode::List,
        Back::Detail(key_id) => Mode::Detail { key_id },
    }
}

fn state_rank(state: KeyState) -> u8 {
    match state {
        KeyState::Active => 0,
        KeyState::Exhausted => 1,
        KeyState::Expired => 2,
        KeyState::Revoked => 3,
    }
}

/// The spend the table's gauge shows: this period's for a periodic limit, else the total.
pub fn shown_spend(key: &KeyView) -> gateway_shared::Nanodollars {
    match (key.spend_limit_usd, key.spend_reset) {
        (Some(_), Some(_)) => key.spend_period_usd,
        _ => key.spend_total_usd,
    }
}

mod input;
#[cfg(test)]
mod tests;
