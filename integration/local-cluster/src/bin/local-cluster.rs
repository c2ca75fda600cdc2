//! `local-cluster`: start, stop and inspect the test-only local Kubernetes.
//!
//! - `up` starts `serve` in the background, waits until `/version` answers and prints
//!   `export KUBECONFIG=<path>` and `export SECCOMP_ROOT=<path>` (for `eval "$(local-cluster up)"`);
//! - `down` stops it by PID (the server stops containerd; leftovers are killed by PID);
//! - `status` tells whether it runs;
//! - `images` builds the image archives (and imports them when a cluster runs);
//! - `serve` runs the cluster in the foreground until SIGTERM or Ctrl-C.

#![allow(clippy::print_stdout, clippy::print_stderr)] // reason: a CLI prints its results

use std::{
    io::{Read as _, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use podrunner_local_cluster::{
    apiserver::KubeVersion,
    cluster::{ClusterOptions, LocalCluster},
    node,
};

/// Start, stop and inspect the local test cluster (API server + containerd node).
#[derive(Debug, Parser)]
#[command(name = "local-cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Args)]
struct DirArgs {
    /// Cluster directory (kubeconfig, seccomp root, containerd state). Keep it short: the
    /// containerd socket path must fit in 107 bytes. Default: `local-cluster` in the cargo
    /// target directory (`$CARGO_TARGET_DIR`, else `target`).
    #[arg(long, env = "LOCAL_CLUSTER_DIR", default_value_os_t = default_dir())]
    dir: PathBuf,
}

/// `$CARGO_TARGET_DIR/local-cluster`, else `target/local-cluster` (as cargo places its output).
fn default_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("local-cluster")
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The Kubernetes version the API server reports, e.g. 1.29 or 1.33.
    #[arg(long, env = "LOCAL_CLUSTER_KUBERNETES_VERSION", default_value = "1.33", value_parser = parse_version)]
    kubernetes_version: KubeVersion,
    /// API server port (0 picks a free one).
    #[arg(long, env = "LOCAL_CLUSTER_PORT", default_value_t = 0)]
    port: u16,
}

#[derive(Debug, clap::Args)]
struct ImagesArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Also build the image of this `runner` binary, `localhost/podrunner:<version>`.
    #[arg(long, value_name = "BINARY")]
    runner: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the cluster in the background and print the environment to use it.
    Up(StartArgs),
    /// Stop a cluster started with `up`.
    Down(DirArgs),
    /// Say whether the cluster runs.
    Status(DirArgs),
    /// Build the image archives; import them when a cluster runs.
    Images(ImagesArgs),
    /// Run the cluster in the foreground until SIGTERM or Ctrl-C.
    Serve(StartArgs),
}

fn parse_version(text: &str) -> Result<KubeVersion, String> {
    KubeVersion::parse(text)
        .ok_or_else(|| format!("expected a Kubernetes version like 1.29 or 1.33.2, got {text:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Up(args) => up(&args),
        Cmd::Down(args) => down(&absolute(&args.dir)),
        Cmd::Status(args) => status(&absolute(&args.dir)),
        Cmd::Images(args) => images(&absolute(&args.dir.dir), args.runner.as_deref()),
        Cmd::Serve(args) => serve(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::disallowed_methods)] // reason: the CLI's main thread runs no async runtime here
fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("local-cluster.pid")
}

fn ready_file(dir: &Path) -> PathBuf {
    dir.join("local-cluster.url")
}

fn log_file(dir: &Path) -> PathBuf {
    dir.join("local-cluster.log")
}

/// `$LOCAL_CLUSTER_IMAGE_CACHE` when set (tests share one cache), else `<dir>/images`.
fn image_cache(dir: &Path) -> PathBuf {
    std::env::var_os("LOCAL_CLUSTER_IMAGE_CACHE").map_or_else(|| dir.join("images"), PathBuf::from)
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; it is not alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn running_pid(dir: &Path) -> Option<u32> {
    let pid = std::fs::read_to_string(pid_file(dir)).ok()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// `GET /version` over plain HTTP; the `gitVersion` when it answers 200.
fn probe_version(url: &str) -> Option<String> {
    let address = url.strip_prefix("http://")?;
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET /version HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.0 200") && !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body = response.split("\r\n\r\n").nth(1)?;
    let version: serde_json::Value = serde_json::from_str(body).ok()?;
    version["gitVersion"].as_str().map(str::to_owned)
}

fn print_exports(dir: &Path) {
    println!("export KUBECONFIG={}", dir.join("kubeconfig").display());
    println!("export SECCOMP_ROOT={}", dir.join("seccomp").display());
}

fn up(args: &StartArgs) -> anyhow::Result<ExitCode> {
    let dir = absolute(&args.dir.dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    if let Some(pid) = running_pid(&dir) {
        eprintln!("local cluster already running (pid {pid})");
        print_exports(&dir);
        return Ok(ExitCode::SUCCESS);
    }
    let _ = std::fs::remove_file(ready_file(&dir));
    let log = std::fs::File::create(log_file(&dir))
        .with_context(|| format!("failed to create {}", log_file(&dir).display()))?;
    let exe = std::env::current_exe().context("failed to find the local-cluster executable")?;
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--dir")
        .arg(&dir)
        .arg("--kubernetes-version")
        .arg(args.kubernetes_version.to_string())
        .arg("--port")
        .arg(args.port.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("failed to share the log file")?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("failed to start `local-cluster serve`")?;
    std::fs::write(pid_file(&dir), child.id().to_string())
        .context("failed to write the pid file")?;
    let started = Instant::now();
    // The first start builds the images (seconds to a minute); later starts take about a second.
    while started.elapsed() < Duration::from_secs(300) {
        if let Some(exit) = child.try_wait().context("failed to wait for the server")? {
            let log = std::fs::read_to_string(log_file(&dir)).unwrap_or_default();
            bail!("local-cluster serve exited with {exit} before it was ready; its log:\n{log}");
        }
        if let Ok(url) = std::fs::read_to_string(ready_file(&dir))
            && let Some(version) = probe_version(url.trim())
        {
            eprintln!(
                "local cluster {version} up at {} in {:.2} s (pid {})",
                url.trim(),
                started.elapsed().as_secs_f64(),
                child.id()
            );
            print_exports(&dir);
            return Ok(ExitCode::SUCCESS);
        }
        pause(Duration::from_millis(50));
    }
    bail!(
        "the local cluster did not answer /version within 300 s; see {}",
        log_file(&dir).display()
    )
}

/// PIDs of processes whose command line mentions `needle` (containerd and its shims of this cluster).
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).replace('\0', " ").contains(needle))
        })
        .collect()
}

