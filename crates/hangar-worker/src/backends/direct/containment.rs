//! Process containment for the direct backend: every process an execution
//! starts (the agent, its shell tool's commands and their daemonised
//! children, MCP servers, harnesses, setup and teardown commands) dies with
//! the execution, on cancel, on normal completion and when the worker dies.
//!
//! Three mechanisms, each used where the host allows it ([`Containment::detect`]):
//!
//! - **PID namespace.** Each process the backend spawns (the agent, a setup
//!   or teardown command) runs in a new PID and mount namespace, with its own
//!   `/proc`, under a minimal init (PID 1, a fork of the worker that reaps
//!   orphans). When the program ends, init exits and the kernel kills
//!   everything else in the namespace, so nothing outlives it, not even a
//!   `setsid`/double-forked daemon. A keeper process outside the namespace
//!   (the worker's direct child) mirrors the program's exit status, and dies
//!   with the worker (`PR_SET_PDEATHSIG`), taking init and the namespace
//!   with it. Needs `CAP_SYS_ADMIN` (a root worker).
//! - **cgroup v2.** Each execution gets `hangar-<execution_id>` under the
//!   worker's own cgroup; its processes are placed there before they run,
//!   and `cgroup.kill` ends all of them at once. It also lets a restarted
//!   worker reap what a previous life left (see `super::state`).
//! - **Process group + `PR_SET_PDEATHSIG`** always: the leader gets SIGKILL
//!   when the worker dies, and its group is killed when it ends.
//!
//! Without a PID namespace and a cgroup, a daemon that leaves the process
//! group survives until the worker restarts and reaps its execution; the
//! start-up log says which mechanisms are in force.

// The only unsafe code of the worker: what runs between fork and exec must be
// raw, async-signal-safe system calls.
#![allow(unsafe_code)]

use nix::libc;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long [`Scope::kill`] waits for the kernel to empty the cgroup.
const CGROUP_EMPTY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prefix of per-execution cgroup names.
pub(crate) const CGROUP_PREFIX: &str = "hangar-";

/// The mechanisms available on this host.
#[derive(Debug, Clone, Default)]
pub(crate) struct Containment {
    pid_namespace: bool,
    /// Parent directory of the per-execution cgroups (the worker's own cgroup).
    cgroup_root: Option<PathBuf>,
    /// cgroup v1 `pids` and `memory` hierarchies (hybrid hosts), where the
    /// execution's limits go when the v2 cgroup has no such controllers.
    v1_pids: Option<PathBuf>,
    v1_memory: Option<PathBuf>,
}

/// Resource limits of one execution (scenario S3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most processes and threads at once.
    pub pids: Option<u64>,
    /// Most memory, in bytes.
    pub memory: Option<u64>,
}

impl Containment {
    /// Probes the host: a writable cgroup v2 with `cgroup.kill`, and whether
    /// this process may create PID namespaces.
    pub fn detect() -> Containment {
        Containment {
            pid_namespace: Self::probe_pid_namespace(),
            ..Self::detect_without_pid_namespace()
        }
    }

    /// As [`detect`](Self::detect), for processes that get their PID
    /// namespace elsewhere (the sandbox): cgroup and process groups only.
    pub fn detect_without_pid_namespace() -> Containment {
        Containment {
            pid_namespace: false,
            cgroup_root: cgroup_root().filter(|root| probe_cgroup(root)),
            v1_pids: v1_root("pids").filter(|root| probe_v1(root, "pids.max")),
            v1_memory: v1_root("memory").filter(|root| probe_v1(root, "memory.limit_in_bytes")),
        }
    }

