//! Connections kept between requests. Opening a `Client` reads the configuration, opens the
//! store and runs each component's migration check in a write transaction; doing that per
//! request would take `strata.db`'s write lock several times for every read, against the
//! agent. Idle clients are reused for a few seconds only, so a change of `strata.toml` or of
//! the pools the agent publishes is seen soon after.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_agent::Client;
use strata_db::tokens::Tokens;

use crate::error::ApiError;

/// How long an opened client is reused.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// Idle connections kept, of each kind.
const KEEP: usize = 32;

pub struct Connections {
    root: PathBuf,
    project: PathBuf,
    clients: Mutex<Vec<(Instant, Client)>>,
    tokens: Mutex<Vec<Tokens>>,
    /// Held by each submit: the server's writers queue here, in order, rather than in
    /// SQLite's busy handler, whose sleeps grow while others hold the write lock (a submit
    /// under load waited seconds there).
    writes: Mutex<()>,
}

impl Connections {
    pub fn new(root: PathBuf, project: PathBuf) -> Connections {
        Connections {
            root,
            project,
            clients: Mutex::new(Vec::new()),
            tokens: Mutex::new(Vec::new()),
            writes: Mutex::new(()),
        }
    }

    /// A fresh client, with when it was opened (to give back with [`Connections::give_client`]).
    pub fn client(&self) -> Result<(Instant, Client), ApiError> {
        let idle = self.clients.lock().ok().and_then(|mut c| c.pop());
        if let Some((opened, client)) = idle {
            if opened.elapsed() < FRESH_FOR {
                return Ok((opened, client));
            }
        }
        Ok((Instant::now(), self.open_client()?))
    }

    /// A client of its own (a followed log keeps one for as long as it streams).
    pub fn open_client(&self) -> Result<Client, ApiError> {
        Ok(Client::open(&self.root, &self.project)?)
    }

    pub fn give_client(&self, client: (Instant, Client)) {
        if client.0.elapsed() >= FRESH_FOR {
            return;
        }
        if let Ok(mut idle) = self.clients.lock() {
            if idle.len() < KEEP {
                idle.push(client);
            }
        }
    }

    /// The server's turn to write to `strata.db` (the agent still takes SQLite's lock).
    pub fn write_turn(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn tokens(&self) -> Result<Tokens, ApiError> {
        if let Some(tokens) = self.tokens.lock().ok().and_then(|mut t| t.pop()) {
            return Ok(tokens);
        }
        Tokens::open(&self.root.join("strata.db")).map_err(|e| ApiError::internal(e.to_string()))
    }

    pub fn give_tokens(&self, tokens: Tokens) {
        if let Ok(mut idle) = self.tokens.lock() {
            if idle.len() < KEEP {
                idle.push(tokens);
            }
        }
    }
}
