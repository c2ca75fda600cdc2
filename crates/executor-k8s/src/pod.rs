//! Assembles the build pod (`gitlab-runner.md` §3): names, containers, volumes, scheduling,
//! metadata and security, then `pod_spec` patches, the profile check and the per-version rewrite.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::{
    api::core::v1::{
        Affinity, Container, ContainerPort, EnvVar, ExecAction, HTTPGetAction, HTTPHeader,
        HostAlias, Lifecycle, LifecycleHandler, LocalObjectReference, NodeAffinity, NodeSelector,
        NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinity, PodAffinityTerm,
        PodAntiAffinity, PodDNSConfig, PodDNSConfigOption, PodSpec, PreferredSchedulingTerm,
        TCPSocketAction, Toleration, WeightedPodAffinityTerm,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use podrunner_config::{
    KubernetesConfig,
    model::PullPolicy,
    raw::{
        RawAffinity, RawKubernetes, RawLabelSelector, RawLifecycleHandler, RawNodeSelectorTerm,
        RawPodAffinity, RawPodAffinityTerm, RawSelectorRequirement,
    },
    upstream,
    validate::is_runner_gitlab_key,
};
use podrunner_coordinator::wire::Image;
use regex::Regex;
use secrecy::ExposeSecret;

use crate::{
    BuildInput, BuiltPod, Error, HelperOs, JobLayout, Result,
    names::{self, is_dns1123_label, is_dns1123_subdomain, sanitize_label},
    patch, resources,
    security::{self, ContainerKind},
    vars::Variables,
    version,
    volumes::{self, Dirs},
};

/// The shell the `build` and `helper` containers start: it execs the first shell it finds and
/// then reads the stage commands from stdin (attach strategy).
pub const DETECT_SHELL_SCRIPT: &str = "for shell in /usr/local/bin/bash /usr/bin/bash /bin/bash /usr/local/bin/sh /usr/bin/sh /bin/sh /busybox/sh; do if [ -x \"$shell\" ]; then exec \"$shell\"; fi; done; echo 'shell not found' >&2; exit 1";

/// The default helper image repository.
pub const HELPER_IMAGE_REPOSITORY: &str =
    "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper";

/// The default job timeout (gitlab-runner's `DefaultTimeout`, 2 h).
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 7200;

/// One service, from the config or the job.
#[derive(Debug)]
struct ServiceSpec<'a> {
    image: String,
    aliases: Vec<String>,
    entrypoint: Vec<String>,
    command: Vec<String>,
    ports: Vec<i32>,
    variables: Vec<(String, String, bool)>,
    pull_policy: &'a [String],
    user: Option<String>,
}

fn split_aliases(alias: &str) -> Vec<String> {
    alias
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Container names for the services: the first unused DNS-label alias, else `svc-N`.
fn service_names(services: &[ServiceSpec<'_>]) -> Vec<String> {
    let mut used: HashSet<&str> = HashSet::new();
    let mut counter = 0;
    services
        .iter()
        .map(|s| {
            let mut chosen = None;
            for alias in &s.aliases {
                if !used.insert(alias) {
                    continue;
                }
                if is_dns1123_label(alias) {
                    chosen = Some(alias.clone());
                    break;
                }
            }
            chosen.unwrap_or_else(|| {
                let name = format!("svc-{counter}");
                counter += 1;
                name
            })
        })
        .collect()
}

/// Host names Docker would give a service: the image path without tag or digest, with `/`
/// replaced by `-` and by `__`; only DNS-valid ones.
fn image_hostnames(image: &str) -> Vec<String> {
    let no_digest = image.split('@').next().unwrap_or(image);
    let path = match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    };
    let candidates = if path.contains('/') {
        vec![path.replace('/', "-"), path.replace('/', "__")]
    } else {
        vec![path.to_owned()]
    };
    candidates.into_iter().filter(|c| is_dns1123_subdomain(c)).collect()
}

/// Go's `time.Duration.String()` for whole seconds.
fn go_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// The repository URL without credentials and `.git`.
fn clean_repo_url(url: &str) -> String {
    let url = url.trim_end_matches(".git");
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// A value overwrite gated by a `*_overwrite_allowed` regex (unanchored; empty disables it).
fn gated<'v>(
    variable: &str,
    value: &'v str,
    allowed: Option<&String>,
    key: &'static str,
) -> Result<Option<&'v str>> {
    let Some(pattern) = allowed.filter(|p| !p.is_empty()) else { return Ok(None) };
    let regex = Regex::new(pattern).map_err(|source| Error::InvalidRegex {
        key,
        regex: pattern.clone(),
        source,
    })?;
    if regex.is_match(value) {
        Ok(Some(value))
    } else {
        Err(Error::OverwriteNotAllowed {
            variable: variable.to_owned(),
            value: value.to_owned(),
            regex: pattern.clone(),
        })
    }
}

