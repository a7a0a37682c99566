//! The Docker side of [`super::Kubelet::Docker`]: image checks, `docker
//! run` of one container with its output captured as the pod log, graceful
//! stop, and the cleanup of every container of a fake server.

use super::{DOCKER_LABEL, Inner};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// What to run.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunSpec {
    /// Docker container name.
    pub name: String,
    pub image: String,
    /// Kubernetes `command` (replaces the entrypoint).
    pub command: Vec<String>,
    /// Kubernetes `args` (replace the image's CMD).
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    pub env: Vec<(String, String)>,
    /// (host path, container path, read-only).
    pub mounts: Vec<(PathBuf, String, bool)>,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub user: Option<String>,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    pub drop_all_caps: bool,
    /// `namespace/pod`, as a label.
    pub pod: String,
    /// Container name in the pod, as a label.
    pub container: String,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    pub code: i32,
    pub oom: bool,
    /// A start failure (the process never ran).
    pub error: Option<String>,
}

/// Whether `image` is in the local engine.
pub(crate) async fn image_present(image: &str) -> bool {
    image_id(image).await.is_some()
}

/// The local image id of `image`.
pub(crate) async fn image_id(image: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A started container.
pub(crate) struct Running {
    pub name: String,
    /// The Docker container id, once it exists.
    pub id: Option<String>,
    child: Child,
    readers: Vec<JoinHandle<()>>,
}

/// Starts `spec` (`docker run`, attached, its output appended to the log
/// of `log_key`); answers once the container exists or `docker run` ended.
pub(crate) async fn run(
    inner: &Arc<Inner>,
    spec: &RunSpec,
    log_key: (String, String),
) -> Result<Running, String> {
    let mut cmd = Command::new("docker");
    cmd.arg("run")
        .args(["--name", &spec.name])
        .args(["--label", &format!("{DOCKER_LABEL}={}", inner.id)])
        .args(["--label", &format!("{DOCKER_LABEL}.pod={}", spec.pod)])
        .args([
            "--label",
            &format!("{DOCKER_LABEL}.container={}", spec.container),
        ])
        .args(["--network", "host", "--pull", "never"]);
    if let Some(dir) = &spec.working_dir {
        cmd.args(["--workdir", dir]);
    }
    for (k, v) in &spec.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    for (host, path, ro) in &spec.mounts {
        let mut m = format!("{}:{path}", host.display());
        if *ro {
            m.push_str(":ro");
        }
        cmd.arg("--volume").arg(m);
    }
    if let Some(bytes) = spec.memory_bytes {
        let bytes = bytes.max(6 * 1024 * 1024).to_string();
        cmd.args(["--memory", &bytes, "--memory-swap", &bytes]);
    }
    if let Some(cpus) = spec.cpus {
        cmd.args(["--cpus", &format!("{cpus:.3}")]);
    }
    if let Some(user) = &spec.user {
        cmd.args(["--user", user]);
    }
    if spec.read_only_root {
        cmd.arg("--read-only");
    }
    if spec.no_new_privileges {
        cmd.args(["--security-opt", "no-new-privileges"]);
    }
    if spec.drop_all_caps {
        cmd.args(["--cap-drop", "ALL"]);
    }
    let mut rest = spec.args.clone();
    if let Some((entry, more)) = spec.command.split_first() {
        cmd.args(["--entrypoint", entry]);
        let mut all = more.to_vec();
        all.extend(rest);
        rest = all;
    }
    cmd.arg(&spec.image).args(rest);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run docker: {e}"))?;
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(inner.clone(), out, log_key.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(inner.clone(), err, log_key)));
    }
    let mut running = Running {
        name: spec.name.clone(),
        id: None,
        child,
        readers,
    };
    for _ in 0..200 {
        if let Some(id) = inspect(&spec.name, "{{.Id}}").await {
            running.id = Some(id);
            break;
        }
        if let Ok(Some(_)) = running.child.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(running)
}

async fn pump(
    inner: Arc<Inner>,
    mut from: impl tokio::io::AsyncRead + Unpin,
    key: (String, String),
) {
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut st = inner.lock();
                st.logs
                    .entry(key.clone())
                    .or_default()
                    .extend_from_slice(&buf[..n]);
            }
        }
    }
}

async fn inspect(name: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "--type", "container", "--format", format, name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Running {
    /// Waits for the container to end, reads its exit from Docker, and
    /// removes it.
    pub async fn wait(mut self) -> Exit {
        let status = self.child.wait().await;
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        let state = inspect(
            &self.name,
            "{{.State.ExitCode}}|{{.State.OOMKilled}}|{{.State.Error}}",
        )
        .await;
        remove(&self.name).await;
        match state {
            Some(state) => {
                let mut parts = state.splitn(3, '|');
                let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(128);
                let oom = parts.next() == Some("true");
                let error = parts
                    .next()
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned);
                Exit { code, oom, error }
            }
            None => Exit {
                code: 128,
                oom: false,
                error: Some(format!(
                    "docker run failed ({})",
                    status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string())
                )),
            },
        }
    }
}

/// Stops a container: SIGTERM, then SIGKILL after `grace` seconds.
pub(crate) async fn stop(name: &str, grace: i64) {
    let _ = Command::new("docker")
        .args(["stop", "--time", &grace.max(0).to_string(), name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

async fn remove(name: &str) {
    let _ = Command::new("docker")
        .args(["rm", "--force", "--volumes", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Removes every container labelled with this server id (synchronously:
/// called from `Drop`). A second pass catches a container whose `docker
/// run` was still creating it during the first.
pub(crate) fn remove_all(server_id: &str) {
    remove_labelled(server_id);
    std::thread::sleep(Duration::from_millis(100));
    remove_labelled(server_id);
}

fn remove_labelled(server_id: &str) {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "--all",
            "--quiet",
            "--filter",
            &format!("label={DOCKER_LABEL}={server_id}"),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("docker")
        .args(["rm", "--force", "--volumes"])
        .args(&ids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `image` is a well-formed image reference
/// (`[host[:port]/]path[:tag][@digest]`, lowercase path components).
pub(crate) fn valid_reference(image: &str) -> bool {
    if image.is_empty() || image.trim() != image {
        return false;
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else {
            return false;
        };
        if algo.is_empty() || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return false;
        }
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return false;
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let host = parts[0];
        if host.contains('.') || host.contains(':') || host == "localhost" {
            let (h, port) = match host.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host, None),
            };
            if h.is_empty()
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
                || port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
            {
                return false;
            }
            parts.remove(0);
        }
    }
    !parts.is_empty()
        && parts.iter().all(|p| {
            let b = p.as_bytes();
            !b.is_empty()
                && b.first()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && b.last()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && b.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
                })
        })
}

#[cfg(test)]
mod tests {
    use super::valid_reference;

    #[test]
    fn image_references_are_checked() {
        for ok in [
            "debian",
            "debian:bookworm",
            "hangar-test/debian-minbase:bookworm-1",
            "registry.local:5000/team/app:v1.2",
            "localhost/app",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(valid_reference(ok), "{ok}");
        }
        for bad in [
            "",
            "Debian",
            "app:",
            "app::1",
            "a b",
            "app/",
            "/app",
            "app:-x",
            "UPPER/case:1",
        ] {
            assert!(!valid_reference(bad), "{bad}");
        }
    }
}
