//! A private containerd daemon for the node: generated config, its own root, state, socket and
//! CRI streaming port, started as a child process and stopped by PID.
//!
//! Stopping is thorough because a containerd that is simply killed leaves its shims, their
//! containers and the overlay mounts behind: [`Containerd::stop`] kills the daemon, every
//! `containerd-shim` that serves this daemon's socket and the shims' descendants, then lazily
//! unmounts whatever is still mounted under the daemon's directory.

use std::{
    collections::{HashMap, HashSet},
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_cri::v1::VersionRequest;

use super::{Error, Result, cri::CriClient};

/// How long [`Containerd::start`] waits for the socket to answer `Version`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Settings for a private containerd.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// Directory that holds everything: `config.toml`, `root/`, `state/`, `runc/`, the socket
    /// and `containerd.log`. Created if missing. Keep it short: `<dir>/containerd.sock.ttrpc`
    /// must fit 107 bytes.
    pub dir: PathBuf,
    /// Image used for pod sandboxes; it must be imported into the `k8s.io` namespace before the
    /// first `RunPodSandbox`.
    pub sandbox_image: String,
    /// The containerd binary (default `containerd` from `PATH`).
    pub binary: PathBuf,
}

impl ContainerdConfig {
    /// Settings with the default binary and [`super::images::PAUSE_IMAGE`] as sandbox image.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sandbox_image: super::images::PAUSE_IMAGE.to_owned(),
            binary: PathBuf::from("containerd"),
        }
    }
}

/// A running private containerd. Dropping it stops it (see the module doc).
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    stream_addr: SocketAddr,
    startup: Duration,
}

impl Containerd {
    /// Writes the config, starts the daemon and waits until CRI answers `Version`.
    ///
    /// On failure the error carries the tail of the daemon's log.
    pub async fn start(config: &ContainerdConfig) -> Result<Self> {
        let started = Instant::now();
        let dir = &config.dir;
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create the containerd directory",
            path: dir.clone(),
            source,
        })?;
        let dir = fs::canonicalize(dir).map_err(|source| Error::Io {
            action: "resolve the containerd directory",
            path: dir.clone(),
            source,
        })?;
        let socket = dir.join("containerd.sock");
        // The ttrpc socket next to it is 6 bytes longer.
        if socket.as_os_str().len() + ".ttrpc".len() > MAX_SOCKET_PATH {
            return Err(Error::SocketPathTooLong { path: socket });
        }
        let stream_port = free_port()?;
        let stream_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, stream_port));
        let config_path = dir.join("config.toml");
        let toml = render_config(&dir, &socket, stream_port, &config.sandbox_image);
        write(&config_path, toml.as_bytes())?;
        let log = dir.join("containerd.log");
        let log_file = fs::File::create(&log).map_err(|source| Error::Io {
            action: "create the containerd log",
            path: log.clone(),
            source,
        })?;
        let log_err = log_file.try_clone().map_err(|source| Error::Io {
            action: "open the containerd log",
            path: log.clone(),
            source,
        })?;
        let child = Command::new(&config.binary)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: config.binary.display().to_string(),
                source,
            })?;
        let pid = child.id();
        let mut daemon =
            Self { child: Some(child), dir, socket, log, stream_addr, startup: Duration::ZERO };
        tracing::debug!(process.pid = pid, containerd.socket = %daemon.socket.display(), "containerd started");
        daemon.wait_ready().await?;
        daemon.startup = started.elapsed();
        tracing::info!(
            process.pid = pid,
            startup_ms = daemon.startup.as_millis() as u64,
            "containerd ready"
        );
        Ok(daemon)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::ContainerdStart {
                    reason: format!("containerd exited with {status}"),
                    log: self.log_tail(),
                });
            }
            if self.socket.exists()
                && let Ok(mut client) = CriClient::connect(&self.socket)
                && let Ok(Ok(_)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    client.runtime.version(VersionRequest { version: "v1".to_owned() }),
                )
                .await
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = self.log_tail();
                self.stop();
                return Err(Error::ContainerdStart {
                    reason: format!("the CRI socket did not answer within {START_TIMEOUT:?}"),
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The gRPC (and CRI) socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The directory that holds the daemon's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The CRI streaming server's address (loopback).
    pub fn stream_addr(&self) -> SocketAddr {
        self.stream_addr
    }

    /// Time from spawning the process to the first answered `Version`.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// A CRI client for this daemon.
    pub fn cri(&self) -> Result<CriClient> {
        CriClient::connect(&self.socket)
    }

    /// The last 4 KiB of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4096);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Stops the daemon, its shims and their containers, and unmounts what they left under the
    /// daemon's directory. Idempotent; also called on drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let shims = shim_pids(&self.socket);
        let mut victims = descendants(&shims);
        victims.extend(shims.iter().copied());
        // The daemon first, so it does not restart anything, then shims and their containers.
        if let Err(error) = child.kill() {
            tracing::warn!(%error, "failed to kill containerd");
        }
        let _ = child.wait();
        if !victims.is_empty() {
            let mut kill = Command::new("kill");
            kill.arg("-KILL");
            for pid in &victims {
                kill.arg(pid.to_string());
            }
            match kill.stdout(Stdio::null()).stderr(Stdio::null()).status() {
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "failed to run kill"),
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while victims.iter().any(|pid| Path::new(&format!("/proc/{pid}")).exists())
                && Instant::now() < deadline
            {
                #[allow(
                    clippy::disallowed_methods,
                    reason = "stop runs from Drop, outside any async context"
                )]
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        unmount_under(&self.dir);
        tracing::debug!(containerd.dir = %self.dir.display(), "containerd stopped");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// A loopback TCP port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| Error::Io {
        action: "find a free port",
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    listener.local_addr().map(|addr| addr.port()).map_err(|source| Error::Io {
        action: "find a free port",
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })
}

/// The containerd config (version 2). Only what differs from containerd's defaults is set.
fn render_config(dir: &Path, socket: &Path, stream_port: u16, sandbox_image: &str) -> String {
    let d = dir.display();
    let s = socket.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{s}"

[ttrpc]
  address = "{s}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "{stream_port}"
  enable_selinux = false
  max_container_log_line_size = 16384

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  Root = "{d}/runc"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{d}/cni/bin"
  conf_dir = "{d}/cni/conf"
"#
    )
}

