//! The cluster side of a runner: one `kube::Client` per runner config, the server's version,
//! and one shared pod watch per namespace (never a poll, never a watch per job).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};
use kube::runtime::{WatchStreamExt as _, watcher};
use podrunner_config::KubernetesConfig;
use tokio::sync::watch;

use crate::throttle::{ApiRetry, RequestBudget, ThrottleLayer};

/// Errors of connecting to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No client configuration could be built.
    #[error("failed to configure the kubernetes client ({source_of})")]
    Config {
        /// Where the configuration came from.
        source_of: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The API server did not answer the version request.
    #[error("the kubernetes api server at {url} could not be reached")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

fn config_error(
    source_of: &str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> ClusterError + '_ {
    move |source| ClusterError::Config { source_of: source_of.to_owned(), source }
}

/// The client configuration upstream uses: `host` with `cert_file`/`key_file`/`ca_file`/
/// `bearer_token` from the config; else the in-cluster service account; else the kubeconfig
/// (`KUBECONFIG`, `~/.kube/config`, the config's `context`).
async fn client_config(k: &KubernetesConfig) -> Result<kube::Config, ClusterError> {
    let raw = &k.raw;
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    if let Some(host) = non_empty(&raw.host) {
        let kubeconfig = Kubeconfig {
            clusters: vec![NamedCluster {
                name: "config".to_owned(),
                cluster: Some(Cluster {
                    server: Some(host),
                    certificate_authority: non_empty(&raw.ca_file),
                    ..Cluster::default()
                }),
                other: Default::default(),
            }],
            auth_infos: vec![NamedAuthInfo {
                name: "config".to_owned(),
                auth_info: Some(AuthInfo {
                    token: non_empty(&raw.bearer_token).map(Into::into),
                    client_certificate: non_empty(&raw.cert_file),
                    client_key: non_empty(&raw.key_file),
                    ..AuthInfo::default()
                }),
                other: Default::default(),
            }],
            contexts: vec![NamedContext {
                name: "config".to_owned(),
                context: Some(Context {
                    cluster: "config".to_owned(),
                    user: Some("config".to_owned()),
                    ..Context::default()
                }),
                other: Default::default(),
            }],
            current_context: Some("config".to_owned()),
            ..Kubeconfig::default()
        };
        return kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| config_error("the host key of [runners.kubernetes]")(Box::new(e)));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return kube::Config::incluster()
            .map_err(|e| config_error("the in-cluster service account")(Box::new(e)));
    }
    let options =
        KubeConfigOptions { context: non_empty(&raw.context), ..KubeConfigOptions::default() };
    kube::Config::from_kubeconfig(&options)
        .await
        .map_err(|e| config_error("the kubeconfig (KUBECONFIG or ~/.kube/config)")(Box::new(e)))
}

/// The `User-Agent` of every request, so that the API server's audit log names the runner
/// (kube sends none).
fn with_user_agent<B>(mut request: http::Request<B>) -> http::Request<B> {
    static AGENT: std::sync::LazyLock<http::HeaderValue> = std::sync::LazyLock::new(|| {
        let text = format!(
            "podrunner/{} ({})",
            env!("CARGO_PKG_VERSION"),
            podrunner_coordinator::REVISION
        );
        http::HeaderValue::from_str(&text).unwrap_or(http::HeaderValue::from_static("podrunner"))
    });
    request.headers_mut().insert(http::header::USER_AGENT, AGENT.clone());
    request
}

/// A runner's connection to its cluster.
pub struct RunnerCluster {
    client: kube::Client,
    url: String,
    minor: AtomicU32,
    /// Cleared when a request failed to reach the server; [`RunnerCluster::probe`] sets it again.
    reachable: AtomicBool,
    /// The watches of namespaces that outlive jobs (the config's), kept for the process.
    watches: Mutex<HashMap<(String, String), Arc<PodWatch>>>,
    /// The watches of jobs' own namespaces, as long as a job subscribes.
    transient: Mutex<HashMap<(String, String), std::sync::Weak<PodWatch>>>,
}

impl std::fmt::Debug for RunnerCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerCluster")
            .field("url", &self.url)
            .field("minor", &self.minor())
            .finish()
    }
}

