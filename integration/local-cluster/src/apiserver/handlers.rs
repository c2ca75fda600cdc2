//! Request routing and the generic verbs (get, list, watch, create, update, patch, delete) for
//! every stored kind, plus discovery and the [`ClusterView`] implementation.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use k8s_openapi::{
    ByteString,
    api::core::v1::{
        ConfigMap, Event, Namespace, Pod, PodStatus, ResourceQuota, Secret, ServiceAccount,
    },
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    State, pods,
    selectors::Selector,
    status::{ApiError, success_status},
    store::{Change, EventType, Kind, StoreError},
    table,
    validation::{self, FieldValidation},
};
use crate::contract::{ClusterView, NodeRuntime};

/// The longest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

/// Query parameters, in order, with repeats (`command=a&command=b`).
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }
}

/// Creates what a fresh cluster has: the `default`, `kube-system` and `kube-public` namespaces
/// with their `default` service accounts.
pub(crate) fn bootstrap(state: &State) {
    for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let object =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
        if let Ok(mut object) = normalise_new(state, Kind::Namespace, "", object) {
            finish_namespace(&mut object);
            if state.store.create(Kind::Namespace, "", object).is_ok() {
                create_default_service_account(state, namespace);
            }
        }
    }
}

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = Query::parse(request.uri().query());
    tracing::debug!(http.method = %method, url.path = %path, "request");
    let table = method == Method::GET
        && !query.flag("watch")
        && !query.flag("follow")
        && request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(table::wants_table);
    let watch = query.flag("watch");
    let user_agent = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let record = |code: u16| super::audit::RequestRecord {
        user_agent: user_agent.clone(),
        ..super::audit::classify(&method, &path, watch, code)
    };
    if let Some(refusal) = state.overload_refusal() {
        let response = refusal.into_response();
        state.requests.push(record(response.status().as_u16()));
        return response;
    }
    let response = match route(&state, &method, &path, query, request).await {
        Ok(response) if table && response.status() == StatusCode::OK => as_table(response).await,
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(http.method = %method, url.path = %path, code = error.code().as_u16(), "request failed");
            error.into_response()
        }
    };
    state.requests.push(record(response.status().as_u16()));
    response
}

/// Turns a JSON object or list response into a `Table` (`kubectl get`); other responses (logs,
/// discovery without a kind) pass unchanged.
async fn as_table(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::internal("failed to read a response body").into_response();
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value) if value["metadata"].is_object() && value["kind"].is_string() => {
            json_response(StatusCode::OK, &table::to_table(&value, chrono::Utc::now()), &[])
        }
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// What a path names.
struct Target<'a> {
    kind: Kind,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn parse_target(rest: &str) -> Option<Target<'_>> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let namespaced = segments.len() >= 3
        && segments[0] == "namespaces"
        && Kind::from_plural(segments[2]).is_some_and(Kind::namespaced);
    let (namespace, rest) =
        if namespaced { (Some(segments[1]), &segments[2..]) } else { (None, &segments[..]) };
    let kind = Kind::from_plural(rest.first()?)?;
    if rest.len() > 3 {
        return None;
    }
    Some(Target { kind, namespace, name: rest.get(1).copied(), subresource: rest.get(2).copied() })
}

