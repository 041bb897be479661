//! A remote that is a prefix in an S3 bucket (`s3://BUCKET/PREFIX`), through `object_store`.
//! Credentials, region and endpoint come from the usual `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP=true` for a plain
//! HTTP endpoint); requests use path-style URLs unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
//!
//! Layout under the prefix (docs/PROTOCOL.md, "S3"): `cas/<blake3 hex>` blob files as stored,
//! `objects/<sha1 hex>` git objects in canonical encoding, `refs/heads/NAME` and
//! `refs/tags/NAME` holding a commit id, moved by conditional put (`If-None-Match: *` to
//! create, `If-Match: <ETag>` to update) so that two writers cannot both win.

use std::collections::HashSet;
use std::sync::Mutex;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{Error, Kind, RefChange, Remote, MAX_OBJECT};
use crate::store::cas::Key;
use crate::store::history::ObjectId;

pub struct S3 {
    url: String,
    prefix: String,
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
    /// What the bucket holds, listed once per transfer for "which do you lack".
    listed: Mutex<Option<(HashSet<String>, HashSet<String>)>>,
}

impl S3 {
    pub fn new(url: &str) -> Result<S3, Error> {
        let fail = |why: String| Error::new(url, "open the bucket", why, Kind::Failed);
        let rest = url.strip_prefix("s3://").unwrap_or(url);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(fail("no bucket in the URL (s3://BUCKET/PREFIX)".into()));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == ".." || p == ".") {
            return Err(fail("a prefix with '.' or '..' in it".into()));
        }
        // ring for TLS, installed once for the process (object_store's client asks rustls for
        // the default provider). An error means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(S3 {
            url: url.trim_end_matches('/').to_string(),
            prefix,
            store,
            runtime,
            listed: Mutex::new(None),
        })
    }

    fn path(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    fn error(&self, what: impl Into<String>, e: object_store::Error) -> Error {
        let kind = match e {
            object_store::Error::NotFound { .. } => Kind::Missing,
            object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. } => Kind::Conflict,
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => Kind::Denied,
            _ => Kind::Failed,
        };
        Error::new(&self.url, what, e, kind)
    }

    /// The names below `rel/` (relative to it).
    fn list(&self, rel: &str) -> Result<Vec<String>, Error> {
        let prefix = self.path(rel);
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&prefix)).try_collect())
            .map_err(|e| self.error(format!("list {rel}/"), e))?;
        let strip = format!("{}/", prefix.as_ref());
        Ok(metas
            .into_iter()
            .filter_map(|m| m.location.as_ref().strip_prefix(&strip).map(str::to_string))
            .collect())
    }

    /// An object's bytes (at most [`MAX_OBJECT`]) and its ETag.
    fn get(&self, rel: &str, what: &str) -> Result<(Vec<u8>, Option<String>), Error> {
        let path = self.path(rel);
        self.runtime.block_on(async {
            let got = self.store.get(&path).await.map_err(|e| self.error(what, e))?;
            if got.meta.size > MAX_OBJECT {
                return Err(Error::new(
                    &self.url,
                    what,
                    format!("{} bytes, more than the {MAX_OBJECT} allowed", got.meta.size),
                    Kind::Refused,
                ));
            }
            let e_tag = got.meta.e_tag.clone();
            let bytes = got.bytes().await.map_err(|e| self.error(what, e))?;
            Ok((bytes.to_vec(), e_tag))
        })
    }

    fn put(&self, rel: &str, bytes: &[u8], mode: PutMode, what: &str) -> Result<(), Error> {
        let path = self.path(rel);
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime
            .block_on(self.store.put_opts(&path, payload, PutOptions::from(mode)))
            .map(drop)
            .map_err(|e| self.error(what, e))
    }
}

impl Remote for S3 {
    fn url(&self) -> &str {
        &self.url
    }

