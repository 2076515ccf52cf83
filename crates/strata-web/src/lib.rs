//! The team service's web pages, rendered on the server as HTML (maud escapes every value a
//! job or a user wrote): the queues of the viewer's teams with each job's position and
//! reason and the free capacity per tier, a job's page with its log (followed live by a
//! small script) and its metric charts, and a comparison of selected runs. Charts are PNG
//! images drawn by `strata-metrics`; the pages load nothing from outside the server.
//!
//! The pages link to these routes of the server (see `strata-server`):
//! `GET /` (queues), `GET|POST /login`, `POST /logout`, `GET /jobs/{id}`,
//! `GET /jobs/{id}/log?offset=N` (the log from byte N, with headers `x-next-offset` and
//! `x-job-finished`), `GET /jobs/{id}/chart.png?metric=M`, `GET /compare?jobs=ID&jobs=ID`,
//! `GET /compare/chart.png?metric=M&jobs=ID,ID`, `GET /static/{style.css,live.js}`.

mod params;

use maud::{html, Markup, DOCTYPE};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use strata_agent::JobStatus;
#[cfg(test)]
use strata_queue::JobState;
use strata_queue::{human_duration, JobView, TierCapacity};

pub use params::parameters;

/// The stylesheet, served at `/static/style.css`.
pub const STYLE: &str = include_str!("assets/style.css");
/// The script that follows a running job's log and charts, served at `/static/live.js`.
pub const LIVE_SCRIPT: &str = include_str!("assets/live.js");

/// Who is looking: shown in the header.
pub struct Viewer<'a> {
    pub user: &'a str,
    pub team: &'a str,
}

/// A job of a comparison: its view and its command (for the parameters).
pub struct Run<'a> {
    pub view: &'a JobView,
    pub command: &'a [String],
}

fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · strata" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header {
                    strong { a href="/" { "strata" } }
                    @if let Some(viewer) = viewer {
                        span.who {
                            (viewer.user) " · team " (viewer.team)
                            " "
                            form method="post" action="/logout" style="display:inline" {
                                button type="submit" { "log out" }
                            }
                        }
                    }
                }
                main { (body) }
                script src="/static/live.js" {}
            }
        }
    }
    .into_string()
}

/// The login form; `error` says why the last attempt failed.
pub fn login_page(error: Option<&str>) -> String {
    let body = html! {
        h1 { "Log in" }
        p.muted { "Paste the token `strata token create` printed for you." }
        @if let Some(error) = error {
            p.error role="alert" { (error) }
        }
        form.login method="post" action="/login" {
            label for="token" { "Token" }
            input id="token" name="token" type="password" autocomplete="off" required;
            button type="submit" { "Log in" }
        }
    };
    page("Log in", None, body)
}

fn job_link(view: &JobView) -> Markup {
    html! {
        a href={ "/jobs/" (view.id.as_str()) } { (view.id.as_str()) }
        @if let Some(name) = &view.name { " " span.muted { (name) } }
    }
}

fn state(view: &JobView) -> Markup {
    let state = view.state.as_str();
    html! { span class={ "state-" (state) } { (state) } }
}

