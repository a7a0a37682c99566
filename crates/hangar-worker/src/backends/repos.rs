//! Cloning an environment's repositories into a workspace, on the worker's
//! side, so a task image needs no git (ARCHITECTURE.md, life of a run, step 3).
//!
//! The worker's `git` runs with a cleared environment (`PATH`, `HOME` and the
//! prompt switches only). An HTTPS token named by `token_env` travels as an
//! `http.extraHeader` through `GIT_CONFIG_*` variables: never on the command
//! line, never written into the clone's config.
//!
//! User input never reaches git as an option (scenario S9): each URL and ref
//! is checked again right here (no leading `-`, schemes `https`, `ssh`,
//! `git`; `file://` and local paths only with `allow_local_repositories`),
//! they follow `--` / `--end-of-options`, and `GIT_ALLOW_PROTOCOL` limits
//! the transports git itself may use (submodules and redirects included).
//! Git's error output is masked with every secret of the task before it
//! becomes a failure message.

use super::{BackendError, TaskSpec};
use hangar_protocol::worker::{FailureReason, RepoSpec};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Most of git's error output kept in a failure message.
const MAX_GIT_OUTPUT: usize = 4 * 1024;

/// Clones every repository into `workspace`, in order.
pub(crate) async fn clone_all(
    workspace: &Path,
    repos: &[RepoSpec],
    env: &BTreeMap<String, String>,
    stop: &CancellationToken,
    spec: &TaskSpec,
) -> Result<(), BackendError> {
    let git = GitContext {
        redactor: task_redactor(spec, env),
        allow_local: spec.allow_local_repositories,
    };
    let span =
        tracing::info_span!("clone", task_id = %spec.task_id, execution_id = %spec.execution_id);
    let cloned =
        tracing::Instrument::instrument(clone_repos(workspace, repos, env, &git, stop), span);
    crate::metrics::step("clone", spec, cloned).await
}

/// [`clone_all`] for a caller without a [`TaskSpec`]: the agent preparing
/// the environment itself (a stock worker's `--environment`), with the
/// same checks, credentials handling and masking.
pub(crate) async fn clone_repos(
    workspace: &Path,
    repos: &[RepoSpec],
    env: &BTreeMap<String, String>,
    git: &GitContext,
    stop: &CancellationToken,
) -> Result<(), BackendError> {
    for (i, repo) in repos.iter().enumerate() {
        super::inputs::check_repo(i, repo, git.allow_local)?;
        let dest = destination(workspace, repo)?;
        let token = repo
            .token_env
            .as_deref()
            .and_then(|name| env.get(name))
            .filter(|t| !t.is_empty());
        tracing::info!(url = %redact_url(&repo.url), dest = %dest.display(), "cloning repository");
        let dest_arg = dest.to_string_lossy().into_owned();
        git.run(
            workspace,
            &["clone", "--quiet", "--", &repo.url, &dest_arg],
            token,
            stop,
        )
        .await?;
        if let Some(git_ref) = repo.git_ref.as_deref().filter(|r| !r.is_empty()) {
            git.run(
                &dest,
                &["checkout", "--quiet", "--end-of-options", git_ref, "--"],
                token,
                stop,
            )
            .await?;
        }
    }
    Ok(())
}

/// The task's secrets (the values of its `secret_names` and the run token).
pub(crate) fn task_redactor(
    spec: &TaskSpec,
    env: &BTreeMap<String, String>,
) -> hangar_protocol::redact::Redactor {
    let mut names = spec
        .assignment
        .environment
        .as_ref()
        .map(|e| e.secret_names.clone())
        .unwrap_or_default();
    if let Some(listed) = spec
        .assignment
        .env_vars
        .get(hangar_protocol::ENV_SECRET_NAMES)
    {
        names.extend(
            listed
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
        );
    }
    hangar_protocol::redact::Redactor::new(
        names
            .iter()
            .map(String::as_str)
            .chain([hangar_protocol::ENV_RUN_TOKEN])
            .filter_map(|n| env.get(n).or_else(|| spec.assignment.env_vars.get(n)))
            .cloned(),
    )
}

