//! The fake cluster's object store: the resource table, objects as JSON,
//! one global resourceVersion counter, the change log that watches replay,
//! label and field selectors, and small helpers (time, names, quantities).

mod selectors;

pub(crate) use selectors::{
    FieldSelector, LabelSelector, valid_dns_label, valid_dns_subdomain, valid_label_key,
    valid_label_value,
};

use super::{Fault, RecordedRequest};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// How many changes the watch log keeps; a watch from an older
/// resourceVersion answers 410 Gone.
const RETAINED_CHANGES: usize = 10_000;

/// The node every scheduled pod lands on.
pub(crate) const NODE_NAME: &str = "fake-node";

/// A resource the fake serves.
#[derive(Debug)]
pub(crate) struct Res {
    /// Plural name, as in URLs (`jobs`).
    pub plural: &'static str,
    /// Singular name (`job`).
    pub singular: &'static str,
    /// Kind (`Job`).
    pub kind: &'static str,
    /// API group (`batch`, or empty for the core group).
    pub group: &'static str,
    /// Short names (`po`).
    pub short: &'static [&'static str],
    /// Subresources and their verbs.
    pub subresources: &'static [(&'static str, &'static [&'static str])],
}

/// Verbs of every namespaced resource the fake serves.
pub(crate) const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The resources served.
pub(crate) const RESOURCES: &[Res] = &[
    Res {
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        group: "",
        short: &["po"],
        subresources: &[("log", &["get"]), ("status", &["get", "patch", "update"])],
    },
    Res {
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        group: "",
        short: &[],
        subresources: &[],
    },
    Res {
        plural: "events",
        singular: "event",
        kind: "Event",
        group: "",
        short: &["ev"],
        subresources: &[],
    },
    Res {
        plural: "jobs",
        singular: "job",
        kind: "Job",
        group: "batch",
        short: &[],
        subresources: &[("status", &["get", "patch", "update"])],
    },
];

impl Res {
    /// `v1` or `batch/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            "v1".to_owned()
        } else {
            format!("{}/v1", self.group)
        }
    }

    /// `pods` or `jobs.batch`, as in API error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `Job.batch`, as in validation messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// The resource served at `group`/`v1`/`plural`.
pub(crate) fn resource(group: &str, plural: &str) -> Option<&'static Res> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
}

/// The resource named by a kind, plural, singular or short name (any case).
pub(crate) fn resource_named(name: &str) -> Option<&'static Res> {
    let name = name.to_ascii_lowercase();
    RESOURCES.iter().find(|r| {
        r.kind.to_ascii_lowercase() == name
            || r.plural == name
            || r.singular == name
            || r.short.contains(&name.as_str())
    })
}

/// Object key: resource plural, namespace, name.
pub(crate) type Key = (&'static str, String, String);

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One change in the watch log.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub rv: u64,
    pub resource: &'static str,
    pub kind: ChangeType,
    pub object: Value,
    /// The object before a modification (selectors may stop matching).
    pub previous: Option<Value>,
}

/// Everything the fake cluster knows, behind one lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The last resourceVersion handed out.
    pub rv: u64,
    /// Watches from a resourceVersion below this answer 410.
    pub compacted: u64,
    pub objects: BTreeMap<Key, Value>,
    pub changes: VecDeque<Change>,
    pub requests: Vec<RecordedRequest>,
    /// `(verb, resource)` pairs RBAC denies (`*` matches any verb).
    pub denies: Vec<(String, String)>,
    pub reject_jobs: Option<String>,
    pub reject_pods: Option<String>,
    /// Faults for the next Jobs created, in order.
    pub next_faults: VecDeque<Fault>,
    /// Faults for Jobs (and bare Pods) whose labels match a selector.
    pub selector_faults: Vec<(LabelSelector, Fault)>,
    /// The fault each Job got at creation, by Job uid.
    pub job_faults: HashMap<String, Fault>,
    /// Container output by (pod uid, container name).
    pub logs: HashMap<(String, String), Vec<u8>>,
}

