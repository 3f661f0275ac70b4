//! `[providers.NAME]`: the three built-in providers and any number the operator adds under a
//! name of their own, each with the wire format it speaks (SPEC §10).
//!
//! The built-in sections are merged field by field over `default.toml` as before (their
//! `kind` is their name; a credential is required). A configured one states its `kind` and
//! `base_url`; its credential is optional (a local vLLM or Ollama needs none), and an
//! `azure-openai` one may name its `api_version` (used when a client sends none) and its
//! `deployments` (deployment → the model it serves, which globs and prices see). Everything
//! is checked here, so a typo stops start-up naming its section's line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use gateway_shared::Provider;
pub use gateway_shared::provider::ProviderKind as Kind;
use gateway_shared::provider::ProviderName;
use serde::Deserialize;

/// One provider the daemon runs.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub provider: Provider,
    pub kind: Kind,
    pub base_url: http::Uri,
    /// `None`: requests go without a credential (a configured provider that needs none).
    pub credential: Option<CredentialSource>,
    /// Azure: the `api-version` added when a client sends none.
    pub api_version: Option<String>,
    /// Azure: deployment → the model it serves.
    pub deployments: BTreeMap<String, String>,
}

/// Where a provider credential is read from. The secret itself is read when the proxy starts,
/// so it never sits in this (printable) struct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    Env(String),
    File(PathBuf),
}

/// One `[providers.NAME]` section as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    pub kind: Option<Kind>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub api_version: Option<String>,
    pub deployments: Option<BTreeMap<String, String>>,
}

/// The `[providers]` table: section name → section.
pub type ProvidersFile = BTreeMap<String, ProviderFile>;

/// Names a configured provider may not take: the first segment of the gateway's own routes.
const RESERVED: &[&str] = &["v1", "gateway", "healthz"];

/// The built-in providers (merged over the defaults), then the configured ones in name order.
pub fn resolve(
    user: ProvidersFile,
    defaults: &ProvidersFile,
) -> anyhow::Result<Vec<ProviderConfig>> {
    let mut providers = Vec::new();
    for provider in Provider::ALL {
        let name = provider.as_str();
        let default = defaults.get(name).cloned().unwrap_or_default();
        providers.push(
            resolve_builtin(provider, user.get(name).cloned(), default)
                .with_context(|| format!("[providers.{name}]"))?,
        );
    }
    for (name, file) in user {
        if Provider::builtin(&name).is_some() {
            continue;
        }
        providers.push(resolve_configured(&name, file).with_context(|| {
            // A name with characters outside the usual key set is not echoed as a path
            // (`line_of_named_field` could not find it anyway).
            format!("[providers.{}]", shown_name(&name))
        })?);
    }
    Ok(providers)
}

fn shown_name(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 64
    {
        name.to_owned()
    } else {
        "…".to_owned()
    }
}

fn resolve_builtin(
    provider: Provider,
    user: Option<ProviderFile>,
    default: ProviderFile,
) -> anyhow::Result<ProviderConfig> {
    let user = user.unwrap_or_default();
    let kind = Kind::of_builtin(provider).context("not a built-in provider")?;
    if user.kind.is_some_and(|k| k != kind) {
        bail!(
            "kind: {provider} is a built-in provider of kind {kind}; give another provider a \
             name of its own ([providers.my-name])"
        );
    }
    if user.api_version.is_some() || user.deployments.is_some() {
        bail!("api_version and deployments are for kind = \"azure-openai\" providers only");
    }
    let base_url = base_url(user.base_url.or(default.base_url))?;
    // A credential named by the user replaces the default one as a whole: setting
    // api_key_file must not leave the default api_key_env in force beside it.
    let credential = match credential(provider, user.api_key_env, user.api_key_file)? {
        Some(source) => source,
        None => match (default.api_key_env, default.api_key_file) {
            (_, Some(file)) => CredentialSource::File(file),
            (Some(env), None) => CredentialSource::Env(env),
            (None, None) => bail!("api_key_env or api_key_file is required"),
        },
    };
    Ok(ProviderConfig {
        provider,
        kind,
        base_url,
        credential: Some(credential),
        api_version: None,
        deployments: BTreeMap::new(),
    })
}

fn resolve_configured(name: &str, file: ProviderFile) -> anyhow::Result<ProviderConfig> {
    let Some(provider_name) = ProviderName::new(name).filter(|_| !RESERVED.contains(&name)) else {
        bail!(
            "a provider's name is its route (/NAME/…): a lowercase letter, then up to 31 \
             lowercase letters, digits or '-', and not {}",
            RESERVED.join(", ")
        );
    };
    let provider = Provider::Configured(provider_name);
    let kind = file.kind.context(
        "kind is required: \"openai\", \"anthropic\", \"gemini\" or \"azure-openai\" (the wire \
         format the provider speaks)",
    )?;
    let base_url = base_url(file.base_url)?;
    let credential = credential(provider, file.api_key_env, file.api_key_file)?;
    if kind != Kind::AzureOpenai && (file.api_version.is_some() || file.deployments.is_some()) {
        bail!("api_version and deployments are for kind = \"azure-openai\" providers only");
    }
    if let Some(version) = &file.api_version
        && (version.is_empty()
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        bail!("api_version must be a version like \"2024-10-21\"");
    }
    let deployments = file.deployments.unwrap_or_default();
    for (deployment, model) in &deployments {
        if !is_plain_name(deployment) {
            bail!(
                "deployments: a deployment name is letters, digits, '.', '-' and '_' (as in its \
                 path), not {:?}",
                shown_name(deployment)
            );
        }
        if !is_plain_name(model) {
            bail!("deployments: the model of {deployment:?} must be a model name");
        }
    }
    Ok(ProviderConfig {
        provider,
        kind,
        base_url,
        credential,
        api_version: file.api_version,
        deployments,
    })
}

/// A deployment or model name as paths carry them.
fn is_plain_name(name: &str) -> bool {
    name.as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn base_url(base_url: Option<String>) -> anyhow::Result<http::Uri> {
    let base_url = base_url.context("base_url is required")?;
    let base_url: http::Uri = base_url
        .parse()
        .with_context(|| format!("base_url {base_url:?} is not a URL"))?;
    if !matches!(base_url.scheme_str(), Some("http" | "https")) || base_url.host().is_none() {
        bail!("base_url {base_url} must be an http:// or https:// URL with a host");
    }
    if base_url.query().is_some() {
        bail!("base_url {base_url} must not have a query string");
    }
    Ok(base_url)
}

/// The credential a section names, if any.
fn credential(
    provider: Provider,
    env: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<Option<CredentialSource>> {
    match (env, file) {
        (Some(_), Some(_)) => {
            bail!("set either api_key_env or api_key_file for {provider}, not both")
        }
        (Some(env), None) => {
            if !super::is_env_name(&env) || looks_like_a_key(&env) {
                // Not echoed: most likely the key itself, where its variable's name belongs.
                bail!(
                    "api_key_env must name the environment variable that holds {provider}'s \
                     key (letters, digits and _, like OPENAI_API_KEY), not the key itself"
                );
            }
            Ok(Some(CredentialSource::Env(env)))
        }
        (None, Some(file)) => Ok(Some(CredentialSource::File(file))),
        (None, None) => Ok(None),
    }
}

/// A provider key's shape rather than a variable's name: Gemini's `AIza…` keys can be
/// letters, digits and `_` only, which a shell would accept as a name.
fn looks_like_a_key(name: &str) -> bool {
    name.starts_with("AIza") && name.len() >= 30
}