/// The viewer's team's jobs (newest first as given) with position and reason, selectable
/// for comparison, and the capacity per tier.
pub fn queues_page(viewer: &Viewer, jobs: &[JobView], capacity: &[TierCapacity]) -> String {
    let body = html! {
        h1 { "Your cluster" }
        table #capacity {
            thead { tr { th { "tier" } th { "one job" } th.num { "could start now" } th.num { "nodes" } } }
            tbody {
                @for tier in capacity {
                    tr {
                        td { (tier.tier) } td { (tier.resources) }
                        td.num { (tier.free) } td.num { (tier.nodes) }
                    }
                }
            }
        }
        h2 { "Jobs" }
        @if jobs.is_empty() {
            p.muted { "No jobs in your team's queues." }
        } @else {
            form method="get" action="/compare" {
                table #jobs {
                    thead { tr {
                        th {} th { "job" } th { "queue" } th { "tier" } th { "user" } th { "state" }
                        th.num { "position" } th { "why" }
                    } }
                    tbody {
                        @for job in jobs {
                            tr {
                                td { input type="checkbox" name="jobs" value=(job.id.as_str()) aria-label="compare"; }
                                td { (job_link(job)) }
                                td { (job.queue) } td { (job.tier) } td { (job.user) }
                                td { (state(job)) }
                                td.num { @if let Some(p) = job.position { (p) } }
                                td { (job.reason.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
                button type="submit" { "Compare selected runs" }
            }
        }
    };
    page("Queues", Some(viewer), body)
}

fn chart_src(base: &str, metric: &str, jobs: Option<&str>) -> String {
    let metric = utf8_percent_encode(metric, NON_ALPHANUMERIC);
    match jobs {
        Some(jobs) => format!("{base}?metric={metric}&jobs={jobs}"),
        None => format!("{base}?metric={metric}"),
    }
}

fn chart(base: &str, metric: &str, jobs: Option<&str>) -> Markup {
    let src = chart_src(base, metric, jobs);
    html! {
        figure {
            img.chart src=(src) data-src=(src) alt={ "chart of " (metric) } width="800" height="450";
            figcaption { (metric) }
        }
    }
}

/// A job: its state and history, its log so far (`log_offset` = the bytes shown, followed
/// live while the job is not finished) and one chart per metric.
pub fn job_page(
    viewer: &Viewer,
    status: &JobStatus,
    log: &str,
    log_offset: u64,
    metrics: &[String],
) -> String {
    let v = &status.view;
    let id = v.id.as_str();
    let live = !v.state.is_terminal();
    let body = html! {
        h1 { (id) @if let Some(name) = &v.name { " " span.muted { (name) } } }
        table #summary {
            tr { th { "state" } td { (state(v)) } }
            tr { th { "queue / tier" } td { (v.queue) " / " (v.tier) } }
            tr { th { "user" } td { (v.user) } }
            @if let Some(p) = v.position { tr { th { "position" } td { (p) } } }
            @if let Some(reason) = &v.reason { tr { th { "why" } td { (reason) } } }
            @if let Some(code) = v.exit_code { tr { th { "exit code" } td { (code) } } }
            @if let (Some(start), Some(end)) = (v.started_at, v.finished_at) {
                tr { th { "ran" } td { (human_duration(end - start)) } }
            }
            tr { th { "command" } td { code { (status.command.join(" ")) } } }
        }
        h2 { "Metrics" }
        @if metrics.is_empty() {
            p.muted { "No metrics yet (lines `strata:metric {\"name\": ..., \"value\": ...}` in the log)." }
        }
        @for metric in metrics {
            (chart(&format!("/jobs/{id}/chart.png"), metric, None))
        }
        h2 { "Log" }
        pre.log #log data-live=(live) data-offset=(log_offset) data-src={ "/jobs/" (id) "/log" } { (log) }
        h2 { "History" }
        table #history {
            @for event in &status.history {
                tr { td { (utc(event.at)) } td { (event.state) } td { (event.detail.as_deref().unwrap_or("")) } }
            }
        }
    };
    page(id, Some(viewer), body)
}

/// A Unix time as `2026-12-06 23:59:01 UTC` (the time as stored when it is out of range).
fn utc(seconds: i64) -> String {
    match jiff::Timestamp::from_second(seconds) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => seconds.to_string(),
    }
}

/// Selected runs side by side: their parameters (from their command lines) and one chart per
/// metric, the legend naming each run by its job name.
pub fn compare_page(viewer: &Viewer, runs: &[Run], metrics: &[String]) -> String {
    let params: Vec<_> = runs.iter().map(|r| parameters(r.command)).collect();
    let mut keys: Vec<&String> = params.iter().flat_map(|p| p.keys()).collect();
    keys.sort();
    keys.dedup();
    let ids: Vec<&str> = runs.iter().map(|r| r.view.id.as_str()).collect();
    let jobs = ids.join(",");
    let body = html! {
        h1 { "Comparing " (runs.len()) " runs" }
        table #runs {
            thead { tr {
                th { "job" } th { "state" }
                @for key in &keys { th { (key) } }
            } }
            tbody {
                @for (run, p) in runs.iter().zip(&params) {
                    tr {
                        td { (job_link(run.view)) }
                        td { (state(run.view)) }
                        @for key in &keys { td { (p.get(*key).map(String::as_str).unwrap_or("")) } }
                    }
                }
            }
        }
        @for metric in metrics {
            (chart("/compare/chart.png", metric, Some(&jobs)))
        }
    };
    page("Compare", Some(viewer), body)
}

