//! The worker's own check of what an assignment asks it to give to host
//! commands (scenario S9), before any backend runs anything: the server
//! checks the same when an environment is stored, but the worker does not
//! rely on that (an older or compromised server, a hand-made assignment).

use super::{BackendError, TaskSpec};
use hangar_protocol::repository::{check_git_ref, check_image_ref, check_repo_url};
use hangar_protocol::worker::FailureReason;

/// Refuses repository URLs and refs that could act as options or reach
/// local files (unless allowed), and image names that are not references.
pub(crate) fn check_assignment(spec: &TaskSpec) -> Result<(), BackendError> {
    let a = &spec.assignment;
    if let Some(env) = &a.environment {
        for (i, repo) in env.repos.iter().enumerate() {
            check_repo(i, repo, spec.allow_local_repositories)?;
        }
    }
    let images = a
        .environment
        .as_ref()
        .and_then(|e| e.docker_image.as_deref())
        .into_iter()
        .chain(a.docker_image.as_deref());
    for image in images.filter(|i| !i.is_empty()) {
        check_image_ref(image).map_err(|e| {
            BackendError::new(
                FailureReason::InvalidImage,
                format!("refusing the task's image: {e}"),
            )
        })?;
    }
    Ok(())
}

/// One repository of an assignment (also checked right before git runs).
pub(crate) fn check_repo(
    index: usize,
    repo: &hangar_protocol::worker::RepoSpec,
    allow_local: bool,
) -> Result<(), BackendError> {
    let refuse = |e: hangar_protocol::repository::InputError| {
        BackendError::new(
            FailureReason::WorkspaceSetup,
            format!("refusing repository {}: {e}", index + 1),
        )
    };
    check_repo_url(&repo.url, allow_local).map_err(refuse)?;
    if let Some(r) = repo.git_ref.as_deref().filter(|r| !r.is_empty()) {
        check_git_ref(r).map_err(refuse)?;
    }
    Ok(())
}
