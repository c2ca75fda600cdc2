//! The shared cache's object storage, from `[runners.cache]` as upstream spells it: `Type`
//! `s3` (AWS or any S3-compatible server), `gcs` or `azure`, the `Path` prefix, `Shared`, and
//! each backend's CamelCase keys. Objects are named as upstream names them:
//! `<Path>/runner/<short token>/project/<project id>/<key>`, without `runner/<short token>`
//! when `Shared`. One crate (`object_store`) signs for all three backends.

use std::path::Path as FsPath;
use std::sync::Arc;

use futures::StreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore};
use podrunner_config::raw::{OpaqueTable, RawCache};
use tokio::io::AsyncWriteExt as _;

/// Where the cache of one runner lives.
#[derive(Debug, Clone)]
pub struct CacheStore {
    store: Arc<dyn ObjectStore>,
    /// `<Path>/[runner/<short token>/]project/<id>`.
    base: String,
    /// `s3 bucket "x" at host` (for the log; no credentials).
    described: String,
}

fn text(table: Option<&OpaqueTable>, key: &str) -> Option<String> {
    match table?.0.get(key)? {
        toml::Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn flag(table: Option<&OpaqueTable>, key: &str) -> bool {
    matches!(table.and_then(|t| t.0.get(key)), Some(toml::Value::Boolean(true)))
}

fn join(parts: &[&str]) -> String {
    parts.iter().flat_map(|p| p.split('/')).filter(|p| !p.is_empty()).collect::<Vec<_>>().join("/")
}

impl CacheStore {
    /// The store `[runners.cache]` configures for a runner (short token) and a project;
    /// `Ok(None)` without a `Type`.
    ///
    /// # Errors
    ///
    /// An unknown `Type` or settings the backend refuses (no bucket, a bad address).
    pub fn from_config(
        cache: &RawCache,
        short_token: &str,
        project_id: &str,
    ) -> Result<Option<Self>, String> {
        let Some(kind) = cache.type_.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        // object_store builds its own reqwest client, which (built without a provider of its
        // own) takes the process's: ring, the one kube and the coordinator client use. Another
        // provider installed first is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (store, described): (Arc<dyn ObjectStore>, String) = match kind {
            "s3" => {
                let s3 = cache.s3.as_ref();
                let bucket =
                    text(s3, "BucketName").ok_or("[runners.cache.s3] has no BucketName")?;
                let insecure = flag(s3, "Insecure");
                // Credentials from the config, else the environment (AWS_ACCESS_KEY_ID, an IAM
                // role), as upstream's `AuthenticationType = "iam"` does.
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_region(
                        text(s3, "BucketLocation").unwrap_or_else(|| "us-east-1".to_owned()),
                    )
                    .with_client_options(ClientOptions::new().with_allow_http(insecure));
                let host = text(s3, "ServerAddress");
                if let Some(host) = &host {
                    let scheme = if insecure { "http" } else { "https" };
                    builder = builder
                        .with_endpoint(format!("{scheme}://{host}"))
                        // S3-compatible servers (MinIO, moto, Ceph) take the bucket in the path,
                        // as upstream's default `BucketLookup = "auto"` does for them.
                        .with_virtual_hosted_style_request(false);
                }
                if text(s3, "AuthenticationType").as_deref() != Some("iam") {
                    if let Some(key) = text(s3, "AccessKey") {
                        builder = builder.with_access_key_id(key);
                    }
                    if let Some(secret) = text(s3, "SecretKey") {
                        builder = builder.with_secret_access_key(secret);
                    }
                    if let Some(token) = text(s3, "SessionToken") {
                        builder = builder.with_token(token);
                    }
                }
                let store = builder.build().map_err(|e| format!("[runners.cache.s3]: {e}"))?;
                let at = host.unwrap_or_else(|| "s3.amazonaws.com".to_owned());
                (Arc::new(store), format!("s3 bucket {bucket:?} at {at}"))
            }
            "gcs" => {
                let gcs = cache.gcs.as_ref();
                let bucket =
                    text(gcs, "BucketName").ok_or("[runners.cache.gcs] has no BucketName")?;
                let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(&bucket);
                if let Some(file) = text(gcs, "CredentialsFile") {
                    builder = builder.with_service_account_path(file);
                }
                let store = builder.build().map_err(|e| format!("[runners.cache.gcs]: {e}"))?;
                (Arc::new(store), format!("gcs bucket {bucket:?}"))
            }
            "azure" => {
                let azure = cache.azure.as_ref();
                let account =
                    text(azure, "AccountName").ok_or("[runners.cache.azure] has no AccountName")?;
                let container = text(azure, "ContainerName")
                    .ok_or("[runners.cache.azure] has no ContainerName")?;
                let mut builder = MicrosoftAzureBuilder::from_env()
                    .with_account(&account)
                    .with_container_name(&container);
                if let Some(key) = text(azure, "AccountKey") {
                    builder = builder.with_access_key(key);
                }
                if let Some(domain) = text(azure, "StorageDomain") {
                    builder = builder.with_endpoint(format!("https://{account}.{domain}"));
                }
                let store = builder.build().map_err(|e| format!("[runners.cache.azure]: {e}"))?;
                (Arc::new(store), format!("azure container {container:?} of account {account:?}"))
            }
            other => {
                return Err(format!(
                    "[runners.cache] Type {other:?} is not one this runner supports (s3, gcs, azure)"
                ));
            }
        };
        let prefix = cache.path.as_deref().unwrap_or("");
        let runner = if cache.shared == Some(true) {
            String::new()
        } else {
            format!("runner/{short_token}")
        };
        let base = join(&[prefix, &runner, "project", project_id]);
        Ok(Some(Self { store, base, described }))
    }

    /// What the store is, for the job log.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// The object name of `key`, or why the key cannot be one (it leaves the project's prefix).
    pub fn object(&self, key: &str) -> Result<String, String> {
        if key.is_empty() || key.split('/').any(|p| p == ".." || p == ".") {
            return Err(format!(
                "cache key {key:?} leaves the project's cache: remove `../` from the key"
            ));
        }
        Ok(join(&[&self.base, key]))
    }

    /// Downloads `key` into `dest`: `Ok(None)` when there is no such object.
    ///
    /// # Errors
    ///
    /// The store's or the file's error.
    pub async fn get(&self, key: &str, dest: &FsPath) -> Result<Option<u64>, String> {
        let path = ObjectPath::from(self.object(key)?);
        let result = match self.store.get(&path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(|e| e.to_string())?;
        let mut stream = result.into_stream();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
            bytes += chunk.len() as u64;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        Ok(Some(bytes))
    }

    /// Uploads the file `source` as `key` (a multipart upload when it is large), streaming it.
    ///
    /// # Errors
    ///
    /// The store's or the file's error.
    pub async fn put(&self, key: &str, source: &FsPath) -> Result<u64, String> {
        let path = ObjectPath::from(self.object(key)?);
        let mut file = tokio::fs::File::open(source).await.map_err(|e| e.to_string())?;
        let mut writer = object_store::buffered::BufWriter::with_capacity(
            Arc::clone(&self.store),
            path,
            8 * 1024 * 1024,
        );
        let bytes = tokio::io::copy(&mut file, &mut writer).await.map_err(|e| e.to_string())?;
        writer.shutdown().await.map_err(|e| e.to_string())?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> RawCache {
        toml::from_str(toml_text).expect("cache table")
    }

    #[test]
    fn objects_are_named_as_upstream_names_them() {
        let cache = config(
            "Type = \"s3\"\nPath = \"ci/\"\n[s3]\nServerAddress = \"127.0.0.1:9000\"\nBucketName = \"b\"\nInsecure = true\nAccessKey = \"k\"\nSecretKey = \"s\"\n",
        );
        let store =
            CacheStore::from_config(&cache, "abcdef123", "42").expect("ok").expect("a store");
        assert_eq!(
            store.object("deps-1-protected"),
            Ok("ci/runner/abcdef123/project/42/deps-1-protected".to_owned())
        );
        assert_eq!(store.describe(), "s3 bucket \"b\" at 127.0.0.1:9000");
        assert!(store.object("../other-project/key").is_err());
        let shared = config("Type = \"s3\"\nShared = true\n[s3]\nBucketName = \"b\"\n");
        let store =
            CacheStore::from_config(&shared, "abcdef123", "42").expect("ok").expect("a store");
        assert_eq!(store.object("k"), Ok("project/42/k".to_owned()));
    }

    #[test]
    fn no_type_is_no_store_and_an_unknown_one_or_a_missing_bucket_is_an_error() {
        assert!(CacheStore::from_config(&RawCache::default(), "t", "1").expect("ok").is_none());
        let error =
            CacheStore::from_config(&config("Type = \"ftp\"\n"), "t", "1").expect_err("refused");
        assert!(error.contains("\"ftp\""), "{error}");
        let error =
            CacheStore::from_config(&config("Type = \"s3\"\n"), "t", "1").expect_err("refused");
        assert!(error.contains("BucketName"), "{error}");
        let azure = config(
            "Type = \"azure\"\n[azure]\nAccountName = \"acct\"\nAccountKey = \"a2V5\"\nContainerName = \"c\"\n",
        );
        let store = CacheStore::from_config(&azure, "t", "1").expect("ok").expect("a store");
        assert_eq!(store.describe(), "azure container \"c\" of account \"acct\"");
    }
}
