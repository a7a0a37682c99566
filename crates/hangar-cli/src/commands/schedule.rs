//! `hangar schedule create|list|get|update|pause|resume|delete`: scheduled
//! agents over `/api/v1/agent/schedules`.

use crate::commands::Global;
use crate::output::{OutputFormat, print_json};
use anyhow::{Context, Result};
use hangar_agent::mcp::resolve_mcp_spec;
use hangar_client::{Client, encode};
use hangar_protocol::{
    AgentConfig, CreateScheduledAgentRequest, DeleteScheduledAgentResponse,
    ListScheduledAgentsResponse, ScheduledAgentItem, Timestamp, UpdateScheduledAgentRequest,
};
use std::process::ExitCode;

/// `hangar schedule …`.
#[derive(Debug, clap::Args)]
pub struct ScheduleCommand {
    #[command(subcommand)]
    sub: ScheduleSub,
}

#[derive(Debug, clap::Subcommand)]
enum ScheduleSub {
    /// Create a schedule that starts a run on every cron slot.
    Create {
        /// Name of the schedule (also the title of its runs).
        #[arg(long)]
        name: String,
        /// 5-field cron expression: minute hour day-of-month month day-of-week (e.g. "0 9 * * 1-5").
        #[arg(long, value_name = "CRON")]
        cron: String,
        #[command(flatten)]
        def: DefinitionArgs,
        /// Create it paused.
        #[arg(long)]
        disabled: bool,
    },
    /// List the team's schedules, by name.
    List,
    /// Show one schedule.
    Get {
        /// Schedule id.
        id: String,
    },
    /// Change a schedule; flags not given keep their current value.
    Update {
        /// Schedule id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New cron expression.
        #[arg(long, value_name = "CRON")]
        cron: Option<String>,
        #[command(flatten)]
        def: DefinitionArgs,
        /// Enable the schedule.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Disable (pause) the schedule.
        #[arg(long)]
        disable: bool,
        /// Evaluate the cron expression in UTC again (drops `--timezone`).
        #[arg(long, conflicts_with = "timezone")]
        utc: bool,
    },
    /// Pause a schedule: no runs until it is resumed.
    Pause {
        /// Schedule id.
        id: String,
    },
    /// Resume a paused schedule from its next slot.
    Resume {
        /// Schedule id.
        id: String,
    },
    /// Delete a schedule (its runs stay).
    Delete {
        /// Schedule id.
        id: String,
    },
}

/// What the runs of a schedule do.
#[derive(Debug, clap::Args)]
struct DefinitionArgs {
    /// What the agent should do.
    #[arg(short = 'p', long, value_name = "PROMPT")]
    prompt: Option<String>,
    /// Skill to run (`owner/repo:path`), instead of or with a prompt.
    #[arg(long, value_name = "SKILL")]
    skill: Option<String>,
    /// Environment id to run in.
    #[arg(short = 'e', long = "environment", value_name = "ENV")]
    environment: Option<String>,
    /// Model (`provider/model`) [default: the server's].
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// MCP servers: inline JSON, a JSON file (`{name: config}`), or the name of
    /// one configured on the server (stored resolved, `${VAR}` unexpanded); repeatable.
    #[arg(long, value_name = "SPEC")]
    mcp: Vec<String>,
    /// Worker that must run the runs (its `--worker-id`, exact match).
    #[arg(long, value_name = "WORKER")]
    host: Option<String>,
    /// IANA time zone the cron expression is evaluated in [default: UTC].
    #[arg(long, value_name = "TZ")]
    timezone: Option<String>,
}

impl DefinitionArgs {
    /// Applies the given flags over `config`.
    async fn apply(&self, config: &mut AgentConfig, client: &Client) -> Result<()> {
        if let Some(skill) = &self.skill {
            config.skill_spec = Some(skill.clone());
        }
        if let Some(env) = &self.environment {
            config.environment_id = Some(env.clone());
        }
        if let Some(model) = &self.model {
            config.model_id = Some(model.clone());
        }
        if let Some(host) = &self.host {
            config.worker_host = Some(host.clone());
        }
        for spec in &self.mcp {
            let servers = resolve_mcp_spec(spec, Some(client))
                .await
                .with_context(|| "--mcp".to_owned())?;
            config
                .mcp_servers
                .get_or_insert_with(Default::default)
                .extend(servers);
        }
        Ok(())
    }
}

fn non_empty(config: AgentConfig) -> Option<AgentConfig> {
    (config != AgentConfig::default()).then_some(config)
}

fn path(id: &str) -> String {
    format!("api/v1/agent/schedules/{}", encode(id))
}

fn when(t: Option<&Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), Timestamp::to_rfc3339)
}

fn print_schedule(s: &ScheduledAgentItem) {
    println!("Schedule   {}", s.id);
    println!("Name       {}", s.name);
    match &s.timezone {
        Some(tz) => println!("Cron       {} ({tz})", s.cron_schedule),
        None => println!("Cron       {} (UTC)", s.cron_schedule),
    }
    println!(
        "Enabled    {}",
        if s.enabled { "yes" } else { "no (paused)" }
    );
    let history = s.history.clone().unwrap_or_default();
    println!("Next run   {}", when(history.next_run.as_ref()));
    println!("Last ran   {}", when(history.last_ran.as_ref()));
    if let Some(e) = &s.last_spawn_error {
        println!("Error      {e}");
    }
    if let Some(c) = &s.agent_config {
        if let Some(model) = &c.model_id {
            println!("Model      {model}");
        }
        if let Some(skill) = &c.skill_spec {
            println!("Skill      {skill}");
        }
        if let Some(env) = &c.environment_id {
            println!("Env        {env}");
        }
        if let Some(host) = &c.worker_host {
            println!("Host       {host}");
        }
        if let Some(mcp) = &c.mcp_servers {
            let names: Vec<&str> = mcp.keys().map(String::as_str).collect();
            println!("MCP        {}", names.join(", "));
        }
    }
    println!("Prompt     {}", s.prompt.lines().next().unwrap_or(""));
}