    /// Where execution limits can be enforced, for the start-up log.
    pub fn describe_limits(&self) -> String {
        let v2 = self.cgroup_root.as_ref().and_then(|root| {
            let controllers = std::fs::read_to_string(root.join("cgroup.subtree_control")).ok()?;
            Some(
                controllers
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            )
        });
        let has = |c: &str| v2.as_ref().is_some_and(|v| v.iter().any(|x| x == c));
        let pids = has("pids") || self.v1_pids.is_some();
        let memory = has("memory") || self.v1_memory.is_some();
        match (pids, memory) {
            (true, true) => "process and memory limits per execution".to_owned(),
            (true, false) => "process limits per execution (no memory controller: memory is not limited)".to_owned(),
            (false, true) => "memory limits per execution (no pids controller: processes are not limited)".to_owned(),
            (false, false) => "no cgroup pids or memory controller: executions are not limited (delegate them to the worker, systemd Delegate=yes)".to_owned(),
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.pid_namespace {
            parts.push(
                "a PID namespace per process (the task tree dies with its leader)".to_owned(),
            );
        }
        if let Some(root) = &self.cgroup_root {
            parts.push(format!(
                "a cgroup v2 per execution under {} (cgroup.kill)",
                root.display()
            ));
        }
        parts.push("process groups with PR_SET_PDEATHSIG (tasks die with the worker)".to_owned());
        parts.join(" + ")
    }

    /// What is missing, for a warning at start-up.
    pub fn weaknesses(&self) -> Option<String> {
        match (self.pid_namespace, &self.cgroup_root) {
            (true, _) => None,
            (false, Some(_)) => Some(
                "no PID namespaces (the worker lacks CAP_SYS_ADMIN): a daemon a task starts survives \
                 a worker crash until the worker restarts and reaps its execution"
                    .to_owned(),
            ),
            (false, None) => Some(
                "no PID namespaces (the worker lacks CAP_SYS_ADMIN) and no writable cgroup v2: a \
                 process that leaves its process group (setsid) can outlive its task; run the \
                 worker as root or in a delegated cgroup (systemd Delegate=yes)"
                    .to_owned(),
            ),
        }
    }

    /// The scope of one execution: creates its cgroup (emptying a leftover
    /// one of the same name), with `limits` where the host's controllers allow.
    pub fn scope(&self, execution_id: &str, limits: Limits) -> io::Result<Scope> {
        let cgroup = match &self.cgroup_root {
            Some(root) => {
                let dir = root.join(format!("{CGROUP_PREFIX}{execution_id}"));
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => kill_cgroup(&dir)?,
                    Err(e) => return Err(e),
                }
                let procs = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.procs"))?;
                Some(Arc::new(Cgroup { dir, procs }))
            }
            None => None,
        };
        let name = format!("{CGROUP_PREFIX}{execution_id}");
        let mut limited = Vec::new();
        let v2_dir = cgroup.as_ref().map(|c| c.dir.clone());
        let v2_write = |file: &str, value: u64| -> io::Result<bool> {
            match &v2_dir {
                Some(dir) if dir.join(file).exists() => {
                    std::fs::write(dir.join(file), value.to_string())?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        };
        if let Some(pids) = limits.pids
            && !v2_write("pids.max", pids)?
            && let Some(root) = &self.v1_pids
        {
            limited.push(Arc::new(V1Group::create(root, &name, "pids.max", pids)?));
        }
        if let Some(memory) = limits.memory
            && !v2_write("memory.max", memory)?
            && let Some(root) = &self.v1_memory
        {
            let group = V1Group::create(root, &name, "memory.limit_in_bytes", memory)?;
            // No swap beyond the limit, where the kernel accounts it.
            let _ = std::fs::write(
                group.dir.join("memory.memsw.limit_in_bytes"),
                memory.to_string(),
            );
            limited.push(Arc::new(group));
        }
        Ok(Scope {
            pid_namespace: self.pid_namespace,
            cgroup,
            limited,
        })
    }

    /// Spawns `/bin/true` in a PID namespace; whether that worked.
    fn probe_pid_namespace() -> bool {
        let scope = Scope {
            pid_namespace: true,
            cgroup: None,
            limited: Vec::new(),
        };
        // Once, when the backend starts and before it takes a task: a blocking
        // wait of a few milliseconds, and `apply_std` needs a std Command.
        #[allow(clippy::disallowed_methods)]
        let mut cmd = std::process::Command::new("/bin/true");
        scope.apply_std(&mut cmd);
        match cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            Ok(status) => status.success(),
            Err(e) => {
                tracing::debug!(error = %e, "PID namespaces are not available");
                false
            }
        }
    }
}

/// An execution's cgroup; removed (its processes killed first) when the
/// last handle goes, whatever ended the execution.
#[derive(Debug)]
struct Cgroup {
    dir: PathBuf,
    procs: File,
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(e) = remove_cgroup(&self.dir) {
            tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot remove the execution's cgroup");
        }
    }
}

