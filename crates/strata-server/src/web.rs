//! The web pages at `/` (rendered by `strata-web`), behind the same tokens as the API: the
//! login form exchanges a token for an HttpOnly, SameSite=Strict session cookie holding it,
//! so a revoked token ends its sessions at their next request. Every page and image checks
//! the caller's team as the API does: another team's job is "not found".

use std::collections::HashSet;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use strata_agent::JobMetrics;
use strata_web::{Run, Viewer};

use crate::access::Caller;
use crate::api::{as_token, scrubbed, AppState};
use crate::error::ApiError;

/// The session cookie's name.
const COOKIE: &str = "strata_session";
/// The most log bytes a page or one poll carries (a job page shows the end of a longer log).
const LOG_WINDOW: u64 = 256 * 1024;
/// The most runs one comparison draws.
const MAX_COMPARED: usize = 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(queues))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/log", get(job_log))
        .route("/jobs/{id}/chart.png", get(job_chart))
        .route("/compare", get(compare))
        .route("/compare/chart.png", get(compare_chart))
        .route("/static/style.css", get(style))
        .route("/static/live.js", get(script))
}

/// A failed page: the login form when there is no valid session, else a message page.
enum PageError {
    Login,
    Api(ApiError),
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> PageError {
        if error.status == StatusCode::UNAUTHORIZED {
            return PageError::Login;
        }
        PageError::Api(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Login => Redirect::to("/login").into_response(),
            PageError::Api(error) => {
                let title = error.status.canonical_reason().unwrap_or("Error");
                let page = strata_web::message_page(None, title, &error.message);
                (error.status, Html(page)).into_response()
            }
        }
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            pair.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
        .filter(|t| !t.is_empty())
}

/// Runs `work` for the session's caller on a blocking thread (401 without a valid session).
async fn as_session<T, F>(state: &AppState, headers: &HeaderMap, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Caller) -> Result<T, ApiError> + Send + 'static,
{
    let token = session_token(headers).ok_or_else(ApiError::unauthorized)?;
    as_token(state, token, work).await
}

fn viewer(caller: &Caller) -> Viewer<'_> {
    Viewer {
        user: &caller.who.user,
        team: &caller.who.team,
    }
}

async fn login_form() -> Html<String> {
    Html(strata_web::login_page(None))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    token: String,
}