fn kill(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .status();
}

fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if pids.iter().all(|pid| !alive(*pid)) {
            return true;
        }
        pause(Duration::from_millis(50));
    }
    false
}

fn down(dir: &Path) -> anyhow::Result<ExitCode> {
    match running_pid(dir) {
        Some(pid) => {
            kill("TERM", &[pid]);
            if !wait_gone(&[pid], Duration::from_secs(30)) {
                eprintln!("local-cluster serve (pid {pid}) ignored SIGTERM; killing it");
                kill("KILL", &[pid]);
                wait_gone(&[pid], Duration::from_secs(5));
            }
            eprintln!("local cluster stopped (pid {pid})");
        }
        None => eprintln!("local cluster not running"),
    }
    // Whatever survived (after a SIGKILL of the server): this cluster's containerd and shims.
    let leftovers = pids_mentioning(&dir.join("containerd").display().to_string());
    if !leftovers.is_empty() {
        eprintln!("stopping leftover containerd processes {leftovers:?}");
        kill("TERM", &leftovers);
        if !wait_gone(&leftovers, Duration::from_secs(10)) {
            kill("KILL", &leftovers);
        }
    }
    let _ = std::fs::remove_file(pid_file(dir));
    let _ = std::fs::remove_file(ready_file(dir));
    Ok(ExitCode::SUCCESS)
}

fn status(dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(pid) = running_pid(dir) else {
        println!("not running ({})", dir.display());
        return Ok(ExitCode::from(3));
    };
    let url = std::fs::read_to_string(ready_file(dir)).unwrap_or_default();
    match probe_version(url.trim()) {
        Some(version) => {
            println!("running: pid {pid}, {version} at {}", url.trim());
            print_exports(dir);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("starting or unhealthy: pid {pid}, /version does not answer yet");
            Ok(ExitCode::from(4))
        }
    }
}

fn images(dir: &Path, runner: Option<&Path>) -> anyhow::Result<ExitCode> {
    let cache = image_cache(dir);
    let started = Instant::now();
    let mut built = node::build_images(&cache).context("failed to build the images")?;
    if let Some(binary) = runner {
        let name = format!("localhost/podrunner:{}", env!("CARGO_PKG_VERSION"));
        built.push(
            node::build_runner_image(&dir.join("runner-image"), binary, &name)
                .context("failed to build the runner image")?,
        );
    }
    for image in &built {
        println!(
            "{} {} ({})",
            image.name,
            image.archive.display(),
            if image.cached { "cached" } else { "built" }
        );
    }
    let socket = dir.join("containerd").join("containerd.sock");
    if running_pid(dir).is_some() && socket.exists() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?
            .block_on(node::import_images(&socket, &built))
            .context("failed to import the images")?;
        println!("imported into the running cluster's containerd ({})", socket.display());
    }
    eprintln!("images ready in {:.2} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &StartArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let dir = absolute(&args.dir.dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(async {
        let mut options = ClusterOptions::new(&dir).kubernetes_version(args.kubernetes_version);
        options.image_cache = image_cache(&dir);
        options.port = args.port;
        let cluster =
            LocalCluster::start(options).await.context("failed to start the local cluster")?;
        std::fs::write(ready_file(&dir), cluster.url()).context("failed to write the url file")?;
        tracing::info!(
            url = %cluster.url(),
            kubeconfig = %cluster.kubeconfig_path().display(),
            startup_ms = u64::try_from(cluster.startup_time().as_millis()).unwrap_or(u64::MAX),
            "serving"
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("failed to listen for SIGTERM")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping");
        let _ = std::fs::remove_file(ready_file(&dir));
        cluster.shutdown().await;
        let _ = std::fs::remove_file(pid_file(&dir));
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
