//! The control plane: deletion with propagation policies and finalizers,
//! the garbage collector, and the job controller (pods, retries, status,
//! conditions, active deadline, TTL after finished).

use super::api::{ApiError, success_status};
use super::store::{self, Res, State};
use super::{Fault, Inner, kubelet, objects};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The finalizer of a foreground deletion.
const FOREGROUND: &str = "foregroundDeletion";

/// How long after its pod runs an [`Fault::ActiveDeadline`] Job fails.
const FAULT_DEADLINE: Duration = Duration::from_millis(300);

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
            inner.spawn(async move { job_worker(inner2, ns, name, uid).await });
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

/// How a Job ended.
#[derive(Debug, Clone)]
struct Finish {
    failed: bool,
    reason: &'static str,
    message: &'static str,
    /// When the final condition (Complete/Failed) was set.
    final_at: Option<Instant>,
}

/// The job controller's loop for one Job.
async fn job_worker(inner: Arc<Inner>, ns: String, name: String, uid: String) {
    let mut changed = inner.changed.subscribe();
    let mut job = JobSync {
        ns,
        name,
        uid,
        counted: HashSet::new(),
        active_seen: HashSet::new(),
        succeeded: 0,
        failed: 0,
        next_create: Instant::now(),
        finish: None,
        fault_deadline: None,
        started: Instant::now(),
    };
    loop {
        let now = Instant::now();
        let step = inner.mutate(|st| job.sync(st, now));
        let wake = match step {
            Step::Exit => return,
            Step::Wait { new_pods, wake } => {
                for (pns, pname, puid) in new_pods {
                    kubelet::start_pod(&inner, pns, pname, puid);
                }
                wake
            }
        };
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = sleep => {}
        }
    }
}

enum Step {
    Exit,
    Wait {
        new_pods: Vec<(String, String, String)>,
        wake: Option<Instant>,
    },
}

struct JobSync {
    ns: String,
    name: String,
    uid: String,
    /// Pods already counted as succeeded or failed.
    counted: HashSet<String>,
    /// Pods seen active (a pod that vanishes while active failed).
    active_seen: HashSet<String>,
    succeeded: i64,
    failed: i64,
    next_create: Instant,
    finish: Option<Finish>,
    fault_deadline: Option<Instant>,
    started: Instant,
}

/// The Job `spec` fields that drive a sync, with the API server's defaults.
struct JobLimits {
    completions: i64,
    parallelism: i64,
    backoff_limit: i64,
    suspended: bool,
}

impl JobLimits {
    /// Reads the limits from a Job's `spec`.
    fn of(spec: &Value) -> JobLimits {
        JobLimits {
            completions: spec["completions"].as_i64().unwrap_or(1).max(1),
            parallelism: spec["parallelism"].as_i64().unwrap_or(1).max(0),
            backoff_limit: spec["backoffLimit"].as_i64().unwrap_or(6),
            suspended: spec["suspend"].as_bool().unwrap_or(false),
        }
    }
}

/// The Job's unfinished pods as one sync counts them.
#[derive(Default)]
struct LivePods {
    /// Unfinished pods not being deleted.
    active: Vec<Value>,
    /// Unfinished pods being deleted.
    terminating: i64,
    /// Unfinished pods whose Ready condition is True.
    ready: i64,
}

/// Why a Job finishes: its Event, whether it failed, and its conditions'
/// reason and message.
struct Outcome {
    event: &'static str,
    failed: bool,
    reason: &'static str,
    message: &'static str,
}

impl Finish {
    /// Sets the finished conditions: the target one at once, the final one
    /// (and the completion time) once `settled` (no pod left).
    fn mark(&mut self, status: &mut Value, settled: bool, now: Instant) {
        let (target, last) = if self.failed {
            ("FailureTarget", "Failed")
        } else {
            ("SuccessCriteriaMet", "Complete")
        };
        set_condition(status, target, self.reason, self.message);
        if settled {
            if set_condition(status, last, self.reason, self.message) && !self.failed {
                status["completionTime"] = json!(store::now());
            }
            self.final_at.get_or_insert(now);
        }
    }
}

