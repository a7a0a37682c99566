//! Templates that map a JSON payload to a prompt or a title:
//! `{{path.to.field}}` is replaced by that field's value (a string as is,
//! anything else as JSON); an array element is its index (`items.0.name`);
//! `{{.}}` is the whole payload. Text outside `{{ }}` is kept as written.

/// Why a template cannot be used with a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without its `}}`.
    #[error("`{{{{` at byte {0} has no closing `}}}}`")]
    Unclosed(usize),
    /// `{{}}`.
    #[error("an empty `{{{{}}}}` names no field")]
    Empty,
    /// A field the payload does not have.
    #[error("the payload has no field `{0}`")]
    Missing(String),
}

/// The fields a template names, checking its syntax.
pub fn fields(template: &str) -> Result<Vec<&str>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or(TemplateError::Unclosed(offset + start))?;
        let field = after[..end].trim();
        if field.is_empty() {
            return Err(TemplateError::Empty);
        }
        out.push(field);
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    Ok(out)
}

/// The value at a dotted `path` of `payload` (`.` is the payload itself).
pub fn lookup<'a>(payload: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path == "." {
        return Some(payload);
    }
    path.split('.')
        .try_fold(payload, |value, segment| match value {
            serde_json::Value::Object(map) => map.get(segment),
            serde_json::Value::Array(items) => {
                segment.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        })
}

/// A value as text: strings as they are, anything else as JSON.
pub fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders `template` against `payload`.
pub fn render(template: &str, payload: &serde_json::Value) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or(TemplateError::Unclosed(offset + start))?;
        let field = after[..end].trim();
        if field.is_empty() {
            return Err(TemplateError::Empty);
        }
        let value =
            lookup(payload, field).ok_or_else(|| TemplateError::Missing(field.to_owned()))?;
        out.push_str(&text(value));
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_are_replaced_by_path() {
        let p = json!({"issue": {"title": "Crash", "labels": [{"name": "bug"}], "n": 7}});
        assert_eq!(
            render(
                "Fix {{ issue.title }} ({{issue.labels.0.name}}, #{{issue.n}})",
                &p
            )
            .unwrap(),
            "Fix Crash (bug, #7)"
        );
        assert_eq!(render("{{.}}", &json!({"a": 1})).unwrap(), r#"{"a":1}"#);
        assert_eq!(
            render("{{issue.body}}", &p),
            Err(TemplateError::Missing("issue.body".into()))
        );
        assert_eq!(render("x {{ y", &p), Err(TemplateError::Unclosed(2)));
        assert_eq!(fields("{{a}} and {{ b.c }}").unwrap(), vec!["a", "b.c"]);
        assert_eq!(fields("{{ }}"), Err(TemplateError::Empty));
    }
}
