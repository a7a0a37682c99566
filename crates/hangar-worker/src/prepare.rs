//! Preparing an environment in place, from inside the sandbox.
//!
//! A Hangar worker prepares each sandbox itself (clones, setup commands)
//! before it starts the agent. A stock `oz-agent-worker` does not: it passes
//! `--environment ID` to the agent, and in Oz the agent prepares the
//! environment. `hangar agent run --environment` then calls
//! [`prepare_in_place`], which runs the worker's own code for it: the same
//! input checks (scenario S9), the same credential handling for clones, the
//! same masking (S10) and the same failure reasons (`workspace_setup`,
//! `setup_command`).

use crate::backends::BackendError;
use crate::backends::repos::{GitContext, clone_repos};
use hangar_protocol::redact::Redactor;
use hangar_protocol::worker::{EnvironmentSpec, FailureReason};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Lines of a failed setup command's output kept in its failure message.
const TAIL_LINES: usize = 20;

/// What [`prepare_in_place`] needs besides the environment.
pub struct InPlace<'a> {
    /// The workspace (the agent's working directory).
    pub workspace: &'a Path,
    /// The task's variables (the agent's own environment): repository
    /// tokens are looked up here, and setup commands get them.
    pub env: &'a BTreeMap<String, String>,
    /// Masks every secret of the task in output and messages.
    pub redactor: Redactor,
    /// `file://` URLs and local paths allowed (the server's
    /// `allow_local_repositories`; tests).
    pub allow_local_repositories: bool,
}

/// Clones the environment's repositories into the workspace and runs its
/// setup commands there, in order, as the worker would have. Setup output
/// goes to stderr, masked; the run token is not in the setup commands'
/// environment (as on the worker). Returns [`BackendError::cancelled`] once
/// `stop` fires.
pub async fn prepare_in_place(
    environment: &EnvironmentSpec,
    ctx: InPlace<'_>,
    stop: &CancellationToken,
) -> Result<(), BackendError> {
    let git = GitContext {
        redactor: ctx.redactor.clone(),
        allow_local: ctx.allow_local_repositories,
    };
    clone_repos(ctx.workspace, &environment.repos, ctx.env, &git, stop).await?;
    for (i, command) in environment.setup_commands.iter().enumerate() {
        tracing::info!(
            step = i + 1,
            of = environment.setup_commands.len(),
            "running setup command"
        );
        run_setup(command, &ctx, stop).await?;
    }
    Ok(())
}

async fn run_setup(
    command: &str,
    ctx: &InPlace<'_>,
    stop: &CancellationToken,
) -> Result<(), BackendError> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(ctx.workspace)
        .env_clear()
        .envs(
            ctx.env
                .iter()
                .filter(|(k, _)| k.as_str() != hangar_protocol::ENV_RUN_TOKEN),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            BackendError::with_source(
                FailureReason::SetupCommand,
                format!("cannot run the setup command `{command}`: {e}"),
                e,
            )
        })?;
    let tail = std::sync::Arc::new(std::sync::Mutex::new(VecDeque::new()));
    let out = pump(child.stdout.take(), ctx.redactor.clone(), tail.clone());
    let err = pump(child.stderr.take(), ctx.redactor.clone(), tail.clone());
    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| BackendError::with_source(
            FailureReason::SetupCommand,
            format!("the setup command `{command}` could not be waited for: {e}"),
            e,
        ))?,
        _ = stop.cancelled() => {
            if let Some(pid) = child.id() {
                // The whole group: the command and whatever it started.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(BackendError::cancelled());
        }
    };
    let _ = tokio::join!(out, err);
    if status.success() {
        return Ok(());
    }
    let output: Vec<String> = tail
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();
    let status = crate::backends::ExitStatus::from(status);
    Err(BackendError::new(
        FailureReason::SetupCommand,
        format!(
            "the setup command `{command}` failed ({status}); output:\n{}",
            output.join("\n")
        ),
    ))
}

/// Copies `reader`'s lines to stderr (masked) and keeps the last
/// [`TAIL_LINES`] of them.
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    redactor: Redactor,
    tail: std::sync::Arc<std::sync::Mutex<VecDeque<String>>>,
) {
    let Some(reader) = reader else { return };
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(mut line)) = lines.next_line().await {
        redactor.redact_in_place(&mut line);
        eprintln!("setup: {line}");
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}
