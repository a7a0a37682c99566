//! The Oz run-level request fields beyond prompt and configuration
//! (`metadata`, `mode`, `parent_run_id`, `conversation_id`, `attachments`,
//! `interactive`, …) and the newer `AmbientAgentConfig` fields: their
//! validation, and their storage in the run's (or schedule's) configuration
//! as [`RunOptions`], so they need no columns of their own.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use hangar_protocol::{
    AgentConfig, AttachmentInput, Metadata, RunAgentRequest, RunId, RunMode, RunOptions,
};

/// Most metadata keys on a run or schedule.
pub const MAX_METADATA_KEYS: usize = 20;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 64;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 256;
/// Most metadata pairs one run listing filters on.
pub const MAX_METADATA_FILTERS: usize = 5;
/// Deepest orchestration: a run may have at most this many ancestors.
pub const MAX_RUN_DEPTH: usize = 10;
/// Largest attachment, decoded.
pub const MAX_ATTACHMENT_BYTES: u64 = 10 * 1024 * 1024;
/// Attachment types the Oz API accepts.
const ATTACHMENT_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// Whether `key` is a valid metadata key (1–64 bytes of `[a-zA-Z0-9._-]`).
pub fn valid_metadata_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_METADATA_KEY_BYTES
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks metadata against the Oz rules; `field` names it in errors.
pub fn validate_metadata(field: &str, metadata: &Metadata) -> ApiResult<()> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(ApiError::BadRequest(format!(
            "`{field}` has {} keys; at most {MAX_METADATA_KEYS} are allowed",
            metadata.len()
        )));
    }
    for (key, value) in metadata {
        if !valid_metadata_key(key) {
            return Err(ApiError::BadRequest(format!(
                "`{field}` key `{key}` is invalid: keys are 1-{MAX_METADATA_KEY_BYTES} bytes of \
                 letters, digits, `.`, `_` and `-`"
            )));
        }
        if value.len() > MAX_METADATA_VALUE_BYTES || value.contains('\0') {
            return Err(ApiError::BadRequest(format!(
                "`{field}.{key}` is invalid: values are at most {MAX_METADATA_VALUE_BYTES} bytes \
                 and contain no NUL character"
            )));
        }
    }
    Ok(())
}

/// Accepts `normal`; Hangar's agent has no plan-only or orchestration mode,
/// and running such a request as a normal one would change files the caller
/// only wanted planned.
pub fn check_mode(field: &str, mode: Option<RunMode>) -> ApiResult<Option<RunMode>> {
    match mode {
        None | Some(RunMode::Normal) => Ok(mode),
        Some(other) => Err(ApiError::BadRequest(format!(
            "`{field}` `{}` is not supported by this server: Hangar runs execute in `normal` mode \
             (omit `{field}` or send `normal`)",
            other.as_str()
        ))),
    }
}

/// Hangar has no agent identities (`GET /agent/identities` is empty), so
/// naming one is an error rather than a silent change of principal.
pub fn reject_identity(field: &str, uid: Option<&str>) -> ApiResult<()> {
    match uid {
        None => Ok(()),
        Some(uid) => Err(ApiError::BadRequest(format!(
            "`{field}`: agent identity `{uid}` does not exist (this server has no agent \
             identities; omit `{field}` to run as the team)"
        ))),
    }
}

/// Runs and schedules are team-owned; a personal one would be visible to the
/// whole team, so `team: false` is refused rather than ignored.
pub fn reject_personal(team: Option<bool>) -> ApiResult<()> {
    if team == Some(false) {
        return Err(ApiError::BadRequest(
            "`team: false` is not supported: every run and schedule belongs to the team of the \
             API key (omit `team` or send `true`)"
                .into(),
        ));
    }
    Ok(())
}

