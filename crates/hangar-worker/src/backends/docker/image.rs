//! Task images: precedence, pull policy and registry credentials.

use super::execution::DockerExecution;
use super::{DockerConfig, FALLBACK_IMAGE, client::docker_err};
use crate::backends::{BackendError, TaskSpec};
use crate::config::PullPolicy;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;
use hangar_protocol::worker::FailureReason;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

impl DockerExecution {
    /// Image precedence: environment → `docker_image` of the assignment → worker default → fallback.
    pub(super) fn image(spec: &TaskSpec, config: &DockerConfig) -> String {
        let a = &spec.assignment;
        a.environment
            .as_ref()
            .and_then(|e| e.docker_image.clone())
            .or_else(|| a.docker_image.clone())
            .filter(|i| !i.is_empty())
            .or_else(|| config.default_image.clone())
            .unwrap_or_else(|| FALLBACK_IMAGE.to_owned())
    }

    pub(super) async fn ensure_image(
        &self,
        image: &str,
        stop: &CancellationToken,
    ) -> Result<(), BackendError> {
        hangar_protocol::repository::check_image_ref(image)
            .map_err(|e| BackendError::new(FailureReason::InvalidImage, e.to_string()))?;
        let present = self.client().inspect_image(image).await.is_ok();
        let pull = match self.config().pull_policy {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Never => {
                if !present {
                    return Err(BackendError::new(
                        FailureReason::ImagePull,
                        format!("image {image} is not present and image_pull_policy is never"),
                    ));
                }
                false
            }
        };
        if !pull {
            return Ok(());
        }
        tracing::info!(task_id = %self.task_id, execution_id = %self.execution_id, image = %image, "pulling image");
        let (repo, tag) = split_image(image);
        let creds = registry_credentials(&repo);
        let mut stream = self.client().create_image(
            Some(CreateImageOptions {
                from_image: Some(repo),
                tag: Some(tag),
                ..Default::default()
            }),
            None,
            creds,
        );
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    None => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        return Err(docker_err(FailureReason::ImagePull, format!("cannot pull image {image}"), e));
                    }
                },
                _ = stop.cancelled() => return Err(BackendError::cancelled()),
            }
        }
    }
}

/// `repo[:tag]` → (repo, tag); digests and registry ports are kept in `repo`.
fn split_image(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_owned(), String::new());
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

/// Credentials for the image's registry from `$DOCKER_CONFIG/config.json`
/// (or `~/.docker/config.json`) `auths` entries. Credential helpers are not
/// consulted (documented gap).
fn registry_credentials(repo: &str) -> Option<bollard::auth::DockerCredentials> {
    let path = std::env::var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .ok()
        .or_else(|| dirs::home_dir().map(|h| h.join(".docker")))?
        .join("config.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    credentials_from(json.get("auths")?.as_object()?, repo)
}

/// Docker Hub's key in `auths`.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// The registry host of an image repository (`reg.example:5000/team/app` →
/// `reg.example:5000`), or Docker Hub's key.
fn registry_of(repo: &str) -> String {
    let first = repo.split('/').next().unwrap_or_default();
    if repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        first.to_ascii_lowercase()
    } else {
        DOCKER_HUB.to_owned()
    }
}

/// The host an `auths` key names: `https://reg.example/v1/` → `reg.example`.
fn auths_host(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.split('/').next().unwrap_or_default().to_ascii_lowercase()
}

/// The `auths` entry for `repo`'s registry: the same host exactly (a key
/// for `registry.company.com` never serves `registry.co`, nor the reverse).
fn credentials_from(
    auths: &serde_json::Map<String, serde_json::Value>,
    repo: &str,
) -> Option<bollard::auth::DockerCredentials> {
    let registry = registry_of(repo);
    let wanted = auths_host(&registry);
    let hub_aliases = ["index.docker.io", "docker.io", "registry-1.docker.io"];
    let entry = auths.get(&registry).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| {
                let host = auths_host(k);
                host == wanted || (registry == DOCKER_HUB && hub_aliases.contains(&host.as_str()))
            })
            .map(|(_, v)| v)
    })?;
    let auth = entry.get("auth")?.as_str()?.to_owned();
    Some(bollard::auth::DockerCredentials {
        auth: Some(auth),
        serveraddress: Some(registry),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s9_registry_credentials_match_the_exact_host() {
        let auths = serde_json::json!({
            "registry.company.com": {"auth": "Y29tcGFueQ=="},
            "https://index.docker.io/v1/": {"auth": "aHVi"},
            "https://reg.example:5000/v2/": {"auth": "cG9ydA=="},
        });
        let auths = auths.as_object().unwrap();
        let auth = |repo: &str| credentials_from(auths, repo).and_then(|c| c.auth);
        assert_eq!(
            auth("registry.company.com/team/app").as_deref(),
            Some("Y29tcGFueQ==")
        );
        // A prefix of the host is another registry.
        assert_eq!(auth("registry.co/team/app"), None);
        assert_eq!(auth("registry.company.com.evil.test/app"), None);
        assert_eq!(auth("reg.example:5000/app").as_deref(), Some("cG9ydA=="));
        assert_eq!(auth("reg.example/app"), None);
        assert_eq!(auth("ubuntu").as_deref(), Some("aHVi"));
        assert_eq!(auth("library/ubuntu").as_deref(), Some("aHVi"));
    }

    #[test]
    fn images_split() {
        assert_eq!(
            split_image("ubuntu:24.04"),
            ("ubuntu".into(), "24.04".into())
        );
        assert_eq!(split_image("ubuntu"), ("ubuntu".into(), "latest".into()));
        assert_eq!(
            split_image("reg:5000/team/img"),
            ("reg:5000/team/img".into(), "latest".into())
        );
        assert_eq!(
            split_image("reg:5000/team/img:v1"),
            ("reg:5000/team/img".into(), "v1".into())
        );
    }
}
