//! Docker images for tests, built locally: nothing can be pulled here.
//!
//! - [`base_image`]: a Debian bookworm `minbase` root file system
//!   (`mmdebstrap --variant=minbase bookworm - | docker import - <tag>`):
//!   glibc, bash, coreutils; no git, no curl. Built once and cached by tag;
//!   concurrent test processes serialise on a lock file so only one builds.
//!   Needs Debian mirrors the first time (and `mmdebstrap`, installed with
//!   apt-get when missing), nothing else.
//! - [`image_with_files`]: an image of our own files (binaries, scripts) on
//!   top of a base, built offline with the classic builder and cached by a
//!   content hash in its tag.
//!
//! Every function fails (never skips) when Docker is unreachable.

use anyhow::{Context, Result, bail};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Tag of the Debian minbase image. Bump the suffix to force a rebuild.
pub const BASE_IMAGE: &str = "hangar-test/debian-minbase:bookworm-1";

/// Whether `image` exists in the local Docker engine.
pub fn image_exists(image: &str) -> Result<bool> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run `docker` (is the Docker CLI installed?)")?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such image") || err.contains("No such object") {
        return Ok(false);
    }
    bail!("docker is unreachable: {}", err.trim())
}

/// Holds an exclusive lock on a file in the temp dir while building `what`.
fn build_lock(what: &str) -> Result<std::fs::File> {
    let mut h = DefaultHasher::new();
    what.hash(&mut h);
    let path = std::env::temp_dir().join(format!("hangar-image-{:016x}.lock", h.finish()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    file.lock()
        .with_context(|| format!("lock {}", path.display()))?;
    Ok(file)
}

/// The Debian minbase image ([`BASE_IMAGE`]), built on first use.
pub fn base_image() -> Result<String> {
    if image_exists(BASE_IMAGE)? {
        return Ok(BASE_IMAGE.to_owned());
    }
    let _lock = build_lock(BASE_IMAGE)?;
    if image_exists(BASE_IMAGE)? {
        return Ok(BASE_IMAGE.to_owned());
    }
    ensure_mmdebstrap()?;
    eprintln!("building {BASE_IMAGE} with mmdebstrap (first run only; needs Debian mirrors)");
    let mut debootstrap = Command::new("mmdebstrap")
        .args(["--variant=minbase", "--quiet", "bookworm", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn mmdebstrap")?;
    let tar = debootstrap.stdout.take().context("mmdebstrap stdout")?;
    let import = Command::new("docker")
        .args(["import", "-", BASE_IMAGE])
        .stdin(Stdio::from(tar))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("spawn docker import")?;
    let strap = debootstrap.wait_with_output().context("wait mmdebstrap")?;
    if !strap.status.success() {
        bail!(
            "mmdebstrap failed ({}): {}",
            strap.status,
            String::from_utf8_lossy(&strap.stderr)
        );
    }
    if !import.status.success() {
        bail!(
            "docker import failed ({}): {}",
            import.status,
            String::from_utf8_lossy(&import.stderr)
        );
    }
    Ok(BASE_IMAGE.to_owned())
}

fn ensure_mmdebstrap() -> Result<()> {
    let found = Command::new("sh")
        .args(["-c", "command -v mmdebstrap"])
        .stdout(Stdio::null())
        .status()
        .context("sh")?
        .success();
    if found {
        return Ok(());
    }
    let status = Command::new("sh")
        .args([
            "-c",
            "apt-get install -y mmdebstrap || (apt-get update && apt-get install -y mmdebstrap)",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("apt-get install mmdebstrap")?;
    if !status.success() {
        bail!("mmdebstrap is missing and `apt-get install -y mmdebstrap` failed");
    }
    Ok(())
}

/// An image `name:<content hash>` = `base` plus `files` (`(host path, path in
/// image)`, copied with their modes) plus optional `RUN` lines. Built only
/// when that tag is missing.
pub fn image_with_files(
    name: &str,
    base: &str,
    files: &[(PathBuf, &str)],
    run: &[&str],
) -> Result<String> {
    let mut h = DefaultHasher::new();
    base.hash(&mut h);
    run.hash(&mut h);
    for (host, dest) in files {
        let bytes = std::fs::read(host).with_context(|| format!("read {}", host.display()))?;
        bytes.hash(&mut h);
        dest.hash(&mut h);
    }
    let tag = format!("{name}:{:016x}", h.finish());
    if image_exists(&tag)? {
        return Ok(tag);
    }
    let _lock = build_lock(&tag)?;
    if image_exists(&tag)? {
        return Ok(tag);
    }
    let ctx = tempfile::tempdir()?;
    let mut dockerfile = format!("FROM {base}\n");
    for (i, (host, dest)) in files.iter().enumerate() {
        let local = format!("f{i}");
        std::fs::copy(host, ctx.path().join(&local))
            .with_context(|| format!("copy {}", host.display()))?;
        dockerfile.push_str(&format!("COPY {local} {dest}\n"));
    }
    for line in run {
        dockerfile.push_str(&format!("RUN {line}\n"));
    }
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile)?;
    build(ctx.path(), &tag)?;
    Ok(tag)
}

fn build(ctx: &Path, tag: &str) -> Result<()> {
    let out = Command::new("docker")
        .args(["build", "--quiet", "--pull=false", "-t", tag, "."])
        .current_dir(ctx)
        // The classic builder works offline with a local base image.
        .env("DOCKER_BUILDKIT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("spawn docker build")?;
    if !out.status.success() {
        bail!(
            "docker build {tag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The agent sidecar image of `scripts/sidecar-image` for `hangar` (the
/// binary under test), tagged by the binary's content; built when missing.
pub fn sidecar_image(hangar: &Path) -> Result<String> {
    let mut h = DefaultHasher::new();
    std::fs::read(hangar)
        .with_context(|| format!("read {}", hangar.display()))?
        .hash(&mut h);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in [
        "deploy/docker/agent-sidecar/Dockerfile",
        "deploy/docker/agent-sidecar/entrypoint.sh",
    ] {
        std::fs::read(root.join(file))
            .with_context(|| format!("read {file}"))?
            .hash(&mut h);
    }
    let tag = format!("hangar-test/agent-sidecar:{:016x}", h.finish());
    if image_exists(&tag)? {
        return Ok(tag);
    }
    let _lock = build_lock(&tag)?;
    if image_exists(&tag)? {
        return Ok(tag);
    }
    base_image()?;
    let out = Command::new(root.join("scripts/sidecar-image"))
        .arg("--binary")
        .arg(hangar)
        .args(["--tag", &tag, "--base", BASE_IMAGE])
        .stderr(Stdio::piped())
        .output()
        .context("run scripts/sidecar-image")?;
    if !out.status.success() {
        bail!(
            "scripts/sidecar-image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(tag)
}

/// A volume holding `image`'s file system, as the stock `oz-agent-worker`'s
/// Docker backend prepares a sidecar: the image's container exported and
/// extracted into the volume by a root `tar -x`. Reused by image id.
pub fn sidecar_volume(image: &str) -> Result<String> {
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", image])?;
    let short: String = id.trim_start_matches("sha256:").chars().take(12).collect();
    let volume = format!("hangar-test-sidecar-{short}");
    let _lock = build_lock(&volume)?;
    if docker(&["volume", "inspect", &volume]).is_ok() {
        return Ok(volume);
    }
    let container = docker(&["create", image, "/bin/true"])?;
    let export = Command::new("docker")
        .args(["export", &container])
        .stdout(Stdio::piped())
        .spawn()
        .context("docker export")?;
    docker(&["volume", "create", &volume])?;
    let extract = Command::new("docker")
        .args(["run", "--rm", "-i", "--user", "0", "-v"])
        .arg(format!("{volume}:/target"))
        .args([image, "/bin/sh", "-c", "tar -x -C /target"])
        .stdin(Stdio::from(export.stdout.context("export stdout")?))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("docker run tar")?;
    let _ = docker(&["rm", "-f", &container]);
    if !extract.status.success() {
        let _ = docker(&["volume", "rm", &volume]);
        bail!(
            "filling the sidecar volume failed: {}",
            String::from_utf8_lossy(&extract.stderr)
        );
    }
    Ok(volume)
}

/// Runs `docker args…`; answers its trimmed stdout.
fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("spawn docker")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
