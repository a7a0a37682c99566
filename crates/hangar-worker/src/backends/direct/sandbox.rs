//! The direct backend's sandbox (issue 11; TESTING.md S7): every process an
//! execution starts (setup and teardown commands, the agent and all it runs)
//! runs under bubblewrap (`bwrap`), in its own PID, mount, IPC and UTS
//! namespaces and, unless the environment's network policy is `full`, its
//! own network namespace.
//!
//! What a task sees:
//! - the system directories (`/usr`, `/bin`, `/lib*`, `/sbin`, `/etc`),
//!   read-only, with `/etc/hangar` hidden; its own `/proc`, a minimal `/dev`
//!   and a private `/tmp`;
//! - its workspace (and a configured target dir), read-write, at the host
//!   path; the agent binary and the configured `sandbox_mounts`;
//! - nothing else: the worker's and server's data, config and home
//!   directories, other workspaces and other processes do not exist there.
//!
//! Who it runs as: a root worker runs tasks as `nobody` (65534:65534), with
//! no capabilities and `no_new_privs` (bubblewrap drops to it through
//! `setpriv`, after the namespaces are set up); a worker that is not root
//! runs them as itself, in a user namespace.
//!
//! Secrets never pass through bubblewrap: its options come on a memfd
//! (`--args`), and the task's environment on another one that a two-line
//! `/bin/sh` shim inside the sandbox sources and closes before it execs the
//! program. So `/proc/1/environ` and `/proc/1/cmdline` of the sandbox's
//! init hold no secret, and the agent (which marks itself non-dumpable)
//! keeps its run token from the tools it runs.
//!
//! Signals: bubblewrap starts a new session (`--new-session`), whose group
//! holds the sandbox's init and every task process. The backend signals that
//! group: init (PID 1 of the namespace) ignores SIGTERM, the program gets it
//! and has its grace period; SIGKILL, the end of the program, or the death of
//! the worker (`--die-with-parent`) ends the whole namespace.
//!
//! Network: `none` and `allowlist` get a namespace with loopback only. Before
//! the program starts (`--block-fd`), a short-lived child of the worker joins
//! that namespace (and the sandbox's user namespace, for a worker that is not
//! root) and opens listeners on its loopback: a relay to the
//! server (at the server URL's port) and, for allowlists, the egress proxy
//! shared with the Docker backend (`sandbox::egress::serve_proxy`). Those sockets are
//! the only way out; their connections are made by the worker on the host.

// What runs between fork and exec (moving descriptors) must be raw system calls.
#![allow(unsafe_code)]

mod network;

use crate::config::SandboxMount;
pub(crate) use network::{Isolated, Listeners, Network};
use nix::libc;
use nix::sys::memfd::{MFdFlags, memfd_create};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The uid and gid a root worker runs tasks as (`nobody`).
pub(crate) const TASK_USER: (u32, u32) = (65534, 65534);
/// How long bubblewrap may take to set up a sandbox and report its init.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Descriptor numbers as bubblewrap and the shim see them.
const FD_ARGS: RawFd = 3;
const FD_ENV: RawFd = 4;
const FD_INFO: RawFd = 5;
const FD_BLOCK: RawFd = 6;
const FD_HOSTS: RawFd = 7;

/// Sources the environment from `FD_ENV`, closes it, execs the program.
const SHIM: &str = "set -a; . /dev/fd/4 || exit 126; set +a; exec 4<&-; exec \"$@\"";

/// As the task user: enters the workspace (`$0`), execs the program.
const CD_SHIM: &str = "cd -- \"$0\" || exit 126; unset OLDPWD; exec \"$@\"";

/// Top-level system paths shown read-only (symlinks are recreated as such).
const SYSTEM_PATHS: [&str; 8] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
/// Hidden under an empty tmpfs when present: Hangar's own host config.
const HIDDEN_PATHS: [&str; 1] = ["/etc/hangar"];

/// How to install what the sandbox needs.
const INSTALL_HINT: &str = "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, \
     Fedora/RHEL: `dnf install bubblewrap`) and make sure user namespaces are enabled \
     (`sysctl user.max_user_namespaces` above 0; on older Debian kernels \
     `sysctl kernel.unprivileged_userns_clone=1`), or run tasks without a sandbox with \
     `--no-sandbox` (`sandbox: none` under backend.direct), an explicit relaxation";

