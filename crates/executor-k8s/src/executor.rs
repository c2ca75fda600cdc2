//! The job lifecycle: the I/O around the pure parts. For each job: build the pod
//! ([`crate::build_pod`]), create it under a deterministic name, wait for it through the shared
//! pod watch (failing at once on a container that cannot start), run the stages with the
//! protocol of [`crate::stage`], report, and always delete the pod. Each step marks the job
//! log with the job's [`Progress`], so a runner process started after a killed one resumes the
//! job from the step GitLab's log ends at ([`Executor::resume`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, AttachParams, DeleteParams, PostParams};
use podrunner_config::{KubernetesConfig, RunnerConfig};
use podrunner_coordinator::{FailureReason, Job, JobCancel, JobOutcome, LogWriter, Section};
use podrunner_daemon::{Executor, RunnerContext, RunningJobs};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::{debug, info, warn};

mod artifacts;
mod cache;

use crate::classify::{self, PodFailure, PodProgress};
use crate::cluster::RunnerCluster;
use crate::leftovers::{self, Leftovers};
use crate::progress::Progress;
use crate::script::{self, ScriptOptions, Stage};
use crate::stage::{self, FollowerLine, StageDirs, StageState};
use crate::throttle::RequestBudget;
use crate::{
    BuildInput, ClusterFacts, JobLayout, PatchFiles, PodIdentity, build_pod, credentials, names,
};

/// How long a dropped log stream is retried before the job fails.
const RECONNECT_BUDGET: Duration = Duration::from_secs(120);

/// What the Kubernetes executor needs of a runner: its config entry and the config's warnings
/// about it (repeated in every job log, so the people who read job logs see them too).
#[derive(Debug, Clone)]
pub struct KubernetesRunner {
    /// The `[[runners]]` entry.
    pub config: RunnerConfig,
    /// `FILE:LINE:COL: message` of each config warning about this runner.
    pub config_warnings: Vec<String>,
}

/// The Kubernetes executor: one instance serves every runner that names it; each runner's
/// cluster connection (client, version, pod watches) is kept by its settings' fingerprint.
#[derive(Debug, Default)]
pub struct KubernetesExecutor {
    /// One cell per fingerprint, so a runner whose cluster is slow to answer never holds up
    /// another runner's jobs.
    clusters: Mutex<HashMap<String, Arc<OnceCell<Arc<RunnerCluster>>>>>,
    /// The request budget every cluster client of this process shares.
    budget: Arc<RequestBudget>,
}

impl KubernetesExecutor {
    /// An executor with no cluster connection yet (each runner connects at its first job).
    pub fn new() -> Self {
        Self::default()
    }

    async fn cluster(
        &self,
        runner: &RunnerContext,
        k: &KubernetesConfig,
    ) -> Result<Arc<RunnerCluster>, crate::cluster::ClusterError> {
        let cell = {
            let mut clusters = self.clusters.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(clusters.entry(runner.settings.fingerprint().to_owned()).or_default())
        };
        let cluster = cell
            .get_or_try_init(|| async {
                let cluster = Arc::new(RunnerCluster::connect(k, Arc::clone(&self.budget)).await?);
                info!(runner = %runner.name, cluster.url = cluster.url(), kubernetes.minor = cluster.minor(), "connected to the cluster");
                Ok::<_, crate::cluster::ClusterError>(cluster)
            })
            .await?;
        Ok(Arc::clone(cluster))
    }
}

impl KubernetesExecutor {
    /// The runner's cluster and config, for work outside a job.
    async fn runner_cluster<'r>(
        &self,
        runner: &'r RunnerContext,
    ) -> Result<(Arc<RunnerCluster>, &'r RunnerConfig, &'r KubernetesConfig), String> {
        let Some(KubernetesRunner { config, .. }) = runner.settings.get::<KubernetesRunner>()
        else {
            return Err(format!("runner {:?} has no kubernetes settings", runner.name));
        };
        let Some(k) = config.kubernetes.as_ref() else {
            return Err(format!("runner {:?} has no [runners.kubernetes] table", runner.name));
        };
        let cluster = self.cluster(runner, k).await.map_err(|e| error_chain(&e))?;
        Ok((cluster, config, k))
    }
}

/// The namespace of the config (`namespace`, else `default`).
fn config_namespace(k: &KubernetesConfig) -> String {
    k.raw.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".to_owned())
}

/// The runner's objects in `namespace` (only this process's with `system_id`).
fn leftovers_of(
    config: &RunnerConfig,
    k: &KubernetesConfig,
    namespace: String,
    system_id: Option<&str>,
) -> Leftovers {
    let short = config.raw.token.as_deref().map(names::short_token).unwrap_or_default();
    Leftovers {
        namespace,
        selector: leftovers::selector(&short, system_id),
        grace: cleanup_grace(k),
        own_namespaces: k.raw.namespace_per_job == Some(true),
    }
}

/// `cleanup_grace_period_seconds`, as the pods' deletion grace.
fn cleanup_grace(k: &KubernetesConfig) -> Option<u32> {
    k.raw.cleanup_grace_period_seconds.and_then(|g| u32::try_from(g).ok())
}

impl Executor for KubernetesExecutor {
    /// Connects on first use; afterwards free while the cluster answers, and one `GET /version`
    /// per call after a request failed to reach it (the version is read again then).
    fn ready(&self, runner: &RunnerContext) -> BoxFuture<'_, Result<(), String>> {
        let runner = runner.clone();
        Box::pin(async move {
            let Some(KubernetesRunner { config, .. }) = runner.settings.get::<KubernetesRunner>()
            else {
                return Ok(());
            };
            let Some(k) = config.kubernetes.as_ref() else { return Ok(()) };
            let cluster = self.cluster(&runner, k).await.map_err(|e| error_chain(&e))?;
            if cluster.is_reachable() {
                return Ok(());
            }
            cluster.probe().await.map_err(|e| error_chain(&e))
        })
    }

    /// Deletes the pods and Secrets of job `job_id` (runner label and job-id annotation) in the
    /// namespace its pod had: the one the pod builder gives `job` (a
    /// `KUBERNETES_NAMESPACE_OVERWRITE` included), else the config's; with `namespace_per_job`
    /// the job's own namespace.
    fn clean_up_left_job(
        &self,
        runner: &RunnerContext,
        job_id: u64,
        job: Option<Arc<Job>>,
    ) -> BoxFuture<'_, Result<Vec<String>, String>> {
        let runner = runner.clone();
        Box::pin(async move {
            let (cluster, config, k) = self.runner_cluster(&runner).await?;
            let built = job.as_deref().and_then(|job| {
                let identity =
                    PodIdentity { name_suffix: pod_name_suffix(job.id), ..PodIdentity::default() };
                let patch_files = PatchFiles::default();
                let input = BuildInput {
                    runner: config,
                    job,
                    cluster: ClusterFacts {
                        kubernetes_minor: cluster.minor(),
                        ..ClusterFacts::default()
                    },
                    identity: &identity,
                    patch_files: &patch_files,
                };
                build_pod(&input).ok()?.pod.metadata.namespace
            });
            let namespace = match built {
                Some(namespace) => namespace,
                None if k.raw.namespace_per_job == Some(true) => format!("ci-job-{job_id}"),
                None => config_namespace(k),
            };
            let leftovers = leftovers_of(config, k, namespace, None);
            leftovers.delete(&cluster, Some(job_id), HashSet::new).await
        })
    }

    /// Deletes this process's pods and Secrets (runner and system-id labels) in the config's
    /// namespace, or with `namespace_per_job` its jobs' namespaces, whose job is not running.
    fn sweep(
        &self,
        runner: &RunnerContext,
        running: RunningJobs,
    ) -> BoxFuture<'_, Result<Vec<String>, String>> {
        let runner = runner.clone();
        Box::pin(async move {
            let (cluster, config, k) = self.runner_cluster(&runner).await?;
            let leftovers = leftovers_of(config, k, config_namespace(k), Some(&runner.system_id));
            leftovers.delete(&cluster, None, || running()).await
        })
    }

    fn run(
        &self,
        runner: &RunnerContext,
        job: Arc<Job>,
        log: LogWriter,
        cancel: JobCancel,
    ) -> BoxFuture<'_, JobOutcome> {
        self.start(runner, job, log, cancel, Progress::default())
    }

    fn can_resume(&self) -> bool {
        true
    }

    /// Continues from the [`Progress`] marked last: the pod is adopted (never created again
    /// once it had been), stages that ended are not run again, and the open stage's log is
    /// followed from the marked offset. A pod that is gone while stages were left fails the
    /// job at once, saying so.
    fn resume(
        &self,
        runner: &RunnerContext,
        job: Arc<Job>,
        log: LogWriter,
        cancel: JobCancel,
        position: Option<serde_json::Value>,
    ) -> BoxFuture<'_, JobOutcome> {
        let progress = match position.as_ref().map(Progress::from_json) {
            None => Progress::default(),
            Some(Some(progress)) => progress,
            Some(None) => {
                return Box::pin(async {
                    JobOutcome::system(
                        FailureReason::RunnerSystemFailure,
                        "the job's saved position is not one this runner version can resume from",
                    )
                });
            }
        };
        info!(job.id = job.id, progress = %progress.to_json(), "resuming the job");
        self.start(runner, job, log, cancel, progress)
    }
}

