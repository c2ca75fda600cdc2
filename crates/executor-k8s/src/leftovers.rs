//! Objects jobs leave in the cluster when their runner process dies: the pods and registry
//! Secrets of one job an earlier process left (found by the runner label and the job-id
//! annotation), or its own namespace with `namespace_per_job`, and the sweep of this process's
//! objects (runner and system-id labels) whose job is not running.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use kube::core::ObjectMeta;

use crate::cluster::RunnerCluster;
use crate::names;

/// Which objects to look at and which to keep.
pub(crate) struct Leftovers {
    /// The namespace of the runner's jobs.
    pub(crate) namespace: String,
    /// The label selector (runner, and for a sweep the system id).
    pub(crate) selector: String,
    /// The grace period pods get (`cleanup_grace_period_seconds`).
    pub(crate) grace: Option<u32>,
    /// Each job has its own namespace (`namespace_per_job`): the namespaces are what is left,
    /// and deleting one deletes everything in it.
    pub(crate) own_namespaces: bool,
}

/// The job id in an object's annotation.
fn job_id(meta: &ObjectMeta) -> Option<u64> {
    meta.annotations.as_ref()?.get(names::JOB_ID_ANNOTATION)?.parse().ok()
}

impl Leftovers {
    /// Lists the pods and Secrets of the selector, then deletes those of job `only` (or of every
    /// job) except the jobs `running` returns, called after the listing so that a job started
    /// meanwhile is kept. Returns what was deleted, described for the logs.
    pub(crate) async fn delete(
        &self,
        cluster: &RunnerCluster,
        only: Option<u64>,
        running: impl FnOnce() -> HashSet<u64>,
    ) -> Result<Vec<String>, String> {
        if self.own_namespaces {
            return self.delete_namespaces(cluster, only, running).await;
        }
        let params = ListParams::default().labels(&self.selector);
        let pods: Api<Pod> = Api::namespaced(cluster.client().clone(), &self.namespace);
        let secrets: Api<Secret> = Api::namespaced(cluster.client().clone(), &self.namespace);
        let listed_pods = pods.list(&params).await.map_err(|e| self.failed("list pods", &e))?;
        let listed_secrets =
            secrets.list(&params).await.map_err(|e| self.failed("list secrets", &e))?;
        let running = running();
        let doomed = |meta: &ObjectMeta| {
            job_id(meta).filter(|id| only.is_none_or(|o| o == *id) && !running.contains(id))
        };
        let mut deletions = Deletions::default();
        let pod_params =
            DeleteParams { grace_period_seconds: self.grace, ..DeleteParams::background() };
        for pod in listed_pods.items {
            let Some(id) = doomed(&pod.metadata) else { continue };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let what = format!(
                "pod {}/{name} of job {id} ({}{})",
                self.namespace,
                phase.as_deref().unwrap_or("Pending"),
                node.map(|n| format!(" on node {n}")).unwrap_or_default()
            );
            deletions.record(pods.delete(&name, &pod_params).await, what);
        }
        for secret in listed_secrets.items {
            let Some(id) = doomed(&secret.metadata) else { continue };
            let name = secret.metadata.name.clone().unwrap_or_default();
            let what = format!("secret {}/{name} of job {id}", self.namespace);
            deletions.record(secrets.delete(&name, &DeleteParams::default()).await, what);
        }
        deletions.outcome()
    }

    /// [`Leftovers::delete`] for jobs with their own namespaces.
    async fn delete_namespaces(
        &self,
        cluster: &RunnerCluster,
        only: Option<u64>,
        running: impl FnOnce() -> HashSet<u64>,
    ) -> Result<Vec<String>, String> {
        let api: Api<Namespace> = Api::all(cluster.client().clone());
        let params = ListParams::default().labels(&self.selector);
        let listed = api
            .list(&params)
            .await
            .map_err(|e| format!("failed to list the jobs' namespaces ({}): {e}", self.selector))?;
        let running = running();
        let mut deletions = Deletions::default();
        for namespace in listed.items {
            let Some(id) = job_id(&namespace.metadata)
                .filter(|id| only.is_none_or(|o| o == *id) && !running.contains(id))
            else {
                continue;
            };
            if namespace.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = namespace.metadata.name.clone().unwrap_or_default();
            let what = format!("namespace {name} of job {id} (and everything in it)");
            deletions.record(api.delete(&name, &DeleteParams::background()).await, what);
        }
        deletions.outcome()
    }

    fn failed(&self, what: &str, e: &kube::Error) -> String {
        format!("failed to {what} in namespace {} ({}): {e}", self.namespace, self.selector)
    }
}

/// What a clean-up deleted and failed to delete, each described for the logs.
#[derive(Default)]
struct Deletions {
    deleted: Vec<String>,
    failures: Vec<String>,
}

impl Deletions {
    /// Records the answer to the deletion of `what` (a 404: it was gone already).
    fn record<T>(&mut self, result: Result<T, kube::Error>, what: String) {
        match result {
            Ok(_) => self.deleted.push(what),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => self.failures.push(format!("{what}: {e}")),
        }
    }

    /// What was deleted, or an error naming what was and what failed.
    fn outcome(self) -> Result<Vec<String>, String> {
        if self.failures.is_empty() {
            return Ok(self.deleted);
        }
        let deleted =
            if self.deleted.is_empty() { "nothing".to_owned() } else { self.deleted.join(", ") };
        Err(format!("deleted {deleted}; failed to delete {}", self.failures.join(", ")))
    }
}

/// The selector of a runner's objects; with `system_id`, only those of that process.
pub(crate) fn selector(short_token: &str, system_id: Option<&str>) -> String {
    let mut selector = format!("{}={}", names::RUNNER_LABEL, names::sanitize_label(short_token));
    if let Some(id) = system_id {
        selector.push_str(&format!(",{}={}", names::SYSTEM_ID_LABEL, names::sanitize_label(id)));
    }
    selector
}
