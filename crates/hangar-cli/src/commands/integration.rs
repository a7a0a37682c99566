//! `hangar integration create|update|get|test|list|delete slack|linear|github|webhook`
//! over `/api/v1/integrations`.
//!
//! Credentials never appear on the command line: the provider's signing or
//! webhook secret is read from stdin (`--signing-secret-stdin`,
//! `--webhook-secret-stdin`), and API tokens are named team secrets
//! (`--bot-token-secret NAME`, …) created with `hangar secret create`.

use crate::commands::Global;
use crate::output::{OutputFormat, print_json};
use anyhow::{Context, Result, bail};
use hangar_agent::mcp::resolve_mcp_spec;
use hangar_client::{Client, encode};
use hangar_protocol::integration::{
    CreateIntegrationRequest, IntegrationItem, IntegrationKind, IntegrationSettings,
    IntegrationTestResult, ListIntegrationsResponse, UpdateIntegrationRequest,
};
use hangar_protocol::{AgentConfig, SecretString};
use std::io::Read;
use std::process::ExitCode;

/// `hangar integration …`.
#[derive(Debug, clap::Args)]
pub struct IntegrationCommand {
    #[command(subcommand)]
    sub: IntegrationSub,
}

/// A kind on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    /// Slack Events API.
    Slack,
    /// Linear webhooks.
    Linear,
    /// GitHub webhooks.
    Github,
    /// A generic signed webhook.
    Webhook,
}