/// Validates the configuration fields callers may send beyond the Oz spec's
/// original ones, and normalises `skills` (its first entry is the
/// `skill_spec`). `field` is `config` or `agent_config`.
pub fn check_config(field: &str, config: &mut AgentConfig) -> ApiResult<()> {
    if config.hangar.is_some() {
        return Err(ApiError::BadRequest(format!(
            "body field \"{field}\": unknown field `_hangar`"
        )));
    }
    if let Some(skills) = &config.skills {
        // Answers carry the first skill in `skill_spec` too: sending an
        // answer's configuration back is fine.
        if config.skill_spec.is_some() && config.skill_spec.as_ref() != skills.first() {
            return Err(ApiError::BadRequest(format!(
                "`{field}.skills` and `{field}.skill_spec` are mutually exclusive; send one"
            )));
        }
        if skills.iter().any(|s| s.trim().is_empty()) {
            return Err(ApiError::BadRequest(format!(
                "`{field}.skills` entries must not be empty"
            )));
        }
        config.skill_spec = skills.first().cloned();
    }
    if config.memory_stores.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(ApiError::BadRequest(format!(
            "`{field}.memory_stores` is not supported by this server (it has no memory stores); \
             omit it or send an empty list"
        )));
    }
    Ok(())
}

/// Decoded size of standard base64 `data`, or `None` when it is not base64.
fn base64_len(data: &str) -> Option<u64> {
    let data = data.trim_end_matches('=');
    let padding = data.len() % 4;
    if padding == 1
        || !data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return None;
    }
    Some((data.len() / 4 * 3 + padding.saturating_sub(1)) as u64)
}

fn check_attachment(i: usize, a: &AttachmentInput) -> ApiResult<hangar_protocol::AttachmentRecord> {
    let field = format!("attachments[{i}]");
    if a.file_name.trim().is_empty() || a.file_name.len() > 255 {
        return Err(ApiError::BadRequest(format!(
            "`{field}.file_name` must be 1-255 bytes"
        )));
    }
    if !ATTACHMENT_TYPES.contains(&a.mime_type.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "`{field}.mime_type` `{}` is not supported; use one of {}",
            a.mime_type,
            ATTACHMENT_TYPES.join(", ")
        )));
    }
    let bytes = base64_len(&a.data)
        .ok_or_else(|| ApiError::BadRequest(format!("`{field}.data` is not standard base64")))?;
    if bytes > MAX_ATTACHMENT_BYTES {
        return Err(ApiError::BadRequest(format!(
            "`{field}` is {bytes} bytes; the limit is {MAX_ATTACHMENT_BYTES}"
        )));
    }
    Ok(hangar_protocol::AttachmentRecord {
        file_name: a.file_name.clone(),
        mime_type: a.mime_type.clone(),
        bytes,
    })
}

/// Validates a run request's run-level fields and records them in `config`
/// (links to other runs are checked by [`resolve_links`]).
pub fn from_request(req: &RunAgentRequest, config: &mut AgentConfig) -> ApiResult<()> {
    check_config("config", config)?;
    reject_personal(req.team)?;
    reject_identity("agent_identity_uid", req.agent_identity_uid.as_deref())?;
    if let Some(who) = &req.on_behalf_of {
        return Err(ApiError::Forbidden(format!(
            "`on_behalf_of` (`{who}`) needs an agent API key with on-behalf-of enabled; this \
             server has none — runs are attributed to the key's user"
        )));
    }
    if let Some(m) = &req.metadata {
        validate_metadata("metadata", m)?;
    }
    let attachments = req
        .attachments
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, a)| check_attachment(i, a))
        .collect::<ApiResult<Vec<_>>>()?;
    let nonempty = |s: &Option<String>, field: &str| -> ApiResult<Option<String>> {
        match s.as_deref().map(str::trim) {
            Some("") => Err(ApiError::BadRequest(format!("`{field}` must not be empty"))),
            other => Ok(other.map(str::to_owned)),
        }
    };
    let options = RunOptions {
        metadata: req.metadata.clone().filter(|m| !m.is_empty()),
        mode: check_mode("mode", req.mode)?,
        conversation_id: nonempty(&req.conversation_id, "conversation_id")?,
        parent_run_id: nonempty(&req.parent_run_id, "parent_run_id")?,
        ancestors: None,
        interactive: req.interactive,
        attachments: (!attachments.is_empty()).then_some(attachments),
        trigger: None,
    };
    config.hangar = (!options.is_empty()).then_some(options);
    Ok(())
}

