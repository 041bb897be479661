//! `sparse serve`: a store over HTTP (axum on tokio), the API of docs/PROTOCOL.md ("HTTP").
//!
//! Every request is checked against the tokens (`auth.rs`) first. Whatever arrives is
//! verified before it is stored: a blob file is decoded within its declared size and
//! re-hashed, a git object re-hashed against its id, a key or id must be hex of the right
//! length (so no name from a client becomes a path), a ref name must be a safe `refs/heads/..`
//! or `refs/tags/..` name, and a ref moves only to a commit whose whole history and blobs
//! are here, by compare-and-swap under the store's write lock, and only by fast-forward
//! unless the client forces it. Request bodies are bounded (`--max-body`).

pub mod auth;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use self::auth::{Denied, Scope, Tokens};
use crate::api::remote::is_ancestor;
use crate::api::Repository;
use crate::store::cas::Key;
use crate::store::history::ObjectId;
use crate::transport::http::{Keys, RefWire, Refs, Rows};
use crate::transport::path::PathRemote;
use crate::transport::{self, Kind, RefChange, Remote};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tokens(#[from] auth::Error),
    #[error("cannot open the store {path}: {why}")]
    Open { path: PathBuf, why: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("the server stopped: {0}")]
    Stopped(std::io::Error),
}

pub struct Options {
    pub bind: String,
    pub tokens: Tokens,
    /// The largest request body accepted (413 beyond it).
    pub max_body: usize,
}

struct Served {
    root: PathBuf,
    remote: PathRemote,
    tokens: Tokens,
}

type Shared = Arc<Served>;
type Answer = Result<Response, (StatusCode, String)>;

/// Serves the store at `root` until the process ends; `bound` is told the address listened
/// on (the port chosen when the one asked for is 0) before the first request is taken.
pub fn run(root: &Path, options: Options, bound: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let remote = PathRemote::open(root).map_err(|e| ServeError::Open {
        path: root.to_owned(),
        why: e.to_string(),
    })?;
    let state = Arc::new(Served {
        root: root.to_owned(),
        remote,
        tokens: options.tokens,
    });
    let app = Router::new()
        .route("/v1/refs", get(list_refs).post(move_ref))
        .route("/v1/missing", post(missing))
        .route("/v1/blobs/{key}", get(get_blob).put(put_blob))
        .route("/v1/objects/{id}", get(get_object).put(put_object))
        .route("/v1/full", post(full_rows))
        .route("/v1/index", post(record))
        .layer(DefaultBodyLimit::max(options.max_body))
        .with_state(state);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()
        .map_err(ServeError::Stopped)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&options.bind)
            .await
            .map_err(|source| ServeError::Bind {
                addr: options.bind.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: options.bind.clone(),
            source,
        })?;
        bound(addr);
        axum::serve(listener, app).await.map_err(ServeError::Stopped)
    })
}

/// Checks the request's token for `need`; 401 or 403 when it falls short.
fn allow(state: &Served, headers: &HeaderMap, need: Scope) -> Result<(), (StatusCode, String)> {
    let header = headers.get("authorization").and_then(|v| v.to_str().ok());
    state.tokens.check(header, need).map_err(|denied| match denied {
        Denied::Unauthenticated(why) => (StatusCode::UNAUTHORIZED, why.to_string()),
        Denied::Forbidden(why) => (StatusCode::FORBIDDEN, why.to_string()),
    })
}

/// Checks the request's token for `need`, then runs the store work `f` off the async threads.
async fn blocking(
    state: Shared,
    headers: &HeaderMap,
    need: Scope,
    f: impl FnOnce(&Served) -> Answer + Send + 'static,
) -> Response {
    if let Err(e) = allow(&state, headers, need) {
        return e.into_response();
    }
    let answer = tokio::task::spawn_blocking(move || f(&state)).await;
    match answer {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the request failed: {e}")).into_response(),
    }
}

fn status(e: &transport::Error) -> StatusCode {
    match e.kind {
        Kind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        Kind::Denied => StatusCode::FORBIDDEN,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::Missing => StatusCode::NOT_FOUND,
    }
}

fn fail(e: transport::Error) -> (StatusCode, String) {
    (status(&e), e.to_string())
}

fn bad(why: impl ToString) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, why.to_string())
}

fn json(value: &impl serde::Serialize) -> Answer {
    let body = serde_json::to_vec(value).expect("answers serialize");
    Ok(([("content-type", "application/json")], body).into_response())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(body).map_err(|e| bad(format!("not the expected JSON: {e}")))
}

fn key(hex: &str) -> Result<Key, (StatusCode, String)> {
    hex.parse().map_err(bad)
}

fn object_id(hex: &str) -> Result<ObjectId, (StatusCode, String)> {
    if hex.len() != 40 {
        return Err(bad(format!("object id {hex:?} is not 40 hex digits")));
    }
    ObjectId::from_hex(hex.as_bytes()).map_err(|e| bad(format!("object id {hex:?}: {e}")))
}

fn keys(list: &[String]) -> Result<Vec<Key>, (StatusCode, String)> {
    if list.len() > transport::BATCH {
        return Err(bad(format!("more than {} keys in one request", transport::BATCH)));
    }
    list.iter().map(|k| key(k)).collect()
}

