//! Skills (PROTOCOL.md §4): folders with a `SKILL.md` whose YAML front matter
//! has `name` and `description`, found in the workspace's `.agents/skills`,
//! `.hangar/skills`, `.claude/skills`, `.codex/skills` and `.github/skills`.
//!
//! The model sees each skill's name and description in the system prompt
//! ([`skills_prompt`]) and loads a body on demand with the `load_skill` tool
//! ([`LoadSkillTool`]); `--skill` starts a run with a body already loaded
//! ([`resolve_skill_spec`]).
//!
//! `--skill owner/repo[@ref]:name` takes the skill from another repository:
//! a shallow `git clone` of `<base>/owner/repo` (base `https://github.com`,
//! or `HANGAR_SKILL_REPO_BASE`) into a cache directory keyed by URL and ref
//! (`$XDG_CACHE_HOME/hangar/skill-repos`, or `HANGAR_SKILL_CACHE`; reused for
//! [`SKILL_REPO_CACHE_TTL`]), searched in the folders above and `skills/`.

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

/// Where `owner/repo` skill repositories are cloned from unless
/// `HANGAR_SKILL_REPO_BASE` says otherwise.
pub const DEFAULT_SKILL_REPO_BASE: &str = "https://github.com";
/// Env: base URL of skill repositories (e.g. a GitHub Enterprise host or a `file://` directory).
pub const ENV_SKILL_REPO_BASE: &str = "HANGAR_SKILL_REPO_BASE";
/// Env: cache directory of cloned skill repositories.
pub const ENV_SKILL_CACHE: &str = "HANGAR_SKILL_CACHE";
/// How long a cloned skill repository is reused before it is cloned again.
pub const SKILL_REPO_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// Bound on one clone of a skill repository.
pub const SKILL_REPO_CLONE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Folder of skills at the top of a skill repository (besides [`SKILL_DIRS`]).
pub const REPO_SKILLS_DIR: &str = "skills";

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
    discover_in(workdir, &SKILL_DIRS)
}

fn discover_in(workdir: &Path, dirs: &[&str]) -> Vec<Skill> {
    let mut skills: Vec<Skill> = Vec::new();
    for dir in dirs {
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

/// Resolves a `--skill` spec: `name` among the workspace's `skills`, or
/// `owner/repo[@ref]:name` from that repository (cloned on demand; see the
/// module docs). The error says what is wrong and what exists.
pub async fn resolve_skill_spec(spec: &str, skills: &[Skill]) -> Result<Skill, String> {
    let spec = spec.trim();
    match spec.rsplit_once(':') {
        Some((repo, name)) if repo.contains('/') => {
            let base = std::env::var(ENV_SKILL_REPO_BASE)
                .ok()
                .filter(|b| !b.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_SKILL_REPO_BASE.to_owned());
            let cache = std::env::var_os(ENV_SKILL_CACHE)
                .map(PathBuf::from)
                .or_else(|| dirs::cache_dir().map(|d| d.join("hangar").join("skill-repos")))
                .unwrap_or_else(|| std::env::temp_dir().join("hangar-skill-repos"));
            skill_from_repo(&base, &cache, repo, name.trim()).await
        }
        _ => resolve_skill(spec, skills).cloned(),
    }
}

/// `owner/repo[@ref]` → (`owner/repo`, ref).
fn parse_repo(repo: &str) -> Result<(&str, Option<&str>), String> {
    let (path, git_ref) = match repo.split_once('@') {
        Some((p, r)) => (p, Some(r)),
        None => (repo, None),
    };
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let ok = matches!(path.split('/').collect::<Vec<_>>().as_slice(), [o, r] if segment_ok(o) && segment_ok(r))
        && git_ref.is_none_or(|r| {
            !r.is_empty()
                && !r.starts_with('-')
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        });
    if ok {
        Ok((path, git_ref))
    } else {
        Err(format!(
            "invalid skill repository `{repo}`: expected owner/repo or owner/repo@ref \
             (letters, digits, - _ . only), as in --skill owner/repo:name"
        ))
    }
}

/// Clones (or reuses) `<base>/<owner/repo>` and finds skill `name` in it.
pub async fn skill_from_repo(
    base: &str,
    cache: &Path,
    repo: &str,
    name: &str,
) -> Result<Skill, String> {
    use sha2::Digest;
    let (path, git_ref) = parse_repo(repo)?;
    let url = format!("{}/{path}", base.trim_end_matches('/'));
    let key = hex::encode(sha2::Sha256::digest(
        format!("{url}@{}", git_ref.unwrap_or("")).as_bytes(),
    ));
    let dir = cache.join(&key[..24]);
    let fresh = std::fs::metadata(dir.join(".hangar-cloned"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < SKILL_REPO_CACHE_TTL);
    if !fresh {
        clone_repo(&url, git_ref, cache, &dir).await?;
    }
    let skills = discover_in(&dir, &[SKILL_DIRS.as_slice(), &[REPO_SKILLS_DIR]].concat());
    skills.iter().find(|s| s.name == name).cloned().ok_or_else(|| {
        let known: Vec<&str> = skills.iter().map(|s| s.name.as_str()).collect();
        format!(
            "skill `{name}` not found in {repo} (looked in {} and {REPO_SKILLS_DIR}/); it has: {}",
            SKILL_DIRS.join(", "),
            if known.is_empty() { "no skills".to_owned() } else { known.join(", ") }
        )
    })
}

/// Shallow-clones `url` into a temp dir next to `dir`, then swaps it in.
async fn clone_repo(
    url: &str,
    git_ref: Option<&str>,
    cache: &Path,
    dir: &Path,
) -> Result<(), String> {
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create the skill cache {}: {e}", cache.display()))?;
    let tmp = cache.join(format!(".clone-{}-{}", std::process::id(), rand_suffix()));
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(["clone", "--quiet", "--depth", "1"]);
    if let Some(r) = git_ref {
        cmd.args(["--branch", r]);
    }
    cmd.arg("--")
        .arg(url)
        .arg(&tmp)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(SKILL_REPO_CLONE_TIMEOUT, cmd.output()).await;
    let failed = |why: String| {
        let _ = std::fs::remove_dir_all(&tmp);
        Err(format!(
            "cannot fetch skill repository {url}{}: {why}",
            git_ref.map(|r| format!(" (ref {r})")).unwrap_or_default()
        ))
    };
    match out {
        Err(_) => {
            return failed(format!(
                "git clone took longer than {SKILL_REPO_CLONE_TIMEOUT:?}"
            ));
        }
        Ok(Err(e)) => return failed(format!("cannot run git: {e}")),
        Ok(Ok(o)) if !o.status.success() => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("git clone failed");
            return failed(last.trim().to_owned());
        }
        Ok(Ok(_)) => {}
    }
    let _ = std::fs::write(tmp.join(".hangar-cloned"), url);
    let _ = std::fs::remove_dir_all(dir);
    if let Err(e) = std::fs::rename(&tmp, dir) {
        // Another run cloned the same repository meanwhile: use theirs.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.join(".hangar-cloned").exists() {
            return Err(format!(
                "cannot store the skill repository in {}: {e}",
                dir.display()
            ));
        }
    }
    Ok(())
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{nanos:08x}")
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