async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim().to_string();
    match as_token(&state, token.clone(), |_| Ok(())).await {
        Ok(()) => {}
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let page = strata_web::login_page(Some("Unknown or revoked token."));
            return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
        }
        Err(e) => return PageError::Api(e).into_response(),
    }
    let secure = if state.tls { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut response = Redirect::to("/").into_response();
    // A token that authenticated is `strata_` and base64url: always a valid header value.
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn logout() -> Response {
    let mut response = Redirect::to("/login").into_response();
    let expired = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&expired) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn queues(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Html<String>, PageError> {
    let page = as_session(&state, &headers, |caller| {
        let queues = caller.queues();
        let mut views = caller.client.views(None, true)?;
        views.retain(|v| queues.contains(&v.queue));
        let views = scrubbed(views, caller)?;
        let capacity = caller.client.capacity()?;
        Ok(strata_web::queues_page(&viewer(caller), &views, &capacity))
    })
    .await?;
    Ok(Html(page))
}

/// The series names of a job's metrics.
fn metric_names(metrics: &[JobMetrics]) -> Vec<String> {
    let mut names: Vec<String> = metrics
        .iter()
        .flat_map(|m| m.series.iter().map(|s| s.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let page = as_session(&state, &headers, move |caller| {
        caller.job(&id)?;
        let mut status = caller.client.status(&id)?;
        status.view = scrubbed(vec![status.view], caller)?
            .pop()
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        // Only the end of a long log is read: the page follows it from there.
        let length = std::fs::metadata(&status.log).map_or(0, |m| m.len());
        let (tail, _) = caller.client.log(&id, length.saturating_sub(LOG_WINDOW))?;
        let shown = length.saturating_sub(LOG_WINDOW) + tail.len() as u64;
        let log = String::from_utf8_lossy(&tail).into_owned();
        let metrics = caller.client.metrics(std::slice::from_ref(&id), None)?;
        Ok(strata_web::job_page(
            &viewer(caller),
            &status,
            &log,
            shown,
            &metric_names(&metrics),
        ))
    })
    .await?;
    Ok(Html(page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
}

/// The log from `offset` (at most [`LOG_WINDOW`] bytes), for the page's live view.
async fn job_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let offset = query
        .map_err(|e| ApiError::bad_request(e.body_text()))?
        .0
        .offset;
    let (mut bytes, finished) = as_session(&state, &headers, move |caller| {
        caller.job(&id)?;
        Ok(caller.client.log(&id, offset)?)
    })
    .await?;
    // Finished only once the last bytes are sent: a longer rest comes with the next poll.
    let finished = finished && bytes.len() <= LOG_WINDOW as usize;
    bytes.truncate(LOG_WINDOW as usize);
    let next = offset + bytes.len() as u64;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("x-next-offset"),
                next.to_string(),
            ),
            (
                header::HeaderName::from_static("x-job-finished"),
                finished.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `metric=NAME` and the `jobs` of a query (`jobs=a,b` and/or `jobs=a&jobs=b`).
fn chart_query(raw: Option<String>) -> (Option<String>, Vec<String>) {
    let raw = raw.unwrap_or_default();
    let mut metric = None;
    let mut jobs = Vec::new();
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        match key.as_ref() {
            "metric" => metric = Some(value.into_owned()),
            "jobs" => jobs.extend(
                value
                    .split(',')
                    .filter(|j| !j.is_empty())
                    .map(str::to_string),
            ),
            _ => {}
        }
    }
    let mut seen = HashSet::new();
    jobs.retain(|j| seen.insert(j.clone()));
    (metric, jobs)
}

fn png(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response()
}

async fn job_chart(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (metric, _) = chart_query(raw);
    let metric = metric.ok_or_else(|| ApiError::bad_request("metric: name the metric to draw"))?;
    let bytes = as_session(&state, &headers, move |caller| {
        caller.job(&id)?;
        let metrics = caller.client.metrics(&[id], Some(&metric))?;
        Ok(caller.client.chart_png(&metrics)?)
    })
    .await?;
    Ok(png(bytes))
}

/// The compared jobs, each checked to be the caller's team's.
fn compared(caller: &Caller, jobs: &[String]) -> Result<(), ApiError> {
    if jobs.is_empty() || jobs.len() > MAX_COMPARED {
        return Err(ApiError::bad_request(format!(
            "jobs: select 1 to {MAX_COMPARED} runs to compare"
        )));
    }
    for id in jobs {
        caller.job(id)?;
    }
    Ok(())
}

async fn compare(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Html<String>, PageError> {
    let (_, jobs) = chart_query(raw);
    let page = as_session(&state, &headers, move |caller| {
        compared(caller, &jobs)?;
        let mut statuses = Vec::new();
        for id in &jobs {
            statuses.push(caller.client.status(id)?);
        }
        let views = scrubbed(statuses.iter().map(|s| s.view.clone()).collect(), caller)?;
        let runs: Vec<Run> = views
            .iter()
            .zip(&statuses)
            .map(|(view, status)| Run {
                view,
                command: &status.command,
            })
            .collect();
        let metrics = caller.client.metrics(&jobs, None)?;
        Ok(strata_web::compare_page(
            &viewer(caller),
            &runs,
            &metric_names(&metrics),
        ))
    })
    .await?;
    Ok(Html(page))
}

async fn compare_chart(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (metric, jobs) = chart_query(raw);
    let metric = metric.ok_or_else(|| ApiError::bad_request("metric: name the metric to draw"))?;
    let bytes = as_session(&state, &headers, move |caller| {
        compared(caller, &jobs)?;
        let metrics = caller.client.metrics(&jobs, Some(&metric))?;
        Ok(caller.client.chart_png(&metrics)?)
    })
    .await?;
    Ok(png(bytes))
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css")], strata_web::STYLE).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript")],
        strata_web::LIVE_SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; strata_session=strata_abc; x=1"),
        );
        assert_eq!(session_token(&headers).as_deref(), Some("strata_abc"));
        headers.insert(header::COOKIE, HeaderValue::from_static("strata_session="));
        assert_eq!(session_token(&headers), None);
    }

    #[test]
    fn chart_queries_take_repeated_and_comma_separated_jobs_once() {
        let (metric, jobs) = chart_query(Some(
            "metric=val%20loss&jobs=j-a,j-b&jobs=j-c&jobs=j-a".into(),
        ));
        assert_eq!(metric.as_deref(), Some("val loss"));
        assert_eq!(jobs, ["j-a", "j-b", "j-c"]);
    }
}
