//! The control plane: deletion with propagation policies and finalizers,
//! the garbage collector, and the job controller (pods, retries, status,
//! conditions, active deadline, TTL after finished).

mod job;

use super::api::{ApiError, success_status};
use super::store::{self, Res, State};
use super::{Inner, kubelet, objects};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The finalizer of a foreground deletion.
const FOREGROUND: &str = "foregroundDeletion";

/// A deletion's propagation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Foreground,
    Background,
    Orphan,
}

/// DeleteOptions.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOptions {
    pub propagation: Option<Propagation>,
    pub grace_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

/// Deletes an object as the API server does; answers the object (when it
/// still exists, or for pods) or a success Status.
pub(crate) fn delete(
    inner: &Arc<Inner>,
    res: &'static Res,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    inner.mutate(|st| delete_locked(st, res, ns, name, opts))
}

/// [`delete`] under the lock.
pub(crate) fn delete_locked(
    st: &mut State,
    res: &'static Res,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let obj = st
        .get(res.plural, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let meta = &obj["metadata"];
    let uid = meta["uid"].as_str().unwrap_or_default().to_owned();
    if let Some(want) = &opts.precondition_uid
        && *want != uid
    {
        return Err(ApiError::conflict(
            res,
            name,
            &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
        ));
    }
    if let Some(want) = &opts.precondition_rv
        && Some(want.as_str()) != meta["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict(
            res,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                meta["resourceVersion"].as_str().unwrap_or_default()
            ),
        ));
    }
    if opts.dry_run {
        return Ok(obj);
    }
    let policy = opts.propagation.unwrap_or(if res.plural == "jobs" {
        // batch/v1 Jobs keep the legacy default: dependents are orphaned.
        Propagation::Orphan
    } else {
        Propagation::Background
    });
    if policy == Propagation::Orphan {
        orphan_dependents(st, &uid);
    }
    let user_finalizers = meta["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f.as_str() != Some(FOREGROUND)));
    if res.plural == "pods" {
        let grace = opts
            .grace_seconds
            .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .max(0);
        if let Some(existing) = meta["deletionGracePeriodSeconds"].as_i64()
            && meta["deletionTimestamp"].is_string()
            && grace >= existing
        {
            return Ok(obj);
        }
        if objects::is_running(&obj) && grace > 0 || user_finalizers {
            return st
                .modify(res.plural, ns, name, |p| {
                    p["metadata"]["deletionTimestamp"] = json!(store::time_after(grace));
                    p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                })
                .ok_or_else(|| ApiError::not_found(res, name));
        }
        let removed = st.remove(res.plural, ns, name);
        return Ok(removed.unwrap_or(obj));
    }
    if meta["deletionTimestamp"].is_string() {
        return Ok(obj);
    }
    if policy == Propagation::Foreground {
        return st
            .modify(res.plural, ns, name, |o| {
                o["metadata"]["deletionTimestamp"] = json!(store::now());
                o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let list = &mut o["metadata"]["finalizers"];
                if !list.is_array() {
                    *list = json!([]);
                }
                if let Some(list) = list.as_array_mut()
                    && !list.iter().any(|f| f.as_str() == Some(FOREGROUND))
                {
                    list.push(json!(FOREGROUND));
                }
            })
            .ok_or_else(|| ApiError::not_found(res, name));
    }
    if user_finalizers {
        return st
            .modify(res.plural, ns, name, |o| {
                o["metadata"]["deletionTimestamp"] = json!(store::now());
                o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            })
            .ok_or_else(|| ApiError::not_found(res, name));
    }
    let removed = st.remove(res.plural, ns, name).unwrap_or(obj);
    Ok(success_status(res, &removed))
}

/// Drops the ownerReferences to `uid` from its dependents.
fn orphan_dependents(st: &mut State, uid: &str) {
    for ((res, ns, name), _) in st.dependents(uid) {
        st.modify(res, &ns, &name, |o| {
            if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"].as_str() != Some(uid));
                if refs.is_empty()
                    && let Some(m) = o["metadata"].as_object_mut()
                {
                    m.remove("ownerReferences");
                }
            }
        });
    }
}

/// Starts the controllers of a new object: the job controller for a Job,
/// the kubelet for a Pod.
pub(crate) fn after_create(inner: &Arc<Inner>, res: &Res, obj: &Value) {
    let meta = &obj["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or_default().to_owned();
    let name = meta["name"].as_str().unwrap_or_default().to_owned();
    let uid = meta["uid"].as_str().unwrap_or_default().to_owned();
    match res.plural {
        "jobs" => {
            let inner2 = inner.clone();
            inner.spawn(async move { job::job_worker(inner2, ns, name, uid).await });
        }
        "pods" => kubelet::start_pod(inner, ns, name, uid),
        _ => {}
    }
}

/// Runs the garbage collector: a pass after every change.
pub(crate) fn start_garbage_collector(inner: &Arc<Inner>) {
    let inner2 = inner.clone();
    let mut changed = inner.changed.subscribe();
    inner.spawn(async move {
        loop {
            inner2.mutate(gc_pass);
            if changed.changed().await.is_err() {
                return;
            }
            // Dependents go shortly after their owner, as in a real cluster.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

fn res_of(plural: &str) -> Option<&'static Res> {
    store::RESOURCES.iter().find(|r| r.plural == plural)
}

/// One garbage-collector pass: foreground deletions advance, and objects
/// whose owners are all gone are deleted (in the background).
fn gc_pass(st: &mut State) {
    let background = DeleteOptions {
        propagation: Some(Propagation::Background),
        ..DeleteOptions::default()
    };
    // Foreground deletions: delete dependents, then the owner once no
    // dependent that blocks owner deletion is left.
    let owners: Vec<(store::Key, Value)> = st
        .objects
        .iter()
        .filter(|(_, o)| {
            o["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f.as_str() == Some(FOREGROUND)))
                && o["metadata"]["deletionTimestamp"].is_string()
        })
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    for ((plural, ns, name), owner) in owners {
        let uid = owner["metadata"]["uid"].as_str().unwrap_or_default();
        let mut blocking = false;
        for ((dres, dns, dname), dep) in st.dependents(uid) {
            let blocks = dep["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| {
                    refs.iter().any(|r| {
                        r["uid"].as_str() == Some(uid) && r["blockOwnerDeletion"] == json!(true)
                    })
                });
            blocking |= blocks;
            if dep["metadata"]["deletionTimestamp"].is_null()
                && let Some(res) = res_of(dres)
            {
                let _ = delete_locked(st, res, &dns, &dname, &background);
            }
        }
        if !blocking {
            let done = st.modify(plural, &ns, &name, |o| {
                if let Some(f) = o["metadata"]["finalizers"].as_array_mut() {
                    f.retain(|f| f.as_str() != Some(FOREGROUND));
                }
            });
            if done.is_some_and(|o| {
                o["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
            }) {
                st.remove(plural, &ns, &name);
            }
        }
    }
    // Orphans: every owner gone.
    let uids: HashSet<String> = st
        .objects
        .values()
        .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
        .collect();
    let orphans: Vec<store::Key> = st
        .objects
        .iter()
        .filter(|(_, o)| {
            o["metadata"]["deletionTimestamp"].is_null()
                && o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| {
                        !refs.is_empty()
                            && refs
                                .iter()
                                .all(|r| r["uid"].as_str().is_none_or(|u| !uids.contains(u)))
                    })
        })
        .map(|(k, _)| k.clone())
        .collect();
    for (plural, ns, name) in orphans {
        if let Some(res) = res_of(plural) {
            let _ = delete_locked(st, res, &ns, &name, &background);
        }
    }
}
