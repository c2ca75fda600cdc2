//! `runner render-pod`: prints the Pod the Kubernetes executor would submit for a job, without
//! talking to a cluster. Config diagnostics go to stderr in the `check-config` format.
//!
//! Exit codes: 0 the pod was printed; 1 the config has errors or the pod cannot be built from
//! this config and job; 2 the command could not run (unreadable file, invalid job JSON, unknown
//! `--runner`, unsupported `--kubernetes-version`).

use std::{path::Path, process::ExitCode};

use anyhow::{Context, bail};
use podrunner_config::{Config, RunnerConfig};
use podrunner_coordinator::wire::{Job, decode_json};
use podrunner_executor_k8s::{
    BuildInput, ClusterFacts, PatchFiles, PodIdentity, build_pod, patch_paths, pod_json, pod_yaml,
    sample, version,
};

use crate::{
    cli::{DiagnosticsFormat, PodOutputFormat, RenderPodArgs},
    config_file,
};

pub(crate) fn run(args: &RenderPodArgs) -> anyhow::Result<ExitCode> {
    let minor = match &args.kubernetes_version {
        Some(text) => version::parse_minor(text).map_err(anyhow::Error::msg)?,
        None => version::MAX_MINOR,
    };
    let job = match &args.job {
        Some(path) => read_job(path)?,
        None => sample::sample_job(),
    };
    let file = config_file::load(&args.config)?;
    if !file.loaded.diagnostics.is_empty() {
        eprint!("{}", file.render(DiagnosticsFormat::Text)?);
    }
    let Some(config) = file.loaded.config.as_ref() else { return Ok(ExitCode::from(1)) };
    let runner = select_runner(config, args.runner.as_deref())?;
    let patch_files = read_patch_files(runner);
    let identity = PodIdentity::default();
    let input = BuildInput {
        runner,
        job: &job,
        cluster: ClusterFacts { kubernetes_minor: minor, ..ClusterFacts::default() },
        identity: &identity,
        patch_files: &patch_files,
    };
    let built = match build_pod(&input) {
        Ok(built) => built,
        Err(error) => {
            eprintln!(
                "error: failed to build the pod for runner {}: {error:#}",
                runner.display_name()
            );
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            return Ok(ExitCode::from(1));
        }
    };
    if args.summary {
        eprint!("{}", built.security);
    }
    for line in &built.job_log {
        eprintln!("note: {line}");
    }
    let text = match args.output {
        PodOutputFormat::Yaml => {
            pod_yaml(&built.pod).context("failed to encode the pod as YAML")?
        }
        PodOutputFormat::Json => {
            pod_json(&built.pod).context("failed to encode the pod as JSON")?
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Reads a `jobs/request` response body.
fn read_job(path: &Path) -> anyhow::Result<Job> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read job {}", path.display()))?;
    decode_json(&bytes).map_err(|(field, error)| {
        let at =
            if field.is_empty() || field == "." { String::new() } else { format!(" at {field}") };
        anyhow::anyhow!("invalid job JSON in {}{at}: {error}", path.display())
    })
}

/// The runner named `name`, else the first one with Kubernetes settings.
fn select_runner<'c>(config: &'c Config, name: Option<&str>) -> anyhow::Result<&'c RunnerConfig> {
    match name {
        Some(name) => {
            let Some(runner) = config.runners.iter().find(|r| r.raw.name.as_deref() == Some(name))
            else {
                let names: Vec<String> =
                    config.runners.iter().map(RunnerConfig::display_name).collect();
                bail!("no runner named {name:?} in the config (runners: {})", names.join(", "));
            };
            if runner.kubernetes.is_none() {
                bail!("runner {name:?} is not a kubernetes runner");
            }
            Ok(runner)
        }
        None => config
            .runners
            .iter()
            .find(|r| r.kubernetes.is_some())
            .context("the config has no kubernetes runner"),
    }
}

/// Reads the `patch_path` files of the runner's `[[pod_spec]]` entries; a failure is recorded
/// for the builder to report with the patch's name.
fn read_patch_files(runner: &RunnerConfig) -> PatchFiles {
    patch_paths(runner)
        .into_iter()
        .map(|path| {
            let content = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"));
            (path.to_owned(), content)
        })
        .collect()
}
