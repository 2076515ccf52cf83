//! The routes. Each handler authenticates first (401 before anything about the request is
//! said), then works on a fresh [`Client`] on a blocking thread: SQLite and the store are
//! synchronous, and the agent shares the same database.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use strata_agent::{Client, ClientError, JobMetrics, JobOutputs, JobStatus, OutputsState};
use strata_db::tokens::Identity;
use strata_queue::{Job, JobView, NewJob, OutputPath, SubmitError};

use crate::access::{scrub_reason, Caller};
use crate::connections::Connections;
use crate::error::ApiError;
use crate::settings::ServerSettings;
use crate::types::{CapacityResponse, RegistryResponse, SubmitRequest, SubmitResponse, WhoAmI};
use crate::writers::Writers;

/// The largest request body (a submit is a few hundred bytes).
pub const BODY_LIMIT: usize = 64 * 1024;
/// The most jobs one metrics request may name.
const MAX_METRIC_JOBS: usize = 100;
/// The threads that run submits and cancels (they take turns on the database anyway).
const WRITERS: usize = 2;
/// How often a followed log is read again.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
/// The header a client names one submit with, so that a retried POST is the same job.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// The longest idempotency key taken.
const MAX_KEY_LEN: usize = 128;

/// Where the server's `strata.db` and store are (`root`), and the project whose
/// `strata.toml` configures the queues; the connections kept between requests.
#[derive(Clone)]
pub struct AppState {
    connections: Arc<Connections>,
    /// Where submits and cancels run, after the reads ([`crate::writers`]).
    writers: Arc<Writers>,
    /// `[server]` of strata.toml: the teams' registry.
    settings: Arc<ServerSettings>,
    /// Served over TLS: the web session cookie is `Secure`.
    pub(crate) tls: bool,
}

impl AppState {
    /// The state of a server; starts its writing threads.
    pub fn new(
        root: PathBuf,
        project: PathBuf,
        settings: ServerSettings,
        tls: bool,
    ) -> std::io::Result<AppState> {
        Ok(AppState {
            connections: Arc::new(Connections::new(root, project)),
            writers: Arc::new(Writers::start(WRITERS)?),
            settings: Arc::new(settings),
            tls,
        })
    }
}

/// The API (`/api/v1/...`, `/openapi.json`) and the web pages (`/`, see [`crate::web`]).
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/whoami", get(whoami))
        .route("/jobs", get(list_jobs).post(submit))
        .route("/jobs/{id}", get(status))
        .route("/jobs/{id}/log", get(log))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/jobs/{id}/outputs", get(outputs).delete(delete_outputs))
        .route("/jobs/{id}/outputs/files/{*path}", get(output_file))
        .route("/metrics", get(metrics))
        .route("/capacity", get(capacity))
        .route("/images", get(images))
        .route("/registry", get(registry));
    Router::new()
        .nest("/api/v1", api)
        .merge(crate::web::routes())
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route (GET /openapi.json describes the API)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route (GET /openapi.json describes the API)",
    )
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

/// The bearer token of the request, never logged.
fn bearer(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(ApiError::unauthorized)?;
    Ok(token.trim().to_string())
}

/// Authenticates the bearer token, then runs `work` for the caller on a blocking thread.
async fn as_caller<T, F>(state: &AppState, headers: &HeaderMap, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Caller) -> Result<T, ApiError> + Send + 'static,
{
    as_token(state, bearer(headers)?, work).await
}

/// Authenticates `token` (from a header or the web session), then runs `work` for the caller
/// on a blocking thread.
pub(crate) async fn as_token<T, F>(state: &AppState, token: String, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Caller) -> Result<T, ApiError> + Send + 'static,
{
    let connections = state.connections.clone();
    tokio::task::spawn_blocking(move || for_caller(&connections, &token, work))
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))?
}

