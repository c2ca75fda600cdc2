//! The node half of the local cluster: a private containerd ([`containerd`]), images built
//! without a registry ([`images`]) and a kubelet-like agent ([`agent::NodeAgent`]) that runs pods
//! through CRI and implements [`crate::contract::NodeRuntime`].
//!
//! [`LocalNode::start`] assembles all of it under one directory:
//!
//! ```text
//! <dir>/containerd/   the daemon's config, root, state, socket and log
//! <dir>/seccomp/      the seccomp root: Localhost profiles resolve to <dir>/seccomp/<localhostProfile>
//! <dir>/pods/<uid>/   per-pod volumes (emptyDir, secret, configMap, …)
//! <dir>/logs/         CRI container logs: <ns>_<name>_<uid>/<container>/0.log
//! ```
//!
//! Only `restartPolicy: Never` is implemented: containers are never restarted, whatever the
//! pod's policy says.

pub mod agent;
pub mod containerd;
pub mod cri;
pub mod images;
mod link;

mod env;
mod security;
mod status;
mod volumes;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

pub use agent::{NodeAgent, NodeConfig};
pub use containerd::{Containerd, ContainerdConfig};
pub(crate) use containerd::{descendants, processes};
pub use cri::CriClient;
pub use images::{
    BUSYBOX_IMAGE, BuiltImage, HELPER_IMAGE, PAUSE_IMAGE, RUNNER_UID, build_images,
    build_runner_image, import_images, import_images_with,
};

/// Errors of the node half.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A helper program could not be started.
    #[error("failed to run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A required tool or file is missing on this machine.
    #[error("missing prerequisite: {what}")]
    Prerequisite {
        /// What is missing.
        what: String,
    },
    /// The CRI endpoint could not be set up.
    #[error("failed to set up a CRI connection to {socket}")]
    CriConnect {
        /// The socket path.
        socket: PathBuf,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// A CRI call failed.
    #[error("CRI {operation} failed: {message}")]
    Cri {
        /// The CRI method.
        operation: &'static str,
        /// The runtime's message.
        message: String,
    },
    /// The containerd socket path exceeds the kernel's limit.
    #[error(
        "containerd socket path is too long (max 101 bytes, 107 with its .ttrpc suffix): {path}"
    )]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// containerd did not come up.
    #[error("failed to start containerd: {reason}; containerd log:\n{log}")]
    ContainerdStart {
        /// Why.
        reason: String,
        /// The tail of containerd's log.
        log: String,
    },
    /// `ctr images import` failed.
    #[error("failed to import image {image}: {message}")]
    ImageImport {
        /// The image name.
        image: String,
        /// ctr's stderr.
        message: String,
    },
    /// An import thread panicked.
    #[error("an image import thread panicked")]
    ImportPanicked,
    /// JSON encoding failed.
    #[error("failed to encode JSON")]
    Json {
        /// The cause.
        source: serde_json::Error,
    },
}

impl Error {
    /// A stable label for metrics and test output.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Spawn { .. } => "spawn",
            Self::Prerequisite { .. } => "prerequisite",
            Self::CriConnect { .. } => "cri_connect",
            Self::Cri { .. } => "cri",
            Self::SocketPathTooLong { .. } => "socket_path_too_long",
            Self::ContainerdStart { .. } => "containerd_start",
            Self::ImageImport { .. } => "image_import",
            Self::ImportPanicked => "import_panicked",
            Self::Json { .. } => "json",
        }
    }
}

/// Result type of the node half.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The example seccomp profiles shipped in `profiles/`, as (relative path, JSON).
pub const EXAMPLE_PROFILES: &[(&str, &str)] = &[
    ("profiles/deny-mkdir.json", include_str!("../../profiles/deny-mkdir.json")),
    ("profiles/audit.json", include_str!("../../profiles/audit.json")),
];

