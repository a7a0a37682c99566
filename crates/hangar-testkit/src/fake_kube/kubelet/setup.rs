//! Before containers start: scheduling (node selector, requests against
//! the node, injected unschedulability) and volume setup (Secrets that must
//! exist, host directories for Docker).

use super::{FOREVER, NODE_CPU, NODE_MEMORY, PodRun, STEP};
use crate::fake_kube::store::{self, NODE_NAME};
use crate::fake_kube::{Fault, Kubelet};
use base64::Engine;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

impl PodRun {
    /// Schedules the pod (or records why it cannot be, then waits until it
    /// is deleted); answers whether it runs on the node.
    pub(super) async fn schedule(&mut self) -> bool {
        if self.sleep(STEP).await.is_some() {
            return false;
        }
        if let Some(message) = self.unschedulable_reason() {
            self.unschedulable = Some(message.clone());
            self.publish();
            self.event_from(
                None,
                true,
                "FailedScheduling",
                &message,
                "default-scheduler",
            );
            let _ = self.sleep(FOREVER).await;
            return false;
        }
        self.scheduled = true;
        self.start_time = Some(store::now());
        if !self.publish() {
            return false;
        }
        self.event_from(
            None,
            false,
            "Scheduled",
            &format!(
                "Successfully assigned {}/{} to {NODE_NAME}",
                self.ns, self.name
            ),
            "default-scheduler",
        );
        true
    }

    /// The scheduler's message when the pod fits nowhere.
    pub(super) fn unschedulable_reason(&self) -> Option<String> {
        const NO_VICTIMS: &str =
            "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
        const NOT_HELPFUL: &str =
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
        if self.fault == Some(Fault::Unschedulable) {
            return Some(format!(
                "0/1 nodes are available: 1 Insufficient cpu. {NO_VICTIMS}"
            ));
        }
        let spec = &self.pod["spec"];
        let node_labels = json!({
            "kubernetes.io/hostname": NODE_NAME,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        });
        if let Some(sel) = spec["nodeSelector"].as_object()
            && sel.iter().any(|(k, v)| node_labels.get(k) != Some(v))
        {
            return Some(format!(
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. {NOT_HELPFUL}"
            ));
        }
        for v in spec["volumes"].as_array().into_iter().flatten() {
            if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                return Some(format!(
                    "0/1 nodes are available: persistentvolumeclaim \"{claim}\" not found. {NOT_HELPFUL}"
                ));
            }
        }
        let request = |c: &Value, res: &str| -> f64 {
            let r = &c["resources"];
            let q = if r["requests"][res].is_null() {
                &r["limits"][res]
            } else {
                &r["requests"][res]
            };
            store::parse_quantity(q).unwrap_or(0.0)
        };
        for (res, capacity) in [("cpu", NODE_CPU), ("memory", NODE_MEMORY)] {
            let running: f64 = self
                .ctrs
                .iter()
                .filter(|c| !c.init || c.sidecar)
                .map(|c| request(&c.spec, res))
                .sum();
            let init = self
                .ctrs
                .iter()
                .filter(|c| c.init && !c.sidecar)
                .map(|c| request(&c.spec, res))
                .fold(0.0, f64::max);
            if running.max(init) > capacity {
                return Some(format!(
                    "0/1 nodes are available: 1 Insufficient {res}. {NO_VICTIMS}"
                ));
            }
        }
        None
    }

    /// Sets volumes up; `Some(grace)` when the pod is deleted meanwhile.
    pub(super) async fn mount(&mut self) -> Option<i64> {
        if self.sleep(STEP).await.is_some() {
            return self.stop_requested();
        }
        if self.fault == Some(Fault::VolumeMount) {
            let volume = self.pod["spec"]["volumes"][0]["name"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("kube-api-access-{}", store::random_suffix()));
            let message = format!(
                "MountVolume.SetUp failed for volume \"{volume}\" : mount failed: exit status 32"
            );
            self.publish();
            loop {
                self.event(None, true, "FailedMount", &message);
                if let Some(grace) = self.sleep(Duration::from_secs(2)).await {
                    return Some(grace);
                }
            }
        }
        loop {
            match self.check_volumes() {
                Ok(()) => break,
                Err(message) => {
                    self.publish();
                    self.event(None, true, "FailedMount", &message);
                    if let Some(grace) = self.sleep(Duration::from_millis(500)).await {
                        return Some(grace);
                    }
                }
            }
        }
        if self.inner.kubelet == Kubelet::Docker
            && let Err(e) = self.make_volume_dirs()
        {
            tracing::warn!(error = %e, pod = %self.name, "fake kubelet: volume setup failed");
        }
        self.sandbox = true;
        self.publish();
        None
    }

    /// A `FailedMount` message while a volume's Secret (or any ConfigMap)
    /// is missing.
    pub(super) fn check_volumes(&self) -> Result<(), String> {
        let st = self.inner.lock();
        for v in self.pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let vol = v["name"].as_str().unwrap_or_default();
            if let Some(secret) = v["secret"]["secretName"].as_str()
                && v["secret"]["optional"] != json!(true)
                && st.get("secrets", &self.ns, secret).is_none()
            {
                return Err(format!(
                    "MountVolume.SetUp failed for volume \"{vol}\" : secret \"{secret}\" not found"
                ));
            }
            if let Some(cm) = v["configMap"]["name"].as_str()
                && v["configMap"]["optional"] != json!(true)
            {
                return Err(format!(
                    "MountVolume.SetUp failed for volume \"{vol}\" : configmap \"{cm}\" not found"
                ));
            }
        }
        Ok(())
    }

    /// Host directories for the pod's volumes (Docker mode): emptyDirs
    /// (mode 0777), Secrets written as files, hostPaths as they are.
    pub(super) fn make_volume_dirs(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let volumes: Vec<Value> = self.pod["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for v in volumes {
            let name = v["name"].as_str().unwrap_or_default().to_owned();
            if let Some(path) = v["hostPath"]["path"].as_str() {
                self.volumes.insert(name, PathBuf::from(path));
                continue;
            }
            let dir = tempfile::Builder::new()
                .prefix(&format!("hangar-fakekube-{}-", self.inner.id))
                .tempdir()?;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
            if let Some(secret) = v["secret"]["secretName"].as_str() {
                let data = self
                    .inner
                    .lock()
                    .get("secrets", &self.ns, secret)
                    .map(|s| s["data"].clone())
                    .unwrap_or(Value::Null);
                for (key, value) in data.as_object().into_iter().flatten() {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(value.as_str().unwrap_or_default())
                        .unwrap_or_default();
                    let file = dir.path().join(key);
                    std::fs::write(&file, bytes)?;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))?;
                }
            }
            self.volumes.insert(name, dir.path().to_owned());
            self.temp_dirs.push(dir);
        }
        Ok(())
    }
}
