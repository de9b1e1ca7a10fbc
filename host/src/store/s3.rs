//! Component bytes in an S3-compatible bucket (AWS S3, MinIO, Ceph, moto…), through the
//! `object_store` crate: the [`BlobStore`] several nodes share.
//!
//! Keys are `[prefix/]sha256/ab/<hex>`, as on disk. An S3 `PUT` makes an object appear whole or
//! not at all, so there are no partial writes to sweep; every read checks the digest, so a
//! damaged object is an error, never wrong code. Requests are retried briefly (twice, within
//! ten seconds): a bucket that is down fails a publish or a first load cleanly instead of
//! holding it for minutes.

use super::BlobStore;
use super::bridge;
use crate::model::Digest;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, PutPayload, RetryConfig};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Blobs in an S3 bucket.
#[derive(Debug)]
pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    /// Where the digests live: `[prefix/]sha256`.
    root: Path,
}

impl S3BlobStore {
    /// The bucket named by `url`: `s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]`. The
    /// endpoint is for S3-compatible servers (an `http://` one is allowed); credentials come
    /// from the environment as for every AWS tool (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, or the instance's role).
    pub fn open(url: &str) -> io::Result<Self> {
        Self::open_with(url, None)
    }

    /// [`open`](Self::open) with these credentials (an access key id and its secret) rather
    /// than the environment's.
    pub fn open_with_keys(url: &str, key_id: &str, secret: &str) -> io::Result<Self> {
        Self::open_with(url, Some((key_id, secret)))
    }

    fn open_with(url: &str, keys: Option<(&str, &str)>) -> io::Result<Self> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid(format!("{url}: a blob store URL starts with s3://")))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty() {
            return Err(invalid(format!("{url}: no bucket")));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
            });
        if let Some((key_id, secret)) = keys {
            builder = builder
                .with_access_key_id(key_id)
                .with_secret_access_key(secret);
        }
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            builder = match &*key {
                "endpoint" => builder
                    .with_allow_http(value.starts_with("http://"))
                    .with_endpoint(value),
                "region" => builder.with_region(value),
                other => {
                    return Err(invalid(format!(
                        "{url}: unknown parameter `{other}` (endpoint and region are known)"
                    )));
                }
            };
        }
        let store = builder.build().map_err(|e| invalid(e.to_string()))?;
        let root = match prefix.trim_matches('/') {
            "" => Path::from("sha256"),
            prefix => Path::from(format!("{prefix}/sha256")),
        };
        Ok(Self {
            store: Arc::new(store),
            root,
        })
    }

    fn key(&self, digest: &Digest) -> Path {
        let hex = digest.hex();
        self.root.child(&hex[..2]).child(hex)
    }

    fn list(&self) -> io::Result<Vec<Digest>> {
        let store = self.store.clone();
        let root = self.root.clone();
        let objects =
            bridge::run(async move { store.list(Some(&root)).try_collect::<Vec<_>>().await })
                .map_err(io_error)?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let name = o.location.filename()?;
                format!("sha256:{name}").parse().ok()
            })
            .collect())
    }
}

/// An object store error as I/O: a missing object is `NotFound`; one the store could not be
/// asked about (connection refused, a timeout) is `ConnectionRefused`, which the registry
/// reports as a store that is unavailable.
fn io_error(e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        object_store::Error::Generic { .. } => io::ErrorKind::ConnectionRefused,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("the blob store: {e}"))
}

impl BlobStore for S3BlobStore {
    fn put(&self, digest: &Digest, bytes: &[u8]) -> io::Result<()> {
        if Digest::of(bytes) != *digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bytes do not match digest",
            ));
        }
        let (store, key) = (self.store.clone(), self.key(digest));
        let payload = PutPayload::from(bytes.to_vec());
        let size = bytes.len() as u64;
        bridge::run(async move {
            match store.head(&key).await {
                Ok(meta) if meta.size == size => return Ok(()),
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            store.put(&key, payload).await.map(drop)
        })
        .map_err(io_error)
    }

    fn get(&self, digest: &Digest) -> io::Result<Option<Vec<u8>>> {
        let (store, key) = (self.store.clone(), self.key(digest));
        let bytes = bridge::run(async move { store.get(&key).await?.bytes().await });
        match bytes {
            Ok(bytes) if Digest::of(&bytes) == *digest => Ok(Some(bytes.to_vec())),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {digest} is damaged: its bytes no longer match the digest"),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    fn delete(&self, digest: &Digest) -> io::Result<()> {
        let (store, key) = (self.store.clone(), self.key(digest));
        match bridge::run(async move { store.delete(&key).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    fn sweep(&self) -> io::Result<Vec<Digest>> {
        // A PUT is atomic: nothing half-written to remove.
        self.list()
    }

    fn digests(&self) -> io::Result<Vec<Digest>> {
        self.list()
    }

    fn check(&self) -> io::Result<()> {
        let (store, key) = (self.store.clone(), self.root.child("readyz"));
        match bridge::run(async move { store.head(&key).await }) {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }
}