impl RunnerCluster {
    /// Builds the client (its requests take tokens of `budget`, see [`crate::throttle`]) and
    /// reads the server's version once.
    ///
    /// # Errors
    ///
    /// [`ClusterError`] when no configuration is found or the server does not answer.
    pub async fn connect(
        k: &KubernetesConfig,
        budget: Arc<RequestBudget>,
    ) -> Result<Self, ClusterError> {
        let mut config = client_config(k).await?;
        let url = config.cluster_url.to_string();
        // Our retries instead of kube's: 500 too, and each attempt through the shared budget.
        config.default_retry = false;
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| config_error("the client settings")(Box::new(e)))?
            .with_layer(&tower::util::MapRequestLayer::new(with_user_agent))
            .with_layer(&ThrottleLayer(budget))
            .with_layer(&tower::buffer::BufferLayer::new(1024))
            .with_layer(&tower::retry::RetryLayer::new(ApiRetry::default()))
            .build();
        let cluster = Self {
            client,
            url,
            minor: AtomicU32::new(crate::version::MAX_MINOR),
            reachable: AtomicBool::new(false),
            watches: Mutex::new(HashMap::new()),
            transient: Mutex::new(HashMap::new()),
        };
        cluster.probe().await?;
        Ok(cluster)
    }

    /// Reads the server's version (again): marks the cluster reachable and keeps its minor
    /// version, or says why it cannot be reached.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Unreachable`] with the server's address and the cause.
    pub async fn probe(&self) -> Result<(), ClusterError> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|source| ClusterError::Unreachable { url: self.url.clone(), source })?;
        let digits: String = info.minor.chars().take_while(char::is_ascii_digit).collect();
        self.minor.store(digits.parse().unwrap_or(crate::version::MAX_MINOR), Ordering::Relaxed);
        self.reachable.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the last request reached the server.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Notes that a request did not reach the server: the runner stops requesting jobs until a
    /// probe succeeds.
    pub fn mark_unreachable(&self) {
        self.reachable.store(false, Ordering::Relaxed);
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's minor version.
    pub fn minor(&self) -> u32 {
        self.minor.load(Ordering::Relaxed)
    }

    /// The shared watch of this runner's pods (label `selector`) in `namespace`, started on
    /// first use. With `keep` it lasts as long as the process (a namespace jobs share);
    /// without, it ends with its last subscription (a job's own namespace).
    pub fn pod_watch(&self, namespace: &str, selector: &str, keep: bool) -> Arc<PodWatch> {
        let key = (namespace.to_owned(), selector.to_owned());
        let start = || {
            Arc::new(PodWatch::start(
                Api::namespaced(self.client.clone(), namespace),
                selector.to_owned(),
            ))
        };
        if keep {
            let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
            return Arc::clone(watches.entry(key).or_insert_with(start));
        }
        // A namespace of one job: held by its subscriptions only, so the watch ends with them.
        let mut transient = self.transient.lock().unwrap_or_else(PoisonError::into_inner);
        transient.retain(|_, w| w.strong_count() > 0);
        if let Some(watch) = transient.get(&key).and_then(std::sync::Weak::upgrade) {
            return watch;
        }
        let watch = start();
        transient.insert(key, Arc::downgrade(&watch));
        watch
    }
}

type Subscribers = Arc<Mutex<HashMap<String, watch::Sender<Option<Pod>>>>>;

/// One watch of a namespace's pods, fanned out to the jobs that wait on them.
#[derive(Debug)]
pub struct PodWatch {
    subscribers: Subscribers,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodWatch {
    fn start(api: Api<Pod>, selector: String) -> Self {
        let subscribers: Subscribers = Arc::default();
        let fan_out = Arc::clone(&subscribers);
        let task = tokio::spawn(async move {
            let config = watcher::Config::default().labels(&selector);
            let mut stream = watcher(api, config).default_backoff().boxed();
            // The pods a (re)list found: after a 410 the watcher lists again, and a pod deleted
            // while it was not watching is simply absent from that list (no Delete event).
            let mut listed: Option<HashSet<String>> = None;
            while let Some(event) = stream.next().await {
                let (pod, deleted) = match event {
                    Ok(watcher::Event::Apply(pod)) => (pod, false),
                    Ok(watcher::Event::Delete(pod)) => (pod, true),
                    Ok(watcher::Event::InitApply(pod)) => {
                        if let (Some(listed), Some(name)) = (&mut listed, &pod.metadata.name) {
                            listed.insert(name.clone());
                        }
                        (pod, false)
                    }
                    Ok(watcher::Event::Init) => {
                        listed = Some(HashSet::new());
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        let found = listed.take().unwrap_or_default();
                        let subscribers = fan_out.lock().unwrap_or_else(PoisonError::into_inner);
                        for (name, sender) in subscribers.iter() {
                            if !found.contains(name) && sender.borrow().is_some() {
                                sender.send_replace(None);
                            }
                        }
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, label.selector = %selector, "pod watch failed, retrying");
                        continue;
                    }
                };
                let Some(name) = pod.metadata.name.clone() else { continue };
                let subscribers = fan_out.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(sender) = subscribers.get(&name) {
                    sender.send_replace(if deleted { None } else { Some(pod) });
                }
            }
        });
        Self { subscribers, task }
    }

    /// Follows the pod `name`: the receiver holds its latest state (`None` before it is seen
    /// and after it is deleted). Unsubscribed when the [`PodSubscription`] is dropped.
    pub fn subscribe(self: &Arc<Self>, name: &str) -> PodSubscription {
        let (sender, receiver) = watch::channel(None);
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), sender);
        PodSubscription { watch: Arc::clone(self), name: name.to_owned(), receiver }
    }
}

/// A job's view of its pod through the shared watch.
#[derive(Debug)]
pub struct PodSubscription {
    watch: Arc<PodWatch>,
    name: String,
    /// The pod's latest state.
    pub receiver: watch::Receiver<Option<Pod>>,
}

impl Drop for PodSubscription {
    fn drop(&mut self) {
        self.watch.subscribers.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.name);
    }
}
