//! The create and edit forms as plain data: field text in, field errors and a request out.
//!
//! Every keystroke re-checks the fields with the rules `gwctl keys create|edit` use (the
//! daemon's own, from `gateway_shared::validate`), so an operator sees "must be at least 1"
//! under the rate limit while typing instead of after a round trip. An error is shown once a
//! field has been typed in, or for all fields after a submit, so an empty new form is not a
//! wall of red. The edit form sends only what changed (SPEC §1: only editable fields).

use gateway_shared::api::{CreateKey, KeyView, Patch, UpdateKey};
use gateway_shared::validate::{self, FieldError};
use gateway_shared::{Nanodollars, Provider, SpendReset};
use jiff::Timestamp;

use crate::commands::keys::{parse_expires, parse_list, parse_rpm, parse_spend_limit};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldId {
    Name,
    Providers,
    Models,
    Ips,
    Rpm,
    SpendLimit,
    Reset,
    Expires,
}

impl FieldId {
    pub fn label(self) -> &'static str {
        match self {
            Self::Name => "Name",
            Self::Providers => "Providers",
            Self::Models => "Models",
            Self::Ips => "Client IPs",
            Self::Rpm => "Rate limit (rpm)",
            Self::SpendLimit => "Spend limit (USD)",
            Self::Reset => "Reset period",
            Self::Expires => "Expires",
        }
    }

    /// Shown in an empty field: what it takes and what empty means.
    pub fn hint(self) -> &'static str {
        match self {
            Self::Name => "1–64 characters",
            Self::Providers => "openai, anthropic, gemini (empty: all)",
            Self::Models => "globs, e.g. gpt-4o*, claude-* (empty: all)",
            Self::Ips => "addresses or CIDRs (empty: any)",
            Self::Rpm => "requests per minute (empty: none)",
            Self::SpendLimit => "dollars, e.g. 50 or 12.50 (empty: none)",
            Self::Reset => "←/→: none, daily, weekly, monthly",
            Self::Expires => "2027-01-31, 30d, 12h or RFC 3339 (empty: never)",
        }
    }

    /// A choice cycled with ←/→ rather than typed.
    pub fn is_choice(self) -> bool {
        self == Self::Reset
    }
}

const CREATE_FIELDS: [FieldId; 8] = [
    FieldId::Name,
    FieldId::Providers,
    FieldId::Models,
    FieldId::Ips,
    FieldId::Rpm,
    FieldId::SpendLimit,
    FieldId::Reset,
    FieldId::Expires,
];

/// Everything but `expires_at`, which SPEC §1 makes fixed at creation.
const EDIT_FIELDS: [FieldId; 7] = [
    FieldId::Name,
    FieldId::Providers,
    FieldId::Models,
    FieldId::Ips,
    FieldId::Rpm,
    FieldId::SpendLimit,
    FieldId::Reset,
];

const RESET_CHOICES: [&str; 4] = ["none", "daily", "weekly", "monthly"];