/// The sandbox as this host provides it.
#[derive(Debug)]
pub(crate) struct Sandbox {
    bwrap: PathBuf,
    /// `setpriv` and the uid:gid tasks run as, when the worker is root.
    drop_to: Option<(PathBuf, u32, u32)>,
    system: Vec<SystemPath>,
    hidden: Vec<PathBuf>,
    /// The directory `/etc/resolv.conf` points into, when outside `/etc`.
    resolv_dir: Option<PathBuf>,
    mounts: Vec<SandboxMount>,
}

#[derive(Debug, Clone)]
enum SystemPath {
    Dir(PathBuf),
    Link { path: PathBuf, target: PathBuf },
}

/// One process to start in a sandbox.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: &'a Path,
    /// Shown read-write at the same path (the workspace, a target dir).
    pub writable: Vec<&'a Path>,
    /// Shown read-only at the same path (the agent binary).
    pub readable: Vec<&'a Path>,
    pub network: &'a Network,
}

/// A bubblewrap command line ready to spawn: `program args` with the
/// descriptors it needs moved into place by [`Prepared::pre_exec`].
#[derive(Debug)]
pub(crate) struct Prepared {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// (descriptor here, number in the child); closed here after the spawn.
    child_fds: Vec<(OwnedFd, RawFd)>,
    info: OwnedFd,
    block: Option<OwnedFd>,
    network: Network,
}

/// A started sandbox: the process group of everything in it, and the
/// listeners that live as long as it does.
#[derive(Debug)]
pub(crate) struct Started {
    /// Host pid of the sandbox's init, leader of its session and group.
    pub group: i32,
    /// The network listeners (stopped when dropped).
    pub listeners: Option<Listeners>,
}

impl Sandbox {
    /// Checks that this host can run the sandbox: bubblewrap is installed and
    /// works (namespaces allowed), `setpriv` is there for a root worker, and
    /// every configured mount exists. The error says what to install.
    pub fn detect(mounts: Vec<SandboxMount>) -> Result<Sandbox, String> {
        Self::detect_with(find_program("bwrap"), mounts)
    }

