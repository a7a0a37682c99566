//! Finding and connecting to the Docker daemon, and docker errors.

use crate::backends::BackendError;
use hangar_protocol::worker::FailureReason;
use std::path::{Path, PathBuf};

/// A docker failure with its reason.
pub(super) fn docker_err(
    reason: FailureReason,
    what: impl Into<String>,
    e: bollard::errors::Error,
) -> BackendError {
    let what = what.into();
    BackendError::with_source(reason, format!("{what}: {e}"), e)
}

/// Finds the daemon: `DOCKER_HOST`, the default socket, the rootless socket.
pub fn discover_endpoint() -> Result<String, BackendError> {
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && !host.is_empty()
    {
        return Ok(host);
    }
    let default = Path::new("/var/run/docker.sock");
    if default.exists() {
        return Ok(format!("unix://{}", default.display()));
    }
    let runtime = std::env::var("XDG_RUNTIME_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            Some(PathBuf::from(format!(
                "/run/user/{}",
                nix::unistd::getuid()
            )))
        });
    if let Some(dir) = runtime {
        let rootless = dir.join("docker.sock");
        if rootless.exists() {
            return Ok(format!("unix://{}", rootless.display()));
        }
    }
    Err(BackendError::new(
        FailureReason::ContainerCreate,
        "no Docker daemon found: DOCKER_HOST is unset, and neither /var/run/docker.sock nor \
         $XDG_RUNTIME_DIR/docker.sock (rootless) exists; start Docker or set DOCKER_HOST",
    ))
}

pub(super) fn connect(endpoint: &str) -> Result<bollard::Docker, bollard::errors::Error> {
    const TIMEOUT_SECS: u64 = 120;
    if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        bollard::Docker::connect_with_http(endpoint, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else {
        bollard::Docker::connect_with_unix(endpoint, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    }
}