/// What every git invocation of one task shares.
pub(crate) struct GitContext {
    /// Masks the task's secrets in git's error output.
    pub(crate) redactor: hangar_protocol::redact::Redactor,
    /// `file://` URLs and local paths allowed (tests).
    pub(crate) allow_local: bool,
}

impl GitContext {
    async fn run(
        &self,
        cwd: &Path,
        args: &[&str],
        token: Option<&String>,
        stop: &CancellationToken,
    ) -> Result<(), BackendError> {
        let protocols = if self.allow_local {
            "https:ssh:git:file"
        } else {
            "https:ssh:git"
        };
        run_git(cwd, args, token, protocols, &self.redactor, stop).await
    }
}

/// `workspace/<path or repository name>`, refusing anything that leaves the workspace.
fn destination(workspace: &Path, repo: &RepoSpec) -> Result<PathBuf, BackendError> {
    let name = match repo.path.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => p.to_owned(),
        None => repo
            .url
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or_default()
            .trim_end_matches(".git")
            .to_owned(),
    };
    let rel = Path::new(&name);
    let ok = !name.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        return Err(BackendError::new(
            FailureReason::WorkspaceSetup,
            format!(
                "cannot clone {}: target directory {name:?} must be a relative path inside the workspace",
                redact_url(&repo.url)
            ),
        ));
    }
    Ok(workspace.join(rel))
}

async fn run_git(
    cwd: &Path,
    args: &[&str],
    token: Option<&String>,
    protocols: &str,
    redactor: &hangar_protocol::redact::Redactor,
    stop: &CancellationToken,
) -> Result<(), BackendError> {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_ALLOW_PROTOCOL", protocols)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = token {
        let basic = base64(format!("x-access-token:{token}").as_bytes());
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            );
    }
    let child = cmd.spawn().map_err(|e| {
        BackendError::with_source(
            FailureReason::WorkspaceSetup,
            format!("cannot run git (is it installed on the worker?): {e}"),
            e,
        )
    })?;
    let output = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| {
            BackendError::with_source(FailureReason::WorkspaceSetup, format!("git failed: {e}"), e)
        })?,
        // Dropping the future kills git (kill_on_drop).
        _ = stop.cancelled() => return Err(BackendError::cancelled()),
    };
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    if let Some(token) = token {
        text = text.replace(token.as_str(), "***");
    }
    redactor.redact_in_place(&mut text);
    if text.len() > MAX_GIT_OUTPUT {
        let mut cut = MAX_GIT_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let shown: Vec<String> = args.iter().map(|a| redact_url(a)).collect();
    Err(BackendError::new(
        FailureReason::WorkspaceSetup,
        format!(
            "`git {}` failed ({}): {}",
            shown.join(" "),
            output.status,
            text.trim()
        ),
    ))
}

/// Removes user info (`https://user:pass@host` → `https://***@host`) from a URL for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic header.
fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn destinations_stay_inside() {
        let ws = Path::new("/ws");
        let repo = |url: &str, path: Option<&str>| RepoSpec {
            url: url.into(),
            git_ref: None,
            token_env: None,
            path: path.map(Into::into),
        };
        assert_eq!(
            destination(ws, &repo("https://h/o/app.git", None)).unwrap(),
            Path::new("/ws/app")
        );
        assert_eq!(
            destination(ws, &repo("/srv/git/lib/", None)).unwrap(),
            Path::new("/ws/lib")
        );
        assert_eq!(
            destination(ws, &repo("x", Some("a/b"))).unwrap(),
            Path::new("/ws/a/b")
        );
        for bad in ["../x", "/etc", "a/../../b", "."] {
            assert!(destination(ws, &repo("x", Some(bad))).is_err(), "{bad}");
        }
        assert_eq!(redact_url("https://u:p@h/x"), "https://***@h/x");
    }
}
