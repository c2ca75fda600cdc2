//! Files between the pod and the runner, over exec, with nothing in the helper image but a
//! POSIX shell, `find`, `xargs`, `head`, `tar` (and `git` for untracked files): busybox has
//! them, as upstream's helper image does.
//!
//! - **list**: the project directory's entries, NUL-terminated ([`crate::archive::Listing`]);
//! - **archive**: `tar` of exactly the selected paths (their NUL list arrives on stdin,
//!   `head -c` reads its length, so nothing depends on closing stdin), streamed to the runner,
//!   which writes GitLab's archive itself ([`crate::archive::write_archive`]);
//! - **extract**: the runner streams a tar (made from a downloaded zip) of a length known
//!   beforehand into `head -c <len> | tar -x` in the project directory.
//!
//! Every program is passed whole in the exec's arguments. Stdin is held open until the exec
//! ends: kube closes the whole websocket when stdin is dropped on a connection without the v5
//! protocol's half-close.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// `sh -c LIST podrunner <dir> <untracked 0|1>`.
pub const LIST_PROGRAM: &str = r#"cd "$1" || { echo "cannot enter the directory $1" >&2; exit 2; }
find . -mindepth 1 -type d -print0
printf '|\0'
find . -mindepth 1 ! -type d -print0
printf '|\0'
if [ "$2" = 1 ]; then git ls-files -o -z 2>/dev/null || echo "untracked: git ls-files -o failed" >&2; fi
exit 0
"#;

/// `sh -c ARCHIVE podrunner <dir> <list length>`: the NUL list on stdin, the tar on stdout.
pub const ARCHIVE_PROGRAM: &str = r#"cd "$1" || { echo "cannot enter the directory $1" >&2; exit 2; }
head -c "$2" | xargs -0 -r tar -cf - --no-recursion --
"#;

/// `sh -c EXTRACT podrunner <dir> <tar length>`: the tar on stdin.
pub const EXTRACT_PROGRAM: &str = r#"mkdir -p "$1" && cd "$1" || { echo "cannot enter the directory $1" >&2; exit 2; }
head -c "$2" | tar -xof -
"#;

/// The exec's buffers: kube's default (1 KiB) would cap the throughput.
const BUFFER: usize = 1024 * 1024;

/// How long a transfer may go without a byte either way before it is given up.
pub const TRANSFER_SILENCE_LIMIT: Duration = Duration::from_secs(120);
/// How often the silence is looked at.
const SILENCE_CHECK: Duration = Duration::from_secs(5);

/// `sh -c <program> podrunner <args>...`.
pub fn command(program: &str, args: &[String]) -> Vec<String> {
    let mut out =
        vec!["sh".to_owned(), "-c".to_owned(), program.to_owned(), "podrunner".to_owned()];
    out.extend(args.iter().cloned());
    out
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecEnd {
    /// The program's exit code.
    pub code: i32,
    /// What it printed on stderr (at most 64 KiB).
    pub stderr: String,
}

/// The exit code in an exec's final status (`Success` is 0).
fn exit_code(status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.trim().parse().ok())
}

