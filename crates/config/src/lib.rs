//! The runner's `config.toml`: a GitLab-Runner-compatible schema, loading with diagnostics that
//! carry file, line, column and key path, and the validated model the executor builds pods from.
//!
//! Loading has two phases (house style §4.2):
//! 1. [`raw`]: the file as written, decoded with serde (every syntax and type error is collected,
//!    unknown keys become warnings with a did-you-mean suggestion);
//! 2. [`validate`]: semantic rules, producing [`model::Config`] with closed enums for security
//!    settings.
//!
//! ```
//! use podrunner_config::{LoadOptions, load_str};
//! let loaded = load_str(
//!     "[[runners]]\nexecutor = \"kubernetes\"\n[runners.kubernetes.build_container_security_context]\n\
//!      seccomp_profile_type = \"runtimedefault\"\n",
//!     LoadOptions::default(),
//! );
//! assert!(loaded.config.is_some()); // an invalid profile type is a warning ...
//! assert!(loaded.diagnostics[0].message.contains("did you mean \"RuntimeDefault\"")); // ... with a fix
//! ```
#![warn(missing_docs)]

pub mod api_rules;
pub mod diagnostics;
mod document;
pub mod expand;
mod load;
pub mod model;
pub mod quantity;
pub mod raw;
pub mod schema;
pub mod upstream;
pub mod validate;
pub mod values;

pub use diagnostics::{Diagnostic, KeyPath, Report, Severity};
pub use load::{LoadOptions, Loaded, load_str};
pub use model::{
    Config, ContainerSecurityContext, KubernetesConfig, PodSecurityContext, RunnerConfig,
    SecurityProfile,
};
