//! Session sharing from the command line: `hangar run share ID --with WHO`,
//! `hangar run shares ID`, `hangar run unshare ID SHARE_ID`, and the
//! `--share WHO` flag of `hangar agent run` (tracked runs) and
//! `hangar agent run-cloud`.
//!
//! `WHO` is `team`, `team:view`, `team:edit`, `user@example.com[:view|edit]`
//! or `public:view`; a bare `team`, `public` or email means `view`.

use crate::commands::Global;
use crate::output::{OutputFormat, print_json};
use anyhow::{Context, Result};
use hangar_client::Client;
use hangar_protocol::share::{CreateShareRequest, ShareItem, parse_share_spec};
use std::process::ExitCode;

/// Parses every `--share`/`--with` value, naming the flag in errors.
pub fn parse_specs(flag: &str, specs: &[String]) -> Result<Vec<CreateShareRequest>> {
    specs
        .iter()
        .map(|s| parse_share_spec(s).map_err(|e| anyhow::anyhow!("{flag} {e}")))
        .collect()
}

/// Grants each request on `run_id`, in order; stops at the first refusal.
pub async fn apply(
    client: &Client,
    run_id: &str,
    requests: &[CreateShareRequest],
) -> Result<Vec<ShareItem>> {
    let mut applied = Vec::with_capacity(requests.len());
    for req in requests {
        let item = client
            .create_share(run_id, req)
            .await
            .with_context(|| format!("cannot share run {run_id} with {}", req.grantee))?;
        applied.push(item);
    }
    Ok(applied)
}

/// One line per grant: who, what, and the public link when there is one.
pub fn describe(item: &ShareItem) -> String {
    match &item.url {
        Some(url) => format!(
            "Public link ({}, anyone with it can watch): {url}",
            item.role
        ),
        None => format!("Shared with {} ({}).", item.grantee, item.role),
    }
}

/// Prints grants just created, in the chosen format.
pub fn print_applied(items: &[ShareItem], output: OutputFormat) {
    match output {
        OutputFormat::Pretty => items.iter().for_each(|i| println!("{}", describe(i))),
        OutputFormat::Text => items
            .iter()
            .for_each(|i| println!("{}", i.url.as_deref().unwrap_or(&i.id))),
        OutputFormat::Ndjson => items.iter().for_each(|i| print_json(i, output)),
        OutputFormat::Json => print_json(&items, output),
    }
}

/// `hangar run share ID --with WHO…`.
pub async fn share(
    client: &Client,
    global: &Global,
    run_id: &str,
    with: &[String],
) -> Result<ExitCode> {
    let requests = parse_specs("--with", with)?;
    let items = apply(client, run_id, &requests).await?;
    print_applied(&items, global.output);
    if global.output == OutputFormat::Pretty {
        for item in items.iter().filter(|i| i.url.is_some()) {
            println!(
                "The link is shown only now; revoke it with: hangar run unshare {run_id} {}",
                item.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `hangar run shares ID`.
pub async fn list(client: &Client, global: &Global, run_id: &str) -> Result<ExitCode> {
    let resp = client.list_shares(run_id).await?;
    match global.output {
        OutputFormat::Pretty => {
            if resp.shares.is_empty() {
                println!(
                    "Run {run_id} is not shared. Share it with: hangar run share {run_id} --with team"
                );
            } else {
                let width = resp
                    .shares
                    .iter()
                    .map(|s| s.grantee.chars().count())
                    .max()
                    .unwrap_or(7)
                    .max(7);
                println!(
                    "{:<36}  {:<width$}  {:<4}  CREATED",
                    "SHARE", "GRANTEE", "ROLE"
                );
                for s in &resp.shares {
                    println!(
                        "{:<36}  {:<width$}  {:<4}  {}",
                        s.id, s.grantee, s.role, s.created_at
                    );
                }
            }
        }
        OutputFormat::Text => resp.shares.iter().for_each(|s| println!("{}", s.id)),
        OutputFormat::Ndjson => resp
            .shares
            .iter()
            .for_each(|s| print_json(s, OutputFormat::Ndjson)),
        OutputFormat::Json => print_json(&resp, OutputFormat::Json),
    }
    Ok(ExitCode::SUCCESS)
}

/// `hangar run unshare ID SHARE_ID`.
pub async fn unshare(
    client: &Client,
    global: &Global,
    run_id: &str,
    share_id: &str,
) -> Result<ExitCode> {
    client.delete_share(run_id, share_id).await?;
    match global.output {
        OutputFormat::Pretty => println!(
            "Revoked share {share_id} of run {run_id}; streams it allowed close within seconds."
        ),
        OutputFormat::Text => println!("{share_id}"),
        f => print_json(
            &serde_json::json!({"run_id": run_id, "share_id": share_id, "revoked": true}),
            f,
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_errors_name_the_flag_and_the_value() {
        let err = parse_specs("--share", &["team".into(), "public:edit".into()])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--share `public:edit`"), "{err}");
        assert!(err.contains("view-only"), "{err}");
        assert_eq!(
            parse_specs("--with", &["a@b.c:edit".into()]).unwrap()[0].grantee,
            "user:a@b.c"
        );
    }
}
