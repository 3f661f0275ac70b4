//! The connection to providers: each provider's base URL, credential and connection pool,
//! and the mapping of transport failures to SPEC codes.
//!
//! Provider credentials are read once at start-up from the environment or a file and kept
//! only as sensitive header values, so neither `Debug` nor a log line can print them. A
//! provider without a credential still routes: its requests fail with a 502 that tells the
//! operator what to set, instead of the whole daemon refusing to start. A configured provider
//! (SPEC §10) may have no credential at all: its requests go without one. Each credential
//! goes in its kind's header (`Authorization: Bearer`, `x-api-key`, `x-goog-api-key`, Azure's
//! `api-key`).

use std::time::Duration;

mod pool;

use std::sync::Arc;

use bytes::Bytes;
use gateway_shared::{ErrorCode, Provider};
use http::{HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;

use super::idle_timeout::IdleTimeout;
use crate::config::{Config, CredentialSource, Kind, ProviderConfig};
use crate::error::GatewayError;
pub use pool::PooledBody;
use pool::{Connector, Pool, SendError};

/// Where [`Upstream::send`] says whether the provider may have the request: a plain `bool`,
/// or the request's meter, which opens its hold the moment it is sent (`spend::holds`).
pub trait SentFlag {
    fn set_sent(&mut self, sent: bool);
}

impl SentFlag for bool {
    fn set_sent(&mut self, sent: bool) {
        *self = sent;
    }
}

/// Below providers' own idle limits, so a pooled connection is not reused just as the far end
/// closes it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle connections kept per provider and event loop.
pub(crate) const POOL_MAX_IDLE: usize = 256;

pub struct Upstream {
    targets: Vec<Target>,
    idle_timeout: Duration,
}

struct Target {
    provider: Provider,
    /// The `Host` header: the base URL's authority.
    host: HeaderValue,
    /// Path of the base URL without its trailing `/` (usually empty).
    base_path: String,
    /// `Ok(None)`: the provider takes no credential.
    credential: Result<Option<(HeaderName, HeaderValue)>, String>,
    pool: Arc<Pool>,
}

impl Upstream {
    pub fn new(config: &Config) -> anyhow::Result<Upstream> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.proxy.upstream_connect_timeout));
        http.set_nodelay(true);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_native_roots() {
            Ok(builder) => builder,
            Err(err) => {
                tracing::warn!(error = %err, "no system CA certificates; using the bundled web PKI roots");
                hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots()
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        // A pool shard per proxy event loop, and one for everything else.
        let shards = config.event_loops() + 1;
        let targets = config
            .providers
            .iter()
            .map(|provider| target(provider, &connector, shards))
            .collect::<anyhow::Result<_>>()?;
        Ok(Upstream {
            targets,
            idle_timeout: config.proxy.upstream_idle_timeout,
        })
    }

    /// The path and query of `url` below `provider`'s base URL, when `url` is on the base
    /// URL's host and under its path (with the base path taken off); `None` otherwise.
    pub fn path_under_base(&self, provider: Provider, url: &str) -> Option<String> {
        let target = self.target(provider).ok()?;
        let url: http::Uri = url.parse().ok()?;
        let host = target.host.to_str().ok()?;
        if !url
            .authority()
            .is_some_and(|a| a.as_str().eq_ignore_ascii_case(host))
        {
            return None;
        }
        let path_and_query = url.path_and_query()?.as_str();
        let rest = path_and_query.strip_prefix(target.base_path.as_str())?;
        rest.starts_with('/').then(|| rest.to_owned())
    }

    /// Builds the provider request: base path + path + query (origin form; the connection
    /// is already to the provider), `Host`, the given headers, the provider credential in the
    /// provider's own header.
    pub fn request(
        &self,
        provider: Provider,
        method: http::Method,
        path: &str,
        query: Option<&str>,
        mut headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, GatewayError> {
        let target = self.target(provider)?;
        // The reason (which variable or file) was logged at start-up: it is the operator's,
        // not every proxy-key holder's (a path of the server, or a key pasted as a name).
        let credential = target.credential.as_ref().map_err(|_| {
            GatewayError::new(
                ErrorCode::UpstreamUnreachable,
                format!(
                    "The gateway has no credential for {provider}; its operator's log says why."
                ),
            )
        })?;
        if let Some((name, value)) = credential {
            headers.insert(name.clone(), value.clone());
        }
        headers.insert(http::header::HOST, target.host.clone());
        let query_len = query.map_or(0, |q| q.len() + 1);
        let mut path_and_query =
            String::with_capacity(target.base_path.len() + path.len() + query_len);
        path_and_query.push_str(&target.base_path);
        path_and_query.push_str(path);
        if let Some(query) = query {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        let uri = http::Uri::try_from(path_and_query).map_err(|err| {
            GatewayError::new(
                ErrorCode::InvalidRequest,
                format!("The request path is not valid: {err}."),
            )
        })?;
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Sends a request: 502 `upstream_unreachable` when no connection could be made, 504
    /// `upstream_timeout` when the provider sends no response headers within the idle limit.
    /// The response body fails once the provider is silent for the idle limit (one timer for
    /// the whole exchange, moved only when it fires before the latest deadline).
    ///
    /// `sent` tells the meter, however this ends (an error, or the future dropped when the
    /// client leaves), whether the provider may have the request and so may bill it: false
    /// until it is handed to a connection, and after a failure to connect.
    pub async fn send(
        &self,
        provider: Provider,
        request: http::Request<Full<Bytes>>,
        sent: &mut impl SentFlag,
    ) -> Result<http::Response<IdleTimeout<PooledBody>>, GatewayError> {
        let pool = &self.target(provider)?.pool;
        let mut silence = Box::pin(tokio::time::sleep(self.idle_timeout));
        let sent = tokio::select! {
            biased;
            sent = pool.send(request, sent) => Some(sent),
            () = silence.as_mut() => None,
        };
        match sent {
            Some(Ok(response)) => {
                Ok(response.map(|body| IdleTimeout::new(body, self.idle_timeout, silence)))
            }
            Some(Err(err)) => {
                let what = match err {
                    SendError::Connect(_) => "could not connect to",
                    SendError::Lost(_) => "lost the connection to",
                };
                tracing::warn!(%provider, error = %err, "upstream request failed");
                Err(GatewayError::new(
                    ErrorCode::UpstreamUnreachable,
                    format!("The gateway {what} {provider}."),
                ))
            }
            None => Err(GatewayError::new(
                ErrorCode::UpstreamTimeout,
                format!(
                    "{provider} sent no response within {:?}.",
                    self.idle_timeout
                ),
            )),
        }
    }

    fn target(&self, provider: Provider) -> Result<&Target, GatewayError> {
        self.targets
            .iter()
            .find(|t| t.provider == provider)
            .ok_or_else(|| {
                GatewayError::new(
                    ErrorCode::UpstreamUnreachable,
                    format!("{provider} is not configured."),
                )
            })
    }
}

fn target(config: &ProviderConfig, connector: &Connector, shards: usize) -> anyhow::Result<Target> {
    let parts = config.base_url.clone().into_parts();
    let scheme = parts
        .scheme
        .ok_or_else(|| anyhow::anyhow!("{} base_url has no scheme", config.provider))?;
    let authority = parts
        .authority
        .ok_or_else(|| anyhow::anyhow!("{} base_url has no host", config.provider))?;
    let host = HeaderValue::from_str(authority.as_str())?;
    let origin = http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query("/")
        .build()?;
    let base_path = parts
        .path_and_query
        .map(|p| p.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let credential = match &config.credential {
        Some(source) => read_credential(config.kind, source).map(Some),
        None => Ok(None),
    };
    if let Err(reason) = &credential {
        tracing::warn!(provider = %config.provider, "no provider credential ({reason}); its requests will fail with 502");
    }
    Ok(Target {
        provider: config.provider,
        host,
        base_path,
        credential,
        pool: Pool::new(
            connector.clone(),
            origin,
            shards,
            POOL_MAX_IDLE,
            POOL_IDLE_TIMEOUT,
        ),
    })
}

/// The provider's credential as its own header, marked sensitive.
fn read_credential(
    kind: Kind,
    source: &CredentialSource,
) -> Result<(HeaderName, HeaderValue), String> {
    let secret = match source {
        CredentialSource::Env(name) => {
            std::env::var(name).map_err(|_| format!("set the environment variable {name}"))?
        }
        CredentialSource::File(path) => std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {} ({})", path.display(), err.kind()))?,
    };
    let secret = secret.trim();
    if secret.is_empty() {
        return Err("the configured credential is empty".into());
    }
    let (name, value) = match kind {
        Kind::Openai => (http::header::AUTHORIZATION, format!("Bearer {secret}")),
        Kind::Anthropic => (HeaderName::from_static("x-api-key"), secret.to_owned()),
        Kind::Gemini => (HeaderName::from_static("x-goog-api-key"), secret.to_owned()),
        Kind::AzureOpenai => (HeaderName::from_static("api-key"), secret.to_owned()),
    };
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| "the credential contains characters not allowed in a header".to_owned())?;
    value.set_sensitive(true);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider without a usable credential fails its requests with a 502 that every
    /// holder of a proxy key reads: it must not say where the daemon looks for the
    /// credential (a file path of the server, or a variable name that may be the key
    /// itself, pasted in the wrong setting); the operator's log says that.
    #[test]
    fn the_clients_502_does_not_say_where_the_credential_is_looked_for() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("secrets-openai-Qm4xT9");
        let text = format!(
            "[providers.openai]\napi_key_file = {:?}\n[providers.gemini]\napi_key_env = \
             \"GW_TEST_UNSET_Qm4xT9\"\n",
            missing.display().to_string()
        );
        let config = Config::from_text(&text).expect("valid config");
        let upstream = Upstream::new(&config).expect("upstream");
        for provider in [Provider::Openai, Provider::Gemini] {
            let err = upstream
                .request(
                    provider,
                    http::Method::POST,
                    "/v1/x",
                    None,
                    http::HeaderMap::new(),
                    Bytes::new(),
                )
                .expect_err("no credential");
            assert_eq!(err.code, ErrorCode::UpstreamUnreachable);
            assert!(err.message.contains("no credential"), "{}", err.message);
            assert!(!err.message.contains("Qm4xT9"), "{}", err.message);
        }
    }
}
