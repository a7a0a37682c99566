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

use crate::backends::sandbox::egress;
use crate::config::SandboxMount;
use hangar_protocol::worker::NetworkPolicy;
use nix::libc;
use nix::sys::memfd::{MFdFlags, memfd_create};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The uid and gid a root worker runs tasks as (`nobody`).
pub(crate) const TASK_USER: (u32, u32) = (65534, 65534);
/// Port of the egress proxy on the sandbox's loopback (allowlist policy).
const PROXY_PORT: u16 = 3128;
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

/// A task's network in the sandbox.
#[derive(Debug, Clone)]
pub(crate) enum Network {
    /// The host's network (policy `full`).
    Host,
    /// Loopback only, with the server relay (and proxy) inside.
    Isolated(Arc<Isolated>),
}

/// The listeners of an isolated network, and what the task is told.
#[derive(Debug)]
pub(crate) struct Isolated {
    /// Where the relay connects, as the worker reaches the server.
    server: (String, u16),
    /// The allowlist proxy, if the policy is `allowlist`.
    proxy: Option<ProxyPolicy>,
    /// `/etc/hosts` inside.
    hosts_file: String,
    /// `--server-url` for the agent.
    pub agent_server_url: String,
    /// Proxy variables for the task.
    pub env: Vec<(String, String)>,
}

#[derive(Debug)]
struct ProxyPolicy {
    hosts: Vec<String>,
    allow_internal: Vec<String>,
}

impl Network {
    /// The network of a task with `policy`, whose worker reaches the server at `server_url`.
    pub fn for_policy(
        policy: &NetworkPolicy,
        server_url: &str,
        allow_internal: &[String],
    ) -> Result<Network, String> {
        let proxy = match policy {
            NetworkPolicy::Full => return Ok(Network::Host),
            NetworkPolicy::None => None,
            NetworkPolicy::Allowlist { hosts } => Some(ProxyPolicy {
                hosts: hosts.clone(),
                allow_internal: allow_internal.to_vec(),
            }),
        };
        let url =
            url::Url::parse(server_url).map_err(|e| format!("server URL {server_url:?}: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("server URL {server_url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("server URL {server_url:?} has no port"))?;
        // Inside, the server is on loopback at its own port: an IP literal
        // becomes 127.0.0.1, a name (TLS checks it) maps there in /etc/hosts.
        let mut agent_url = url.clone();
        let mut names = vec!["localhost".to_owned()];
        if host.parse::<IpAddr>().is_ok() {
            agent_url
                .set_host(Some("127.0.0.1"))
                .map_err(|e| format!("cannot build the agent's server URL: {e}"))?;
        } else if host != "localhost" {
            names.push(host.clone());
        }
        let hosts_file = format!("127.0.0.1\t{}\n::1\tlocalhost\n", names.join(" "));
        let proxy_port = proxy_port_beside(port);
        let mut env = Vec::new();
        if proxy.is_some() {
            let proxy_url = format!("http://127.0.0.1:{proxy_port}");
            let no_proxy = format!("localhost,127.0.0.1,{host}");
            for (k, v) in [
                ("HTTP_PROXY", &proxy_url),
                ("HTTPS_PROXY", &proxy_url),
                ("http_proxy", &proxy_url),
                ("https_proxy", &proxy_url),
                ("NO_PROXY", &no_proxy),
                ("no_proxy", &no_proxy),
            ] {
                env.push((k.to_owned(), v.clone()));
            }
        }
        Ok(Network::Isolated(Arc::new(Isolated {
            server: (host, port),
            proxy,
            hosts_file,
            agent_server_url: agent_url.as_str().trim_end_matches('/').to_owned(),
            env,
        })))
    }
}

impl Isolated {
    fn proxy_port(&self) -> u16 {
        proxy_port_beside(self.server.1)
    }
}

/// The proxy's port on the sandbox's loopback, clear of the server relay's.
fn proxy_port_beside(server_port: u16) -> u16 {
    if server_port == PROXY_PORT {
        PROXY_PORT + 1
    } else {
        PROXY_PORT
    }
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

/// Listener tasks of an isolated network; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Listeners {
    stop: CancellationToken,
    _tasks: JoinSet<()>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.cancel();
    }
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
        let isolated = match launch.network {
            Network::Host => None,
            Network::Isolated(n) => Some(n.clone()),
        };
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
        let mut child_fds = Vec::new();
        if let Some(n) = &isolated
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
        let options = std::mem::take(&mut a);
        a.extend([
            "--".to_owned(),
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            SHIM.to_owned(),
            "hangar-sandbox".to_owned(),
        ]);
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
                let listeners = listen_inside(group, n).await?;
                File::from(block).write_all(b"1")?;
                Some(listeners)
            }
            _ => None,
        };
        Ok(Started { group, listeners })
    }
}

