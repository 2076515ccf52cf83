//! strata as a service a team shares: `strata server`'s HTTP API over the queue and the
//! agent's database, the identity of its callers, and the client the CLI uses to talk to it.
//!
//! - [`api`]: the routes under `/api/v1` and `/openapi.json`; every request carries a token
//!   (`Authorization: Bearer strata_...`) checked against `strata_db::tokens`, and sees only the
//!   queues of its team ([`access`]). The server never reads a path the client names: jobs are
//!   submitted by image reference or digest of the server's store, or by digest in the
//!   team's registry repository ([`settings`], `[server] registry`), where the CLI pushed
//!   them.
//! - [`serve`]: listening (plain HTTP only on a loopback address; TLS otherwise).
//! - [`remote`]: the blocking client of the CLI (`STRATA_SERVER`, `STRATA_TOKEN`, `strata
//!   login`), answering with the types the local commands print.
//! - [`types`]: the request and answer bodies both sides share.
//! - `connections`: what is kept between requests (clients, token stores, the queue's views,
//!   kept by a thread of their own so that no status waits for a ranking); `writers`: the
//!   lower-priority threads that submits and cancels run on, so that reads go first.
//!
//! - [`web`]: the web pages at `/` (rendered by `strata-web`), a login form exchanging a token
//!   for an HttpOnly session cookie.

pub mod access;
pub mod api;
mod connections;
mod download;
mod error;
pub mod remote;
pub mod serve;
pub mod settings;
pub mod types;
mod web;
mod writers;

pub use api::{router, AppState};
pub use error::ApiError;
pub use remote::{Remote, RemoteError};
pub use serve::{serve, ServeError, ServeOptions};
pub use settings::ServerSettings;

/// The API description served at `/openapi.json` (hand-written; a test checks it against the
/// routes).
pub const OPENAPI: &str = include_str!("openapi.json");
