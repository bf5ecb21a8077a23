//! `chorus user add|del|list|passwd`: account administration over the admin API.

use std::io::BufRead;

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::api_client::Client;
use super::ApiArgs;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account.
    Add {
        /// The account's JID, user@domain.
        jid: String,
        /// The password; without it, one line is read from standard input.
        #[arg(long)]
        password: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete an account (its open streams are closed).
    Del {
        jid: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List every account.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Change an account's password.
    Passwd {
        jid: String,
        #[arg(long)]
        password: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

fn password(given: &Option<String>) -> Result<String> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        return Err(anyhow!(
            "no password: give --password or type one line on standard input"
        ));
    }
    Ok(p)
}

fn path_jid(jid: &str) -> String {
    jid.replace('%', "%25")
        .replace('/', "%2F")
        .replace('?', "%3F")
        .replace('#', "%23")
        .replace(' ', "%20")
}

pub fn run(cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Add {
            jid,
            password: p,
            api,
        } => {
            let client = Client::new(&api)?;
            let value = client.expect(
                "POST",
                "/api/v1/users",
                Some(json!({ "jid": jid, "password": password(&p)? })),
            )?;
            println!(
                "added {}",
                value.get("jid").and_then(Value::as_str).unwrap_or(&jid)
            );
        }
        UserCommand::Del { jid, api } => {
            Client::new(&api)?.expect(
                "DELETE",
                &format!("/api/v1/users/{}", path_jid(&jid)),
                None,
            )?;
            println!("deleted {jid}");
        }
        UserCommand::List { api } => {
            let value = Client::new(&api)?.expect("GET", "/api/v1/users", None)?;
            for user in value
                .get("users")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                println!("{}", user.as_str().unwrap_or_default());
            }
        }
        UserCommand::Passwd {
            jid,
            password: p,
            api,
        } => {
            let client = Client::new(&api)?;
            let body = json!({ "password": password(&p)? });
            client.expect(
                "PUT",
                &format!("/api/v1/users/{}/password", path_jid(&jid)),
                Some(body),
            )?;
            println!("changed the password of {jid}");
        }
    }
    Ok(())
}
