//! Load on a running `strata server` (scripts/bench-server runs it): CLIENTS threads, each
//! with its own HTTP connection, submit a job and then poll the status of its jobs, over and
//! over, for SECONDS. Prints the latency of submits and status polls (p50, p99, max), the
//! errors, and whether every job the server acknowledged is listed exactly once afterwards.
//!
//!   load URL TOKEN IMAGE [CLIENTS] [SECONDS] [QUEUE]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

/// Status polls per submit: clients mostly watch their jobs.
const POLLS_PER_SUBMIT: usize = 4;

#[derive(Default)]
struct Tally {
    submit: Vec<Duration>,
    status: Vec<Duration>,
    /// The status of the job the client has just submitted (the first of its polls).
    newest: Vec<Duration>,
    errors: Vec<String>,
    ids: Vec<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn report(name: &str, mut samples: Vec<Duration>, seconds: f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<7} n={:<7} {:>7.1}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms",
        samples.len(),
        samples.len() as f64 / seconds,
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(samples.last().copied().unwrap_or_default()),
    );
}

fn client_loop(url: &str, token: &str, body: &Value, until: Instant) -> Tally {
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let mut tally = Tally::default();
    let mut mine: Vec<String> = Vec::new();
    while Instant::now() < until {
        let start = Instant::now();
        let sent = http
            .post(format!("{url}/api/v1/jobs"))
            .bearer_auth(token)
            .json(body)
            .send();
        match sent {
            Ok(r) if r.status().as_u16() == 201 => {
                tally.submit.push(start.elapsed());
                let id = r
                    .json::<Value>()
                    .ok()
                    .and_then(|v| v["id"].as_str().map(String::from));
                match id {
                    Some(id) => {
                        tally.ids.push(id.clone());
                        mine.push(id);
                    }
                    None => tally.errors.push("submit: no id in the answer".into()),
                }
            }
            Ok(r) => tally.errors.push(format!("submit: {}", r.status())),
            Err(e) => tally.errors.push(format!("submit: {e}")),
        }
        for i in 0..POLLS_PER_SUBMIT {
            let Some(id) = mine.get(mine.len().saturating_sub(1 + i)) else {
                break;
            };
            let start = Instant::now();
            match http
                .get(format!("{url}/api/v1/jobs/{id}"))
                .bearer_auth(token)
                .send()
            {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes();
                    tally.status.push(start.elapsed());
                    if i == 0 {
                        tally.newest.push(start.elapsed());
                    }
                }
                Ok(r) => tally.errors.push(format!("status: {}", r.status())),
                Err(e) => tally.errors.push(format!("status: {e}")),
            }
        }
    }
    tally
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: load URL TOKEN IMAGE [CLIENTS] [SECONDS] [QUEUE]");
        std::process::exit(2);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (url, token, image) = (args[1].clone(), args[2].clone(), args[3].clone());
    let clients: usize = args.get(4).map_or(200, |c| c.parse().expect("CLIENTS"));
    let seconds: u64 = args.get(5).map_or(60, |s| s.parse().expect("SECONDS"));
    let queue = args.get(6).cloned().unwrap_or_else(|| "vision".into());
    let body = json!({"queue": queue, "tier": "cpu", "image": image, "command": ["true"]});
    let until = Instant::now() + Duration::from_secs(seconds);
    let total = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (url, token, body, total) =
                (url.clone(), token.clone(), body.clone(), total.clone());
            std::thread::spawn(move || {
                let tally = client_loop(&url, &token, &body, until);
                let mut total = total.lock().unwrap();
                total.submit.extend(tally.submit);
                total.status.extend(tally.status);
                total.newest.extend(tally.newest);
                total.errors.extend(tally.errors);
                total.ids.extend(tally.ids);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = std::mem::take(&mut *total.lock().unwrap());
    println!("{clients} clients for {elapsed:.1} s");
    report("submit", total.submit, elapsed);
    report("status", total.status, elapsed);
    report("  of the job just submitted", total.newest, elapsed);

    // Every acknowledged job listed exactly once, and nothing listed that was not acknowledged.
    let listed: Vec<Value> = Client::new()
        .get(format!("{url}/api/v1/jobs?all=true"))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(120))
        .send()
        .and_then(|r| r.json())
        .expect("the job list");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for job in &listed {
        *counts
            .entry(job["id"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let lost = total
        .ids
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .count();
    let duplicated = counts.values().filter(|n| **n > 1).count();
    let unexpected = counts.len().saturating_sub(total.ids.len());
    println!(
        "jobs acknowledged {}, listed {}, lost {lost}, duplicated {duplicated}, unacknowledged {unexpected}",
        total.ids.len(),
        listed.len()
    );
    println!("errors {}", total.errors.len());
    for e in total.errors.iter().take(10) {
        println!("  {e}");
    }
    let ok = total.errors.is_empty() && lost == 0 && duplicated == 0 && unexpected == 0;
    std::process::exit(if ok { 0 } else { 1 });
}