impl Kind {
    fn wire(self) -> IntegrationKind {
        match self {
            Kind::Slack => IntegrationKind::Slack,
            Kind::Linear => IntegrationKind::Linear,
            Kind::Github => IntegrationKind::Github,
            Kind::Webhook => IntegrationKind::Webhook,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum IntegrationSub {
    /// Create an integration; prints the webhook URL to paste into the provider.
    Create {
        /// What it connects to.
        kind: Kind,
        #[command(flatten)]
        args: SettingsArgs,
    },
    /// Change an integration; flags not given keep their current value.
    Update {
        /// What it connects to.
        kind: Kind,
        /// Id or name [default: the team's only integration of this kind].
        integration: Option<String>,
        #[command(flatten)]
        args: SettingsArgs,
    },
    /// Show an integration and its webhook URL.
    Get {
        /// What it connects to.
        kind: Kind,
        /// Id or name [default: the team's only integration of this kind].
        integration: Option<String>,
    },
    /// Check the integration's credentials against its provider (admins);
    /// exits 1 when they do not work.
    Test {
        /// What it connects to.
        kind: Kind,
        /// Id or name [default: the team's only integration of this kind].
        integration: Option<String>,
    },
    /// List the team's integrations.
    List {
        /// Only this kind.
        kind: Option<Kind>,
    },
    /// Delete an integration (its webhook URL stops working).
    Delete {
        /// What it connects to.
        kind: Kind,
        /// Id or name [default: the team's only integration of this kind].
        integration: Option<String>,
    },
}

/// What an integration does, and its credentials (from stdin or named secrets).
#[derive(Debug, clap::Args)]
struct SettingsArgs {
    /// Name of the integration, unique in the team [create default: the kind].
    #[arg(long)]
    name: Option<String>,
    /// Worker that must run its runs (its `--worker-id`, exact match).
    #[arg(long, value_name = "WORKER")]
    host: Option<String>,
    /// Environment (id or name) its runs use.
    #[arg(short = 'e', long = "environment", value_name = "ENV")]
    environment: Option<String>,
    /// Model (`provider/model`) [default: the server's].
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// MCP servers: inline JSON, a JSON file, or a server name; repeatable.
    #[arg(long, value_name = "SPEC")]
    mcp: Vec<String>,
    /// Skill its runs use (`owner/repo:path`).
    #[arg(long, value_name = "SKILL")]
    skill: Option<String>,
    /// Text put before every prompt.
    #[arg(long, value_name = "TEXT")]
    prompt_prefix: Option<String>,
    /// Slack channel id that may trigger runs (repeatable; all when none).
    #[arg(long = "channel", value_name = "ID")]
    channels: Vec<String>,
    /// Linear team key that may trigger runs (repeatable; all when none).
    #[arg(long = "linear-team", value_name = "KEY")]
    linear_teams: Vec<String>,
    /// GitHub repository (`owner/name`) that may trigger runs (repeatable; all when none).
    #[arg(long = "repo", value_name = "OWNER/NAME")]
    repos: Vec<String>,
    /// Linear, GitHub: the handle a comment mentions to ask the agent, without
    /// the `@` [default: `hangar` on GitHub, the API key's user on Linear].
    #[arg(long, value_name = "HANDLE")]
    mention: Option<String>,
    /// GitHub: a label that starts a run when added to an issue or pull
    /// request (repeatable).
    #[arg(long = "label", value_name = "LABEL")]
    labels: Vec<String>,
    /// The provider's API base URL (GitHub Enterprise, tests) [default: its public API].
    #[arg(long, value_name = "URL")]
    api_base_url: Option<String>,
    /// Slack: read the app's signing secret from stdin.
    #[arg(long)]
    signing_secret_stdin: bool,
    /// Linear, GitHub, webhook: read the webhook secret from stdin.
    #[arg(long)]
    webhook_secret_stdin: bool,
    /// Slack: team secret holding the bot token (`xoxb-…`).
    #[arg(long, value_name = "NAME")]
    bot_token_secret: Option<String>,
    /// Linear: team secret holding the API key.
    #[arg(long, value_name = "NAME")]
    api_key_secret: Option<String>,
    /// GitHub: team secret holding a personal access token.
    #[arg(long, value_name = "NAME")]
    token_secret: Option<String>,
    /// GitHub: the GitHub App's id (with --private-key-secret).
    #[arg(long, value_name = "ID")]
    app_id: Option<String>,
    /// GitHub: team secret holding the GitHub App's private key (PEM).
    #[arg(long, value_name = "NAME")]
    private_key_secret: Option<String>,
    /// Webhook: the prompt, with `{{path.to.field}}` taken from the JSON payload.
    #[arg(long, value_name = "TEMPLATE")]
    prompt_template: Option<String>,
    /// Webhook: the run title, a template like --prompt-template.
    #[arg(long, value_name = "TEMPLATE")]
    title_template: Option<String>,
    /// Webhook: payload field naming who triggered the run (`user.email`).
    #[arg(long, value_name = "FIELD")]
    actor_field: Option<String>,
    /// Webhook: payload field linking back to what triggered the run (`issue.url`).
    #[arg(long, value_name = "FIELD")]
    link_field: Option<String>,
}

fn set<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        slot.clone_from(value);
    }
}

fn set_list(slot: &mut Vec<String>, value: &[String]) {
    if !value.is_empty() {
        *slot = value.to_vec();
    }
}

impl SettingsArgs {
    /// Applies the given flags over `s`.
    async fn apply(&self, s: &mut IntegrationSettings, client: &Client) -> Result<()> {
        let mut config = s.agent_config.take().unwrap_or_default();
        set(&mut config.worker_host, &self.host);
        set(&mut config.environment_id, &self.environment);
        set(&mut config.model_id, &self.model);
        set(&mut config.skill_spec, &self.skill);
        if !self.mcp.is_empty() {
            let mut servers = std::collections::BTreeMap::new();
            for spec in &self.mcp {
                servers.extend(
                    resolve_mcp_spec(spec, Some(client))
                        .await
                        .context("--mcp")?,
                );
            }
            config.mcp_servers = Some(servers);
        }
        s.agent_config = (config != AgentConfig::default()).then_some(config);
        set(&mut s.prompt_prefix, &self.prompt_prefix);
        set_list(&mut s.channels, &self.channels);
        set_list(&mut s.linear_teams, &self.linear_teams);
        set_list(&mut s.repos, &self.repos);
        set_list(&mut s.labels, &self.labels);
        set(&mut s.mention, &self.mention);
        set(&mut s.api_base_url, &self.api_base_url);
        set(&mut s.bot_token_secret, &self.bot_token_secret);
        set(&mut s.api_key_secret, &self.api_key_secret);
        set(&mut s.token_secret, &self.token_secret);
        set(&mut s.app_id, &self.app_id);
        set(&mut s.private_key_secret, &self.private_key_secret);
        set(&mut s.prompt_template, &self.prompt_template);
        set(&mut s.title_template, &self.title_template);
        set(&mut s.actor_field, &self.actor_field);
        set(&mut s.link_field, &self.link_field);
        Ok(())
    }

