//! The query of `GET /agent/runs`: [`ListRunsParams`] as sent, then checked
//! into the store's [`RunQuery`].

use crate::error::{ApiError, ApiResult};
use crate::runs::options as run_options;
use hangar_protocol::{RunExecutionLocation, RunSourceType, RunState, Timestamp};
use hangar_store::{RunQuery, RunSort};

/// Query parameters of the Oz spec this version does not filter on yet.
const UNSUPPORTED_FILTERS: &[&str] = &["artifact_type"];

/// Query of `GET /agent/runs`, as sent; the document lists these fields.
///
/// Read from the query's pairs by [`ListRunsParams::from_query`] rather than
/// by axum's `Query`: its decoder reads neither repeated keys
/// (`state=QUEUED&state=INPROGRESS`) nor `metadata[KEY]=VALUE` pairs.
/// [`ListRunsParams::into_run_query`] checks each value.
// The field docs are the document's descriptions, where `metadata[KEY]` is
// literal text, not a rustdoc link.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRunsParams {
    /// 1-500, default 20
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// next_cursor of the previous page
    #[param(pattern = r"^[0-9]{1,18}\.[0-9A-Za-z_-]{1,64}$")]
    pub cursor: Option<String>,
    /// updated_at or created_at
    #[param(pattern = r"^(updated_at|created_at)$")]
    pub sort_by: Option<String>,
    /// asc or desc
    #[param(pattern = r"^(asc|desc)$")]
    pub sort_order: Option<String>,
    /// Repeatable
    #[param(value_type = Option<Vec<hangar_protocol::RunState>>)]
    pub state: Option<Vec<String>>,
    /// Source
    #[param(value_type = Option<hangar_protocol::RunSourceType>)]
    pub source: Option<String>,
    /// Creator uid
    #[param(pattern = r"^-?[0-9]{1,18}$")]
    pub creator: Option<String>,
    /// Environment
    pub environment_id: Option<String>,
    /// Schedule
    pub schedule_id: Option<String>,
    /// config.name
    pub name: Option<String>,
    /// Model
    pub model_id: Option<String>,
    /// Skill spec
    pub skill: Option<String>,
    /// LOCAL or REMOTE
    #[param(pattern = r"^(LOCAL|REMOTE)$")]
    pub execution_location: Option<String>,
    /// RFC 3339
    #[param(format = DateTime)]
    pub created_after: Option<String>,
    /// RFC 3339
    #[param(format = DateTime)]
    pub created_before: Option<String>,
    /// RFC 3339
    #[param(format = DateTime)]
    pub updated_after: Option<String>,
    /// Text search
    #[param(pattern = r"\S")]
    pub q: Option<String>,
    /// Executor uid (the creator in Hangar)
    #[param(pattern = r"^-?[0-9]{1,18}$")]
    pub executor: Option<String>,
    /// Only descendants of this run
    #[param(min_length = 1)]
    pub ancestor_run_id: Option<String>,
    /// metadata[KEY]=VALUE, repeatable up to 5 pairs (AND)
    #[param(value_type = Option<String>)]
    pub metadata: Vec<(String, String)>,
    /// Same as metadata[automation_id]
    pub automation_id: Option<String>,
    /// Matches nothing (no factories)
    pub factory_uid: Option<String>,
}

