//! Fuzzing the management API's inputs: JSON bodies (strict parse, then the hand-written
//! decoding of key creation and edits), dollar amounts, and reset periods and instants. An
//! operator's request must be refused naming a field, or decoded to exactly what gwctl would
//! send again for it.

use std::str::FromStr;

use gateway_shared::api::{CreateKey, Patch, UpdateKey};
use gateway_shared::money::{self, Nanodollars};
use gateway_shared::{SpendReset, validate};
use jiff::Timestamp;
use serde_json::Value;

use crate::admin_api::strict_json;
use crate::error::GatewayError;

/// The amounts a JSON number carries exactly (see `shared/src/money.rs`): below 2^22 dollars.
const EXACT_IN_JSON: Nanodollars = Nanodollars((1 << 22) * money::NANOS_PER_DOLLAR);

/// The whole input is a request body.
pub fn management_body(data: &[u8]) {
    // The strict parse is serde_json's, less objects that name a key twice.
    let strict = strict_json::parse(data);
    let plain = serde_json::from_slice::<Value>(data);
    let body = match (strict, plain) {
        (Ok(strict), Ok(plain)) => {
            assert_eq!(strict, plain, "the strict parse reads other values");
            strict
        }
        (Ok(strict), Err(err)) => panic!("strict accepted {strict} that serde_json refuses: {err}"),
        (Err(err), Ok(_)) => {
            assert!(err.to_string().contains("is given twice"), "{err}");
            return;
        }
        (Err(_), Err(_)) => return,
    };
    match CreateKey::from_json(&body) {
        Ok(create) => {
            // What gwctl sends for it decodes to the same key.
            let sent = serde_json::to_value(&create).expect("serialises");
            if create
                .spend_limit_usd
                .is_none_or(|limit| limit < EXACT_IN_JSON)
            {
                assert_eq!(
                    CreateKey::from_json(&sent).as_ref(),
                    Ok(&create),
                    "create sent again as {sent}"
                );
            }
        }
        Err(err) => drop(GatewayError::from(err)),
    }
    match UpdateKey::from_json(&body) {
        Ok(update) => {
            let sent = update.to_json();
            let exact = match update.spend_limit_usd {
                Patch::Set(limit) => limit < EXACT_IN_JSON,
                Patch::Keep | Patch::Clear => true,
            };
            if exact {
                assert_eq!(
                    UpdateKey::from_json(&sent).as_ref(),
                    Ok(&update),
                    "edit sent again as {sent}"
                );
            }
        }
        Err(err) => drop(GatewayError::from(err)),
    }
}

/// The whole input is a dollar amount as typed (gwctl's flags, a config price, a JSON string).
pub fn money(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Nanodollars::from_str(text);
    assert_eq!(
        money::parse_json(&Value::String(text.to_owned())),
        parsed,
        "a JSON string reads other than the text"
    );
    let Ok(amount) = parsed else {
        return;
    };
    let shown = amount.to_string();
    assert_eq!(shown.parse(), Ok(amount), "{text:?} shown as {shown}");
    if amount < EXACT_IN_JSON {
        let json = serde_json::to_string(&amount).expect("serialises");
        let back: Nanodollars = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, amount, "{text:?} written as {json}");
    }
}

/// The first eight bytes (big-endian, zero-filled) are an instant in seconds, inside the range
/// of times the gateway represents; the whole input, when UTF-8, is also read as a reset
/// period's name and as an RFC 3339 instant (`expires_at`).
pub fn period(data: &[u8]) {
    let mut seconds = [0u8; 8];
    let head = &data[..data.len().min(8)];
    seconds[..head.len()].copy_from_slice(head);
    let (min, max) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    let span = max.abs_diff(min);
    let offset = u64::from_be_bytes(seconds) % span;
    let at = i64::try_from(i128::from(min) + i128::from(offset))
        .ok()
        .and_then(|second| Timestamp::from_second(second).ok());
    if let Some(at) = at {
        for reset in SpendReset::ALL {
            let start = reset.period_start(at);
            let next = reset.next_reset(at);
            assert!(
                start <= at,
                "{reset} period of {at} starts later, at {start}"
            );
            if next != Timestamp::MAX {
                assert!(
                    at < next,
                    "{reset} period of {at} ends before it, at {next}"
                );
                assert_eq!(reset.period_start(next), next, "{reset} after {at}");
            }
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(reset) = text.parse::<SpendReset>() {
        assert_eq!(reset.as_str(), text);
    }
    if let Ok(instant) = validate::timestamp("expires_at", text) {
        // What the API shows for it is accepted back as the same instant.
        let shown = instant.to_string();
        assert_eq!(
            validate::timestamp("expires_at", &shown),
            Ok(instant),
            "{text:?} shown as {shown}"
        );
    }
}