#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub id: FieldId,
    pub value: String,
    pub error: Option<String>,
    /// Typed in (or submitted): only then is its error shown.
    pub touched: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FormKind {
    Create,
    Edit(Box<KeyView>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Form {
    pub kind: FormKind,
    pub fields: Vec<Field>,
    pub focus: usize,
    /// The daemon's refusal of the last submit, or "nothing to change".
    pub error: Option<String>,
    /// Sent and not yet answered: a second Enter does not send it twice.
    pub submitting: bool,
    /// The daemon's provider names, when known: the Providers field's hint lists them.
    pub providers: Option<String>,
}

/// What a valid form asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Submission {
    Create(CreateKey),
    Update { key_id: String, update: UpdateKey },
}

impl Form {
    pub fn create() -> Self {
        let fields = CREATE_FIELDS
            .iter()
            .map(|&id| field(id, if id == FieldId::Reset { "none" } else { "" }))
            .collect();
        Self {
            kind: FormKind::Create,
            fields,
            focus: 0,
            error: None,
            submitting: false,
            providers: None,
        }
    }

    /// The form offering the daemon's providers (built-in and configured) in its hint.
    pub fn offering(mut self, providers: Option<&[String]>) -> Self {
        self.providers = providers.map(|names| format!("{} (empty: all)", names.join(", ")));
        self
    }

    /// What an empty field shows: its general hint, or for Providers the daemon's names.
    pub fn hint(&self, id: FieldId) -> &str {
        match (&self.providers, id) {
            (Some(names), FieldId::Providers) => names,
            _ => id.hint(),
        }
    }

    /// Pre-filled with the key's current values.
    pub fn edit(key: &KeyView) -> Self {
        let join = |items: Vec<String>| items.join(", ");
        let fields = EDIT_FIELDS
            .iter()
            .map(|&id| {
                let value = match id {
                    FieldId::Name => key.name.clone(),
                    FieldId::Providers => join(
                        key.allowed_providers
                            .iter()
                            .map(ToString::to_string)
                            .collect(),
                    ),
                    FieldId::Models => join(key.allowed_models.clone()),
                    FieldId::Ips => join(key.allowed_ips.clone()),
                    FieldId::Rpm => key
                        .rate_limit_rpm
                        .map(|n| n.to_string())
                        .unwrap_or_default(),
                    FieldId::SpendLimit => key
                        .spend_limit_usd
                        .map(|n| n.to_string().trim_start_matches('$').to_owned())
                        .unwrap_or_default(),
                    FieldId::Reset => key
                        .spend_reset
                        .map_or("none", SpendReset::as_str)
                        .to_owned(),
                    FieldId::Expires => String::new(),
                };
                field(id, &value)
            })
            .collect();
        Self {
            kind: FormKind::Edit(Box::new(key.clone())),
            fields,
            focus: 0,
            error: None,
            submitting: false,
            providers: None,
        }
    }

    pub fn title(&self) -> String {
        match &self.kind {
            FormKind::Create => "Create a key".to_owned(),
            FormKind::Edit(key) => format!("Edit key {} ({})", key.name, key.id),
        }
    }

    pub fn focused(&self) -> FieldId {
        self.fields[self.focus.min(self.fields.len() - 1)].id
    }

    pub fn value(&self, id: FieldId) -> &str {
        self.fields
            .iter()
            .find(|f| f.id == id)
            .map_or("", |f| f.value.as_str())
    }

    pub fn next(&mut self) {
        self.focus = (self.focus + 1) % self.fields.len();
    }

    pub fn prev(&mut self) {
        self.focus = (self.focus + self.fields.len() - 1) % self.fields.len();
    }

    pub fn type_char(&mut self, c: char, now: Timestamp) {
        let focus = self.focus;
        if self.fields[focus].id.is_choice() {
            if c == ' ' {
                self.cycle(true, now);
            }
            return;
        }
        self.fields[focus].value.push(c);
        self.fields[focus].touched = true;
        self.validate(now);
    }

    pub fn backspace(&mut self, now: Timestamp) {
        let focus = self.focus;
        if self.fields[focus].id.is_choice() {
            return;
        }
        self.fields[focus].value.pop();
        self.fields[focus].touched = true;
        self.validate(now);
    }

    pub fn clear_field(&mut self, now: Timestamp) {
        let focus = self.focus;
        if self.fields[focus].id.is_choice() {
            self.fields[focus].value = RESET_CHOICES[0].to_owned();
        } else {
            self.fields[focus].value.clear();
        }
        self.fields[focus].touched = true;
        self.validate(now);
    }

    /// ←/→ on the reset period; nothing on a text field.
    pub fn cycle(&mut self, forward: bool, now: Timestamp) {
        let focus = self.focus;
        if !self.fields[focus].id.is_choice() {
            return;
        }
        let at = RESET_CHOICES
            .iter()
            .position(|c| *c == self.fields[focus].value)
            .unwrap_or(0);
        let n = RESET_CHOICES.len();
        let next = if forward {
            (at + 1) % n
        } else {
            (at + n - 1) % n
        };
        self.fields[focus].value = RESET_CHOICES[next].to_owned();
        self.fields[focus].touched = true;
        self.validate(now);
    }

    /// Re-checks every field; errors are kept for all, shown for touched ones.
    pub fn validate(&mut self, now: Timestamp) {
        let checked = self.check(now);
        for field in &mut self.fields {
            field.error = checked.error(field.id);
        }
    }

    /// The request, if every field is valid; otherwise shows every error and focuses the first.
    pub fn submit(&mut self, now: Timestamp) -> Option<Submission> {
        for field in &mut self.fields {
            field.touched = true;
        }
        self.validate(now);
        if let Some(first) = self.fields.iter().position(|f| f.error.is_some()) {
            self.focus = first;
            return None;
        }
        let checked = self.check(now);
        let values = checked.values?;
        match &self.kind {
            FormKind::Create => Some(Submission::Create(CreateKey {
                name: values.name,
                allowed_providers: values.providers,
                allowed_models: values.models,
                allowed_ips: values.ips,
                rate_limit_rpm: values.rpm,
                spend_limit_usd: values.spend_limit,
                spend_reset: values.reset,
                expires_at: values.expires,
            })),
            FormKind::Edit(key) => {
                let update = diff(key, values);
                if update.is_empty() {
                    self.error = Some("Nothing to change.".to_owned());
                    return None;
                }
                Some(Submission::Update {
                    key_id: key.id.clone(),
                    update,
                })
            }
        }
    }

    fn check(&self, now: Timestamp) -> Checked {
        let mut errors: Vec<(FieldId, String)> = Vec::new();
        let mut note = |id: FieldId, err: FieldError| errors.push((id, err.reason));
        let text = |id| self.value(id);
        let name = validate::name(text(FieldId::Name)).map_err(|e| note(FieldId::Name, e));
        let providers = validate::providers(&parse_list(text(FieldId::Providers)))
            .map_err(|e| note(FieldId::Providers, e));
        let models = validate::model_globs(&parse_list(text(FieldId::Models)))
            .map_err(|e| note(FieldId::Models, e));
        let ips = validate::ips(&parse_list(text(FieldId::Ips))).map_err(|e| note(FieldId::Ips, e));
        let rpm = optional(text(FieldId::Rpm), parse_rpm).map_err(|e| note(FieldId::Rpm, e));
        let spend_limit = optional(text(FieldId::SpendLimit), parse_spend_limit)
            .map_err(|e| note(FieldId::SpendLimit, e));
        let reset = match text(FieldId::Reset) {
            "none" | "" => Ok(None),
            other => other
                .parse::<SpendReset>()
                .map(Some)
                .map_err(|reason| note(FieldId::Reset, FieldError::invalid("spend_reset", reason))),
        };
        let reset = match (reset, &spend_limit) {
            // As `gwctl keys edit --spend-limit none` (and the daemon): clearing a key's limit
            // clears its reset period, which only a limit has.
            (Ok(Some(_)), Ok(None)) if matches!(self.kind, FormKind::Edit(_)) => Ok(None),
            (Ok(Some(_)), Ok(None)) => {
                note(
                    FieldId::Reset,
                    FieldError::invalid("spend_reset", "needs a spend limit to reset"),
                );
                Err(())
            }
            (reset, _) => reset,
        };
        let expires = if self.fields.iter().any(|f| f.id == FieldId::Expires) {
            optional(text(FieldId::Expires), |t| parse_expires(t, now))
                .map_err(|e| note(FieldId::Expires, e))
        } else {
            Ok(None)
        };
        let values = match (
            name,
            providers,
            models,
            ips,
            rpm,
            spend_limit,
            reset,
            expires,
        ) {
            (
                Ok(name),
                Ok(providers),
                Ok(models),
                Ok(ips),
                Ok(rpm),
                Ok(spend_limit),
                Ok(reset),
                Ok(expires),
            ) => Some(Values {
                name,
                providers,
                models,
                ips,
                rpm,
                spend_limit,
                reset,
                expires,
            }),
            _ => None,
        };
        Checked { errors, values }
    }
}

fn field(id: FieldId, value: &str) -> Field {
    Field {
        id,
        value: value.to_owned(),
        error: None,
        touched: false,
    }
}

/// Empty text means "not set".
fn optional<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, FieldError>,
) -> Result<Option<T>, FieldError> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        parse(text).map(Some)
    }
}