async fn linked_run(
    app: &AppState,
    team_id: i64,
    field: &str,
    id: &str,
) -> ApiResult<hangar_store::RunRecord> {
    app.store
        .run(team_id, &RunId(id.to_owned()))
        .await
        .map_err(|e| match e {
            hangar_store::StoreError::NotFound => ApiError::BadRequest(format!(
                "`{field}`: run `{id}` does not exist or is not visible to this team"
            )),
            other => other.into(),
        })
}

/// Checks that the parent run and conversation a request names are runs of
/// the team, records the ancestry (for `ancestor_run_id`), and merges the
/// parent's metadata under the request's.
pub async fn resolve_links(
    app: &AppState,
    team_id: i64,
    config: &mut AgentConfig,
) -> ApiResult<()> {
    let Some(options) = config.hangar.as_mut() else {
        return Ok(());
    };
    if let Some(id) = options.conversation_id.clone() {
        linked_run(app, team_id, "conversation_id", &id).await?;
    }
    let Some(parent_id) = options.parent_run_id.clone() else {
        return Ok(());
    };
    let parent = linked_run(app, team_id, "parent_run_id", &parent_id).await?;
    let inherited = parent.config.hangar.unwrap_or_default();
    let mut ancestors = inherited.ancestors.unwrap_or_default();
    ancestors.push(parent.id.0);
    if ancestors.len() > MAX_RUN_DEPTH {
        return Err(ApiError::BadRequest(format!(
            "`parent_run_id`: run `{parent_id}` is already {} levels deep; the limit is \
             {MAX_RUN_DEPTH}",
            ancestors.len() - 1
        )));
    }
    options.ancestors = Some(ancestors);
    if let Some(mut merged) = inherited.metadata {
        merged.extend(options.metadata.take().unwrap_or_default());
        validate_metadata("metadata (with the parent run's)", &merged)?;
        options.metadata = Some(merged);
    }
    Ok(())
}

/// Splits a stored configuration into what callers see and the run-level
/// fields kept with it; an empty public configuration is `None`.
pub fn public_config(config: Option<&AgentConfig>) -> (Option<AgentConfig>, RunOptions) {
    let Some(config) = config else {
        return (None, RunOptions::default());
    };
    let mut public = config.clone();
    let options = public.hangar.take().unwrap_or_default();
    let public = (public != AgentConfig::default()).then_some(public);
    (public, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_rules_follow_the_oz_api() {
        let ok: Metadata = [("ticket_id".to_owned(), "VIS-1".to_owned())].into();
        assert!(validate_metadata("metadata", &ok).is_ok());
        let bad_key: Metadata = [("a b".to_owned(), String::new())].into();
        assert!(
            validate_metadata("metadata", &bad_key)
                .unwrap_err()
                .to_string()
                .contains("`a b`")
        );
        let long: Metadata = [("k".to_owned(), "v".repeat(257))].into();
        assert!(validate_metadata("metadata", &long).is_err());
        let many: Metadata = (0..21).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_metadata("metadata", &many).is_err());
    }

    #[test]
    fn base64_sizes_and_garbage() {
        assert_eq!(base64_len("aGVsbG8="), Some(5));
        assert_eq!(base64_len("aGVsbG8"), Some(5));
        assert_eq!(base64_len("aGk="), Some(2));
        assert_eq!(base64_len(""), Some(0));
        assert_eq!(base64_len("a"), None);
        assert_eq!(base64_len("not base64!"), None);
    }

    #[test]
    fn plan_mode_and_stored_options_are_refused() {
        assert!(check_mode("mode", Some(RunMode::Plan)).is_err());
        assert!(check_mode("mode", Some(RunMode::Normal)).is_ok());
        let mut c = AgentConfig {
            hangar: Some(RunOptions::default()),
            ..AgentConfig::default()
        };
        assert!(
            check_config("config", &mut c)
                .unwrap_err()
                .to_string()
                .contains("_hangar")
        );
        let mut c = AgentConfig {
            skills: Some(vec!["a/b:s".into(), "a/b:t".into()]),
            ..AgentConfig::default()
        };
        check_config("config", &mut c).unwrap();
        assert_eq!(c.skill_spec.as_deref(), Some("a/b:s"));
    }
}
