//! The network of a sandbox whose policy is not `full`: loopback only, with
//! the server relay (and, for allowlists, the egress proxy) listening
//! inside, opened by a short-lived child that joins the sandbox's
//! namespaces (see the module above).

// Joining namespaces from a forked child must be raw system calls.
#![allow(unsafe_code)]

use super::START_TIMEOUT;
use crate::backends::sandbox::egress;
use hangar_protocol::worker::NetworkPolicy;
use nix::libc;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The proxy's port on the sandbox's loopback (another when the server uses it).
const PROXY_PORT: u16 = 3128;

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
    pub(super) server: (String, u16),
    /// The allowlist proxy, if the policy is `allowlist`.
    pub(super) proxy: Option<ProxyPolicy>,
    /// `/etc/hosts` inside.
    pub(super) hosts_file: String,
    /// `--server-url` for the agent.
    pub agent_server_url: String,
    /// Proxy variables for the task.
    pub env: Vec<(String, String)>,
}

#[derive(Debug)]
pub(crate) struct ProxyPolicy {
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

/// Opens the relay (and proxy) listeners on the loopback of the network
/// namespace of `pid`, from a thread that enters it, and serves them.
pub(super) async fn listen_inside(pid: i32, net: &Arc<Isolated>) -> io::Result<Listeners> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