async fn route(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    query: Query,
    request: Request,
) -> ApiResult {
    match path.trim_end_matches('/') {
        "/version" => return Ok(json_response(StatusCode::OK, &version(state), &[])),
        "/api" => return Ok(json_response(StatusCode::OK, &api_versions(state), &[])),
        "/api/v1" => return Ok(json_response(StatusCode::OK, &api_resources(), &[])),
        "/apis" => {
            let groups = json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []});
            return Ok(json_response(StatusCode::OK, &groups, &[]));
        }
        "/healthz" | "/livez" | "/readyz" => return Ok((StatusCode::OK, "ok").into_response()),
        "/openapi/v3" => return Ok(json_response(StatusCode::OK, &openapi_v3_root(), &[])),
        "/openapi/v3/api/v1" => {
            return Ok(json_response(StatusCode::OK, &openapi_v3_core(state), &[]));
        }
        _ => {}
    }
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let rest = path.strip_prefix("/api/v1/").ok_or_else(not_found)?;
    let target = parse_target(rest).ok_or_else(not_found)?;
    if target.kind.namespaced() && target.namespace.is_none() && target.name.is_some() {
        return Err(not_found());
    }
    let namespace = target.namespace.unwrap_or_default();
    match (target.name, target.subresource) {
        (None, None) => match *method {
            Method::GET => list_or_watch(state, target.kind, target.namespace, &query),
            Method::POST => {
                let body = read_body(request).await?;
                create(state, target.kind, namespace, &query, &body)
            }
            _ => Err(ApiError::method_not_allowed()),
        },
        (Some(name), None) => match *method {
            Method::GET => get(state, target.kind, namespace, name),
            Method::PUT => {
                let body = read_body(request).await?;
                update(state, target.kind, namespace, name, &query, &body)
            }
            Method::PATCH => {
                let content_type = content_type(request.headers());
                let body = read_body(request).await?;
                patch(state, target.kind, namespace, name, &query, &content_type, &body, false)
            }
            Method::DELETE => {
                let body = read_body(request).await?;
                delete(state, target.kind, namespace, name, &query, &body)
            }
            _ => Err(ApiError::method_not_allowed()),
        },
        (Some(name), Some(sub)) => match (target.kind, sub) {
            (Kind::Pod, "status") => match *method {
                Method::GET => get(state, Kind::Pod, namespace, name),
                Method::PUT => {
                    let body = read_body(request).await?;
                    pods::update_status(state, namespace, name, &body)
                }
                Method::PATCH => {
                    let content_type = content_type(request.headers());
                    let body = read_body(request).await?;
                    patch(state, Kind::Pod, namespace, name, &query, &content_type, &body, true)
                }
                _ => Err(ApiError::method_not_allowed()),
            },
            (Kind::Pod, "log") if *method == Method::GET => {
                pods::log(state, namespace, name, &query).await
            }
            (Kind::Pod, "eviction") if *method == Method::POST => {
                let body = read_body(request).await?;
                pods::evict(state, namespace, name, &body)
            }
            (Kind::Pod, "exec" | "attach") if matches!(*method, Method::GET | Method::POST) => {
                pods::stream(state, namespace, name, sub == "attach", &query, request).await
            }
            _ => Err(not_found()),
        },
        (None, Some(_)) => Err(not_found()),
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

async fn read_body(request: Request) -> ApiResult<Bytes> {
    axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("failed to read the request body: {e}")))
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

pub(crate) fn json_response(code: StatusCode, value: &Value, warnings: &[String]) -> Response {
    let mut response = (code, value.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for warning in warnings {
        if let Ok(value) = HeaderValue::from_str(&validation::warning_header_value(warning)) {
            headers.append(http::header::WARNING, value);
        }
    }
    response
}

fn version(state: &State) -> Value {
    let v = state.settings.version;
    json!({
        "major": "1",
        "minor": v.minor.to_string(),
        "gitVersion": format!("v{v}"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.22.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The OpenAPI v3 discovery root: one group-version, `api/v1`.
fn openapi_v3_root() -> Value {
    json!({"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1"}}})
}

/// A minimal OpenAPI v3 document for `api/v1`: paths only, no schemas. It is enough for
/// kubectl's check "does the server support `fieldValidation`?" (a PATCH operation tagged with
/// the kind's `x-kubernetes-group-version-kind` that lists the query parameter): kubectl then
/// leaves validation to this server (`fieldValidation=Strict`) instead of downloading schemas.
fn openapi_v3_core(state: &State) -> Value {
    let field_validation = json!({
        "name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true},
    });
    let mut paths = serde_json::Map::new();
    for kind in Kind::ALL {
        let gvk = json!({"group": "", "version": "v1", "kind": kind.kind()});
        let operation = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", kind.kind()),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [field_validation],
                "responses": {"200": {"description": "OK"}},
            })
        };
        let (collection, item) = if kind.namespaced() {
            let base = format!("/api/v1/namespaces/{{namespace}}/{}", kind.plural());
            (base.clone(), format!("{base}/{{name}}"))
        } else {
            (format!("/api/v1/{}", kind.plural()), format!("/api/v1/{}/{{name}}", kind.plural()))
        };
        paths.insert(collection, json!({"post": operation("post")}));
        paths.insert(item, json!({"put": operation("put"), "patch": operation("patch")}));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}", state.settings.version)},
        "paths": paths,
    })
}