impl JobSync {
    /// One pass of the job controller over its Job: counts pods, finishes
    /// the Job or creates pods, writes the status; answers what to do next.
    fn sync(&mut self, st: &mut State, now: Instant) -> Step {
        let Some(job) = st.get("jobs", &self.ns, &self.name).cloned() else {
            return Step::Exit;
        };
        if job["metadata"]["uid"].as_str() != Some(self.uid.as_str()) {
            return Step::Exit;
        }
        let deleting = job["metadata"]["deletionTimestamp"].is_string();
        let spec = &job["spec"];
        let limits = JobLimits::of(spec);
        let deadline_fault = st.job_faults.get(&self.uid) == Some(&Fault::ActiveDeadline);
        let pods = self.owned_pods(st);
        let (mut live, present) = self.tally_pods(&pods, deadline_fault, now);
        self.count_vanished(st, &present, now);
        self.active_seen.retain(|u| present.contains(u));

        let start_time = job["status"]["startTime"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| (!limits.suspended).then(store::now));
        let deadline = self.deadline(spec);
        let mut new_pods = Vec::new();
        if self.finish.is_none() && !deleting {
            if let Some(outcome) = self.outcome(&limits, deadline, now) {
                self.finish_job(st, &job, &outcome, &mut live);
            } else if !limits.suspended && now >= self.next_create {
                new_pods = self.create_pods(st, &job, &limits, &mut live, now);
            }
        }
        let mut status = self.counted_status(&job, start_time.as_deref(), &live);
        let wake = if let Some(finish) = &mut self.finish {
            let settled = live.active.is_empty() && live.terminating == 0;
            finish.mark(&mut status, settled, now);
            let final_at = finish.final_at;
            self.expire_finished(st, spec, final_at, deleting, now)
        } else {
            [
                deadline,
                (self.next_create > now).then_some(self.next_create),
            ]
            .into_iter()
            .flatten()
            .min()
        };
        if status != job["status"] {
            st.modify("jobs", &self.ns, &self.name, |j| j["status"] = status);
        }
        Step::Wait { new_pods, wake }
    }

