//! Azure OpenAI providers (SPEC §10): which model a deployment serves, and the `api-version`
//! a request goes with.
//!
//! Azure names a deployment where OpenAI names a model (in the path,
//! `openai/deployments/{deployment}/…`, or in the body's `model` on the `openai/v1/…`
//! paths). Keys' model globs and the price table are about models, so the deployment is
//! mapped to the model the operator says it serves; a deployment the map does not name is
//! taken to be named after its model (as Azure's portal suggests). The SDK sends the key in
//! `api-key`, which the pipeline reads and drops before anything is forwarded.

use std::collections::BTreeMap;

use gateway_shared::Provider;

use crate::config::{Config, Kind};

/// The Azure providers of a config. Empty (and never searched) without any.
#[derive(Debug, Default)]
pub struct AzureProviders(Vec<(Provider, Azure)>);

#[derive(Debug)]
struct Azure {
    api_version: Option<String>,
    deployments: BTreeMap<String, String>,
}

impl AzureProviders {
    pub fn new(config: &Config) -> AzureProviders {
        AzureProviders(
            config
                .providers
                .iter()
                .filter(|p| p.kind == Kind::AzureOpenai)
                .map(|p| {
                    (
                        p.provider,
                        Azure {
                            api_version: p.api_version.clone(),
                            deployments: p.deployments.clone(),
                        },
                    )
                })
                .collect(),
        )
    }

    fn get(&self, provider: Provider) -> Option<&Azure> {
        self.0.iter().find(|(p, _)| *p == provider).map(|(_, a)| a)
    }

    /// The model `deployment` serves on `provider` (the deployment's own name if unmapped).
    pub fn model_of(&self, provider: Provider, deployment: String) -> String {
        self.get(provider)
            .and_then(|azure| azure.deployments.get(&deployment))
            .cloned()
            .unwrap_or(deployment)
    }

    /// The query to forward: the client's, with the configured `api-version` added when the
    /// client sent none (the deployment paths need one).
    pub fn with_api_version(&self, provider: Provider, query: Option<String>) -> Option<String> {
        let has_version = query.as_deref().is_some_and(|q| {
            q.split('&')
                .any(|pair| pair == "api-version" || pair.starts_with("api-version="))
        });
        let version = self
            .get(provider)
            .and_then(|azure| azure.api_version.as_deref())
            .filter(|_| !has_version);
        match (query, version) {
            (query, None) => query,
            (None, Some(version)) => Some(format!("api-version={version}")),
            (Some(query), Some(version)) => Some(format!("{query}&api-version={version}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> (AzureProviders, Provider) {
        let config = Config::from_text(
            "[providers.azure]\nkind = \"azure-openai\"\nbase_url = \"https://r.openai.azure.com\"\n\
             api_version = \"2024-10-21\"\ndeployments = { prod-4o = \"gpt-4o\" }\n",
        )
        .expect("valid");
        (AzureProviders::new(&config), "azure".parse().expect("name"))
    }

    #[test]
    fn deployments_map_to_their_models() {
        let (azure, provider) = providers();
        assert_eq!(azure.model_of(provider, "prod-4o".into()), "gpt-4o");
        assert_eq!(
            azure.model_of(provider, "gpt-4o-mini".into()),
            "gpt-4o-mini"
        );
        assert_eq!(
            azure.model_of(Provider::Openai, "prod-4o".into()),
            "prod-4o"
        );
    }

    #[test]
    fn the_configured_api_version_is_added_only_when_missing() {
        let (azure, provider) = providers();
        assert_eq!(
            azure.with_api_version(provider, None).as_deref(),
            Some("api-version=2024-10-21")
        );
        assert_eq!(
            azure
                .with_api_version(provider, Some("x=1".into()))
                .as_deref(),
            Some("x=1&api-version=2024-10-21")
        );
        assert_eq!(
            azure
                .with_api_version(provider, Some("api-version=2025-01-01-preview".into()))
                .as_deref(),
            Some("api-version=2025-01-01-preview")
        );
    }
}
