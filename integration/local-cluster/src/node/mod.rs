//! What the local cluster's node needs from this machine besides the binaries: the test images,
//! built without a registry ([`images`]), the example seccomp profiles, and the reading of
//! `/proc` that stops a cluster's containers ([`processes`]).

pub mod images;
mod processes;

use std::path::{Path, PathBuf};

pub use images::{
    BUSYBOX_IMAGE, BuiltImage, HELPER_IMAGE, PAUSE_IMAGE, RUNNER_UID, build_images,
    build_runner_image, import_images, import_images_with,
};
pub(crate) use processes::{descendants, processes};

/// Errors of the node's preparation.
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
