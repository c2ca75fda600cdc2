//! `local-cluster`: start, stop and inspect the local test cluster: real Kubernetes (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, containerd and the kubelet, built by
//! `scripts/build-kubernetes.sh`) as plain processes.
//!
//! - `up` starts `serve` in the background, waits until the node is Ready and prints
//!   `export KUBECONFIG=<path>` and `export SECCOMP_ROOT=<path>` (for `eval "$(local-cluster up)"`);
//! - `down` stops it by PID (the server stops every component and removes what they left: the
//!   CNI bridge, the kubelet's cgroups; mounts end with the cluster's mount namespace); it fails
//!   when anything is left;
//! - `status` tells whether it runs;
//! - `images` builds the image archives (and imports them when a cluster runs);
//! - `serve` runs the cluster in the foreground until SIGTERM or Ctrl-C.

#![allow(clippy::print_stdout, clippy::print_stderr)] // reason: a CLI prints its results

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use podrunner_local_cluster::{
    kubernetes::{self, ClusterInfo, KubernetesCluster},
    node,
};

/// Start, stop and inspect the local test cluster (real Kubernetes on containerd).
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
    /// The Kubernetes release to run (its binaries built by `scripts/build-kubernetes.sh`).
    #[arg(long, env = "LOCAL_CLUSTER_KUBERNETES_VERSION", default_value = kubernetes::DEFAULT_VERSION)]
    kubernetes_version: String,
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

/// The running cluster's description, once `serve` has written its ready file.
fn probe_ready(dir: &Path) -> Option<ClusterInfo> {
    std::fs::read_to_string(ready_file(dir)).ok()?;
    ClusterInfo::load(dir).ok()
}

fn print_exports(dir: &Path) {
    println!("export KUBECONFIG={}", dir.join("kubeconfig").display());
    println!("export SECCOMP_ROOT={}", dir.join("kubelet/seccomp").display());
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
        .arg(&args.kubernetes_version)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("failed to share the log file")?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("failed to start `local-cluster serve`")?;
    std::fs::write(pid_file(&dir), child.id().to_string())
        .context("failed to write the pid file")?;
    let started = Instant::now();
    // The first start builds the images (seconds to a minute); the control plane and the node
    // take about half a minute.
    while started.elapsed() < Duration::from_secs(300) {
        if let Some(exit) = child.try_wait().context("failed to wait for the server")? {
            let log = std::fs::read_to_string(log_file(&dir)).unwrap_or_default();
            bail!("local-cluster serve exited with {exit} before it was ready; its log:\n{log}");
        }
        if let Some(info) = probe_ready(&dir) {
            eprintln!(
                "local cluster: Kubernetes v{} up at {} in {:.1} s (pid {})",
                info.version,
                info.server,
                started.elapsed().as_secs_f64(),
                child.id()
            );
            print_exports(&dir);
            return Ok(ExitCode::SUCCESS);
        }
        pause(Duration::from_millis(50));
    }
    bail!(
        "the local cluster was not ready within 300 s; see {} and {}",
        log_file(&dir).display(),
        dir.join("logs").display()
    )
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
    let mut code = ExitCode::SUCCESS;
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
    // Whatever the server left (all of it, when it was killed): processes, the bridge, the
    // iptables chains, the cgroups; then a check that nothing of them, and no mount, is left.
    let node_name =
        ClusterInfo::load(dir).map_or_else(|_| "local-node".to_owned(), |i| i.node_name);
    let left = kubernetes::clean_machine(dir, &node_name);
    let report = dir.join("leftovers.txt");
    let reported = std::fs::read_to_string(&report).unwrap_or_default();
    if !reported.trim().is_empty() {
        eprintln!("stopping the cluster left behind (removed since):\n{reported}");
    }
    if !left.0.is_empty() {
        eprintln!("the cluster left behind:\n{}", left.0.join("\n"));
        code = ExitCode::FAILURE;
    } else {
        eprintln!("nothing left: no process, mount, network link, iptables chain or cgroup");
    }
    let _ = std::fs::remove_file(pid_file(dir));
    let _ = std::fs::remove_file(ready_file(dir));
    Ok(code)
}

