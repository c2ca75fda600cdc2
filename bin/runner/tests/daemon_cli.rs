//! The `runner run`, `verify` and `list` binaries against `podrunner-coordinator-mock`: exit
//! codes, refusals, signals and reloads as a user sees them.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use podrunner_coordinator_mock::{MockCoordinator, MockJob};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(20);

fn runner_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runner"));
    for var in ["CONFIG_FILE", "RUNNER_LOG_LEVEL", "RUNNER_LOG_FORMAT", "RUNNER_STRICT_CONFIG"] {
        c.env_remove(var);
    }
    c.kill_on_drop(true);
    c
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with_env(args, &[]).await
    }

    async fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = runner_bin();
        c.args(args).arg("--config").arg(self.path()).envs(env.iter().copied());
        tokio::time::timeout(WAIT, c.output())
            .await
            .expect("the command ends in time")
            .expect("the binary runs")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

/// A port that refuses connections for as long as the socket lives: bound, never listening, so
/// no other test's listener can take it meanwhile.
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let port = socket.local_addr().expect("local address").port();
    (socket, port)
}

async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.ok()?;
    raw.split(' ').nth(1)?.parse().ok()
}

/// A running `runner run` with its stderr collected as it arrives.
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(config: &Path, log_format: &str) -> Self {
        let mut child = runner_bin()
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(["--config-poll-interval", "200ms", "--log-format", log_format])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runner run");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut s = sink.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { child, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    async fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the daemon is running").to_string();
        let status =
            std::process::Command::new("kill").args(["-s", name, &pid]).status().expect("run kill");
        assert!(status.success(), "kill -s {name} {pid}");
    }

    async fn wait_healthy(&self, port: u16) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if http_status(port, "/health").await == Some(200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the daemon never became healthy; log:\n{}", self.log());
    }

    async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the daemon exits in time")
            .expect("wait for the daemon")
            .code()
    }
}

