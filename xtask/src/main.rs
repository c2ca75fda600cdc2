//! `cargo xtask`: the project's automation, and the single CI entry point (`cargo xtask ci`).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask reports progress on the terminal"
)]

mod tidy;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Project automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Everything CI runs, in order: prerequisites, fmt, lint, codegen --check, test (nextest,
    /// then doctests), validate (render the examples, schema-check them).
    Ci,
    /// Install the system prerequisites (apt packages, the kubernetes-validate virtualenv).
    Prereqs,
    /// `cargo fmt --check`.
    Fmt,
    /// `cargo clippy --workspace --all-targets -- -D warnings`.
    Lint,
    /// The whole test suite (nextest, then doctests).
    Test,
    /// Regenerate docs/config.md, docs/config.schema.json and docs/cli.md (`--check`: fail if stale).
    Codegen {
        /// Fail instead of writing when a generated file is stale.
        #[arg(long)]
        check: bool,
    },
    /// Render the example configs with `runner render-pod` and schema-check them with kubernetes-validate.
    Validate,
    /// Benchmarks: pod render time, daemon idle memory, jobs on the local cluster.
    Bench,
    /// Run the feature request's cases as real jobs on a local cluster and print their logs
    /// (needs root: installs the prerequisites first).
    Demo,
    /// Build the image of the release `runner` binary (`localhost/podrunner:<version>`, an OCI
    /// archive for `ctr images import`, `kind load image-archive` or `docker load`) and the
    /// local test images, and import them into the local cluster's containerd when it runs.
    Image,
    /// Build the local test images and import them into the local cluster's containerd.
    Images {
        /// Extra arguments for `local-cluster images`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The kind suite (needs kind, kubectl and a Docker engine): create a kind cluster, deploy
    /// the runner with deploy/overlays/kind, run the shared cases, delete the cluster. Refuses any
    /// kube context that is not a kind one. `cargo xtask e2e-kind --help` shows its options.
    #[command(name = "e2e-kind", disable_help_flag = true)]
    E2eKind {
        /// Arguments for `podrunner-kind-e2e` (e.g. `--keep-cluster`, `--context kind-dev`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The local test cluster: `up`, `down`, `status`.
    LocalCluster {
        /// Arguments for `local-cluster` (e.g. `up --kubernetes-version 1.29`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs a command in the workspace root, echoing it; fails on a non-zero exit.
fn sh(program: &str, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .with_context(|| format!("failed to start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    sh(env!("CARGO"), args, &[])
}

fn run(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Ci => ci(),
        Task::Prereqs => sh("bash", &["scripts/install-prereqs.sh"], &[]),
        Task::Fmt => cargo(&["fmt", "--all", "--", "--check"]),
        Task::Lint => lint(),
        Task::Test => test(),
        Task::Codegen { check } => codegen(check),
        Task::Validate => validate(),
        Task::Bench => bench(),
        Task::Demo => demo(),
        Task::Images { args } => local_cluster("images", &args),
        Task::Image => {
            let binary = release_runner()?;
            local_cluster("images", &["--runner".to_owned(), binary.to_string_lossy().into_owned()])
        }
        Task::E2eKind { args } => e2e_kind(&args),
        Task::LocalCluster { args } => {
            let (first, rest) = args
                .split_first()
                .context("usage: cargo xtask local-cluster up|down|status [ARGS]")?;
            local_cluster(first, rest)
        }
    }
}

/// Builds the release `runner` binary and returns its path.
fn release_runner() -> anyhow::Result<PathBuf> {
    cargo(&["build", "--release", "--locked", "-p", "podrunner"])?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target.join("release/runner"))
}

/// The kind suite; it checks the kube context before it builds anything.
fn e2e_kind(args: &[String]) -> anyhow::Result<()> {
    let mut all: Vec<&str> = vec!["run", "--quiet", "--locked", "-p", "podrunner-kind-suite", "--"];
    all.extend(args.iter().map(String::as_str));
    cargo(&all)
}

fn lint() -> anyhow::Result<()> {
    cargo(&["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])
}

/// The whole suite on the shared local cluster: `local-cluster up` (real Kubernetes, needs root),
/// nextest and the doctests, then `local-cluster down`, which fails when the cluster left a
/// process, mount, link or cgroup behind. Without root the cluster tests say SKIPPED (and fail
/// under `CI=true`).
fn test() -> anyhow::Result<()> {
    let dir = shared_cluster_dir();
    let dir_text = dir.to_string_lossy().into_owned();
    let started = if is_root() {
        local_cluster_checked("up", &[]).context("the local cluster did not start")?;
        true
    } else {
        eprintln!("xtask test: not root, so no local cluster: its tests will say SKIPPED");
        false
    };
    let envs = [("LOCAL_CLUSTER_DIR", dir_text.as_str())];
    let nextest = ["nextest", "run", "--workspace", "--locked", "--profile", "ci"];
    // The fault tests stop and restart the cluster's components: alone, after the others.
    let faults = "binary(cluster_faults_e2e)";
    let others = format!("not {faults}");
    let tests = run_cargo(&[&nextest[..], &["-E", &others]].concat(), &envs)
        .and_then(|()| run_cargo(&[&nextest[..], &["-E", faults, "-j", "1"]].concat(), &envs))
        .and_then(|()| run_cargo(&["test", "--doc", "--workspace", "--locked"], &envs));
    let stopped = if started { local_cluster_checked("down", &[]) } else { Ok(()) };
    tests?;
    stopped.context("the local cluster did not stop cleanly")
}

/// Where `cargo xtask test` runs the shared cluster: `$LOCAL_CLUSTER_DIR`, else
/// `<target>/local-cluster` (as `local-cluster` itself defaults).
fn shared_cluster_dir() -> PathBuf {
    std::env::var_os("LOCAL_CLUSTER_DIR").filter(|d| !d.is_empty()).map_or_else(
        || {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root().join("target"), PathBuf::from)
                .join("local-cluster")
        },
        PathBuf::from,
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").ok().is_some_and(|s| {
        s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// `cargo <args>` in the workspace root with `envs` set.
fn run_cargo(args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .with_context(|| format!("failed to run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// A generated file's staleness test: it compares the file with what the code generates, fails
/// when they differ, and rewrites the file under `UPDATE_GENERATED=1`.
struct Generator {
    /// The cargo target holding the test (`--test x` or `--bin x`).
    target: [&'static str; 2],
    /// The test's full name, matched exactly.
    test: &'static str,
    file: &'static str,
}

/// Every generated file, each with the one test that checks and rewrites it.
const GENERATORS: &[Generator] = &[
    Generator {
        target: ["--test", "generated_docs"],
        test: "config_reference_is_current",
        file: "docs/config.md",
    },
    Generator {
        target: ["--test", "generated_docs"],
        test: "config_json_schema_is_current",
        file: "docs/config.schema.json",
    },
    Generator {
        target: ["--bin", "runner"],
        test: "cli_docs::tests::cli_docs_are_current",
        file: "docs/cli.md",
    },
];

/// Rewrites every generated file (`check`: fails on any stale one instead). Each test is run by its
/// exact name and must actually run: a filter that matches nothing is an error, not a pass.
fn codegen(check: bool) -> anyhow::Result<()> {
    let update = if check { "0" } else { "1" };
    for generator in GENERATORS {
        // `--workspace`, not `-p`: the same feature set as the test step's build, so the two
        // share every compiled crate (with `-p`, tokio lost the `test-util` feature other
        // members' dev-dependencies turn on, and the whole tree was built twice).
        let mut args = vec!["test", "--locked", "-q", "--workspace"];
        args.extend(generator.target);
        args.extend(["--", "--exact", generator.test]);
        eprintln!("$ UPDATE_GENERATED={update} cargo {} ({})", args.join(" "), generator.file);
        let output = Command::new(env!("CARGO"))
            .args(&args)
            .env("UPDATE_GENERATED", update)
            .current_dir(root())
            .output()
            .context("failed to start cargo test")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            eprint!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
            bail!("{} is stale: run `cargo xtask codegen` and commit the result", generator.file);
        }
        let ran = passed_count(&stdout);
        if ran != Some(1) {
            bail!(
                "the test `{}` that generates {} did not run (passed: {ran:?}); fix GENERATORS in xtask",
                generator.test,
                generator.file
            );
        }
    }
    Ok(())
}

/// The `N` of libtest's `test result: ok. N passed; ...` line.
fn passed_count(stdout: &str) -> Option<usize> {
    let line = stdout.lines().find(|l| l.starts_with("test result:"))?;
    let before = line.split(" passed").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

fn validate() -> anyhow::Result<()> {
    let venv = root().join(".venv-kv/bin/kubernetes-validate");
    if !venv.exists() {
        sh("bash", &["scripts/install-prereqs.sh"], &[])?;
    }
    cargo(&["build", "--locked", "-q", "-p", "podrunner"])?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let out = target.join("validate");
    std::fs::create_dir_all(&out)?;
    let runner = target.join("debug/runner");
    let mut rendered: Vec<(String, PathBuf)> = Vec::new();
    for version in ["1.29", "1.30", "1.37"] {
        let file = out.join(format!("example-{version}.yaml"));
        let output = Command::new(&runner)
            .args([
                "render-pod",
                "--config",
                "examples/config.toml",
                "--kubernetes-version",
                version,
            ])
            .current_dir(root())
            .output()
            .context("failed to run runner render-pod")?;
        if !output.status.success() {
            bail!("render-pod failed for {version}: {}", String::from_utf8_lossy(&output.stderr));
        }
        std::fs::write(&file, &output.stdout)?;
        rendered.push((version.to_owned(), file));
    }
    // The deploy manifests: the base and each overlay rendered by kustomize where kubectl is
    // installed; without it the base file by file (its resources are plain manifests; kustomize
    // only adds namespace and labels) and the overlays (patches) said SKIPPED.
    let mut kustomizations = vec![root().join("deploy/base")];
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/overlays"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("kustomization.yaml").exists())
        .collect();
    overlays.sort();
    kustomizations.extend(overlays);
    let mut deploy_files: Vec<PathBuf> = Vec::new();
    for kustomization in &kustomizations {
        let name = kustomization.strip_prefix(root()).unwrap_or(kustomization).to_string_lossy();
        let kustomized = Command::new("kubectl")
            .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
            .arg(kustomization)
            .output();
        match kustomized {
            Ok(output) if output.status.success() => {
                let file = out.join(format!("{}.yaml", name.replace('/', "-")));
                std::fs::write(&file, &output.stdout)?;
                deploy_files.push(file);
            }
            Ok(output) => bail!(
                "kubectl kustomize {name} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(_) if name == "deploy/base" => {
                println!(
                    "SKIPPED: kubectl kustomize (kubectl is not installed): the deploy/base files are validated one by one"
                );
                let mut files: Vec<PathBuf> = std::fs::read_dir(kustomization)?
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                    .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
                    .collect();
                files.sort();
                deploy_files.extend(files);
            }
            Err(_) => println!("SKIPPED: {name}: kubectl is not installed to render its patches"),
        }
    }
    for (version, file) in &rendered {
        let file = file.to_string_lossy();
        sh(&venv.to_string_lossy(), &["--strict", "-k", &format!("{version}.0"), &file], &[])?;
        for manifest in &deploy_files {
            let manifest = manifest.to_string_lossy();
            sh(
                &venv.to_string_lossy(),
                &["--strict", "-k", &format!("{version}.0"), &manifest],
                &[],
            )?;
        }
    }
    Ok(())
}

fn bench() -> anyhow::Result<()> {
    cargo(&["bench", "--locked", "-p", "podrunner-executor-k8s", "--bench", "render"])?;
    // The idle-memory bench also measures the release `runner` binary it finds beside it.
    cargo(&["build", "--release", "--locked", "-p", "podrunner"])?;
    cargo(&["bench", "--locked", "-p", "podrunner-daemon", "--bench", "idle_memory"])?;
    // Jobs through the real binary on the local cluster (needs root; says SKIPPED otherwise).
    cargo(&["bench", "--locked", "-p", "podrunner", "--bench", "e2e"])?;
    Ok(())
}

/// Installs the prerequisites, builds the runner, and runs the demo binary of the local cluster
/// on `examples/demo.toml`. Without root it says what to run instead.
/// The demo's build, not quiet: on a fresh clone it compiles for minutes, and cargo's progress is
/// what tells the user it is not hung.
const DEMO_BUILD: &[&str] = &[
    "build",
    "--locked",
    "-p",
    "podrunner",
    "-p",
    "podrunner-local-cluster",
    "--bin",
    "runner",
    "--bin",
    "demo",
];

fn demo() -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the demo runs containers on a local containerd and needs root: run `sudo cargo xtask \
             demo`; without root, `cargo run -p podrunner -- render-pod --config \
             examples/config.toml` shows the pod the runner builds"
        );
    }
    eprintln!(
        "xtask demo: installing the prerequisites (containerd, runc, busybox, git) if missing"
    );
    sh("bash", &["scripts/install-prereqs.sh"], &[])?;
    eprintln!(
        "xtask demo: building the runner and the demo (a few minutes on a fresh clone, seconds after)"
    );
    cargo(DEMO_BUILD)?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let runner = target.join("debug/runner");
    sh(
        &target.join("debug/demo").to_string_lossy(),
        &["--runner", &runner.to_string_lossy(), "--config", "examples/demo.toml"],
        &[],
    )
}

/// `cargo run` of the `local-cluster` binary (in `integration/local-cluster`). Its exit code is
/// passed through: `status` answers 3 when the cluster is not running, which is not an error.
/// Its stdout is untouched, so `eval "$(cargo xtask local-cluster up)"` works.
fn local_cluster(command: &str, args: &[String]) -> anyhow::Result<()> {
    let status = local_cluster_status(command, args)?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => std::process::exit(code),
        None => bail!("`local-cluster {command}` was killed by a signal ({status})"),
    }
}

/// As [`local_cluster`], any failure an error (for `cargo xtask test`), in the shared directory.
fn local_cluster_checked(command: &str, args: &[String]) -> anyhow::Result<()> {
    let status = local_cluster_status(command, args)?;
    if !status.success() {
        bail!("`local-cluster {command}` failed ({status})");
    }
    Ok(())
}

fn local_cluster_status(
    command: &str,
    args: &[String],
) -> anyhow::Result<std::process::ExitStatus> {
    let mut full = vec![
        "run",
        "--locked",
        "-q",
        "-p",
        "podrunner-local-cluster",
        "--bin",
        "local-cluster",
        "--",
        command,
    ];
    full.extend(args.iter().map(String::as_str));
    Command::new(env!("CARGO"))
        .args(&full)
        .env("LOCAL_CLUSTER_DIR", shared_cluster_dir())
        .current_dir(root())
        .status()
        .context("failed to start cargo")
}

/// One step of `cargo xtask ci`.
type Step = fn() -> anyhow::Result<()>;

/// What `cargo xtask ci` runs, in order (`cargo xtask --help` names each one).
const CI_STEPS: [(&str, Step); 6] = [
    ("prerequisites", || sh("bash", &["scripts/install-prereqs.sh"], &[])),
    ("fmt", || cargo(&["fmt", "--all", "--", "--check"])),
    ("lint", lint),
    ("codegen --check", || codegen(true)),
    ("test", test),
    ("validate", validate),
];

fn ci() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut timings = Vec::new();
    for (name, step) in CI_STEPS {
        eprintln!("\n== xtask ci: {name}");
        let t = Instant::now();
        step().with_context(|| format!("ci step `{name}` failed"))?;
        timings.push((name, t.elapsed()));
    }
    eprintln!("\n== xtask ci: all steps passed in {:.0?}", started.elapsed());
    for (name, elapsed) in timings {
        eprintln!("   {name:<16} {elapsed:.1?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{CI_STEPS, Cli, DEMO_BUILD, GENERATORS, passed_count, root};

    #[test]
    fn the_demo_build_shows_cargo_progress() {
        assert!(!DEMO_BUILD.iter().any(|a| *a == "-q" || *a == "--quiet"), "{DEMO_BUILD:?}");
        let alias = std::fs::read_to_string(root().join(".cargo/config.toml")).expect("alias");
        let line = alias.lines().find(|l| l.starts_with("xtask =")).expect("xtask alias");
        assert!(!line.contains("--quiet") && !line.contains("-q "), "{line}");
    }

    #[test]
    fn the_help_of_ci_names_every_step_it_runs() {
        let cli = Cli::command();
        let ci = cli.find_subcommand("ci").expect("ci subcommand");
        let help = ci.get_long_about().or(ci.get_about()).expect("ci has help").to_string();
        for (name, _) in CI_STEPS {
            assert!(help.contains(name), "`cargo xtask ci` help omits {name:?}: {help}");
        }
    }

    #[test]
    fn the_passed_count_is_read_from_libtest_output() {
        let ok = "\nrunning 1 test\n.\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 3 filtered out; finished in 0.01s\n";
        assert_eq!(passed_count(ok), Some(1));
        // What a filter matching no test prints: codegen must treat it as a failure.
        let none = "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 2 filtered out; finished in 0.00s\n";
        assert_eq!(passed_count(none), Some(0));
        assert_eq!(passed_count("no summary"), None);
    }

    #[test]
    fn every_generated_file_exists_and_has_one_generator() {
        let mut files: Vec<&str> = GENERATORS.iter().map(|g| g.file).collect();
        for file in &files {
            assert!(root().join(file).is_file(), "{file} is missing");
        }
        files.sort_unstable();
        files.dedup();
        assert_eq!(files.len(), GENERATORS.len(), "a file has two generators");
    }
}