fn status(dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(pid) = running_pid(dir) else {
        println!("not running ({})", dir.display());
        return Ok(ExitCode::from(3));
    };
    match probe_ready(dir) {
        Some(info) => {
            println!("running: pid {pid}, Kubernetes v{} at {}", info.version, info.server);
            print_exports(dir);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("starting: pid {pid}, the node is not Ready yet");
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
    if running_pid(dir).is_some()
        && let Some(info) = probe_ready(dir)
    {
        let ctr = info.binaries.runtime.join("ctr");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?
            .block_on(node::import_images_with(&ctr, &info.containerd_socket, &built))
            .context("failed to import the images")?;
        println!(
            "imported into the running cluster's containerd ({})",
            info.containerd_socket.display()
        );
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
        let mut options = kubernetes::Options::new(&dir);
        options.version.clone_from(&args.kubernetes_version);
        options.image_cache = image_cache(&dir);
        let _ = std::fs::remove_file(dir.join("leftovers.txt"));
        let mut cluster =
            KubernetesCluster::start(options).await.context("failed to start the local cluster")?;
        std::fs::write(ready_file(&dir), &cluster.info().server)
            .context("failed to write the ready file")?;
        tracing::info!(
            server = %cluster.info().server,
            kubeconfig = %cluster.info().kubeconfig.display(),
            timings = ?cluster.timings(),
            "serving"
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("failed to listen for SIGTERM")?;
        let mut watch = tokio::time::interval(Duration::from_secs(2));
        let control_path = kubernetes::shared::control_socket(&dir);
        let _ = std::fs::remove_file(&control_path);
        let control = tokio::net::UnixListener::bind(&control_path)
            .with_context(|| format!("failed to listen on {}", control_path.display()))?;
        let ended = loop {
            tokio::select! {
                _ = term.recv() => break None,
                _ = tokio::signal::ctrl_c() => break None,
                _ = watch.tick() => {
                    if let Err(error) = cluster.check_running() {
                        break Some(error);
                    }
                }
                accepted = control.accept() => {
                    if let Ok((stream, _)) = accepted {
                        answer_control(&mut cluster, stream).await;
                    }
                }
            }
        };
        let _ = std::fs::remove_file(&control_path);
        if let Some(error) = &ended {
            tracing::error!(error = %error, "a component stopped; stopping the cluster");
        }
        tracing::info!("stopping");
        let _ = std::fs::remove_file(ready_file(&dir));
        let left = cluster.stop();
        std::fs::write(dir.join("leftovers.txt"), left.0.join("\n"))
            .context("failed to write the leftovers report")?;
        let _ = std::fs::remove_file(pid_file(&dir));
        match ended {
            Some(error) => Err(anyhow::Error::new(error)),
            None => anyhow::Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One command of a test on the control socket (`stop kubelet`, `start kubelet`,
/// `stop kube-apiserver`, `start kube-apiserver`, `compact-etcd`), answered `ok …` or `error: …`.
async fn answer_control(cluster: &mut KubernetesCluster, stream: tokio::net::UnixStream) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(1024));
    if reader.read_line(&mut line).await.is_err() {
        return;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    tracing::info!(command = %line.trim(), "control");
    let result = match words.as_slice() {
        ["stop", name] => cluster.stop_component(name).map(|()| "ok".to_owned()),
        ["start", name] => cluster.start_component(name).map(|()| "ok".to_owned()),
        ["compact-etcd"] => cluster.compact_etcd().await.map(|r| format!("ok {r}")),
        _ => Ok(format!("error: unknown command {:?}", line.trim())),
    };
    let answer = result.unwrap_or_else(|e| format!("error: {e}"));
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
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