/// `KUBERNETES_<PREFIX>_*` = `k=v` overwrites of a map, each gated by the regex.
fn map_overwrites(
    vars: &Variables,
    prefix: &str,
    allowed: Option<&String>,
    key: &'static str,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for v in vars.with_prefix(prefix) {
        let value = vars.expand(&v.value);
        let Some(value) = gated(&v.key, &value, allowed, key)? else { continue };
        let Some((k, val)) = value.split_once('=') else {
            return Err(Error::MalformedOverwrite {
                variable: v.key.clone(),
                value: value.to_owned(),
                expected: "key=value",
            });
        };
        out.push((k.to_owned(), val.to_owned()));
    }
    Ok(out)
}

fn toleration(key_value: &str, effect: &str) -> Toleration {
    let effect = (!effect.is_empty()).then(|| effect.to_owned());
    if key_value.is_empty() {
        return Toleration { operator: Some("Exists".to_owned()), effect, ..Toleration::default() };
    }
    match key_value.split_once('=') {
        Some((k, v)) => Toleration {
            key: Some(k.to_owned()),
            operator: Some("Equal".to_owned()),
            value: Some(v.to_owned()),
            effect,
            ..Toleration::default()
        },
        None => Toleration {
            key: Some(key_value.to_owned()),
            operator: Some("Exists".to_owned()),
            effect,
            ..Toleration::default()
        },
    }
}

/// The pull policies of an image: the job's, else the config's, else the cluster default;
/// intersected with `allowed_pull_policies`. Returns the Kubernetes spelling of the first one.
fn pull_policy(job: &[String], k: &KubernetesConfig) -> Result<Option<String>> {
    let job: Vec<&str> = job.iter().map(String::as_str).filter(|p| !p.is_empty()).collect();
    let (requested, source_name): (Vec<&'static str>, &'static str) = if !job.is_empty() {
        let parsed = job
            .iter()
            .map(|p| {
                PullPolicy::parse(p)
                    .map(PullPolicy::as_kubernetes)
                    .ok_or_else(|| Error::InvalidPullPolicy { value: (*p).to_owned() })
            })
            .collect::<Result<Vec<_>>>()?;
        (parsed, "GitLab pipeline config")
    } else if !k.pull_policy.is_empty() {
        (k.pull_policy.iter().map(|p| p.as_kubernetes()).collect(), "Runner config")
    } else {
        (Vec::new(), "Runner config (default)")
    };
    if k.allowed_pull_policies.is_empty() {
        return Ok(requested.first().map(|p| (*p).to_owned()));
    }
    let allowed: Vec<&'static str> =
        k.allowed_pull_policies.iter().map(|p| p.as_kubernetes()).collect();
    if requested.is_empty() {
        // No policy anywhere: the first allowed one (instead of the cluster default, which the
        // allow-list cannot vouch for).
        return Ok(allowed.first().map(|p| (*p).to_owned()));
    }
    let kept: Vec<&str> = requested.iter().copied().filter(|p| allowed.contains(p)).collect();
    match kept.first() {
        Some(p) => Ok(Some((*p).to_owned())),
        None => Err(Error::PullPolicyNotAllowed {
            policies: format!("[{}]", requested.join(" ")),
            source_name,
            allowed: format!("[{}]", allowed.join(" ")),
        }),
    }
}

fn check_allowed(image: &str, patterns: &[String], key: &'static str) -> Result<bool> {
    if patterns.is_empty() {
        return Ok(true);
    }
    for pattern in patterns {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map_err(|source| Error::InvalidGlob { key, pattern: pattern.clone(), source })?;
        if glob.compile_matcher().is_match(image) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn lifecycle(k: &RawKubernetes) -> Option<Lifecycle> {
    let lc = k.container_lifecycle.as_ref()?;
    let handler = |h: &RawLifecycleHandler| LifecycleHandler {
        exec: h.exec.as_ref().map(|e| ExecAction { command: Some(e.command.clone()) }),
        http_get: h.http_get.as_ref().map(|g| HTTPGetAction {
            host: g.host.clone(),
            path: g.path.clone(),
            port: IntOrString::Int(i32::try_from(g.port).unwrap_or_default()),
            scheme: g.scheme.clone(),
            http_headers: (!g.http_headers.is_empty()).then(|| {
                g.http_headers
                    .iter()
                    .map(|h| HTTPHeader { name: h.name.clone(), value: h.value.clone() })
                    .collect()
            }),
            ..HTTPGetAction::default()
        }),
        tcp_socket: h.tcp_socket.as_ref().map(|t| TCPSocketAction {
            host: t.host.clone(),
            port: IntOrString::Int(i32::try_from(t.port).unwrap_or_default()),
        }),
        ..LifecycleHandler::default()
    };
    let out = Lifecycle {
        post_start: lc.post_start.as_ref().map(handler),
        pre_stop: lc.pre_stop.as_ref().map(handler),
        ..Lifecycle::default()
    };
    (out.post_start.is_some() || out.pre_stop.is_some()).then_some(out)
}

fn requirements(r: &[RawSelectorRequirement]) -> Option<Vec<NodeSelectorRequirement>> {
    (!r.is_empty()).then(|| {
        r.iter()
            .map(|r| NodeSelectorRequirement {
                key: r.key.clone(),
                operator: r.operator.clone(),
                values: (!r.values.is_empty()).then(|| r.values.clone()),
            })
            .collect()
    })
}

fn node_term(t: &RawNodeSelectorTerm) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: requirements(&t.match_expressions),
        match_fields: requirements(&t.match_fields),
    }
}

