//! `hangar environment create|list|get|update|delete`.

use crate::commands::Global;
use crate::output::{OutputFormat, print_json};
use anyhow::{Result, bail};
use hangar_client::encode;
use hangar_protocol::environment::{
    EnvironmentItem, EnvironmentList, EnvironmentRepo, EnvironmentRequest,
};
use hangar_protocol::worker::NetworkPolicy;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// `hangar environment …`.
#[derive(Debug, clap::Args)]
pub struct EnvironmentCommand {
    #[command(subcommand)]
    sub: EnvSub,
}

/// The configuration flags shared by create and update (update replaces all of it).
#[derive(Debug, clap::Args)]
struct EnvSpecArgs {
    /// Environment name (unique in the team).
    #[arg(short = 'n', long)]
    name: String,
    /// Description.
    #[arg(long)]
    description: Option<String>,
    /// Image tasks run in (docker and kubernetes backends).
    #[arg(short = 'd', long = "docker-image", value_name = "IMAGE")]
    docker_image: Option<String>,
    /// Repository to clone, `URL[@REF]` (repeatable, cloned in order).
    #[arg(short = 'r', long = "repo", value_name = "URL[@REF]")]
    repos: Vec<String>,
    /// Setup command run before the agent starts (repeatable, in order).
    #[arg(short = 'c', long = "setup-command", value_name = "CMD")]
    setup_commands: Vec<String>,
    /// Environment variable `KEY=VALUE` (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Team secret injected as a variable of the same name (repeatable).
    #[arg(short = 's', long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// Network egress: `full`, `none`, or `allow:HOST[,HOST…]`.
    #[arg(long, default_value = "full", value_name = "POLICY")]
    network: String,
}

#[derive(Debug, clap::Subcommand)]
enum EnvSub {
    /// Create an environment.
    Create(EnvSpecArgs),
    /// List environments.
    List,
    /// Show one environment (by id or name).
    Get {
        /// Id or name.
        id: String,
    },
    /// Replace an environment's whole configuration.
    Update {
        /// Id or name.
        id: String,
        #[command(flatten)]
        spec: EnvSpecArgs,
    },
    /// Delete an environment.
    Delete {
        /// Id or name.
        id: String,
    },
}

fn request(a: EnvSpecArgs) -> Result<EnvironmentRequest> {
    let mut env = BTreeMap::new();
    for kv in a.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env `{kv}` must be KEY=VALUE");
        };
        env.insert(k.to_owned(), v.to_owned());
    }
    let repos = a
        .repos
        .into_iter()
        .map(|r| {
            // `@` also appears in `git@host:…` URLs: only a trailing `@REF` after the path counts.
            let (url, git_ref) = match r.rsplit_once('@') {
                Some((u, rf)) if !rf.contains('/') && !rf.contains(':') && u.contains('/') => {
                    (u.to_owned(), Some(rf.to_owned()))
                }
                _ => (r.clone(), None),
            };
            EnvironmentRepo {
                url,
                git_ref,
                token_secret: None,
                path: None,
            }
        })
        .collect();
    let network_policy = match a.network.as_str() {
        "full" => NetworkPolicy::Full,
        "none" => NetworkPolicy::None,
        other => match other.strip_prefix("allow:") {
            Some(hosts) => NetworkPolicy::Allowlist {
                hosts: hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect(),
            },
            None => {
                bail!("--network must be `full`, `none` or `allow:HOST[,HOST…]`, got `{other}`")
            }
        },
    };
    Ok(EnvironmentRequest {
        name: a.name,
        description: a.description,
        docker_image: a.docker_image,
        repos,
        setup_commands: a.setup_commands,
        env,
        secrets: a.secrets,
        network_policy,
    })
}

fn print_env(e: &EnvironmentItem) {
    println!("Environment  {} ({})", e.spec.name, e.id);
    if let Some(d) = &e.spec.description {
        println!("Description  {d}");
    }
    println!(
        "Image        {}",
        e.spec.docker_image.as_deref().unwrap_or("(worker default)")
    );
    for r in &e.spec.repos {
        println!(
            "Repo         {}{}",
            r.url,
            r.git_ref
                .as_deref()
                .map(|g| format!(" @ {g}"))
                .unwrap_or_default()
        );
    }
    for c in &e.spec.setup_commands {
        println!("Setup        {c}");
    }
    for k in e.spec.env.keys() {
        println!("Env          {k}");
    }
    for s in &e.spec.secrets {
        println!("Secret       {s}");
    }
    println!(
        "Network      {}",
        match &e.spec.network_policy {
            NetworkPolicy::Full => "full".to_owned(),
            NetworkPolicy::None => "none".to_owned(),
            NetworkPolicy::Allowlist { hosts } => format!("allow {}", hosts.join(", ")),
        }
    );
}

fn show(e: &EnvironmentItem, format: OutputFormat) {
    match format {
        OutputFormat::Pretty => print_env(e),
        OutputFormat::Text => println!("{}", e.id),
        f => print_json(e, f),
    }
}

/// Dispatches `hangar environment …`.
pub async fn run(cmd: EnvironmentCommand, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    match cmd.sub {
        EnvSub::Create(spec) => {
            let e: EnvironmentItem = client
                .post_json("api/v1/environments", &request(spec)?)
                .await?;
            show(&e, global.output);
        }
        EnvSub::List => {
            let list: EnvironmentList = client.get_json("api/v1/environments").await?;
            match global.output {
                OutputFormat::Pretty => {
                    if list.environments.is_empty() {
                        println!(
                            "No environments. Create one with: hangar environment create -n NAME -d IMAGE"
                        );
                    } else {
                        println!("{:<36}  {:<20}  IMAGE", "ID", "NAME");
                        for e in &list.environments {
                            println!(
                                "{:<36}  {:<20}  {}",
                                e.id,
                                e.spec.name,
                                e.spec.docker_image.as_deref().unwrap_or("-")
                            );
                        }
                    }
                }
                OutputFormat::Text => list.environments.iter().for_each(|e| println!("{}", e.id)),
                OutputFormat::Ndjson => list
                    .environments
                    .iter()
                    .for_each(|e| print_json(e, OutputFormat::Ndjson)),
                OutputFormat::Json => print_json(&list, OutputFormat::Json),
            }
        }
        EnvSub::Get { id } => {
            let e: EnvironmentItem = client
                .get_json(&format!("api/v1/environments/{}", encode(&id)))
                .await?;
            show(&e, global.output);
        }
        EnvSub::Update { id, spec } => {
            let e: EnvironmentItem = client
                .put_json(
                    &format!("api/v1/environments/{}", encode(&id)),
                    &request(spec)?,
                )
                .await?;
            show(&e, global.output);
        }
        EnvSub::Delete { id } => {
            let v: serde_json::Value = client
                .send_delete(&format!("api/v1/environments/{}", encode(&id)))
                .await?;
            match global.output {
                OutputFormat::Pretty => println!("Deleted environment {id}."),
                OutputFormat::Text => println!("{id}"),
                f => print_json(&v, f),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