/// Opens the relay (and proxy) listeners on the loopback of the network
/// namespace of `pid`, from a thread that enters it, and serves them.
async fn listen_inside(pid: i32, net: &Arc<Isolated>) -> io::Result<Listeners> {
    let relay_port = net.server.1;
    let proxy_port = net.proxy.as_ref().map(|_| net.proxy_port());
    let ports: Vec<u16> = std::iter::once(relay_port).chain(proxy_port).collect();
    let mut listeners = tokio::task::spawn_blocking(move || listeners_in_retrying(pid, &ports))
        .await
        .map_err(io::Error::other)?
        .map_err(|e| {
            io::Error::other(format!(
                "cannot open the server relay in the task's network namespace: {e}"
            ))
        })?
        .into_iter();
    let relay = listeners
        .next()
        .ok_or_else(|| io::Error::other("no relay listener"))?;
    let proxy = listeners.next();
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(egress::serve_relay(
        tokio::net::TcpListener::from_std(relay)?,
        net.server.clone(),
        stop.clone(),
    ));
    if let (Some(listener), Some(policy)) = (proxy, &net.proxy) {
        tasks.spawn(egress::serve_proxy(
            tokio::net::TcpListener::from_std(listener)?,
            &policy.hosts,
            HashMap::new(),
            &policy.allow_internal,
            stop.clone(),
        ));
    }
    Ok(Listeners {
        stop,
        _tasks: tasks,
    })
}

