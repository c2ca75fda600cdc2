//! A `runner run` child process, as the end-to-end tests, the bench and the demo start it:
//! with a config and a kubeconfig, its stderr (the daemon log) collected line by line, stopped
//! with SIGTERM.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

/// A running `runner run`; killed when dropped.
#[derive(Debug)]
pub struct RunnerProcess {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl RunnerProcess {
    /// Starts `<binary> run --config <config> <args>` with `KUBECONFIG=<kubeconfig>` and `envs`,
    /// outside any in-cluster environment.
    ///
    /// # Errors
    ///
    /// When the binary cannot be started.
    pub fn start(
        binary: &Path,
        config: &Path,
        kubeconfig: &Path,
        args: &[&str],
        envs: &[(String, String)],
    ) -> std::io::Result<Self> {
        let mut child = tokio::process::Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("CONFIG_FILE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = Arc::clone(&lines);
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    sink.lock().unwrap_or_else(PoisonError::into_inner).push(line);
                }
            });
        }
        Ok(Self { child, lines })
    }

    /// The daemon log so far, one line per entry.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The daemon log so far, as text.
    pub fn log(&self) -> String {
        let mut text = self.lines().join("\n");
        text.push('\n');
        text
    }

    /// The process's peak resident memory (`VmHWM`, bytes) and CPU time used so far (user and
    /// system, seconds), from `/proc`; `None` once it has exited.
    pub fn usage(&self) -> Option<(u64, f64)> {
        let pid = self.child.id()?;
        let peak = self.status_bytes("VmHWM:")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the `(comm)`: state is the 3rd field overall, utime the 14th, stime the
        // 15th; /proc reports them in USER_HZ (100 per second on Linux).
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some((peak, ticks as f64 / 100.0))
    }

    /// The process's resident memory now (`VmRSS`, bytes); `None` once it has exited.
    pub fn rss(&self) -> Option<u64> {
        self.status_bytes("VmRSS:")
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in bytes.
    fn status_bytes(&self, field: &str) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// Sends SIGTERM (a graceful shutdown: running jobs may finish).
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends the signal of this name (`TERM`, `USR2`, ...).
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ =
                std::process::Command::new("kill").args(["-s", name, &pid.to_string()]).status();
        }
    }

    /// The process id, while the process has not been waited for.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGKILL: the process ends at once, as after an OOM kill or a lost node, leaving its
    /// jobs and pods behind.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Waits for the process to exit, for at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait()).await.ok().and_then(Result::ok)
    }
}
