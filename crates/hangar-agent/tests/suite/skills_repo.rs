//! `--skill owner/repo[@ref]:name`: skills from a real git repository, served
//! locally through `file://` (the same code path as `https://github.com`).

use hangar_agent::skills::{resolve_skill_spec, skill_from_repo};
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn skill(root: &Path, dir: &str, name: &str, body: &str) {
    let d = root.join(dir).join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("SKILL.md"),
        format!("---\nname: {name}\ndescription: {name} things\n---\n{body}\n"),
    )
    .unwrap();
}

/// `<base>/acme/tools`: `deploy` in `skills/`, `lint` in `.agents/skills`;
/// tag `v1` has an older `deploy`.
fn repo(base: &Path) {
    let r = base.join("acme/tools");
    std::fs::create_dir_all(&r).unwrap();
    git(&r, &["init", "-q", "-b", "main"]);
    skill(&r, "skills", "deploy", "Deploy v1.");
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "v1"]);
    git(&r, &["tag", "v1"]);
    skill(&r, "skills", "deploy", "Deploy v2.");
    skill(&r, ".agents/skills", "lint", "Run the linters.");
    git(&r, &["add", "-A"]);
    git(&r, &["commit", "-q", "-m", "v2"]);
}

#[tokio::test]
async fn skills_come_from_a_cloned_repository_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    repo(&served);
    let base = format!("file://{}", served.display());
    let cache = tmp.path().join("cache");

    let deploy = skill_from_repo(&base, &cache, "acme/tools", "deploy")
        .await
        .unwrap();
    assert_eq!(deploy.body, "Deploy v2.");
    assert!(deploy.path.starts_with(&cache), "{}", deploy.path.display());
    let lint = skill_from_repo(&base, &cache, "acme/tools", "lint")
        .await
        .unwrap();
    assert_eq!(lint.body, "Run the linters.");
    let old = skill_from_repo(&base, &cache, "acme/tools@v1", "deploy")
        .await
        .unwrap();
    assert_eq!(old.body, "Deploy v1.", "@ref picks the tag");

    // Cached by URL and ref: a second lookup needs no repository.
    std::fs::remove_dir_all(served.join("acme")).unwrap();
    let again = skill_from_repo(&base, &cache, "acme/tools", "deploy")
        .await
        .unwrap();
    assert_eq!(again.body, "Deploy v2.");

    let err = skill_from_repo(&base, &cache, "acme/tools", "nope")
        .await
        .unwrap_err();
    assert!(
        err.contains("skill `nope` not found in acme/tools"),
        "{err}"
    );
    assert!(
        err.contains("it has: deploy, lint") || err.contains("it has: lint, deploy"),
        "{err}"
    );

    let err = skill_from_repo(&base, &cache, "acme/missing", "x")
        .await
        .unwrap_err();
    assert!(err.contains("cannot fetch skill repository"), "{err}");
    assert!(err.contains("acme/missing"), "{err}");

    let err = skill_from_repo(&base, &cache, "acme/tools@v9", "deploy")
        .await
        .unwrap_err();
    assert!(err.contains("(ref v9)"), "{err}");

    for bad in ["acme", "acme/../etc", "a/b/c", "acme/tools@-x"] {
        let err = skill_from_repo(&base, &cache, bad, "x").await.unwrap_err();
        assert!(err.contains("invalid skill repository"), "{bad}: {err}");
    }

    // A plain name still means a workspace skill.
    let err = resolve_skill_spec("deploy", &[]).await.unwrap_err();
    assert!(err.contains("skill `deploy` not found"), "{err}");
    // The cache holds only finished clones.
    let leftovers: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".clone-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
