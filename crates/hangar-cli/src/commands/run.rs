//! `hangar run list|get|cancel|transcript`, and `share|shares|unshare` (see [`share`]).

use crate::commands::{Global, share};
use crate::output::{OutputFormat, print_json, print_run, print_run_table};
use anyhow::Result;
use hangar_client::Client;
use std::process::ExitCode;

/// `hangar run …`.
#[derive(Debug, clap::Args)]
pub struct RunCommand {
    #[command(subcommand)]
    sub: RunSub,
}

#[derive(Debug, clap::Subcommand)]
enum RunSub {
    /// List runs, most recently updated first.
    List {
        /// Only runs in this state (repeatable): QUEUED, CLAIMED, INPROGRESS, SUCCEEDED, …
        #[arg(long, value_name = "STATE")]
        state: Vec<String>,
        /// Page size (1–500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Continue from a previous page's cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one run.
    Get {
        /// Run id.
        run_id: String,
    },
    /// Cancel a queued or running run.
    Cancel {
        /// Run id.
        run_id: String,
    },
    /// Print a run's stored session events.
    Transcript {
        /// Run id.
        run_id: String,
    },
    /// Watch a run's session live (a finished run is replayed); exits 0 only when it succeeded.
    Watch {
        /// Run id.
        run_id: String,
    },
    /// Steer a running run, or continue an ended one in a new execution.
    Followup {
        /// Run id.
        run_id: String,
        /// The message for the agent.
        #[arg(short = 'm', long, value_name = "MESSAGE")]
        message: String,
        /// Then watch the run until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// Share a run's session: team[:view|edit], user@x[:view|edit], public:view.
    Share {
        /// Run id.
        run_id: String,
        /// Who gets access (repeatable), as with `--share`.
        #[arg(long = "with", value_name = "WHO", required = true)]
        with: Vec<String>,
    },
    /// List who a run's session is shared with.
    Shares {
        /// Run id.
        run_id: String,
    },
    /// Revoke a share; streams it allowed close within seconds.
    Unshare {
        /// Run id.
        run_id: String,
        /// Share id (from `hangar run shares`).
        share_id: String,
    },
}

/// Dispatches `hangar run …`.
pub async fn run(cmd: RunCommand, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    match cmd.sub {
        RunSub::List {
            state,
            limit,
            cursor,
        } => list(&client, global, state, limit, cursor).await?,
        RunSub::Get { run_id } => {
            let run = client.get_run(&run_id).await?;
            match global.output {
                OutputFormat::Pretty => print_run(&run),
                OutputFormat::Text => println!("{}", run.state),
                f => print_json(&run, f),
            }
        }
        RunSub::Cancel { run_id } => {
            let id = client.cancel_run(&run_id).await?;
            match global.output {
                OutputFormat::Pretty => println!("Cancelled run {id}."),
                OutputFormat::Text => println!("{id}"),
                f => print_json(
                    &serde_json::json!({ "run_id": id, "state": "CANCELLED" }),
                    f,
                ),
            }
        }
        RunSub::Watch { run_id } => {
            return crate::commands::watch::watch(&client, &run_id, global.output).await;
        }
        RunSub::Followup {
            run_id,
            message,
            follow,
        } => return followup(&client, global, &run_id, &message, follow).await,
        RunSub::Transcript { run_id } => transcript(&client, global, &run_id).await?,
        RunSub::Share { run_id, with } => {
            return share::share(&client, global, &run_id, &with).await;
        }
        RunSub::Shares { run_id } => return share::list(&client, global, &run_id).await,
        RunSub::Unshare { run_id, share_id } => {
            return share::unshare(&client, global, &run_id, &share_id).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `hangar run list`.
async fn list(
    client: &Client,
    global: &Global,
    state: Vec<String>,
    limit: u32,
    cursor: Option<String>,
) -> Result<()> {
    let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
    query.extend(state.into_iter().map(|s| ("state", s.to_uppercase())));
    if let Some(c) = cursor {
        query.push(("cursor", c));
    }
    let page = client.list_runs(&query).await?;
    match global.output {
        OutputFormat::Pretty => {
            print_run_table(&page.runs);
            if let Some(c) = &page.page_info.next_cursor {
                println!("More: hangar run list --cursor {c}");
            }
        }
        OutputFormat::Text => page.runs.iter().for_each(|r| println!("{}", r.run_id)),
        OutputFormat::Ndjson => page
            .runs
            .iter()
            .for_each(|r| print_json(r, OutputFormat::Ndjson)),
        OutputFormat::Json => print_json(&page, OutputFormat::Json),
    }
    Ok(())
}

/// `hangar run followup`: steers a live run, or continues an ended one.
async fn followup(
    client: &Client,
    global: &Global,
    run_id: &str,
    message: &str,
    follow: bool,
) -> Result<ExitCode> {
    if message.trim().is_empty() {
        anyhow::bail!("the message is empty: pass what the agent should do with -m");
    }
    let path = format!(
        "api/v1/agent/runs/{}/followups",
        hangar_client::encode(run_id)
    );
    // Watch only what the follow-up produces, not the earlier turns.
    let seen = if follow {
        crate::commands::watch::last_event_id(client, run_id).await?
    } else {
        None
    };
    let reply: serde_json::Value = client
        .post_json(&path, &serde_json::json!({ "message": message }))
        .await?;
    match global.output {
        OutputFormat::Pretty if reply["reopened"] == true => {
            println!("Run {run_id} continues in a new execution (QUEUED).")
        }
        OutputFormat::Pretty => println!("Follow-up sent to run {run_id}."),
        OutputFormat::Text => println!("{run_id}"),
        f => print_json(&reply, f),
    }
    if follow {
        return crate::commands::watch::watch_after(client, run_id, seen, global.output).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `hangar run transcript`: one line per event, or the events as JSON.
async fn transcript(client: &Client, global: &Global, run_id: &str) -> Result<()> {
    let t = client.transcript(run_id).await?;
    match global.output {
        OutputFormat::Pretty | OutputFormat::Text => {
            for e in &t.events {
                let v = serde_json::to_value(&e.event).unwrap_or_default();
                let kind = v["kind"].as_str().unwrap_or("?");
                let detail = v
                    .get("text")
                    .or_else(|| v.get("output"))
                    .or_else(|| v.get("message"))
                    .or_else(|| v.get("arguments"))
                    .map(|d| match d.as_str() {
                        Some(s) => s.to_owned(),
                        None => d.to_string(),
                    })
                    .unwrap_or_default();
                println!(
                    "{:>4}  {:<18} {}",
                    e.event.seq,
                    kind,
                    detail.lines().next().unwrap_or("")
                );
            }
        }
        OutputFormat::Ndjson => t
            .events
            .iter()
            .for_each(|e| print_json(e, OutputFormat::Ndjson)),
        OutputFormat::Json => print_json(&t, OutputFormat::Json),
    }
    Ok(())
}
