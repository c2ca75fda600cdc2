//! The built-in sample job of `runner render-pod` (used when no `--job` is given): a GitLab
//! `jobs/request` response body with one service, a masked variable and a job image.

use podrunner_coordinator::wire::{Job, decode_json};

/// The sample job as GitLab would send it.
pub const SAMPLE_JOB_JSON: &str = include_str!("../test_data/sample-job.json");

/// The sample job, decoded.
pub fn sample_job() -> Job {
    decode_json(SAMPLE_JOB_JSON.as_bytes()).unwrap_or_else(|(path, e)| {
        panic!("invariant: the built-in sample job decodes ({path}: {e})")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sample_job_has_one_service_and_a_masked_variable() {
        let job = super::sample_job();
        assert_eq!(job.services.len(), 1);
        assert!(job.variables.iter().any(|v| v.masked));
    }
}
