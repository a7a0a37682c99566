//! What a container runs with: env and envFrom with Secrets resolved,
//! `$(VAR)` expansion, downward-API fields, and the Docker run spec (mounts,
//! limits, security context).

use super::{PodRun, Resolved};
use crate::fake_kube::docker::RunSpec;
use crate::fake_kube::store::{self, NODE_NAME};
use base64::Engine;
use serde_json::{Value, json};

impl PodRun {
    /// Env, command and args with Secrets and `$(VAR)` references resolved.
    pub(super) fn resolve(&self, i: usize) -> Result<Resolved, String> {
        let c = &self.ctrs[i].spec;
        let st = self.inner.lock();
        let decode = |v: &Value| -> String {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
            env.retain(|(n, _)| *n != k);
            env.push((k, v));
        };
        for from in c["envFrom"].as_array().into_iter().flatten() {
            let prefix = from["prefix"].as_str().unwrap_or_default();
            if let Some(name) = from["secretRef"]["name"].as_str() {
                match st.get("secrets", &self.ns, name) {
                    Some(secret) => {
                        for (k, v) in secret["data"].as_object().into_iter().flatten() {
                            set(&mut env, format!("{prefix}{k}"), decode(v));
                        }
                    }
                    None if from["secretRef"]["optional"] == json!(true) => {}
                    None => return Err(format!("secret \"{name}\" not found")),
                }
            }
            if let Some(name) = from["configMapRef"]["name"].as_str()
                && from["configMapRef"]["optional"] != json!(true)
            {
                return Err(format!("configmap \"{name}\" not found"));
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default().to_owned();
            let value = if let Some(v) = e["value"].as_str() {
                expand(v, &env)
            } else if e["valueFrom"]["secretKeyRef"].is_object() {
                let r = &e["valueFrom"]["secretKeyRef"];
                let secret = r["name"].as_str().unwrap_or_default();
                let key = r["key"].as_str().unwrap_or_default();
                let optional = r["optional"] == json!(true);
                match st.get("secrets", &self.ns, secret) {
                    Some(s) => match s["data"].get(key) {
                        Some(v) => decode(v),
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {key} in Secret {}/{secret}",
                                self.ns
                            ));
                        }
                    },
                    None if optional => continue,
                    None => return Err(format!("secret \"{secret}\" not found")),
                }
            } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                self.field_value(path)
            } else if e["valueFrom"]["configMapKeyRef"].is_object() {
                if e["valueFrom"]["configMapKeyRef"]["optional"] == json!(true) {
                    continue;
                }
                return Err(format!(
                    "configmap \"{}\" not found",
                    e["valueFrom"]["configMapKeyRef"]["name"]
                        .as_str()
                        .unwrap_or_default()
                ));
            } else {
                String::new()
            };
            set(&mut env, name, value);
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| expand(s.as_str().unwrap_or_default(), &env))
                .collect()
        };
        Ok(Resolved {
            command: strings(&c["command"]),
            args: strings(&c["args"]),
            env,
        })
    }

    /// A downward-API field of the pod.
    pub(super) fn field_value(&self, path: &str) -> String {
        let meta = &self.pod["metadata"];
        match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.ns.clone(),
            "metadata.uid" => self.uid.clone(),
            "spec.nodeName" => NODE_NAME.to_owned(),
            "spec.serviceAccountName" => self.pod["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            "status.podIP" => self.pod_ip.clone(),
            "status.hostIP" => "127.0.0.1".to_owned(),
            other => {
                for (prefix, key) in [
                    ("metadata.labels['", "labels"),
                    ("metadata.annotations['", "annotations"),
                ] {
                    if let Some(rest) = other
                        .strip_prefix(prefix)
                        .and_then(|r| r.strip_suffix("']"))
                    {
                        return meta[key][rest].as_str().unwrap_or_default().to_owned();
                    }
                }
                String::new()
            }
        }
    }

    /// The `docker run` spec of container `i`.
    pub(super) fn run_spec(&self, i: usize, resolved: Resolved) -> RunSpec {
        let c = &self.ctrs[i].spec;
        let pod_sc = &self.pod["spec"]["securityContext"];
        let sc = &c["securityContext"];
        let pick = |k: &str| sc[k].as_i64().or_else(|| pod_sc[k].as_i64());
        let user = pick("runAsUser").map(|u| match pick("runAsGroup") {
            Some(g) => format!("{u}:{g}"),
            None => u.to_string(),
        });
        let mut mounts = Vec::new();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let vol = m["name"].as_str().unwrap_or_default();
            let Some(host) = self.volumes.get(vol) else {
                continue;
            };
            let mut host = host.clone();
            if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
                host = host.join(sub);
                let _ = std::fs::create_dir_all(&host);
            }
            let secret = self.pod["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["name"] == vol && v["secret"].is_object());
            mounts.push((
                host,
                m["mountPath"].as_str().unwrap_or_default().to_owned(),
                m["readOnly"] == json!(true) || secret,
            ));
        }
        let mut env = resolved.env;
        if !env.iter().any(|(k, _)| k == "HOSTNAME") {
            env.push(("HOSTNAME".to_owned(), self.name.clone()));
        }
        RunSpec {
            name: format!(
                "hangar-fakekube-{}-{}-{}",
                self.inner.id, self.name, self.ctrs[i].name
            ),
            image: self.ctrs[i].image.clone(),
            command: resolved.command,
            args: resolved.args,
            working_dir: c["workingDir"].as_str().map(str::to_owned),
            env,
            mounts,
            memory_bytes: store::parse_quantity(&c["resources"]["limits"]["memory"])
                .map(|b| b as u64),
            cpus: store::parse_quantity(&c["resources"]["limits"]["cpu"]),
            user,
            read_only_root: sc["readOnlyRootFilesystem"] == json!(true),
            no_new_privileges: sc["allowPrivilegeEscalation"] == json!(false),
            drop_all_caps: sc["capabilities"]["drop"]
                .as_array()
                .is_some_and(|d| d.iter().any(|c| c == "ALL")),
            pod: format!("{}/{}", self.ns, self.name),
            container: self.ctrs[i].name.clone(),
        }
    }
}

/// `docker.io/library/x:latest` for `x`.
pub(super) fn full_reference(image: &str) -> String {
    let mut parts: Vec<&str> = image.split('/').collect();
    let has_host = parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
    let mut full = String::new();
    if !has_host {
        full.push_str("docker.io/");
        if parts.len() == 1 {
            full.push_str("library/");
        }
    }
    let last = parts.pop().unwrap_or_default();
    for p in parts {
        full.push_str(p);
        full.push('/');
    }
    full.push_str(last);
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    full
}

/// Expands `$(VAR)` from `env` (unknown references stay as they are;
/// `$$` escapes).
pub(super) fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_expand() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("a$b", &env), "a$b");
    }

    #[test]
    fn image_references_normalise() {
        assert_eq!(full_reference("x"), "docker.io/library/x:latest");
        assert_eq!(full_reference("a/b:1"), "docker.io/a/b:1");
        assert_eq!(full_reference("reg.io/a/b"), "reg.io/a/b:latest");
    }
}
