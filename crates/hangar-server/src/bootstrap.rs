//! First start: the bootstrap team, its admin and the admin's API key, and
//! the CLI credentials file (`{server_url, api_key}`, mode 0600).

use crate::{ServerConfig, ServerError, auth, config};
use hangar_store::{NewUser, Store};
use serde::Serialize;
use std::path::PathBuf;

/// Credentials created on the first start.
#[derive(Debug, Clone, Serialize)]
pub struct Bootstrap {
    /// Team created.
    pub team: String,
    /// Admin API key (shown once).
    pub api_key: String,
    /// Where the CLI credentials were written, if anywhere.
    pub cli_config_path: Option<PathBuf>,
}

/// The file the local CLI reads its server and key from.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CliCredentials {
    /// Server base URL.
    pub server_url: String,
    /// API key.
    pub api_key: String,
}

pub(crate) async fn bootstrap(
    store: &dyn Store,
    config: &ServerConfig,
    url: &str,
) -> Result<Option<Bootstrap>, ServerError> {
    // Replicas starting together on one fresh database: one bootstraps, the
    // others wait for it here and then find its team.
    let lock = store.bootstrap_lock().await?;
    if store.team_count().await? > 0 {
        lock.release().await?;
        return Ok(None);
    }
    let created = create_admin(store).await;
    lock.release().await?;
    let (team, key) = created?;
    let path = match &config.cli_config_path {
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(p.clone()),
        None => config::default_cli_config_path(),
    };
    let written = match path {
        Some(p) => match write_cli_credentials(&p, url, &key) {
            Ok(()) => Some(p),
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "could not save CLI credentials");
                None
            }
        },
        None => None,
    };
    Ok(Some(Bootstrap {
        team: team.name,
        api_key: key,
        cli_config_path: written,
    }))
}

/// The bootstrap team, its admin user and the admin's key.
async fn create_admin(
    store: &dyn Store,
) -> Result<(hangar_store::TeamRecord, String), ServerError> {
    let team = store.create_team(&new_uid(), "default").await?;
    let user = store
        .create_user(NewUser {
            uid: new_uid(),
            team_id: team.id,
            email: None,
            display_name: "admin".to_owned(),
            role: "admin".to_owned(),
        })
        .await?;
    let (_, key) = auth::issue_api_key(store, team.id, Some(user.id), "bootstrap admin key", None)
        .await
        .map_err(|e| ServerError::Other(format!("cannot create the admin key: {e}")))?;
    Ok((team, key))
}

/// Writes `{server_url, api_key}` with mode 0600.
pub fn write_cli_credentials(path: &std::path::Path, url: &str, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let body = serde_json::to_vec_pretty(&CliCredentials {
        server_url: url.to_owned(),
        api_key: key.to_owned(),
    })
    .map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A fresh time-ordered public id.
pub(crate) fn new_uid() -> String {
    hangar_protocol::RunId::generate().0
}
