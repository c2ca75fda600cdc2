//! The job journal: one file per running job in the state directory, so that a runner process
//! that was killed (SIGKILL, OOM, a node lost) leaves behind what the next one needs to end its
//! jobs in GitLab and clean up after them, instead of GitLab waiting an hour for them.
//!
//! Each file, `job-<id>.json`, holds the runner's name and URL, the job id and token, the
//! system id and pid of the process that ran it, when it started and the job's payload as
//! GitLab sent it. It is written when a job is received (to a temporary file, then renamed: a
//! reader never sees half a file) and removed once the job's final state was reported. Beside
//! it, `job-<id>.checkpoint` is the job log's newest checkpoint (a JSON line, then the trace
//! GitLab may not have yet), saved before the trace up to it is sent: what a later process
//! resumes the job from. The directory is `0700` and the files `0600`: the job token and the
//! payload's variables are secrets, and they never reach the daemon log.
//!
//! Files are renamed into place but not `fsync`ed: they survive the runner process being
//! killed (the page cache stays), not the node losing power.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use podrunner_coordinator::Checkpoint;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

/// The journal's format version (a file of another version is left alone and reported).
const VERSION: u64 = 1;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory or a file in it could not be written or read.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A job that ended but whose final state GitLab did not take (it was unreachable until the
/// retries ran out): what the next start must still send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreported {
    /// `success` or `failed`.
    pub state: String,
    /// The failure reason as it was to be sent.
    pub failure_reason: Option<String>,
    /// The exit code, if any.
    pub exit_code: Option<i32>,
    /// Where the unsent trace (the `job-<id>.trace` file) starts in GitLab's trace.
    pub trace_offset: u64,
}

/// One running job, as saved.
pub struct JournalEntry {
    /// The runner's name (`name` in `config.toml`).
    pub runner: String,
    /// The runner's GitLab URL.
    pub url: String,
    /// The job id.
    pub job_id: u64,
    /// The job token (a secret).
    pub job_token: SecretString,
    /// The system id of the process that ran the job.
    pub system_id: String,
    /// The pid of the process that ran the job.
    pub pid: u32,
    /// When the job was received (Unix seconds).
    pub started_unix: u64,
    /// Set when the job ended and GitLab did not take its final state.
    pub unreported: Option<Unreported>,
    /// The job's payload as GitLab sent it (a secret: it holds the job's variables).
    pub payload: Option<Value>,
}