impl State {
    /// A fresh resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// The object `res`/`ns`/`name`.
    pub fn get(&self, res: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|((r, n, m), _)| *r == res && n == ns && m == name)
            .map(|(_, v)| v)
    }

    /// The key of the stored object for `res`/`ns`/`name`.
    fn key(&self, res: &str, ns: &str, name: &str) -> Option<Key> {
        self.objects
            .keys()
            .find(|(r, n, m)| *r == res && n == ns && m == name)
            .cloned()
    }

    /// Objects of `res`, in one namespace or all, sorted by namespace/name.
    pub fn list(&self, res: &str, ns: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((r, n, _), _)| *r == res && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .collect()
    }

    /// Every object that names `uid` among its ownerReferences.
    pub fn dependents(&self, uid: &str) -> Vec<(Key, Value)> {
        self.objects
            .iter()
            .filter(|(_, v)| {
                v["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn log_change(&mut self, change: Change) {
        self.changes.push_back(change);
        while self.changes.len() > RETAINED_CHANGES {
            if let Some(old) = self.changes.pop_front() {
                self.compacted = self.compacted.max(old.rv);
            }
        }
    }

    /// Stores a new object (name already set): creationTimestamp,
    /// resourceVersion and (unless set) uid are assigned. Answers the
    /// stored object.
    pub fn create(&mut self, res: &'static Res, mut obj: Value) -> Value {
        let rv = self.next_rv();
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(meta) = obj["metadata"].as_object_mut() {
            if !meta.get("uid").is_some_and(Value::is_string) {
                meta.insert("uid".into(), json!(new_uid()));
            }
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
            meta.insert("creationTimestamp".into(), json!(now()));
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            if res.plural == "jobs" {
                meta.insert("generation".into(), json!(1));
            }
        }
        if let Some(o) = obj.as_object_mut() {
            o.insert("apiVersion".into(), json!(res.api_version()));
            o.insert("kind".into(), json!(res.kind));
        }
        self.objects
            .insert((res.plural, ns.clone(), name), obj.clone());
        self.log_change(Change {
            rv,
            resource: res.plural,
            kind: ChangeType::Added,
            object: obj.clone(),
            previous: None,
        });
        obj
    }

    /// Replaces a stored object (same resource/namespace/name) with `obj`,
    /// under a new resourceVersion. Answers the stored object, or `None`
    /// when there is no such object.
    pub fn update(&mut self, res: &str, mut obj: Value) -> Option<Value> {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = self.key(res, &ns, &name)?;
        let previous = self.objects.get(&key).cloned();
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        self.log_change(Change {
            rv,
            resource: key.0,
            kind: ChangeType::Modified,
            object: obj.clone(),
            previous,
        });
        Some(obj)
    }

    /// Applies `f` to a stored object and stores it when it changed.
    /// Answers the object after the change, or `None` when it is gone.
    pub fn modify(
        &mut self,
        res: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let before = self.get(res, ns, name)?.clone();
        let mut after = before.clone();
        f(&mut after);
        if after == before {
            return Some(before);
        }
        self.update(res, after)
    }

    /// Removes an object for good (a DELETED event with a new
    /// resourceVersion). Answers it.
    pub fn remove(&mut self, res: &str, ns: &str, name: &str) -> Option<Value> {
        let key = self.key(res, ns, name)?;
        let mut obj = self.objects.remove(&key)?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if res == "pods" || res == "jobs" {
            self.logs_for_removed(&obj);
        }
        self.log_change(Change {
            rv,
            resource: key.0,
            kind: ChangeType::Deleted,
            object: obj.clone(),
            previous: None,
        });
        Some(obj)
    }

    fn logs_for_removed(&mut self, obj: &Value) {
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            self.logs.retain(|(pod, _), _| pod != uid);
        }
    }

    /// Records a core/v1 Event about `involved` (deduplicated: the same
    /// reason and message about the same object bumps `count`).
    pub fn event(
        &mut self,
        involved: &Value,
        field_path: Option<&str>,
        warning: bool,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        let meta = &involved["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or_default().to_owned();
        let uid = meta["uid"].as_str().unwrap_or_default().to_owned();
        let existing = self
            .list("events", Some(&ns))
            .into_iter()
            .find(|e| {
                e["involvedObject"]["uid"].as_str() == Some(uid.as_str())
                    && e["reason"].as_str() == Some(reason)
                    && e["message"].as_str() == Some(message)
                    && e["involvedObject"]["fieldPath"].as_str() == field_path
            })
            .cloned();
        let now = now();
        if let Some(mut e) = existing {
            let count = e["count"].as_i64().unwrap_or(1) + 1;
            e["count"] = json!(count);
            e["lastTimestamp"] = json!(now);
            self.update("events", e);
            return;
        }
        let name = format!(
            "{}.{:016x}",
            meta["name"].as_str().unwrap_or("unknown"),
            rand_u64()
        );
        let mut object = json!({
            "kind": involved["kind"],
            "namespace": ns,
            "name": meta["name"],
            "uid": uid,
            "apiVersion": involved["apiVersion"],
            "resourceVersion": meta["resourceVersion"],
        });
        if let Some(path) = field_path {
            object["fieldPath"] = json!(path);
        }
        let event = json!({
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": object,
            "reason": reason,
            "message": message,
            "source": {"component": component, "host": NODE_NAME},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": if warning { "Warning" } else { "Normal" },
            "eventTime": null,
            "reportingComponent": component,
            "reportingInstance": NODE_NAME,
        });
        if let Some(res) = resource("", "events") {
            self.create(res, event);
        }
    }
}

/// Now, RFC 3339 with second precision (`metav1.Time`).
pub(crate) fn now() -> String {
    time_after(0)
}

/// Now plus `seconds`, RFC 3339 with second precision.
pub(crate) fn time_after(seconds: i64) -> String {
    let now = jiff::Timestamp::now().as_second() + seconds;
    match jiff::Timestamp::from_second(now) {
        Ok(t) => t.to_string(),
        Err(_) => jiff::Timestamp::now().to_string(),
    }
}

/// A random 64-bit number.
pub(crate) fn rand_u64() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(n)
}

/// 64 random hex digits (container and image ids).
pub(crate) fn random_hex64() -> String {
    (0..4).map(|_| format!("{:016x}", rand_u64())).collect()
}

/// A fresh object uid.
pub(crate) fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Five characters from the alphabet Kubernetes uses for generated names.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Parses a resource quantity (`500m`, `2`, `128Mi`, `1G`, `1e3`) into
/// units (cores for CPU, bytes for memory). `None` when malformed.
pub(crate) fn parse_quantity(q: &Value) -> Option<f64> {
    let s = match q {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(num) = s.strip_suffix(suffix) {
            return num.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    s.parse::<f64>().ok()
}

/// `obj[key]` as a JSON object, created when missing or not an object.
pub(crate) fn object_mut<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj[key].is_object() {
        obj[key] = json!({});
    }
    match obj[key].as_object_mut() {
        Some(map) => map,
        None => unreachable!("just made an object"),
    }
}

/// An RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in p {
                if v.is_null() {
                    if let Some(t) = target.as_object_mut() {
                        t.remove(k);
                    }
                } else {
                    merge_patch(&mut target[k.as_str()], v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity(&json!("500m")), Some(0.5));
        assert_eq!(parse_quantity(&json!("128Mi")), Some(134_217_728.0));
        assert_eq!(parse_quantity(&json!(2)), Some(2.0));
        assert_eq!(parse_quantity(&json!("1G")), Some(1e9));
        assert_eq!(parse_quantity(&json!("x")), None);
    }
}
