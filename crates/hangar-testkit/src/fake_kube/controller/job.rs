//! The job controller: pods for a Job, retries with back-off, status and
//! conditions, active deadline, and TTL after finished.

use super::{DeleteOptions, Propagation, delete_locked, res_of};
use crate::fake_kube::store::{self, State};
use crate::fake_kube::{Fault, Inner, kubelet, objects};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long after its pod runs an [`Fault::ActiveDeadline`] Job fails.
const FAULT_DEADLINE: Duration = Duration::from_millis(300);

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
pub(super) async fn job_worker(inner: Arc<Inner>, ns: String, name: String, uid: String) {
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