/// [`as_caller`] for a request that writes: on the writing threads, after the reads.
async fn as_writing_caller<T, F>(
    state: &AppState,
    headers: &HeaderMap,
    work: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Caller) -> Result<T, ApiError> + Send + 'static,
{
    let token = bearer(headers)?;
    let connections = state.connections.clone();
    state
        .writers
        .run(move || for_caller(&connections, &token, work))
        .await
}

fn for_caller<T, F>(connections: &Connections, token: &str, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&Caller) -> Result<T, ApiError>,
{
    let who = authenticate(connections, token)?;
    let (opened, client) = connections.client()?;
    let caller = Caller { who, client };
    let result = work(&caller);
    connections.give_client((opened, caller.client));
    result
}

fn authenticate(connections: &Connections, token: &str) -> Result<Identity, ApiError> {
    let tokens = connections.tokens()?;
    let who = tokens.verify(token);
    connections.give_tokens(tokens);
    who.map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(ApiError::unauthorized)
}

/// A rejected body as a JSON error with the rejection's own status (400 malformed, 413 too
/// large, 415 not JSON, 422 unknown or missing fields).
fn body_error(rejection: JsonRejection) -> ApiError {
    ApiError::new(rejection.status(), rejection.body_text())
}

fn query_error(rejection: QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text())
}

async fn whoami(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<WhoAmI>, ApiError> {
    as_caller(&state, &headers, |caller| {
        Ok(Json(WhoAmI {
            user: caller.who.user.clone(),
            team: caller.who.team.clone(),
            admin: caller.who.admin,
        }))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    queue: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn list_jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    as_caller(&state, &headers, move |caller| {
        let Query(query) = query.map_err(query_error)?;
        if let Some(queue) = &query.queue {
            caller.queue(queue)?;
        }
        let queues = caller.queues();
        let mut views = caller.client.views(query.queue.as_deref(), query.all)?;
        views.retain(|v| queues.contains(&v.queue));
        Ok(Json(scrubbed(views, caller)?))
    })
    .await
}

/// Views whose reasons name no job outside the caller's team.
pub(crate) fn scrubbed(mut views: Vec<JobView>, caller: &Caller) -> Result<Vec<JobView>, ApiError> {
    // Most reasons name no job: the set of visible ids is only worth a read for those that do.
    let names_a_job = |v: &JobView| v.reason.as_deref().is_some_and(|r| r.contains("j-"));
    if !views.iter().any(names_a_job) {
        return Ok(views);
    }
    let queues = caller.queues();
    let visible: HashSet<String> = caller
        .client
        .views(None, true)?
        .into_iter()
        .filter(|v| queues.contains(&v.queue))
        .map(|v| v.id.to_string())
        .collect();
    for view in &mut views {
        if let Some(reason) = &view.reason {
            view.reason = Some(scrub_reason(reason, &visible));
        }
    }
    Ok(views)
}

async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    let connections = state.connections.clone();
    as_caller(&state, &headers, move |caller| {
        let job = caller.job(&id)?;
        let known = connections.recent_view(&job);
        let mut status = caller.client.status_seen(job, known.as_ref())?;
        let view = scrubbed(vec![status.view], caller)?;
        status.view = view
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        Ok(Json(status))
    })
    .await
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let connections = state.connections.clone();
    let settings = state.settings.clone();
    let key = idempotency_key(&headers);
    as_writing_caller(&state, &headers, move |caller| {
        let Json(request) = body.map_err(body_error)?;
        let key = key?;
        caller.queue(&request.queue)?;
        let asked = request.clone();
        if let Some(id) = earlier_job(caller, key.as_deref(), &asked)? {
            return Ok(replayed(id));
        }
        if let Some(image) = settings.submitted_image(&request.image, &caller.who.team)? {
            check_manifest(&image)?;
        }
        let job = new_job(request, &caller.who.user, key.clone())?;
        let submitted = {
            let _turn = connections.write_turn();
            // A retry that raced the first attempt past the check above.
            if let Some(id) = earlier_job(caller, key.as_deref(), &asked)? {
                return Ok(replayed(id));
            }
            match caller.client.submit_with_code(job, None) {
                Ok(submitted) => submitted,
                // Another process (a second server) stored it in between.
                Err(ClientError::Submit(SubmitError::Repeated { job, .. })) => {
                    return Ok(replayed(job.to_string()))
                }
                Err(e) => return Err(e.into()),
            }
        };
        tracing::info!(job = %submitted.id, user = %caller.who.user, "submitted");
        if connections.keeps_views() {
            if let Ok(job) = caller.client.job(submitted.id.as_str()) {
                connections.expect_view(job);
            }
        }
        Ok((
            StatusCode::CREATED,
            Json(SubmitResponse {
                id: submitted.id.to_string(),
            }),
        ))
    })
    .await
}

/// Whether `job` is what `request` asks for: a retry (the same) rather than another submit
/// sent under a key already used.
fn is_submitted_as(job: &Job, request: &SubmitRequest) -> bool {
    let image = match &job.environment {
        strata_queue::Environment::Image { reference } => *reference == request.image,
        strata_queue::Environment::Requirements { .. } => false,
    };
    image
        && job.queue == request.queue
        && job.tier == request.tier
        && job.command == request.command
        && job.name == request.name
        && job.env == request.env
        && job.working_dir == request.workdir
}

/// The job the caller submitted earlier with idempotency key `key`. The same key with a
/// different submit is refused (422): answering the first job would hide that the second
/// was never queued.
fn earlier_job(
    caller: &Caller,
    key: Option<&str>,
    asked: &SubmitRequest,
) -> Result<Option<String>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let Some(id) = caller
        .client
        .job_by_idempotency_key(&caller.who.user, key)?
    else {
        return Ok(None);
    };
    let job = caller.client.job(id.as_str())?;
    if !is_submitted_as(&job, asked) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Idempotency-Key {key:?} was sent before with another submit (job {id}): \
                 send a new key for a new job"
            ),
        ));
    }
    Ok(Some(id.to_string()))
}