impl KubernetesExecutor {
    /// Runs `job` from `progress` (the default: from the start).
    fn start(
        &self,
        runner: &RunnerContext,
        job: Arc<Job>,
        log: LogWriter,
        cancel: JobCancel,
        progress: Progress,
    ) -> BoxFuture<'_, JobOutcome> {
        let runner = runner.clone();
        // The daemon's span of the job (job.id, runner.name) covers everything logged here.
        Box::pin(async move {
            let Some(KubernetesRunner { config, config_warnings }) =
                runner.settings.get::<KubernetesRunner>()
            else {
                return JobOutcome::system(
                    FailureReason::RunnerConfigurationError,
                    format!("runner {:?} has no kubernetes settings", runner.name),
                );
            };
            let Some(k) = config.kubernetes.as_ref() else {
                return JobOutcome::system(
                    FailureReason::RunnerConfigurationError,
                    format!("runner {:?} has no [runners.kubernetes] table", runner.name),
                );
            };
            if !progress.prepared {
                log.begin(Section::PrepareExecutor);
            }
            let cluster = match self.cluster(&runner, k).await {
                Ok(c) => c,
                Err(e) => {
                    let message = error_chain(&e);
                    warn!(error = %message, "cluster unreachable");
                    if !progress.prepared {
                        log.end(Section::PrepareExecutor);
                    }
                    return JobOutcome::system(FailureReason::RunnerSystemFailure, message);
                }
            };
            let system_id = runner.system_id.as_str();
            let run = JobRun {
                config,
                config_warnings,
                k,
                cluster,
                job,
                log,
                cancel,
                system_id,
                progress: Mutex::new(progress),
                coordinator: runner.coordinator.clone(),
            };
            run.run().await
        })
    }
}

/// Whether `found` is the pod `built` for this job: exactly its labels and annotations (runner,
/// project, job id, ref, sha), so an earlier attempt of this very job.
fn same_job(found: &Pod, built: &Pod) -> bool {
    found.metadata.labels == built.metadata.labels
        && found.metadata.annotations == built.metadata.annotations
}

/// The formatted chain of an error's sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Creates `pod` and returns the texts of the API server's `Warning` headers (fields it dropped,
/// Pod Security `warn` violations), which `Api::create` does not surface.
async fn create_pod(
    client: &kube::Client,
    namespace: &str,
    pod: &Pod,
) -> Result<Vec<String>, kube::Error> {
    use http_body_util::BodyExt as _;
    let body = serde_json::to_vec(pod).map_err(kube::Error::SerdeError)?;
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let warnings = response
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(warning_text)
        .collect();
    let code = response.status();
    if code.is_success() {
        return Ok(warnings);
    }
    let bytes = response.into_body().collect().await?.to_bytes();
    let status = serde_json::from_slice::<kube::core::Status>(&bytes).unwrap_or_else(|_| {
        kube::core::Status::failure(String::from_utf8_lossy(&bytes).trim(), "")
            .with_code(code.as_u16())
    });
    Err(kube::Error::Api(status.boxed()))
}

/// How often a create whose answer was lost is sent again.
const CREATE_REPLAYS: u32 = 3;

/// Sends a create again when its answer was lost (the connection dropped, a timeout): the
/// server may have executed it, so a replay can get `409 AlreadyExists`, which the callers take
/// as their own object when it carries this job's labels (every name derives from the job).
async fn replayed<T, F, Fut>(mut create: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut replays = 0;
    loop {
        match create().await {
            Err(e) if !matches!(e, kube::Error::Api(_)) && replays < CREATE_REPLAYS => {
                replays += 1;
                warn!(error = %error_chain(&e), replay = replays, "a create got no answer, sending it again");
                tokio::time::sleep(Duration::from_millis(250 << replays)).await;
            }
            other => return other,
        }
    }
}

