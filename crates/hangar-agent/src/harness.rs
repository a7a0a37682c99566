//! Third-party harnesses: `--harness claude|codex|opencode|gemini` runs that
//! CLI (when installed in the sandbox) on the prompt instead of Hangar's own
//! loop. Its output lines become session events: Claude Code's and Codex's
//! JSON event streams are understood (assistant text, tool use, the final
//! result); any other line is reported as assistant text. Auth comes from the
//! environment, where the worker injects the run's secrets
//! (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, `GEMINI_API_KEY`, …); secrets are
//! redacted from every event as usual.

use crate::agent::RunOutcome;
use crate::error::AgentError;
use crate::event::EventSink;
use crate::redact::{RedactingSink, Redactor};
use hangar_protocol::session::EventBody;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// A supported third-party CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HarnessKind {
    /// Claude Code (`claude`).
    Claude,
    /// OpenAI Codex CLI (`codex`).
    Codex,
    /// opencode (`opencode`).
    Opencode,
    /// Gemini CLI (`gemini`).
    Gemini,
}

impl HarnessKind {
    /// Parses `claude`, `codex`, `opencode` or `gemini`.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "claude" | "claude-code" => Ok(HarnessKind::Claude),
            "codex" => Ok(HarnessKind::Codex),
            "opencode" => Ok(HarnessKind::Opencode),
            "gemini" => Ok(HarnessKind::Gemini),
            other => Err(format!(
                "unknown harness `{other}`; use claude, codex, opencode or gemini"
            )),
        }
    }

    /// The program's name.
    pub fn program(self) -> &'static str {
        match self {
            HarnessKind::Claude => "claude",
            HarnessKind::Codex => "codex",
            HarnessKind::Opencode => "opencode",
            HarnessKind::Gemini => "gemini",
        }
    }

    /// Arguments for a non-interactive run of `prompt`.
    pub fn args(self, prompt: &str) -> Vec<String> {
        let p = prompt.to_owned();
        match self {
            HarnessKind::Claude => vec![
                "-p".into(),
                p,
                "--output-format".into(),
                "stream-json".into(),
                "--verbose".into(),
                "--dangerously-skip-permissions".into(),
            ],
            HarnessKind::Codex => vec!["exec".into(), "--json".into(), "--full-auto".into(), p],
            HarnessKind::Opencode => vec!["run".into(), p],
            HarnessKind::Gemini => vec!["-p".into(), p, "--yolo".into()],
        }
    }
}

/// Finds `program` in `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Events for one output line of a harness, and the final answer if the
/// line carries one.
fn line_events(line: &str) -> (Vec<EventBody>, Option<String>) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
        let text = line.trim_end();
        if text.is_empty() {
            return (Vec::new(), None);
        }
        return (
            vec![EventBody::AssistantMessage {
                text: text.to_owned(),
            }],
            None,
        );
    };
    let mut events = Vec::new();
    let kind = value["type"].as_str().unwrap_or_default();
    match kind {
        // Claude Code stream-json.
        "assistant" => {
            for block in value["message"]["content"].as_array().into_iter().flatten() {
                match block["type"].as_str() {
                    Some("text") => events.push(EventBody::AssistantMessage {
                        text: block["text"].as_str().unwrap_or_default().to_owned(),
                    }),
                    Some("thinking") => events.push(EventBody::Reasoning {
                        text: block["thinking"].as_str().unwrap_or_default().to_owned(),
                    }),
                    Some("tool_use") => events.push(EventBody::ToolCall {
                        call_id: block["id"].as_str().unwrap_or_default().to_owned(),
                        name: block["name"].as_str().unwrap_or_default().to_owned(),
                        arguments: block["input"].clone(),
                    }),
                    _ => {}
                }
            }
        }
        "user" => {
            for block in value["message"]["content"].as_array().into_iter().flatten() {
                if block["type"] == "tool_result" {
                    let output = match &block["content"] {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    events.push(EventBody::ToolResult {
                        call_id: block["tool_use_id"].as_str().unwrap_or_default().to_owned(),
                        name: String::new(),
                        output,
                        is_error: block["is_error"].as_bool().unwrap_or(false),
                    });
                }
            }
        }
        "result" => {
            let result = value["result"].as_str().unwrap_or_default().to_owned();
            return (events, Some(result));
        }
        // Codex `exec --json`: item events with an agent message.
        _ if value["msg"]["type"] == "agent_message"
            || value["item"]["type"] == "agent_message" =>
        {
            let text = value["msg"]["message"]
                .as_str()
                .or_else(|| value["item"]["text"].as_str())
                .unwrap_or_default()
                .to_owned();
            events.push(EventBody::AssistantMessage { text: text.clone() });
            return (events, Some(text));
        }
        _ => {}
    }
    (events, None)
}

