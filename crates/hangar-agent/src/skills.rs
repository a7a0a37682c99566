//! Skills (PROTOCOL.md §4): folders with a `SKILL.md` whose YAML front matter
//! has `name` and `description`, found in the workspace's `.agents/skills`,
//! `.hangar/skills`, `.claude/skills`, `.codex/skills` and `.github/skills`.
//!
//! The model sees each skill's name and description in the system prompt
//! ([`skills_prompt`]) and loads a body on demand with the `load_skill` tool
//! ([`LoadSkillTool`]); `--skill` starts a run with a body already loaded
//! ([`resolve_skill`]).

use crate::tools::{ToolContext, ToolError, ToolHandler, decode_args};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Skill folders, relative to the workspace, in precedence order.
pub const SKILL_DIRS: [&str; 5] = [
    ".agents/skills",
    ".hangar/skills",
    ".claude/skills",
    ".codex/skills",
    ".github/skills",
];

/// Name of the tool that loads a skill's body.
pub const LOAD_SKILL_TOOL: &str = "load_skill";

/// One discovered skill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    /// Name (front matter `name`, else the folder name).
    pub name: String,
    /// One-line description.
    pub description: String,
    /// The `SKILL.md` file.
    pub path: PathBuf,
    /// The instructions after the front matter.
    pub body: String,
}

#[derive(Debug, Deserialize)]
struct FrontMatter {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Splits a `SKILL.md` into `(name, description, body)`; `None` without
/// front matter.
pub fn parse_skill_md(text: &str) -> Option<(Option<String>, String, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text.strip_prefix("---")?;
    let rest = rest
        .strip_prefix('\n')
        .or_else(|| rest.strip_prefix("\r\n"))?;
    let end = rest.find("\n---")?;
    let front = &rest[..end];
    let body = rest[end + 4..].trim_start_matches(['-']).trim().to_owned();
    let meta: FrontMatter = serde_norway::from_str(front).ok()?;
    Some((
        meta.name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty()),
        meta.description.unwrap_or_default().trim().to_owned(),
        body,
    ))
}

/// Every skill in `workdir`'s skill folders; on a name clash the first
/// folder of [`SKILL_DIRS`] wins.
pub fn discover_skills(workdir: &Path) -> Vec<Skill> {
    let mut skills: Vec<Skill> = Vec::new();
    for dir in SKILL_DIRS {
        let Ok(entries) = std::fs::read_dir(workdir.join(dir)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("SKILL.md"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        for path in found {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Some((name, description, body)) = parse_skill_md(&text) else {
                tracing::warn!(path = %path.display(), "SKILL.md without front matter; skipped");
                continue;
            };
            let folder = path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = name.unwrap_or(folder);
            if skills.iter().any(|s| s.name == name) {
                continue;
            }
            skills.push(Skill {
                name,
                description,
                path,
                body,
            });
        }
    }
    skills
}

/// Finds the skill a `--skill` spec names: `name`, or `owner/repo:name`
/// (the repository part is accepted, but only skills present in the
/// workspace can be used).
pub fn resolve_skill<'a>(spec: &str, skills: &'a [Skill]) -> Result<&'a Skill, String> {
    let (repo, name) = match spec.rsplit_once(':') {
        Some((repo, name)) => (Some(repo), name),
        None => (None, spec),
    };
    skills.iter().find(|s| s.name == name.trim()).ok_or_else(|| {
        let known: Vec<&str> = skills.iter().map(|s| s.name.as_str()).collect();
        let where_ = match repo {
            Some(repo) => format!(
                " (skills of other repositories such as `{repo}` must be checked out in the workspace)"
            ),
            None => String::new(),
        };
        format!(
            "skill `{spec}` not found in {}{where_}; available: {}",
            SKILL_DIRS.join(", "),
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        )
    })
}