    /// The secret from stdin, when the flag for this kind asks for it.
    fn secret(&self, kind: Kind) -> Result<Option<SecretString>> {
        let (wanted, other) = match kind {
            Kind::Slack => ("--signing-secret-stdin", self.webhook_secret_stdin),
            _ => ("--webhook-secret-stdin", self.signing_secret_stdin),
        };
        if other {
            bail!(
                "{} integrations take their secret with {wanted}",
                kind.wire()
            );
        }
        if !(self.signing_secret_stdin || self.webhook_secret_stdin) {
            return Ok(None);
        }
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            eprintln!("Enter the secret, then Ctrl-D:");
        }
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("read the secret from stdin")?;
        let value = buf.trim_end_matches(['\n', '\r']).to_owned();
        if value.is_empty() {
            bail!("the secret read from stdin is empty");
        }
        Ok(Some(SecretString::new(value)))
    }
}

fn path(id: &str) -> String {
    format!("api/v1/integrations/{}", encode(id))
}

/// The integration a command names, or the team's only one of `kind`.
async fn resolve(client: &Client, kind: Kind, given: Option<String>) -> Result<IntegrationItem> {
    let item: IntegrationItem = match given {
        Some(id) => client.get_json(&path(&id)).await?,
        None => {
            let all: ListIntegrationsResponse = client.get_json("api/v1/integrations").await?;
            let mut of_kind: Vec<IntegrationItem> = all
                .integrations
                .into_iter()
                .filter(|i| i.kind == kind.wire())
                .collect();
            match of_kind.len() {
                1 => of_kind.remove(0),
                0 => bail!(
                    "the team has no {} integration; create one with `hangar integration create {}`",
                    kind.wire(),
                    kind.wire()
                ),
                n => bail!(
                    "the team has {n} {} integrations; name one (id or name)",
                    kind.wire()
                ),
            }
        }
    };
    if item.kind != kind.wire() {
        bail!(
            "integration `{}` is a {} integration, not {}",
            item.name,
            item.kind,
            kind.wire()
        );
    }
    Ok(item)
}

fn print_item(i: &IntegrationItem) {
    println!("Integration  {}", i.id);
    println!("Kind         {}", i.kind);
    println!("Name         {}", i.name);
    println!("Webhook URL  {}", i.webhook_url);
    if let Some(c) = &i.settings.agent_config {
        for (label, value) in [
            ("Model      ", &c.model_id),
            ("Environment", &c.environment_id),
            ("Host       ", &c.worker_host),
            ("Skill      ", &c.skill_spec),
        ] {
            if let Some(v) = value {
                println!("{label}  {v}");
            }
        }
    }
    for (label, list) in [
        ("Channels   ", &i.settings.channels),
        ("Linear team", &i.settings.linear_teams),
        ("Repos      ", &i.settings.repos),
    ] {
        if !list.is_empty() {
            println!("{label}  {}", list.join(", "));
        }
    }
}

fn show(i: &IntegrationItem, format: OutputFormat, done: &str) {
    match format {
        OutputFormat::Pretty => {
            if !done.is_empty() {
                println!("{done}");
            }
            print_item(i);
        }
        OutputFormat::Text => println!("{}\t{}", i.id, i.webhook_url),
        f => print_json(i, f),
    }
}