/// Writes [`EXAMPLE_PROFILES`] under a seccomp root (creating directories).
pub fn install_example_profiles(seccomp_root: &Path) -> Result<()> {
    for (rel, json) in EXAMPLE_PROFILES {
        let path = seccomp_root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                action: "create the seccomp root",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&path, json).map_err(|source| Error::Io {
            action: "write a seccomp profile",
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Options for [`LocalNode::start`].
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Everything of this node lives here (see the module doc). Keep the path short: the
    /// path `<dir>/containerd/containerd.sock.ttrpc` must fit in 107 bytes.
    pub dir: PathBuf,
    /// Where image archives are cached across runs (e.g. `target/local-cluster/images`).
    pub image_cache: PathBuf,
    /// The node's name (`spec.nodeName` of its pods).
    pub node_name: String,
}

/// Measured start-up phases of a [`LocalNode`].
#[derive(Debug, Clone, Copy)]
pub struct StartupTimings {
    /// Building or reusing the image archives.
    pub images_built: Duration,
    /// Spawning containerd until CRI answers `Version`.
    pub containerd_ready: Duration,
    /// `ctr images import` of the busybox and sandbox images (in parallel). The helper image is
    /// imported in the background after start; image checks wait for it.
    pub images_imported: Duration,
    /// Everything.
    pub total: Duration,
}

/// A ready node: containerd running with the images imported, and an agent bound to it.
#[derive(Debug)]
pub struct LocalNode {
    containerd: Containerd,
    agent: Arc<NodeAgent>,
    seccomp_root: PathBuf,
    timings: StartupTimings,
    /// The background image import; aborted (killing its `ctr`) when the node stops.
    background: tokio::task::JoinHandle<()>,
}

impl LocalNode {
    /// Builds (or reuses) the images, starts containerd, imports the images and creates the agent.
    /// The seccomp root receives [`EXAMPLE_PROFILES`].
    pub async fn start(options: NodeOptions) -> Result<Self> {
        let started = Instant::now();
        let cache = options.image_cache.clone();
        let images = tokio::task::spawn_blocking(move || build_images(&cache))
            .await
            .map_err(|_| Error::ImportPanicked)??;
        let images_built = started.elapsed();
        let dir = &options.dir;
        let seccomp_root = dir.join("seccomp");
        install_example_profiles(&seccomp_root)?;
        let t = Instant::now();
        let containerd = Containerd::start(&ContainerdConfig::new(dir.join("containerd"))).await?;
        let containerd_ready = t.elapsed();
        let t = Instant::now();
        // The busybox and sandbox images are imported before the node is ready; the larger
        // helper image is imported in the background, and the agent holds back image checks
        // until that import has finished, so a pod never sees a half-imported node.
        let (now, later): (Vec<BuiltImage>, Vec<BuiltImage>) =
            images.into_iter().partition(|image| image.name != HELPER_IMAGE);
        import_images(containerd.socket(), &now).await?;
        let images_imported = t.elapsed();
        let (imports_done, imports) = tokio::sync::watch::channel(false);
        let socket = containerd.socket().to_path_buf();
        let background = tokio::spawn(async move {
            let t = Instant::now();
            match import_images(&socket, &later).await {
                Ok(()) => tracing::info!(
                    elapsed_ms = t.elapsed().as_millis() as u64,
                    "background image import finished"
                ),
                Err(error) => {
                    tracing::error!(error = %error, "background image import failed; pods naming those images will not find them");
                }
            }
            imports_done.send_replace(true);
        });
        let config = NodeConfig {
            node_name: options.node_name.clone(),
            node_ip: "127.0.0.1".to_owned(),
            seccomp_root: seccomp_root.clone(),
            pods_dir: dir.join("pods"),
            logs_dir: dir.join("logs"),
            poll_interval: Duration::from_millis(100),
        };
        let agent = Arc::new(NodeAgent::with_pending_imports(containerd.cri()?, config, imports));
        let timings = StartupTimings {
            images_built,
            containerd_ready,
            images_imported,
            total: started.elapsed(),
        };
        tracing::info!(
            images_built_ms = images_built.as_millis() as u64,
            containerd_ready_ms = containerd_ready.as_millis() as u64,
            images_imported_ms = images_imported.as_millis() as u64,
            "node ready"
        );
        Ok(Self { containerd, agent, seccomp_root, timings, background })
    }

    /// The agent, to hand to the API server as its [`crate::contract::NodeRuntime`].
    pub fn agent(&self) -> Arc<NodeAgent> {
        Arc::clone(&self.agent)
    }

    /// The seccomp root (`Localhost` profiles are relative to it).
    pub fn seccomp_root(&self) -> &Path {
        &self.seccomp_root
    }

    /// The containerd daemon.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// How long the start-up phases took.
    pub fn timings(&self) -> StartupTimings {
        self.timings
    }

    /// Removes every pod sandbox through CRI (which stops the shims and unmounts the rootfs
    /// cleanly), then stops containerd. Dropping the node without calling this still kills
    /// everything, less gracefully.
    pub async fn shutdown(mut self) {
        self.background.abort();
        self.agent.remove_all_sandboxes().await;
        self.containerd.stop();
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.background.abort();
    }
}
