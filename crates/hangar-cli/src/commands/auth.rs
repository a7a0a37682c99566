//! `hangar login`, `hangar logout`, `hangar whoami`.

use crate::commands::Global;
use crate::output::{OutputFormat, print_json};
use anyhow::{Context, Result, bail};
use std::process::ExitCode;

/// Saves a server URL and API key for later commands, after checking them.
pub async fn login(global: &Global) -> Result<ExitCode> {
    let Some(key) = global.api_key.clone() else {
        bail!("pass the key to save: hangar login --server-url URL --api-key hk_…");
    };
    let url = global
        .server_url
        .clone()
        .unwrap_or_else(|| crate::credentials::DEFAULT_SERVER_URL.to_owned());
    let client = hangar_client::Client::new(&url, key.clone())?;
    let me: serde_json::Value = client
        .get_json("api/v1/whoami")
        .await
        .context("checking the key")?;
    if me["kind"] != "api_key" {
        bail!("that is a run token, not an API key");
    }
    let path = crate::credentials::saved_path().context("no config directory on this machine")?;
    hangar_server::write_cli_credentials(&path, &url, &key)?;
    match global.output {
        OutputFormat::Pretty => println!(
            "Logged in to {url} as team `{}`. Saved to {}.",
            me["team"]["name"].as_str().unwrap_or("?"),
            path.display()
        ),
        OutputFormat::Text => println!("{}", path.display()),
        f => print_json(&me, f),
    }
    Ok(ExitCode::SUCCESS)
}

/// Forgets the saved credentials.
pub async fn logout(global: &Global) -> Result<ExitCode> {
    let path = crate::credentials::saved_path().context("no config directory on this machine")?;
    match std::fs::remove_file(&path) {
        Ok(()) => {
            if global.output == OutputFormat::Pretty {
                println!("Removed {}.", path.display());
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if global.output == OutputFormat::Pretty {
                println!("Not logged in.");
            }
        }
        Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
    }
    Ok(ExitCode::SUCCESS)
}

/// Shows who the current credentials belong to.
pub async fn whoami(global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    let me: serde_json::Value = client.get_json("api/v1/whoami").await?;
    match global.output {
        OutputFormat::Pretty => {
            println!(
                "Server  {}",
                client.base_url().as_str().trim_end_matches('/')
            );
            println!(
                "Team    {} ({})",
                me["team"]["name"].as_str().unwrap_or("?"),
                me["team"]["id"].as_str().unwrap_or("?")
            );
            if let Some(u) = me["user"].as_object() {
                println!(
                    "User    {} ({})",
                    u["display_name"].as_str().unwrap_or("?"),
                    u["role"].as_str().unwrap_or("?")
                );
            }
            println!("Key     {}", me["key_id"].as_str().unwrap_or("-"));
        }
        OutputFormat::Text => println!("{}", me["team"]["name"].as_str().unwrap_or("")),
        f => print_json(&me, f),
    }
    Ok(ExitCode::SUCCESS)
}
