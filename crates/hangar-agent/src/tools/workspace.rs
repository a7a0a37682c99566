//! Keeping file tools inside the workspace (scenario S6).
//!
//! A path is resolved against the workspace root, `..` is applied
//! lexically, and then every existing ancestor is resolved through symlinks;
//! the result must still be under the (canonical) root. So `../x`,
//! `/etc/passwd` and a symlink pointing out of the workspace are all refused
//! with an error the model can read.

use super::ToolError;
use std::path::{Component, Path, PathBuf};

/// Resolves `requested` (relative to `workdir`, or absolute inside it) to a
/// canonical path inside the workspace. The path itself need not exist, but
/// whatever part of it exists is resolved through symlinks. Returns
/// `(canonical root, resolved path)`.
pub fn resolve_in_workspace(
    workdir: &Path,
    requested: &str,
) -> Result<(PathBuf, PathBuf), ToolError> {
    let root = std::fs::canonicalize(workdir).map_err(|e| {
        ToolError::Model(format!(
            "workspace {} is not usable: {e}",
            workdir.display()
        ))
    })?;
    let requested_trim = requested.trim();
    if requested_trim.is_empty() {
        return Ok((root.clone(), root));
    }
    let outside = || {
        ToolError::Model(format!(
            "refused: `{requested}` is outside the workspace {}; file tools only work inside it",
            root.display()
        ))
    };
    let raw = Path::new(requested_trim);
    let joined = if raw.is_absolute() {
        raw.to_path_buf()
    } else {
        root.join(raw)
    };
    // Lexical normalisation: `..` may not climb above the filesystem root,
    // and the result must be inside the workspace before any symlink is read.
    let mut normal = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => normal.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    return Err(outside());
                }
            }
            Component::Normal(part) => normal.push(part),
        }
    }
    if !normal.starts_with(&root) {
        return Err(outside());
    }
    // Resolve the longest existing prefix through symlinks; the rest does
    // not exist yet, so it cannot be a link.
    let mut existing = normal.clone();
    let mut rest = Vec::new();
    let resolved = loop {
        match std::fs::canonicalize(&existing) {
            Ok(real) => break real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symlink: refuse if it points outside.
                if let Ok(target) = std::fs::read_link(&existing) {
                    let base = existing.parent().unwrap_or(&root).to_path_buf();
                    let target = if target.is_absolute() {
                        target
                    } else {
                        base.join(target)
                    };
                    if !lexically_inside(&target, &root) {
                        return Err(outside());
                    }
                }
                match (
                    existing.file_name().map(ToOwned::to_owned),
                    existing.parent(),
                ) {
                    (Some(name), Some(parent)) => {
                        rest.push(name);
                        existing = parent.to_path_buf();
                    }
                    _ => return Err(outside()),
                }
            }
            Err(e) => {
                return Err(ToolError::Model(format!(
                    "cannot access `{requested}`: {e}"
                )));
            }
        }
    };
    let mut full = resolved;
    for name in rest.into_iter().rev() {
        full.push(name);
    }
    if !full.starts_with(&root) {
        return Err(outside());
    }
    Ok((root, full))
}

fn lexically_inside(path: &Path, root: &Path) -> bool {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !normal.pop() {
                    return false;
                }
            }
            Component::CurDir => {}
            other => normal.push(other.as_os_str()),
        }
    }
    normal.starts_with(root)
}

/// `path` relative to `root` for display (`.` for the root itself).
pub(crate) fn display_rel(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_owned(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", root.join("dangling")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("inner-link")).unwrap();
        let canon = std::fs::canonicalize(root).unwrap();

        for bad in [
            "../x",
            "sub/../../x",
            "/etc/passwd",
            "etc-link/passwd",
            "etc-link",
            "dangling",
            "/",
        ] {
            let err = resolve_in_workspace(root, bad).unwrap_err().to_string();
            assert!(err.contains("outside the workspace"), "{bad}: {err}");
        }
        let (_, p) = resolve_in_workspace(root, "sub/../sub/a.txt").unwrap();
        assert_eq!(p, canon.join("sub/a.txt"));
        let (_, p) = resolve_in_workspace(root, "inner-link/new.txt").unwrap();
        assert_eq!(p, canon.join("sub/new.txt"));
        let abs = canon.join("sub/a.txt");
        let (_, p) = resolve_in_workspace(root, abs.to_str().unwrap()).unwrap();
        assert_eq!(p, abs);
        let (_, p) = resolve_in_workspace(root, "new/dir/file").unwrap();
        assert_eq!(p, canon.join("new/dir/file"));
    }
}
