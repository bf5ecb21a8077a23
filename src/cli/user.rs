//! `chorus user add|del|list|passwd`: account administration over the admin API.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::ApiArgs;
use crate::node::files;

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

struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(args: &ApiArgs) -> Result<Client> {
        let (base, token) = match (&args.api, &args.token) {
            (Some(api), Some(token)) => (api.trim_end_matches('/').to_string(), token.clone()),
            (Some(_), None) | (None, Some(_)) => {
                return Err(anyhow!(
                    "give --api and --token together, or neither (to use --data-dir)"
                ))
            }
            (None, None) => {
                let info = files::read_api_info(&args.data_dir)?;
                let token = std::fs::read_to_string(args.data_dir.join(files::TOKEN_FILE))
                    .with_context(|| {
                        format!("reading the admin token in {}", args.data_dir.display())
                    })?;
                (info.url, token.trim().to_string())
            }
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Client { base, token, agent })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(b),
            _ => unreachable!("every call names its method and body"),
        };
        let mut response =
            result.map_err(|e| anyhow!("cannot reach the admin API at {}: {e}", self.base))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    fn expect(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, value) = self.call(method, path, body)?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        Err(anyhow!("{message} (HTTP {status})"))
    }
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
