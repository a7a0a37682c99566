//! The pod `status` the kubelet writes: phase, conditions (with their
//! transition times), and init and regular container statuses.

use super::{CState, Ctr, PodRun};
use crate::fake_kube::objects;
use crate::fake_kube::store::{self, NODE_NAME};
use serde_json::{Value, json};

impl PodRun {
    /// Writes the pod's status (and its node once scheduled).
    pub(super) fn publish(&mut self) -> bool {
        let status = self.render();
        let scheduled = self.scheduled;
        self.inner.mutate(|st| {
            let ok = st
                .get("pods", &self.ns, &self.name)
                .is_some_and(|p| p["metadata"]["uid"].as_str() == Some(self.uid.as_str()));
            if ok {
                st.modify("pods", &self.ns, &self.name, |p| {
                    p["status"] = status;
                    if scheduled {
                        p["spec"]["nodeName"] = json!(NODE_NAME);
                    }
                });
            }
            ok
        })
    }

    /// One pod condition, keeping its last transition time.
    pub(super) fn condition(
        &mut self,
        kind: &'static str,
        ok: bool,
        why: Option<(&str, String)>,
    ) -> Value {
        let status = if ok { "True" } else { "False" };
        let entry = self
            .cond_times
            .entry(kind)
            .or_insert_with(|| (status.to_owned(), store::now()));
        if entry.0 != status {
            *entry = (status.to_owned(), store::now());
        }
        let mut c = json!({
            "type": kind,
            "status": status,
            "lastProbeTime": null,
            "lastTransitionTime": entry.1,
        });
        if let Some((reason, message)) = why {
            c["reason"] = json!(reason);
            if !message.is_empty() {
                c["message"] = json!(message);
            }
        }
        c
    }

    /// The whole pod `status` for the current state.
    pub(super) fn render(&mut self) -> Value {
        let qos = objects::qos_class(&self.pod["spec"]);
        if !self.scheduled {
            let mut status = json!({"phase": "Pending", "qosClass": qos});
            if let Some(message) = self.unschedulable.clone() {
                let c = self.condition("PodScheduled", false, Some(("Unschedulable", message)));
                status["conditions"] = json!([c]);
            }
            return status;
        }
        let conditions = self.conditions();
        let mut status = json!({
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "qosClass": qos,
        });
        if let Some(t) = &self.start_time {
            status["startTime"] = json!(t);
        }
        if self.sandbox {
            status["podIP"] = json!(self.pod_ip);
            status["podIPs"] = json!([{"ip": self.pod_ip}]);
        }
        if let Some(message) = &self.evicted {
            status["reason"] = json!("Evicted");
            status["message"] = json!(message);
        }
        let statuses = |init: bool| -> Vec<Value> {
            self.ctrs
                .iter()
                .filter(|c| c.init == init)
                .map(container_status)
                .collect()
        };
        let init = statuses(true);
        if !init.is_empty() {
            status["initContainerStatuses"] = json!(init);
        }
        status["containerStatuses"] = json!(statuses(false));
        status
    }

    /// The conditions of a scheduled pod: disruption, sandbox,
    /// initialization, readiness, scheduling.
    fn conditions(&mut self) -> Vec<Value> {
        let terminal = matches!(self.phase, "Succeeded" | "Failed");
        let pending_init = self.pending_init();
        let unready: Vec<String> = self
            .ctrs
            .iter()
            .filter(|c| !c.init && !c.running())
            .map(|c| c.name.clone())
            .collect();
        let sidecars_unready = self.ctrs.iter().any(|c| c.sidecar && !c.running());
        let phase = self.phase;
        let mut conditions = Vec::new();
        if let Some(message) = self.evicted.clone() {
            conditions.push(self.condition(
                "DisruptionTarget",
                true,
                Some(("TerminationByKubelet", message)),
            ));
        }
        let sandbox = self.sandbox && !terminal;
        conditions.push(self.condition("PodReadyToStartContainers", sandbox, None));
        let init_why = (!pending_init.is_empty()).then(|| {
            (
                "ContainersNotInitialized",
                format!(
                    "containers with incomplete status: [{}]",
                    pending_init.join(" ")
                ),
            )
        });
        conditions.push(self.condition("Initialized", pending_init.is_empty(), init_why));
        let ready = !terminal && unready.is_empty() && !sidecars_unready;
        let why = if ready {
            None
        } else {
            not_ready(terminal, phase, &unready)
        };
        conditions.push(self.condition("Ready", ready, why));
        let cready = !terminal && unready.is_empty();
        let why = if cready {
            None
        } else {
            not_ready(terminal, phase, &unready)
        };
        conditions.push(self.condition("ContainersReady", cready, why));
        conditions.push(self.condition("PodScheduled", true, None));
        conditions
    }

    /// The init containers not done yet: sidecars not started, others not
    /// exited 0.
    fn pending_init(&self) -> Vec<String> {
        self.ctrs
            .iter()
            .filter(|c| c.init)
            .filter(|c| {
                if c.sidecar {
                    !c.running() && c.exit_code().is_none()
                } else {
                    c.exit_code() != Some(0)
                }
            })
            .map(|c| c.name.clone())
            .collect()
    }
}

/// Why a condition of readiness is False: the pod ended (`terminal`, in
/// `phase`), or containers `names` are not ready.
fn not_ready(terminal: bool, phase: &str, names: &[String]) -> Option<(&'static str, String)> {
    if terminal {
        let reason = if phase == "Succeeded" {
            "PodCompleted"
        } else {
            "PodFailed"
        };
        Some((reason, String::new()))
    } else {
        Some((
            "ContainersNotReady",
            format!("containers with unready status: [{}]", names.join(" ")),
        ))
    }
}

/// One entry of `containerStatuses` / `initContainerStatuses`.
pub(super) fn container_status(c: &Ctr) -> Value {
    let state = match &c.state {
        CState::Waiting(reason, message) => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        }
        CState::Running(started) => json!({"running": {"startedAt": started}}),
        CState::Terminated {
            code,
            reason,
            message,
            started,
            finished,
        } => {
            let mut t = json!({
                "exitCode": code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": finished,
            });
            if let Some(m) = message {
                t["message"] = json!(m);
            }
            if let Some(id) = &c.container_id {
                t["containerID"] = json!(id);
            }
            json!({"terminated": t})
        }
    };
    let mut status = json!({
        "name": c.name,
        "state": state,
        "lastState": {},
        "ready": c.running(),
        "restartCount": 0,
        "image": c.image,
        "imageID": c.image_id,
        "started": c.running(),
    });
    if let Some(id) = &c.container_id {
        status["containerID"] = json!(id);
    }
    status
}
