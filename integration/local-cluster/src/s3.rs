//! An S3-compatible server on localhost for the cache tests: moto's server mode (an S3
//! implementation by others, from PyPI; `scripts/install-prereqs.sh` puts it in `.venv-s3`),
//! with one bucket. It does not check signatures, so any key pair signs for it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server. Stopped when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub address: SocketAddr,
    /// The bucket created at start.
    pub bucket: String,
}

/// The `moto_server` program: `$MOTO_SERVER`, the project's `.venv-s3`, or `PATH`.
pub fn moto_server() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-s3/bin/moto_server");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|d| d.join("moto_server")).find(|p| p.is_file())
    })
}

/// Why the S3 server cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    moto_server().is_none().then(|| {
        "needs moto's S3 server (run scripts/install-prereqs.sh: it installs moto[server] into .venv-s3)".to_owned()
    })
}

impl S3Server {
    /// Starts moto on a free port and creates `bucket`.
    ///
    /// # Errors
    ///
    /// moto missing, not answering within 30 s, or refusing the bucket.
    pub async fn start(bucket: &str) -> Result<Self, String> {
        let program = moto_server().ok_or_else(|| missing().unwrap_or_default())?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("failed to start {}: {e}", program.display()))?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let server = Self { child, address, bucket: bucket.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(address).await.is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen on {address} within 30 s",
                    program.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.request("PUT", &format!("/{bucket}"))?;
        Ok(server)
    }

    /// One plain HTTP/1.1 request (moto takes unsigned ones); the status code.
    fn request(&self, method: &str, path: &str) -> Result<u16, String> {
        use std::io::{Read as _, Write as _};
        let mut stream = TcpStream::connect(self.address).map_err(|e| e.to_string())?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.address
        )
        .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP answer: {response:?}"))?;
        if status >= 300 {
            return Err(format!("{method} {path}: {response}"));
        }
        Ok(status)
    }

    /// The object names in the bucket (a `ListObjectsV2` of it).
    ///
    /// # Errors
    ///
    /// The server's answer could not be had.
    pub fn keys(&self) -> Result<Vec<String>, String> {
        use std::io::{Read as _, Write as _};
        let mut stream = TcpStream::connect(self.address).map_err(|e| e.to_string())?;
        write!(
            stream,
            "GET /{}?list-type=2 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.bucket, self.address
        )
        .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
        Ok(response
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect())
    }

    /// The `[runners.cache]` table of a runner using this server.
    pub fn cache_config(&self, path: &str) -> String {
        format!(
            "[runners.cache]\nType = \"s3\"\nPath = \"{path}\"\n[runners.cache.s3]\nServerAddress = \"{}\"\nBucketName = \"{}\"\nBucketLocation = \"us-east-1\"\nInsecure = true\nAccessKey = \"podrunner-test\"\nSecretKey = \"podrunner-test-secret\"\n",
            self.address, self.bucket
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
