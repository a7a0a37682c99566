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
    let first = repo.split('/').next().unwrap_or_default();
    let registry = if repo.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        first.to_owned()
    } else {
        "https://index.docker.io/v1/".to_owned()
    };
    let path = std::env::var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .ok()
        .or_else(|| dirs::home_dir().map(|h| h.join(".docker")))?
        .join("config.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = json.get("auths")?.as_object()?;
    let entry = auths.get(&registry).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| {
                k.trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .starts_with(&registry)
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