impl std::fmt::Debug for JournalEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalEntry")
            .field("runner", &self.runner)
            .field("job_id", &self.job_id)
            .field("job_token", &"[MASKED]")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl JournalEntry {
    /// An entry for a job received now by this process.
    pub fn now(
        runner: &str,
        url: &str,
        job_id: u64,
        job_token: SecretString,
        system_id: &str,
        payload: Option<&[u8]>,
    ) -> Self {
        Self {
            runner: runner.to_owned(),
            url: url.to_owned(),
            job_id,
            job_token,
            system_id: system_id.to_owned(),
            pid: std::process::id(),
            started_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            unreported: None,
            payload: payload.and_then(|p| serde_json::from_slice(p).ok()),
        }
    }

    /// Seconds since the job was received.
    pub fn age(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(self.started_unix)
    }

    fn to_json(&self) -> Value {
        let unreported = self.unreported.as_ref().map(|u| {
            json!({
                "state": u.state,
                "failure_reason": u.failure_reason,
                "exit_code": u.exit_code,
                "trace_offset": u.trace_offset,
            })
        });
        json!({
            "unreported": unreported,
            "version": VERSION,
            "runner": self.runner,
            "url": self.url,
            "job_id": self.job_id,
            "job_token": self.job_token.expose_secret(),
            "system_id": self.system_id,
            "pid": self.pid,
            "started_unix": self.started_unix,
            "payload": self.payload,
        })
    }

    fn from_json(value: &Value) -> Option<Self> {
        if value["version"].as_u64() != Some(VERSION) {
            return None;
        }
        let text = |key: &str| value[key].as_str().map(str::to_owned);
        Some(Self {
            runner: text("runner")?,
            url: text("url")?,
            job_id: value["job_id"].as_u64()?,
            job_token: SecretString::from(text("job_token")?),
            system_id: text("system_id").unwrap_or_default(),
            pid: value["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            started_unix: value["started_unix"].as_u64().unwrap_or(0),
            unreported: value["unreported"].as_object().map(|u| Unreported {
                state: u.get("state").and_then(Value::as_str).unwrap_or("failed").to_owned(),
                failure_reason: u.get("failure_reason").and_then(Value::as_str).map(str::to_owned),
                exit_code: u
                    .get("exit_code")
                    .and_then(Value::as_i64)
                    .and_then(|c| i32::try_from(c).ok()),
                trace_offset: u.get("trace_offset").and_then(Value::as_u64).unwrap_or(0),
            }),
            payload: value.get("payload").filter(|p| p.is_object()).cloned(),
        })
    }
}

/// The state directory's job files.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// What [`Journal::entries`] found.
#[derive(Debug, Default)]
pub struct Saved {
    /// Readable entries.
    pub entries: Vec<JournalEntry>,
    /// Files that could not be read, each with why (left in place).
    pub unreadable: Vec<String>,
}

impl Journal {
    /// Opens (and creates, `0700`) the state directory.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`] when the directory cannot be created or made private.
    ///
    /// A directory this process cannot restrict because another user owns it (a Kubernetes
    /// `emptyDir` is root's, mode `2777` with an `fsGroup`) keeps the job files in its
    /// subdirectory `private`, which this process creates and owns (`0700`).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, JournalError> {
        let dir = dir.into();
        let io = |action, path: &Path, source| JournalError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        let private = |path: &Path| -> Result<(), std::io::Error> {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
        };
        match private(&dir) {
            Ok(()) => Ok(Self { dir }),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && dir.is_dir() => {
                let inner = dir.join("private");
                private(&inner).map_err(|e| io("create a private state directory", &inner, e))?;
                Ok(Self { dir: inner })
            }
            Err(e) => Err(io("create and restrict the state directory", &dir, e)),
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, job_id: u64) -> PathBuf {
        self.dir.join(format!("job-{job_id}.json"))
    }

    /// Saves `entry` atomically (`0600`).
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`] when the file cannot be written.
    pub fn record(&self, entry: &JournalEntry) -> Result<(), JournalError> {
        write_private(&self.path(entry.job_id), &self.dir, entry.to_json().to_string().as_bytes())
    }

    fn trace_path(&self, job_id: u64) -> PathBuf {
        self.dir.join(format!("job-{job_id}.trace"))
    }

    /// Keeps a job whose final state GitLab did not take: `trace` (masked, what GitLab did not
    /// acknowledge) in `job-<id>.trace`, then the entry with `unreported` set, so that an entry
    /// that says so always has its trace.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`] when a file cannot be written.
    pub fn record_unreported(
        &self,
        entry: &mut JournalEntry,
        unreported: Unreported,
        trace: &[u8],
    ) -> Result<(), JournalError> {
        write_private(&self.trace_path(entry.job_id), &self.dir, trace)?;
        entry.unreported = Some(unreported);
        self.record(entry)
    }

    fn checkpoint_path(&self, job_id: u64) -> PathBuf {
        self.dir.join(format!("job-{job_id}.checkpoint"))
    }

    /// Saves the job log's newest checkpoint (atomically, `0600`).
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`] when the file cannot be written.
    pub fn save_checkpoint(
        &self,
        job_id: u64,
        checkpoint: &Checkpoint,
    ) -> Result<(), JournalError> {
        let header = json!({
            "offset": checkpoint.offset,
            "crc": checkpoint.crc,
            "in_token": checkpoint.in_token,
            "truncated": checkpoint.truncated,
            "line_start": checkpoint.line_start,
            "position": checkpoint.position,
        });
        let mut bytes = header.to_string().into_bytes();
        bytes.push(b'\n');
        bytes.extend_from_slice(&checkpoint.pending);
        write_private(&self.checkpoint_path(job_id), &self.dir, &bytes)
    }

    /// The job log's newest checkpoint: `Ok(None)` when none was saved, `Err` saying why one
    /// could not be read.
    pub fn checkpoint(&self, job_id: u64) -> Result<Option<Checkpoint>, String> {
        let path = self.checkpoint_path(job_id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let bad = |why: &str| format!("{}: {why}", path.display());
        let split = bytes.iter().position(|b| *b == b'\n').ok_or_else(|| bad("no header line"))?;
        let header: Value =
            serde_json::from_slice(&bytes[..split]).map_err(|e| bad(&e.to_string()))?;
        let number = |key: &str| header[key].as_u64().ok_or_else(|| bad(&format!("no {key}")));
        Ok(Some(Checkpoint {
            offset: number("offset")?,
            crc: u32::try_from(number("crc")?).map_err(|_| bad("crc out of range"))?,
            pending: bytes[split + 1..].to_vec(),
            in_token: header["in_token"].as_bool().unwrap_or(false),
            truncated: header["truncated"].as_bool().unwrap_or(false),
            line_start: header["line_start"].as_bool().unwrap_or(true),
            position: header["position"].clone(),
        }))
    }

    /// The unsent trace of an unreported job (empty when there is none).
    pub fn unsent_trace(&self, job_id: u64) -> Vec<u8> {
        fs::read(self.trace_path(job_id)).unwrap_or_default()
    }

    /// Removes the job's file (nothing when there is none).
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`] when it exists and cannot be removed.
    pub fn forget(&self, job_id: u64) -> Result<(), JournalError> {
        for path in [self.checkpoint_path(job_id), self.trace_path(job_id), self.path(job_id)] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(JournalError::Io { action: "remove", path, source: e });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every saved job, oldest job id first.
    ///
    /// # Errors
    ///
    /// [`JournalError::Io`] when the directory cannot be listed.
    pub fn entries(&self) -> Result<Saved, JournalError> {
        let io = |source| JournalError::Io { action: "list", path: self.dir.clone(), source };
        let mut saved = Saved::default();
        for file in fs::read_dir(&self.dir).map_err(io)? {
            let path = file.map_err(io)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !(name.starts_with("job-") && name.ends_with(".json")) {
                continue;
            }
            let entry = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string())
                })
                .and_then(|value| {
                    JournalEntry::from_json(&value)
                        .ok_or_else(|| format!("not a version {VERSION} job entry"))
                });
            match entry {
                Ok(entry) => saved.entries.push(entry),
                Err(why) => saved.unreadable.push(format!("{}: {why}", path.display())),
            }
        }
        saved.entries.sort_by_key(|e| e.job_id);
        Ok(saved)
    }
}