    fn refs(&self) -> Result<Vec<(String, ObjectId)>, Error> {
        let mut out = Vec::new();
        for name in self.list("refs")? {
            let full = format!("refs/{name}");
            super::check_ref_name(&full).map_err(|e| Error::new(&self.url, "list refs", e, Kind::Refused))?;
            let (bytes, _) = self.get(&full, &format!("read ref {full}"))?;
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            let id = super::parse_ids(&self.url, &[text])?[0];
            out.push((full, id));
        }
        out.sort();
        Ok(out)
    }

    fn missing(&self, blobs: &[Key], objects: &[ObjectId]) -> Result<(Vec<Key>, Vec<ObjectId>), Error> {
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        if listed.is_none() {
            let cas: HashSet<String> = self.list("cas")?.into_iter().collect();
            let objs: HashSet<String> = self.list("objects")?.into_iter().collect();
            *listed = Some((cas, objs));
        }
        let (cas, objs) = listed.as_ref().expect("listed just above");
        Ok((
            blobs.iter().filter(|k| !cas.contains(&k.to_hex())).copied().collect(),
            objects
                .iter()
                .filter(|id| !objs.contains(&id.to_string()))
                .copied()
                .collect(),
        ))
    }

    fn get_blob(&self, key: &Key) -> Result<Vec<u8>, Error> {
        Ok(self.get(&format!("cas/{key}"), &format!("get blob {key}"))?.0)
    }

    fn put_blob(&self, key: &Key, file: &[u8]) -> Result<(), Error> {
        self.put(
            &format!("cas/{key}"),
            file,
            PutMode::Overwrite,
            &format!("send blob {key}"),
        )
    }

    fn get_object(&self, id: ObjectId) -> Result<Vec<u8>, Error> {
        Ok(self.get(&format!("objects/{id}"), &format!("get object {id}"))?.0)
    }

    fn put_object(&self, id: ObjectId, canonical: &[u8]) -> Result<(), Error> {
        self.put(
            &format!("objects/{id}"),
            canonical,
            PutMode::Overwrite,
            &format!("send object {id}"),
        )
    }

    fn full_rows(&self, _blobs: &[Key]) -> Result<Vec<(Key, Key)>, Error> {
        // A bucket keeps no index.
        Ok(Vec::new())
    }

    fn record(&self, _blobs: &[Key], _full: &[(Key, Key)]) -> Result<(), Error> {
        Ok(())
    }

    fn set_ref(&self, change: &RefChange) -> Result<(), Error> {
        super::check_ref_name(&change.name).map_err(|e| Error::new(&self.url, "move a ref", e, Kind::Refused))?;
        let what = format!("move ref {}", change.name);
        let current = match self.get(&change.name, &what) {
            Ok((bytes, e_tag)) => {
                let text = String::from_utf8_lossy(&bytes).trim().to_string();
                Some((super::parse_ids(&self.url, &[text])?[0], e_tag))
            }
            Err(e) if e.kind == Kind::Missing => None,
            Err(e) => return Err(e),
        };
        let conflict = |now: String| {
            Error::new(
                &self.url,
                &what,
                format!(
                    "it is at {now}, not {} (changed meanwhile)",
                    change.expect.map_or("nothing".into(), |i| i.to_string())
                ),
                Kind::Conflict,
            )
        };
        let mode = match (&current, change.expect) {
            (None, None) => PutMode::Create,
            (Some((now, e_tag)), Some(expect)) if *now == expect => PutMode::Update(UpdateVersion {
                e_tag: e_tag.clone(),
                version: None,
            }),
            (now, _) => return Err(conflict(now.as_ref().map_or("nothing".into(), |(i, _)| i.to_string()))),
        };
        let body = format!("{}\n", change.new);
        self.put(&change.name, body.as_bytes(), mode, &what).map_err(|e| {
            if e.kind == Kind::Conflict {
                conflict("another commit".into())
            } else {
                e
            }
        })
    }
}