/// [`listeners_in`], retried briefly when joining is refused (EPERM): a
/// worker that is not root sometimes reaches the sandbox while bubblewrap
/// is still setting up its namespaces (seen about one start in five).
fn listeners_in_retrying(pid: i32, ports: &[u16]) -> io::Result<Vec<std::net::TcpListener>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match listeners_in(pid, ports) {
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// Opens TCP listeners on `127.0.0.1:<port>` for each of `ports` inside the
/// network namespace of `pid`, joining its user namespace first when it has
/// its own (the sandbox of a worker that is not root). A multithreaded
/// process cannot join a user namespace, so a forked child does it and
/// hands the listening sockets back over a socket pair (`SCM_RIGHTS`).
fn listeners_in(pid: i32, ports: &[u16]) -> io::Result<Vec<std::net::TcpListener>> {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::MetadataExt;
    const MAX: usize = 4;
    if ports.is_empty() || ports.len() > MAX {
        return Err(io::Error::other("between 1 and 4 listeners"));
    }
    let net = File::open(format!("/proc/{pid}/ns/net"))?;
    // The user namespace to join is the one that owns the network
    // namespace, not the one the sandbox's process is in now: bubblewrap
    // may move it into a nested user namespace, from which the network
    // namespace's owner is out of reach (setns fails with EPERM).
    // NS_GET_USERNS (ioctl_ns(2)) names the owner without that race.
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    // SAFETY: ioctl_ns(2) on a namespace descriptor we own; it answers a new descriptor.
    let owner = unsafe { libc::ioctl(net.as_raw_fd(), NS_GET_USERNS as _) };
    if owner < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and is owned by no one else.
    let owner = File::from(unsafe { OwnedFd::from_raw_fd(owner) });
    let user = if owner.metadata()?.ino() != std::fs::metadata("/proc/self/ns/user")?.ino() {
        // bubblewrap reports its init before it has written the
        // namespace's uid map; joining before that is refused (EPERM).
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while std::fs::read_to_string(format!("/proc/{pid}/uid_map"))?
            .trim()
            .is_empty()
        {
            if std::time::Instant::now() > deadline {
                return Err(io::Error::other(
                    "the sandbox's user namespace got no uid map",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Some(owner)
    } else {
        None
    };
    let mut pair = [-1; 2];
    // SAFETY: socketpair(2) fills the two descriptors.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (ours, child_end) =
        unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    // Everything the child uses is prepared here: it may only make raw calls.
    let mut addrs = [libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }; MAX];
    for (addr, port) in addrs.iter_mut().zip(ports) {
        addr.sin_port = port.to_be();
    }
    let n = ports.len();
    let user_fd = user.as_ref().map_or(-1, |f| f.as_raw_fd());
    let (net_fd, sock) = (net.as_raw_fd(), child_end.as_raw_fd());
    // SAFETY: the child makes only async-signal-safe system calls and exits.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: see above.
        0 => unsafe { open_in_namespace(user_fd, net_fd, sock, &addrs[..n]) },
        child => {
            drop(child_end);
            let received = receive_fds(ours.as_raw_fd(), n);
            let mut status = 0;
            // SAFETY: reaps the child forked above.
            unsafe { libc::waitpid(child, &mut status, 0) };
            received?
                .into_iter()
                .map(|fd| {
                    // SAFETY: the descriptor came to this process by SCM_RIGHTS.
                    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
                    listener.set_nonblocking(true)?;
                    Ok(listener)
                })
                .collect()
        }
    }
}

/// `n` descriptors sent with `SCM_RIGHTS` on `sock`, or the errno the
/// sender reported instead.
fn receive_fds(sock: RawFd, n: usize) -> io::Result<Vec<RawFd>> {
    let mut data = [0u8; 4];
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zero is a valid starting value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers for the whole call.
    if unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walks the control buffer the kernel filled, with its macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                let first = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(first.add(i).read_unaligned());
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if fds.len() == n {
        Ok(fds)
    } else {
        for fd in fds {
            // SAFETY: closes descriptors received above and owned by no one.
            unsafe { libc::close(fd) };
        }
        Err(io::Error::from_raw_os_error(i32::from_ne_bytes(data)))
    }
}

/// The forked child of [`listeners_in`]: joins the namespaces, opens the
/// listeners and sends them on `sock` (or its errno). Never returns.
unsafe fn open_in_namespace(
    user_fd: RawFd,
    net_fd: RawFd,
    sock: RawFd,
    addrs: &[libc::sockaddr_in],
) -> ! {
    // SAFETY (whole function): raw system calls on this child's own state.
    unsafe {
        let fail = || -> ! {
            let errno = (*libc::__errno_location()).to_ne_bytes();
            libc::send(sock, errno.as_ptr().cast(), errno.len(), 0);
            libc::_exit(1)
        };
        if user_fd >= 0 && libc::setns(user_fd, libc::CLONE_NEWUSER) != 0 {
            fail();
        }
        if libc::setns(net_fd, libc::CLONE_NEWNET) != 0 {
            fail();
        }
        let mut fds = [-1i32; 4];
        for (fd, addr) in fds.iter_mut().zip(addrs) {
            let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if s < 0 {
                fail();
            }
            let one: libc::c_int = 1;
            libc::setsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if libc::bind(
                s,
                (addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) != 0
                || libc::listen(s, 128) != 0
            {
                fail();
            }
            *fd = s;
        }
        let n = addrs.len();
        let mut data = [0u8; 4];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN((n * std::mem::size_of::<RawFd>()) as u32) as usize;
        let out = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, fd) in fds.iter().take(n).enumerate() {
            out.add(i).write_unaligned(*fd);
        }
        if libc::sendmsg(sock, &msg, 0) < 0 {
            fail();
        }
        libc::_exit(0)
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

    #[test]
    fn isolated_network_points_the_agent_at_loopback() {
        let Network::Isolated(n) = Network::for_policy(
            &NetworkPolicy::Allowlist {
                hosts: vec!["pypi.org".into()],
            },
            "http://10.0.0.5:7420",
            &[],
        )
        .unwrap() else {
            panic!("isolated expected");
        };
        assert_eq!(n.agent_server_url, "http://127.0.0.1:7420");
        assert_eq!(n.server, ("10.0.0.5".to_owned(), 7420));
        assert!(
            n.env
                .iter()
                .any(|(k, v)| k == "HTTPS_PROXY" && v == "http://127.0.0.1:3128")
        );
        let Network::Isolated(named) =
            Network::for_policy(&NetworkPolicy::None, "https://hangar.example.com", &[]).unwrap()
        else {
            panic!("isolated expected");
        };
        assert_eq!(named.agent_server_url, "https://hangar.example.com");
        assert!(named.hosts_file.contains("hangar.example.com"));
        assert!(named.env.is_empty());
        assert!(matches!(
            Network::for_policy(&NetworkPolicy::Full, "http://x", &[]).unwrap(),
            Network::Host
        ));
    }
}