/// The answer to a retried submit: the first attempt's job.
fn replayed(id: String) -> (StatusCode, Json<SubmitResponse>) {
    (StatusCode::OK, Json(SubmitResponse { id }))
}

/// The request's `Idempotency-Key`, if any: 1 to 128 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(format!(
            "header Idempotency-Key: give 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))
    };
    let key = value.to_str().map_err(|_| bad())?;
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_KEY_LEN || !visible {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// A registry image must be there before a job names it (HEAD of its manifest), so that a
/// submit naming nothing stores nothing. Runs on the request's blocking thread.
fn check_manifest(image: &strata_registry::ImageRef) -> Result<(), ApiError> {
    let Some(reference) = image.reference.clone() else {
        return Err(ApiError::bad_request(format!("image {image}: no digest")));
    };
    let unreachable = |e: strata_registry::RegistryError| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "the team registry {} did not answer for {image}: {}",
                image.repo.registry,
                strata_errors::chain(&e)
            ),
        )
    };
    let registry =
        strata_registry::Registry::new(&image.repo.registry, false).map_err(unreachable)?;
    let found = tokio::runtime::Handle::current()
        .block_on(registry.manifest_exists(&image.repo, &reference))
        .map_err(unreachable)?;
    match found {
        Some(_) => Ok(()),
        None => Err(ApiError::bad_request(format!(
            "image {image}: {} has no such manifest (push it first: strata submit -r does)",
            image.repo
        ))),
    }
}