impl ListRunsParams {
    /// Reads the pairs of a query string: a repeated key adds to `state` and
    /// `metadata`, and replaces the others. An unknown key is a 400.
    pub fn from_query(raw: Option<&str>) -> ApiResult<ListRunsParams> {
        let mut p = ListRunsParams::default();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if let Some(key) = k
                .strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
            {
                p.metadata.push((key.to_owned(), v.into_owned()));
                continue;
            }
            let v = Some(v.into_owned());
            match k.as_ref() {
                "limit" => p.limit = v,
                "cursor" => p.cursor = v,
                "sort_by" => p.sort_by = v,
                "sort_order" => p.sort_order = v,
                "state" => p.state.get_or_insert_default().extend(v),
                "source" => p.source = v,
                "creator" => p.creator = v,
                "environment_id" => p.environment_id = v,
                "schedule_id" => p.schedule_id = v,
                "name" => p.name = v,
                "model_id" => p.model_id = v,
                "skill" | "skill_spec" => p.skill = v,
                "execution_location" => p.execution_location = v,
                "created_after" => p.created_after = v,
                "created_before" => p.created_before = v,
                "updated_after" => p.updated_after = v,
                "q" => p.q = v,
                "executor" => p.executor = v,
                "ancestor_run_id" => p.ancestor_run_id = v,
                "automation_id" => p.automation_id = v,
                "factory_uid" => p.factory_uid = v,
                other if UNSUPPORTED_FILTERS.contains(&other) => {
                    return Err(ApiError::BadRequest(format!(
                        "the `{other}` filter is not supported by this server version yet"
                    )));
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown query parameter `{other}`"
                    )));
                }
            }
        }
        Ok(p)
    }

    /// The store query these parameters ask for; `None` when they can match
    /// no run (a factory, or an executor other than the creator asked for).
    pub fn into_run_query(self) -> ApiResult<Option<RunQuery>> {
        let mut q = RunQuery {
            limit: 20,
            ..RunQuery::default()
        };
        self.paging(&mut q)?;
        for (key, value) in &self.metadata {
            add_metadata_filter(&mut q, key, value)?;
        }
        // Oz stamps factory automations' runs with this metadata key.
        if let Some(id) = &self.automation_id {
            add_metadata_filter(&mut q, "automation_id", id)?;
        }
        if let Some(v) = self.ancestor_run_id {
            if v.trim().is_empty() {
                return Err(ApiError::BadRequest(
                    "`ancestor_run_id` must not be empty".into(),
                ));
            }
            q.ancestor_run_id = Some(v);
        }
        for part in self.state.iter().flatten().flat_map(|v| v.split(',')) {
            let state = RunState::parse(part.trim()).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`state` value `{part}` is unknown; use one of QUEUED, PENDING, CLAIMED, INPROGRESS, SUCCEEDED, FAILED, BLOCKED, ERROR, CANCELLED"
                ))
            })?;
            q.states.push(state);
        }
        if let Some(v) = self.source {
            q.source = Some(RunSourceType::parse(&v).ok_or_else(|| {
                ApiError::BadRequest(format!("`source` value `{v}` is not a run source type"))
            })?);
        }
        q.schedule_id = self.schedule_id;
        q.name = self.name;
        q.model_id = self.model_id;
        q.environment_id = self.environment_id;
        q.skill_spec = self.skill;
        if let Some(v) = self.q {
            if v.trim().is_empty() {
                return Err(ApiError::BadRequest("`q` must not be empty".into()));
            }
            q.text = Some(v.trim().to_owned());
        }
        if let Some(v) = self.execution_location {
            q.execution_location = Some(match v.as_str() {
                "LOCAL" => RunExecutionLocation::Local,
                "REMOTE" => RunExecutionLocation::Remote,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "`execution_location` must be LOCAL or REMOTE, got `{other}`"
                    )));
                }
            });
        }
        q.created_after = timestamp("created_after", self.created_after)?;
        q.created_before = timestamp("created_before", self.created_before)?;
        q.updated_after = timestamp("updated_after", self.updated_after)?;
        let mut matches_nothing = false;
        if let Some(v) = self.creator {
            // Creators are users; their uid in `RunItem.creator` is the numeric id.
            q.creator_user_id = Some(v.parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "`creator` `{v}` is not a creator uid from `RunItem.creator.uid`"
                ))
            })?);
        }
        // Runs execute as their creator.
        if let Some(v) = self.executor {
            let executor = v.parse::<i64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "`executor` `{v}` is not a uid from `RunItem.executor.uid`"
                ))
            })?;
            matches_nothing |= q.creator_user_id.is_some_and(|c| c != executor);
            q.creator_user_id = Some(executor);
        }
        // Hangar has no factories: a factory uid matches nothing, as the
        // Oz API answers for factories the caller cannot access.
        matches_nothing |= self.factory_uid.is_some();
        Ok((!matches_nothing).then_some(q))
    }

    /// `limit`, `cursor`, `sort_by` and `sort_order`.
    fn paging(&self, q: &mut RunQuery) -> ApiResult<()> {
        if let Some(v) = &self.limit {
            let n: i64 = v.parse().map_err(|_| {
                ApiError::BadRequest(format!("`limit` must be a number from 1 to 500, got `{v}`"))
            })?;
            if !(1..=500).contains(&n) {
                return Err(ApiError::BadRequest(format!(
                    "`limit` must be from 1 to 500, got {n}"
                )));
            }
            q.limit = n;
        }
        if let Some(v) = &self.cursor {
            q.after = Some(decode_cursor(v)?);
        }
        if let Some(v) = &self.sort_by {
            q.sort = match v.as_str() {
                "updated_at" => RunSort::UpdatedAt,
                "created_at" => RunSort::CreatedAt,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "`sort_by` value `{other}` is not supported; use `updated_at` or `created_at`"
                    )));
                }
            }
        }
        if let Some(v) = &self.sort_order {
            q.ascending = match v.as_str() {
                "asc" => true,
                "desc" => false,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "`sort_order` must be `asc` or `desc`, got `{other}`"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// An RFC 3339 time filter, in ms.
fn timestamp(field: &str, value: Option<String>) -> ApiResult<Option<i64>> {
    let Some(v) = value else {
        return Ok(None);
    };
    let t = Timestamp::parse(&v).map_err(|_| {
        ApiError::BadRequest(format!(
            "`{field}` `{v}` is not an RFC 3339 timestamp like 2026-01-31T12:00:00Z"
        ))
    })?;
    Ok(Some(t.unix_millis()))
}

fn add_metadata_filter(q: &mut RunQuery, key: &str, value: &str) -> ApiResult<()> {
    if !run_options::valid_metadata_key(key) {
        return Err(ApiError::BadRequest(format!(
            "`metadata[{key}]`: metadata keys are 1-64 bytes of letters, digits, `.`, `_` and `-`"
        )));
    }
    if q.metadata.len() >= run_options::MAX_METADATA_FILTERS {
        return Err(ApiError::BadRequest(format!(
            "at most {} metadata filters are allowed per request",
            run_options::MAX_METADATA_FILTERS
        )));
    }
    q.metadata.push((key.to_owned(), value.to_owned()));
    Ok(())
}

/// The `next_cursor` of a page ending at `(key, id)`: `<key>.<id>`, the sort
/// key (ms) and run id of the page's last run. Any cursor of that form is a
/// position in the list, so the document can state the form
/// (`^[0-9]{1,18}\.[0-9A-Za-z_-]{1,64}$`) and the server accepts all of it.
pub(super) fn encode_cursor(key: i64, id: &str) -> String {
    format!("{key}.{id}")
}

fn decode_cursor(cursor: &str) -> ApiResult<(i64, String)> {
    let bad = || {
        ApiError::BadRequest(
            "`cursor` is not a cursor returned by this API (`<number>.<run id>`); \
             pass the `next_cursor` of the previous page as it is"
                .into(),
        )
    };
    let (key, id) = cursor.split_once('.').ok_or_else(bad)?;
    let key_ok = (1..=18).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_digit());
    let id_ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !key_ok || !id_ok {
        return Err(bad());
    }
    Ok((key.parse().map_err(|_| bad())?, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_list_query(raw: Option<&str>) -> ApiResult<Option<RunQuery>> {
        ListRunsParams::from_query(raw)?.into_run_query()
    }

    #[test]
    fn list_query_rejects_bad_values_with_reasons() {
        let err = |q: &str| parse_list_query(Some(q)).unwrap_err().to_string();
        assert!(err("limit=0").contains("1 to 500"));
        assert!(err("limit=abc").contains("abc"));
        assert!(err("state=DONE").contains("DONE"));
        assert!(err("cursor=zz").contains("cursor"));
        assert!(err("sort_order=up").contains("asc"));
        assert!(err("bogus=1").contains("bogus"));
        let q = parse_list_query(Some("state=QUEUED&state=INPROGRESS&limit=5"))
            .unwrap()
            .unwrap();
        assert_eq!(q.states, vec![RunState::Queued, RunState::InProgress]);
        assert_eq!(q.limit, 5);
        assert!(err("metadata[a%20b]=1").contains("metadata[a b]"));
        assert!(err("metadata[a]=1&metadata[b]=1&metadata[c]=1&metadata[d]=1&metadata[e]=1&metadata[f]=1").contains("at most 5"));
        let q = parse_list_query(Some("metadata%5Bticket_id%5D=VIS-1&automation_id=au"))
            .unwrap()
            .unwrap();
        assert_eq!(
            q.metadata,
            vec![
                ("ticket_id".to_owned(), "VIS-1".to_owned()),
                ("automation_id".to_owned(), "au".to_owned())
            ]
        );
        assert!(parse_list_query(Some("factory_uid=f")).unwrap().is_none());
        assert!(
            parse_list_query(Some("creator=1&executor=2"))
                .unwrap()
                .is_none()
        );
        let q = parse_list_query(Some("executor=2")).unwrap().unwrap();
        assert_eq!(q.creator_user_id, Some(2));
    }

    #[test]
    fn cursors_round_trip() {
        let c = encode_cursor(42, "abc-def");
        assert_eq!(decode_cursor(&c).unwrap(), (42, "abc-def".to_owned()));
    }
}
