//! `hangar api-key create|list|expire`.

use crate::commands::Global;
use crate::output::{OutputFormat, print_json};
use anyhow::{Result, bail};
use hangar_protocol::{ApiKeyItem, CreateApiKeyRequest, Timestamp};
use std::process::ExitCode;

/// `hangar api-key …`.
#[derive(Debug, clap::Args)]
pub struct ApiKeyCommand {
    #[command(subcommand)]
    sub: ApiKeySub,
}

#[derive(Debug, clap::Subcommand)]
enum ApiKeySub {
    /// Create a key; its secret is printed once.
    Create {
        /// Name to recognise the key by.
        name: String,
        /// Expire after this long (e.g. `30d`, `12h`).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// A team key, belonging to no user (admins only): it acts as an
        /// admin. Workers should use `hangar worker token create`; a team
        /// key is for `oz-agent-worker`, which knows no worker tokens.
        #[arg(long)]
        team: bool,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key now.
    Expire {
        /// Key id.
        key_id: String,
    },
}

/// Dispatches `hangar api-key …`.
pub async fn run(cmd: ApiKeyCommand, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    match cmd.sub {
        ApiKeySub::Create {
            name,
            expires_in,
            team,
        } => {
            let expires_at = expires_at(expires_in.as_deref())?;
            let key: ApiKeyItem = client
                .create_api_key(&CreateApiKeyRequest {
                    name,
                    expires_at,
                    team,
                })
                .await?;
            match global.output {
                OutputFormat::Pretty => {
                    println!(
                        "Created API key `{}` ({}). Its secret is shown once:",
                        key.name, key.id
                    );
                    println!();
                    println!("    {}", key.key.as_deref().unwrap_or(""));
                }
                OutputFormat::Text => println!("{}", key.key.as_deref().unwrap_or("")),
                f => print_json(&key, f),
            }
        }
        ApiKeySub::List => {
            let body: serde_json::Value = client.get_json("api/v1/api-keys").await?;
            match global.output {
                OutputFormat::Pretty | OutputFormat::Text => {
                    println!("{:<36}  {:<28}  {:<12}  STATUS", "ID", "NAME", "PREFIX");
                    for k in body["api_keys"].as_array().cloned().unwrap_or_default() {
                        let status = if k.get("revoked_at").is_some_and(|v| !v.is_null()) {
                            "revoked"
                        } else {
                            "active"
                        };
                        println!(
                            "{:<36}  {:<28}  {:<12}  {}",
                            k["id"].as_str().unwrap_or(""),
                            k["name"].as_str().unwrap_or(""),
                            k["prefix"].as_str().unwrap_or(""),
                            status
                        );
                    }
                }
                f => print_json(&body, f),
            }
        }
        ApiKeySub::Expire { key_id } => {
            let body: serde_json::Value = client
                .post_json(
                    &format!("api/v1/api-keys/{}/expire", hangar_client::encode(&key_id)),
                    &serde_json::json!({}),
                )
                .await?;
            match global.output {
                OutputFormat::Pretty => println!("Revoked API key {key_id}."),
                OutputFormat::Text => println!("{key_id}"),
                f => print_json(&body, f),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The time `--expires-in DURATION` from now.
pub(crate) fn expires_at(expires_in: Option<&str>) -> Result<Option<Timestamp>> {
    let Some(d) = expires_in else {
        return Ok(None);
    };
    let Ok(dur) = humantime_parse(d) else {
        bail!("--expires-in `{d}` is not a duration like `30d` or `12h`");
    };
    Ok(Some(Timestamp::from_unix_millis(
        Timestamp::now().unix_millis() + dur.as_millis() as i64,
    )))
}

fn humantime_parse(s: &str) -> Result<std::time::Duration, ()> {
    hangar_worker::config::parse_duration(s).map_err(|_| ())
}