/// The job a submit asks for, as the caller's; its image is looked up in the server's store,
/// or (a registry image) pulled by the agent.
fn new_job(request: SubmitRequest, user: &str, key: Option<String>) -> Result<NewJob, ApiError> {
    if request.command.is_empty() {
        return Err(ApiError::bad_request("command: give the command to run"));
    }
    let timeout = match &request.timeout {
        Some(t) => Some(
            strata_config::parse_duration(t)
                .map_err(|e| ApiError::bad_request(format!("timeout: {e}")))?,
        ),
        None => None,
    };
    let outputs = request
        .outputs
        .iter()
        .map(|o| o.parse::<OutputPath>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(format!("outputs: {e}")))?;
    Ok(NewJob {
        queue: request.queue,
        tier: request.tier,
        user: Some(user.to_string()),
        priority: request.priority,
        name: request.name,
        environment: Some(strata_queue::Environment::Image {
            reference: request.image,
        }),
        image_digest: None,
        command: request.command,
        env: request.env,
        working_dir: request.workdir,
        outputs,
        timeout,
        retries: request.retries,
        retry_exit_codes: (!request.retry_on_exit.is_empty()).then_some(request.retry_on_exit),
        retry_on_oom: request.retry_on_oom.then_some(true),
        code: None,
        idempotency_key: key,
    })
}

async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    as_writing_caller(&state, &headers, move |caller| {
        let job = caller.job(&id)?;
        caller.may_change(&job, "cancel")?;
        let result = caller.client.cancel(&id)?;
        tracing::info!(job = %id, user = %caller.who.user, "cancel");
        Ok(Json(serde_json::json!({ "job": id, "result": result })))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
    /// Stream until the job ends.
    #[serde(default)]
    follow: bool,
}

/// The header saying whether the job had ended when its log was read.
pub const FINISHED_HEADER: &str = "strata-job-finished";

/// What a job's `--output` directories held when it ended (as `strata outputs JOB`),
/// without the server's own paths.
async fn outputs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobOutputs>, ApiError> {
    as_caller(&state, &headers, move |caller| {
        caller.job(&id)?;
        let mut outputs = caller.client.outputs(&id)?;
        outputs.dir = PathBuf::new();
        Ok(Json(outputs))
    })
    .await
}

/// One collected file, by the path its listing gives: only a listed file is served, so no
/// path a caller writes reaches the filesystem.
async fn output_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let file = as_caller(&state, &headers, move |caller| {
        caller.job(&id)?;
        let outputs = caller.client.outputs(&id)?;
        if outputs.state != OutputsState::Collected {
            return Err(ApiError::not_found(outputs.unavailable().to_string()));
        }
        let Some(listed) = outputs.files.iter().find(|f| f.path == path) else {
            return Err(ApiError::not_found(format!(
                "job {id} has no output file {path:?} (GET /api/v1/jobs/{id}/outputs lists them)"
            )));
        };
        let file = std::fs::File::open(outputs.dir.join(&listed.path))
            .map_err(|e| ApiError::internal(format!("output file {path:?} of job {id}: {e}")))?;
        Ok((file, listed.size))
    })
    .await?;
    let (file, size) = file;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
        (header::CONTENT_LENGTH, HeaderValue::from(size)),
    ];
    Ok((headers, body).into_response())
}

/// Deletes a finished job's collected outputs (its owner, or an admin of its team).
async fn delete_outputs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    as_writing_caller(&state, &headers, move |caller| {
        let job = caller.job(&id)?;
        caller.may_change(&job, "delete the outputs of")?;
        let deleted = caller.client.delete_outputs(&id)?;
        tracing::info!(job = %id, user = %caller.who.user, deleted, "outputs deleted");
        Ok(Json(serde_json::json!({ "job": id, "deleted": deleted })))
    })
    .await
}

async fn log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let connections = state.connections.clone();
    let (query, bytes, finished, id) = as_caller(&state, &headers, move |caller| {
        let Query(query) = query.map_err(query_error)?;
        caller.job(&id)?;
        let (bytes, finished) = caller.client.log(&id, query.offset)?;
        Ok((query, bytes, finished, id))
    })
    .await?;
    let content = [(header::CONTENT_TYPE, "application/octet-stream")];
    if !query.follow || finished {
        let flag = HeaderValue::from_static(if finished { "true" } else { "false" });
        return Ok((content, [(FINISHED_HEADER, flag)], bytes).into_response());
    }
    let client = tokio::task::spawn_blocking(move || connections.open_client())
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))??;
    let client = Arc::new(Mutex::new((client, id)));
    let offset = query.offset + bytes.len() as u64;
    Ok((content, Body::from_stream(follow(client, bytes, offset))).into_response())
}

