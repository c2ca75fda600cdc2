//! Jobs of the mock: what the test enqueues ([`MockJob`]) and what it can inspect and steer
//! while the job runs ([`JobHandle`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

/// State of a job on the mock's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Queued, not yet handed out.
    Pending,
    /// Handed out to a runner.
    Running,
    /// Graceful cancel requested: `Job-Status: canceling` until the final update.
    Canceling,
    /// Canceled: trace and updates get 403 + `Job-Status: canceled`.
    Canceled,
    /// Finished with `success`.
    Success,
    /// Finished with `failed`.
    Failed,
}

impl JobState {
    /// The `Job-Status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Canceling => "canceling",
            Self::Canceled => "canceled",
            Self::Success => "success",
            Self::Failed => "failed",
        }
    }

    /// Whether the job may still send trace and updates.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Canceling)
    }
}

/// One `PATCH /trace` the mock received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchRecord {
    /// `Content-Range` start.
    pub start: u64,
    /// `Content-Range` end (inclusive).
    pub end: u64,
    /// The body.
    pub body: Vec<u8>,
    /// Status the mock answered.
    pub status: u16,
}

/// One `PUT /jobs/:id` the mock received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRecord {
    /// `state`.
    pub state: String,
    /// `failure_reason`, if sent.
    pub failure_reason: Option<String>,
    /// `exit_code`, if sent.
    pub exit_code: Option<i64>,
    /// `output.checksum`, if sent.
    pub checksum: Option<String>,
    /// `output.bytesize`, if sent.
    pub bytesize: Option<u64>,
    /// Status the mock answered.
    pub status: u16,
}

#[derive(Debug)]
pub(crate) struct JobData {
    pub(crate) id: u64,
    pub(crate) token: String,
    pub(crate) payload: Value,
    pub(crate) state: JobState,
    pub(crate) trace: Vec<u8>,
    pub(crate) patches: Vec<PatchRecord>,
    pub(crate) updates: Vec<UpdateRecord>,
    pub(crate) inject_patch_416: u32,
    pub(crate) inject_update_412: u32,
    pub(crate) inject_update_202: u32,
}

/// A handle on a job known to the mock. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JobHandle {
    pub(crate) data: Arc<Mutex<JobData>>,
}

impl JobHandle {
    pub(crate) fn lock(&self) -> MutexGuard<'_, JobData> {
        self.data.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Job id.
    pub fn id(&self) -> u64 {
        self.lock().id
    }

    /// Job token.
    pub fn token(&self) -> String {
        self.lock().token.clone()
    }

    /// Current state.
    pub fn state(&self) -> JobState {
        self.lock().state
    }

    /// The trace as stored by the mock.
    pub fn trace(&self) -> Vec<u8> {
        self.lock().trace.clone()
    }

    /// Every trace patch received, in order.
    pub fn patches(&self) -> Vec<PatchRecord> {
        self.lock().patches.clone()
    }

    /// Every job update received, in order.
    pub fn updates(&self) -> Vec<UpdateRecord> {
        self.lock().updates.clone()
    }

    /// The last update that ended the job (`success` or `failed`, answered 200).
    pub fn final_update(&self) -> Option<UpdateRecord> {
        self.lock().updates.iter().rev().find(|u| u.status == 200 && u.state != "running").cloned()
    }

    /// Requests a graceful cancel (`Job-Status: canceling`).
    pub fn cancel_gracefully(&self) {
        let mut d = self.lock();
        if d.state.is_active() {
            d.state = JobState::Canceling;
        }
    }

    /// Cancels hard (`canceled`): trace and updates get 403.
    pub fn cancel(&self) {
        let mut d = self.lock();
        if matches!(d.state, JobState::Pending | JobState::Running | JobState::Canceling) {
            d.state = JobState::Canceled;
        }
    }

    /// The next `n` trace patches get 416 with `Range: 0-<stored size>`.
    pub fn inject_patch_416(&self, n: u32) {
        self.lock().inject_patch_416 = n;
    }

    /// The next `n` final updates get 412 (trace validation failed).
    pub fn inject_update_412(&self, n: u32) {
        self.lock().inject_update_412 = n;
    }

    /// The next `n` final updates get 202 (accepted, not yet completed).
    pub fn inject_update_202(&self, n: u32) {
        self.lock().inject_update_202 = n;
    }

