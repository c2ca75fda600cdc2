//! A TCP proxy a test can cut: [`CutProxy::cut`] drops every open connection and stops
//! listening (new connections are refused), [`CutProxy::restore`] listens again on the same
//! port. Put between the runner and the API server, it is an API server that goes away for a
//! while, as during a control-plane rollout. [`CutProxy::lose_response`] makes it forward one
//! matching request and swallow its answer: the API server does the work, the client never hears.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A request whose response the proxy swallows: every needle is in its request line.
#[derive(Default)]
struct LoseResponse {
    needles: Vec<Vec<u8>>,
    remaining: usize,
}

/// A running proxy to one upstream address.
pub(crate) struct CutProxy {
    /// The address clients connect to.
    pub(crate) addr: SocketAddr,
    upstream: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    lose: Arc<Mutex<LoseResponse>>,
    lost: Arc<AtomicUsize>,
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

impl CutProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = Self {
            addr,
            upstream,
            accept: Mutex::new(None),
            connections: Arc::default(),
            lose: Arc::default(),
            lost: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, connections) = (self.upstream, Arc::clone(&self.connections));
        let (lose, lost) = (Arc::clone(&self.lose), Arc::clone(&self.lost));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (lose, lost) = (Arc::clone(&lose), Arc::clone(&lost));
                let forward = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        forward(client, server, &lose, &lost).await;
                    }
                });
                connections.lock().expect("lock").push(forward);
            }
        });
        *self.accept.lock().expect("lock") = Some(task);
    }

    /// Drops every connection and stops listening.
    pub(crate) fn cut(&self) {
        if let Some(task) = self.accept.lock().expect("lock").take() {
            task.abort();
        }
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn restore(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }

    /// The next `count` requests whose request line holds every one of `needles` reach the
    /// API server, which answers; the answer is dropped and the client's connection closed once
    /// the server is done with it.
    pub(crate) fn lose_response(&self, needles: &[&str], count: usize) {
        *self.lose.lock().expect("lock") = LoseResponse {
            needles: needles.iter().map(|n| n.as_bytes().to_vec()).collect(),
            remaining: count,
        };
    }

    /// How many answers were dropped so far.
    pub(crate) fn lost_responses(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

/// How long a server that sent part of a swallowed answer stays quiet before it is complete.
const QUIET: std::time::Duration = std::time::Duration::from_millis(300);

/// Copies both ways. HTTP/1.1 clients send a request only once the previous answer arrived, so
/// every byte the server sends after a matching request belongs to that request's answer.
async fn forward(
    client: TcpStream,
    server: TcpStream,
    lose: &Mutex<LoseResponse>,
    lost: &AtomicUsize,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let swallowing = AtomicBool::new(false);
    let requests = async {
        let mut seen: Vec<u8> = Vec::new();
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !swallowing.load(Ordering::SeqCst) {
                seen.extend_from_slice(&buf[..n]);
                if matches_request_line(&seen, lose) {
                    swallowing.store(true, Ordering::SeqCst);
                    lost.fetch_add(1, Ordering::SeqCst);
                }
                // Keep only the unfinished line: a request line ends at its first CRLF.
                if let Some(end) = seen.windows(2).rposition(|w| w == b"\r\n") {
                    seen.drain(..end + 2);
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let answers = async {
        let mut buf = vec![0_u8; 64 * 1024];
        let mut swallowed = false;
        loop {
            // A kept-alive connection stays open after the answer: once some of the swallowed
            // answer came and the server went quiet, the answer is complete.
            let read = if swallowed {
                match tokio::time::timeout(QUIET, server_read.read(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => break,
                }
            } else {
                server_read.read(&mut buf).await
            };
            let n = match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if swallowing.load(Ordering::SeqCst) {
                swallowed = true;
                continue;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    // The server ending its side ends the connection (the client's is then closed by drop).
    tokio::select! {
        () = async { requests.await; std::future::pending::<()>().await } => {}
        () = answers => {}
    }
}

/// Whether a complete line of `seen` holds every needle, taking one of the remaining losses.
fn matches_request_line(seen: &[u8], lose: &Mutex<LoseResponse>) -> bool {
    let mut lose = lose.lock().expect("lock");
    if lose.remaining == 0 {
        return false;
    }
    let hit = seen.split(|b| *b == b'\n').any(|line| {
        lose.needles.iter().all(|needle| line.windows(needle.len()).any(|w| w == needle))
    });
    if hit {
        lose.remaining -= 1;
    }
    hit
}