    /// The pods this Job owns, as they are now.
    fn owned_pods(&self, st: &State) -> Vec<Value> {
        st.list("pods", Some(&self.ns))
            .into_iter()
            .filter(|p| {
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r["uid"].as_str() == Some(self.uid.as_str()))
                    })
            })
            .cloned()
            .collect()
    }

    /// Counts newly finished pods and sorts the unfinished ones (arming the
    /// injected deadline when `deadline_fault` and one runs); answers them
    /// and the uids of all pods present.
    fn tally_pods(
        &mut self,
        pods: &[Value],
        deadline_fault: bool,
        now: Instant,
    ) -> (LivePods, HashSet<String>) {
        let mut present = HashSet::new();
        let mut live = LivePods::default();
        for pod in pods {
            let puid = pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            present.insert(puid.clone());
            match pod["status"]["phase"].as_str() {
                Some("Succeeded") => {
                    if self.counted.insert(puid) {
                        self.succeeded += 1;
                        self.next_create = now;
                    }
                }
                Some("Failed") => {
                    if self.counted.insert(puid) {
                        self.failed += 1;
                        self.next_create = now + retry_backoff(self.failed);
                    }
                }
                phase => {
                    self.active_seen.insert(puid);
                    if pod["metadata"]["deletionTimestamp"].is_string() {
                        live.terminating += 1;
                    } else {
                        live.active.push(pod.clone());
                    }
                    if phase == Some("Running") && deadline_fault && self.fault_deadline.is_none() {
                        self.fault_deadline = Some(now + FAULT_DEADLINE);
                    }
                    if pod["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    }) {
                        live.ready += 1;
                    }
                }
            }
        }
        (live, present)
    }

    /// Counts the pods seen unfinished that are no longer `present`, by
    /// their last known phase (failed unless it was Succeeded).
    fn count_vanished(&mut self, st: &State, present: &HashSet<String>, now: Instant) {
        let vanished: Vec<String> = self
            .active_seen
            .iter()
            .filter(|u| !present.contains(*u) && !self.counted.contains(*u))
            .cloned()
            .collect();
        for puid in vanished {
            // The pod's last state, from its DELETED change when retained.
            let last_phase = st
                .changes
                .iter()
                .rev()
                .find(|c| c.object["metadata"]["uid"].as_str() == Some(puid.as_str()))
                .and_then(|c| c.object["status"]["phase"].as_str().map(str::to_owned));
            self.counted.insert(puid);
            if last_phase.as_deref() == Some("Succeeded") {
                self.succeeded += 1;
            } else {
                self.failed += 1;
                self.next_create = now + retry_backoff(self.failed);
            }
        }
    }

    /// The earlier of `activeDeadlineSeconds` and the injected deadline.
    fn deadline(&self, spec: &Value) -> Option<Instant> {
        let deadline = spec["activeDeadlineSeconds"]
            .as_i64()
            .map(|s| self.started + Duration::from_secs(s.max(0) as u64));
        match (deadline, self.fault_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the Job finishes now: completions reached, backoff limit
    /// exceeded, or deadline passed.
    fn outcome(
        &self,
        limits: &JobLimits,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Option<Outcome> {
        if self.succeeded >= limits.completions {
            Some(Outcome {
                event: "Completed",
                failed: false,
                reason: "CompletionsReached",
                message: "Reached expected number of succeeded pods",
            })
        } else if self.failed > limits.backoff_limit {
            Some(Outcome {
                event: "BackoffLimitExceeded",
                failed: true,
                reason: "BackoffLimitExceeded",
                message: "Job has reached the specified backoff limit",
            })
        } else if deadline.is_some_and(|d| now >= d) {
            Some(Outcome {
                event: "DeadlineExceeded",
                failed: true,
                reason: "DeadlineExceeded",
                message: "Job was active longer than specified deadline",
            })
        } else {
            None
        }
    }

    /// Records the Job's `outcome` (an Event and [`Finish`]); a failed Job's
    /// active pods are deleted.
    fn finish_job(&mut self, st: &mut State, job: &Value, outcome: &Outcome, live: &mut LivePods) {
        let event_message = if outcome.failed {
            outcome.message
        } else {
            "Job completed"
        };
        st.event(
            job,
            None,
            outcome.failed,
            outcome.event,
            event_message,
            "job-controller",
        );
        self.finish = Some(Finish {
            failed: outcome.failed,
            reason: outcome.reason,
            message: outcome.message,
            final_at: None,
        });
        if outcome.failed {
            self.delete_active(st, job, live);
        }
    }

    /// Deletes the active pods of a failed Job; they count as terminating.
    fn delete_active(&self, st: &mut State, job: &Value, live: &mut LivePods) {
        let grace = DeleteOptions::default();
        let pods_res = res_of("pods");
        for pod in &live.active {
            let pname = pod["metadata"]["name"].as_str().unwrap_or_default();
            if let Some(res) = pods_res
                && delete_locked(st, res, &self.ns, pname, &grace).is_ok()
            {
                st.event(
                    job,
                    None,
                    false,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pname}"),
                    "job-controller",
                );
                live.terminating += 1;
            }
        }
        live.active.clear();
    }

    /// Creates the pods the Job lacks (up to its parallelism), unless pod
    /// creation is rejected; answers the new pods for the kubelet.
    fn create_pods(
        &mut self,
        st: &mut State,
        job: &Value,
        limits: &JobLimits,
        live: &mut LivePods,
        now: Instant,
    ) -> Vec<(String, String, String)> {
        let mut new_pods = Vec::new();
        let want = limits.parallelism.min(limits.completions - self.succeeded)
            - live.active.len() as i64
            - live.terminating;
        for _ in 0..want.max(0) {
            let pod = objects::job_pod(job, st);
            let pname = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(message) = st.reject_pods.clone() {
                let denial = objects::pod_security_denial(&pname, &message);
                st.event(
                    job,
                    None,
                    true,
                    "FailedCreate",
                    &format!("Error creating: {}", denial.message),
                    "job-controller",
                );
                self.next_create = now + Duration::from_millis(500);
                break;
            }
            let Some(res) = res_of("pods") else { break };
            let created = st.create(res, pod);
            let puid = created["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            self.active_seen.insert(puid.clone());
            st.event(
                job,
                None,
                false,
                "SuccessfulCreate",
                &format!("Created pod: {pname}"),
                "job-controller",
            );
            live.active.push(created);
            new_pods.push((self.ns.clone(), pname, puid));
        }
        new_pods
    }

    /// The Job's status with the current start time and pod counts (its
    /// conditions as they were).
    fn counted_status(&self, job: &Value, start_time: Option<&str>, live: &LivePods) -> Value {
        let mut status = job["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        if let Some(t) = start_time {
            status["startTime"] = json!(t);
        }
        status["active"] = json!(live.active.len());
        status["ready"] = json!(live.ready);
        status["terminating"] = json!(live.terminating);
        status["uncountedTerminatedPods"] = json!({});
        for (field, n) in [("succeeded", self.succeeded), ("failed", self.failed)] {
            if n > 0 {
                status[field] = json!(n);
            } else if let Some(s) = status.as_object_mut() {
                s.remove(field);
            }
        }
        if live.active.is_empty()
            && let Some(s) = status.as_object_mut()
        {
            s.remove("active");
        }
        status
    }

    /// Deletes a finished Job (in the foreground) once its
    /// `ttlSecondsAfterFinished` has passed; answers when it will have.
    fn expire_finished(
        &self,
        st: &mut State,
        spec: &Value,
        final_at: Option<Instant>,
        deleting: bool,
        now: Instant,
    ) -> Option<Instant> {
        let (Some(final_at), Some(ttl)) = (final_at, spec["ttlSecondsAfterFinished"].as_i64())
        else {
            return None;
        };
        let at = final_at + Duration::from_secs(ttl.max(0) as u64);
        if deleting {
            return None;
        }
        if now < at {
            return Some(at);
        }
        let opts = DeleteOptions {
            propagation: Some(Propagation::Foreground),
            ..DeleteOptions::default()
        };
        if let Some(res) = res_of("jobs") {
            let _ = delete_locked(st, res, &self.ns, &self.name, &opts);
        }
        None
    }
}

/// The delay before the next pod after `failed` failures (the real one
/// starts at 10 s; the fake's is short).
fn retry_backoff(failed: i64) -> Duration {
    let exp = failed.clamp(1, 5) as u32 - 1;
    Duration::from_millis(100 * 2u64.pow(exp)).min(Duration::from_secs(2))
}

/// Sets a Job condition to True; answers whether it was not set before.
fn set_condition(status: &mut Value, kind: &str, reason: &str, message: &str) -> bool {
    let now = store::now();
    let conditions = &mut status["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else {
        return false;
    };
    if list.iter().any(|c| c["type"] == kind) {
        return false;
    }
    list.push(json!({
        "type": kind,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }));
    true
}