fn two_runners(mock: &MockCoordinator) -> String {
    format!(
        "[[runners]]\nname = \"good\"\nurl = \"{url}\"\ntoken = \"{token}\"\nexecutor = \"kubernetes\"\n\
         [[runners]]\nname = \"bad\"\nurl = \"{url}\"\ntoken = \"glrt-not-a-known-token\"\nexecutor = \"kubernetes\"\n",
        url = mock.url(),
        token = mock.runner_token()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_prints_each_runner_and_exits_1_when_any_token_is_invalid() {
    let mock = MockCoordinator::start().await;
    let setup = Setup::new(&two_runners(&mock));
    let out = setup.run(&["verify"]).await;
    assert_eq!(
        text(&out.stdout),
        "good: valid\nbad: invalid (GitLab answered 403: the token is not valid)\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(mock.verify_calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_exits_0_when_every_token_is_valid_and_expands_the_token_from_the_environment() {
    let mock = MockCoordinator::start().await;
    let setup = Setup::new(&format!(
        "[[runners]]\nname = \"env\"\nurl = \"{}\"\ntoken = \"$MY_RUNNER_TOKEN\"\nexecutor = \"kubernetes\"\n",
        mock.url()
    ));
    let out = setup.run_with_env(&["verify"], &[("MY_RUNNER_TOKEN", mock.runner_token())]).await;
    assert_eq!(text(&out.stdout), "env: valid\n", "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_an_unreachable_coordinator_as_invalid() {
    let (_held, port) = refusing_port();
    let setup = Setup::new(&format!(
        "[[runners]]\nname = \"gone\"\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"t\"\nexecutor = \"kubernetes\"\n"
    ));
    let out = setup.run(&["verify"]).await;
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("gone: invalid (GitLab could not be reached: "), "{stdout}");
    assert!(stdout.contains("Connection refused"), "the cause is named: {stdout}");
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_name_url_executor_and_a_token_that_is_never_whole() {
    let tokens = ["glrt-0123456789abcdefghij", "abc", "x"];
    let mut config = String::new();
    for (i, token) in tokens.iter().enumerate() {
        config.push_str(&format!(
            "[[runners]]\nname = \"r{i}\"\nurl = \"https://gitlab.example.com\"\ntoken = \"{token}\"\nexecutor = \"kubernetes\"\n"
        ));
    }
    let setup = Setup::new(&config);
    let out = setup.run(&["list"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stdout.starts_with(
            "r0\tExecutor=kubernetes\tToken=01234567…\tURL=https://gitlab.example.com\n"
        ),
        "{stdout}"
    );
    for token in tokens {
        assert!(!stdout.contains(&format!("Token={token}")), "whole token {token:?} in {stdout}");
    }
    assert!(!stdout.contains("0123456789abcdefghij"));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_every_runner_it_cannot_serve_naming_the_runner_the_file_and_the_executor() {
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(&MockJob::new("must-not-be-taken"));
    let setup = Setup::new(&format!(
        "[[runners]]\nname = \"good\"\nurl = \"{url}\"\ntoken = \"{token}\"\nexecutor = \"kubernetes\"\n\
         [[runners]]\nname = \"dock\"\nurl = \"{url}\"\ntoken = \"t\"\nexecutor = \"docker\"\n\
         [[runners]]\nname = \"sh\"\nurl = \"{url}\"\ntoken = \"t\"\nexecutor = \"shell\"\n",
        url = mock.url(),
        token = mock.runner_token()
    ));
    let out = setup.run(&["run"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = setup.path().display().to_string();
    assert!(
        stderr.contains(&format!(
            "error: runner \"dock\" (runners[1] in {file}) uses executor \"docker\", which this runner does not support"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("runner \"sh\" (runners[2]"), "every runner is named: {stderr}");
    assert!(!stderr.contains("runner \"good\""), "the kubernetes runner is servable: {stderr}");
    assert_eq!(mock.job_request_calls(), 0, "no job was requested: one bad runner stops the start");
    assert_eq!(job.state(), podrunner_coordinator_mock::JobState::Pending);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_unknown_and_missing_executors() {
    let setup = Setup::new(
        "[[runners]]\nname = \"dock\"\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\nexecutor = \"docker\"\n\
         [[runners]]\nname = \"none\"\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\n",
    );
    let out = setup.run(&["run"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("runner \"dock\" (runners[0] in "), "{stderr}");
    assert!(stderr.contains("uses executor \"docker\", which this runner does not support"));
    assert!(
        stderr.contains("runner \"none\" (runners[1] in ") && stderr.contains("has no executor")
    );
    // The config check's own warning, with its location, comes first.
    assert!(stderr.contains("config.toml:5:12: warning: executor \"docker\""), "{stderr}");
    // A refused start leaves nothing behind next to the config.
    assert!(!setup.dir.path().join(".runner_system_id").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn run_with_a_bad_config_exits_1_with_located_diagnostics() {
    let setup = Setup::new("concurrent = 0\nlog_format = \"yaml\"\n");
    let out = setup.run(&["run"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("config.toml:1:14: error: concurrent must be at least 1"), "{stderr}");
    assert!(stderr.contains("config.toml:2:14: error: invalid log_format \"yaml\""), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_of_a_missing_file_exits_2() {
    let setup = Setup::new("");
    std::fs::remove_file(setup.path()).expect("remove");
    let out = setup.run(&["run"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("failed to read config"));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_serves_health_and_metrics_and_stops_cleanly_on_sigterm() {
    let port = free_port();
    let setup =
        Setup::new(&format!("listen_address = \"127.0.0.1:{port}\"\nshutdown_timeout = 5\n"));
    let mut daemon = Daemon::start(&setup.path(), "text");
    daemon.wait_healthy(port).await;
    assert_eq!(http_status(port, "/metrics").await, Some(200));
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, Some(0), "log:\n{}", daemon.log());
    let id = std::fs::read_to_string(setup.dir.path().join(".runner_system_id"))
        .expect("a started daemon saves its system id next to the config");
    assert!(id.starts_with("s_") && id.trim_end().len() == 14, "{id:?}");
    let log = daemon.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("runner stopped"), "{log}");
    assert!(log.contains("jobs.reported=0"), "the outcome is in fields: {log}");
    assert!(!log.contains("Report {"), "no Debug dump of a report struct: {log}");
}

#[tokio::test]
async fn version_names_the_release_and_the_commit_and_help_shows_bare_env_names() {
    let out = runner_bin().arg("--version").output().await.expect("the binary runs");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let expected_prefix = format!("runner {} (", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected_prefix) && version.ends_with(')'), "{version}");
    assert_ne!(env!("CARGO_PKG_VERSION"), "0.0.0");
    let commit = &version[expected_prefix.len()..version.len() - 1];
    assert!(
        commit == "unknown" || (commit.len() == 8 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{version}"
    );
    for command in ["run", "check-config", "render-pod", "verify", "list"] {
        let help = runner_bin().args([command, "--help"]).output().await.expect("the binary runs");
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("[env: RUNNER_"), "{command}: {help}");
        assert!(!help.contains("=]"), "{command} help shows an empty env value: {help}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_also_stops_the_daemon_cleanly() {
    let port = free_port();
    let setup = Setup::new(&format!("listen_address = \"127.0.0.1:{port}\"\n"));
    let mut daemon = Daemon::start(&setup.path(), "text");
    daemon.wait_healthy(port).await;
    daemon.signal("INT");
    assert_eq!(daemon.exit_code().await, Some(0), "log:\n{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_reload_keeps_the_daemon_running_and_logs_located_diagnostics() {
    let port = free_port();
    let setup = Setup::new(&format!("listen_address = \"127.0.0.1:{port}\"\n"));
    let mut daemon = Daemon::start(&setup.path(), "json");
    daemon.wait_healthy(port).await;

    // SIGHUP with a syntax error.
    std::fs::write(setup.path(), format!("listen_address = \"127.0.0.1:{port}\"\nconcurrent = \n"))
        .expect("write");
    daemon.signal("HUP");
    assert!(daemon.wait_log("config reload refused").await, "log:\n{}", daemon.log());
    assert!(daemon.log().contains("config.toml:2:"), "located diagnostics: {}", daemon.log());
    assert_eq!(http_status(port, "/health").await, Some(200), "still running");

    // A changed file (noticed by the poll) with a runner this build cannot serve.
    std::fs::write(
        setup.path(),
        format!(
            "listen_address = \"127.0.0.1:{port}\"\n[[runners]]\nname = \"k\"\nurl = \"http://127.0.0.1:1\"\ntoken = \"t\"\nexecutor = \"docker\"\n"
        ),
    )
    .expect("write");
    assert!(daemon.wait_log("which this runner does not support").await, "{}", daemon.log());
    assert_eq!(http_status(port, "/health").await, Some(200), "still running");
    // Every log line is JSON.
    for line in daemon.log().lines() {
        assert!(line.starts_with('{') && line.ends_with('}'), "not JSON: {line}");
    }

    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, Some(0), "log:\n{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_reload_applies_the_new_log_level() {
    let port = free_port();
    let setup =
        Setup::new(&format!("listen_address = \"127.0.0.1:{port}\"\nlog_level = \"warn\"\n"));
    let mut daemon = Daemon::start(&setup.path(), "text");
    daemon.wait_healthy(port).await;
    assert!(!daemon.log().contains("runner started"), "info is filtered at warn: {}", daemon.log());
    std::fs::write(
        setup.path(),
        format!("listen_address = \"127.0.0.1:{port}\"\nlog_level = \"info\"\n"),
    )
    .expect("write");
    daemon.signal("HUP");
    assert!(daemon.wait_log("config reloaded").await, "log:\n{}", daemon.log());
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, Some(0), "log:\n{}", daemon.log());
    assert!(daemon.log().contains("runner stopped"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubernetes_runner_whose_cluster_is_unreachable_requests_no_job_and_says_why() {
    let mock = MockCoordinator::start().await;
    let job = mock.enqueue(&MockJob::new("must-wait"));
    let (_held, closed) = refusing_port();
    let setup = Setup::new(&format!(
        "check_interval = 1\n[[runners]]\nname = \"k8s\"\nurl = \"{}\"\ntoken = \"{}\"\nexecutor = \"kubernetes\"\n\
         [runners.kubernetes]\nhost = \"http://127.0.0.1:{closed}\"\n",
        mock.url(),
        mock.runner_token()
    ));
    let mut daemon = Daemon::start(&setup.path(), "text");
    assert!(daemon.wait_log("not requesting jobs").await, "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains(&format!("127.0.0.1:{closed}")), "the address is named: {log}");
    assert!(log.contains("runner.name=k8s"), "the runner is named: {log}");
    assert_eq!(mock.job_request_calls(), 0, "no job was requested");
    assert_eq!(job.state(), podrunner_coordinator_mock::JobState::Pending);
    daemon.signal("TERM");
    assert_eq!(daemon.exit_code().await, Some(0), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_and_list_take_a_log_level() {
    let mock = MockCoordinator::start().await;
    let setup = Setup::new(&two_runners(&mock));
    let quiet = setup.run(&["verify"]).await;
    assert!(!text(&quiet.stderr).contains("DEBUG"), "info by default: {}", text(&quiet.stderr));
    let debug = setup.run(&["verify", "--log-level", "debug"]).await;
    let stderr = text(&debug.stderr);
    assert!(stderr.contains("DEBUG") && stderr.contains("coordinator response"), "{stderr}");
    assert_eq!(text(&debug.stdout), text(&quiet.stdout), "stdout is the same");
    let list = setup.run(&["list", "--log-level", "warn"]).await;
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
}
