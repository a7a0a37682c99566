//! Where client commands find their server and key: flags, then
//! `HANGAR_SERVER_URL`/`HANGAR_API_KEY` (clap reads both into the flags), then
//! the credentials `hangar server`/`hangar up` saved on first start.

use anyhow::{Context, Result, bail};
use hangar_client::Client;
use hangar_server::CliCredentials;
use std::path::PathBuf;

/// Default server URL.
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:7420";

/// The saved credentials file.
pub fn saved_path() -> Option<PathBuf> {
    hangar_server::config::default_cli_config_path()
}

fn saved() -> Option<CliCredentials> {
    let path = saved_path()?;
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// A client from flags, environment and saved credentials.
pub fn client(api_key: Option<&str>, server_url: Option<&str>) -> Result<Client> {
    let saved = saved();
    let url = server_url
        .map(str::to_owned)
        .or_else(|| saved.as_ref().map(|s| s.server_url.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER_URL.to_owned());
    let key = match api_key {
        Some(k) => k.to_owned(),
        None => match &saved {
            Some(s) => s.api_key.clone(),
            None => bail!(
                "no API key: pass --api-key, set HANGAR_API_KEY, or start a server on this machine \
                 (`hangar up`), which saves one to {}",
                saved_path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the config dir".into())
            ),
        },
    };
    Client::new(&url, key).with_context(|| format!("server URL `{url}`"))
}
