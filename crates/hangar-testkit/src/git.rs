//! Real git repositories for tests (clone sources for environments).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `git ARGS` in `dir` as a test author; panics when it fails.
pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .status()
        .unwrap_or_else(|e| panic!("cannot run git: {e}"));
    assert!(status.success(), "git {args:?} failed in {}", dir.display());
}

/// A repository `dir/app` on branch `main` with one commit of `README.md`
/// holding `readme`; answers its path.
pub fn one_commit_repo(dir: &Path, readme: &str) -> PathBuf {
    let repo = dir.join("app");
    std::fs::create_dir(&repo).unwrap_or_else(|e| panic!("{}: {e}", repo.display()));
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), readme)
        .unwrap_or_else(|e| panic!("{}: {e}", repo.display()));
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "init"]);
    repo
}
