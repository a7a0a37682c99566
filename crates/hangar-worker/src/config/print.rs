//! `hangar worker --print-config`: the effective configuration as YAML,
//! secrets redacted.

use super::*;
use std::time::Duration;

impl WorkerConfig {
    /// The effective configuration as YAML, in the shape of the config file
    /// (PROTOCOL.md §3) plus the flag-only settings. The API key and every
    /// environment value are printed as `***`: values given with `-e` or in
    /// `environment:` are often tokens.
    pub fn to_yaml(&self) -> String {
        use serde_json::json;
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        let env: Vec<_> = self
            .env
            .iter()
            .map(|(k, _)| json!({"name": k, "value": REDACTED}))
            .collect();
        let value = json!({
            "worker_id": self.worker_id,
            "api_key": if self.api_key.is_empty() { None } else { Some(REDACTED) },
            "server_url": self.server_url,
            "log_level": self.log_level.as_str(),
            "cleanup": self.cleanup,
            "allow_local_repositories": self.allow_local_repositories,
            "max_concurrent_tasks": self.max_concurrent_tasks,
            "idle_on_complete": self.idle_on_complete,
            "heartbeat_interval": secs(self.heartbeat_interval),
            "read_timeout": secs(self.read_timeout),
            "kill_grace": secs(self.kill_grace),
            "fence_after": secs(self.fence_after),
            "agent_path": self.agent_path,
            "backend": self.backend_yaml(env),
        });
        serde_norway::to_string(&value)
            .unwrap_or_else(|e| format!("# cannot render the config: {e}\n"))
    }

    /// The `backend:` section of [`to_yaml`](Self::to_yaml): the chosen
    /// backend's settings, defaults filled in.
    fn backend_yaml(&self, env: Vec<serde_json::Value>) -> serde_json::Value {
        use serde_json::json;
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        match self.backend {
            BackendKind::Direct => json!({"direct": {
                "workspace_root": self.direct.workspace_root,
                "target_dir": self.direct.target_dir,
                "setup_command": self.direct.setup_command,
                "teardown_command": self.direct.teardown_command,
                "sandbox": self.direct.sandbox.as_str(),
                "sandbox_mounts": self.direct.sandbox_mounts.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "egress_allow_internal": self.direct.egress_allow_internal,
                "pids_limit": self.direct.pids_limit,
                "memory_mb": self.direct.memory_mb,
                "environment": env,
            }}),
            BackendKind::Docker => {
                let d = &self.docker;
                json!({"docker": {
                    "volumes": self.volumes,
                    "environment": env,
                    "default_image": d.default_image.as_deref().unwrap_or(crate::backends::docker::FALLBACK_IMAGE),
                    "network": d.network,
                    "image_pull_policy": d.image_pull_policy.as_str(),
                    "workspace_root": d.workspace_root,
                    "cpus": d.cpus.unwrap_or(crate::backends::docker::DEFAULT_CPUS),
                    "memory_mb": d.memory_mb.unwrap_or(crate::backends::docker::DEFAULT_MEMORY_MB),
                    "pids_limit": d.pids_limit.unwrap_or(crate::backends::docker::DEFAULT_PIDS_LIMIT),
                    "cap_add": d.cap_add.clone().unwrap_or_else(|| crate::backends::docker::DEFAULT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
                    "agent_server_url": d.agent_server_url,
                    "extra_hosts": d.extra_hosts,
                    "egress_host_firewall": d.egress_host_firewall.unwrap_or(true),
                    "egress_allow_internal": d.egress_allow_internal,
                    "block_metadata_address": d.block_metadata_address.unwrap_or(true),
                }})
            }
            BackendKind::Command => {
                let c = &self.command;
                json!({"command": {
                    "dispatch_command": c.dispatch_command,
                    "cancel_command": c.cancel_command,
                    "status_command": c.status_command,
                    "dispatch_timeout": secs(c.dispatch_timeout),
                    "status_interval": secs(c.status_interval),
                    "state_dir": c.state_dir,
                    "environment": env,
                }})
            }
            BackendKind::Kubernetes => {
                let k = &self.kubernetes;
                json!({"kubernetes": {
                    "namespace": k.namespace,
                    "kubeconfig": k.kubeconfig,
                    "default_image": k.default_image,
                    "image_pull_policy": k.image_pull_policy,
                    "agent_image": k.agent_image,
                    "agent_server_url": k.agent_server_url,
                    "preflight_image": k.preflight_image,
                    "preflight_resources": k.preflight_resources,
                    "setup_command": k.setup_command,
                    "teardown_command": k.teardown_command,
                    "extra_labels": k.extra_labels,
                    "extra_annotations": k.extra_annotations,
                    "active_deadline_seconds": k.active_deadline_seconds,
                    "ttl_seconds_after_finished": k.ttl_seconds_after_finished,
                    "workspace_size_limit": k.workspace_size_limit,
                    "unschedulable_timeout": secs(k.unschedulable_timeout),
                    "pod_template": k.pod_template,
                    "environment": env,
                }})
            }
        }
    }
}
