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

pub struct InProcessGateway {
    _dir: tempfile::TempDir,
    /// The configuration it runs with, kept for [`InProcessGateway::restart`].
    config_text: String,
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
        Self::start_configured(now, mock, "").await
    }

    /// As `start_with`, plus `extra` TOML (e.g. `[[prices]]`, `[spend]`).
    pub async fn start_configured(
        now: Timestamp,
        mock: Option<&MockProvider>,
        extra: &str,
    ) -> InProcessGateway {
        crate::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix("gw-inproc-")
            .tempdir()
            .expect("temp dir");
        let socket = dir.path().join("admin.sock");
        let mut text = format!(
            "data_dir = {:?}\n[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nsocket = {:?}\n",
            dir.path().join("data").display().to_string(),
            socket.display().to_string()
        );
        if let Some(mock) = mock {
            for name in ["openai", "anthropic", "gemini"] {
                let key_file = dir.path().join(format!("{name}.key"));
                std::fs::write(&key_file, crate::gateway::provider_key(name)).expect("key file");
                text.push_str(&format!(
                    "[providers.{name}]\nbase_url = {:?}\napi_key_file = {:?}\n",
                    mock.base_url(name),
                    key_file.display().to_string()
                ));
            }
        }
        text.push_str(extra);
        let mut gateway = InProcessGateway {
            _dir: dir,
            config_text: text,
            clock: Arc::new(ManualClock::new(now)),
            admin: Admin { socket },
            proxy_url: String::new(),
            stop: None,
            task: None,
        };
        gateway.launch().await;
        gateway
    }

    /// Stops it (a graceful shutdown: usage flushed) and starts it again on the same data
    /// directory and clock; the proxy listens on a new port.
    pub async fn restart(&mut self) {
        self.shut_down().await;
        self.launch().await;
    }

    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn launch(&mut self) {
        let file = gatewayd::config::parse_file(&self.config_text).expect("valid test config");
        let config = Config::resolve(file).expect("valid config");
        let listeners = Listeners::bind(&config).await.expect("bind");
        self.proxy_url = format!(
            "http://{}",
            listeners.proxy.local_addr().expect("proxy address")
        );
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(gatewayd::run(
            config,
            listeners,
            self.clock.clone(),
            async {
                let _ = stopped.await;
            },
        )));
    }

    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("gatewayd task").expect("gatewayd run");
        }
    }
}