/// A page that says what went wrong (not found, forbidden look the same: not found).
pub fn message_page(viewer: Option<&Viewer>, title: &str, message: &str) -> String {
    page(title, viewer, html! { h1 { (title) } p { (message) } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const EVIL: &str = "<script>alert(1)</script>";

    fn view(state: JobState) -> JobView {
        JobView {
            id: "j-abcde23456".parse().unwrap(),
            name: Some(format!("train {EVIL}")),
            queue: "vision".into(),
            tier: "gpu1".into(),
            user: "ana".into(),
            priority: 0,
            state,
            position: Some(2),
            reason: Some(format!("waits for gpu1 {EVIL}")),
            estimated_start: None,
            submitted_at: 1_700_000_000,
            started_at: None,
            finished_at: None,
            node: None,
            gpus: vec![],
            attempt: 1,
            exit_code: None,
            signal: None,
            oom_killed: false,
            cancel_requested: false,
            image_digest: None,
        }
    }

    #[test]
    fn what_jobs_wrote_is_escaped() {
        let viewer = Viewer {
            user: "ana",
            team: "vision",
        };
        let jobs = [view(JobState::Queued)];
        let html = queues_page(&viewer, &jobs, &[]);
        assert!(!html.contains(EVIL), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        let status = JobStatus {
            view: view(JobState::Running),
            command: vec!["python".into(), EVIL.into()],
            code: None,
            log: PathBuf::from("/srv/strata/logs/j-abcde23456.log"),
            history: vec![],
        };
        let html = job_page(&viewer, &status, EVIL, 25, &[format!("loss{EVIL}")]);
        assert!(!html.contains(EVIL), "{html}");
        // The server's paths are not shown.
        assert!(!html.contains("/srv/strata"), "{html}");
    }

    #[test]
    fn a_job_page_follows_a_running_job_only() {
        let viewer = Viewer {
            user: "ana",
            team: "vision",
        };
        let page = |state| {
            let status = JobStatus {
                view: view(state),
                command: vec!["python".into(), "train.py".into()],
                code: None,
                log: PathBuf::new(),
                history: vec![],
            };
            job_page(&viewer, &status, "step 1\n", 7, &["loss".into()])
        };
        let running = page(JobState::Running);
        assert!(running.contains(r#"data-live="true""#), "{running}");
        assert!(running.contains(r#"data-offset="7""#), "{running}");
        assert!(running.contains("/jobs/j-abcde23456/chart.png?metric=loss"));
        let done = page(JobState::Succeeded);
        assert!(done.contains(r#"data-live="false""#), "{done}");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(1_796_602_933), "2026-12-07 00:22:13 UTC");
    }

    #[test]
    fn metric_names_are_encoded_in_chart_urls() {
        assert_eq!(
            chart_src("/compare/chart.png", "val loss&x=1", Some("j-a,j-b")),
            "/compare/chart.png?metric=val%20loss%26x%3D1&jobs=j-a,j-b"
        );
    }

    #[test]
    fn a_comparison_shows_each_runs_parameters() {
        let viewer = Viewer {
            user: "ana",
            team: "vision",
        };
        let (a, b) = (view(JobState::Succeeded), view(JobState::Failed));
        let cmd_a: Vec<String> = ["python", "train.py", "--lr", "0.1"]
            .map(String::from)
            .into();
        let cmd_b: Vec<String> = ["python", "train.py", "--lr=0.3", "--fp16"]
            .map(String::from)
            .into();
        let runs = [
            Run {
                view: &a,
                command: &cmd_a,
            },
            Run {
                view: &b,
                command: &cmd_b,
            },
        ];
        let html = compare_page(&viewer, &runs, &["loss".into()]);
        for needle in [
            ">lr<",
            ">fp16<",
            ">0.1<",
            ">0.3<",
            "metric=loss&amp;jobs=j-abcde23456,j-abcde23456",
        ] {
            assert!(html.contains(needle), "{needle} missing: {html}");
        }
    }
}