fn api_versions(state: &State) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.settings.address.to_string()}],
    })
}

fn api_resources() -> Value {
    let all_verbs = json!(["create", "delete", "get", "list", "patch", "update", "watch"]);
    let mut resources = Vec::new();
    for kind in Kind::ALL {
        let mut resource = json!({
            "name": kind.plural(), "singularName": kind.singular(), "namespaced": kind.namespaced(),
            "kind": kind.kind(), "verbs": all_verbs,
        });
        match kind {
            Kind::Pod => resource["shortNames"] = json!(["po"]),
            Kind::Namespace => resource["shortNames"] = json!(["ns"]),
            Kind::ConfigMap => resource["shortNames"] = json!(["cm"]),
            Kind::ServiceAccount => resource["shortNames"] = json!(["sa"]),
            Kind::Event => resource["shortNames"] = json!(["ev"]),
            Kind::ResourceQuota => resource["shortNames"] = json!(["quota"]),
            Kind::Node => resource["shortNames"] = json!(["no"]),
            Kind::Secret => {}
        }
        resources.push(resource);
    }
    for (name, kind, verbs) in [
        ("pods/status", "Pod", json!(["get", "patch", "update"])),
        ("pods/log", "Pod", json!(["get"])),
        ("pods/exec", "PodExecOptions", json!(["create", "get"])),
        ("pods/attach", "PodAttachOptions", json!(["create", "get"])),
    ] {
        resources.push(json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs}));
    }
    json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})
}

fn require_namespace(state: &State, kind: Kind, namespace: &str) -> ApiResult<()> {
    if kind.namespaced() && state.store.get(Kind::Namespace, "", namespace).is_none() {
        return Err(ApiError::not_found(Kind::Namespace, namespace));
    }
    Ok(())
}

fn get(state: &State, kind: Kind, namespace: &str, name: &str) -> ApiResult {
    let object =
        state.store.get(kind, namespace, name).ok_or_else(|| ApiError::not_found(kind, name))?;
    Ok(json_response(StatusCode::OK, &object, &[]))
}