    /// [`detect`](Self::detect) with bubblewrap at `bwrap` (`None`: not installed).
    fn detect_with(bwrap: Option<PathBuf>, mounts: Vec<SandboxMount>) -> Result<Sandbox, String> {
        let bwrap = bwrap.ok_or_else(|| {
            format!("the direct backend runs tasks in a sandbox and bubblewrap (`bwrap`) is not installed: {INSTALL_HINT}")
        })?;
        let root = nix::unistd::geteuid().is_root();
        let drop_to = if root {
            let setpriv = find_program("setpriv").ok_or_else(|| {
                "the direct backend's sandbox runs tasks as nobody and needs `setpriv` \
                 (Debian/Ubuntu: `apt-get install util-linux`), or run tasks without a sandbox \
                 with `--no-sandbox`"
                    .to_owned()
            })?;
            Some((setpriv, TASK_USER.0, TASK_USER.1))
        } else {
            None
        };
        for m in &mounts {
            if !m.path.exists() {
                return Err(format!(
                    "sandbox mount {} does not exist on this host: create it or remove it from \
                     --sandbox-mount / sandbox_mounts",
                    m.path.display()
                ));
            }
        }
        let system = SYSTEM_PATHS
            .iter()
            .filter_map(|p| {
                let path = PathBuf::from(p);
                match std::fs::read_link(&path) {
                    Ok(target) => Some(SystemPath::Link { path, target }),
                    Err(_) if path.is_dir() => Some(SystemPath::Dir(path)),
                    Err(_) => None,
                }
            })
            .collect();
        let resolv_dir = std::fs::canonicalize("/etc/resolv.conf")
            .ok()
            .filter(|p| !p.starts_with("/etc") && !p.starts_with("/usr"))
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let sandbox = Sandbox {
            bwrap,
            drop_to,
            system,
            hidden: HIDDEN_PATHS
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.is_dir())
                .collect(),
            resolv_dir,
            mounts,
        };
        sandbox.probe()?;
        Ok(sandbox)
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let user = match &self.drop_to {
            Some((_, uid, gid)) => format!("as {uid}:{gid} without capabilities"),
            None => "as the worker's user, in a user namespace".to_owned(),
        };
        format!(
            "bubblewrap sandbox ({}): own PID/mount/IPC/UTS namespaces, only the workspace writable, {user}",
            self.bwrap.display()
        )
    }

    /// The uid:gid tasks run as when it differs from the worker's.
    pub fn task_user(&self) -> Option<(u32, u32)> {
        self.drop_to.as_ref().map(|(_, u, g)| (*u, *g))
    }

    /// Runs `/bin/true` in a sandbox with every namespace this backend uses.
    fn probe(&self) -> Result<(), String> {
        let env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
        let cwd = Path::new("/");
        let launch = Launch {
            program: Path::new("/bin/true"),
            args: &[],
            env: &env,
            cwd,
            writable: Vec::new(),
            readable: Vec::new(),
            network: &Network::Isolated(Arc::new(Isolated {
                server: ("127.0.0.1".to_owned(), 1),
                proxy: None,
                hosts_file: String::new(),
                agent_server_url: String::new(),
                env: Vec::new(),
            })),
        };
        let fail = |why: String| {
            format!(
                "the direct backend runs tasks in a bubblewrap sandbox and {why}: {INSTALL_HINT}"
            )
        };
        let prepared = self
            .prepare_with(&launch, false)
            .map_err(|e| fail(format!("it cannot be prepared ({e})")))?;
        // Once, when the backend starts and before it takes a task: a blocking
        // wait for `/bin/true` in the sandbox, a few milliseconds.
        #[allow(clippy::disallowed_methods)]
        let mut cmd = std::process::Command::new(&prepared.program);
        cmd.args(&prepared.args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        {
            use std::os::unix::process::CommandExt;
            let hook = prepared.pre_exec_hook();
            // SAFETY: the hook only makes async-signal-safe system calls.
            unsafe {
                cmd.pre_exec(hook);
            }
        }
        let output = cmd
            .output()
            .map_err(|e| fail(format!("{} cannot be run ({e})", self.bwrap.display())))?;
        if output.status.success() {
            Ok(())
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(fail(format!(
                "it does not work on this host ({}: {})",
                output.status,
                last.trim()
            )))
        }
    }

    /// The bubblewrap command for `launch`.
    pub fn prepare(&self, launch: &Launch<'_>) -> io::Result<Prepared> {
        self.prepare_with(launch, true)
    }

    fn prepare_with(&self, launch: &Launch<'_>, block: bool) -> io::Result<Prepared> {
        let isolated = match launch.network {
            Network::Host => None,
            Network::Isolated(n) => Some(n.clone()),
        };
        let mut child_fds = Vec::new();
        let mut a = self.options(launch, isolated.as_deref(), &mut child_fds)?;
        let (info_read, info_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        child_fds.push((info_write, FD_INFO));
        a.extend(["--info-fd".to_owned(), FD_INFO.to_string()]);
        let block_write = if block && isolated.is_some() {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            child_fds.push((r, FD_BLOCK));
            a.extend(["--block-fd".to_owned(), FD_BLOCK.to_string()]);
            Some(w)
        } else {
            None
        };
        // Options come on a memfd; the command must follow on the real
        // command line (bubblewrap stops reading the file at `--`).
        let options = a;
        let a = self.command(launch);

        let mut args_data = Vec::new();
        for arg in options.iter().chain(&a) {
            if arg.contains('\0') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a sandbox argument contains a NUL byte",
                ));
            }
        }
        for arg in &options {
            args_data.extend_from_slice(arg.as_bytes());
            args_data.push(0);
        }
        child_fds.push((memfd("args", &args_data)?, FD_ARGS));
        child_fds.push((memfd("env", &env_file(launch.env))?, FD_ENV));
        let mut args = vec!["--args".to_owned(), FD_ARGS.to_string()];
        args.extend(a);
        Ok(Prepared {
            program: self.bwrap.clone(),
            args,
            child_fds,
            info: info_read,
            block: block_write,
            network: launch.network.clone(),
        })
    }

    /// Bubblewrap's options: namespaces, the file system the task sees, and
    /// (for a root worker) the capabilities `setpriv` needs. Data it reads
    /// from a descriptor (`/etc/hosts`) is added to `child_fds`.
    fn options(
        &self,
        launch: &Launch<'_>,
        isolated: Option<&Isolated>,
        child_fds: &mut Vec<(OwnedFd, RawFd)>,
    ) -> io::Result<Vec<String>> {
        let mut a: Vec<String> = Vec::new();
        push(
            &mut a,
            &[
                "--die-with-parent",
                "--new-session",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-uts",
                "--unshare-cgroup-try",
                "--hostname",
                "hangar-task",
            ],
        );
        if isolated.is_some() {
            push(&mut a, &["--unshare-net"]);
        }
        for entry in &self.system {
            match entry {
                SystemPath::Dir(p) => a.extend(ro_bind(p)),
                SystemPath::Link { path, target } => {
                    a.extend(["--symlink".to_owned(), lossy(target), lossy(path)])
                }
            }
        }
        push(
            &mut a,
            &["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"],
        );
        if let Some(dir) = &self.resolv_dir {
            a.extend(["--ro-bind-try".to_owned(), lossy(dir), lossy(dir)]);
        }
        for hidden in &self.hidden {
            a.extend(["--tmpfs".to_owned(), lossy(hidden)]);
        }
        if let Some(n) = isolated
            && !n.hosts_file.is_empty()
        {
            child_fds.push((memfd("hosts", n.hosts_file.as_bytes())?, FD_HOSTS));
            a.extend([
                "--ro-bind-data".to_owned(),
                FD_HOSTS.to_string(),
                "/etc/hosts".to_owned(),
            ]);
        }
        let mut parents = Parents::default();
        for p in &launch.readable {
            parents.make(&mut a, p, &self.system);
            a.extend(ro_bind(p));
        }
        for m in &self.mounts {
            parents.make(&mut a, &m.path, &self.system);
            if m.writable {
                a.extend(["--bind".to_owned(), lossy(&m.path), lossy(&m.path)]);
            } else {
                a.extend(ro_bind(&m.path));
            }
        }
        for p in &launch.writable {
            parents.make(&mut a, p, &self.system);
            a.extend(["--bind".to_owned(), lossy(p), lossy(p)]);
        }
        if self.drop_to.is_none() {
            // As the task user; a root worker's cd comes after setpriv (the
            // workspace is the task user's, 0700).
            a.extend(["--chdir".to_owned(), lossy(launch.cwd)]);
        }
        if self.drop_to.is_some() {
            // Only what setpriv needs to become the task user; gone after that.
            push(
                &mut a,
                &[
                    "--cap-drop",
                    "ALL",
                    "--cap-add",
                    "CAP_SETUID",
                    "--cap-add",
                    "CAP_SETGID",
                ],
            );
        }
        Ok(a)
    }

    /// The command after bubblewrap's options: the shim that sources the
    /// environment, `setpriv` to the task user (root worker), the program.
    fn command(&self, launch: &Launch<'_>) -> Vec<String> {
        let mut a = vec![
            "--".to_owned(),
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            SHIM.to_owned(),
            "hangar-sandbox".to_owned(),
        ];
        if let Some((setpriv, uid, gid)) = &self.drop_to {
            a.extend([
                lossy(setpriv),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".to_owned(),
                "--inh-caps=-all".to_owned(),
                "--".to_owned(),
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                CD_SHIM.to_owned(),
                lossy(launch.cwd),
            ]);
        }
        a.push(lossy(launch.program));
        a.extend(launch.args.iter().cloned());
        a
    }
}

