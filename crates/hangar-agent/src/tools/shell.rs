//! `shell {command, timeout_ms?, workdir?}`: one `bash -c` command in the workspace.
//!
//! The command runs in its own process group with stdin closed; stdout and
//! stderr share one pipe so the model sees them interleaved as a terminal
//! would. On timeout or cancellation the whole group gets SIGTERM, then
//! SIGKILL after [`KILL_GRACE`], so background children do not outlive it.

use super::{
    CappedOutput, DEFAULT_HEAD_BYTES, DEFAULT_TAIL_BYTES, ToolContext, ToolError, ToolHandler,
    decode_args,
};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

/// Timeout when the model gives none.
pub const DEFAULT_SHELL_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest timeout the model may ask for.
pub const MAX_SHELL_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Time between SIGTERM and SIGKILL for the command's process group.
pub const KILL_GRACE: Duration = Duration::from_millis(500);
/// How long to keep reading output after the command exited: background
/// children that inherited the pipe may keep it open indefinitely.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// Read buffer size.
const READ_CHUNK: usize = 8 * 1024;

/// The `shell` tool.
#[derive(Debug, Clone)]
pub struct ShellTool {
    /// Timeout when the call names none.
    pub default_timeout: Duration,
    /// Leading output bytes kept.
    pub head_bytes: usize,
    /// Trailing output bytes kept.
    pub tail_bytes: usize,
}

impl Default for ShellTool {
    fn default() -> Self {
        ShellTool {
            default_timeout: DEFAULT_SHELL_TIMEOUT,
            head_bytes: DEFAULT_HEAD_BYTES,
            tail_bytes: DEFAULT_TAIL_BYTES,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ShellArgs {
    command: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    workdir: Option<String>,
}

/// How the command ended.
enum End {
    Exited(ExitStatus),
    WaitFailed(std::io::Error),
    TimedOut,
    Cancelled,
}

#[async_trait::async_trait]
impl ToolHandler for ShellTool {
    fn name(&self) -> &str {
        "shell"
    }

    fn description(&self) -> &str {
        "Runs a bash command in the workspace and returns its exit code and combined \
         stdout/stderr (long output keeps its beginning and end). stdin is closed, so \
         commands must not wait for input. The command is killed after `timeout_ms` \
         (default 120000)."
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The bash command line to run."},
                "timeout_ms": {"type": "integer", "minimum": 1, "description": "Kill the command after this many milliseconds (default 120000)."},
                "workdir": {"type": "string", "description": "Directory to run in, relative to the workspace root (default: the root)."}
            },
            "required": ["command"],
            "additionalProperties": false
        })
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let args: ShellArgs = decode_args(args)?;
        let dir = resolve_dir(&ctx.workdir, args.workdir.as_deref()).await?;
        let timeout = args
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.default_timeout)
            .min(MAX_SHELL_TIMEOUT);
        self.run(&args.command, &dir, timeout, ctx).await
    }
}

impl ShellTool {
    async fn run(
        &self,
        command: &str,
        dir: &Path,
        timeout: Duration,
        ctx: &ToolContext,
    ) -> Result<String, ToolError> {
        let (reader, writer) = std::io::pipe().map_err(|e| ToolError::Fatal(Box::new(e)))?;
        let writer_err = writer
            .try_clone()
            .map_err(|e| ToolError::Fatal(Box::new(e)))?;
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("-c")
            .arg(command)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer_err)
            .process_group(0)
            .kill_on_drop(true)
            // The run token is for the runtime, not for commands the model writes.
            .env_remove(hangar_protocol::ENV_RUN_TOKEN);
        let spawned = cmd.spawn();
        // The command holds our copies of the pipe's write end; drop them so
        // the read side sees EOF once the command's processes are gone.
        drop(cmd);
        let mut child = spawned.map_err(|e| ToolError::Model(format!("cannot start bash: {e}")))?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let mut reader = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
            .map_err(|e| ToolError::Fatal(Box::new(e)))?;

