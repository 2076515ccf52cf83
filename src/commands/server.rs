//! `strata server`, `strata token`, `strata login` and `strata logout`.

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use strata_db::tokens::{TokenError, Tokens};
use strata_server::{Remote, RemoteError, ServeError, ServeOptions};

use crate::output::{self, Failure};

#[derive(Args)]
pub struct ServerArgs {
    /// Address to listen on, IP:PORT (port 0 picks one). Plain HTTP only on a loopback
    /// address; elsewhere give --tls-cert and --tls-key.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Certificate chain, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token for USER in TEAM; it is printed once and only its hash is kept.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        team: String,
        /// An admin of the team: may cancel any of the team's jobs.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke one token by id, or every token of a user (--user).
    Revoke {
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Args)]
pub struct LoginArgs {
    /// The server, e.g. https://strata.example.org:8443 (http:// only for localhost).
    pub server: String,
    /// Read the token from STRATA_TOKEN instead of the first line of stdin.
    #[arg(long)]
    pub from_env: bool,
}

pub fn server(args: ServerArgs) -> Result<(), Failure> {
    let root = strata_build::Home::default_root().map_err(Failure::home)?;
    let options = ServeOptions {
        listen: args.listen,
        tls: args.tls_cert.zip(args.tls_key),
        root: root.clone(),
        project: std::env::current_dir().unwrap_or_default(),
    };
    strata_server::serve(options, |addr, tls| {
        let scheme = if tls { "https" } else { "http" };
        eprintln!(
            "strata server: listening on {scheme}://{addr} (STRATA_HOME={})",
            root.display()
        );
    })
    .map_err(Failure::serve)
}

fn tokens() -> Result<Tokens, Failure> {
    let root = strata_build::Home::default_root().map_err(Failure::home)?;
    std::fs::create_dir_all(&root).map_err(|e| Failure::io(&root, e))?;
    Tokens::open(&root.join("strata.db")).map_err(Failure::token)
}

pub fn token(args: TokenArgs) -> Result<(), Failure> {
    let tokens = tokens()?;
    match args.command {
        TokenCommand::Create {
            user,
            team,
            admin,
            json,
        } => {
            let created = tokens.create(&user, &team, admin).map_err(Failure::token)?;
            if json {
                let mut value = serde_json::to_value(&created.info).unwrap_or_default();
                value["token"] = serde_json::Value::String(created.secret);
                println!("{value}");
            } else {
                eprintln!(
                    "token {} for {} in team {}{}; shown once, keep it:",
                    created.info.id,
                    created.info.user,
                    created.info.team,
                    if admin { " (admin)" } else { "" }
                );
                println!("{}", created.secret);
            }
        }
        TokenCommand::List { json } => {
            let list = tokens.list().map_err(Failure::token)?;
            output::print_tokens(&list, json);
        }
        TokenCommand::Revoke { id, user } => match (id, user) {
            (_, Some(user)) => {
                let n = tokens.revoke_user(&user).map_err(Failure::token)?;
                println!("revoked {n} token(s) of {user}");
            }
            (Some(id), None) => {
                tokens.revoke(&id).map_err(Failure::token)?;
                println!("revoked {id}");
            }
            (None, None) => return Err(Failure::usage("give a token id or --user USER")),
        },
    }
    Ok(())
}

pub fn login(args: LoginArgs) -> Result<(), Failure> {
    let token = if args.from_env {
        std::env::var("STRATA_TOKEN").unwrap_or_default()
    } else {
        eprintln!("token for {} (one line on stdin):", args.server);
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::usage(&format!("reading the token: {e}")))?;
        line.trim().to_string()
    };
    if token.is_empty() {
        return Err(Failure::usage("no token given"));
    }
    let (who, path) = Remote::login(&args.server, &token).map_err(Failure::remote)?;
    println!(
        "logged in to {} as {} (team {}{}); token kept in {}",
        args.server,
        who.user,
        who.team,
        if who.admin { ", admin" } else { "" },
        path.display()
    );
    Ok(())
}

pub fn logout() -> Result<(), Failure> {
    let removed = Remote::logout().map_err(Failure::remote)?;
    println!(
        "{}",
        if removed {
            "logged out"
        } else {
            "not logged in"
        }
    );
    Ok(())
}

impl Failure {
    pub fn serve(error: ServeError) -> Failure {
        let hint = match &error {
            ServeError::PlainNotLoopback(_) => {
                Some("listen on 127.0.0.1 (behind a TLS proxy), or give --tls-cert and --tls-key")
            }
            _ => None,
        };
        Failure {
            error: Box::new(error),
            hint,
            exit_code: output::EXIT_FAILURE,
        }
    }

    pub fn token(error: TokenError) -> Failure {
        let exit_code = match &error {
            TokenError::InvalidName { .. }
            | TokenError::InvalidTeam(_)
            | TokenError::NoSuchToken(_) => output::EXIT_BAD_INPUT,
            TokenError::Sqlite { .. } | TokenError::Random(_) => output::EXIT_STORE,
        };
        Failure {
            error: Box::new(error),
            hint: None,
            exit_code,
        }
    }

    pub fn remote(error: RemoteError) -> Failure {
        let (exit_code, hint) = match &error {
            RemoteError::Api { status: 401, .. } => (
                output::EXIT_BAD_INPUT,
                Some("the token is unknown or revoked: ask for a new one, then `strata login SERVER`"),
            ),
            RemoteError::Api { status, .. } if *status < 500 => (output::EXIT_BAD_INPUT, None),
            RemoteError::Address(_) | RemoteError::NoToken(_) | RemoteError::LoginFile { .. } => (
                output::EXIT_BAD_INPUT,
                Some("STRATA_SERVER and STRATA_TOKEN, or `strata login SERVER`, say which server to use"),
            ),
            _ => (output::EXIT_FAILURE, None),
        };
        Failure {
            error: Box::new(error),
            hint,
            exit_code,
        }
    }
}