impl Prepared {
    /// Makes `cmd` hand bubblewrap its descriptors (register after the
    /// containment hook: the numbers it needs are then free to take).
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        let hook = self.pre_exec_hook();
        // SAFETY: the hook only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(hook);
        }
    }

    fn pre_exec_hook(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        let mut moves = [(-1, -1); 5];
        for (slot, (fd, target)) in moves.iter_mut().zip(&self.child_fds) {
            *slot = (fd.as_raw_fd(), *target);
        }
        move || {
            // SAFETY: runs in the forked child before exec; plain system calls
            // on this child's descriptor table.
            unsafe { move_fds(&moves) }
        }
    }

    /// After the spawn: closes the child's ends here, learns the sandbox's
    /// init from bubblewrap, opens the network listeners inside it and lets
    /// the program start.
    pub async fn started(self) -> io::Result<Started> {
        let Prepared {
            child_fds,
            info,
            block,
            network,
            ..
        } = self;
        drop(child_fds);
        let info = tokio::time::timeout(
            START_TIMEOUT,
            tokio::task::spawn_blocking(move || {
                let mut text = String::new();
                File::from(info).read_to_string(&mut text).map(|_| text)
            }),
        )
        .await
        .map_err(|_| io::Error::other("bubblewrap did not report its sandbox in time"))?
        .map_err(io::Error::other)??;
        let group = serde_json::from_str::<serde_json::Value>(&info)
            .ok()
            .and_then(|v| v.get("child-pid")?.as_i64())
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                io::Error::other(
                    "bubblewrap could not set up the sandbox (its error is in the worker's log)",
                )
            })?;
        let listeners = match (&network, block) {
            (Network::Isolated(n), Some(block)) => {
                let listeners = network::listen_inside(group, n).await?;
                File::from(block).write_all(b"1")?;
                Some(listeners)
            }
            _ => None,
        };
        Ok(Started { group, listeners })
    }
}

