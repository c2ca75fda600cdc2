//! Kubernetes `Status` error bodies (`404 NotFound`, `409 AlreadyExists`, `422 Invalid`, …),
//! worded as the real API server words them.

use axum::{
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::store::Kind;

/// One field error of a `422 Invalid` answer (a Kubernetes `field.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`, `FieldValueNotSupported`,
    /// `FieldValueForbidden`, `FieldValueTooLong`.
    pub(crate) reason: &'static str,
    /// The field path, e.g. `spec.containers[0].image`.
    pub(crate) field: String,
    /// The error body without the field, e.g. `Required value` or `Invalid value: "x": detail`.
    pub(crate) body: String,
}

impl FieldError {
    pub(crate) fn required(field: impl Into<String>, detail: &str) -> Self {
        let body = if detail.is_empty() {
            "Required value".to_owned()
        } else {
            format!("Required value: {detail}")
        };
        Self { reason: "FieldValueRequired", field: field.into(), body }
    }

    pub(crate) fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            body: format!("Invalid value: {}: {detail}", go_quote(value)),
        }
    }

    pub(crate) fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            body: format!("Duplicate value: {}", go_quote(value)),
        }
    }

    pub(crate) fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let supported: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            body: format!(
                "Unsupported value: {}: supported values: {}",
                go_quote(value),
                supported.join(", ")
            ),
        }
    }

    pub(crate) fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            body: format!("Forbidden: {detail}"),
        }
    }

    /// The whole message, `<field>: <body>`.
    pub(crate) fn message(&self) -> String {
        format!("{}: {}", self.field, self.body)
    }
}

/// Quotes a string the way Go's `%q` does for printable ASCII (what `field.Error` prints).
pub(crate) fn go_quote(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("\"{value}\""))
}

/// An error answer of the API server, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None }
    }

    pub(crate) fn not_found(kind: Kind, name: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "kind": kind.plural()})),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} {} not found", kind.plural(), go_quote(name)),
            )
        }
    }

    pub(crate) fn already_exists(kind: Kind, name: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "kind": kind.plural()})),
            ..Self::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} {} already exists", kind.plural(), go_quote(name)),
            )
        }
    }

    pub(crate) fn conflict(kind: Kind, name: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "kind": kind.plural()})),
            ..Self::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} {}: the object has been modified; please apply your changes to the latest version and try again",
                    kind.plural(),
                    go_quote(name)
                ),
            )
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// An overloaded server's answer: kube-apiserver's priority and fairness sends `429` with a
    /// `Retry-After`, an etcd timeout is a `500`, a server shutting down a `503`.
    pub(crate) fn overloaded(code: u16, retry_after: Option<u64>) -> Self {
        let (code, reason, message) = match code {
            429 => (
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests, please try again later.",
            ),
            503 => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "etcdserver: request timed out",
            ),
        };
        Self {
            details: retry_after.map(|s| json!({"retryAfterSeconds": s})),
            ..Self::new(code, reason, message)
        }
    }

    pub(crate) fn gone(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type})"
            ),
        )
    }

    /// `422 Invalid`, as `field.ErrorList.ToAggregate()` words it.
    pub(crate) fn invalid(kind: Kind, name: &str, errors: &[FieldError]) -> Self {
        let messages: Vec<String> = errors.iter().map(FieldError::message).collect();
        let joined = if messages.len() == 1 {
            messages[0].clone()
        } else {
            format!("[{}]", messages.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.body, "field": e.field}))
            .collect();
        Self {
            details: Some(json!({"name": name, "kind": kind.kind(), "causes": causes})),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("{} {} is invalid: {joined}", kind.kind(), go_quote(name)),
            )
        }
    }

    /// The HTTP status code.
    pub(crate) fn code(&self) -> StatusCode {
        self.code
    }

    /// The `Status` object.
    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.to_status().to_string();
        let retry_after = self
            .details
            .as_ref()
            .and_then(|d| d["retryAfterSeconds"].as_u64())
            .map(HeaderValue::from);
        let mut response = (self.code, body).into_response();
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(http::header::RETRY_AFTER, seconds);
        }
        response
    }
}

/// A `Status` of success, as returned for deletions of objects without graceful deletion.
pub(crate) fn success_status(kind: Kind, name: &str, uid: Option<&str>) -> Value {
    let mut details = json!({"name": name, "kind": kind.plural()});
    if let Some(uid) = uid {
        details["uid"] = Value::String(uid.to_owned());
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_lists_every_cause_in_the_message_and_details() {
        let errors = vec![
            FieldError::required("spec.containers[0].image", ""),
            FieldError::duplicate("spec.containers[1].name", "a"),
        ];
        let status = ApiError::invalid(Kind::Pod, "p", &errors).to_status();
        assert_eq!(
            status["message"],
            "Pod \"p\" is invalid: [spec.containers[0].image: Required value, spec.containers[1].name: Duplicate value: \"a\"]"
        );
        assert_eq!(status["code"], 422);
        assert_eq!(status["details"]["causes"][1]["reason"], "FieldValueDuplicate");
        assert_eq!(status["details"]["causes"][0]["field"], "spec.containers[0].image");
    }
}