/// Keeps the last few KiB of the harness's stderr, to explain a failure.
fn stderr_tail(
    stderr: Option<tokio::process::ChildStderr>,
) -> tokio_util::task::AbortOnDropHandle<String> {
    #[allow(clippy::disallowed_methods)] // aborted on drop: ends with the harness run
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let mut tail = String::new();
        if let Some(stderr) = stderr {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tail.push_str(&line);
                tail.push('\n');
                if tail.len() > 8192 {
                    tail.drain(..tail.len() - 4096);
                }
            }
        }
        tail
    }))
}

/// Runs `program` (a harness CLI) with `args` in `workdir`, reporting its
/// output to `sink`; ends with a `status` event like the built-in loop.
pub async fn run_harness(
    kind: HarnessKind,
    program: Option<&Path>,
    prompt: &str,
    workdir: &Path,
    sink: &dyn EventSink,
    redactor: Arc<Redactor>,
    cancel: &CancellationToken,
) -> Result<RunOutcome, AgentError> {
    let sink = RedactingSink::new(sink, redactor);
    sink.emit(EventBody::UserMessage {
        text: prompt.to_owned(),
    })
    .await?;
    let program = match program
        .map(Path::to_path_buf)
        .or_else(|| find_program(kind.program()))
    {
        Some(p) => p,
        None => {
            let message = format!(
                "the {} harness needs `{}` installed in the sandbox; it is not on PATH",
                kind.program(),
                kind.program()
            );
            return finish(&sink, RunOutcome::Failed { message }).await;
        }
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(kind.args(prompt))
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .env_remove(hangar_protocol::ENV_RUN_TOKEN);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = format!("cannot start {}: {e}", program.display());
            return finish(&sink, RunOutcome::Failed { message }).await;
        }
    };
    let Some(stdout) = child.stdout.take() else {
        return finish(
            &sink,
            RunOutcome::Failed {
                message: "no stdout".into(),
            },
        )
        .await;
    };
    let stderr_task = stderr_tail(child.stderr.take());
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut answer = String::new();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    let (events, result) = line_events(&line);
                    for event in events {
                        if let EventBody::AssistantMessage { text } = &event {
                            answer.clone_from(text);
                        }
                        sink.emit(event).await?;
                    }
                    if let Some(result) = result {
                        answer = result;
                    }
                }
                Ok(None) | Err(_) => break,
            },
            () = cancel.cancelled() => {
                if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
                    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                let _ = child.wait().await;
                return finish(&sink, RunOutcome::Cancelled).await;
            }
        }
    }
    let status = child.wait().await;
    let stderr_tail = stderr_task.await.unwrap_or_default();
    let outcome = match status {
        Ok(status) if status.success() => RunOutcome::Succeeded { message: answer },
        Ok(status) => RunOutcome::Failed {
            message: format!(
                "{} exited with {status}: {}",
                kind.program(),
                stderr_tail.trim()
            ),
        },
        Err(e) => RunOutcome::Failed {
            message: format!("lost track of {}: {e}", kind.program()),
        },
    };
    finish(&sink, outcome).await
}

async fn finish(sink: &dyn EventSink, outcome: RunOutcome) -> Result<RunOutcome, AgentError> {
    if let RunOutcome::Failed { message } = &outcome {
        sink.emit(EventBody::Error {
            message: message.clone(),
        })
        .await?;
    }
    sink.emit(EventBody::Status {
        state: Some(outcome.state()),
        message: outcome.message().to_owned(),
        failure_reason: None,
    })
    .await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_stream_json_lines_become_events() {
        let (events, result) = line_events(
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]}}"#,
        );
        assert_eq!(events.len(), 2);
        assert!(result.is_none());
        let (_, result) = line_events(r#"{"type":"result","result":"all done","is_error":false}"#);
        assert_eq!(result.as_deref(), Some("all done"));
        let (events, _) = line_events("plain text");
        assert_eq!(
            events,
            [EventBody::AssistantMessage {
                text: "plain text".into()
            }]
        );
        assert!(HarnessKind::parse("vim").is_err());
    }
}
