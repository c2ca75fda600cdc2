//! Pod render time: `cargo bench -p podrunner-executor-k8s --bench render` (run by
//! `cargo xtask bench`).
//!
//! Renders the repository's `examples/config.toml` (security contexts on the pod and every
//! container kind, volumes, resources, scheduling) for a job with 5 services and 12 variables,
//! for the newest Kubernetes version and for 1.29 (the AppArmor rewrite). Each sample times a
//! batch of renders; the report gives the median, p10 and p90 per render over all samples, and
//! the same for rendering plus YAML serialisation.
//!
//! Two clocks per render: wall-clock time, and the thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), which leaves out the time other processes held the CPU on a busy
//! machine. The result is dropped inside the timed loop (a render owns its pod until the executor
//! has submitted it, so freeing it is part of the cost). Exits 1 when the median CPU time of a
//! render at the newest version reaches the 50 µs target.
//!
//! The allocator is mimalloc, as in the `runner` binary: with glibc malloc the same renders
//! measured about twice as long (its fastbin consolidation on every larger allocation).
//!
//! Environment: `RENDER_BENCH_SAMPLES` (default 200), `RENDER_BENCH_BATCH` (default 50).
#![allow(clippy::print_stdout, reason = "a bench reports on the terminal")]

use std::{
    hint::black_box,
    process::ExitCode,
    time::{Duration, Instant},
};

use podrunner_config::{LoadOptions, load_str};
use podrunner_coordinator::wire::{Job, decode_json};
use podrunner_executor_k8s::{
    BuildInput, ClusterFacts, PatchFiles, PodIdentity, build_pod, pod_yaml, version,
};

/// The `runner` binary's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TARGET: Duration = Duration::from_micros(50);

const JOB: &str = r#"{
  "id": 9001, "token": "job-token",
  "job_info": {"id": 9001, "name": "integration", "stage": "test", "project_id": 42,
               "project_name": "demo", "project_full_path": "group/demo", "root_namespace_id": 7},
  "git_info": {"repo_url": "https://gitlab.example.com/group/demo.git", "ref": "main",
               "sha": "0123456789abcdef0123456789abcdef01234567", "before_sha": "0000000000000000000000000000000000000000"},
  "runner_info": {"timeout": 3600},
  "variables": [
    {"key": "CI_PROJECT_NAMESPACE", "value": "group", "public": true},
    {"key": "CI_PROJECT_NAMESPACE_ID", "value": "7", "public": true},
    {"key": "CI_PROJECT_ROOT_NAMESPACE", "value": "group", "public": true},
    {"key": "CI_JOB_NAME", "value": "integration", "public": true},
    {"key": "DATABASE_URL", "value": "postgres://postgres@db:5432/test", "public": true},
    {"key": "REDIS_URL", "value": "redis://cache:6379", "public": true},
    {"key": "S3_ENDPOINT", "value": "http://minio:9000", "public": true},
    {"key": "KAFKA_BROKERS", "value": "kafka:9092", "public": true},
    {"key": "SEARCH_URL", "value": "http://search:9200", "public": true},
    {"key": "RUST_LOG", "value": "info", "public": true},
    {"key": "DEPLOY_TOKEN", "value": "s3cr3t-value", "public": false, "masked": true},
    {"key": "KUBECONFIG", "value": "apiVersion: v1", "public": true, "file": true}
  ],
  "steps": [{"name": "script", "script": ["cargo test --locked"], "timeout": 3600, "when": "on_success"}],
  "image": {"name": "rust:1.95", "pull_policy": ["if-not-present"]},
  "services": [
    {"name": "postgres:16", "alias": "db", "variables": [{"key": "POSTGRES_HOST_AUTH_METHOD", "value": "trust", "public": true}]},
    {"name": "redis:7", "alias": "cache"},
    {"name": "minio/minio:latest", "alias": "minio", "command": ["server", "/data"]},
    {"name": "bitnami/kafka:3.7", "alias": "kafka"},
    {"name": "elasticsearch:8.13.0", "alias": "search", "variables": [{"key": "discovery.type", "value": "single-node", "public": true}]}
  ]
}"#;

