//! A CRI client (runtime and image services) over containerd's Unix socket.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{Error, Result};

/// Both CRI services on one gRPC channel. Cloning is cheap (the channel is shared).
#[derive(Debug, Clone)]
pub struct CriClient {
    /// `runtime.v1.RuntimeService`: sandboxes, containers, exec and attach.
    pub runtime: RuntimeServiceClient<Channel>,
    /// `runtime.v1.ImageService`: image status and pulls.
    pub images: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to a CRI socket. The connection is lazy: the first request opens it.
    pub fn connect(socket: &Path) -> Result<Self> {
        let path: PathBuf = socket.to_path_buf();
        // The URI is a placeholder: every connection goes to the Unix socket.
        let endpoint = Endpoint::try_from("http://[::1]:0")
            .map_err(|source| Error::CriConnect { socket: socket.to_path_buf(), source })?;
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }));
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }
}