fn print_table(items: &[IntegrationItem]) {
    if items.is_empty() {
        println!(
            "No integrations yet. Create one with: hangar integration create webhook --webhook-secret-stdin"
        );
        return;
    }
    println!(
        "{:<36}  {:<8}  {:<20}  WEBHOOK URL",
        "INTEGRATION", "KIND", "NAME"
    );
    for i in items {
        println!(
            "{:<36}  {:<8}  {:<20}  {}",
            i.id,
            i.kind.as_str(),
            i.name,
            i.webhook_url
        );
    }
}

/// Dispatches `hangar integration …`.
pub async fn run(cmd: IntegrationCommand, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    let format = global.output;
    match cmd.sub {
        IntegrationSub::Create { kind, args } => {
            let secret = args.secret(kind)?.with_context(|| match kind {
                Kind::Slack => "a Slack integration needs the app's signing secret: pipe it with --signing-secret-stdin",
                _ => "this integration needs the webhook secret the provider signs with: pipe it with --webhook-secret-stdin",
            })?;
            let mut settings = IntegrationSettings::default();
            args.apply(&mut settings, &client).await?;
            let req = CreateIntegrationRequest {
                kind: kind.wire(),
                name: args.name.clone().unwrap_or_else(|| kind.wire().to_string()),
                settings,
                secret,
            };
            let item: IntegrationItem = client.post_json("api/v1/integrations", &req).await?;
            show(
                &item,
                format,
                &format!(
                    "Created {} integration {}. Paste the webhook URL into the provider's settings.",
                    item.kind, item.name
                ),
            );
        }
        IntegrationSub::Update {
            kind,
            integration,
            args,
        } => {
            let current = resolve(&client, kind, integration).await?;
            let secret = args.secret(kind)?;
            let mut settings = current.settings.clone();
            args.apply(&mut settings, &client).await?;
            let req = UpdateIntegrationRequest {
                name: args.name.clone().unwrap_or(current.name.clone()),
                settings,
                secret,
            };
            let item: IntegrationItem = client.put_json(&path(&current.id), &req).await?;
            show(
                &item,
                format,
                &format!("Updated {} integration {}.", item.kind, item.name),
            );
        }
        IntegrationSub::Get { kind, integration } => {
            let item = resolve(&client, kind, integration).await?;
            show(&item, format, "");
        }
        IntegrationSub::Test { kind, integration } => {
            let item = resolve(&client, kind, integration).await?;
            let result: IntegrationTestResult = client
                .post_json(&format!("{}/test", path(&item.id)), &serde_json::json!({}))
                .await?;
            match format {
                OutputFormat::Pretty | OutputFormat::Text => {
                    let mark = if result.ok { "ok" } else { "FAILED" };
                    println!("{mark}: {}", result.detail);
                }
                f => print_json(&result, f),
            }
            if !result.ok {
                return Ok(ExitCode::from(1));
            }
        }
        IntegrationSub::List { kind } => {
            let mut all: ListIntegrationsResponse = client.get_json("api/v1/integrations").await?;
            if let Some(k) = kind {
                all.integrations.retain(|i| i.kind == k.wire());
            }
            match format {
                OutputFormat::Pretty => print_table(&all.integrations),
                OutputFormat::Text => {
                    for i in &all.integrations {
                        println!("{}\t{}", i.id, i.webhook_url);
                    }
                }
                f => print_json(&all, f),
            }
        }
        IntegrationSub::Delete { kind, integration } => {
            let item = resolve(&client, kind, integration).await?;
            let v: serde_json::Value = client.send_delete(&path(&item.id)).await?;
            match format {
                OutputFormat::Pretty => {
                    println!("Deleted {} integration {}.", item.kind, item.name)
                }
                OutputFormat::Text => println!("{}", item.id),
                f => print_json(&v, f),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
