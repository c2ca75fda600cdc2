//! The artifacts endpoints as GitLab answers them: `POST /api/v4/jobs/:id/artifacts`
//! (multipart field `file`, `artifact_type`/`artifact_format`/`expire_in` in the query, the
//! job's own `Job-Token`; 201, or 413 over the size limit) and `GET /api/v4/jobs/:id/artifacts`
//! (the job's `archive`: 200, or a 302 to object storage when asked to; 404 once expired; any
//! known job token may read it, as jobs of one project may). Faults: answer the next uploads
//! with given statuses.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::{Inner, header, json_response};

/// One archive a job uploaded, as the mock stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// The job that uploaded it.
    pub job_id: u64,
    /// The multipart file name (`artifacts.zip`, `junit.gz`).
    pub file_name: String,
    /// `artifact_type` (absent means `archive`, as GitLab defaults it).
    pub artifact_type: String,
    /// `artifact_format` (absent means `zip`).
    pub artifact_format: String,
    /// `expire_in`, as sent.
    pub expire_in: Option<String>,
    /// The bytes.
    pub body: Bytes,
}

#[derive(Debug, Default)]
pub(crate) struct ArtifactStore {
    pub(crate) stored: Vec<StoredArtifact>,
    pub(crate) upload_faults: std::collections::VecDeque<u16>,
    pub(crate) max_size: Option<u64>,
    pub(crate) redirect_downloads: bool,
    pub(crate) expired: std::collections::HashSet<u64>,
    pub(crate) upload_attempts: u32,
}

impl ArtifactStore {
    /// The archive GET serves for `job_id`.
    pub(crate) fn archive(&self, job_id: u64) -> Option<&StoredArtifact> {
        self.stored.iter().rev().find(|a| a.job_id == job_id && a.artifact_type == "archive")
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct UploadQuery {
    artifact_type: Option<String>,
    artifact_format: Option<String>,
    expire_in: Option<String>,
}

fn message(status: StatusCode, text: &str) -> Response {
    json_response(status, &json!({ "message": text }))
}

pub(crate) async fn upload(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<u64>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let token = header(&headers, "job-token");
    let (known, fault, max_size) = {
        let mut d = inner.lock();
        d.artifacts.upload_attempts += 1;
        let known = d.jobs.get(&id).map(|j| Some(j.token()) == token && j.state().is_active());
        (known, d.artifacts.upload_faults.pop_front(), d.artifacts.max_size)
    };
    match known {
        None => return message(StatusCode::NOT_FOUND, "404 Not Found"),
        Some(false) => return message(StatusCode::FORBIDDEN, "403 Forbidden"),
        Some(true) => {}
    }
    let mut file = None;
    loop {
        match form.next_field().await {
            Ok(Some(mut field)) if field.name() == Some("file") => {
                let name = field.file_name().unwrap_or_default().to_owned();
                let mut body = Vec::new();
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                        Ok(None) => break,
                        Err(e) => return message(StatusCode::BAD_REQUEST, &e.to_string()),
                    }
                }
                file = Some((name, body));
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return message(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
    if let Some(status) = fault {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let text = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
        return message(status, text.trim_end());
    }
    let Some((file_name, body)) = file else {
        return message(StatusCode::BAD_REQUEST, "400 Bad request - file is missing");
    };
    if max_size.is_some_and(|max| body.len() as u64 > max) {
        return message(StatusCode::PAYLOAD_TOO_LARGE, "413 Request Entity Too Large");
    }
    inner.lock().artifacts.stored.push(StoredArtifact {
        job_id: id,
        file_name,
        artifact_type: query.artifact_type.unwrap_or_else(|| "archive".to_owned()),
        artifact_format: query.artifact_format.unwrap_or_else(|| "zip".to_owned()),
        expire_in: query.expire_in,
        body: Bytes::from(body),
    });
    message(StatusCode::CREATED, "201 Created")
}

fn readable(inner: &Inner, headers: &HeaderMap) -> bool {
    let token = header(headers, "job-token");
    let d = inner.lock();
    token.is_some_and(|t| d.jobs.values().any(|j| j.token() == t))
}

pub(crate) async fn download(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    if !readable(&inner, &headers) {
        return message(StatusCode::FORBIDDEN, "403 Forbidden");
    }
    let d = inner.lock();
    if d.artifacts.expired.contains(&id) {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    }
    let Some(archive) = d.artifacts.archive(id) else {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    };
    if d.artifacts.redirect_downloads {
        let location = format!(
            "/object-storage/artifacts/{id}/{}?X-Amz-Signature=mock-presigned",
            archive.file_name
        );
        return (StatusCode::FOUND, [(http::header::LOCATION, location)]).into_response();
    }
    archive_response(archive)
}

fn archive_response(archive: &StoredArtifact) -> Response {
    (
        StatusCode::OK,
        [
            (http::header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", archive.file_name),
            ),
        ],
        archive.body.clone(),
    )
        .into_response()
}

/// Object storage behind the redirect: a presigned URL, no job token wanted.
pub(crate) async fn object_storage(
    State(inner): State<Arc<Inner>>,
    Path((id, _name)): Path<(u64, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if !query.contains_key("X-Amz-Signature") {
        return (StatusCode::FORBIDDEN, "<Error><Code>AccessDenied</Code></Error>").into_response();
    }
    let d = inner.lock();
    match d.artifacts.archive(id) {
        Some(archive) if !d.artifacts.expired.contains(&id) => archive_response(archive),
        _ => (StatusCode::NOT_FOUND, "<Error><Code>NoSuchKey</Code></Error>").into_response(),
    }
}
