//! Maps the validated `config.toml` ([`podrunner_config::Config`]) onto the daemon's settings,
//! refusing every runner the daemon could not serve honestly (no URL or token, no executor, an
//! executor this build does not implement, an unreadable CA file).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use std::collections::BTreeMap;

use podrunner_config::diagnostics::{Diagnostic, Segment, Severity};
use podrunner_config::{Config, Report, RunnerConfig};
use podrunner_coordinator::{JobLogConfig, generate_system_id};
use podrunner_daemon::{DaemonSettings, ExecutorRegistry, ExecutorSettings, RunnerSettings};
use podrunner_executor_k8s::KubernetesRunner;
use secrecy::SecretString;
use tracing::warn;

use crate::cli::{ConfigArgs, DiagnosticsFormat};
use crate::config_file::{self, LoadedFile};

/// How often a running job without new output touches GitLab, to learn about a cancel.
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// gitlab-runner's file for the install's system id, next to `config.toml`.
const SYSTEM_ID_FILE: &str = ".runner_system_id";

/// The default state directory (the job journal), next to `config.toml`.
const STATE_DIR: &str = ".runner_jobs";

/// The state directory: `explicit` (`--state-dir`), else [`STATE_DIR`] beside the config file.
pub(crate) fn state_dir(config_path: &Path, explicit: Option<&Path>) -> std::path::PathBuf {
    explicit.map_or_else(
        || {
            config_path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join(STATE_DIR)
        },
        Path::to_path_buf,
    )
}

/// Why a runner cannot be served; each message names the runner, the file and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The daemon settings for `config`, read from `path`, with `executors` as the executors this
/// build implements. Credentials must already be expanded. All refusals are returned at once.
pub(crate) fn daemon_settings(
    config: &Config,
    path: &Path,
    warnings: &RunnerWarnings,
    executors: &ExecutorRegistry,
    system_id: &str,
) -> Result<DaemonSettings, Vec<Refusal>> {
    let mut refusals = Vec::new();
    let mut runners = Vec::new();
    for runner in &config.runners {
        let warnings = warnings.get(&runner.index).cloned().unwrap_or_default();
        match runner_settings(config, runner, path, warnings, executors, system_id) {
            Ok(r) => runners.push(r),
            Err(mut r) => refusals.append(&mut r),
        }
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }
    let mut settings = DaemonSettings::new(runners);
    settings.concurrent = config.concurrent;
    settings.check_interval = config.check_interval;
    settings.shutdown_timeout = config.shutdown_timeout;
    settings.listen_address = config.raw.listen_address.clone().filter(|a| !a.trim().is_empty());
    Ok(settings)
}

/// Loads the config file and prints its diagnostics to stderr in the `check-config` format.
/// Returns the config with its credentials expanded from the environment, or the exit code 1
/// when the file has errors. An unreadable file is an `Err` (exit code 2).
pub(crate) fn load_config(
    args: &ConfigArgs,
) -> anyhow::Result<Result<(LoadedFile, Config), ExitCode>> {
    let file = config_file::load(args)?;
    if !file.loaded.diagnostics.is_empty() {
        eprint!("{}", file.render(DiagnosticsFormat::Text)?);
    }
    let config = match (&file.loaded.config, file.loaded.has_errors()) {
        (Some(config), false) => config.clone(),
        _ => return Ok(Err(ExitCode::from(1))),
    };
    let mut config = config;
    config.expand_credentials(|name| std::env::var(name).ok());
    Ok(Ok((file, config)))
}

fn positive_or(value: Option<i64>, default: u64) -> u64 {
    value.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0).unwrap_or(default)
}

/// The config's warnings about each runner (by index), as `FILE:LINE:COL: message` lines: the
/// Kubernetes executor repeats them in every job log of that runner.
pub(crate) type RunnerWarnings = BTreeMap<usize, Vec<String>>;

