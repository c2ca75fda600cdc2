//! A git server over smart HTTP on loopback, for end-to-end tests: `git http-backend` behind a
//! minimal HTTP/1.1 front that answers each request on its own connection. Like GitLab, it asks
//! for basic authentication and accepts only `gitlab-ci-token:<token>`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const GIT: &str = "/usr/bin/git";
const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// A running server with one repository, `group/demo.git`, whose `main` has one commit.
pub(crate) struct GitServer {
    /// `http://<address>:<port>`.
    pub(crate) base: String,
    /// The commit of `main`.
    pub(crate) sha: String,
    /// Every request line and its status (`GET /group/demo.git/info/refs?... 401`).
    pub(crate) requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(GIT)
        .args([
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl GitServer {
    /// Creates the repository (a `README` with `content`) and serves it on `address` (where the
    /// cluster's pods reach this machine); `token` is the only password accepted.
    pub(crate) async fn start(
        address: std::net::IpAddr,
        content: &str,
        token_of_job: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        git(&work, &["init", "-q"]);
        std::fs::write(work.join("README"), content).expect("write README");
        git(&work, &["add", "README"]);
        git(&work, &["commit", "-q", "-m", "first"]);
        let sha = git(&work, &["rev-parse", "HEAD"]);
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("group")).expect("root");
        git(dir.path(), &["clone", "-q", "--bare", "work", "root/group/demo.git"]);
        let listener = TcpListener::bind((address, 0)).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let token_of_job = Arc::new(token_of_job);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (root, log, token_of_job) =
                    (root.clone(), Arc::clone(&log), Arc::clone(&token_of_job));
                tokio::spawn(async move {
                    let expected = token_of_job().map(|t| {
                        format!("Basic {}", base64(format!("gitlab-ci-token:{t}").as_bytes()))
                    });
                    let _ = serve(stream, &root, expected.as_deref(), &log).await;
                });
            }
        });
        Self { base, sha, requests, task, _dir: dir }
    }
}

async fn serve(
    mut stream: TcpStream,
    root: &PathBuf,
    expected_auth: Option<&str>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        stream.read_exact(&mut body).await?;
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size_line = Vec::new();
            while !size_line.ends_with(b"\r\n") {
                stream.read_exact(&mut byte).await?;
                size_line.push(byte[0]);
            }
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&size_line).trim(), 16).unwrap_or(0);
            let mut chunk = vec![0_u8; size + 2];
            stream.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    if header("authorization").as_deref() != expected_auth || expected_auth.is_none() {
        log.lock().expect("lock").push(format!("{method} {target} 401"));
        stream
            .write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"GitLab\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut child = tokio::process::Command::new(HTTP_BACKEND)
        .env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "gitlab-ci-token")
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding").unwrap_or_default())
        .env("HTTP_GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await?;
    let _ = writer.await;
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.stdout.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (cgi_head, cgi_body) = match split {
        Some((i, n)) => {
            (String::from_utf8_lossy(&out.stdout[..i]).into_owned(), &out.stdout[i + n..])
        }
        None => (String::new(), &out.stdout[..]),
    };
    let mut status = "200 OK".to_owned();
    let mut response = String::new();
    for line in cgi_head.lines() {
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            Some(_) => {
                response.push_str(line.trim_end());
                response.push_str("\r\n");
            }
            None => {}
        }
    }
    log.lock().expect("lock").push(format!("{method} {target} {status}"));
    let head = format!(
        "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
        cgi_body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(cgi_body).await?;
    stream.flush().await
}