/// Writes `bytes` to `path` (`0600`) through a temporary file in `dir` and a rename.
fn write_private(path: &Path, dir: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("entry");
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |source| JournalError::Io { action: "write", path: path.to_path_buf(), source };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_survives_a_round_trip_privately_and_is_forgotten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = Journal::open(dir.path().join("state")).expect("open");
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(journal.dir()), 0o700);
        let entry = JournalEntry::now(
            "r1",
            "https://gitlab.example",
            42,
            SecretString::from("glcbt-secret"),
            "s_1",
            Some(br#"{"id": 42, "variables": [{"key": "K", "value": "v", "masked": true}]}"#),
        );
        journal.record(&entry).expect("record");
        journal.record(&entry).expect("a second record replaces the first");
        let file = journal.path(42);
        assert_eq!(mode(&file), 0o600);
        let saved = journal.entries().expect("entries");
        assert!(saved.unreadable.is_empty(), "{:?}", saved.unreadable);
        let [back] = saved.entries.as_slice() else { panic!("one entry: {:?}", saved.entries) };
        assert_eq!((back.runner.as_str(), back.job_id, back.pid), ("r1", 42, std::process::id()));
        assert_eq!(back.job_token.expose_secret(), "glcbt-secret");
        assert!(!format!("{back:?}").contains("glcbt-secret"), "the token never reaches Debug");
        assert_eq!(back.payload.as_ref().map(|p| p["id"].clone()), Some(json!(42)));
        assert!(journal.checkpoint(42).expect("no checkpoint yet").is_none());
        let checkpoint = Checkpoint {
            offset: 10,
            crc: 0xdead_beef,
            pending: b"line\nwith a {\"brace\"}\n".to_vec(),
            in_token: true,
            truncated: false,
            line_start: true,
            position: json!({"stage": "step_script", "offset": 7}),
        };
        journal.save_checkpoint(42, &checkpoint).expect("save");
        assert_eq!(mode(&journal.checkpoint_path(42)), 0o600);
        assert_eq!(journal.checkpoint(42).expect("read"), Some(checkpoint));
        journal.forget(42).expect("forget");
        journal.forget(42).expect("forgetting twice is fine");
        assert!(journal.entries().expect("entries").entries.is_empty());
    }

    #[test]
    fn an_unreadable_file_is_reported_and_left_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = Journal::open(dir.path()).expect("open");
        fs::write(dir.path().join("job-7.json"), "{ half").expect("write");
        fs::write(dir.path().join("job-8.json"), r#"{"version": 99}"#).expect("write");
        fs::write(dir.path().join("notes.txt"), "not ours").expect("write");
        let saved = journal.entries().expect("entries");
        assert!(saved.entries.is_empty());
        assert_eq!(saved.unreadable.len(), 2, "{:?}", saved.unreadable);
        assert!(dir.path().join("job-7.json").exists());
    }
}