fn list_or_watch(state: &State, kind: Kind, namespace: Option<&str>, query: &Query) -> ApiResult {
    let selector = Selector::parse(query.get("labelSelector"), query.get("fieldSelector"))?;
    if query.flag("watch") {
        return watch(state, kind, namespace, selector, query);
    }
    let (items, rv) = state.store.list(kind, namespace);
    let items: Vec<&Value> =
        items.iter().map(AsRef::as_ref).filter(|item| selector.matches(item)).collect();
    let list = json!({
        "kind": format!("{}List", kind.kind()),
        "apiVersion": "v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list, &[]))
}

/// The watch event a change becomes for a selector, if any (objects leaving the selection are
/// DELETED, objects entering it ADDED, as the real watch cache does).
fn watch_event(change: &Change, selector: &Selector) -> Option<Value> {
    let now = selector.matches(&change.object);
    let before = change.previous.as_deref().is_some_and(|p| selector.matches(p));
    let type_ = match change.type_ {
        EventType::Added => now.then_some(EventType::Added),
        EventType::Deleted => (before || now).then_some(EventType::Deleted),
        EventType::Modified => match (before, now) {
            (true, true) => Some(EventType::Modified),
            (false, true) => Some(EventType::Added),
            (true, false) => Some(EventType::Deleted),
            (false, false) => None,
        },
    }?;
    Some(json!({"type": type_.as_str(), "object": &*change.object}))
}

fn watch(
    state: &State,
    kind: Kind,
    namespace: Option<&str>,
    selector: Selector,
    query: &Query,
) -> ApiResult {
    let since = match query.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        ),
    };
    let timeout = query.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
    if state.watch_faults.refused.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ));
    }
    let mut ended = state.watch_faults.generation.subscribe();
    let bookmarks = query.get("allowWatchBookmarks") == Some("true");
    let bookmark_interval = state.settings.bookmark_interval.max(Duration::from_millis(10));
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let line = |value: Value| Ok(Bytes::from(format!("{value}\n")));
    match state.store.watch(kind, namespace, since) {
        Err(StoreError::Gone { requested, oldest }) => {
            let status =
                ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
                    .to_status();
            let _ = tx.try_send(line(json!({"type": "ERROR", "object": status})));
        }
        Err(other) => return Err(ApiError::internal(format!("watch failed: {other:?}"))),
        Ok(start) => {
            let namespace = namespace.map(str::to_owned);
            tokio::spawn(async move {
                for change in &start.backlog {
                    if let Some(event) = watch_event(change, &selector)
                        && tx.send(line(event)).await.is_err()
                    {
                        return;
                    }
                }
                let mut live = start.live;
                // Every change up to `progress` has been sent or was out of scope: a bookmark
                // never carries a resourceVersion past an event the client has not seen.
                let mut progress = start.resource_version;
                let deadline = tokio::time::sleep(Duration::from_secs(timeout));
                tokio::pin!(deadline);
                let mut bookmark = tokio::time::interval_at(
                    tokio::time::Instant::now() + bookmark_interval,
                    bookmark_interval,
                );
                loop {
                    let change = tokio::select! {
                        () = &mut deadline => return,
                        () = tx.closed() => return,
                        _ = ended.changed() => return,
                        _ = bookmark.tick(), if bookmarks => {
                            let event = json!({
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": kind.kind(),
                                    "apiVersion": "v1",
                                    "metadata": {"resourceVersion": progress.to_string()},
                                },
                            });
                            if tx.send(line(event)).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        change = live.recv() => change,
                    };
                    match change {
                        Ok(change) => {
                            progress = change.resource_version;
                            // Backlog and live feed never overlap: the store subscribes under its lock.
                            let in_scope = change.kind == kind
                                && namespace.as_deref().is_none_or(|ns| ns == change.namespace);
                            if !in_scope {
                                continue;
                            }
                            if let Some(event) = watch_event(&change, &selector)
                                && tx.send(line(event)).await.is_err()
                            {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let status =
                                ApiError::gone("the watch fell behind; too old resource version")
                                    .to_status();
                            let _ = tx.send(line(json!({"type": "ERROR", "object": status}))).await;
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
    }
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Decodes a request body of `kind` with field validation, returning normalised JSON.
fn decode_kind(
    state: &State,
    kind: Kind,
    raw: &Value,
    directive: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let version = state.settings.version;
    macro_rules! decode_as {
        ($t:ty) => {{
            let decoded = validation::decode::<$t>(kind, raw, version, directive)?;
            (
                serde_json::to_value(&decoded.object)
                    .map_err(|e| ApiError::internal(e.to_string()))?,
                decoded.warnings,
            )
        }};
    }
    let (mut value, warnings) = match kind {
        Kind::Namespace => decode_as!(Namespace),
        Kind::Pod => decode_as!(Pod),
        Kind::Secret => decode_as!(Secret),
        Kind::ConfigMap => decode_as!(ConfigMap),
        Kind::ServiceAccount => decode_as!(ServiceAccount),
        Kind::Event => decode_as!(Event),
        Kind::ResourceQuota => decode_as!(ResourceQuota),
        Kind::Node => decode_as!(k8s_openapi::api::core::v1::Node),
    };
    value["apiVersion"] = json!("v1");
    value["kind"] = json!(kind.kind());
    if !value["metadata"].is_object() {
        value["metadata"] = json!({});
    }
    Ok((value, warnings))
}

/// Name generation, namespace, uid and creation timestamp of a new object.
fn normalise_new(
    state: &State,
    kind: Kind,
    namespace: &str,
    mut object: Value,
) -> ApiResult<Value> {
    let meta = &mut object["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    let name = meta["name"].as_str().unwrap_or_default().to_owned();
    if name.is_empty()
        && let Some(prefix) = meta["generateName"].as_str().filter(|p| !p.is_empty())
    {
        meta["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    if kind.namespaced() {
        match meta["namespace"].as_str() {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => meta["namespace"] = json!(namespace),
        }
    }
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(now_rfc3339());
    for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"]
    {
        if let Some(meta) = meta.as_object_mut() {
            meta.remove(field);
        }
    }
    let _ = state;
    Ok(object)
}

/// Five characters from the alphabet `generateName` uses.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn object_name(object: &Value) -> String {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn finish_namespace(object: &mut Value) {
    let name = object_name(object);
    object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    object["spec"] = json!({"finalizers": ["kubernetes"]});
    object["status"] = json!({"phase": "Active"});
}

/// Moves `stringData` into `data`, as the API server does on write.
fn finish_secret(object: &mut Value) -> ApiResult<()> {
    let mut secret: Secret =
        serde_json::from_value(object.clone()).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (key, value) in string_data {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
    if secret.type_.is_none() {
        secret.type_ = Some("Opaque".to_owned());
    }
    *object = serde_json::to_value(&secret).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(())
}

/// What a new namespace gets from kube-controller-manager: the `default` ServiceAccount and
/// the `kube-root-ca.crt` ConfigMap (the CA in-cluster clients trust).
fn create_default_service_account(state: &State, namespace: &str) {
    let account =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
    if let Ok(account) = normalise_new(state, Kind::ServiceAccount, namespace, account) {
        let _ = state.store.create(Kind::ServiceAccount, namespace, account);
    }
    let ca = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt"},
        "data": {"ca.crt": state.in_cluster.1},
    });
    if let Ok(ca) = normalise_new(state, Kind::ConfigMap, namespace, ca) {
        let _ = state.store.create(Kind::ConfigMap, namespace, ca);
    }
}

fn field_validation(query: &Query) -> ApiResult<FieldValidation> {
    FieldValidation::parse(query.get("fieldValidation"))
}

/// The ResourceQuota admission plugin, for the `pods` count (the only quota the executor's
/// tests need): a pod over any quota's `spec.hard.pods` is refused with kube-apiserver's 403.
/// Pods in a terminal phase do not count, as in the quota controller.
fn check_pod_quota(state: &State, namespace: &str, name: &str) -> Result<(), ApiError> {
    let (quotas, _) = state.store.list(Kind::ResourceQuota, Some(namespace));
    let (pods, _) = state.store.list(Kind::Pod, Some(namespace));
    let used = pods
        .iter()
        .filter(|p| {
            !matches!(
                p.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            )
        })
        .count();
    for quota in quotas {
        let limit = quota
            .pointer("/spec/hard/pods")
            .and_then(|v| {
                v.as_str().map(str::to_owned).or_else(|| v.as_u64().map(|n| n.to_string()))
            })
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(limit) = limit
            && used + 1 > limit
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "pods {} is forbidden: exceeded quota: {}, requested: pods=1, used: pods={used}, limited: pods={limit}",
                    super::status::go_quote(name),
                    object_name(&quota)
                ),
            ));
        }
    }
    Ok(())
}

fn create(state: &State, kind: Kind, namespace: &str, query: &Query, body: &[u8]) -> ApiResult {
    require_namespace(state, kind, namespace)?;
    let raw = parse_json(body)?;
    let (value, warnings) = decode_kind(state, kind, &raw, field_validation(query)?)?;
    let mut object = normalise_new(state, kind, namespace, value)?;
    let name = object_name(&object);
    let mut errors = validation::validate_name(kind, &name);
    match kind {
        Kind::Pod => {
            let mut pod: Pod = serde_json::from_value(object.clone())
                .map_err(|e| ApiError::internal(e.to_string()))?;
            errors.extend(validation::validate_pod(&pod));
            if errors.is_empty() {
                check_pod_quota(state, namespace, &name)?;
                pods::apply_defaults(&mut pod, &state.settings.node_name);
                pods::mount_service_account_token(&mut pod);
                object =
                    serde_json::to_value(&pod).map_err(|e| ApiError::internal(e.to_string()))?;
            }
        }
        Kind::Namespace => finish_namespace(&mut object),
        Kind::Secret => finish_secret(&mut object)?,
        Kind::ConfigMap | Kind::ServiceAccount | Kind::Event | Kind::ResourceQuota | Kind::Node => {
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(kind, &name, &errors));
    }
    let stored = state.store.create(kind, namespace, object).map_err(|e| match e {
        StoreError::AlreadyExists => ApiError::already_exists(kind, &name),
        other => ApiError::internal(format!("create failed: {other:?}")),
    })?;
    match kind {
        Kind::Namespace => create_default_service_account(state, &name),
        Kind::Pod => {
            let pod: Pod = serde_json::from_value((*stored).clone())
                .map_err(|e| ApiError::internal(e.to_string()))?;
            if let Some(view) = state.view() {
                state.node.pod_created(pod, view);
            }
        }
        Kind::Secret
        | Kind::ConfigMap
        | Kind::ServiceAccount
        | Kind::Event
        | Kind::ResourceQuota
        | Kind::Node => {}
    }
    Ok(json_response(StatusCode::CREATED, &stored, &warnings))
}

fn store_error(kind: Kind, name: &str, error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::not_found(kind, name),
        StoreError::AlreadyExists => ApiError::already_exists(kind, name),
        StoreError::Conflict => ApiError::conflict(kind, name),
        StoreError::Gone { .. } => ApiError::internal("unexpected expired resource version"),
    }
}

/// Applies a full replacement (`PUT`) or a patched object to a stored object.
fn replace(
    state: &State,
    kind: Kind,
    namespace: &str,
    name: &str,
    mut next: Value,
    expected_rv: Option<&str>,
    status_only: bool,
) -> ApiResult<Arc<Value>> {
    if object_name(&next) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            object_name(&next)
        )));
    }
    let result = state.store.update(kind, namespace, name, expected_rv, |current| {
        // Identity and server-owned metadata stay.
        for field in [
            "uid",
            "creationTimestamp",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match current["metadata"].get(field) {
                Some(value) => next["metadata"][field] = value.clone(),
                None => {
                    if let Some(meta) = next["metadata"].as_object_mut() {
                        meta.remove(field);
                    }
                }
            }
        }
        match kind {
            Kind::Pod if status_only => {
                let status = next["status"].clone();
                next = current.clone();
                next["status"] = status;
            }
            Kind::Pod => {
                pods::check_spec_update(name, &current["spec"], &next["spec"])?;
                next["status"] = current["status"].clone();
            }
            Kind::Namespace => {
                next["status"] = current["status"].clone();
                finish_namespace(&mut next);
            }
            Kind::Node if !status_only => next["status"] = current["status"].clone(),
            Kind::Secret => finish_secret(&mut next)?,
            Kind::ConfigMap
            | Kind::ServiceAccount
            | Kind::Event
            | Kind::ResourceQuota
            | Kind::Node => {}
        }
        if let Some(meta) = next["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        if let Some(meta) = current["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        // Keep the stored resourceVersion when nothing changes (the store compares objects).
        let unchanged = *current == next;
        let rv = current["metadata"].get("resourceVersion").cloned();
        *current = next;
        if unchanged && let Some(rv) = rv {
            current["metadata"]["resourceVersion"] = rv;
        }
        Ok::<(), ApiError>(())
    });
    match result {
        Ok(Ok(stored)) => Ok(stored),
        Ok(Err(error)) => Err(error),
        Err(error) => Err(store_error(kind, name, error)),
    }
}

