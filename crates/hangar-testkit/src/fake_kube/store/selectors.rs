//! Label selectors (equality, set-based, existence), field selectors (the
//! fields the real API server supports per resource), and the name and
//! label syntax checks.

use super::Res;
use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector (`a=b,c!=d,e,!f,g in (x,y),h notin (z)`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses the Kubernetes label selector syntax.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some(rest) = part.strip_prefix('!') {
                Requirement::NotExists(label_key(rest.trim())?)
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::Ne(label_key(k.trim())?, v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Eq(label_key(k.trim())?, v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Eq(label_key(k.trim())?, v.trim().to_owned())
            } else if let Some((k, set)) = set_op(part, " notin ") {
                Requirement::NotIn(label_key(k)?, set)
            } else if let Some((k, set)) = set_op(part, " in ") {
                Requirement::In(label_key(k)?, set)
            } else {
                Requirement::Exists(label_key(part)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether `labels` (a JSON object, or null) satisfies every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::Ne(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, set) => get(k).is_some_and(|x| set.iter().any(|s| s == x)),
            Requirement::NotIn(k, set) => get(k).is_none_or(|x| !set.iter().any(|s| s == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

fn label_key(k: &str) -> Result<String, String> {
    if k.is_empty() || !valid_label_key(k) {
        return Err(format!(
            "unable to parse requirement: invalid label key \"{k}\""
        ));
    }
    Ok(k.to_owned())
}

fn set_op<'a>(part: &'a str, op: &str) -> Option<(&'a str, Vec<String>)> {
    let (k, rest) = part.split_once(op)?;
    let rest = rest.trim();
    let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
    let set = inner
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    Some((k.trim(), set))
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A parsed field selector: `(path, equal?, value)` terms.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `a=b,c!=d` for the fields `res` supports (as the real API
    /// server does, other fields are refused).
    pub fn parse(res: &Res, s: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            if !supported_field(res, field) {
                return Err(format!(
                    "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                ));
            }
            terms.push((field.to_owned(), eq, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    /// Whether `obj` satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| {
            let path = if field == "source" {
                "source.component"
            } else {
                field.as_str()
            };
            let actual = path
                .split('.')
                .try_fold(obj, |v, seg| v.get(seg))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (actual == *value) == *eq
        })
    }
}

fn supported_field(res: &Res, field: &str) -> bool {
    if field == "metadata.name" || field == "metadata.namespace" {
        return true;
    }
    let extra: &[&str] = match res.plural {
        "pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "secrets" => &["type"],
        "jobs" => &["status.successful"],
        _ => &[],
    };
    extra.contains(&field)
}

/// Whether `k` is a valid label key (`[prefix/]name`).
pub(crate) fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(valid_dns_subdomain) && valid_label_name(name)
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn valid_label_name(s: &str) -> bool {
    !s.is_empty() && valid_label_value(s)
}

/// A label value: empty, or a label name.
pub(crate) fn valid_label_value(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let b = s.as_bytes();
    s.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253.
pub(crate) fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b.first().is_some_and(u8::is_ascii_alphanumeric)
                && b.last().is_some_and(u8::is_ascii_alphanumeric)
        })
}

/// A DNS-1123 label: a subdomain without dots, at most 63.
pub(crate) fn valid_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && valid_dns_subdomain(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_parse_and_match() {
        let labels = json!({"a": "1", "b": "2", "app.kubernetes.io/name": "x"});
        let ok = |s: &str| match LabelSelector::parse(s) {
            Ok(sel) => sel.matches(&labels),
            Err(e) => panic!("{s}: {e}"),
        };
        assert!(ok("a=1"));
        assert!(ok("a==1,b=2"));
        assert!(ok("a!=2"));
        assert!(ok("c!=2"));
        assert!(ok("a"));
        assert!(ok("!c"));
        assert!(ok("a in (1, 3),b notin (3)"));
        assert!(ok("app.kubernetes.io/name=x"));
        assert!(!ok("a=2"));
        assert!(!ok("c"));
        assert!(!ok("a,c"));
        assert!(LabelSelector::parse("a b").is_err());
    }
}
