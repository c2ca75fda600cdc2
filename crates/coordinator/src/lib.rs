#![doc = include_str!("../README.md")]

pub mod artifacts;
pub mod client;
pub mod error;
pub mod joblog;
pub mod mask;
pub mod outcome;
pub mod wire;

pub use artifacts::{ArtifactError, ArtifactUpload, Attempt, Downloaded};
pub use client::{
    ApiObserver, Client, ClientConfig, JobCredentials, JobRequestResult, PatchOutcome,
    RemoteJobStatus, Response, ServerHints, UpdateOutcome, Verification, generate_system_id,
};
pub use error::{Endpoint, Error, Result};
pub use joblog::{
    Checkpoint, CheckpointSink, FinishReport, JobCancel, JobLog, JobLogConfig, LeftReport,
    LogOptions, LogWriter, Section, StaleCheckpoint, report_left_job, trace_end,
};
pub use mask::Masker;
pub use outcome::{FailureReason, JobOutcome};
/// The git commit this build is from (8 hex digits), or `unknown` outside a git checkout.
pub const REVISION: &str = env!("PODRUNNER_REVISION");

pub use wire::{FeaturesInfo, Job, JobState, JobUpdate, JobVariable, VersionInfo};