/// Runs `command` in `container`, copying `stdin` (when given) to the program and its stdout
/// to `stdout`, until the program ends. `Err` is a failed or cut exec, with what is known.
pub async fn exec(
    api: &Api<Pod>,
    pod: &str,
    container: &str,
    command: Vec<String>,
    stdin: Option<&mut (dyn AsyncRead + Send + Unpin)>,
    stdout: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<ExecEnd, String> {
    let params = AttachParams::default()
        .container(container)
        .stdin(stdin.is_some())
        .stdout(true)
        .stderr(true)
        .max_stdin_buf_size(BUFFER)
        .max_stdout_buf_size(BUFFER);
    let mut process = api
        .exec(pod, command, &params)
        .await
        .map_err(|e| format!("exec in container {container:?}: {e}"))?;
    let mut out = process.stdout().ok_or("the exec has no stdout")?;
    let mut err = process.stderr().ok_or("the exec has no stderr")?;
    let mut input =
        if stdin.is_some() { Some(process.stdin().ok_or("the exec has no stdin")?) } else { None };
    let status = process.take_status().ok_or("the exec has no status")?;
    // When a byte last moved either way: an extraction sends for minutes and hears nothing.
    let begun = std::time::Instant::now();
    let moved = std::sync::atomic::AtomicU64::new(0);
    let touch = || {
        let now = u64::try_from(begun.elapsed().as_millis()).unwrap_or(u64::MAX);
        moved.store(now, std::sync::atomic::Ordering::Relaxed);
    };
    let feed = async {
        if let (Some(source), Some(sink)) = (stdin, input.as_mut()) {
            let mut buf = vec![0_u8; 256 * 1024];
            loop {
                let n =
                    source.read(&mut buf).await.map_err(|e| format!("reading the input: {e}"))?;
                if n == 0 {
                    break;
                }
                sink.write_all(&buf[..n]).await.map_err(|e| format!("sending the input: {e}"))?;
                touch();
            }
            sink.flush().await.map_err(|e| format!("sending the input: {e}"))?;
        }
        Ok::<(), String>(())
    };
    let drain = async {
        let mut buf = vec![0_u8; 256 * 1024];
        loop {
            // `read` is cancel-safe: a tick that finds no data loses none.
            let Ok(read) = tokio::time::timeout(SILENCE_CHECK, out.read(&mut buf)).await else {
                let last = Duration::from_millis(moved.load(std::sync::atomic::Ordering::Relaxed));
                if begun.elapsed().saturating_sub(last) > TRANSFER_SILENCE_LIMIT {
                    return Err(format!(
                        "no data moved to or from the pod for {}s",
                        TRANSFER_SILENCE_LIMIT.as_secs()
                    ));
                }
                continue;
            };
            match read {
                Ok(0) => return Ok::<(), String>(()),
                Ok(n) => {
                    stdout
                        .write_all(&buf[..n])
                        .await
                        .map_err(|e| format!("writing the output: {e}"))?;
                    touch();
                }
                Err(e) => return Err(format!("reading the output: {e}")),
            }
        }
    };
    let errors = async {
        let mut text = Vec::new();
        let mut buf = [0_u8; 4096];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if text.len() < 64 * 1024 {
                text.extend_from_slice(&buf[..n]);
            }
        }
        String::from_utf8_lossy(&text).trim_end().to_owned()
    };
    // A program that ended early (a full disk, a missing directory) stops taking its input:
    // its exit status and stderr say why, so a failed send only counts when it ended well.
    let mut fed = Ok(());
    let feed = async {
        fed = feed.await;
        Ok::<(), String>(())
    };
    let ((), (), stderr) = tokio::try_join!(feed, drain, async { Ok(errors.await) })?;
    stdout.flush().await.map_err(|e| format!("writing the output: {e}"))?;
    // stdin stays open until here; the program has ended its output.
    let status = tokio::time::timeout(Duration::from_secs(30), status)
        .await
        .map_err(|_| "the exec sent no status".to_owned())?
        .ok_or_else(|| "the exec's connection was cut (no exit status)".to_owned())?;
    drop(input);
    let code = exit_code(&status).ok_or_else(|| {
        format!(
            "the exec failed: {}",
            status.message.clone().unwrap_or_else(|| status.reason.clone().unwrap_or_default())
        )
    })?;
    if code == 0 {
        fed?;
    }
    Ok(ExecEnd { code, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

    #[test]
    fn exit_codes_come_from_the_status_causes() {
        let ok = Status { status: Some("Success".to_owned()), ..Status::default() };
        assert_eq!(exit_code(&ok), Some(0));
        let failed = Status {
            status: Some("Failure".to_owned()),
            reason: Some("NonZeroExitCode".to_owned()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".to_owned()),
                    message: Some("123".to_owned()),
                    field: None,
                }]),
                ..StatusDetails::default()
            }),
            ..Status::default()
        };
        assert_eq!(exit_code(&failed), Some(123));
        let broken = Status { status: Some("Failure".to_owned()), ..Status::default() };
        assert_eq!(exit_code(&broken), None);
    }

    #[test]
    fn programs_are_passed_whole_with_their_arguments() {
        let c = command(ARCHIVE_PROGRAM, &["/builds/g/p".to_owned(), "42".to_owned()]);
        assert_eq!(&c[..2], ["sh", "-c"]);
        assert_eq!(&c[3..], ["podrunner", "/builds/g/p", "42"]);
    }
}