fn print_table(schedules: &[ScheduledAgentItem]) {
    if schedules.is_empty() {
        println!(
            "No schedules yet. Create one with: hangar schedule create --name NAME --cron \"0 9 * * *\" -p \"…\""
        );
        return;
    }
    let name_width = schedules
        .iter()
        .map(|s| s.name.chars().count().min(32))
        .max()
        .unwrap_or(4)
        .max(4);
    let cron_width = schedules
        .iter()
        .map(|s| s.cron_schedule.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<36}  {:<name_width$}  {:<cron_width$}  {:<7}  NEXT RUN",
        "SCHEDULE", "NAME", "CRON", "ENABLED"
    );
    for s in schedules {
        let mut name: String = s.name.chars().take(32).collect();
        if s.name.chars().count() > 32 {
            name.pop();
            name.push('…');
        }
        let next = s.history.as_ref().and_then(|h| h.next_run.as_ref());
        println!(
            "{:<36}  {:<name_width$}  {:<cron_width$}  {:<7}  {}",
            s.id,
            name,
            s.cron_schedule,
            if s.enabled { "yes" } else { "paused" },
            when(next)
        );
    }
}

fn show(s: &ScheduledAgentItem, format: OutputFormat, done: &str) {
    match format {
        OutputFormat::Pretty => {
            if !done.is_empty() {
                println!("{done}");
            }
            print_schedule(s);
        }
        OutputFormat::Text => println!("{}", s.id),
        f => print_json(s, f),
    }
}

async fn get(client: &Client, id: &str) -> Result<ScheduledAgentItem> {
    Ok(client.get_json(&path(id)).await?)
}

/// Dispatches `hangar schedule …`.
pub async fn run(cmd: ScheduleCommand, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    let format = global.output;
    match cmd.sub {
        ScheduleSub::Create {
            name,
            cron,
            def,
            disabled,
        } => {
            let mut config = AgentConfig::default();
            def.apply(&mut config, &client).await?;
            let req = CreateScheduledAgentRequest {
                name,
                cron_schedule: cron,
                prompt: def.prompt.clone(),
                enabled: Some(!disabled),
                agent_config: non_empty(config),
                team: None,
                timezone: def.timezone.clone(),
                ..CreateScheduledAgentRequest::default()
            };
            let s: ScheduledAgentItem = client.post_json("api/v1/agent/schedules", &req).await?;
            show(&s, format, "Created schedule.");
        }
        ScheduleSub::List => {
            let list: ListScheduledAgentsResponse =
                client.get_json("api/v1/agent/schedules").await?;
            match format {
                OutputFormat::Pretty => print_table(&list.schedules),
                OutputFormat::Text => list.schedules.iter().for_each(|s| println!("{}", s.id)),
                OutputFormat::Ndjson => list
                    .schedules
                    .iter()
                    .for_each(|s| print_json(s, OutputFormat::Ndjson)),
                OutputFormat::Json => print_json(&list, OutputFormat::Json),
            }
        }
        ScheduleSub::Get { id } => show(&get(&client, &id).await?, format, ""),
        ScheduleSub::Update {
            id,
            name,
            cron,
            def,
            enable,
            disable,
            utc,
        } => {
            // PUT is a full replace: start from the current definition.
            let current = get(&client, &id).await?;
            let mut config = current.agent_config.clone().unwrap_or_default();
            def.apply(&mut config, &client).await?;
            let timezone = if utc {
                None
            } else {
                def.timezone.clone().or(current.timezone.clone())
            };
            let req = UpdateScheduledAgentRequest {
                name: name.unwrap_or(current.name),
                cron_schedule: cron.unwrap_or(current.cron_schedule),
                enabled: if enable {
                    true
                } else if disable {
                    false
                } else {
                    current.enabled
                },
                prompt: def.prompt.clone().or(Some(current.prompt)),
                agent_config: non_empty(config),
                timezone,
                // Keep what the CLI cannot edit: PUT clears what it omits.
                metadata: current.metadata.clone(),
                mode: current.mode,
                agent_uid: None,
            };
            let s: ScheduledAgentItem = client.put_json(&path(&id), &req).await?;
            show(&s, format, "Updated schedule.");
        }
        ScheduleSub::Pause { id } => {
            let s: ScheduledAgentItem = client
                .post_json(&format!("{}/pause", path(&id)), &serde_json::json!({}))
                .await?;
            show(&s, format, "Paused schedule.");
        }
        ScheduleSub::Resume { id } => {
            let s: ScheduledAgentItem = client
                .post_json(&format!("{}/resume", path(&id)), &serde_json::json!({}))
                .await?;
            show(&s, format, "Resumed schedule.");
        }
        ScheduleSub::Delete { id } => {
            let done: DeleteScheduledAgentResponse = client.send_delete(&path(&id)).await?;
            match format {
                OutputFormat::Pretty => println!("Deleted schedule {id}."),
                OutputFormat::Text => println!("{id}"),
                f => print_json(&serde_json::json!({ "id": id, "success": done.success }), f),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