/// The text of a `Warning` header value (`299 - "text"`, RFC 7234), unquoted.
fn warning_text(value: &str) -> String {
    let quoted = value.split_once('"').map_or(value, |(_, rest)| rest);
    let text = quoted.strip_suffix('"').unwrap_or(quoted);
    text.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// The pod-name suffix of a job: its id in base 36, so a replayed create names the same pod.
pub fn pod_name_suffix(job_id: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = job_id;
    let mut out = Vec::with_capacity(8);
    while n > 0 {
        out.push(DIGITS[usize::try_from(n % 36).unwrap_or(0)]);
        n /= 36;
    }
    while out.len() < 8 {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn runner_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Why a stage did not produce an exit status.
enum StageStop {
    /// The job was aborted (hard cancel, timeout, shutdown).
    Aborted,
    /// The pod or the API failed.
    Failed(PodFailure),
}

fn system(message: String) -> StageStop {
    StageStop::Failed(PodFailure { reason: FailureReason::RunnerSystemFailure, message })
}

/// One job on its way through the lifecycle.
struct JobRun<'a> {
    config: &'a RunnerConfig,
    config_warnings: &'a [String],
    k: &'a KubernetesConfig,
    cluster: Arc<RunnerCluster>,
    job: Arc<Job>,
    log: LogWriter,
    cancel: JobCancel,
    /// The runner process's system id (a label on the pod and its Secret).
    system_id: &'a str,
    /// Where the job stands (marked in the log after each step).
    progress: Mutex<Progress>,
    /// The runner's GitLab client, for artifacts (the log has its own).
    coordinator: Option<podrunner_coordinator::Client>,
}

/// The pod the job runs in.
struct JobPod {
    api: Api<Pod>,
    name: String,
    namespace: String,
    layout: JobLayout,
    dirs: StageDirs,
    subscription: crate::cluster::PodSubscription,
    /// Created by an earlier attempt of this job (a `409` on create).
    adopted: bool,
    /// The registry-credentials Secret created for the job.
    secret: Option<String>,
}

/// The job-log line for a stage whose processes the kernel OOM-killed: the container, its
/// memory limit and the node, and how to give it more.
fn oom_message(pod: &JobPod, state: &StageState) -> String {
    let container = state.stage.container();
    let latest = pod.subscription.receiver.borrow();
    let spec = latest.as_ref().and_then(|p| p.spec.as_ref());
    let node = spec.and_then(|s| s.node_name.clone()).unwrap_or_else(|| "<unknown>".to_owned());
    let limit = spec
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory").map(|q| q.0.clone()));
    let times = if state.oom_kills == 1 {
        "a process".to_owned()
    } else {
        format!("{} processes", state.oom_kills)
    };
    match limit {
        Some(limit) => format!(
            "the kernel's OOM killer killed {times} of the {} stage: the {container} container reached its memory limit of {limit} on node {node}; raise it (memory_limit for build, helper_memory_limit for helper, or the KUBERNETES_MEMORY_LIMIT variable within memory_limit_overwrite_max_allowed)",
            state.stage.name()
        ),
        None => format!(
            "the kernel's OOM killer killed {times} of the {} stage in the {container} container on node {node}, which has no memory limit: the node itself ran out of memory",
            state.stage.name()
        ),
    }
}

impl JobPod {
    /// Whether the pod's `Ready` condition is `False` in its latest state in the watch.
    fn not_ready(&self) -> bool {
        self.subscription.receiver.borrow().as_ref().is_some_and(|p| {
            p.status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Ready" && c.status == "False")
        })
    }

    /// Why the pod can no longer run the job, from its latest state in the watch.
    fn failure(&self) -> Option<classify::PodFailure> {
        classify::stage_failure(
            self.subscription.receiver.borrow().as_ref(),
            &self.namespace,
            &self.name,
        )
    }
}

impl JobRun<'_> {
    async fn run(self) -> JobOutcome {
        let resumed = self.progress().clone();
        let built = match self.build(!resumed.prepared) {
            Ok(b) => b,
            Err(outcome) => {
                if !resumed.prepared {
                    self.log.end(Section::PrepareExecutor);
                }
                return outcome;
            }
        };
        self.mark(|p| p.prepared = true);
        let pod = if resumed.pod_created {
            self.find(built, &resumed).await
        } else {
            self.create(built).await
        };
        let pod = match pod {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        self.mark(|p| p.pod_created = true);
        let outcome = self.run_in(&pod).await;
        self.cleanup(&pod).await;
        outcome
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Updates the job's progress and marks the log with it.
    fn mark(&self, update: impl FnOnce(&mut Progress)) {
        let position = {
            let mut progress = self.progress();
            update(&mut progress);
            progress.to_json()
        };
        self.log.mark(position);
    }

    /// Builds the pod; `announce`: writes the image, the effective security and the warnings
    /// (a resumed job's log has them already).
    fn build(&self, announce: bool) -> Result<crate::BuiltPod, JobOutcome> {
        let identity = PodIdentity {
            name_suffix: pod_name_suffix(self.job.id),
            credentials_secret: self.credentials_secret_name(),
            system_id: Some(self.system_id.to_owned()),
            ..PodIdentity::default()
        };
        let patch_files = PatchFiles::default();
        let input = BuildInput {
            runner: self.config,
            job: &self.job,
            cluster: ClusterFacts {
                kubernetes_minor: self.cluster.minor(),
                ..ClusterFacts::default()
            },
            identity: &identity,
            patch_files: &patch_files,
        };
        let built = build_pod(&input).map_err(|e| {
            self.log.error(&error_chain(&e));
            JobOutcome::system(FailureReason::RunnerConfigurationError, e.to_string())
        })?;
        if !announce {
            return Ok(built);
        }
        let namespace = built.pod.metadata.namespace.clone().unwrap_or_default();
        self.log.writeln(&format!("Using Kubernetes namespace: {namespace}"));
        self.log.writeln(&format!(
            "Using Kubernetes executor with image {} ...",
            built.layout.build_image
        ));
        self.log.writeln(
            "Running each stage detached in the pod and following its log from a byte offset...",
        );
        self.log.end(Section::PrepareExecutor);
        self.log.section_start("security_context", "Effective security of every container", false);
        self.log.writeln(&format!(
            "Kubernetes 1.{} ({}); \"(pod)\" marks a value inherited from the pod, \"-\" leaves it to the node's runtime",
            self.cluster.minor(),
            self.cluster.url()
        ));
        for line in built.security.to_string().lines() {
            self.log.writeln(line);
        }
        for message in self.config_warnings.iter().chain(&built.job_log) {
            self.log.warning(message);
        }
        self.log.section_end("security_context");
        Ok(built)
    }

    async fn create(&self, built: crate::BuiltPod) -> Result<JobPod, JobOutcome> {
        self.log.begin(Section::PrepareScript);
        let fail = |log: &LogWriter, reason, message: String| {
            log.error(&message);
            log.end(Section::PrepareScript);
            JobOutcome::system(reason, message)
        };
        let namespace = built.pod.metadata.namespace.clone().unwrap_or_default();
        let name = built.pod.metadata.name.clone().unwrap_or_default();
        let subscription = self.subscribe(&namespace, &name);
        let api: Api<Pod> = Api::namespaced(self.cluster.client().clone(), &namespace);
        self.create_own_namespace(&built)
            .await
            .map_err(|message| fail(&self.log, FailureReason::RunnerSystemFailure, message))?;
        let secret = self
            .create_credentials_secret(&built)
            .await
            .map_err(|message| fail(&self.log, FailureReason::RunnerSystemFailure, message))?;
        let mut adopted = false;
        match self.create_within_quota(&namespace, &built.pod).await {
            Ok(warnings) => {
                info!(job.id = self.job.id, pod = %name, namespace = %namespace, "pod created");
                if !warnings.is_empty() {
                    self.log.section_start(
                        "api_warnings",
                        "Warnings from the Kubernetes API server",
                        false,
                    );
                    for warning in &warnings {
                        self.log.warning(warning);
                    }
                    self.log.section_end("api_warnings");
                }
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let ours = api
                    .get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|p| same_job(&p, &built.pod));
                if !ours {
                    return Err(fail(
                        &self.log,
                        FailureReason::RunnerSystemFailure,
                        format!("pod {namespace}/{name} already exists and belongs to another job"),
                    ));
                }
                info!(pod = %name, "adopting the pod this job already created");
                adopted = true;
            }
            Err(kube::Error::Api(e)) => {
                let message = format!(
                    "the api server refused pod {namespace}/{name} ({} {}): {}",
                    e.code, e.reason, e.message
                );
                let reason = if e.code == 403 || e.code == 422 {
                    FailureReason::RunnerConfigurationError
                } else {
                    FailureReason::RunnerSystemFailure
                };
                return Err(fail(&self.log, reason, message));
            }
            Err(e) => {
                self.cluster.mark_unreachable();
                return Err(fail(
                    &self.log,
                    FailureReason::RunnerSystemFailure,
                    format!("failed to create pod {namespace}/{name}: {}", error_chain(&e)),
                ));
            }
        }
        let dirs = StageDirs {
            scripts: built.layout.scripts_dir.clone(),
            logs: built.layout.logs_dir.clone(),
        };
        Ok(JobPod {
            api,
            name,
            namespace,
            layout: built.layout,
            dirs,
            subscription,
            adopted,
            secret,
        })
    }

    /// The job's pod in the shared watch of its namespace.
    fn subscribe(&self, namespace: &str, name: &str) -> crate::cluster::PodSubscription {
        let selector = format!(
            "manager.runner.gitlab.com/id-short={}",
            names::sanitize_label(&self.short_token())
        );
        // A job's own namespace ends with the job: its watch goes with its last subscriber.
        let keep = self.own_namespace().is_none_or(|own| own != namespace);
        self.cluster.pod_watch(namespace, &selector, keep).subscribe(name)
    }

    /// The job's own namespace (`namespace_per_job`: `ci-job-<id>`), created before its Secret
    /// and pod and deleted after them.
    fn own_namespace(&self) -> Option<String> {
        (self.k.raw.namespace_per_job == Some(true)).then(|| format!("ci-job-{}", self.job.id))
    }

    /// Creates the job's own namespace, labelled as its pod (runner, system id) and annotated
    /// with the job id; one of that name that an earlier attempt of this job created is kept.
    async fn create_own_namespace(&self, built: &crate::BuiltPod) -> Result<(), String> {
        let Some(name) = self.own_namespace() else { return Ok(()) };
        let api: Api<Namespace> = Api::all(self.cluster.client().clone());
        let labels = built.pod.metadata.labels.clone().unwrap_or_default();
        let job_id = self.job.id.to_string();
        let namespace = Namespace {
            metadata: kube::core::ObjectMeta {
                name: Some(name.clone()),
                labels: Some(labels.clone()),
                annotations: Some(
                    [(names::JOB_ID_ANNOTATION.to_owned(), job_id.clone())].into_iter().collect(),
                ),
                ..kube::core::ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let params = PostParams::default();
        match replayed(|| api.create(&params, &namespace)).await {
            Ok(_) => {
                info!(job.id = self.job.id, namespace = %name, "job namespace created");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let found = api.get_opt(&name).await.map_err(|e| {
                    format!("failed to read the existing namespace {name}: {}", error_chain(&e))
                })?;
                let meta = found.as_ref().map(|n| &n.metadata);
                let ours = meta.is_some_and(|m| {
                    m.annotations.as_ref().and_then(|a| a.get(names::JOB_ID_ANNOTATION))
                        == Some(&job_id)
                        && m.labels.as_ref().and_then(|l| l.get(names::RUNNER_LABEL))
                            == labels.get(names::RUNNER_LABEL)
                });
                if !ours {
                    return Err(format!(
                        "namespace {name} already exists and is not this job's (namespace_per_job names it ci-job-<job id>)"
                    ));
                }
                if meta.is_some_and(|m| m.deletion_timestamp.is_some()) {
                    return Err(format!("namespace {name} of this job is being deleted"));
                }
                info!(job.id = self.job.id, namespace = %name, "adopting the namespace this job already created");
                Ok(())
            }
            Err(e) => {
                Err(format!("failed to create the job's namespace {name}: {}", error_chain(&e)))
            }
        }
    }

    /// Finds the pod an earlier runner process created for this resumed job: it is never
    /// created again (its stages may have run). Gone while stages were left, it fails the job
    /// at once, and the job's Secret is deleted.
    async fn find(&self, built: crate::BuiltPod, resumed: &Progress) -> Result<JobPod, JobOutcome> {
        let namespace = built.pod.metadata.namespace.clone().unwrap_or_default();
        let name = built.pod.metadata.name.clone().unwrap_or_default();
        let subscription = self.subscribe(&namespace, &name);
        let api: Api<Pod> = Api::namespaced(self.cluster.client().clone(), &namespace);
        let fail = |message: String| {
            self.log.error(&message);
            // Close the section the log has open.
            if !resumed.pod_running {
                self.log.end(Section::PrepareScript);
            } else if let Some((stage, _)) = resumed.current {
                self.log.end(stage.section());
            }
            JobOutcome::system(FailureReason::RunnerSystemFailure, message)
        };
        let found = match api.get_opt(&name).await {
            Ok(found) => found,
            Err(e) => {
                return Err(fail(format!(
                    "failed to read the job's pod {namespace}/{name}: {}",
                    error_chain(&e)
                )));
            }
        };
        let dirs = StageDirs {
            scripts: built.layout.scripts_dir.clone(),
            logs: built.layout.logs_dir.clone(),
        };
        let pod = JobPod {
            api,
            name: name.clone(),
            namespace: namespace.clone(),
            layout: built.layout.clone(),
            dirs,
            subscription,
            adopted: true,
            secret: self.credentials_secret_name(),
        };
        match found {
            Some(p) if !same_job(&p, &built.pod) => Err(fail(format!(
                "pod {namespace}/{name} belongs to another job: the resumed job's pod is gone"
            ))),
            None if !resumed.all_stages_ended() => {
                self.cleanup(&pod).await;
                Err(fail(format!(
                    "the job's pod {namespace}/{name} is gone: it was deleted while no runner process watched it (the process that ran the job ended), so the job cannot go on"
                )))
            }
            _ => {
                info!(job.id = self.job.id, pod = %name, "found the pod of the resumed job");
                Ok(pod)
            }
        }
    }

    /// Waits for the pod, runs the stages, and says how the job ended.
    async fn run_in(&self, pod: &JobPod) -> JobOutcome {
        let running = self.progress().pod_running;
        if !running {
            match self.wait_running(pod).await {
                Ok(node) => {
                    self.log.writeln(&format!(
                        "Running on {} via {}...",
                        pod.name,
                        runner_host_name()
                    ));
                    info!(job.id = self.job.id, pod = %pod.name, node = %node, "pod running");
                    self.log.end(Section::PrepareScript);
                    self.mark(|p| p.pod_running = true);
                }
                Err(stop) => {
                    if let StageStop::Failed(f) = &stop {
                        warn!(job.id = self.job.id, pod = %pod.name, failure.reason = %f.reason, error = %f.message, "the pod cannot run the job");
                    }
                    self.log.end(Section::PrepareScript);
                    return self.stopped(stop);
                }
            }
        }
        let options = ScriptOptions {
            pre_build_script: self.config.raw.pre_build_script.clone(),
            post_build_script: self.config.raw.post_build_script.clone(),
            job_status: "running".to_owned(),
        };
        let sources = match self.stage(pod, Stage::GetSources, &options).await {
            Ok(code) => code,
            Err(stop) => return self.stopped(stop),
        };
        let downloaded = if sources == Some(0) || sources.is_none() {
            if let Err(stop) = self.stage(pod, Stage::RestoreCache, &options).await {
                return self.stopped(stop);
            }
            match self.stage(pod, Stage::DownloadArtifacts, &options).await {
                Ok(code) => code,
                Err(stop) => return self.stopped(stop),
            }
        } else {
            None
        };
        let mut outcome = if let Some(code) = downloaded.filter(|c| *c != 0) {
            // As upstream: a failed download skips the script and after_script.
            if self.cancel.is_requested() {
                JobOutcome::Canceled
            } else {
                JobOutcome::ScriptFailure { exit_code: code }
            }
        } else if sources == Some(0) || sources.is_none() {
            let script = match self.stage(pod, Stage::StepScript, &options).await {
                Ok(code) => code,
                Err(stop) => return self.stopped(stop),
            };
            let outcome = match script {
                None | Some(0) if self.cancel.is_requested() => JobOutcome::Canceled,
                None | Some(0) => JobOutcome::Success,
                Some(_) if self.cancel.is_requested() => JobOutcome::Canceled,
                Some(code) => JobOutcome::ScriptFailure { exit_code: code },
            };
            let status = match &outcome {
                JobOutcome::Success => "success",
                JobOutcome::Canceled => "canceled",
                _ => "failed",
            };
            if self.cancel.is_requested() {
                self.log.warning("script canceled externally (UI, API)");
            }
            let after = ScriptOptions { job_status: status.to_owned(), ..options.clone() };
            match self.stage(pod, Stage::AfterScript, &after).await {
                Ok(Some(code)) if code != 0 => self.log.warning(&format!(
                    "after_script failed, but job will continue unaffected: exit code {code}"
                )),
                Ok(_) => {}
                Err(stop) => return self.stopped(stop),
            }
            outcome
        } else if self.cancel.is_requested() {
            JobOutcome::Canceled
        } else {
            JobOutcome::ScriptFailure { exit_code: sources.unwrap_or(1) }
        };
        let after = match outcome {
            JobOutcome::Success => Some((Stage::ArchiveCache, Stage::UploadArtifactsOnSuccess)),
            JobOutcome::ScriptFailure { .. } | JobOutcome::Canceled => {
                Some((Stage::ArchiveCacheOnFailure, Stage::UploadArtifactsOnFailure))
            }
            _ => None,
        };
        if let Some((archive, upload)) = after {
            if let Err(stop) = self.stage(pod, archive, &options).await {
                return self.stopped(stop);
            }
            match self.stage(pod, upload, &options).await {
                Ok(Some(code)) if code != 0 && matches!(outcome, JobOutcome::Success) => {
                    outcome = JobOutcome::ScriptFailure { exit_code: code };
                }
                Ok(_) => {}
                Err(stop) => return self.stopped(stop),
            }
        }
        if let Err(stop) = self.stage(pod, Stage::CleanupFileVariables, &options).await
            && matches!(outcome, JobOutcome::Success)
        {
            outcome = self.stopped(stop);
        }
        outcome
    }

    fn stopped(&self, stop: StageStop) -> JobOutcome {
        match stop {
            StageStop::Aborted => JobOutcome::Canceled,
            StageStop::Failed(f) => {
                self.log.error(&f.message);
                JobOutcome::system(f.reason, f.message)
            }
        }
    }

    /// Waits until build, helper and services run; fails at once on a container that cannot
    /// start; prints one line per change of state.
    async fn wait_running(&self, pod: &JobPod) -> Result<String, StageStop> {
        let mut receiver = pod.subscription.receiver.clone();
        let deadline = Instant::now() + self.k.poll_timeout;
        let mut last_note = String::new();
        // An adopted pod may have changed before the subscription saw it: one GET.
        let mut current =
            if pod.adopted { pod.api.get_opt(&pod.name).await.ok().flatten() } else { None };
        let mut seen = false;
        loop {
            let latest = current.as_ref().or(receiver.borrow_and_update().as_ref()).cloned();
            if latest.is_none() && seen {
                // Seen, then gone from the watch: deleted before it ran.
                return Err(StageStop::Failed(classify::deleted(&pod.namespace, &pod.name)));
            }
            if let Some(p) = latest {
                seen = true;
                if let Some(failure) = classify::disruption(&p) {
                    return Err(StageStop::Failed(failure));
                }
                match classify::starting(&p) {
                    PodProgress::Ready { node } => return Ok(node),
                    PodProgress::Failed(f) => return Err(StageStop::Failed(f)),
                    PodProgress::Starting { note } => {
                        if note != last_note {
                            let node = p
                                .spec
                                .as_ref()
                                .and_then(|s| s.node_name.clone())
                                .unwrap_or_else(|| "<unknown>".to_owned());
                            self.log.writeln(&format!(
                                "Waiting for pod {}/{} to be running on the node {node}, status is {note}",
                                pod.namespace, pod.name
                            ));
                            // A resumed run waits again and says the pod's state again.
                            self.mark(|p| p.pod_created = true);
                            last_note = note;
                        }
                    }
                }
            }
            current = None;
            tokio::select! {
                changed = receiver.changed() => {
                    if changed.is_err() {
                        return Err(system("the pod watch ended".to_owned()));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(system(format!(
                        "timed out waiting for pod to start after {}s (poll_timeout; last status: {last_note})",
                        self.k.poll_timeout.as_secs()
                    )));
                }
                () = self.cancel.aborted().cancelled() => return Err(StageStop::Aborted),
                () = self.cancel.requested().cancelled(), if !self.cancel.is_aborted() => {
                    return Err(StageStop::Aborted);
                }
            }
        }
    }

    /// Runs one stage; `Ok(None)` when the stage has nothing to do.
    async fn stage(
        &self,
        pod: &JobPod,
        stage: Stage,
        options: &ScriptOptions,
    ) -> Result<Option<i32>, StageStop> {
        if let Some(code) = self.progress().ended(stage) {
            // Ended before the runner process that ran it did: its log is in GitLab's.
            return Ok(code);
        }
        if stage.is_transfer() {
            return self.transfer_stage(pod, stage).await;
        }
        let Some(text) = script::stage_script(stage, &self.job, &pod.layout, options) else {
            self.mark(|p| p.ended.push((stage, None)));
            return Ok(None);
        };
        if self.cancel.is_aborted() {
            return Err(StageStop::Aborted);
        }
        let resumed_at = self.progress().resumes(stage);
        if resumed_at.is_none() {
            self.log.begin(stage.section());
            self.mark(|p| p.current = Some((stage, 0)));
        }
        let mut state = StageState {
            job_id: self.job.id,
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            stage,
            // Written and launched again when resumed: the launch marker makes that a no-op
            // for a stage that started.
            launched: false,
            offset: resumed_at.unwrap_or(0),
            exit_code: None,
            oom_kills: 0,
        };
        let deadline = (stage == Stage::AfterScript)
            .then(|| Instant::now() + after_script_timeout(&pod.layout, &self.log));
        let result = self.follow_stage(pod, &mut state, text.as_bytes(), deadline).await;
        if state.oom_kills > 0 {
            self.log.error(&oom_message(pod, &state));
        }
        self.ended(stage, result)
    }

    /// Closes the stage's section and, when it ended, marks its exit code.
    fn ended(
        &self,
        stage: Stage,
        result: Result<i32, StageStop>,
    ) -> Result<Option<i32>, StageStop> {
        self.log.end(stage.section());
        if let Ok(code) = result {
            self.mark(|p| {
                p.current = None;
                p.ended.push((stage, Some(code)));
            });
        }
        result.map(Some)
    }

    /// Runs a stage whose files the runner moves ([`Stage::is_transfer`]); one cut by a killed
    /// runner process is taken again from its start.
    async fn transfer_stage(&self, pod: &JobPod, stage: Stage) -> Result<Option<i32>, StageStop> {
        if !self.has_transfers(stage) {
            self.mark(|p| p.ended.push((stage, None)));
            return Ok(None);
        }
        if self.cancel.is_aborted() {
            return Err(StageStop::Aborted);
        }
        if self.progress().resumes(stage).is_none() {
            self.log.begin(stage.section());
            self.mark(|p| p.current = Some((stage, 0)));
        }
        let result = self.transfer(pod, stage).await;
        self.ended(stage, result)
    }

    /// Writes, launches and follows a stage until its exit status is known, resuming the log
    /// from the received offset after a dropped stream.
    async fn follow_stage(
        &self,
        pod: &JobPod,
        state: &mut StageState,
        script: &[u8],
        deadline: Option<Instant>,
    ) -> Result<i32, StageStop> {
        let mut retry_since: Option<Instant> = None;
        let mut last_error: Option<String> = None;
        let mut backoff = Duration::from_millis(500);
        let mut canceling = Canceling { deadline, ..Canceling::default() };
        loop {
            let script_now = if state.launched { &[][..] } else { script };
            match self.follow_once(pod, state, script_now, &mut canceling).await {
                Ok(Some(code)) => {
                    debug!(
                        job.id = state.job_id,
                        stage = state.stage.name(),
                        exit.code = code,
                        log.bytes = state.offset,
                        "stage ended"
                    );
                    state.exit_code = Some(code);
                    return Ok(code);
                }
                Ok(None) => {}
                Err(FollowError::Stop(stop)) => return Err(stop),
                Err(FollowError::Transient(message)) => {
                    let since = *retry_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > RECONNECT_BUDGET {
                        return Err(system(format!(
                            "lost the {} stage's log stream for more than {}s: {message}",
                            state.stage.name(),
                            RECONNECT_BUDGET.as_secs()
                        )));
                    }
                    warn!(stage = state.stage.name(), offset = state.offset, error = %message, "stage stream interrupted, resuming");
                    if let Some(failure) = self.node_lost(pod, &message).await {
                        return Err(StageStop::Failed(failure));
                    }
                    last_error = Some(message);
                }
            }
            if let Some(failure) = pod.failure() {
                return Err(StageStop::Failed(failure));
            }
            // The pod's news (its node marking it not ready, say) ends the wait early.
            let mut pod_changes = pod.subscription.receiver.clone();
            pod_changes.mark_unchanged();
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = pod_changes.changed(), if last_error.is_some() => {
                    if let Some(message) = &last_error
                        && let Some(failure) = self.node_lost(pod, message).await
                    {
                        return Err(StageStop::Failed(failure));
                    }
                }
                () = self.cancel.aborted().cancelled() => return Err(StageStop::Aborted),
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One write-follow exec (plus the launch once the script is written). `Ok(None)`: the
    /// stream ended without a status and can be resumed.
    async fn follow_once(
        &self,
        pod: &JobPod,
        state: &mut StageState,
        script: &[u8],
        canceling: &mut Canceling,
    ) -> Result<Option<i32>, FollowError> {
        let command =
            stage::write_follow_command(&pod.dirs, state.stage, script.len(), state.offset);
        let params = AttachParams::default()
            .container("helper")
            .stdin(!script.is_empty())
            .stdout(true)
            .stderr(true);
        let mut process = pod
            .api
            .exec(&pod.name, command, &params)
            .await
            .map_err(|e| self.exec_error(pod, "helper", &e))?;
        if !script.is_empty() {
            let mut stdin =
                process.stdin().ok_or_else(|| FollowError::Transient("no stdin".to_owned()))?;
            stdin
                .write_all(script)
                .await
                .map_err(|e| FollowError::Transient(format!("writing the script: {e}")))?;
            stdin.flush().await.map_err(|e| FollowError::Transient(e.to_string()))?;
            // The follower reads exactly the script's length: nothing depends on closing stdin.
            drop(stdin);
        }
        // kube's exec never ends stdout when its websocket breaks (it returns before shutting
        // the pipe down) but drops the status sender: a status of `None` means the connection
        // was cut, so the stream is resumed instead of waiting for the silence limit.
        let status = process.take_status();
        let status = async move {
            match status {
                Some(status) => status.await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(status);
        let mut status_open = true;
        let mut cut_at: Option<Instant> = None;
        let mut stdout =
            process.stdout().ok_or_else(|| FollowError::Transient("no stdout".to_owned()))?;
        let mut stderr =
            process.stderr().ok_or_else(|| FollowError::Transient("no stderr".to_owned()))?;
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let stderr_task = tokio::spawn(async move {
            let mut pending = Vec::new();
            let mut buf = [0_u8; 1024];
            loop {
                match stderr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = pending.drain(..=i).collect();
                            let _ =
                                lines_tx.send(FollowerLine::parse(&String::from_utf8_lossy(&line)));
                        }
                    }
                }
            }
        });
        let mut exit = None;
        let mut stdout_open = true;
        let mut lines_open = true;
        let mut others = Vec::new();
        let mut buf = vec![0_u8; 64 * 1024];
        let mut heard = Instant::now();
        // The pod's own news: deleted, evicted, a job container ended, while the stream is open
        // (a deleted pod's containers run on for their grace period).
        let mut pod_changes = pod.subscription.receiver.clone();
        let mut pod_watch_open = true;
        while stdout_open || lines_open {
            tokio::select! {
                changed = pod_changes.changed(), if pod_watch_open => {
                    if changed.is_err() {
                        pod_watch_open = false;
                    } else if let Some(failure) = pod.failure() {
                        stderr_task.abort();
                        return Err(FollowError::Stop(StageStop::Failed(failure)));
                    } else if pod.not_ready()
                        && let Some(failure) = self.node_lost(pod, "the pod's Ready condition turned False").await
                    {
                        // The node lifecycle controller marks the pods of a node it lost.
                        stderr_task.abort();
                        return Err(FollowError::Stop(StageStop::Failed(failure)));
                    }
                }
                ended = &mut status, if status_open => {
                    status_open = false;
                    if ended.is_none() {
                        // What the pipe still holds is read meanwhile.
                        cut_at = Some(Instant::now() + CUT_DRAIN);
                    }
                }
                () = sleep_until_opt(cut_at) => {
                    stderr_task.abort();
                    return Err(FollowError::Transient(
                        "the exec's connection was cut (no exit status)".to_owned(),
                    ));
                }
                () = tokio::time::sleep_until(heard + stage::STREAM_SILENCE_LIMIT) => {
                    stderr_task.abort();
                    return Err(FollowError::Transient(format!(
                        "no output and no keepalive from the follower for {}s",
                        stage::STREAM_SILENCE_LIMIT.as_secs()
                    )));
                }
                read = stdout.read(&mut buf), if stdout_open => match read {
                    Ok(0) | Err(_) => stdout_open = false,
                    Ok(n) => {
                        heard = Instant::now();
                        if state.offset == 0 {
                            debug!(job.id = state.job_id, stage = state.stage.name(), "stage output started");
                        }
                        let offset = state.offset + n as u64;
                        let stage = state.stage;
                        self.log.write_marked(&buf[..n], |held| {
                            // What the masker holds back is read again by a resumed run.
                            let mut progress = self.progress();
                            progress.current = Some((stage, offset.saturating_sub(held as u64)));
                            progress.to_json()
                        });
                        state.offset = offset;
                    }
                },
                line = lines.recv(), if lines_open => match line {
                    None => lines_open = false,
                    Some(FollowerLine::Alive) => heard = Instant::now(),
                    Some(FollowerLine::Written) if !state.launched => {
                        self.launch(pod, state.stage).await?;
                        state.launched = true;
                        heard = Instant::now();
                    }
                    Some(FollowerLine::Written) => heard = Instant::now(),
                    Some(FollowerLine::Exit(code)) => exit = Some(code),
                    Some(FollowerLine::OomKills(count)) => state.oom_kills = count,
                    Some(FollowerLine::Error(message)) => {
                        stderr_task.abort();
                        return Err(FollowError::Stop(system(format!("stage {}: {message}", state.stage.name()))));
                    }
                    Some(FollowerLine::Other(text)) => others.push(text),
                },
                () = self.cancel.requested().cancelled(), if canceling.term_sent.is_none() && state.launched => {
                    canceling.term_sent = Some(Instant::now());
                    self.signal(pod, state.stage, "TERM").await;
                }
                () = sleep_until_opt(canceling.deadline), if canceling.term_sent.is_none() && state.launched => {
                    canceling.term_sent = Some(Instant::now());
                    self.log.warning(&format!(
                        "{} could not run to completion because the timeout was exceeded. For more control over job and script timeouts see: https://docs.gitlab.com/ci/runners/configure_runners/#set-script-and-after_script-timeouts",
                        state.stage.name()
                    ));
                    self.signal(pod, state.stage, "TERM").await;
                }
                () = sleep_until_opt(canceling.term_sent.map(|t| t + CANCEL_GRACE)), if !canceling.kill_sent => {
                    canceling.kill_sent = true;
                    self.log.warning(&format!(
                        "the {} stage did not end within {}s of SIGTERM: sending SIGKILL",
                        state.stage.name(),
                        CANCEL_GRACE.as_secs()
                    ));
                    self.signal(pod, state.stage, "KILL").await;
                }
                () = sleep_until_opt(canceling.term_sent.map(|t| t + CANCEL_GRACE + KILL_WAIT)) => {
                    // Killed with its wrapper: no status will be written.
                    stderr_task.abort();
                    return Ok(Some(137));
                }
                () = self.cancel.aborted().cancelled() => {
                    stderr_task.abort();
                    return Err(FollowError::Stop(StageStop::Aborted));
                }
            }
        }
        stderr_task.abort();
        if exit.is_none() && !others.is_empty() {
            debug!(stderr = ?others, "follower output");
        }
        Ok(exit)
    }

    async fn launch(&self, pod: &JobPod, stage: Stage) -> Result<(), FollowError> {
        let container = stage.container();
        let mut last = String::new();
        for attempt in 0..5_u32 {
            let params = AttachParams::default().container(container).stdout(true).stderr(true);
            match pod.api.exec(&pod.name, stage::launch_command(&pod.dirs, stage), &params).await {
                Ok(mut process) => {
                    let mut out = String::new();
                    if let Some(mut stdout) = process.stdout() {
                        let _ = stdout.read_to_string(&mut out).await;
                    }
                    if out.contains("started") || out.contains("already-started") {
                        return Ok(());
                    }
                    last = format!("the launch in container {container:?} said {out:?}");
                }
                Err(e) => match self.exec_error(pod, container, &e) {
                    FollowError::Stop(stop) => return Err(FollowError::Stop(stop)),
                    FollowError::Transient(message) => last = message,
                },
            }
            // The launch may have run without its answer reaching us: it is idempotent.
            warn!(job.id = self.job.id, stage = stage.name(), attempt, error = %last, "no answer from the launch, launching the stage again");
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
        Err(FollowError::Stop(system(format!("failed to launch stage {}: {last}", stage.name()))))
    }

    async fn signal(&self, pod: &JobPod, stage: Stage, signal: &str) {
        let params = AttachParams::default().container(stage.container()).stdout(true).stderr(true);
        match pod.api.exec(&pod.name, stage::kill_command(&pod.dirs, stage, signal), &params).await
        {
            Ok(process) => {
                let _ = process.join().await;
            }
            Err(e) => warn!(error = %e, "failed to signal the stage"),
        }
    }

    /// Whether the pod's node is lost (its `Ready` condition not `True`), asked after the pod
    /// could not be reached (`unreachable`). Needs `get` on `nodes`; without it (403) the stage
    /// is retried until the reconnect budget runs out, as before.
    async fn node_lost(&self, pod: &JobPod, unreachable: &str) -> Option<PodFailure> {
        let node = pod
            .subscription
            .receiver
            .borrow()
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.clone())?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.cluster.client().clone());
        match nodes.get(&node).await {
            Ok(found) => {
                classify::node_lost(&found, &format!("{}/{}", pod.namespace, pod.name), unreachable)
            }
            Err(e) => {
                debug!(node = %node, error = %error_chain(&e), "the node's status cannot be read");
                None
            }
        }
    }

    /// An exec error: final when the pod says why, else worth a retry.
    fn exec_error(&self, pod: &JobPod, container: &str, e: &kube::Error) -> FollowError {
        if let Some(failure) = pod.failure() {
            return FollowError::Stop(StageStop::Failed(failure));
        }
        FollowError::Transient(format!("exec in container {container:?}: {}", error_chain(e)))
    }

    /// Creates the pod; while the namespace's ResourceQuota is exhausted (a `403 exceeded
    /// quota`), says so once and tries again until `poll_timeout`, as a busy cluster frees up.
    async fn create_within_quota(
        &self,
        namespace: &str,
        pod: &Pod,
    ) -> Result<Vec<String>, kube::Error> {
        let deadline = Instant::now() + self.k.poll_timeout;
        let service_account_deadline = Instant::now() + Duration::from_secs(15);
        let mut backoff = Duration::from_secs(1);
        let mut said = false;
        loop {
            match replayed(|| create_pod(self.cluster.client(), namespace, pod)).await {
                Err(kube::Error::Api(e))
                    if e.code == 403
                        && e.message.contains("exceeded quota")
                        && Instant::now() + backoff < deadline
                        && !self.cancel.is_aborted() =>
                {
                    if !said {
                        self.log.warning(&format!(
                            "{}; waiting for the quota to free up, until poll_timeout ({}s)",
                            e.message,
                            self.k.poll_timeout.as_secs()
                        ));
                        said = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.cancel.aborted().cancelled() => return Err(kube::Error::Api(e)),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                // A new namespace gets its `default` ServiceAccount a moment after it exists.
                Err(kube::Error::Api(e))
                    if e.code == 403
                        && e.message.contains("serviceaccount")
                        && e.message.contains("not found")
                        && self.own_namespace().is_some()
                        && Instant::now() < service_account_deadline =>
                {
                    debug!(error = %e.message, "the job namespace's service account is not there yet");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    fn short_token(&self) -> String {
        self.config.raw.token.as_deref().map(names::short_token).unwrap_or_default()
    }

    /// The name of the job's registry-credentials Secret, when it has registry credentials.
    fn credentials_secret_name(&self) -> Option<String> {
        self.job
            .credentials
            .iter()
            .any(credentials::is_registry)
            .then(|| credentials::secret_name(&self.short_token(), self.job.id))
    }

    /// Creates the Secret of the job's registry credentials, when it has some, labelled as the
    /// pod; one of the same name (an earlier attempt of this job) is kept.
    async fn create_credentials_secret(
        &self,
        built: &crate::BuiltPod,
    ) -> Result<Option<String>, String> {
        let Some(name) = self.credentials_secret_name() else { return Ok(None) };
        let meta = &built.pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let Some(secret) = credentials::registry_secret(&self.job, &name, &namespace, &labels)
        else {
            return Ok(None);
        };
        let api: Api<Secret> = Api::namespaced(self.cluster.client().clone(), &namespace);
        let params = PostParams::default();
        match replayed(|| api.create(&params, &secret)).await {
            Ok(_) => {
                debug!(secret = %name, "registry credentials secret created");
                Ok(Some(name))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(name)),
            Err(e) => Err(format!(
                "failed to create the registry credentials secret {namespace}/{name}: {}",
                error_chain(&e)
            )),
        }
    }

    /// Deletes the pod and the job's Secret (always), within `cleanup_resources_timeout`.
    async fn cleanup(&self, pod: &JobPod) {
        if let Some(secret) = &pod.secret {
            let api: Api<Secret> = Api::namespaced(self.cluster.client().clone(), &pod.namespace);
            let params = DeleteParams::default();
            let delete = api.delete(secret, &params);
            match tokio::time::timeout(self.k.cleanup_resources_timeout, delete).await {
                Ok(Ok(_)) => debug!(secret = %secret, "registry credentials secret deleted"),
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => {}
                Ok(Err(e)) => {
                    warn!(secret = %secret, error = %error_chain(&e), "failed to delete the secret");
                    self.log
                        .error(&format!("Error cleaning up secret {secret}: {}", error_chain(&e)));
                }
                Err(_) => self.log.error(&format!(
                    "Error cleaning up secret {secret}: no answer within cleanup_resources_timeout"
                )),
            }
        }
        let params = DeleteParams {
            grace_period_seconds: cleanup_grace(self.k),
            ..DeleteParams::background()
        };
        let delete = pod.api.delete(&pod.name, &params);
        match tokio::time::timeout(self.k.cleanup_resources_timeout, delete).await {
            Ok(Ok(_)) => debug!(pod = %pod.name, "pod deleted"),
            Ok(Err(kube::Error::Api(e))) if e.code == 404 => {}
            Ok(Err(e)) => {
                warn!(pod = %pod.name, error = %error_chain(&e), "failed to delete the pod");
                self.log.error(&format!("Error cleaning up pod: {}", error_chain(&e)));
            }
            Err(_) => {
                warn!(pod = %pod.name, "pod deletion timed out");
                self.log.error(&format!(
                    "Error cleaning up pod: no answer within cleanup_resources_timeout ({}s)",
                    self.k.cleanup_resources_timeout.as_secs()
                ));
            }
        }
        if let Some(namespace) = self.own_namespace() {
            let api: Api<Namespace> = Api::all(self.cluster.client().clone());
            let params = DeleteParams::background();
            let delete = api.delete(&namespace, &params);
            match tokio::time::timeout(self.k.cleanup_resources_timeout, delete).await {
                Ok(Ok(_)) => debug!(namespace = %namespace, "job namespace deleted"),
                Ok(Err(kube::Error::Api(e))) if e.code == 404 => {}
                Ok(Err(e)) => {
                    warn!(namespace = %namespace, error = %error_chain(&e), "failed to delete the job namespace");
                    self.log.error(&format!(
                        "Error cleaning up namespace {namespace}: {}",
                        error_chain(&e)
                    ));
                }
                Err(_) => self.log.error(&format!(
                    "Error cleaning up namespace {namespace}: no answer within cleanup_resources_timeout"
                )),
            }
        }
    }
}

/// How long output still in kube's pipe is read after an exec's connection was cut.
const CUT_DRAIN: Duration = Duration::from_millis(200);

/// How long a canceled stage may take to end after SIGTERM before it gets SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// How long to wait for a status after SIGKILL (which also kills the wrapper that writes it).
const KILL_WAIT: Duration = Duration::from_secs(3);

/// Where stopping the running stage stands (a graceful cancel, or its own timeout).
#[derive(Debug, Default)]
struct Canceling {
    term_sent: Option<Instant>,
    kill_sent: bool,
    /// When the stage must end (`after_script`'s timeout).
    deadline: Option<Instant>,
}

/// upstream's `after_script` budget when `RUNNER_AFTER_SCRIPT_TIMEOUT` is not set.
const AFTER_SCRIPT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// `RUNNER_AFTER_SCRIPT_TIMEOUT` (a Go duration), else 5 minutes; a malformed or non-positive
/// value is ignored with upstream's warning.
fn after_script_timeout(layout: &JobLayout, log: &LogWriter) -> Duration {
    const NAME: &str = "RUNNER_AFTER_SCRIPT_TIMEOUT";
    let Some(value) = layout.variables.iter().rev().find(|v| v.key == NAME).map(|v| v.value.trim())
    else {
        return AFTER_SCRIPT_TIMEOUT;
    };
    if value.is_empty() {
        return AFTER_SCRIPT_TIMEOUT;
    }
    match podrunner_config::values::GoDuration::parse(value) {
        Ok(d) => d.positive().unwrap_or_else(|| {
            log.warning(&format!("Ignoring relative {NAME} timeout: {value}"));
            AFTER_SCRIPT_TIMEOUT
        }),
        Err(_) => {
            log.warning(&format!("Ignoring malformed {NAME} timeout: {value}"));
            AFTER_SCRIPT_TIMEOUT
        }
    }
}

/// Sleeps until `deadline`, forever without one.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

enum FollowError {
    Stop(StageStop),
    Transient(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_headers_are_unquoted() {
        assert_eq!(
            warning_text(r#"299 - "unknown field \"spec.containers[0].lifecycle.stopSignal\"""#),
            r#"unknown field "spec.containers[0].lifecycle.stopSignal""#
        );
        assert_eq!(
            warning_text("299 - \"would violate PodSecurity\""),
            "would violate PodSecurity"
        );
        assert_eq!(warning_text("plain"), "plain");
    }

    #[test]
    fn pod_name_suffixes_are_deterministic_dns_label_parts() {
        assert_eq!(pod_name_suffix(0), "00000000");
        assert_eq!(pod_name_suffix(1001), "000000rt");
        assert_eq!(pod_name_suffix(36), "00000010");
        assert_eq!(pod_name_suffix(u64::MAX).len(), 13);
    }
}