/// A cgroup v1 group of an execution (pids or memory); removed when the last
/// handle goes (its processes are gone by then: the v2 cgroup and the
/// process groups are killed first).
#[derive(Debug)]
struct V1Group {
    dir: PathBuf,
    procs: File,
}

impl V1Group {
    fn create(root: &Path, name: &str, limit_file: &str, value: u64) -> io::Result<V1Group> {
        let dir = root.join(name);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        std::fs::write(dir.join(limit_file), value.to_string())?;
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        Ok(V1Group { dir, procs })
    }

    /// Whether the kernel OOM-killed a process of this (memory) group.
    fn oom_killed(&self) -> bool {
        std::fs::read_to_string(self.dir.join("memory.oom_control"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }
}

impl Drop for V1Group {
    fn drop(&mut self) {
        let deadline = Instant::now() + CGROUP_EMPTY_TIMEOUT;
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(e) if Instant::now() > deadline => {
                    tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot remove the execution's cgroup");
                    return;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// Containment of one execution; every process it spawns goes through
/// [`Scope::apply`].
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pid_namespace: bool,
    cgroup: Option<Arc<Cgroup>>,
    /// cgroup v1 groups holding the execution's limits.
    limited: Vec<Arc<V1Group>>,
}

impl Scope {
    /// The execution's cgroup directory, if it has one.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(|c| c.dir.as_path())
    }

    /// Whether the kernel killed a process of the execution for memory.
    pub fn oom_killed(&self) -> bool {
        let v2 = self.cgroup.as_ref().is_some_and(|c| {
            std::fs::read_to_string(c.dir.join("memory.events"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok())
                })
                .is_some_and(|n| n > 0)
        });
        v2 || self.limited.iter().any(|g| g.oom_killed())
    }

    /// Makes `cmd` start contained (see the module docs).
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        let hook = self.pre_exec_hook();
        // SAFETY: the hook only makes async-signal-safe system calls and
        // touches no memory shared with other threads (see `contain`).
        unsafe {
            cmd.pre_exec(hook);
        }
    }

    /// The cgroup v1 `cgroup.procs` descriptors the child joins (at most 2).
    fn v1_fds(&self) -> [i32; 2] {
        let mut fds = [-1; 2];
        for (slot, group) in fds.iter_mut().zip(&self.limited) {
            *slot = group.procs.as_raw_fd();
        }
        fds
    }

    fn apply_std(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let hook = self.pre_exec_hook();
        // SAFETY: as in `apply`.
        unsafe {
            cmd.pre_exec(hook);
        }
    }

    fn pre_exec_hook(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        let cgroup = self.cgroup.clone();
        let limited = self.limited.clone();
        let v1 = self.v1_fds();
        let pid_namespace = self.pid_namespace;
        // SAFETY: getpid has no preconditions.
        let worker = unsafe { libc::getpid() };
        move || {
            let _keep = &limited;
            let fd = cgroup.as_ref().map_or(-1, |c| c.procs.as_raw_fd());
            for fd in v1 {
                // SAFETY: write(2) of a constant on a descriptor this child owns.
                if fd >= 0 && unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // SAFETY: runs in the forked child before exec (see `contain`).
            unsafe { contain(fd, worker, pid_namespace) }
        }
    }

    /// Kills every process in the execution's cgroup, if it has one, and
    /// waits until it is empty.
    pub fn kill(&self) {
        if let Some(cgroup) = &self.cgroup
            && let Err(e) = kill_cgroup(&cgroup.dir)
        {
            tracing::warn!(cgroup = %cgroup.dir.display(), error = %e, "cannot kill the execution's cgroup");
        }
    }
}

/// Kills every process of the cgroup at `dir`, waits until it is empty, and
/// removes it. A missing cgroup is fine.
pub(crate) fn remove_cgroup(dir: &Path) -> io::Result<()> {
    match kill_cgroup(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `cgroup.kill` and waits for `cgroup.events` to say `populated 0`.
fn kill_cgroup(dir: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))?
        .write_all(b"1")?;
    let deadline = Instant::now() + CGROUP_EMPTY_TIMEOUT;
    loop {
        let events = std::fs::read_to_string(dir.join("cgroup.events"))?;
        if events.lines().any(|l| l == "populated 0") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "processes of cgroup {} still alive {CGROUP_EMPTY_TIMEOUT:?} after cgroup.kill",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The cgroup v2 directory of this process, from `/proc/self/mountinfo` and
/// `/proc/self/cgroup`.
fn cgroup_root() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(path.trim_start_matches('/')))
}

/// This process's directory in the cgroup v1 hierarchy of `controller`
/// (mounted at `/sys/fs/cgroup/<controller>`), if there is one.
fn v1_root(controller: &str) -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })?;
    let root = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'));
    root.is_dir().then_some(root)
}