/// PIDs of the `containerd-shim*` processes started for the daemon listening on `socket`.
fn shim_pids(socket: &Path) -> Vec<u32> {
    let socket = socket.to_string_lossy();
    let mut pids = Vec::new();
    for (pid, cmdline) in processes() {
        let mut args = cmdline.split('\0');
        let is_shim = args.next().is_some_and(|argv0| {
            argv0.rsplit('/').next().is_some_and(|b| b.starts_with("containerd-shim"))
        });
        if is_shim && cmdline.split('\0').any(|arg| arg == socket) {
            pids.push(pid);
        }
    }
    pids
}

/// Every process with its NUL-separated command line.
pub(crate) fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmdline).into_owned()))
        })
        .collect()
}

/// The parent PID from `/proc/<pid>/stat` (the field after the parenthesised command name).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// All descendants of `roots` (not the roots themselves).
pub(crate) fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, _) in processes() {
        if let Some(ppid) = parent_pid(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut seen: HashSet<u32> = roots.iter().copied().collect();
    let mut stack: Vec<u32> = roots.to_vec();
    let mut out = Vec::new();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if seen.insert(child) {
                out.push(child);
                stack.push(child);
            }
        }
    }
    out
}

/// Lazily unmounts every mount point under `dir`, deepest first.
pub(crate) fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    if points.is_empty() {
        return;
    }
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    let status = Command::new("umount")
        .arg("-l")
        .args(&points)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(error) = status {
        tracing::warn!(%error, "failed to run umount");
    }
}

/// Undoes the octal escapes (`\040` for a space) of `/proc/self/mountinfo`.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len() + 1
            && let Some(code) =
                raw.get(i + 1..i + 4).and_then(|oct| u8::from_str_radix(oct, 8).ok())
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_with_escaped_spaces_are_decoded() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/plain/path"), "/plain/path");
    }

    #[test]
    fn generated_config_names_private_paths_and_the_stream_port() {
        let toml = render_config(
            Path::new("/t/x"),
            Path::new("/t/x/containerd.sock"),
            4242,
            "localhost/pause:latest",
        );
        assert!(toml.contains(r#"root = "/t/x/root""#));
        assert!(toml.contains(r#"address = "/t/x/containerd.sock""#));
        assert!(toml.contains(r#"stream_server_port = "4242""#));
        assert!(toml.contains("restrict_oom_score_adj = true"));
        assert!(toml.contains(r#"sandbox_image = "localhost/pause:latest""#));
    }

    #[test]
    fn parent_pid_of_this_process_is_read_from_proc() {
        let me = std::process::id();
        assert!(parent_pid(me).is_some_and(|ppid| ppid != me));
    }
}
