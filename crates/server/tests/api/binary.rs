//! Running the real `voice-proxy` binary as a child process.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::ADMIN_TOKEN;

pub struct Service {
    pub child: Child,
    pub base: String,
    /// Every line the service wrote to stdout and stderr so far.
    pub output: Arc<Mutex<Vec<String>>>,
    /// The tasks reading stdout and stderr into `output`; they end when the pipes close.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts `voice-proxy serve` with these settings (plus an admin token, a free port and JSON
/// logs) and waits until it listens.
pub async fn start(vars: &[(&str, &str)]) -> Service {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voice-proxy"));
    cmd.arg("serve")
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ALLOW_UNSIGNED_WEBHOOKS", "true")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("HTTP_WORKERS", "2")
        .env("RETENTION_HASH_KEY", "test-retention-key-0123456789")
        .env(
            "SPOOL_DIR",
            std::env::temp_dir().join(format!("vp-test-spool-{}", uuid::Uuid::new_v4().simple())),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the voice-proxy binary starts");
    let output = Arc::new(Mutex::new(Vec::new()));
    let (port_tx, port_rx) = tokio::sync::oneshot::channel();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let out = output.clone();
    let stdout_reader = tokio::spawn(async move {
        let mut port_tx = Some(port_tx);
        while let Ok(Some(line)) = stdout.next_line().await {
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if let Some(port) = v["fields"]["port"].as_u64()
                && let Some(tx) = port_tx.take()
            {
                let _ = tx.send(port);
            }
            out.lock().unwrap().push(line);
        }
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let out = output.clone();
    let stderr_reader = tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            out.lock().unwrap().push(line);
        }
    });
    let port = tokio::time::timeout(Duration::from_secs(60), port_rx)
        .await
        .expect("the service logs its port within a minute")
        .expect("the service is running");
    Service {
        child,
        base: format!("http://127.0.0.1:{port}"),
        output,
        readers: vec![stdout_reader, stderr_reader],
    }
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running");
        let ok = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// The service's resident memory, in KiB (`VmRSS` of /proc).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// Everything the service wrote, once it has exited: waits for both pipes to be read to
    /// their end, so the last lines are not missed.
    pub async fn final_output(&mut self) -> Vec<String> {
        for reader in self.readers.drain(..) {
            tokio::time::timeout(Duration::from_secs(5), reader)
                .await
                .expect("the pipes close once the service has exited")
                .unwrap();
        }
        self.output()
    }
}
