//! API tokens of `strata server`: who a request comes from.
//!
//! A token is `strata_` and 32 bytes from the operating system's random source, base64url.
//! It is shown once, when created; the table keeps only its sha256, so a copy of
//! `strata.db` gives no one a token. A token acts for one user in one team (a person in
//! two teams has a token for each); `admin` makes its holder an admin of that team.
//! Revoking sets `revoked_at`: the token fails at its next request.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{open_migrated, Counter, Schema};

/// What every token starts with (so a leaked one is recognisable by secret scanners).
pub const TOKEN_PREFIX: &str = "strata_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// The longest user or team name.
const MAX_NAME: usize = 64;

const SCHEMA: Schema = Schema {
    counter: Counter::Table("tokens_schema"),
    migrations: &["CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            team TEXT NOT NULL,
            admin INTEGER NOT NULL,
            sha256 TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        );
        CREATE INDEX api_tokens_user ON api_tokens (user);"],
};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token database {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no random bytes from the operating system for a token")]
    Random(#[source] getrandom::Error),
    #[error("invalid {what} {value:?}: 1 to 64 letters, digits, '.', '_' or '-'")]
    InvalidName { what: &'static str, value: String },
    #[error("invalid team {0:?}: 1 to 63 lowercase letters, digits or '-', not at either end (a team names its Kubernetes namespace and its registry repository)")]
    InvalidTeam(String),
    #[error("no token {0} (strata token list shows them)")]
    NoSuchToken(String),
}

/// A token as listed (never the secret: it is not kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub team: String,
    pub admin: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// Who holds a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub token_id: String,
    pub user: String,
    pub team: String,
    pub admin: bool,
}

/// A token just created: its record, and the secret to hand to its holder once.
#[derive(Debug)]
pub struct Created {
    pub info: TokenInfo,
    pub secret: String,
}

/// The token table of one `strata.db`.
pub struct Tokens {
    conn: Connection,
    path: String,
}

impl Tokens {
    pub fn open(db: &Path) -> Result<Tokens, TokenError> {
        let path = db.display().to_string();
        let conn = open_migrated(db, &SCHEMA).map_err(|source| TokenError::Sqlite {
            path: path.clone(),
            source,
        })?;
        Ok(Tokens { conn, path })
    }

    fn sql(&self, source: rusqlite::Error) -> TokenError {
        TokenError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// A new token for `user` in `team`; its secret is in the answer and nowhere else.
    pub fn create(&self, user: &str, team: &str, admin: bool) -> Result<Created, TokenError> {
        check_name("user", user)?;
        check_team(team)?;
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
        let secret = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let mut id_bytes = [0u8; 6];
        getrandom::fill(&mut id_bytes).map_err(TokenError::Random)?;
        let info = TokenInfo {
            id: format!("t-{}", hex::encode(id_bytes)),
            user: user.to_string(),
            team: team.to_string(),
            admin,
            created_at: unix_now(),
            revoked_at: None,
        };
        self.conn
            .execute(
                "INSERT INTO api_tokens (id, user, team, admin, sha256, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    info.id,
                    info.user,
                    info.team,
                    info.admin,
                    hash(&secret),
                    info.created_at
                ],
            )
            .map_err(|e| self.sql(e))?;
        Ok(Created { info, secret })
    }

    /// Every token, oldest first, revoked ones included.
    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, user, team, admin, created_at, revoked_at FROM api_tokens
                 ORDER BY created_at, id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TokenInfo {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    team: r.get(2)?,
                    admin: r.get(3)?,
                    created_at: r.get(4)?,
                    revoked_at: r.get(5)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// Revokes one token by id; an unknown id is an error, a revoked one stays as it was.
    pub fn revoke(&self, id: &str) -> Result<(), TokenError> {
        let exists: Option<String> = self
            .conn
            .query_row("SELECT id FROM api_tokens WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        if exists.is_none() {
            return Err(TokenError::NoSuchToken(id.to_string()));
        }
        self.conn
            .execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, unix_now()],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Revokes every token of `user`; how many were live.
    pub fn revoke_user(&self, user: &str) -> Result<usize, TokenError> {
        self.conn
            .execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE user = ?1 AND revoked_at IS NULL",
                params![user, unix_now()],
            )
            .map_err(|e| self.sql(e))
    }

    /// The holder of `secret`, if it is a live token.
    pub fn verify(&self, secret: &str) -> Result<Option<Identity>, TokenError> {
        // Anything else cannot be a token: no lookup for it.
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 128 {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT id, user, team, admin FROM api_tokens
                 WHERE sha256 = ?1 AND revoked_at IS NULL",
                [hash(secret)],
                |r| {
                    Ok(Identity {
                        token_id: r.get(0)?,
                        user: r.get(1)?,
                        team: r.get(2)?,
                        admin: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sql(e))
    }
}

/// The stored form of a token: its sha256, hex. The secret has 256 random bits, so a plain
/// hash (no salt, no slow KDF) cannot be reversed by guessing.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn check_name(what: &'static str, value: &str) -> Result<(), TokenError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TokenError::InvalidName {
            what,
            value: value.to_string(),
        })
    }
}

/// Whether `team` can name a team: a DNS label, since `strata deploy` makes a namespace of
/// it and `[server] registry` a repository path component.
pub fn is_team_name(team: &str) -> bool {
    !team.is_empty()
        && team.len() <= 63
        && team
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !team.starts_with('-')
        && !team.ends_with('-')
}

fn check_team(team: &str) -> Result<(), TokenError> {
    if is_team_name(team) {
        return Ok(());
    }
    Err(TokenError::InvalidTeam(team.to_string()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_until_revoked_and_only_its_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("strata.db");
        let tokens = Tokens::open(&db).unwrap();
        let created = tokens.create("alice", "vision", false).unwrap();
        assert!(created.secret.starts_with(TOKEN_PREFIX));
        let who = tokens.verify(&created.secret).unwrap().unwrap();
        assert_eq!((who.user.as_str(), who.team.as_str()), ("alice", "vision"));
        assert_eq!(tokens.verify("strata_nope").unwrap(), None);
        let bytes = std::fs::read(&db).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&created.secret));
        tokens.revoke(&created.info.id).unwrap();
        assert_eq!(tokens.verify(&created.secret).unwrap(), None);
        assert!(matches!(
            tokens.revoke("t-000000000000"),
            Err(TokenError::NoSuchToken(_))
        ));
        assert!(matches!(
            tokens.create("a b", "t", false),
            Err(TokenError::InvalidName { .. })
        ));
    }
}