async fn list_refs(State(state): State<Shared>, headers: HeaderMap) -> Response {
    blocking(state, &headers, Scope::Read, |s| {
        let refs = s.remote.refs().map_err(fail)?;
        json(&Refs {
            refs: refs.into_iter().map(|(n, id)| (n, id.to_string())).collect(),
        })
    })
    .await
}

async fn missing(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    blocking(state, &headers, Scope::Read, move |s| {
        let ask: Keys = parse(&body)?;
        let blobs = keys(&ask.blobs)?;
        if ask.objects.len() > transport::BATCH {
            return Err(bad(format!("more than {} ids in one request", transport::BATCH)));
        }
        let objects = ask
            .objects
            .iter()
            .map(|i| object_id(i))
            .collect::<Result<Vec<_>, _>>()?;
        let (lb, lo) = s.remote.missing(&blobs, &objects).map_err(fail)?;
        json(&Keys {
            blobs: transport::hex_keys(&lb),
            objects: lo.iter().map(|i| i.to_string()).collect(),
        })
    })
    .await
}

async fn get_blob(State(state): State<Shared>, headers: HeaderMap, UrlPath(hex): UrlPath<String>) -> Response {
    blocking(state, &headers, Scope::Read, move |s| {
        let file = s.remote.get_blob(&key(&hex)?).map_err(fail)?;
        Ok(file.into_response())
    })
    .await
}

async fn put_blob(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(hex): UrlPath<String>,
    body: Bytes,
) -> Response {
    blocking(state, &headers, Scope::Write, move |s| {
        s.remote.put_blob(&key(&hex)?, &body).map_err(fail)?;
        Ok(StatusCode::CREATED.into_response())
    })
    .await
}

async fn get_object(State(state): State<Shared>, headers: HeaderMap, UrlPath(hex): UrlPath<String>) -> Response {
    blocking(state, &headers, Scope::Read, move |s| {
        let id = object_id(&hex)?;
        let bytes = s.remote.get_object(id).map_err(|e| {
            let mut e = fail(e);
            if !s.remote.has(id) {
                e.0 = StatusCode::NOT_FOUND;
            }
            e
        })?;
        Ok(bytes.into_response())
    })
    .await
}

async fn put_object(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(hex): UrlPath<String>,
    body: Bytes,
) -> Response {
    blocking(state, &headers, Scope::Write, move |s| {
        s.remote.put_object(object_id(&hex)?, &body).map_err(fail)?;
        Ok(StatusCode::CREATED.into_response())
    })
    .await
}

async fn full_rows(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    blocking(state, &headers, Scope::Read, move |s| {
        let ask: Rows = parse(&body)?;
        let rows = s.remote.full_rows(&keys(&ask.blobs)?).map_err(fail)?;
        json(&Rows {
            blobs: Vec::new(),
            full: rows.iter().map(|(c, b)| (c.to_hex(), b.to_hex())).collect(),
        })
    })
    .await
}

async fn record(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    blocking(state, &headers, Scope::Write, move |s| {
        let rows: Rows = parse(&body)?;
        let blobs = keys(&rows.blobs)?;
        let full = rows
            .full
            .iter()
            .map(|(c, b)| Ok((key(c)?, key(b)?)))
            .collect::<Result<Vec<_>, (StatusCode, String)>>()?;
        if full.len() > 64 * transport::BATCH {
            return Err(bad("too many rows in one request"));
        }
        let repo = open(&s.root)?;
        let _lock = repo
            .lock()
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        s.remote.record(&blobs, &full).map_err(fail)?;
        json(&serde_json::json!({ "recorded": blobs.len() }))
    })
    .await
}

fn open(root: &Path) -> Result<Repository, (StatusCode, String)> {
    Repository::open(root).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn move_ref(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    blocking(state, &headers, Scope::Write, move |s| {
        let wire: RefWire = parse(&body)?;
        transport::check_ref_name(&wire.name).map_err(bad)?;
        let change = RefChange {
            expect: wire.expect.as_deref().map(object_id).transpose()?,
            new: object_id(&wire.new)?,
            name: wire.name,
            force: wire.force,
        };
        let repo = open(&s.root)?;
        let _lock = repo
            .lock()
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        check_complete(&repo, &change)?;
        if let Some(old) = change.expect.filter(|old| *old != change.new && !change.force) {
            let forward = change.name.starts_with("refs/heads/")
                && is_ancestor(&repo, old, change.new)
                    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            if !forward {
                return Err((
                    StatusCode::CONFLICT,
                    format!(
                        "{} is at {old}, which is not an ancestor of {}: not a fast-forward",
                        change.name, change.new
                    ),
                ));
            }
        }
        s.remote.set_ref(&change).map_err(fail)?;
        json(&serde_json::json!({ "name": change.name, "new": change.new.to_string() }))
    })
    .await
}

/// A ref may only name a commit whose history, snapshots and blobs are all in the store.
fn check_complete(repo: &Repository, change: &RefChange) -> Result<(), (StatusCode, String)> {
    let incomplete = |why: String| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{} cannot move to {}: {why}", change.name, change.new),
        )
    };
    let reach = repo
        .reachable_from(vec![(change.new, change.name.clone())])
        .map_err(|e| incomplete(e.to_string()))?;
    if let Some(key) = reach.blobs.iter().find(|k| !repo.cas.contains(k)) {
        return Err(incomplete(format!("blob {key} is not here")));
    }
    Ok(())
}