        let mut output = CappedOutput::new(self.head_bytes, self.tail_bytes);
        // Secrets are blanked before capping: a value straddling the cut
        // between head and tail would otherwise leak in two halves.
        let mut redact = ctx.redactor.stream();
        let mut buf = vec![0u8; READ_CHUNK];
        let mut eof = false;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let end = loop {
            tokio::select! {
                read = reader.read(&mut buf), if !eof => match read {
                    Ok(0) | Err(_) => eof = true,
                    Ok(n) => output.push(&redact.push(&buf[..n])),
                },
                status = child.wait() => break match status {
                    Ok(status) => End::Exited(status),
                    Err(e) => End::WaitFailed(e),
                },
                () = &mut deadline => break End::TimedOut,
                () = ctx.cancel.cancelled() => break End::Cancelled,
            }
        };
        if matches!(end, End::TimedOut | End::Cancelled | End::WaitFailed(_)) {
            kill_group(pgid, &mut child).await;
        }
        if !eof {
            drain(&mut reader, &mut output, &mut redact, &mut buf).await;
        }
        output.push(&redact.finish());
        let text = output.render();
        let text = if text.is_empty() {
            "(no output)".to_owned()
        } else {
            text
        };
        match end {
            End::Exited(status) => Ok(format!("{}\n{text}", describe_exit(status))),
            End::TimedOut => Err(ToolError::Model(format!(
                "command timed out after {} ms and was killed\n{text}",
                timeout.as_millis()
            ))),
            End::Cancelled => Err(ToolError::Model(format!("command cancelled\n{text}"))),
            End::WaitFailed(e) => Err(ToolError::Model(format!(
                "lost track of the command: {e}\n{text}"
            ))),
        }
    }
}

/// Reads what is left in the pipe, for a bounded time.
async fn drain(
    reader: &mut pipe::Receiver,
    output: &mut CappedOutput,
    redact: &mut crate::redact::StreamRedactor,
    buf: &mut [u8],
) {
    let _ = tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, async {
        loop {
            match reader.read(buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => output.push(&redact.push(&buf[..n])),
            }
        }
    })
    .await;
}

/// SIGTERM to the group, SIGKILL after the grace, then reap the leader.
async fn kill_group(pgid: Option<Pid>, child: &mut tokio::process::Child) {
    let Some(pgid) = pgid else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return;
    };
    let _ = killpg(pgid, Signal::SIGTERM);
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    // Always, even if the leader is gone: background members may ignore SIGTERM.
    let _ = killpg(pgid, Signal::SIGKILL);
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            pgid = pgid.as_raw(),
            "shell command did not exit after SIGKILL"
        );
    }
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code: {code}"),
        (None, Some(signal)) => format!("terminated by signal {signal}"),
        (None, None) => "exit status unknown".to_owned(),
    }
}