fn label_selector(s: &RawLabelSelector) -> LabelSelector {
    LabelSelector {
        match_labels: (!s.match_labels.is_empty()).then(|| s.match_labels.clone()),
        match_expressions: (!s.match_expressions.is_empty()).then(|| {
            s.match_expressions
                .iter()
                .map(|r| LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: r.operator.clone(),
                    values: (!r.values.is_empty()).then(|| r.values.clone()),
                })
                .collect()
        }),
    }
}

fn pod_term(t: &RawPodAffinityTerm) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: t.label_selector.as_ref().map(label_selector),
        namespaces: (!t.namespaces.is_empty()).then(|| t.namespaces.clone()),
        topology_key: t.topology_key.clone(),
        namespace_selector: t.namespace_selector.as_ref().map(label_selector),
        match_label_keys: (!t.match_label_keys.is_empty()).then(|| t.match_label_keys.clone()),
        mismatch_label_keys: (!t.mismatch_label_keys.is_empty())
            .then(|| t.mismatch_label_keys.clone()),
    }
}

fn pod_affinity_parts(
    a: &RawPodAffinity,
) -> (Option<Vec<PodAffinityTerm>>, Option<Vec<WeightedPodAffinityTerm>>) {
    let required = &a.required_during_scheduling_ignored_during_execution;
    let preferred = &a.preferred_during_scheduling_ignored_during_execution;
    (
        (!required.is_empty()).then(|| required.iter().map(pod_term).collect()),
        (!preferred.is_empty()).then(|| {
            preferred
                .iter()
                .map(|w| WeightedPodAffinityTerm {
                    weight: i32::try_from(w.weight).unwrap_or_default(),
                    pod_affinity_term: pod_term(&w.pod_affinity_term),
                })
                .collect()
        }),
    )
}

/// `affinity`; `None` when nothing is configured (upstream sends an empty object).
fn affinity(a: Option<&RawAffinity>) -> Option<Affinity> {
    let a = a?;
    let node_affinity = a.node_affinity.as_ref().map(|n| NodeAffinity {
        required_during_scheduling_ignored_during_execution: n
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .map(|s| NodeSelector {
                node_selector_terms: s.node_selector_terms.iter().map(node_term).collect(),
            }),
        preferred_during_scheduling_ignored_during_execution: (!n
            .preferred_during_scheduling_ignored_during_execution
            .is_empty())
        .then(|| {
            n.preferred_during_scheduling_ignored_during_execution
                .iter()
                .map(|p| PreferredSchedulingTerm {
                    weight: i32::try_from(p.weight).unwrap_or_default(),
                    preference: node_term(&p.preference),
                })
                .collect()
        }),
    });
    let pod_affinity = a.pod_affinity.as_ref().map(|p| {
        let (required, preferred) = pod_affinity_parts(p);
        PodAffinity {
            required_during_scheduling_ignored_during_execution: required,
            preferred_during_scheduling_ignored_during_execution: preferred,
        }
    });
    let pod_anti_affinity = a.pod_anti_affinity.as_ref().map(|p| {
        let (required, preferred) = pod_affinity_parts(p);
        PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: required,
            preferred_during_scheduling_ignored_during_execution: preferred,
        }
    });
    let out = Affinity { node_affinity, pod_affinity, pod_anti_affinity };
    (out.node_affinity.is_some() || out.pod_affinity.is_some() || out.pod_anti_affinity.is_some())
        .then_some(out)
}

fn helper_arch(node_selector: &BTreeMap<String, String>) -> &'static str {
    match node_selector.get("kubernetes.io/arch").map(String::as_str) {
        Some("arm64") => "arm64",
        Some("arm") => "arm",
        Some("s390x") => "s390x",
        Some("ppc64le") => "ppc64le",
        Some("riscv64") => "riscv64",
        _ => "x86_64",
    }
}

fn ports(list: &[i32]) -> Option<Vec<ContainerPort>> {
    (!list.is_empty()).then(|| {
        list.iter()
            .map(|p| ContainerPort { container_port: *p, ..ContainerPort::default() })
            .collect()
    })
}

fn image_ports(image: &Image) -> Vec<i32> {
    image.ports.iter().map(|p| i32::from(p.number)).collect()
}

