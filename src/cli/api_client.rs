//! The HTTP client the `chorus user ...` and `chorus cluster ...` verbs share:
//! finds a node's admin API (through `--data-dir`, or `--api` and `--token`)
//! and turns an HTTP error with a JSON body `{"error": "..."}` into that message.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

use super::ApiArgs;
use crate::data_dir as files;

/// How long one admin API call may take before the CLI gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    pub(crate) fn new(args: &ApiArgs) -> Result<Client> {
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
            .timeout_global(Some(CALL_TIMEOUT))
            .build()
            .into();
        Ok(Client { base, token, agent })
    }

    /// One call; any HTTP status is returned with the body (JSON, or the text as a string).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
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

    /// One call that must succeed (2xx); otherwise the API's `error` message.
    pub(crate) fn expect(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
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