    /// Waits until the job reached a final state, or `timeout`.
    pub async fn wait_finished(&self, timeout: Duration) -> JobState {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.state();
            if matches!(s, JobState::Success | JobState::Failed | JobState::Canceled)
                || tokio::time::Instant::now() >= deadline
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the stored trace contains `needle`, or `timeout`; returns whether it did.
    pub async fn wait_trace_contains(&self, needle: &[u8], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.lock().trace.windows(needle.len().max(1)).any(|w| w == needle) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A variable of a mock job.
#[derive(Debug, Clone)]
struct Variable {
    key: String,
    value: String,
    public: bool,
    masked: bool,
    file: bool,
    raw: bool,
}

/// A job to enqueue; builds GitLab's job JSON, with image and services.
#[derive(Debug, Clone)]
pub struct MockJob {
    pub(crate) name: String,
    image: Option<Value>,
    services: Vec<Value>,
    variables: Vec<Variable>,
    script: Vec<String>,
    after_script: Vec<String>,
    timeout: u64,
    token_mask_prefixes: Vec<String>,
    failure_reasons: Vec<String>,
    credentials: Vec<Value>,
    git: Option<(String, String, String)>,
    extra: Vec<(String, Value)>,
    pub(crate) dependencies: Vec<(u64, String)>,
}

/// The `failure_reasons` GitLab announces by default in this mock.
pub const DEFAULT_FAILURE_REASONS: &[&str] = &[
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
];

impl MockJob {
    /// A job with one script line `echo <name>` and a 3600 s timeout.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            script: vec![format!("echo {name}")],
            name,
            image: None,
            services: Vec::new(),
            variables: Vec::new(),
            after_script: Vec::new(),
            timeout: 3600,
            token_mask_prefixes: Vec::new(),
            failure_reasons: DEFAULT_FAILURE_REASONS.iter().map(|s| (*s).to_owned()).collect(),
            credentials: Vec::new(),
            git: None,
            extra: Vec::new(),
            dependencies: Vec::new(),
        }
    }

    /// Points the job's `git_info` at a repository: `repo_url` may contain `{token}`, replaced
    /// by the job's token as GitLab puts it there (`http://gitlab-ci-token:{token}@host/...`).
    #[must_use]
    pub fn git(mut self, repo_url: &str, sha: &str, ref_name: &str) -> Self {
        self.git = Some((repo_url.to_owned(), sha.to_owned(), ref_name.to_owned()));
        self
    }

    /// Sets the job image by name.
    #[must_use]
    pub fn image(mut self, name: &str) -> Self {
        self.image = Some(json!({ "name": name, "alias": "", "entrypoint": null, "command": null,
            "ports": [], "pull_policy": null }));
        self
    }

    /// Sets the job image as raw JSON (entrypoint, ports, pull_policy, executor_opts ...).
    #[must_use]
    pub fn image_json(mut self, image: Value) -> Self {
        self.image = Some(image);
        self
    }

    /// Adds a service by name and alias.
    #[must_use]
    pub fn service(mut self, name: &str, alias: &str) -> Self {
        self.services.push(json!({ "name": name, "alias": alias, "entrypoint": null,
            "command": null, "ports": [], "variables": [] }));
        self
    }

    /// Adds a service as raw JSON.
    #[must_use]
    pub fn service_json(mut self, service: Value) -> Self {
        self.services.push(service);
        self
    }

    /// Adds a plain variable.
    #[must_use]
    pub fn variable(mut self, key: &str, value: &str) -> Self {
        self.variables.push(Variable {
            key: key.to_owned(),
            value: value.to_owned(),
            public: true,
            masked: false,
            file: false,
            raw: false,
        });
        self
    }

    /// Adds a masked variable.
    #[must_use]
    pub fn masked_variable(mut self, key: &str, value: &str) -> Self {
        self.variables.push(Variable {
            key: key.to_owned(),
            value: value.to_owned(),
            public: false,
            masked: true,
            file: false,
            raw: false,
        });
        self
    }

    /// Adds a file variable.
    #[must_use]
    pub fn file_variable(mut self, key: &str, value: &str) -> Self {
        self.variables.push(Variable {
            key: key.to_owned(),
            value: value.to_owned(),
            public: false,
            masked: false,
            file: true,
            raw: true,
        });
        self
    }

    /// Sets the script lines (`before_script` + `script`).
    #[must_use]
    pub fn script(mut self, lines: &[&str]) -> Self {
        self.script = lines.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets the `after_script` lines.
    #[must_use]
    pub fn after_script(mut self, lines: &[&str]) -> Self {
        self.after_script = lines.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets the job timeout in seconds (`runner_info.timeout`).
    #[must_use]
    pub fn timeout(mut self, seconds: u64) -> Self {
        self.timeout = seconds;
        self
    }

    /// Sets `features.token_mask_prefixes`.
    #[must_use]
    pub fn token_mask_prefixes(mut self, prefixes: &[&str]) -> Self {
        self.token_mask_prefixes = prefixes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets `features.failure_reasons`.
    #[must_use]
    pub fn failure_reasons(mut self, reasons: &[&str]) -> Self {
        self.failure_reasons = reasons.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Adds a registry credential.
    #[must_use]
    pub fn registry_credential(mut self, url: &str, username: &str, password: &str) -> Self {
        self.credentials.push(
            json!({ "type": "registry", "url": url, "username": username, "password": password }),
        );
        self
    }

    /// Depends on the artifacts of the job `id` (named `name`): the payload's `dependencies`
    /// lists it with its archive's name and size as the mock holds them when the job is
    /// queued, and this job's token, which may read it.
    #[must_use]
    pub fn depends_on(mut self, id: u64, name: &str) -> Self {
        self.dependencies.push((id, name.to_owned()));
        self
    }

    /// Sets any other top-level key of the payload.
    #[must_use]
    pub fn extra(mut self, key: &str, value: Value) -> Self {
        self.extra.push((key.to_owned(), value));
        self
    }

    pub(crate) fn payload(&self, id: u64, token: &str) -> Value {
        let mut variables: Vec<Value> = vec![
            json!({"key": "CI_JOB_ID", "value": id.to_string(), "public": true, "masked": false}),
            json!({"key": "CI_JOB_NAME", "value": self.name, "public": true, "masked": false}),
            json!({"key": "CI_JOB_TOKEN", "value": token, "public": false, "masked": true}),
        ];
        variables.extend(self.variables.iter().map(|v| {
            json!({ "key": v.key, "value": v.value, "public": v.public, "masked": v.masked,
                    "file": v.file, "raw": v.raw })
        }));
        let mut steps = vec![json!({ "name": "script", "script": self.script,
            "timeout": self.timeout, "when": "on_success", "allow_failure": false })];
        if !self.after_script.is_empty() {
            steps.push(json!({ "name": "after_script", "script": self.after_script,
                "timeout": 300, "when": "always", "allow_failure": true }));
        }
        let mut payload = json!({
            "id": id,
            "token": token,
            "allow_git_fetch": true,
            "job_info": { "id": id, "name": self.name, "stage": "test", "pipeline_id": 1000 + id,
                          "project_id": 42, "project_name": "demo", "project_full_path": "group/demo",
                          "time_in_queue_seconds": 0.25 },
            "git_info": { "repo_url": "https://gitlab-ci-token:xxx@gitlab.example.com/group/demo.git",
                          "repo_object_format": "sha1", "ref": "main",
                          "sha": "265c14cf140a66cfc61e40e4ab45c95ba8df5ed1",
                          "before_sha": "0000000000000000000000000000000000000000",
                          "ref_type": "branch", "refspecs": ["+refs/heads/main:refs/remotes/origin/main"],
                          "depth": 20, "protected": false },
            "runner_info": { "timeout": self.timeout, "runner_session_url": null },
            "variables": variables,
            "steps": steps,
            "image": self.image,
            "services": self.services,
            "artifacts": [],
            "cache": [],
            "credentials": self.credentials,
            "dependencies": [],
            "features": { "trace_sections": true, "token_mask_prefixes": self.token_mask_prefixes,
                          "failure_reasons": self.failure_reasons },
            "hooks": [],
        });
        if let Some((url, sha, ref_name)) = &self.git {
            payload["git_info"]["repo_url"] = json!(url.replace("{token}", token));
            payload["git_info"]["sha"] = json!(sha);
            payload["git_info"]["ref"] = json!(ref_name);
            payload["git_info"]["refspecs"] =
                json!([format!("+refs/heads/{ref_name}:refs/remotes/origin/{ref_name}")]);
        }
        if let Some(obj) = payload.as_object_mut() {
            for (k, v) in &self.extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        payload
    }
}
