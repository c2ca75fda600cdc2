//! The cluster's processes: each component a child process with its own log file, stopped by
//! PID; containerd and the kubelet inside one private mount namespace (shared propagation in
//! it, as kind's node has, without changing the machine's `/`), so every mount they make ends
//! with the namespace.

use std::{
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use super::Error;

/// A running component.
#[derive(Debug)]
pub(crate) struct Component {
    /// Its name (`kube-apiserver`).
    pub(crate) name: &'static str,
    /// The command line, for error messages.
    pub(crate) command: String,
    /// Its log (stdout and stderr).
    pub(crate) log: PathBuf,
    child: Option<Child>,
    /// What [`Component::start_again`] runs.
    program: PathBuf,
    args: Vec<OsString>,
    log_dir: PathBuf,
    mount_ns: Option<u32>,
}

impl Component {
    /// Starts `program` with `args`, its output in `<log_dir>/<name>.log`; inside the mount
    /// namespace of process `mount_ns` when given.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[OsString],
        log_dir: &Path,
        mount_ns: Option<u32>,
    ) -> Result<Self, Error> {
        let log = log_dir.join(format!("{name}.log"));
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| Error::io("create", &log, source))?;
        let err = out.try_clone().map_err(|source| Error::io("open", &log, source))?;
        let mut command = match mount_ns {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--mount=/proc/{pid}/ns/mnt")).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        };
        command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        let line = std::iter::once(program.as_os_str())
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let child = command.spawn().map_err(|source| Error::Spawn {
            component: name,
            command: line.clone(),
            source,
        })?;
        tracing::debug!(component = name, process.pid = child.id(), "started");
        Ok(Self {
            name,
            command: line,
            log,
            child: Some(child),
            program: program.to_path_buf(),
            args: args.to_vec(),
            log_dir: log_dir.to_path_buf(),
            mount_ns,
        })
    }

    /// Starts it again with the same command line (after [`Component::stop`]); its log goes on.
    pub(crate) fn start_again(&mut self) -> Result<(), Error> {
        if self.child.is_some() {
            return Ok(());
        }
        let again =
            Self::spawn(self.name, &self.program, &self.args, &self.log_dir, self.mount_ns)?;
        *self = again;
        Ok(())
    }

    /// Whether it was stopped on purpose (and not started again).
    pub(crate) fn is_stopped(&self) -> bool {
        self.child.is_none()
    }

    /// Its PID while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An error if it has exited (naming it, its command and the end of its log).
    pub(crate) fn check_running(&mut self) -> Result<(), Error> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.exited("was stopped".to_owned()));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(format!("exited with {status}"))),
            Err(source) => Err(Error::io("wait for", &self.log, source)),
        }
    }

    fn exited(&self, how: String) -> Error {
        Error::Exited {
            component: self.name,
            how,
            command: self.command.clone(),
            log: log_tail(&self.log),
        }
    }

    /// The error for "not ready in time".
    pub(crate) fn not_ready(&self, waited: Duration, what: String) -> Error {
        Error::NotReady {
            component: self.name,
            seconds: waited.as_secs(),
            what,
            command: self.command.clone(),
            log: log_tail(&self.log),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. Idempotent.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        signal("TERM", &[child.id()]);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                tracing::debug!(component = self.name, "stopped");
                return;
            }
            pause(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        tracing::debug!(component = self.name, "killed");
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// The process that holds the cluster's mount namespace: `unshare --mount` with `/` made
/// recursively shared inside it, then sleeping until it is killed.
#[derive(Debug)]
pub(crate) struct MountNamespace {
    child: Option<Child>,
}

impl MountNamespace {
    /// Creates the namespace and waits until it is ready.
    pub(crate) fn create() -> Result<Self, Error> {
        let script = "mount --make-rshared / && echo ready && exec sleep 2147483647";
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "unchanged", "--", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                component: "mount namespace",
                command: format!("unshare --mount -- sh -c '{script}'"),
                source,
            })?;
        let ready = child.stdout.take().is_some_and(first_line_is_ready);
        if !ready {
            let _ = child.kill();
            let output = child.wait_with_output().ok();
            return Err(Error::Exited {
                component: "mount namespace",
                how: "did not start".to_owned(),
                command: format!("unshare --mount -- sh -c '{script}'"),
                log: output
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default(),
            });
        }
        Ok(Self { child: Some(child) })
    }

    /// The PID whose `/proc/<pid>/ns/mnt` is the namespace.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Ends the namespace (once nothing else is in it, its mounts go with it).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MountNamespace {
    fn drop(&mut self) {
        self.stop();
    }
}

fn first_line_is_ready(stdout: ChildStdout) -> bool {
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).is_ok() && line.trim() == "ready"
}

/// Sends `SIG<name>` to `pids` with `kill(1)` (the crate forbids `unsafe`, so no `libc::kill`).
pub(crate) fn signal(name: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let mut kill = Command::new("kill");
    kill.arg(format!("-{name}"));
    kill.args(pids.iter().map(u32::to_string));
    if let Err(error) = kill.stdout(Stdio::null()).stderr(Stdio::null()).status() {
        tracing::warn!(%error, "failed to run kill");
    }
}

/// The last 3 KiB of a log.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(3072);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// Blocks the thread (stopping runs from `Drop`, outside any async context).
#[allow(clippy::disallowed_methods, reason = "stopping runs from Drop, outside async code")]
pub(crate) fn pause(duration: Duration) {
    std::thread::sleep(duration);
}
