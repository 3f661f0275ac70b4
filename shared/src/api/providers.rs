//! `GET /v1/providers`: the providers a daemon runs (SPEC §10), so gwctl can offer and check
//! names a key may be restricted to without knowing the daemon's config.

use serde::{Deserialize, Serialize};

use crate::provider::{Provider, ProviderKind};

/// One provider: its name (its route is `/NAME/…`; the built-in `openai` also answers bare
/// `/v1/…`), the wire format it speaks, and whether it is one of the three built in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderView {
    pub name: Provider,
    pub kind: ProviderKind,
    pub builtin: bool,
}

/// `GET /v1/providers`: the built-in providers first, then the configured ones by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderList {
    pub providers: Vec<ProviderView>,
}

impl ProviderList {
    pub fn names(&self) -> Vec<Provider> {
        self.providers.iter().map(|p| p.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_shape() {
        let list = ProviderList {
            providers: vec![
                ProviderView {
                    name: Provider::Openai,
                    kind: ProviderKind::Openai,
                    builtin: true,
                },
                ProviderView {
                    name: "azure".parse().expect("name"),
                    kind: ProviderKind::AzureOpenai,
                    builtin: false,
                },
            ],
        };
        let json = serde_json::to_value(&list).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"providers": [
                {"name": "openai", "kind": "openai", "builtin": true},
                {"name": "azure", "kind": "azure-openai", "builtin": false},
            ]})
        );
        assert_eq!(
            serde_json::from_value::<ProviderList>(json).expect("back"),
            list
        );
    }
}
