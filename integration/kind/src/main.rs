//! `podrunner-kind-e2e`, behind `cargo xtask e2e-kind`: creates a kind cluster whose node has
//! the project's seccomp profiles, loads the runner's and the jobs' images, deploys the runner
//! with `deploy/overlays/kind`, points it at GitLab doubles on the kind network's gateway, runs
//! the cases shared with the local-cluster demo (`podrunner_local_cluster::demo::CASES`: the
//! feature request's and some of the lifecycle's; AppArmor ones only where the host's kernel
//! has AppArmor), checks each, checks no job pod is left, and deletes the cluster. It refuses
//! any kube context that is not a kind one.

#![allow(clippy::print_stdout, clippy::print_stderr)] // reason: a CLI prints its progress and results

mod guard;

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use podrunner_local_cluster::demo::{self, Case, Doubles, Needs};
use podrunner_local_cluster::node::{build_images, build_runner_image};

/// The runner's image name, as `deploy/base/deployment.yaml` has it.
const RUNNER_IMAGE: &str = "localhost/podrunner:0.1.0";

#[derive(Debug, Parser)]
#[command(
    name = "podrunner-kind-e2e",
    about = "Run the runner in a kind cluster (deploy/overlays/kind) and check the shared cases there",
    long_about = "Creates a kind cluster (integration/kind/cluster.yaml: the project's seccomp \
profiles on the node), loads the runner's image and the jobs' images, deploys the runner with \
deploy/overlays/kind, starts one GitLab double per runner of examples/demo.toml on the kind \
network's gateway, runs the cases shared with the local-cluster demo, checks what each must show \
and that no job pod is left, then deletes the cluster. Needs kind, kubectl and a Docker engine. \
Refuses any kube context that is not a kind one (kind-<name>, nodes with a kind:// providerID)."
)]
struct Cli {
    /// The `runner` binary to put in the image (default: `cargo build --release -p podrunner`,
    /// once the kube context passed the guard).
    #[arg(long, value_name = "PATH")]
    runner_binary: Option<PathBuf>,
    /// The kind cluster to create, use and delete (its kube context is kind-NAME).
    #[arg(long, value_name = "NAME", default_value = "podrunner-e2e")]
    name: String,
    /// Use this existing cluster instead of creating one: a kind context (kind-NAME), which
    /// is kept afterwards.
    #[arg(long, value_name = "CONTEXT")]
    context: Option<String>,
    /// The kubeconfig holding --context (default: kubectl's).
    #[arg(long, value_name = "PATH", requires = "context")]
    kubeconfig: Option<PathBuf>,
    /// Keep the cluster the suite created, to look around afterwards.
    #[arg(long)]
    keep_cluster: bool,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let context = cli.context.clone().unwrap_or_else(|| format!("kind-{}", cli.name));
    // First, before anything touches a cluster.
    let cluster = match guard::kind_cluster_of(&context) {
        Ok(name) => name.to_owned(),
        Err(refusal) => {
            eprintln!("error: {refusal}");
            return ExitCode::from(2);
        }
    };
    if let Some(missing) = missing_tools() {
        eprintln!("error: the kind suite needs {missing}");
        return ExitCode::from(2);
    }
    let runner_binary = match cli.runner_binary.clone().map_or_else(build_runner, Ok) {
        Ok(binary) => binary,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let suite = Suite::new(&cli, context, cluster);
    let result = match suite {
        Ok(suite) => {
            let result = runtime.block_on(suite.run(&runner_binary));
            suite.finish(&cli);
            result
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Builds the release `runner` binary and returns its path.
fn build_runner() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("kind-e2e: building the release runner binary...");
    run(Command::new(cargo)
        .args(["build", "--release", "--locked", "-p", "podrunner"])
        .current_dir(root()))?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target.join("release/runner"))
}

/// What of kind, kubectl and a running Docker engine is missing, if anything.
fn missing_tools() -> Option<String> {
    let mut missing = Vec::new();
    for tool in ["kind", "kubectl", "docker"] {
        if Command::new(tool).arg("version").output().is_err() {
            missing.push(tool.to_owned());
        }
    }
    let engine = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    if !missing.iter().any(|t| t == "docker") && !engine.is_ok_and(|o| o.status.success()) {
        missing.push("a running Docker engine (docker info fails)".to_owned());
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// Runs `command`, returning its stdout; a failure is an error with its stderr.
fn run(command: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let output = command.output().with_context(|| format!("failed to start {shown}"))?;
    if !output.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `command` with `input` on its stdin.
fn run_with_input(command: &mut Command, input: &[u8]) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {shown}"))?;
    child.stdin.take().context("stdin")?.write_all(input)?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The kind cluster config with the profiles directory's absolute path.
fn cluster_config(profiles: &Path) -> anyhow::Result<String> {
    let template = std::fs::read_to_string(root().join("integration/kind/cluster.yaml"))
        .context("read integration/kind/cluster.yaml")?;
    let profiles = profiles.canonicalize().context("the profiles directory")?;
    Ok(template.replace("PROFILES_DIR", &profiles.to_string_lossy()))
}

/// The first IPv4 gateway of the `kind` Docker network: where the host is reachable from pods.
fn kind_gateway() -> anyhow::Result<IpAddr> {
    let out = run(Command::new("docker").args([
        "network",
        "inspect",
        "kind",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
    ]))?;
    out.split_whitespace()
        .filter_map(|g| g.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
        .context("the kind network has no IPv4 gateway")
}

/// Why a case cannot run on this host's kind nodes (they share the host's kernel).
fn unsupported_on_kind(case: &Case) -> Option<String> {
    match case.needs {
        Needs::Nothing => None,
        Needs::AppArmor if demo::apparmor_enabled() => None,
        Needs::AppArmor => Some(
            "AppArmor is not enabled in this host's kernel, which the kind node shares".to_owned(),
        ),
    }
}

struct Suite {
    context: String,
    cluster: String,
    /// The kubeconfig the suite's commands use: its own for a cluster it created.
    kubeconfig: Option<PathBuf>,
    created: bool,
    dir: tempfile::TempDir,
}

impl Suite {
    fn new(cli: &Cli, context: String, cluster: String) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("podrunner-kind").tempdir()?;
        let mut suite =
            Self { context, cluster, kubeconfig: cli.kubeconfig.clone(), created: false, dir };
        if cli.context.is_none() {
            // Its own kubeconfig: the user's current context is never changed.
            let kubeconfig = suite.dir.path().join("kubeconfig");
            let config = suite.dir.path().join("cluster.yaml");
            std::fs::write(
                &config,
                cluster_config(&root().join("integration/local-cluster/profiles"))?,
            )?;
            println!("kind-e2e: creating kind cluster {}...", suite.cluster);
            run(Command::new("kind")
                .args(["create", "cluster", "--name", &suite.cluster, "--wait", "180s"])
                .arg("--config")
                .arg(&config)
                .arg("--kubeconfig")
                .arg(&kubeconfig))?;
            suite.kubeconfig = Some(kubeconfig);
            suite.created = true;
        }
        Ok(suite)
    }

    fn kubectl(&self) -> Command {
        let mut command = Command::new("kubectl");
        if let Some(kubeconfig) = &self.kubeconfig {
            command.arg("--kubeconfig").arg(kubeconfig);
        }
        command.args(["--context", &self.context]);
        command
    }

    async fn run(&self, runner_binary: &Path) -> anyhow::Result<()> {
        let nodes = run(self.kubectl().args([
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.spec.providerID}{\"\\n\"}{end}",
        ]))?;
        let provider_ids: Vec<String> = nodes.lines().map(str::to_owned).collect();
        guard::require_kind_nodes(&self.context, &provider_ids).map_err(anyhow::Error::msg)?;

        println!("kind-e2e: building and loading the images...");
        let images = self.dir.path().join("images");
        let mut archives: Vec<PathBuf> =
            build_images(&images)?.into_iter().map(|i| i.archive).collect();
        archives.push(build_runner_image(&images, runner_binary, RUNNER_IMAGE)?.archive);
        for archive in &archives {
            run(Command::new("kind")
                .args(["load", "image-archive", "--name", &self.cluster])
                .arg(archive))?;
        }

        let gateway = kind_gateway()?;
        let doubles = Doubles::start(gateway, &gateway.to_string(), unsupported_on_kind).await;
        println!(
            "kind-e2e: {} GitLab doubles on {gateway}; deploying deploy/overlays/kind...",
            demo::runners().len()
        );
        let manifests = run(Command::new("kubectl")
            .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
            .arg(root().join("deploy/overlays/kind")))?;
        run_with_input(self.kubectl().args(["apply", "-f", "-"]), manifests.as_bytes())?;
        let mut secret = self.kubectl();
        secret.args([
            "create",
            "secret",
            "generic",
            "podrunner-kind-doubles",
            "-n",
            "podrunner",
            "--dry-run=client",
            "-o",
            "yaml",
        ]);
        for (key, value) in doubles.envs() {
            secret.arg(format!("--from-literal={key}={value}"));
        }
        let secret = run(&mut secret)?;
        run_with_input(self.kubectl().args(["apply", "-f", "-"]), secret.as_bytes())?;
        run(self.kubectl().args([
            "rollout",
            "status",
            "deployment/podrunner",
            "-n",
            "podrunner",
            "--timeout=180s",
        ]))?;
        let started = Instant::now();
        let runner_log = || {
            run(self.kubectl().args([
                "logs",
                "-n",
                "podrunner",
                "deployment/podrunner",
                "--tail=300",
            ]))
            .unwrap_or_else(|e| format!("(no runner log: {e:#})"))
        };
        let results = doubles.collect(started, Duration::from_secs(180), runner_log).await?;
        let mut out = std::io::stdout();
        doubles.report(&results, &mut out)?;
        let problems = demo::problems(&results);
        // Every job deletes its pod: none may be left in the jobs' namespace.
        let deadline = Instant::now() + Duration::from_secs(60);
        let left = loop {
            let left = run(self.kubectl().args(["get", "pods", "-n", "default", "-o", "name"]))?;
            if left.trim().is_empty() || Instant::now() > deadline {
                break left;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        if !left.trim().is_empty() {
            bail!("job pods left in namespace default:\n{left}");
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        println!("kind-e2e: every case showed what it should; no job pod is left");
        Ok(())
    }

    fn finish(&self, cli: &Cli) {
        if !self.created {
            return;
        }
        if cli.keep_cluster {
            if let Some(kubeconfig) = &self.kubeconfig {
                let kept = std::env::temp_dir().join(format!("kubeconfig-{}", self.cluster));
                let _ = std::fs::copy(kubeconfig, &kept);
                println!(
                    "kind-e2e: kept cluster {} (kubectl --kubeconfig {} --context {}; delete it with kind delete cluster --name {})",
                    self.cluster,
                    kept.display(),
                    self.context,
                    self.cluster
                );
            }
            return;
        }
        println!("kind-e2e: deleting kind cluster {}...", self.cluster);
        if let Err(e) =
            run(Command::new("kind").args(["delete", "cluster", "--name", &self.cluster]))
        {
            eprintln!("warning: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_config_mounts_the_profiles_the_cases_name_where_the_kubelet_reads_them() {
        let profiles = root().join("integration/local-cluster/profiles");
        let config = cluster_config(&profiles).expect("config");
        let absolute = profiles.canonicalize().expect("profiles");
        assert!(config.contains(&format!("hostPath: {}\n", absolute.display())), "{config}");
        assert!(config.contains("containerPath: /var/lib/kubelet/seccomp/profiles\n"));
        assert!(!config.contains("PROFILES_DIR"));
        // The Localhost profile the demo config names is there; the missing one is not.
        let demo = std::fs::read_to_string(root().join("examples/demo.toml")).expect("demo");
        for line in demo.lines().filter(|l| l.contains("seccomp_profile_localhost_profile")) {
            let name = line.split('"').nth(1).and_then(|p| p.strip_prefix("profiles/"));
            let name = name.expect("a profiles/ path");
            assert_eq!(profiles.join(name).exists(), name != "not-on-this-node.json", "{name}");
        }
    }

    #[test]
    fn every_image_the_kind_overlay_and_the_cases_name_is_one_the_suite_loads() {
        use podrunner_local_cluster::node::images::{BUSYBOX_IMAGE, HELPER_IMAGE};
        let deployment = std::fs::read_to_string(root().join("deploy/base/deployment.yaml"))
            .expect("deployment.yaml");
        assert!(
            deployment.contains(&format!("image: {RUNNER_IMAGE}\n")),
            "the Deployment names the image the suite builds as {RUNNER_IMAGE}"
        );
        let demo = std::fs::read_to_string(root().join("examples/demo.toml")).expect("demo");
        for line in
            demo.lines().filter(|l| l.starts_with("image = ") || l.starts_with("helper_image = "))
        {
            let image = line.split('"').nth(1).expect("an image");
            assert!(
                [BUSYBOX_IMAGE, HELPER_IMAGE].contains(&image),
                "{image} is not loaded into kind"
            );
        }
        // (The cases' jobs name BUSYBOX_IMAGE itself.)
    }

    #[test]
    fn the_cli_parses_and_context_needs_no_cluster_creation() {
        let cli = Cli::try_parse_from(["podrunner-kind-e2e"]).expect("cli");
        assert_eq!(
            (cli.name.as_str(), cli.context, cli.runner_binary),
            ("podrunner-e2e", None, None)
        );
        assert!(
            Cli::try_parse_from(["podrunner-kind-e2e", "--kubeconfig", "k"]).is_err(),
            "--kubeconfig only with --context"
        );
    }
}