/// The log from `offset` on, as it grows, until the job ends.
fn follow(
    client: Arc<Mutex<(Client, String)>>,
    first: Vec<u8>,
    offset: u64,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let start = (Some(first), offset, false);
    futures_util::stream::unfold(start, move |(pending, offset, done)| {
        let client = client.clone();
        async move {
            if let Some(bytes) = pending {
                return Some((Ok(bytes), (None, offset, done)));
            }
            if done {
                return None;
            }
            loop {
                let reader = client.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let guard = reader
                        .lock()
                        .map_err(|_| std::io::Error::other("poisoned"))?;
                    guard
                        .0
                        .log(&guard.1, offset)
                        .map_err(|e| std::io::Error::other(strata_errors::chain(&e)))
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
                match read {
                    Err(e) => return Some((Err(e), (None, offset, true))),
                    Ok((bytes, finished)) if !bytes.is_empty() || finished => {
                        let next = offset + bytes.len() as u64;
                        return Some((Ok(bytes), (None, next, finished)));
                    }
                    Ok(_) => tokio::time::sleep(FOLLOW_EVERY).await,
                }
            }
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsQuery {
    /// Job ids, comma-separated.
    jobs: String,
    name: Option<String>,
}

async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<MetricsQuery>, QueryRejection>,
) -> Result<Json<Vec<JobMetrics>>, ApiError> {
    as_caller(&state, &headers, move |caller| {
        let Query(query) = query.map_err(query_error)?;
        let ids: Vec<String> = query
            .jobs
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if ids.is_empty() || ids.len() > MAX_METRIC_JOBS {
            return Err(ApiError::bad_request(format!(
                "jobs: give 1 to {MAX_METRIC_JOBS} job ids, comma-separated"
            )));
        }
        for id in &ids {
            caller.job(id)?;
        }
        Ok(Json(caller.client.metrics(&ids, query.name.as_deref())?))
    })
    .await
}

async fn capacity(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<CapacityResponse>, ApiError> {
    as_caller(&state, &headers, |caller| {
        Ok(Json(CapacityResponse {
            queues: caller.queues(),
            tiers: caller.client.capacity()?,
            team: caller.who.team.clone(),
        }))
    })
    .await
}

async fn images(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    as_caller(&state, &headers, |caller| {
        let catalog = caller.client.images_of_queues(&caller.queues())?;
        serde_json::to_value(&catalog)
            .map(Json)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
}

/// Where the caller's team pushes its jobs' images (`strata submit -r` through the server).
async fn registry(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<RegistryResponse>, ApiError> {
    let settings = state.settings.clone();
    as_caller(&state, &headers, move |caller| {
        let repository = settings.team_repository(&caller.who.team)?;
        Ok(Json(RegistryResponse {
            team: caller.who.team.clone(),
            repository: repository.map(|r| r.to_string()),
        }))
    })
    .await
}

/// The routes, for the test that holds `/openapi.json` to them: (method, path).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/whoami"),
    ("get", "/api/v1/jobs"),
    ("post", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{id}"),
    ("get", "/api/v1/jobs/{id}/log"),
    ("post", "/api/v1/jobs/{id}/cancel"),
    ("get", "/api/v1/jobs/{id}/outputs"),
    ("delete", "/api/v1/jobs/{id}/outputs"),
    ("get", "/api/v1/jobs/{id}/outputs/files/{path}"),
    ("get", "/api/v1/metrics"),
    ("get", "/api/v1/capacity"),
    ("get", "/api/v1/images"),
    ("get", "/api/v1/registry"),
];
