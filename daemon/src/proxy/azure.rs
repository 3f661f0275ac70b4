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
    /// Azure resolves deployment names without regard to ASCII case (they are Azure resource
    /// names), so `PROD-4O` is looked up as `prod-4o`: otherwise a client could reach a mapped
    /// deployment under a name the map misses, checked against the globs and priced as a
    /// "model" named `PROD-4O` (the fallback price, or a glob meant for another model).
    pub fn model_of(&self, provider: Provider, deployment: String) -> String {
        let Some(azure) = self.get(provider) else {
            return deployment;
        };
        azure
            .deployments
            .get(&deployment)
            .or_else(|| {
                azure
                    .deployments
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(&deployment))
                    .map(|(_, model)| model)
            })
            .cloned()
            .unwrap_or(deployment)
    }

    /// The query to forward: the client's, with the configured `api-version` added when the
    /// client sent none and the path is one of the versioned ones (`/openai/deployments/…`,
    /// and Azure's other pre-v1 paths). The newer `/openai/v1/…` paths take no dated version
    /// (Azure answers 400 "API version not supported" to one), so nothing is added there.
    pub fn with_api_version(
        &self,
        provider: Provider,
        upstream_path: &str,
        query: Option<String>,
    ) -> Option<String> {
        if upstream_path == "/openai/v1" || upstream_path.starts_with("/openai/v1/") {
            return query;
        }
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

    /// Azure deployment names are case-insensitive: another spelling of a mapped deployment
    /// is the same deployment, checked and priced as its model.
    #[test]
    fn a_deployment_in_another_case_maps_to_the_same_model() {
        let (azure, provider) = providers();
        assert_eq!(azure.model_of(provider, "PROD-4O".into()), "gpt-4o");
        assert_eq!(azure.model_of(provider, "Prod-4o".into()), "gpt-4o");
    }

    #[test]
    fn the_v1_paths_get_no_dated_api_version() {
        let (azure, provider) = providers();
        for path in [
            "/openai/v1/chat/completions",
            "/openai/v1/models",
            "/openai/v1",
        ] {
            assert_eq!(azure.with_api_version(provider, path, None), None, "{path}");
            assert_eq!(
                azure
                    .with_api_version(provider, path, Some("x=1".into()))
                    .as_deref(),
                Some("x=1"),
                "{path}"
            );
        }
        // Not a v1 path: a deployment called v1x, or the legacy listing.
        assert_eq!(
            azure
                .with_api_version(provider, "/openai/v1x/chat/completions", None)
                .as_deref(),
            Some("api-version=2024-10-21")
        );
        assert_eq!(
            azure
                .with_api_version(provider, "/openai/models", None)
                .as_deref(),
            Some("api-version=2024-10-21")
        );
    }

    const PATH: &str = "/openai/deployments/prod-4o/chat/completions";

    #[test]
    fn the_configured_api_version_is_added_only_when_missing() {
        let (azure, provider) = providers();
        assert_eq!(
            azure.with_api_version(provider, PATH, None).as_deref(),
            Some("api-version=2024-10-21")
        );
        assert_eq!(
            azure
                .with_api_version(provider, PATH, Some("x=1".into()))
                .as_deref(),
            Some("x=1&api-version=2024-10-21")
        );
        assert_eq!(
            azure
                .with_api_version(
                    provider,
                    PATH,
                    Some("api-version=2025-01-01-preview".into())
                )
                .as_deref(),
            Some("api-version=2025-01-01-preview")
        );
    }
}
