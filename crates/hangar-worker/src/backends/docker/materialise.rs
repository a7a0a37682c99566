//! Agent materialisation: the worker's own binary, copied once into a
//! content-addressed, read-only directory that task containers mount at `/agent`.

use crate::backends::BackendError;
use hangar_protocol::worker::FailureReason;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Copies the agent binary to `<cache>/<sha256 prefix>/hangar` (0555) unless
/// already there; returns the directory. Same content → same directory, so
/// running containers never see their `/agent` change under them.
pub(super) fn materialise_agent(agent: &Path, cache: &Path) -> Result<PathBuf, BackendError> {
    let fail = |msg: String, e: std::io::Error| {
        BackendError::with_source(FailureReason::AgentInvocation, msg, e)
    };
    let bytes = std::fs::read(agent).map_err(|e| {
        fail(
            format!(
                "cannot read the agent binary {}: {e}; set --agent-path",
                agent.display()
            ),
            e,
        )
    })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let dir = cache.join(&digest[..32]);
    let target = dir.join("hangar");
    if target.is_file() {
        return Ok(dir);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display()), e))?;
    let tmp = dir.join(format!(".hangar.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555))?;
        std::fs::rename(&tmp, &target)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(
            format!("cannot copy the agent into {}: {e}", dir.display()),
            e,
        )
    })?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555))
        .map_err(|e| fail(format!("cannot seal {}: {e}", dir.display()), e))?;
    Ok(dir)
}
