//! `hangar secret create|list|update|delete`. Values are read from stdin (or
//! `--value`), sent once, and never shown again.

use crate::commands::Global;
use crate::output::{OutputFormat, print_json};
use anyhow::{Context, Result, bail};
use hangar_client::encode;
use hangar_protocol::environment::{CreateSecretRequest, SecretItem, UpdateSecretRequest};
use std::io::Read;
use std::process::ExitCode;

/// `hangar secret …`.
#[derive(Debug, clap::Args)]
pub struct SecretCommand {
    #[command(subcommand)]
    sub: SecretSub,
}

#[derive(Debug, clap::Subcommand)]
enum SecretSub {
    /// Create a secret; the value is read from stdin unless --value is given.
    Create {
        /// Name; also the variable it is injected as.
        name: String,
        /// Value (visible in your shell history: prefer stdin).
        #[arg(long)]
        value: Option<String>,
    },
    /// List secret names.
    List,
    /// Replace a secret's value (stdin unless --value).
    Update {
        /// Name.
        name: String,
        /// Value.
        #[arg(long)]
        value: Option<String>,
    },
    /// Delete a secret.
    Delete {
        /// Name.
        name: String,
    },
}

fn read_value(value: Option<String>) -> Result<String> {
    if let Some(v) = value {
        return Ok(v);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("Enter the secret value, then Ctrl-D:");
    }
    let mut buf = String::new();
    std::io::stdin()
        .read_to_string(&mut buf)
        .context("read the secret value from stdin")?;
    let v = buf.strip_suffix('\n').unwrap_or(&buf).to_owned();
    if v.is_empty() {
        bail!("the secret value is empty: pipe it on stdin or pass --value");
    }
    Ok(v)
}

/// Dispatches `hangar secret …`.
pub async fn run(cmd: SecretCommand, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    match cmd.sub {
        SecretSub::Create { name, value } => {
            let value = read_value(value)?;
            let s: SecretItem = client
                .post_json(
                    "api/v1/secrets",
                    &CreateSecretRequest {
                        name,
                        value: value.into(),
                    },
                )
                .await?;
            match global.output {
                OutputFormat::Pretty => println!("Created secret {}.", s.name),
                OutputFormat::Text => println!("{}", s.name),
                f => print_json(&s, f),
            }
        }
        SecretSub::List => {
            let v: serde_json::Value = client.get_json("api/v1/secrets").await?;
            match global.output {
                OutputFormat::Pretty | OutputFormat::Text => {
                    for s in v["secrets"].as_array().cloned().unwrap_or_default() {
                        println!("{}", s["name"].as_str().unwrap_or(""));
                    }
                }
                f => print_json(&v, f),
            }
        }
        SecretSub::Update { name, value } => {
            let value = read_value(value)?;
            let s: SecretItem = client
                .put_json(
                    &format!("api/v1/secrets/{}", encode(&name)),
                    &UpdateSecretRequest {
                        value: value.into(),
                    },
                )
                .await?;
            match global.output {
                OutputFormat::Pretty => println!("Updated secret {}.", s.name),
                OutputFormat::Text => println!("{}", s.name),
                f => print_json(&s, f),
            }
        }
        SecretSub::Delete { name } => {
            let v: serde_json::Value = client
                .send_delete(&format!("api/v1/secrets/{}", encode(&name)))
                .await?;
            match global.output {
                OutputFormat::Pretty => println!("Deleted secret {name}."),
                OutputFormat::Text => println!("{name}"),
                f => print_json(&v, f),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
