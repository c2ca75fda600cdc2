//! The cache stages of a job (`stage-scripts.md` §1, stages 3 and 7): `restore_cache` after
//! the sources, `archive_cache` (or `archive_cache_on_failure`) after the script. Each `cache:`
//! entry's archive is a zip in the object storage `[runners.cache]` names
//! ([`crate::cache::CacheStore`]), under its key; a restore tries the key, then each of its
//! `fallback_keys`. The files move as artifacts do (the helper lists, tars and untars). A cache
//! that cannot be restored or saved is a warning, never the job's failure, as upstream.
//!
//! Without `[runners.cache]`, upstream keeps the cache in the pod, which is deleted with the
//! job: the log says so once, instead of pretending to save anything.

use podrunner_coordinator::wire::Cache;
use tokio::time::Instant;

use super::artifacts::{TransferError, counted, mib};
use super::{JobPod, JobRun, StageStop};
use crate::archive::Format;
use crate::cache::CacheStore;
use crate::script::Stage;

/// Whether `stage` takes `cache` (`policy` pull-push by default, `when` on_success).
fn cached_by(cache: &Cache, stage: Stage) -> bool {
    let policy = cache.policy.as_deref().unwrap_or("pull-push");
    let when = cache.when.as_deref().unwrap_or("on_success");
    let collects = !cache.paths.is_empty() || cache.untracked;
    collects
        && match stage {
            Stage::RestoreCache => matches!(policy, "pull" | "pull-push"),
            Stage::ArchiveCache => {
                matches!(policy, "push" | "pull-push") && matches!(when, "on_success" | "always")
            }
            Stage::ArchiveCacheOnFailure => {
                matches!(policy, "push" | "pull-push") && matches!(when, "on_failure" | "always")
            }
            _ => false,
        }
}

