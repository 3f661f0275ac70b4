//! nginx as a reference server (issue #19): the proxy that streams fastest, measured in the
//! same rounds as gatewayd when it is installed (`apt-get install nginx`).
//!
//! Configured as a streaming proxy should be for this comparison: the same number of worker
//! processes as gatewayd's event loops, a keepalive pool to the mock (HTTP/1.1, `Connection`
//! cleared), `proxy_buffering off` and `proxy_request_buffering off` (each chunk forwarded
//! as it arrives, as gatewayd does), no access log. Everything it writes lives in the run's
//! scratch directory. Its CPU and peak RSS are the master's plus its workers'
//! (`process::cpu_time` and `process::peak_rss_kib` count live children).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process::Proc;

/// The nginx binary on `PATH` or in `/usr/sbin`, if installed.
pub fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/nginx");
        sbin.is_file().then_some(sbin)
    })
}

/// Starts nginx in front of `upstream`, its files under `dir`; returns it and its address.
pub fn spawn(
    binary: &Path,
    dir: &Path,
    upstream: SocketAddr,
    workers: usize,
) -> anyhow::Result<(Proc, SocketAddr)> {
    std::fs::create_dir_all(dir.join("temp")).context("creating nginx's directory")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("finding a free port for nginx")?
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = dir.join("nginx.conf");
    std::fs::write(&config, config_text(dir, addr, upstream, workers))
        .with_context(|| format!("writing {}", config.display()))?;
    let mut command = Command::new(binary);
    command.arg("-p").arg(dir).arg("-c").arg(&config);
    // The master logs "start worker processes" (notice) once it listens.
    let proc = Proc::spawn(
        "nginx",
        command,
        "start worker processes",
        Duration::from_secs(10),
    )?;
    Ok((proc, addr))
}

fn config_text(dir: &Path, listen: SocketAddr, upstream: SocketAddr, workers: usize) -> String {
    let temp = dir.join("temp");
    let temp = temp.display();
    format!(
        r#"# Written by gateway-bench: nginx as a streaming reverse proxy, for reference.
daemon off;
worker_processes {workers};
pid {pid};
error_log stderr notice;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 1000000;

    upstream mock {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
    }}

    server {{
        listen {listen};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"#,
        workers = workers.max(1),
        pid = dir.join("nginx.pid").display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_streams_through_a_keepalive_pool() {
        let text = config_text(
            Path::new("/tmp/x"),
            "127.0.0.1:8080".parse().expect("addr"),
            "127.0.0.1:9090".parse().expect("addr"),
            2,
        );
        for line in [
            "worker_processes 2;",
            "server 127.0.0.1:9090;",
            "keepalive 256;",
            "listen 127.0.0.1:8080;",
            "proxy_buffering off;",
            "proxy_http_version 1.1;",
            "daemon off;",
        ] {
            assert!(text.contains(line), "{line}");
        }
    }
}
