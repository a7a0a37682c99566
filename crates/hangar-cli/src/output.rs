//! Human and machine output of client commands.

use hangar_protocol::{RunItem, Timestamp};
use serde::Serialize;

/// `--output-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Readable text and tables.
    Pretty,
    /// One JSON document.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Bare values (ids), for scripts.
    Text,
}

/// Prints a value as JSON (pretty for `json`, compact for `ndjson`).
pub fn print_json<T: Serialize>(value: &T, format: OutputFormat) {
    let text = match format {
        OutputFormat::Ndjson => serde_json::to_string(value),
        _ => serde_json::to_string_pretty(value),
    };
    println!("{}", text.unwrap_or_default());
}

fn age(t: &Timestamp) -> String {
    let secs = (Timestamp::now().unix_millis() - t.unix_millis()).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// One run, as `key: value` lines.
pub fn print_run(run: &RunItem) {
    println!("Run        {}", run.run_id);
    println!("Title      {}", run.title);
    println!("State      {}", run.state);
    if let Some(m) = &run.status_message {
        println!("Status     {}", m.message);
    }
    if let Some(f) = &run.failure_reason {
        println!("Failure    {f}");
    }
    if let Some(c) = run.exit_code {
        println!("Exit code  {c}");
    }
    if let Some(c) = &run.agent_config {
        if let Some(model) = &c.model_id {
            println!("Model      {model}");
        }
        if let Some(host) = &c.worker_host {
            println!("Host       {host}");
        }
    }
    println!("Created    {} ({})", run.created_at, age(&run.created_at));
    println!("Updated    {} ({})", run.updated_at, age(&run.updated_at));
    if let Some(s) = &run.started_at {
        println!("Started    {s}");
    }
    if let Some(link) = &run.session_link {
        println!("Session    {link}");
    }
    println!("Prompt     {}", run.prompt.lines().next().unwrap_or(""));
}

/// Runs as a table.
pub fn print_run_table(runs: &[RunItem]) {
    if runs.is_empty() {
        println!("No runs yet. Create one with: hangar agent run-cloud -p \"…\"");
        return;
    }
    let title_width = runs
        .iter()
        .map(|r| r.title.chars().count().min(48))
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<36}  {:<10}  {:<title_width$}  UPDATED",
        "RUN", "STATE", "TITLE"
    );
    for r in runs {
        let mut title: String = r.title.chars().take(48).collect();
        if r.title.chars().count() > 48 {
            title.pop();
            title.push('…');
        }
        println!(
            "{:<36}  {:<10}  {:<title_width$}  {}",
            r.run_id,
            r.state.as_str(),
            title,
            age(&r.updated_at)
        );
    }
}
