//! A remote that is a `sparse serve` server: the API of docs/PROTOCOL.md ("HTTP") over a
//! blocking client. The token, when one is set, comes from `SPARSE_TOKEN` and goes as a bearer
//! token on every request.

use serde::{Deserialize, Serialize};

use super::{Error, Kind, RefChange, Remote, MAX_OBJECT};
use crate::store::cas::Key;
use crate::store::history::ObjectId;

/// The environment variable holding the token sent to servers.
pub const TOKEN_VAR: &str = "SPARSE_TOKEN";
/// The most bytes of a JSON answer read.
const MAX_JSON: u64 = 64 << 20;

pub struct Http {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

/// `POST /v1/missing`: the keys asked about, and (answer) those the server lacks.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Keys {
    #[serde(default)]
    pub blobs: Vec<String>,
    #[serde(default)]
    pub objects: Vec<String>,
}

/// `POST /v1/full` and `POST /v1/index`: blobs and `full` rows (chunk, blob).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Rows {
    #[serde(default)]
    pub blobs: Vec<String>,
    #[serde(default)]
    pub full: Vec<(String, String)>,
}

/// `GET /v1/refs`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Refs {
    pub refs: Vec<(String, String)>,
}

/// `POST /v1/refs`: a [`RefChange`] with hex ids.
#[derive(Debug, Serialize, Deserialize)]
pub struct RefWire {
    pub name: String,
    pub expect: Option<String>,
    pub new: String,
    #[serde(default)]
    pub force: bool,
}

impl From<&RefChange> for RefWire {
    fn from(c: &RefChange) -> RefWire {
        RefWire {
            name: c.name.clone(),
            expect: c.expect.map(|i| i.to_string()),
            new: c.new.to_string(),
            force: c.force,
        }
    }
}

impl Http {
    pub fn new(url: &str) -> Result<Http, Error> {
        let base = url.trim_end_matches('/').to_string();
        let rest = base.split_once("://").map_or("", |(_, r)| r);
        if rest.is_empty() {
            return Err(Error::new(
                url,
                "open",
                "not a server URL (http://HOST:PORT)",
                Kind::Failed,
            ));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        let token = std::env::var(TOKEN_VAR).ok().filter(|t| !t.is_empty());
        Ok(Http { base, agent, token })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.base)
    }

    /// Sends a request and reads the answer's body (at most `limit` bytes); an answer that is
    /// not a success becomes an error naming what was asked.
    fn call(
        &self,
        what: &str,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        let url = self.endpoint(path);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some((kind, _)) = body {
            request = request.header("Content-Type", kind);
        }
        let fail = |why: String, kind| Error::new(&self.base, what, why, kind);
        let request = request
            .body(body.map(|(_, b)| b.to_vec()).unwrap_or_default())
            .map_err(|e| fail(e.to_string(), Kind::Failed))?;
        let mut response = self.agent.run(request).map_err(|e| fail(e.to_string(), Kind::Failed))?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| fail(format!("reading the answer: {e}"), Kind::Refused))?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        let message = String::from_utf8_lossy(&bytes[..bytes.len().min(1000)])
            .trim()
            .to_string();
        let kind = match status {
            401 | 403 => Kind::Denied,
            404 => Kind::Missing,
            409 => Kind::Conflict,
            400 | 413 | 422 => Kind::Refused,
            _ => Kind::Failed,
        };
        Err(fail(format!("the server answered {status}: {message}"), kind))
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, Error> {
        let sent = body.map(|b| serde_json::to_vec(b).expect("request bodies serialize"));
        let bytes = self.call(
            what,
            method,
            path,
            sent.as_deref().map(|b| ("application/json", b)),
            MAX_JSON,
        )?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                &self.base,
                what,
                format!("an answer that is not the expected JSON: {e}"),
                Kind::Refused,
            )
        })
    }
}

impl Remote for Http {
    fn url(&self) -> &str {
        &self.base
    }

    fn refs(&self) -> Result<Vec<(String, ObjectId)>, Error> {
        let refs: Refs = self.json("list refs", "GET", "refs", None::<&()>)?;
        let mut out = Vec::new();
        for (name, id) in refs.refs {
            let id = super::parse_ids(&self.base, std::slice::from_ref(&id))?[0];
            out.push((name, id));
        }
        Ok(out)
    }

    fn missing(&self, blobs: &[Key], objects: &[ObjectId]) -> Result<(Vec<Key>, Vec<ObjectId>), Error> {
        let ask = Keys {
            blobs: super::hex_keys(blobs),
            objects: objects.iter().map(|i| i.to_string()).collect(),
        };
        let answer: Keys = self.json("ask which objects it lacks", "POST", "missing", Some(&ask))?;
        Ok((
            super::parse_keys(&self.base, &answer.blobs)?,
            super::parse_ids(&self.base, &answer.objects)?,
        ))
    }

    fn get_blob(&self, key: &Key) -> Result<Vec<u8>, Error> {
        self.call(
            &format!("get blob {key}"),
            "GET",
            &format!("blobs/{key}"),
            None,
            MAX_OBJECT,
        )
    }

    fn put_blob(&self, key: &Key, file: &[u8]) -> Result<(), Error> {
        self.call(
            &format!("send blob {key}"),
            "PUT",
            &format!("blobs/{key}"),
            Some(("application/octet-stream", file)),
            MAX_JSON,
        )
        .map(drop)
    }

    fn get_object(&self, id: ObjectId) -> Result<Vec<u8>, Error> {
        self.call(
            &format!("get object {id}"),
            "GET",
            &format!("objects/{id}"),
            None,
            MAX_OBJECT,
        )
    }

    fn put_object(&self, id: ObjectId, canonical: &[u8]) -> Result<(), Error> {
        self.call(
            &format!("send object {id}"),
            "PUT",
            &format!("objects/{id}"),
            Some(("application/octet-stream", canonical)),
            MAX_JSON,
        )
        .map(drop)
    }

    fn full_rows(&self, blobs: &[Key]) -> Result<Vec<(Key, Key)>, Error> {
        let ask = Rows {
            blobs: super::hex_keys(blobs),
            full: Vec::new(),
        };
        let answer: Rows = self.json("read its full rows", "POST", "full", Some(&ask))?;
        let mut out = Vec::new();
        for (chunk, blob) in answer.full {
            let keys = super::parse_keys(&self.base, &[chunk, blob])?;
            out.push((keys[0], keys[1]));
        }
        Ok(out)
    }

    fn record(&self, blobs: &[Key], full: &[(Key, Key)]) -> Result<(), Error> {
        let rows = Rows {
            blobs: super::hex_keys(blobs),
            full: full.iter().map(|(c, b)| (c.to_hex(), b.to_hex())).collect(),
        };
        let _: serde_json::Value = self.json("record blob sizes", "POST", "index", Some(&rows))?;
        Ok(())
    }

    fn set_ref(&self, change: &RefChange) -> Result<(), Error> {
        let wire = RefWire::from(change);
        let _: serde_json::Value = self.json(&format!("move ref {}", change.name), "POST", "refs", Some(&wire))?;
        Ok(())
    }
}