/// Builds the pod. See [`crate::build_pod`].
#[allow(clippy::too_many_lines, reason = "one linear assembly, in upstream's order")]
pub(crate) fn build(input: &BuildInput<'_>) -> Result<BuiltPod> {
    let runner = input.runner;
    let job = input.job;
    let k: &KubernetesConfig = runner
        .kubernetes
        .as_ref()
        .ok_or_else(|| Error::NotKubernetes { runner: runner.display_name() })?;
    let raw = &k.raw;
    let mut log: Vec<String> = Vec::new();

    // Identity and directories.
    let token = runner.raw.token.as_deref().unwrap_or_default();
    let short_token = names::short_token(token);
    let project_id = job.job_info.project_id.unwrap_or_default();
    let unique =
        names::project_unique_name(&short_token, project_id, input.identity.project_runner_id);
    let pod_name = names::generated_name(&unique, &input.identity.name_suffix);
    let base_dir = |prefix: Option<&String>, what: &str| {
        let prefix = prefix.map_or("", |p| p.trim_end_matches(['/', '\\']));
        format!("{prefix}/{what}-{project_id}-{}", job.id)
    };
    let builds_dir = runner
        .raw
        .builds_dir
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/builds".to_owned());
    let dirs = Dirs {
        scripts: base_dir(raw.scripts_base_dir.as_ref(), "scripts"),
        logs: base_dir(raw.logs_base_dir.as_ref(), "logs"),
        builds: builds_dir.clone(),
    };
    let project_path = if job.job_info.project_full_path.is_empty() {
        format!("project-{project_id}")
    } else {
        job.job_info.project_full_path.clone()
    };

    // Variables: predefined, the runner's environment, the job's (the last one wins).
    let shared_builds_dir = volumes::shared_builds_dir(raw.volumes.as_ref(), &dirs.builds);
    let project_dir = if shared_builds_dir {
        format!("{builds_dir}/{short_token}/{}/{project_path}", input.identity.project_runner_id)
    } else {
        format!("{builds_dir}/{project_path}")
    };
    // The runner's internal variables, its `environment` and the job's.
    let mut vars = Variables::with_capacity(8 + runner.raw.environment.len() + job.variables.len());
    vars.internal("CI_RUNNER_SHORT_TOKEN", short_token.clone());
    vars.internal("CI_BUILDS_DIR", builds_dir.clone());
    vars.internal("CI_PROJECT_DIR", project_dir.clone());
    vars.internal("CI_CONCURRENT_ID", input.identity.concurrent_id.to_string());
    vars.internal("CI_CONCURRENT_PROJECT_ID", input.identity.project_runner_id.to_string());
    vars.internal("CI_SERVER", "yes");
    vars.internal("CI_DISPOSABLE_ENVIRONMENT", "true");
    vars.environment(&runner.raw.environment);
    let file_dir = format!("{project_dir}.tmp");
    for v in &job.variables {
        vars.job(v, &file_dir);
    }
    let legacy = vars.feature_flag(runner, &upstream::LEGACY_KUBERNETES_EXECUTION_STRATEGY);
    let advanced_spec = vars.feature_flag(runner, &upstream::ADVANCED_POD_SPEC);
    let active_deadline = vars.feature_flag(runner, &upstream::POD_ACTIVE_DEADLINE_SECONDS);
    let attach = !legacy;

    // Namespace and service account.
    let namespace = if raw.namespace_per_job == Some(true) {
        format!("ci-job-{}", job.id)
    } else {
        let overwrite = match vars.get("KUBERNETES_NAMESPACE_OVERWRITE").map(|v| vars.expand(v)) {
            Some(v) if !v.is_empty() => gated(
                "KUBERNETES_NAMESPACE_OVERWRITE",
                &v,
                raw.namespace_overwrite_allowed.as_ref(),
                "namespace_overwrite_allowed",
            )?
            .map(str::to_owned),
            _ => None,
        };
        overwrite
            .or_else(|| raw.namespace.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned())
    };
    let service_account =
        match vars.get("KUBERNETES_SERVICE_ACCOUNT_OVERWRITE").map(|v| vars.expand(v)) {
            Some(v) if !v.is_empty() => gated(
                "KUBERNETES_SERVICE_ACCOUNT_OVERWRITE",
                &v,
                raw.service_account_overwrite_allowed.as_ref(),
                "service_account_overwrite_allowed",
            )?
            .map(str::to_owned),
            _ => None,
        }
        .or_else(|| raw.service_account.clone())
        .filter(|s| !s.is_empty());

    // Node selector (decides the helper's architecture) and tolerations.
    let mut node_selector = raw.node_selector.clone();
    node_selector.extend(map_overwrites(
        &vars,
        "KUBERNETES_NODE_SELECTOR_",
        raw.node_selector_overwrite_allowed.as_ref(),
        "node_selector_overwrite_allowed",
    )?);
    let mut tolerations: Vec<Toleration> =
        raw.node_tolerations.iter().map(|(kv, effect)| toleration(kv, effect)).collect();
    for v in vars.with_prefix("KUBERNETES_NODE_TOLERATIONS_") {
        let value = vars.expand(&v.value);
        if let Some(value) = gated(
            &v.key,
            &value,
            raw.node_tolerations_overwrite_allowed.as_ref(),
            "node_tolerations_overwrite_allowed",
        )? {
            let (kv, effect) = value.split_once(':').unwrap_or((value, ""));
            tolerations.push(toleration(kv, effect));
        }
    }

    // Images.
    let build_image = job
        .image
        .as_ref()
        .map(|i| vars.expand(&i.name))
        .filter(|n| !n.is_empty())
        .or_else(|| raw.image.as_ref().map(|i| vars.expand(i)).filter(|n| !n.is_empty()))
        .ok_or(Error::NoImage)?;
    let config_image = raw.image.as_ref().map(|i| vars.expand(i));
    if config_image.as_deref() != Some(build_image.as_str())
        && !check_allowed(&build_image, &raw.allowed_images, "allowed_images")?
    {
        return Err(Error::ImageNotAllowed {
            image: build_image,
            allowed: raw.allowed_images.clone(),
        });
    }
    let helper_image =
        raw.helper_image.as_ref().map(|i| vars.expand(i)).filter(|i| !i.is_empty()).unwrap_or_else(
            || {
                let flavor =
                    raw.helper_image_flavor.as_deref().filter(|f| !f.is_empty() && *f != "alpine");
                let prefix = flavor.map(|f| format!("{f}-")).unwrap_or_default();
                format!(
                    "{HELPER_IMAGE_REPOSITORY}:{prefix}{}-v{}",
                    helper_arch(&node_selector),
                    input.identity.runner_version
                )
            },
        );
    let job_pull = job.image.as_ref().map_or(&[][..], |i| &i.pull_policy[..]);
    let build_pull = pull_policy(job_pull, k)?;

    // Services: the config's first, then the job's; empty names are skipped.
    let mut services: Vec<ServiceSpec<'_>> = Vec::new();
    for s in &raw.services {
        let image = s.name.as_deref().map(|n| vars.expand(n)).unwrap_or_default();
        if image.is_empty() {
            continue;
        }
        services.push(ServiceSpec {
            image,
            aliases: split_aliases(&vars.expand(s.alias.as_deref().unwrap_or_default())),
            entrypoint: s.entrypoint.clone(),
            command: s.command.clone(),
            ports: Vec::new(),
            variables: s
                .environment
                .iter()
                .filter_map(|e| e.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned(), false))
                .collect(),
            pull_policy: &[],
            user: None,
        });
    }
    for s in &job.services {
        let image = vars.expand(&s.name);
        if image.is_empty() {
            continue;
        }
        services.push(ServiceSpec {
            image,
            aliases: split_aliases(&vars.expand(&s.alias)),
            entrypoint: s.entrypoint.clone(),
            command: s.command.clone(),
            ports: image_ports(s),
            variables: s
                .variables
                .iter()
                .map(|v| (v.key.clone(), v.value.expose_secret().to_owned(), v.masked))
                .collect(),
            pull_policy: &s.pull_policy,
            user: s.executor_opts.kubernetes.as_ref().and_then(|o| o.user.clone()),
        });
    }
    for s in &services {
        if !check_allowed(&s.image, &raw.allowed_services, "allowed_services")? {
            return Err(Error::ServiceNotAllowed {
                image: s.image.clone(),
                allowed: raw.allowed_services.clone(),
            });
        }
    }
    let service_names = service_names(&services);

    // Volumes, security, shared container parts.
    let layout = volumes::layout(raw.volumes.as_ref(), &vars, &dirs, attach, &mut log);
    let default_drop: &[&str] = match input.cluster.helper_os {
        HelperOs::Linux => &["NET_RAW"],
        HelperOs::Windows => &[],
    };
    let lifecycle = lifecycle(raw);
    let lookup = |name: &str| vars.get(name).map(|v| vars.expand(v));
    let shell_command = vec!["sh".to_owned(), "-c".to_owned(), DETECT_SHELL_SCRIPT.to_owned()];
    let job_user = job
        .image
        .as_ref()
        .and_then(|i| i.executor_opts.kubernetes.as_ref())
        .and_then(|o| o.user.as_deref())
        .map(|u| vars.expand(u))
        .filter(|u| !u.is_empty());

    let base = |name: &str, image: String, pull: Option<String>| Container {
        name: name.to_owned(),
        image: Some(image),
        image_pull_policy: pull,
        volume_mounts: Some(layout.mounts.clone()),
        lifecycle: lifecycle.clone(),
        stdin: Some(true),
        ..Container::default()
    };

    let base_env = vars.env();
    // The build container's `env` is `base_env` itself, moved in once the services have copied it.
    let mut build = Container {
        command: Some(shell_command.clone()),
        args: job.image.as_ref().map(|i| i.command.clone()).filter(|c| !c.is_empty()),
        resources: resources::requirements(&resources::build(raw), &lookup)?,
        ports: ports(&job.image.as_ref().map(image_ports).unwrap_or_default()),
        security_context: Some(security::for_container(
            ContainerKind::Build,
            "build",
            k,
            default_drop,
            job_user.as_deref(),
            &mut log,
        )),
        ..base("build", build_image.clone(), build_pull.clone())
    };
    let helper_resources = resources::requirements(&resources::helper(raw), &lookup)?;
    let helper = Container {
        command: Some(shell_command),
        resources: helper_resources.clone(),
        security_context: Some(security::for_container(
            ContainerKind::Helper,
            "helper",
            k,
            default_drop,
            None,
            &mut log,
        )),
        ..base("helper", helper_image.clone(), build_pull.clone())
    };
    // Services share the job's environment; their own variables overlay it (last one wins, a
    // masked one removes the entry), without copying the whole variable set per service.
    let service_settings = resources::service(raw);
    let mut service_containers = Vec::with_capacity(services.len());
    for (s, name) in services.iter().zip(&service_names) {
        let mut env = base_env.clone();
        let mut own: Vec<(&str, String, bool)> = Vec::with_capacity(s.variables.len());
        for (key, value, masked) in &s.variables {
            let value = vars.expand(value);
            let position = env.iter().position(|e| e.name == *key);
            match (position, masked) {
                (Some(i), true) => {
                    env.remove(i);
                }
                (Some(i), false) => env[i].value = Some(value.replace('$', "$$")),
                (None, true) => {}
                (None, false) => env.push(EnvVar {
                    name: key.clone(),
                    value: Some(value.replace('$', "$$")),
                    value_from: None,
                }),
            }
            own.retain(|(k, _, _)| k != key);
            own.push((key, value, *masked));
        }
        let svc_lookup = |n: &str| match own.iter().find(|(k, _, _)| *k == n) {
            Some((_, _, true)) => None,
            Some((_, value, false)) => Some(vars.expand(value)),
            None => lookup(n),
        };
        let user = s.user.as_deref().map(|u| vars.expand(u)).filter(|u| !u.is_empty());
        service_containers.push(Container {
            command: (!s.entrypoint.is_empty()).then(|| s.entrypoint.clone()),
            args: (!s.command.is_empty()).then(|| s.command.clone()),
            env: Some(env).filter(|e| !e.is_empty()),
            resources: resources::requirements(&service_settings, &svc_lookup)?,
            ports: ports(&s.ports),
            security_context: Some(security::for_container(
                ContainerKind::Service,
                name,
                k,
                default_drop,
                user.as_deref(),
                &mut log,
            )),
            ..base(name, s.image.clone(), pull_policy(s.pull_policy, k)?)
        });
    }
    build.env = Some(base_env).filter(|e| !e.is_empty());
    service_containers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut containers = Vec::with_capacity(2 + service_containers.len());
    containers.push(build);
    containers.push(helper);
    containers.extend(service_containers);

    let init_containers = attach.then(|| {
        let logs_file = format!("{}/output.log", dirs.logs);
        vec![Container {
            name: "init-permissions".to_owned(),
            image: Some(helper_image.clone()),
            image_pull_policy: build_pull.clone(),
            command: Some(vec![
                "sh".to_owned(),
                "-c".to_owned(),
                format!("touch {logs_file} && (chmod 777 {logs_file} || exit 0)"),
            ]),
            resources: helper_resources.clone(),
            volume_mounts: Some(layout.mounts.clone()),
            security_context: Some(security::for_container(
                ContainerKind::InitPermissions,
                "init-permissions",
                k,
                default_drop,
                None,
                &mut log,
            )),
            ..Container::default()
        }]
    });

    // Host aliases: services without ports, then the config's.
    let mut host_aliases = Vec::new();
    let mut hostnames: Vec<String> = Vec::new();
    for s in services.iter().filter(|s| s.ports.is_empty()) {
        for h in image_hostnames(&s.image) {
            if !hostnames.contains(&h) {
                hostnames.push(h);
            }
        }
        for alias in &s.aliases {
            if !is_dns1123_subdomain(alias) {
                return Err(Error::InvalidHostAlias {
                    alias: alias.clone(),
                    service: s.image.clone(),
                });
            }
            if !hostnames.contains(alias) {
                hostnames.push(alias.clone());
            }
        }
    }
    if !hostnames.is_empty() {
        host_aliases.push(HostAlias { ip: "127.0.0.1".to_owned(), hostnames: Some(hostnames) });
    }
    host_aliases.extend(
        raw.host_aliases
            .iter()
            .map(|h| HostAlias { ip: h.ip.clone(), hostnames: Some(h.hostnames.clone()) }),
    );

    // Labels and annotations.
    let var = |name: &str| vars.get(name).unwrap_or_default().to_owned();
    let opt_id = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut labels: BTreeMap<String, String> = [
        ("pod", unique.clone()),
        ("project.runner.gitlab.com/id", project_id.to_string()),
        ("project.runner.gitlab.com/namespace-id", var("CI_PROJECT_NAMESPACE_ID")),
        ("project.runner.gitlab.com/name", job.job_info.project_name.clone()),
        ("project.runner.gitlab.com/namespace", var("CI_PROJECT_NAMESPACE")),
        ("project.runner.gitlab.com/root-namespace", var("CI_PROJECT_ROOT_NAMESPACE")),
        ("project.runner.gitlab.com/root-namespace-id", opt_id(job.job_info.root_namespace_id)),
        ("job.runner.gitlab.com/pod", unique.clone()),
        ("manager.runner.gitlab.com/name", runner.raw.name.clone().unwrap_or_default()),
        (names::RUNNER_LABEL, short_token.clone()),
    ]
    .into_iter()
    .chain(input.identity.system_id.clone().map(|id| (names::SYSTEM_ID_LABEL, id)))
    .map(|(k, v)| (k.to_owned(), sanitize_label(&v)))
    .collect();
    let user_labels =
        raw.pod_labels.iter().map(|(k, v)| (k.clone(), v.clone())).chain(map_overwrites(
            &vars,
            "KUBERNETES_POD_LABELS_",
            raw.pod_labels_overwrite_allowed.as_ref(),
            "pod_labels_overwrite_allowed",
        )?);
    for (key, value) in user_labels {
        if is_runner_gitlab_key(&key) {
            continue;
        }
        labels.insert(key, sanitize_label(&vars.expand(&value)));
    }
    let timeout = job.runner_info.timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let mut annotations: BTreeMap<String, String> = [
        (names::JOB_ID_ANNOTATION, job.id.to_string()),
        (
            "job.runner.gitlab.com/url",
            format!("{}/-/jobs/{}", clean_repo_url(&job.git_info.repo_url), job.id),
        ),
        ("job.runner.gitlab.com/sha", job.git_info.sha.clone()),
        ("job.runner.gitlab.com/before_sha", job.git_info.before_sha.clone()),
        ("job.runner.gitlab.com/ref", job.git_info.ref_name.clone()),
        ("job.runner.gitlab.com/name", job.job_info.name.clone()),
        ("job.runner.gitlab.com/timeout", go_duration(timeout)),
        ("project.runner.gitlab.com/id", project_id.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (key, value) in
        raw.pod_annotations.iter().map(|(k, v)| (k.clone(), v.clone())).chain(map_overwrites(
            &vars,
            "KUBERNETES_POD_ANNOTATIONS_",
            raw.pod_annotations_overwrite_allowed.as_ref(),
            "pod_annotations_overwrite_allowed",
        )?)
    {
        annotations.insert(key, vars.expand(&value));
    }

    // Image pull secrets.
    let image_pull_secrets = if raw.use_service_account_image_pull_secrets == Some(true) {
        None
    } else {
        let list: Vec<LocalObjectReference> = raw
            .image_pull_secrets
            .iter()
            .chain(input.identity.credentials_secret.as_ref())
            .map(|n| LocalObjectReference { name: n.clone() })
            .collect();
        (!list.is_empty()).then_some(list)
    };

    let dns_config = raw
        .dns_config
        .as_ref()
        .filter(|d| !(d.nameservers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
        .map(|d| PodDNSConfig {
            nameservers: (!d.nameservers.is_empty()).then(|| d.nameservers.clone()),
            searches: (!d.searches.is_empty()).then(|| d.searches.clone()),
            options: (!d.options.is_empty()).then(|| {
                d.options
                    .iter()
                    .map(|o| PodDNSConfigOption {
                        name: Some(o.name.clone()),
                        value: o.value.clone(),
                    })
                    .collect()
            }),
        });

    let pod_resources = resources::requirements(&resources::pod(raw), &lookup)?;
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let spec = PodSpec {
        volumes: Some(layout.volumes).filter(|v| !v.is_empty()),
        scheduler_name: non_empty(&raw.scheduler_name),
        service_account_name: service_account,
        automount_service_account_token: raw.automount_service_account_token,
        restart_policy: Some("Never".to_owned()),
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        init_containers,
        containers,
        termination_grace_period_seconds: raw.pod_termination_grace_period_seconds,
        active_deadline_seconds: active_deadline
            .then(|| i64::try_from(timeout).unwrap_or(i64::MAX).saturating_add(1)),
        image_pull_secrets,
        security_context: security::pod_context(&k.pod_security_context),
        host_aliases: (!host_aliases.is_empty()).then_some(host_aliases),
        affinity: affinity(raw.affinity.as_ref()),
        dns_policy: k.dns_policy.map(|d| d.as_kubernetes().to_owned()),
        dns_config,
        runtime_class_name: non_empty(&raw.runtime_class_name),
        priority_class_name: non_empty(&raw.priority_class_name),
        resources: pod_resources,
        ..PodSpec::default()
    };

    // pod_spec patches, last, only with the feature flag.
    let spec = if advanced_spec && !raw.pod_spec.is_empty() {
        let patches = raw
            .pod_spec
            .iter()
            .map(|p| patch::resolve(p, input.patch_files))
            .collect::<Result<Vec<_>>>()?;
        log.push("WARNING: Advanced Pod Spec configuration enabled, merging the provided PodSpec to the generated one. This is a beta feature and is subject to change. Feedback is collected in this issue: https://gitlab.com/gitlab-org/gitlab-runner/-/issues/29659 ...".to_owned());
        patch::apply(spec, &patches)?
    } else {
        if !raw.pod_spec.is_empty() {
            log.push("pod_spec patches are configured but FF_USE_ADVANCED_POD_SPEC_CONFIGURATION is off; they are not applied".to_owned());
        }
        spec
    };
    security::check_profiles(&spec)?;
    let report = security::effective_security(&spec);
    for c in report.containers.iter().filter(|c| c.privileged == Some(true)) {
        if c.seccomp.is_some() || c.app_armor.is_some() {
            log.push(format!("container {:?} is privileged: the runtime ignores its seccomp and AppArmor profiles", c.container));
        }
    }

    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    };
    log.extend(version::adapt(&mut pod, input.cluster.kubernetes_minor));
    check_per_job_values(&pod)?;
    let layout = JobLayout {
        scripts_dir: dirs.scripts,
        logs_dir: dirs.logs,
        builds_dir,
        project_dir,
        build_image,
        variables: vars.script_variables(),
    };
    Ok(BuiltPod { pod, security: report, job_log: log, layout })
}

/// The values of the finished pod that may come from a job (an expanded job variable in a config
/// value, a `KUBERNETES_*_OVERWRITE` variable, the job's images) against the API server's and the
/// runtime's rules, as the loader checks config values: a job with a value Kubernetes would
/// refuse fails before anything is created, saying which value and where it comes from.
fn check_per_job_values(pod: &Pod) -> Result<()> {
    use podrunner_config::api_rules::Rule;
    // A template or an example's placeholder is warned about at load; it is sent as written.
    let check = |rule: Rule, what: &str, value: &str, field: String, source_keys: &'static str| {
        if podrunner_config::api_rules::is_placeholder(value) {
            return Ok(());
        }
        match rule.check(what, value) {
            Some(message) => Err(Error::InvalidValue { field, source_keys, message }),
            None => Ok(()),
        }
    };
    let meta = &pod.metadata;
    if let Some(namespace) = &meta.namespace {
        check(
            Rule::Dns1123Label,
            "a namespace",
            namespace,
            "metadata.namespace".to_owned(),
            "namespace or KUBERNETES_NAMESPACE_OVERWRITE",
        )?;
    }
    let Some(spec) = &pod.spec else { return Ok(()) };
    if let Some(account) = spec.service_account_name.as_deref().filter(|a| !a.is_empty()) {
        check(
            Rule::Dns1123Subdomain,
            "a service account name",
            account,
            "spec.serviceAccountName".to_owned(),
            "service_account or KUBERNETES_SERVICE_ACCOUNT_OVERWRITE",
        )?;
    }
    let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
    for c in containers {
        let image = c.image.as_deref().unwrap_or_default();
        check(
            Rule::ImageReference,
            &format!("the image of container {:?}", c.name),
            image,
            format!("container {:?} image", c.name),
            "the job's image or services, image, helper_image or services in the config",
        )?;
    }
    for (key, value) in spec.node_selector.iter().flatten() {
        check(
            Rule::QualifiedName,
            "a node selector key",
            key,
            "spec.nodeSelector".to_owned(),
            "node_selector or KUBERNETES_NODE_SELECTOR_*",
        )?;
        check(
            Rule::LabelValue,
            "a node selector value",
            value,
            format!("spec.nodeSelector[{key:?}]"),
            "node_selector or KUBERNETES_NODE_SELECTOR_*",
        )?;
    }
    for (key, _) in meta.annotations.iter().flatten() {
        check(
            Rule::QualifiedName,
            "a pod annotation key",
            key,
            "metadata.annotations".to_owned(),
            "pod_annotations or KUBERNETES_POD_ANNOTATIONS_*",
        )?;
    }
    for volume in spec.volumes.iter().flatten() {
        if let Some(claim) = &volume.persistent_volume_claim {
            check(
                Rule::Dns1123Subdomain,
                "a persistent volume claim's name",
                &claim.claim_name,
                format!("volume {:?} claimName", volume.name),
                "volumes.pvc name",
            )?;
        }
    }
    Ok(())
}
