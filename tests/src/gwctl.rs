//! Running the real `gwctl` binary against a gateway.

use std::process::Stdio;

#[derive(Debug)]
pub struct GwctlOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl GwctlOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "gwctl stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "gwctl failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `gwctl --socket <socket> args…` with no terminal on stdin.
pub async fn run(socket: &std::path::Path, args: &[&str]) -> GwctlOutput {
    run_binary(crate::binaries::gwctl(), socket, args).await
}

/// The same with a given gwctl binary (e.g. the one install.sh installed).
pub async fn run_binary(
    gwctl: &std::path::Path,
    socket: &std::path::Path,
    args: &[&str],
) -> GwctlOutput {
    let output = tokio::process::Command::new(gwctl)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("GWCTL_SOCKET")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running gwctl");
    GwctlOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