/// The system-prompt section listing the skills.
pub fn skills_prompt(skills: &[Skill]) -> Option<String> {
    if skills.is_empty() {
        return None;
    }
    let mut text = format!(
        "Skills are available: instructions for specific tasks. When one fits your task, load it \
         with the `{LOAD_SKILL_TOOL}` tool before you start and follow it.\n"
    );
    for skill in skills {
        text.push_str(&format!("- {}: {}\n", skill.name, skill.description));
    }
    Some(text)
}

/// The prompt that starts a run with `skill` loaded.
pub fn prompt_with_skill(skill: &Skill, prompt: Option<&str>) -> String {
    let mut text = format!("Follow the skill `{}`:\n\n{}", skill.name, skill.body);
    if let Some(p) = prompt.map(str::trim).filter(|p| !p.is_empty()) {
        text.push_str("\n\nTask:\n");
        text.push_str(p);
    }
    text
}

/// `load_skill {name}`: returns a skill's instructions.
#[derive(Debug, Clone)]
pub struct LoadSkillTool {
    skills: Vec<Skill>,
}

impl LoadSkillTool {
    /// A tool serving `skills`.
    pub fn new(skills: Vec<Skill>) -> Self {
        LoadSkillTool { skills }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadArgs {
    name: String,
}

#[async_trait::async_trait]
impl ToolHandler for LoadSkillTool {
    fn name(&self) -> &str {
        LOAD_SKILL_TOOL
    }

    fn description(&self) -> &str {
        "Loads the full instructions of a skill listed in the system prompt."
    }

    fn parameters(&self) -> serde_json::Value {
        let names: Vec<&str> = self.skills.iter().map(|s| s.name.as_str()).collect();
        serde_json::json!({
            "type": "object",
            "properties": {"name": {"type": "string", "enum": names}},
            "required": ["name"],
            "additionalProperties": false
        })
    }

    async fn call(&self, args: serde_json::Value, _: &ToolContext) -> Result<String, ToolError> {
        let args: LoadArgs = decode_args(args)?;
        let skill = resolve_skill(&args.name, &self.skills).map_err(ToolError::Model)?;
        let dir = skill
            .path
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Ok(format!(
            "# Skill: {}\n(files of this skill are in {dir})\n\n{}",
            skill.name, skill.body
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, dir: &str, name: &str, text: &str) {
        let d = root.join(dir).join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("SKILL.md"), text).unwrap();
    }

    #[tokio::test]
    async fn discovers_lists_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            ".agents/skills",
            "release",
            "---\nname: release\ndescription: Cut a release\n---\nBump the version.\n",
        );
        write(
            root,
            ".claude/skills",
            "release",
            "---\nname: release\ndescription: shadowed\n---\nno\n",
        );
        write(
            root,
            ".github/skills",
            "lint",
            "---\ndescription: \"Run: the linters\"\n---\n\nRun clippy.",
        );
        write(root, ".codex/skills", "broken", "no front matter");
        let skills = discover_skills(root);
        let names: Vec<&str> = skills.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["release", "lint"]);
        assert_eq!(skills[0].body, "Bump the version.");
        assert_eq!(skills[1].description, "Run: the linters");
        let prompt = skills_prompt(&skills).unwrap();
        assert!(prompt.contains("- release: Cut a release"), "{prompt}");

        assert_eq!(
            resolve_skill("acme/tools:lint", &skills).unwrap().name,
            "lint"
        );
        let err = resolve_skill("nope", &skills).unwrap_err();
        assert!(err.contains("available: release, lint"), "{err}");

        let tool = LoadSkillTool::new(skills);
        let ctx = ToolContext::new(root, tokio_util::sync::CancellationToken::new(), "c");
        let out = tool
            .call(serde_json::json!({"name": "release"}), &ctx)
            .await
            .unwrap();
        assert!(out.contains("Bump the version."), "{out}");
        assert!(
            tool.call(serde_json::json!({"name": "x"}), &ctx)
                .await
                .is_err()
        );
    }
}