struct Stats {
    p10: Duration,
    median: Duration,
    p90: Duration,
}

fn stats(mut per_render: Vec<Duration>) -> Stats {
    per_render.sort();
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a short vector, q in [0, 1]"
        )]
        let index = ((per_render.len() - 1) as f64 * q).round() as usize;
        per_render[index]
    };
    Stats { p10: at(0.1), median: at(0.5), p90: at(0.9) }
}

/// This thread's CPU time.
fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(now.tv_sec).unwrap_or_default();
    let nanos = u32::try_from(now.tv_nsec).unwrap_or_default();
    Duration::new(secs, nanos)
}

/// Wall-clock and thread-CPU statistics per call of `f`, over `samples` batches of `batch`.
fn measure(samples: usize, batch: u32, mut f: impl FnMut()) -> (Stats, Stats) {
    for _ in 0..batch * 4 {
        f();
    }
    let mut wall = Vec::with_capacity(samples);
    let mut cpu = Vec::with_capacity(samples);
    for _ in 0..samples {
        let cpu_start = thread_cpu_time();
        let start = Instant::now();
        for _ in 0..batch {
            f();
        }
        wall.push(start.elapsed() / batch);
        cpu.push(thread_cpu_time().saturating_sub(cpu_start) / batch);
    }
    (stats(wall), stats(cpu))
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|v| *v > 0).unwrap_or(default)
}

fn main() -> ExitCode {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/config.toml");
    let text = std::fs::read_to_string(path).expect("examples/config.toml is readable");
    let loaded = load_str(&text, LoadOptions::default());
    let config = loaded.config.expect("examples/config.toml loads without errors");
    let runner = &config.runners[0];
    let job: Job = decode_json(JOB.as_bytes()).expect("the bench job decodes");
    assert_eq!(job.services.len(), 5);
    let identity = PodIdentity::default();
    let patch_files = PatchFiles::new();
    let samples = env_number("RENDER_BENCH_SAMPLES", 200) as usize;
    let batch = env_number("RENDER_BENCH_BATCH", 50);

    let input = |minor| BuildInput {
        runner,
        job: &job,
        cluster: ClusterFacts { kubernetes_minor: minor, ..ClusterFacts::default() },
        identity: &identity,
        patch_files: &patch_files,
    };
    let check = build_pod(&input(version::MAX_MINOR)).expect("the bench pod builds");
    let containers = check.pod.spec.as_ref().map_or(0, |s| s.containers.len());
    assert_eq!(containers, 7, "build, helper and 5 services");

    let latest = input(version::MAX_MINOR);
    let old = input(29);
    let report = |name: &str, (wall, cpu): &(Stats, Stats)| {
        for (clock, s) in [("wall", wall), ("CPU", cpu)] {
            println!(
                "{name:<36} {clock:<4} median {:>9.2?}  p10 {:>9.2?}  p90 {:>9.2?}",
                s.median, s.p10, s.p90
            );
        }
    };
    println!(
        "render bench: examples/config.toml, job with 5 services ({samples} samples x {batch} renders)"
    );
    let render_latest = measure(samples, batch, || {
        black_box(build_pod(black_box(&latest)).expect("builds"));
    });
    report("render (1.37)", &render_latest);
    let render_old = measure(samples, batch, || {
        black_box(build_pod(black_box(&old)).expect("builds"));
    });
    report("render (1.29, AppArmor annotations)", &render_old);
    let with_yaml = measure(samples, batch, || {
        let built = build_pod(black_box(&latest)).expect("builds");
        black_box(pod_yaml(&built.pod).expect("serialises"));
    });
    report("render + YAML (1.37)", &with_yaml);
    let median = render_latest.1.median;
    if median >= TARGET {
        println!(
            "FAIL: median CPU time per render {median:.2?} is not under the {TARGET:?} target"
        );
        return ExitCode::from(1);
    }
    println!("ok: median CPU time per render {median:.2?} is under the {TARGET:?} target");
    ExitCode::SUCCESS
}