/// Whether a child group with `limit_file` can be made under `root` (v1).
fn probe_v1(root: &Path, limit_file: &str) -> bool {
    let probe = root.join(format!("{CGROUP_PREFIX}probe-{}", std::process::id()));
    if std::fs::create_dir(&probe).is_err() {
        return false;
    }
    let usable = probe.join(limit_file).exists();
    let _ = std::fs::remove_dir(&probe);
    usable
}

/// Whether a child cgroup with `cgroup.kill` can be made under `root`.
fn probe_cgroup(root: &Path) -> bool {
    let probe = root.join(format!("{CGROUP_PREFIX}probe-{}", std::process::id()));
    if std::fs::create_dir(&probe).is_err() {
        return false;
    }
    let usable = probe.join("cgroup.kill").exists()
        && std::fs::OpenOptions::new()
            .write(true)
            .open(probe.join("cgroup.procs"))
            .is_ok();
    let _ = std::fs::remove_dir(&probe);
    usable
}

const PROC: &CStr = c"proc";
const PROC_DIR: &CStr = c"/proc";
const ROOT_DIR: &CStr = c"/";

/// Runs in the child between fork and exec; may only make async-signal-safe
/// calls (no allocation, no locks).
///
/// 1. joins the execution's cgroup (`procs_fd`, opened by the worker);
/// 2. asks for SIGKILL when the worker dies, and exits if it already has;
/// 3. with `pid_namespace`: unshares the PID and mount namespaces and forks
///    twice. This process stays outside as the keeper ([`keep`]); its child
///    is PID 1 of the namespace ([`init`]) with private mounts and its own
///    `/proc`; the grandchild (PID 2) returns to exec the program, so the
///    program keeps ordinary signal semantics (a PID 1 ignores signals it
///    has no handler for). Neither keeper nor init ever returns.
unsafe fn contain(procs_fd: i32, worker: libc::pid_t, pid_namespace: bool) -> io::Result<()> {
    // SAFETY (whole function): raw system calls on values owned by this
    // child; no allocation.
    unsafe {
        if procs_fd >= 0 && libc::write(procs_fd, b"0".as_ptr().cast(), 1) < 0 {
            return Err(io::Error::last_os_error());
        }
        die_with_parent(worker)?;
        if !pid_namespace {
            return Ok(());
        }
        if libc::unshare(libc::CLONE_NEWPID | libc::CLONE_NEWNS) != 0 {
            return Err(io::Error::last_os_error());
        }
        // keeper → init: its end closing means the keeper is gone.
        let alive = pipe()?;
        // init → keeper: the program's raw wait status.
        let status = pipe()?;
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                libc::close(alive[1]);
                libc::close(status[0]);
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    libc::_exit(127);
                }
                let mut poll = libc::pollfd {
                    fd: alive[0],
                    events: libc::POLLIN,
                    revents: 0,
                };
                if libc::poll(&mut poll, 1, 0) != 0 {
                    // The keeper's end is closed: it died before we could die with it.
                    libc::_exit(127);
                }
                // Mounts stay private to the task; its /proc shows its own namespace.
                if libc::mount(
                    std::ptr::null(),
                    ROOT_DIR.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0
                {
                    libc::mount(
                        PROC.as_ptr(),
                        PROC_DIR.as_ptr(),
                        PROC.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    );
                }
                match libc::fork() {
                    -1 => libc::_exit(127),
                    0 => {
                        libc::close(alive[0]);
                        libc::close(status[1]);
                        Ok(())
                    }
                    program => init(program, status[1]),
                }
            }
            init_pid => {
                libc::close(alive[0]);
                libc::close(status[1]);
                keep(init_pid, alive[1], status[0])
            }
        }
    }
}