/// Groups the warnings of `diagnostics` by the runner whose keys they are about.
pub(crate) fn runner_warnings(
    file: &str,
    text: &str,
    diagnostics: &[Diagnostic],
) -> RunnerWarnings {
    let report = Report { file, text, diagnostics };
    let mut out = RunnerWarnings::new();
    for d in diagnostics.iter().filter(|d| d.severity == Severity::Warning) {
        let index = match d.key_path.0.as_slice() {
            [Segment::Key(runners), Segment::Index(i), ..] if runners == "runners" => *i,
            _ => continue,
        };
        let line = match report.position(d) {
            Some(pos) => format!("{file}:{}:{}: {}", pos.line, pos.column, d.message),
            None => format!("{file}: {}", d.message),
        };
        out.entry(index).or_default().push(line);
    }
    out
}

fn runner_settings(
    config: &Config,
    runner: &RunnerConfig,
    path: &Path,
    config_warnings: Vec<String>,
    executors: &ExecutorRegistry,
    system_id: &str,
) -> Result<RunnerSettings, Vec<Refusal>> {
    let raw = &runner.raw;
    let name = runner.display_name();
    let file = path.display();
    let at = format!("runner {name:?} (runners[{}] in {file})", runner.index);
    let mut refusals = Vec::new();
    let url = raw.url.clone().filter(|u| !u.trim().is_empty());
    if url.is_none() {
        refusals.push(Refusal(format!("{at} has no url")));
    }
    let token = raw.token.clone().filter(|t| !t.trim().is_empty());
    if token.is_none() {
        refusals.push(Refusal(format!("{at} has no token")));
    }
    match raw.executor.as_deref().filter(|e| !e.trim().is_empty()) {
        None => refusals.push(Refusal(format!(
            "{at} has no executor; refusing to start rather than take jobs it cannot run"
        ))),
        Some(executor) if executors.get(executor).is_some() => {}
        Some(other) => refusals.push(Refusal(format!(
            "{at} uses executor {other:?}, which this runner does not support (only \
             \"kubernetes\" is implemented); refusing to start"
        ))),
    }
    if raw.tls_cert_file.is_some() || raw.tls_key_file.is_some() {
        refusals.push(Refusal(format!(
            "{at} sets tls-cert-file/tls-key-file: client certificates are not supported yet"
        )));
    }
    let tls_ca_pem = match raw.tls_ca_file.as_deref().filter(|f| !f.is_empty()) {
        None => None,
        Some(ca) => match std::fs::read(ca) {
            Ok(pem) => Some(pem),
            Err(e) => {
                refusals.push(Refusal(format!("{at}: failed to read tls-ca-file {ca}: {e}")));
                None
            }
        },
    };
    let (Some(url), Some(token), Some(executor), true) =
        (url, token, raw.executor.clone(), refusals.is_empty())
    else {
        return Err(refusals);
    };
    let mut r = RunnerSettings::new(name, url, SecretString::from(token), executor);
    let fingerprint = fingerprint(runner, &config_warnings);
    r.executor_settings = ExecutorSettings::new(
        KubernetesRunner { config: runner.clone(), config_warnings },
        fingerprint,
    );
    r.system_id = Some(system_id.to_owned());
    r.limit = usize::try_from(raw.limit.unwrap_or(0).max(0)).unwrap_or(usize::MAX);
    r.request_concurrency =
        usize::try_from(positive_or(raw.request_concurrency, 1)).unwrap_or(usize::MAX);
    r.strict_check_interval = raw.strict_check_interval.unwrap_or(false);
    r.unhealthy_requests_limit =
        u32::try_from(positive_or(raw.unhealthy_requests_limit, 3)).unwrap_or(u32::MAX);
    r.unhealthy_interval = raw
        .unhealthy_interval
        .and_then(podrunner_config::values::GoDuration::positive)
        .unwrap_or(Duration::from_secs(60 * 60));
    r.tls_ca_pem = tls_ca_pem;
    r.job_log = JobLogConfig {
        output_limit: usize::try_from(positive_or(raw.output_limit, 4096).saturating_mul(1024))
            .unwrap_or(usize::MAX),
        final_update_retry_limit: u32::try_from(positive_or(
            raw.job_status_final_update_retry_limit,
            10,
        ))
        .unwrap_or(u32::MAX),
        // A silent job still learns about a cancel within about 5 s (upstream touches every 30 s,
        // so a `canceling` could go unseen for that long).
        force_send_interval: CANCEL_CHECK_INTERVAL,
        ..JobLogConfig::default()
    };
    let mut labels = config.raw.labels.clone();
    labels.extend(raw.labels.clone());
    r.labels = labels;
    Ok(r)
}