struct Values {
    name: String,
    providers: Vec<Provider>,
    models: Vec<String>,
    ips: Vec<String>,
    rpm: Option<u32>,
    spend_limit: Option<Nanodollars>,
    reset: Option<SpendReset>,
    expires: Option<Timestamp>,
}

struct Checked {
    errors: Vec<(FieldId, String)>,
    values: Option<Values>,
}

impl Checked {
    fn error(&self, id: FieldId) -> Option<String> {
        self.errors
            .iter()
            .find(|(field, _)| *field == id)
            .map(|(_, reason)| reason.clone())
    }
}

/// Only the fields whose value differs from the key's.
fn diff(key: &KeyView, values: Values) -> UpdateKey {
    fn changed<T: PartialEq>(new: T, old: &T) -> Option<T> {
        (new != *old).then_some(new)
    }
    fn patch<T: PartialEq>(new: Option<T>, old: Option<T>) -> Patch<T> {
        match new {
            _ if new == old => Patch::Keep,
            None => Patch::Clear,
            Some(value) => Patch::Set(value),
        }
    }
    UpdateKey {
        name: changed(values.name, &key.name),
        allowed_providers: changed(values.providers, &key.allowed_providers),
        allowed_models: changed(values.models, &key.allowed_models),
        allowed_ips: changed(values.ips, &key.allowed_ips),
        rate_limit_rpm: patch(values.rpm, key.rate_limit_rpm),
        spend_limit_usd: patch(values.spend_limit, key.spend_limit_usd),
        spend_reset: patch(values.reset, key.spend_reset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::sample_key;

    fn now() -> Timestamp {
        "2027-01-02T00:00:00Z".parse().expect("now")
    }

    fn type_text(form: &mut Form, text: &str) {
        for c in text.chars() {
            form.type_char(c, now());
        }
    }

    fn focus(form: &mut Form, id: FieldId) {
        form.focus = form.fields.iter().position(|f| f.id == id).expect("field");
    }

    fn error(form: &Form, id: FieldId) -> Option<String> {
        form.fields
            .iter()
            .find(|f| f.id == id)
            .and_then(|f| f.error.clone())
    }

    #[test]
    fn a_full_create_form_becomes_the_request() {
        let mut form = Form::create();
        type_text(&mut form, " backend ");
        for (id, text) in [
            (FieldId::Providers, "openai, anthropic"),
            (FieldId::Models, "gpt-4o*"),
            (FieldId::Ips, "10.0.0.7/8"),
            (FieldId::Rpm, "60"),
            (FieldId::SpendLimit, "12.50"),
            (FieldId::Expires, "30d"),
        ] {
            focus(&mut form, id);
            type_text(&mut form, text);
        }
        focus(&mut form, FieldId::Reset);
        form.cycle(true, now());
        assert_eq!(form.value(FieldId::Reset), "daily");
        let submission = form.submit(now()).expect("valid");
        assert_eq!(
            submission,
            Submission::Create(CreateKey {
                name: "backend".into(),
                allowed_providers: vec![Provider::Openai, Provider::Anthropic],
                allowed_models: vec!["gpt-4o*".into()],
                allowed_ips: vec!["10.0.0.0/8".into()],
                rate_limit_rpm: Some(60),
                spend_limit_usd: Some(Nanodollars(12_500_000_000)),
                spend_reset: Some(SpendReset::Daily),
                expires_at: Some("2027-02-01T00:00:00Z".parse().expect("ts")),
            })
        );
    }

    #[test]
    fn errors_appear_while_typing_and_name_the_problem() {
        let mut form = Form::create();
        focus(&mut form, FieldId::Rpm);
        type_text(&mut form, "0");
        let rpm = form
            .fields
            .iter()
            .find(|f| f.id == FieldId::Rpm)
            .expect("rpm");
        assert!(rpm.touched && rpm.error.is_some(), "{rpm:?}");
        // The untouched name has an error too, but it is not shown yet.
        let name = &form.fields[0];
        assert!(!name.touched && name.error.is_some());
        form.backspace(now());
        type_text(&mut form, "5");
        assert_eq!(error(&form, FieldId::Rpm), None);
        // Submitting focuses the first bad field and touches every field.
        assert_eq!(form.submit(now()), None);
        assert_eq!(form.focused(), FieldId::Name);
        assert!(form.fields.iter().all(|f| f.touched));
    }

    #[test]
    fn a_reset_needs_a_spend_limit() {
        let mut form = Form::create();
        type_text(&mut form, "x");
        focus(&mut form, FieldId::Reset);
        form.cycle(false, now());
        assert_eq!(form.value(FieldId::Reset), "monthly");
        assert!(error(&form, FieldId::Reset).is_some_and(|e| e.contains("spend limit")));
        assert_eq!(form.submit(now()), None);
        assert_eq!(form.focused(), FieldId::Reset);
        // Typing on a choice field does nothing but space, which cycles.
        type_text(&mut form, "ab ");
        assert_eq!(form.value(FieldId::Reset), "none");
        assert!(form.submit(now()).is_some());
    }

    #[test]
    fn edit_sends_only_what_changed() {
        let key = sample_key();
        let mut form = Form::edit(&key);
        assert_eq!(form.value(FieldId::SpendLimit), "50.00");
        assert_eq!(form.value(FieldId::Providers), "openai, anthropic");
        assert!(form.fields.iter().all(|f| f.id != FieldId::Expires));
        assert_eq!(form.submit(now()), None);
        assert_eq!(form.error.as_deref(), Some("Nothing to change."));
        focus(&mut form, FieldId::Rpm);
        form.clear_field(now());
        focus(&mut form, FieldId::Models);
        type_text(&mut form, ", o1*");
        let Some(Submission::Update { key_id, update }) = form.submit(now()) else {
            panic!("an update");
        };
        assert_eq!(key_id, key.id);
        assert_eq!(
            update,
            UpdateKey {
                allowed_models: Some(vec!["gpt-4o*".into(), "claude-*".into(), "o1*".into()]),
                rate_limit_rpm: Patch::Clear,
                ..UpdateKey::default()
            }
        );
    }

    /// As `gwctl keys edit --spend-limit none`: clearing the limit of a key with a reset
    /// period clears the period too, rather than being refused.
    #[test]
    fn clearing_the_limit_in_edit_clears_the_reset() {
        let key = sample_key(); // $50.00 daily
        let mut form = Form::edit(&key);
        assert_eq!(form.value(FieldId::Reset), "daily");
        focus(&mut form, FieldId::SpendLimit);
        form.clear_field(now());
        assert_eq!(error(&form, FieldId::Reset), None);
        let Some(Submission::Update { update, .. }) = form.submit(now()) else {
            panic!("an update: {:?}", form.error);
        };
        assert_eq!(
            update,
            UpdateKey {
                spend_limit_usd: Patch::Clear,
                spend_reset: Patch::Clear,
                ..UpdateKey::default()
            }
        );
        // Creating, a reset without a limit is still a mistake worth pointing out.
        let mut form = Form::create();
        type_text(&mut form, "ci");
        focus(&mut form, FieldId::Reset);
        form.cycle(true, now());
        assert_ne!(form.value(FieldId::Reset), "none");
        assert_eq!(form.submit(now()), None);
        assert!(error(&form, FieldId::Reset).is_some_and(|e| e.contains("spend limit")));
    }
}