/// Moves each `(from, to)` descriptor to `to` (without close-on-exec);
/// `from` of -1 ends the list. Copies first, so no source is overwritten.
unsafe fn move_fds(moves: &[(RawFd, RawFd)]) -> io::Result<()> {
    const HIGH: RawFd = 100;
    let mut copies = [-1; 5];
    // SAFETY (whole function): fcntl/dup2 on this process's descriptors.
    unsafe {
        for (copy, (from, _)) in copies.iter_mut().zip(moves) {
            if *from < 0 {
                break;
            }
            *copy = libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, HIGH);
            if *copy < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for (copy, (from, to)) in copies.iter().zip(moves) {
            if *from < 0 {
                break;
            }
            if libc::dup2(*copy, *to) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// A sealed-by-convention memfd holding `data`, positioned at its start.
fn memfd(name: &str, data: &[u8]) -> io::Result<OwnedFd> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC)?;
    let mut file = File::from(fd);
    file.write_all(data)?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// `NAME='value'` lines for the shim; names that are not shell variable
/// names cannot be passed and are dropped (with a warning).
fn env_file(env: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = String::new();
    for (k, v) in env {
        let valid = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || v.contains('\0') {
            tracing::warn!(
                variable = %k,
                "not passed to the sandboxed task: not a valid environment variable name or value"
            );
            continue;
        }
        out.push_str(k);
        out.push_str("='");
        out.push_str(&v.replace('\'', "'\\''"));
        out.push_str("'\n");
    }
    out.into_bytes()
}

/// Parent directories of bind destinations, made traversable (0755): left
/// to itself bubblewrap copies the host's modes, and a 0700 root-owned
/// parent (a temporary directory, the workspace root) would lock the task
/// user out of its own workspace.
#[derive(Default)]
struct Parents(std::collections::HashSet<PathBuf>);

impl Parents {
    fn make(&mut self, args: &mut Vec<String>, dest: &Path, system: &[SystemPath]) {
        let mut ancestors: Vec<&Path> = dest
            .ancestors()
            .skip(1)
            .filter(|a| a.parent().is_some())
            .collect();
        ancestors.reverse();
        for dir in ancestors {
            let in_system = system.iter().any(|s| match s {
                SystemPath::Dir(p) | SystemPath::Link { path: p, .. } => dir.starts_with(p),
            });
            if in_system || !self.0.insert(dir.to_path_buf()) {
                continue;
            }
            push(args, &["--perms", "0755", "--dir"]);
            args.push(lossy(dir));
        }
    }
}

fn push(args: &mut Vec<String>, items: &[&str]) {
    args.extend(items.iter().map(|s| (*s).to_owned()));
}

fn ro_bind(p: &Path) -> [String; 3] {
    ["--ro-bind".to_owned(), lossy(p), lossy(p)]
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `name` on `PATH`, else in `/usr/bin` or `/bin`.
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Gives `dir` and everything under it (symlinks themselves, not their
/// targets) to `uid:gid`: the workspace of a task that runs as the task user.
pub(crate) fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let owner = (
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    );
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &p,
            owner.0,
            owner.1,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        if p.symlink_metadata()?.is_dir() {
            for entry in std::fs::read_dir(&p)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_bubblewrap_is_told_what_to_install_or_how_to_opt_out() {
        let err = Sandbox::detect_with(None, Vec::new()).unwrap_err();
        assert!(err.contains("apt-get install bubblewrap"), "{err}");
        assert!(err.contains("--no-sandbox"), "{err}");
        let missing = SandboxMount {
            path: PathBuf::from("/nonexistent/toolchain"),
            writable: false,
        };
        let err =
            Sandbox::detect_with(Some(PathBuf::from("/usr/bin/bwrap")), vec![missing]).unwrap_err();
        assert!(
            err.contains("/nonexistent/toolchain does not exist"),
            "{err}"
        );
    }

    #[test]
    fn env_file_quotes_every_value_and_drops_bad_names() {
        let env = BTreeMap::from([
            ("A".to_owned(), "it's $HOME `x`\nline".to_owned()),
            ("BAD-NAME".to_owned(), "x".to_owned()),
            ("_OK1".to_owned(), String::new()),
        ]);
        let text = String::from_utf8(env_file(&env)).unwrap();
        assert_eq!(text, "A='it'\\''s $HOME `x`\nline'\n_OK1=''\n");
    }
}
