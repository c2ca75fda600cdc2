//! The request log: what kube-apiserver's audit log would say about each request (verb,
//! resource, subresource, namespace, response code), for tests that count or check requests.

use std::sync::Mutex;

use http::Method;

/// One request as an authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for a non-resource URL, the lowercase HTTP method.
    pub verb: String,
    /// The resource (`pods`), or the path of a non-resource URL (`/version`).
    pub resource: String,
    /// The subresource (`exec`, `status`, `log`), if any.
    pub subresource: Option<String>,
    /// The namespace, if any.
    pub namespace: Option<String>,
    /// The object's name, if any.
    pub name: Option<String>,
    /// The response's status code.
    pub code: u16,
    /// The client's `User-Agent`, if it sent one (the runner's says `podrunner/<version>`).
    pub user_agent: Option<String>,
}

/// Every request the server answered, in order.
#[derive(Debug, Default)]
pub(crate) struct RequestLog(Mutex<Vec<RequestRecord>>);

impl RequestLog {
    pub(crate) fn push(&self, record: RequestRecord) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(record);
    }

    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The authorizer's view of a request (kube-apiserver's `RequestInfo`): `/api/v1/...` and
/// `/apis/<group>/<version>/...` are resource requests, anything else is a non-resource URL.
/// Exec, attach and port-forward are `create` (websocket upgrades included, as with
/// `AuthorizePodWebsocketUpgradeCreatePermission`, on by default since 1.31).
pub(crate) fn classify(method: &Method, path: &str, watch: bool, code: u16) -> RequestRecord {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => {
            return RequestRecord {
                verb: method.as_str().to_ascii_lowercase(),
                resource: path.to_owned(),
                subresource: None,
                namespace: None,
                name: None,
                code,
                user_agent: None,
            };
        }
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let resource = rest.first().map_or_else(String::new, |r| (*r).to_owned());
    let name = rest.get(1).map(|n| (*n).to_owned());
    // `/namespaces/<ns>` itself is the namespace object.
    let (resource, name) = match (namespace.is_none(), rest) {
        (true, ["namespaces", ns]) => ("namespaces".to_owned(), Some((*ns).to_owned())),
        _ => (resource, name),
    };
    let subresource = rest.get(2).map(|s| (*s).to_owned());
    let connect = matches!(subresource.as_deref(), Some("exec" | "attach" | "portforward"));
    let verb = match *method {
        _ if connect => "create",
        Method::GET if watch => "watch",
        Method::GET if name.is_none() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    };
    RequestRecord {
        verb: verb.to_owned(),
        resource,
        subresource,
        namespace,
        name,
        code,
        user_agent: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verb(method: &Method, path: &str, watch: bool) -> (String, String, Option<String>) {
        let r = classify(method, path, watch, 200);
        (r.verb, r.resource, r.subresource)
    }

    #[test]
    fn requests_are_named_as_the_authorizer_names_them() {
        let s = |v: &str, r: &str, sub: Option<&str>| {
            (v.to_owned(), r.to_owned(), sub.map(str::to_owned))
        };
        assert_eq!(
            verb(&Method::GET, "/api/v1/namespaces/ci/pods", false),
            s("list", "pods", None)
        );
        assert_eq!(
            verb(&Method::GET, "/api/v1/namespaces/ci/pods", true),
            s("watch", "pods", None)
        );
        assert_eq!(
            verb(&Method::GET, "/api/v1/namespaces/ci/pods/p", false),
            s("get", "pods", None)
        );
        assert_eq!(
            verb(&Method::POST, "/api/v1/namespaces/ci/pods", false),
            s("create", "pods", None)
        );
        assert_eq!(
            verb(&Method::GET, "/api/v1/namespaces/ci/pods/p/exec", false),
            s("create", "pods", Some("exec"))
        );
        assert_eq!(
            verb(&Method::GET, "/api/v1/namespaces/ci/pods/p/log", false),
            s("get", "pods", Some("log"))
        );
        assert_eq!(
            verb(&Method::DELETE, "/api/v1/namespaces/ci/pods/p", false),
            s("delete", "pods", None)
        );
        assert_eq!(
            verb(&Method::GET, "/api/v1/namespaces/ci", false),
            s("get", "namespaces", None)
        );
        assert_eq!(verb(&Method::GET, "/version", false), s("get", "/version", None));
    }
}