fn update(
    state: &State,
    kind: Kind,
    namespace: &str,
    name: &str,
    query: &Query,
    body: &[u8],
) -> ApiResult {
    let raw = parse_json(body)?;
    let (next, warnings) = decode_kind(state, kind, &raw, field_validation(query)?)?;
    let expected_rv =
        next.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
    validate_stored(kind, name, &next)?;
    let stored = replace(state, kind, namespace, name, next, expected_rv.as_deref(), false)?;
    Ok(json_response(StatusCode::OK, &stored, &warnings))
}

/// Validation that applies to updates as well as creates.
fn validate_stored(kind: Kind, name: &str, object: &Value) -> ApiResult<()> {
    if kind == Kind::Pod {
        let pod: Pod = serde_json::from_value(object.clone())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let errors = validation::validate_pod(&pod);
        if !errors.is_empty() {
            return Err(ApiError::invalid(kind, name, &errors));
        }
    }
    Ok(())
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(target) = target.as_object_mut() {
                for (key, value) in patch {
                    if value.is_null() {
                        target.remove(key);
                    } else {
                        merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[allow(clippy::too_many_arguments)] // reason: the request's parts, passed through from routing
fn patch(
    state: &State,
    kind: Kind,
    namespace: &str,
    name: &str,
    query: &Query,
    content_type: &str,
    body: &[u8],
    status_only: bool,
) -> ApiResult {
    // Strategic merge patch is treated as a JSON merge patch: lists are replaced, not merged by key.
    if !matches!(
        content_type,
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    ) {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let patch = parse_json(body)?;
    let current =
        state.store.get(kind, namespace, name).ok_or_else(|| ApiError::not_found(kind, name))?;
    let mut merged = (*current).clone();
    merge_patch(&mut merged, &patch);
    let (next, warnings) = decode_kind(state, kind, &merged, field_validation(query)?)?;
    validate_stored(kind, name, &next)?;
    let expected_rv =
        patch.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_owned);
    let stored = replace(state, kind, namespace, name, next, expected_rv.as_deref(), status_only)?;
    Ok(json_response(StatusCode::OK, &stored, &warnings))
}

/// The grace period and propagation policy of a delete (`DeleteOptions` body or query).
fn delete_options(query: &Query, body: &[u8]) -> ApiResult<Option<i64>> {
    let mut grace = query.get("gracePeriodSeconds").and_then(|g| g.parse::<i64>().ok());
    if !body.is_empty() {
        let options = parse_json(body)?;
        if let Some(g) = options.get("gracePeriodSeconds").and_then(Value::as_i64) {
            grace = Some(g);
        }
    }
    Ok(grace)
}

fn delete(
    state: &State,
    kind: Kind,
    namespace: &str,
    name: &str,
    query: &Query,
    body: &[u8],
) -> ApiResult {
    let grace = delete_options(query, body)?;
    match kind {
        Kind::Pod => {
            let pod = pods::delete(state, namespace, name, grace)?;
            Ok(json_response(StatusCode::OK, &pod, &[]))
        }
        Kind::Namespace => {
            let current =
                state.store.get(kind, "", name).ok_or_else(|| ApiError::not_found(kind, name))?;
            let (pods_in_namespace, _) = state.store.list(Kind::Pod, Some(name));
            for pod in pods_in_namespace {
                let _ = pods::delete(state, name, &object_name(&pod), grace);
            }
            for other in [
                Kind::Secret,
                Kind::ConfigMap,
                Kind::ServiceAccount,
                Kind::Event,
                Kind::ResourceQuota,
            ] {
                let (items, _) = state.store.list(other, Some(name));
                for item in items {
                    let _ = state.store.delete(other, name, &object_name(&item));
                }
            }
            let mut last =
                (*state.store.delete(kind, "", name).map_err(|e| store_error(kind, name, e))?)
                    .clone();
            last["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            last["status"]["phase"] = json!("Terminating");
            let _ = current;
            Ok(json_response(StatusCode::OK, &last, &[]))
        }
        Kind::Secret
        | Kind::ConfigMap
        | Kind::ServiceAccount
        | Kind::Event
        | Kind::ResourceQuota
        | Kind::Node => {
            let removed = state
                .store
                .delete(kind, namespace, name)
                .map_err(|e| store_error(kind, name, e))?;
            let uid = removed.pointer("/metadata/uid").and_then(Value::as_str);
            Ok(json_response(StatusCode::OK, &success_status(kind, name, uid), &[]))
        }
    }
}

/// The conditions the kubelet owns; others (`DisruptionTarget` from an eviction, `PodScheduled`)
/// are kept when the node reports a new status, as the kubelet's status manager merges them.
const KUBELET_CONDITIONS: &[&str] =
    &["Initialized", "Ready", "ContainersReady", "PodReadyToStartContainers"];

fn keep_foreign_conditions(current: &Value, next: &mut Value) {
    let Some(old) = current.get("conditions").and_then(Value::as_array) else { return };
    let mut merged = next.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    for condition in old {
        let type_ = condition.get("type").and_then(Value::as_str).unwrap_or_default();
        let present = merged.iter().any(|c| c.get("type").and_then(Value::as_str) == Some(type_));
        if !present && !KUBELET_CONDITIONS.contains(&type_) {
            merged.push(condition.clone());
        }
    }
    if !merged.is_empty() {
        next["conditions"] = Value::Array(merged);
    }
}

impl ClusterView for State {
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let object = self.store.get(Kind::Secret, namespace, name)?;
        serde_json::from_value((*object).clone()).ok()
    }

    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        let object = self.store.get(Kind::ConfigMap, namespace, name)?;
        serde_json::from_value((*object).clone()).ok()
    }

    fn kubernetes_service(&self) -> Option<std::net::SocketAddr> {
        Some(self.in_cluster.0)
    }

    fn set_pod_status(&self, namespace: &str, name: &str, status: PodStatus) {
        let Ok(mut status) = serde_json::to_value(&status) else { return };
        let _ = self.store.update(Kind::Pod, namespace, name, None, |pod| {
            keep_foreign_conditions(&pod["status"], &mut status);
            pod["status"] = status;
            Ok::<(), ()>(())
        });
    }

    fn record_pod_event(
        &self,
        namespace: &str,
        pod: &str,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        pods::record_event(self, namespace, pod, type_, reason, message);
    }

    fn pod_terminated(&self, namespace: &str, name: &str) {
        if self.store.delete(Kind::Pod, namespace, name).is_ok() {
            tracing::debug!(k8s.namespace.name = namespace, k8s.pod.name = name, "pod removed");
        }
    }

    fn node_heartbeat(&self, node: &str) {
        super::nodes::heartbeat(self, node);
    }
}

/// Hands a pod deletion to the node (used by [`pods::delete`]).
pub(crate) fn tell_node_deleted(
    state: &State,
    node: &Arc<dyn NodeRuntime>,
    namespace: &str,
    name: &str,
    grace: i64,
) {
    if let Some(view) = state.view() {
        node.pod_deleted(namespace, name, grace, view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_replaces_merges_and_removes() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut target, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(target, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn paths_name_kind_namespace_name_and_subresource() {
        let t = parse_target("namespaces/ns/pods/p/log").expect("parses");
        assert_eq!(
            (t.kind, t.namespace, t.name, t.subresource),
            (Kind::Pod, Some("ns"), Some("p"), Some("log"))
        );
        let t = parse_target("namespaces/ns").expect("parses");
        assert_eq!((t.kind, t.namespace, t.name), (Kind::Namespace, None, Some("ns")));
        let t = parse_target("pods").expect("parses");
        assert_eq!((t.kind, t.namespace, t.name), (Kind::Pod, None, None));
    }
}