/// A digest of everything the runner's entry says, so a reload restarts the runner (and its
/// executor's cluster connection) exactly when its settings changed.
fn fingerprint(runner: &RunnerConfig, warnings: &[String]) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!("{:?}", runner.raw).hash(&mut hasher);
    warnings.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn is_system_id(id: &str) -> bool {
    (id.starts_with("s_") || id.starts_with("r_"))
        && id.len() == 14
        && id[2..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The install's system id, as gitlab-runner keeps it in `.runner_system_id` next to the config
/// file; where that directory is read-only (a config mounted from a Secret), in the state
/// directory instead. [`SystemId::load`] reads it or makes a new one without writing;
/// [`SystemId::save`] writes a new one once the command has accepted the config (a refused
/// start leaves no file).
pub(crate) struct SystemId {
    pub(crate) id: String,
    /// Where a newly generated id is to be saved, in order of preference; empty when it was
    /// read from a file.
    unsaved: Vec<std::path::PathBuf>,
}

impl SystemId {
    /// The id from `.runner_system_id` beside `config_path`, else in `state_dir`, else new.
    pub(crate) fn load(config_path: &Path, state_dir: Option<&Path>) -> Self {
        let dir =
            config_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let files: Vec<std::path::PathBuf> = std::iter::once(dir.join(SYSTEM_ID_FILE))
            .chain(state_dir.map(|d| d.join(SYSTEM_ID_FILE)))
            .collect();
        for file in &files {
            if let Ok(text) = std::fs::read_to_string(file) {
                let id = text.trim();
                if is_system_id(id) {
                    return Self { id: id.to_owned(), unsaved: Vec::new() };
                }
                warn!(file.path = %file.display(), "ignoring an invalid system id file");
            }
        }
        Self { id: generate_system_id(), unsaved: files }
    }

    /// Writes a newly generated id to the first place that takes it (a failure everywhere only
    /// costs a new id at the next start, and the sweep of what this one created).
    pub(crate) fn save(&mut self) {
        let mut errors = Vec::new();
        for (i, file) in std::mem::take(&mut self.unsaved).into_iter().enumerate() {
            // The state directory may not exist yet; the config's directory always does.
            if i > 0
                && let Some(dir) = file.parent()
            {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::write(&file, format!("{}\n", self.id)) {
                Ok(()) => return,
                Err(e) => errors.push(format!("{}: {e}", file.display())),
            }
        }
        if !errors.is_empty() {
            warn!(errors = %errors.join("; "), "failed to save the system id");
        }
    }
}

/// A token shortened for display: never the whole token. Known prefixes (`glrt-`, the legacy
/// `GR1348941`) are dropped, then at most 8 characters and at most half of the rest are shown.
pub(crate) fn shorten_token(token: &str) -> String {
    let rest = ["glrt-", "GR1348941", "glrtr-"]
        .iter()
        .find_map(|p| token.strip_prefix(p))
        .unwrap_or(token);
    let chars: Vec<char> = rest.chars().collect();
    let shown = chars.len().div_ceil(2).saturating_sub(1).min(8);
    let mut out: String = chars[..shown].iter().collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use podrunner_config::{LoadOptions, load_str};

    use super::*;

    fn config(text: &str) -> Config {
        let loaded = load_str(text, LoadOptions::default());
        loaded.config.expect("the test config is valid")
    }

    fn messages(refusals: Vec<Refusal>) -> Vec<String> {
        refusals.into_iter().map(|r| r.0).collect()
    }

    #[test]
    fn a_kubernetes_runner_hands_its_config_to_the_executor_and_a_change_shows_in_the_fingerprint()
    {
        let text = |ns: &str| {
            format!(
                "[[runners]]\nname = \"k8s\"\nurl = \"https://gitlab.example.com\"\ntoken = \"glrt-abc\"\nexecutor = \"kubernetes\"\n[runners.kubernetes]\nnamespace = \"{ns}\"\n"
            )
        };
        let settings = |ns: &str| {
            daemon_settings(
                &config(&text(ns)),
                Path::new("/etc/runner.toml"),
                &RunnerWarnings::new(),
                &crate::cmd::run::executors(),
                "s_0123456789ab",
            )
            .expect("a kubernetes runner is served")
        };
        let a = settings("ci");
        let runner = &a.runners[0]
            .executor_settings
            .get::<KubernetesRunner>()
            .expect("the runner config")
            .config;
        assert_eq!(runner.display_name(), "k8s");
        assert_eq!(runner.kubernetes.as_ref().and_then(|k| k.raw.namespace.as_deref()), Some("ci"));
        let same = settings("ci");
        let other = settings("jobs");
        assert_eq!(
            a.runners[0].executor_settings.fingerprint(),
            same.runners[0].executor_settings.fingerprint()
        );
        assert_ne!(
            a.runners[0].executor_settings.fingerprint(),
            other.runners[0].executor_settings.fingerprint()
        );
    }

    #[test]
    fn every_problem_of_every_runner_is_reported_at_once() {
        let c = config(
            "[[runners]]\nname = \"a\"\n[[runners]]\nurl = \"http://x\"\ntoken = \"t\"\nexecutor = \"docker\"\n",
        );
        let m = messages(
            daemon_settings(
                &c,
                Path::new("c.toml"),
                &RunnerWarnings::new(),
                &ExecutorRegistry::new(),
                "s_0123456789ab",
            )
            .expect_err("refused"),
        );
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(m[0].contains("\"a\"") && m[0].contains("no url"));
        assert!(m[1].contains("no token"));
        assert!(m[2].contains("no executor"));
        assert!(m[3].contains("runners[1]") && m[3].contains("\"docker\""), "{}", m[3]);
    }

    #[test]
    fn config_without_runners_maps_the_global_settings() {
        let c = config(
            "concurrent = 4\ncheck_interval = 7\nshutdown_timeout = 9\nlisten_address = \"127.0.0.1:9252\"\n",
        );
        let s = daemon_settings(
            &c,
            Path::new("c.toml"),
            &RunnerWarnings::new(),
            &ExecutorRegistry::new(),
            "s_0123456789ab",
        )
        .expect("settings");
        assert_eq!(s.concurrent, 4);
        assert_eq!(s.check_interval, Duration::from_secs(7));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(9));
        assert_eq!(s.listen_address.as_deref(), Some("127.0.0.1:9252"));
        assert!(s.runners.is_empty());
    }

    #[test]
    fn shortened_tokens_never_show_the_whole_token() {
        assert_eq!(shorten_token("glrt-abcdefghijklmnopqrst"), "abcdefgh…");
        assert_eq!(shorten_token("GR1348941xyzxyzxyzxyz"), "xyzxy…");
        for token in ["", "a", "ab", "abc", "abcd", "glrt-", "glrt-x", "0123456789"] {
            let short = shorten_token(token);
            let shown = short.trim_end_matches('…');
            assert!(token.is_empty() || !shown.contains(token), "{token:?} → {short:?}");
            assert!(
                shown.chars().count() * 2 < token.chars().count().max(1),
                "{token:?} → {short:?}"
            );
        }
    }

    #[test]
    fn system_id_is_kept_next_to_the_config_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        let mut first = SystemId::load(&path, None);
        assert!(is_system_id(&first.id), "{}", first.id);
        assert!(!dir.path().join(SYSTEM_ID_FILE).exists(), "loading alone writes nothing");
        first.save();
        assert_eq!(SystemId::load(&path, None).id, first.id, "the id is stable across starts");
    }

    #[test]
    fn where_the_config_directory_takes_no_file_the_system_id_is_kept_in_the_state_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A directory that takes no file, even from root: it is not there (a read-only Secret
        // mount refuses the same way).
        let path = dir.path().join("not-there").join("config.toml");
        let state = dir.path().join("state");
        let mut first = SystemId::load(&path, Some(&state));
        first.save();
        assert!(state.join(SYSTEM_ID_FILE).exists(), "kept in the state directory");
        assert_eq!(SystemId::load(&path, Some(&state)).id, first.id, "stable across starts");
    }
}
