//! A TCP proxy a test can cut: [`CutProxy::cut`] drops every open connection and stops
//! listening (new connections are refused), [`CutProxy::restore`] listens again on the same
//! port. Put between the runner and the API server, it is an API server that goes away for a
//! while, as during a control-plane rollout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy to one upstream address.
pub(crate) struct CutProxy {
    /// The address clients connect to.
    pub(crate) addr: SocketAddr,
    upstream: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
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
        let proxy = Self { addr, upstream, accept: Mutex::new(None), connections: Arc::default() };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, connections) = (self.upstream, Arc::clone(&self.connections));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let forward = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
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
}