/// The directory to run in: the workspace root, or `requested` inside it.
async fn resolve_dir(root: &Path, requested: Option<&str>) -> Result<PathBuf, ToolError> {
    let root = tokio::fs::canonicalize(root).await.map_err(|e| {
        ToolError::Model(format!("workspace {} is not usable: {e}", root.display()))
    })?;
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return Ok(root);
    };
    let dir = tokio::fs::canonicalize(root.join(requested))
        .await
        .map_err(|e| ToolError::Model(format!("workdir `{requested}`: {e}")))?;
    if !dir.starts_with(&root) {
        return Err(ToolError::Model(format!(
            "workdir `{requested}` is outside the workspace {}",
            root.display()
        )));
    }
    if !dir.is_dir() {
        return Err(ToolError::Model(format!(
            "workdir `{requested}` is not a directory"
        )));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::new(dir, CancellationToken::new(), "call_1")
    }

    /// Whether a process is gone (or a zombie waiting for a reaper that is not us).
    fn is_dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X"),
        }
    }

    async fn wait_dead(pid: i32) -> bool {
        for _ in 0..100 {
            if is_dead(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn runs_in_the_workdir_and_reports_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let out = ShellTool::default()
            .call(
                json!({"command": "echo out; echo err >&2; pwd; exit 3", "workdir": "sub"}),
                &ctx(dir.path()),
            )
            .await
            .unwrap();
        let sub = std::fs::canonicalize(dir.path().join("sub")).unwrap();
        assert!(out.starts_with("exit code: 3\n"), "{out}");
        assert!(out.contains("out\n"), "{out}");
        assert!(out.contains("err\n"), "{out}");
        assert!(out.contains(&sub.display().to_string()), "{out}");
    }

    #[tokio::test]
    async fn workdir_must_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let err = ShellTool::default()
            .call(json!({"command": "pwd", "workdir": ".."}), &ctx(dir.path()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ToolError::Model(ref m) if m.contains("outside")),
            "{err}"
        );
        let err = ShellTool::default()
            .call(json!({"command": "pwd", "workdir": "/"}), &ctx(dir.path()))
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::Model(_)), "{err}");
    }

    #[tokio::test]
    async fn stdin_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let out = ShellTool::default()
            .call(
                json!({"command": "cat; echo read-done", "timeout_ms": 5000}),
                &ctx(dir.path()),
            )
            .await
            .unwrap();
        assert!(out.contains("read-done"), "{out}");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let err = ShellTool::default()
            .call(
                json!({
                    "command": "echo $$ > leader; sleep 100 & echo $! > bg; trap '' TERM; sleep 100",
                    "timeout_ms": 300
                }),
                &ctx(dir.path()),
            )
            .await
            .unwrap_err();
        let ToolError::Model(message) = err else {
            panic!("expected a model error")
        };
        assert!(message.contains("timed out after 300 ms"), "{message}");
        for file in ["leader", "bg"] {
            let pid: i32 = std::fs::read_to_string(dir.path().join(file))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(wait_dead(pid).await, "{file} process {pid} still running");
        }
    }

    #[tokio::test]
    async fn cancel_kills_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let cancel = ctx.cancel.clone();
        let tool = ShellTool::default();
        let call = tool.call(
            json!({"command": "echo started; touch marker; sleep 100"}),
            &ctx,
        );
        tokio::pin!(call);
        let marker = dir.path().join("marker");
        let mut cancelled_at = None;
        // Cancel once the command is demonstrably running.
        let result = loop {
            tokio::select! {
                r = &mut call => break r,
                () = tokio::time::sleep(Duration::from_millis(10)), if cancelled_at.is_none() => {
                    if marker.exists() {
                        cancelled_at = Some(std::time::Instant::now());
                        cancel.cancel();
                    }
                }
            }
        };
        let elapsed = cancelled_at
            .expect("cancelled before the command ended")
            .elapsed();
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
        let err = result.unwrap_err();
        assert!(
            matches!(err, ToolError::Model(ref m) if m.starts_with("command cancelled") && m.contains("started")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn output_cap_keeps_head_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let tool = ShellTool {
            head_bytes: 100,
            tail_bytes: 100,
            ..ShellTool::default()
        };
        let out = tool
            .call(
                json!({"command": "echo FIRST; seq 1 20000; echo LAST"}),
                &ctx(dir.path()),
            )
            .await
            .unwrap();
        assert!(out.starts_with("exit code: 0\nFIRST\n1\n2\n"), "{out}");
        assert!(out.ends_with("19999\n20000\nLAST\n"), "{out}");
        assert!(out.contains("bytes omitted …]"), "{out}");
        assert!(out.len() < 400, "{}", out.len());
    }

    #[tokio::test]
    async fn background_child_holding_the_pipe_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = std::time::Instant::now();
        let out = ShellTool::default()
            .call(
                json!({"command": "sleep 3 & echo $! > bg; echo fg-done"}),
                &ctx(dir.path()),
            )
            .await
            .unwrap();
        assert!(out.contains("fg-done"), "{out}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
        let pid: i32 = std::fs::read_to_string(dir.path().join("bg"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