/// A close-on-exec pipe.
unsafe fn pipe() -> io::Result<[i32; 2]> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fds)
}

/// Sets `PR_SET_PDEATHSIG` to SIGKILL; exits if the parent (`parent`) is
/// already gone.
unsafe fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain system calls.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(128 + libc::SIGKILL);
        }
    }
    Ok(())
}

/// Default dispositions, except the polite stop signals, which the program
/// receives itself through its process group.
unsafe fn quiet_signals() {
    // SAFETY: signal(2) on this process.
    unsafe {
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

/// PID 1 of the namespace: reaps every orphan until the program (`program`)
/// ends, reports its wait status on `status_fd` and exits, which makes the
/// kernel kill whatever is left in the namespace. Never returns.
unsafe fn init(program: libc::pid_t, status_fd: i32) -> ! {
    // SAFETY: plain system calls; no allocation.
    unsafe {
        close_all_except(&[status_fd]);
        quiet_signals();
        let mut status = 0;
        loop {
            let r = libc::waitpid(-1, &mut status, 0);
            if r == program {
                break;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        let bytes = status.to_ne_bytes();
        libc::write(status_fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
    }
}

/// The keeper, outside the namespace and parent of its init (`init_pid`):
/// holds no descriptor but stdio and its two pipe ends (inherited sockets
/// and other tasks' pipes must not stay open here: close-on-exec never
/// happens in this process), ignores the polite stop signals, waits for
/// init and ends exactly as the program did. Never returns.
unsafe fn keep(init_pid: libc::pid_t, alive_fd: i32, status_fd: i32) -> ! {
    // SAFETY: plain system calls; no allocation.
    unsafe {
        close_all_except(&[alive_fd.min(status_fd), alive_fd.max(status_fd)]);
        quiet_signals();
        let mut status = 0;
        loop {
            let r = libc::waitpid(init_pid, &mut status, 0);
            if r == init_pid {
                break;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        // The program's own status, when init lived to report it.
        let mut bytes = [0u8; 4];
        if libc::read(status_fd, bytes.as_mut_ptr().cast(), bytes.len()) == 4 {
            status = i32::from_ne_bytes(bytes);
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let sig = libc::WTERMSIG(status);
        libc::signal(sig, libc::SIG_DFL);
        libc::kill(libc::getpid(), sig);
        libc::_exit(128 + sig)
    }
}

/// Closes every descriptor from 3 on except those in `keep` (ascending).
unsafe fn close_all_except(keep: &[i32]) {
    // SAFETY: close_range/close on descriptors of this process only.
    unsafe {
        let mut lo = 3;
        for hi in keep.iter().copied().chain([i32::MAX]) {
            if hi > lo {
                let last = if hi == i32::MAX {
                    u32::MAX
                } else {
                    (hi - 1) as u32
                };
                if libc::syscall(libc::SYS_close_range, lo as libc::c_uint, last, 0) != 0 {
                    // Kernels before 5.9: one by one.
                    for fd in lo..hi.min(4096) {
                        libc::close(fd);
                    }
                }
            }
            lo = hi.saturating_add(1);
        }
    }
}