impl JobRun<'_> {
    /// Whether the cache stage `stage` has anything to do for this job (without
    /// `[runners.cache]`, only to say so once).
    pub(super) fn has_cache_work(&self, stage: Stage) -> bool {
        let takes = |stage| self.job.cache.iter().any(|c| cached_by(c, stage));
        let configured = self.config.raw.cache.as_ref().is_some_and(|c| c.type_.is_some());
        takes(stage) && (configured || stage == Stage::RestoreCache || !takes(Stage::RestoreCache))
    }

    /// The store `[runners.cache]` names, `Ok(None)` without one.
    fn cache_store(&self) -> Result<Option<CacheStore>, String> {
        let Some(cache) = self.config.raw.cache.as_ref() else { return Ok(None) };
        let project = self.job.job_info.project_id.map(|p| p.to_string()).unwrap_or_default();
        CacheStore::from_config(cache, &self.short_token(), &project)
    }

    /// A cache entry's key: GitLab's, or `<job name>/<ref>` when it sent none.
    fn cache_key(&self, cache: &Cache) -> String {
        match cache.key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => key.to_owned(),
            None => format!("{}/{}", self.job.job_info.name, self.job.git_info.ref_name),
        }
    }

    /// Runs the cache stage: always `Ok(0)` (a cache miss or failure is only a warning) unless
    /// the pod can no longer run the job.
    pub(super) async fn cache_stage(
        &self,
        pod: &JobPod,
        stage: Stage,
    ) -> Result<(), TransferError> {
        let store = match self.cache_store() {
            Ok(Some(store)) => store,
            Ok(None) => {
                self.log.warning("no [runners.cache] is configured: the cache would live in the job's pod, which is deleted with the job, so it is neither restored nor saved; configure [runners.cache] (s3, gcs or azure) to keep it between jobs");
                return Ok(());
            }
            Err(e) => {
                self.log.warning(&format!("the cache is not used: {e}"));
                return Ok(());
            }
        };
        for cache in self.job.cache.iter().filter(|c| cached_by(c, stage)) {
            let result = if stage == Stage::RestoreCache {
                self.restore(pod, &store, cache).await
            } else {
                self.save(pod, &store, cache).await
            };
            match result {
                Ok(()) => {}
                Err(TransferError::Stop(stop)) => return Err(TransferError::Stop(stop)),
                Err(TransferError::Fatal(message)) => {
                    let what = if stage == Stage::RestoreCache {
                        "Failed to extract cache"
                    } else {
                        "Failed to create cache"
                    };
                    self.log.warning(&format!("{what}: {message}"));
                }
            }
        }
        Ok(())
    }

    async fn restore(
        &self,
        pod: &JobPod,
        store: &CacheStore,
        cache: &Cache,
    ) -> Result<(), TransferError> {
        let key = self.cache_key(cache);
        let keys = std::iter::once(key.clone()).chain(cache.fallback_keys.iter().cloned());
        for candidate in keys {
            self.log.notice(&format!("Checking cache for {candidate}..."));
            let file = tempfile::NamedTempFile::new()
                .map_err(|e| format!("failed to create a temporary file for the cache: {e}"))?;
            let started = Instant::now();
            match store.get(&candidate, file.path()).await? {
                None => {
                    self.log.warning(&format!(
                        "{candidate}: no cache archive in the {}",
                        store.describe()
                    ));
                }
                Some(bytes) => {
                    let fetched = started.elapsed();
                    let summary = self
                        .extract(pod, file.path(), &format!("the cache archive of {candidate}"))
                        .await?;
                    self.log.writeln(&format!(
                        "Downloaded {} of cache {candidate} from the {} in {:.1}s; extracted {} ({})",
                        mib(bytes),
                        store.describe(),
                        fetched.as_secs_f64(),
                        counted(&summary),
                        mib(summary.bytes)
                    ));
                    self.log.notice("Successfully extracted cache");
                    return Ok(());
                }
            }
        }
        Err(TransferError::Fatal(format!("no cache archive for {key} or its fallback keys")))
    }

    async fn save(
        &self,
        pod: &JobPod,
        store: &CacheStore,
        cache: &Cache,
    ) -> Result<(), TransferError> {
        let key = self.cache_key(cache);
        self.log.notice(&format!("Creating cache {key}..."));
        let selection = self.select_in_pod(pod, &cache.paths, &[], cache.untracked).await?;
        if selection.paths.is_empty() {
            self.log.warning(&format!("{key}: no files to cache"));
            return Ok(());
        }
        let level = self.variable(pod, "CACHE_COMPRESSION_LEVEL");
        let format = Format::from_gitlab(None, level)?;
        let (file, summary) = self.collect(pod, &selection, format).await?;
        let size = file.as_file().metadata().map(|m| m.len()).unwrap_or(0);
        let limit = self.config.raw.cache.as_ref().and_then(|c| c.max_uploaded_archive_size);
        if let Some(max) = limit.and_then(|m| u64::try_from(m).ok()).filter(|m| *m > 0)
            && size > max
        {
            return Err(TransferError::Fatal(format!(
                "the archive of cache {key} is {} ({size} bytes), more than [runners.cache] MaxUploadedArchiveSize ({max} bytes): not uploaded",
                mib(size)
            )));
        }
        let started = Instant::now();
        store.put(&key, file.path()).await?;
        self.log.writeln(&format!(
            "Uploaded {} of cache {key} ({}, {} uncompressed) to the {} in {:.1}s",
            mib(size),
            counted(&summary),
            mib(summary.bytes),
            store.describe(),
            started.elapsed().as_secs_f64()
        ));
        self.log.notice("Created cache");
        Ok(())
    }
}

/// The stage's outcome for the stage machinery: a cache stage never fails the job.
pub(super) fn cache_result(result: Result<(), TransferError>) -> Result<(), StageStop> {
    match result {
        Ok(()) | Err(TransferError::Fatal(_)) => Ok(()),
        Err(TransferError::Stop(stop)) => Err(stop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(policy: Option<&str>, when: Option<&str>) -> Cache {
        let mut c = Cache::default();
        c.policy = policy.map(str::to_owned);
        c.when = when.map(str::to_owned);
        c.paths = vec!["vendor/".to_owned()];
        c
    }

    #[test]
    fn policy_and_when_decide_which_stages_take_a_cache() {
        let default = cache(None, None);
        assert!(cached_by(&default, Stage::RestoreCache));
        assert!(cached_by(&default, Stage::ArchiveCache));
        assert!(!cached_by(&default, Stage::ArchiveCacheOnFailure));
        let pull = cache(Some("pull"), Some("always"));
        assert!(cached_by(&pull, Stage::RestoreCache));
        assert!(!cached_by(&pull, Stage::ArchiveCache));
        let push = cache(Some("push"), Some("on_failure"));
        assert!(!cached_by(&push, Stage::RestoreCache));
        assert!(!cached_by(&push, Stage::ArchiveCache));
        assert!(cached_by(&push, Stage::ArchiveCacheOnFailure));
        let mut nothing = cache(None, None);
        nothing.paths.clear();
        assert!(!cached_by(&nothing, Stage::RestoreCache));
    }
}
