//! `gatewayd::run` inside the test process, with a `ManualClock`.
//!
//! The real binary reads the system clock; to cross an expiry instant, a midnight or a month
//! end without sleeping, these tests run the same `run` function in-process with a clock they
//! move by hand, and still talk to it over its real socket.

use std::sync::Arc;

use gatewayd::{Config, Listeners, ManualClock};
use jiff::Timestamp;
use tokio::sync::oneshot;

use crate::admin::Admin;
use crate::mock::MockProvider;
use gatewayd::config::{ProviderFile, ProvidersFile};

pub struct InProcessGateway {
    _dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub admin: Admin,
    /// `http://127.0.0.1:PORT` of the proxy listener.
    pub proxy_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessGateway {
    pub async fn start(now: Timestamp) -> InProcessGateway {
        Self::start_with(now, None).await
    }

    /// With providers pointed at `mock`; credentials come from files (the test process's
    /// environment is shared by every test, so it is not the place for them).
    pub async fn start_with(now: Timestamp, mock: Option<&MockProvider>) -> InProcessGateway {
        let dir = tempfile::Builder::new()
            .prefix("gw-inproc-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("admin.sock");
        let providers = mock.map(|mock| {
            let provider = |name: &str| {
                let key_file = dir.path().join(format!("{name}.key"));
                std::fs::write(&key_file, crate::gateway::provider_key(name)).expect("key file");
                Some(ProviderFile {
                    base_url: Some(mock.base_url(name)),
                    api_key_env: None,
                    api_key_file: Some(key_file),
                })
            };
            ProvidersFile {
                openai: provider("openai"),
                anthropic: provider("anthropic"),
                gemini: provider("gemini"),
            }
        });
        let file = gatewayd::config::FileConfig {
            data_dir: Some(dir.path().join("data")),
            proxy: Some(gatewayd::config::ProxyFile {
                listen: Some("127.0.0.1:0".into()),
                ..Default::default()
            }),
            admin: Some(gatewayd::config::AdminFile {
                socket: Some(socket.clone()),
                ..Default::default()
            }),
            providers,
            ..Default::default()
        };
        let config = Config::resolve(file).expect("valid config");
        let listeners = Listeners::bind(&config).await.expect("bind");
        let proxy_url = format!(
            "http://{}",
            listeners.proxy.local_addr().expect("proxy address")
        );
        let clock = Arc::new(ManualClock::new(now));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gatewayd::run(config, listeners, clock.clone(), async {
            let _ = stopped.await;
        }));
        InProcessGateway {
            _dir: dir,
            clock,
            admin: Admin { socket },
            proxy_url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("gatewayd task").expect("gatewayd run");
        }
    }
}
