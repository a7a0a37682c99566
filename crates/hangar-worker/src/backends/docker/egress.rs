//! Egress allowlist of Docker tasks (`network_policy: allowlist{hosts}`):
//! the network, listeners and firewall rules around the shared proxy and
//! relay of `sandbox::egress` (which the direct backend serves inside its
//! sandbox instead).
//!
//! Per execution the worker creates an **internal** Docker network of its
//! own (no route out of the host: Docker drops forwarded traffic from its
//! bridge) and attaches the task container to it only. On the network's
//! gateway address, which is an address of this host, the worker serves:
//!
//! - an **HTTP proxy** (`CONNECT host:port` and absolute-form `http://` requests)
//!   that connects only to the allowlisted hosts (`name` exactly, `*.suffix`
//!   for any name under `suffix`; IP literals only when listed literally) and
//!   answers `403` to anything else. Host names are resolved by the worker
//!   (`extra_hosts` first), never by the task. The task gets `HTTP_PROXY`,
//!   `HTTPS_PROXY` (both cases), `NO_PROXY` for the server, and no DNS for
//!   outside names (Docker's resolver does not forward on internal networks);
//! - a **server relay**: a TCP relay to the worker's own server URL, which the
//!   agent uses as its `--server-url` (TLS, if any, stays end to end: a server
//!   host name is mapped to the gateway in the container's `/etc/hosts`).
//!
//! The proxy refuses internal destinations unless `egress_allow_internal`
//! lists them (see `sandbox::egress`; issue 11, scenario S11).
//!
//! Internal networks still let a container reach **this host** (through the
//! gateway address, and any other host address, via the INPUT chain). The
//! worker therefore installs, with `iptables`, rules on the network's bridge
//! interface (`hg…`) that accept only the proxy and relay ports and reject
//! everything else; if it cannot (no `iptables`, no `CAP_NET_ADMIN`), the run
//! fails closed unless `egress_host_firewall: false` is configured (explicit
//! relaxation: host services listening on all interfaces stay reachable).
//!
//! Everything (listeners, rules, network) is removed when the execution is
//! cleaned up.

use crate::backends::BackendError;
use crate::backends::sandbox::egress::{
    normalise_host, parse_extra_hosts, serve_proxy, serve_relay,
};
use bollard::models::NetworkCreateRequest;
use hangar_protocol::worker::FailureReason;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Comment on every firewall rule the worker installs.
const RULE_COMMENT: &str = "hangar-egress";

/// A running egress setup of one execution.
#[derive(Debug)]
pub struct Egress {
    /// Docker network the task container is attached to (only).
    pub network: String,
    /// The network's gateway (this host).
    pub gateway: IpAddr,
    /// Port of the HTTP proxy on the gateway.
    pub proxy_port: u16,
    /// Port of the server relay on the gateway.
    pub relay_port: u16,
    /// `--server-url` for the agent (through the relay).
    pub agent_server_url: String,
    /// `/etc/hosts` entries for the container (`name:ip`).
    pub extra_hosts: Vec<String>,
    /// Proxy variables for the task.
    pub env: Vec<(String, String)>,
    firewall: Vec<Vec<String>>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

/// Inputs of [`Egress::start`].
#[derive(Debug, Clone)]
pub struct EgressRequest<'a> {
    /// Worker id (labels, interface name).
    pub worker_id: &'a str,
    /// Run id (label).
    pub task_id: &'a str,
    /// Execution id (names, labels).
    pub execution_id: &'a str,
    /// Allowlisted hosts of the environment.
    pub hosts: &'a [String],
    /// Configured `extra_hosts` (`name:ip`), also used by the proxy's resolver.
    pub extra_hosts: &'a [String],
    /// Configured `egress_allow_internal`: internal hosts the proxy may reach.
    pub allow_internal: &'a [String],
    /// The server as the worker reaches it; the relay connects here.
    pub server_url: &'a str,
    /// Install the host firewall rules (fail closed when impossible).
    pub host_firewall: bool,
}

fn err(message: impl Into<String>) -> BackendError {
    BackendError::new(FailureReason::ContainerCreate, message)
}

/// Network interface name of an execution's egress bridge (≤ 15 bytes).
pub fn bridge_name(worker_id: &str, execution_id: &str) -> String {
    let digest = Sha256::digest(format!("{worker_id}\0{execution_id}").as_bytes());
    format!("hg{}", &hex::encode(digest)[..12])
}

impl Egress {
    /// Creates the internal network, the listeners and the firewall rules.
    /// On error, whatever was created is removed again.
    pub async fn start(
        client: &bollard::Docker,
        network: String,
        labels: HashMap<String, String>,
        req: EgressRequest<'_>,
    ) -> Result<Egress, BackendError> {
        let hosts = parse_extra_hosts(req.extra_hosts).map_err(err)?;
        let server = url::Url::parse(req.server_url)
            .map_err(|e| err(format!("server URL {:?}: {e}", req.server_url)))?;
        let server_host = server
            .host_str()
            .map(normalise_host)
            .ok_or_else(|| err(format!("server URL {:?} has no host", req.server_url)))?;
        let server_port = server
            .port_or_known_default()
            .ok_or_else(|| err(format!("server URL {:?} has no port", req.server_url)))?;
        let bridge = bridge_name(req.worker_id, req.execution_id);
        let created = client
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                driver: Some("bridge".to_owned()),
                internal: Some(true),
                labels: Some(labels),
                options: Some(HashMap::from([(
                    "com.docker.network.bridge.name".to_owned(),
                    bridge.clone(),
                )])),
                ..Default::default()
            })
            .await
            .map_err(|e| err(format!("cannot create the egress network {network}: {e}")))?;
        tracing::debug!(task_id = %req.task_id, execution_id = %req.execution_id, network = %network, id = ?created.id, bridge = %bridge, "egress network created");
        let mut egress = Egress {
            network: network.clone(),
            gateway: IpAddr::from([0, 0, 0, 0]),
            proxy_port: 0,
            relay_port: 0,
            agent_server_url: String::new(),
            extra_hosts: Vec::new(),
            env: Vec::new(),
            firewall: Vec::new(),
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
        };
        match egress
            .configure(
                client,
                req,
                hosts,
                &server,
                server_host,
                server_port,
                &bridge,
            )
            .await
        {
            Ok(()) => Ok(egress),
            Err(e) => {
                egress.stop(client).await;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn configure(
        &mut self,
        client: &bollard::Docker,
        req: EgressRequest<'_>,
        hosts: HashMap<String, IpAddr>,
        server: &url::Url,
        server_host: String,
        server_port: u16,
        bridge: &str,
    ) -> Result<(), BackendError> {
        let info = client
            .inspect_network(
                &self.network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(|e| err(format!("cannot inspect the egress network: {e}")))?;
        let gateway = info
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway)
            .filter_map(|g| g.split('/').next().and_then(|g| g.parse::<IpAddr>().ok()))
            .find(IpAddr::is_ipv4)
            .ok_or_else(|| err("the egress network has no IPv4 gateway"))?;
        self.gateway = gateway;
        let bind = |what: &'static str| async move {
            TcpListener::bind((gateway, 0)).await.map_err(|e| {
                err(format!(
                    "cannot listen on the egress gateway {gateway} for the {what}: {e}"
                ))
            })
        };
        let proxy = bind("proxy").await?;
        let relay = bind("server relay").await?;
        self.proxy_port = proxy.local_addr().map_err(|e| err(e.to_string()))?.port();
        self.relay_port = relay.local_addr().map_err(|e| err(e.to_string()))?.port();

        if req.host_firewall {
            self.install_firewall(bridge).await.map_err(|e| {
                err(format!(
                    "network_policy allowlist needs host firewall rules on {bridge} and the \
                     worker cannot install them ({e}); run the worker with CAP_NET_ADMIN and \
                     iptables, or set `egress_host_firewall: false` (then the task can reach \
                     services of this host that listen on all interfaces)"
                ))
            })?;
        }

        let proxy_url = self.task_view(server, &server_host, &hosts)?;

        let stop = self.stop.clone();
        self.tasks.spawn(serve_proxy(
            proxy,
            req.hosts,
            hosts,
            req.allow_internal,
            stop.clone(),
        ));
        self.tasks
            .spawn(serve_relay(relay, (server_host, server_port), stop));
        tracing::info!(
            task_id = %req.task_id,
            execution_id = %req.execution_id,
            network = %self.network,
            proxy = %proxy_url,
            server_relay = %self.agent_server_url,
            allow = ?req.hosts,
            "egress allowlist proxy ready"
        );
        Ok(())
    }

    /// What the task is told: the agent's server URL (through the relay),
    /// `/etc/hosts` entries and the proxy variables. Answers the proxy URL.
    fn task_view(
        &mut self,
        server: &url::Url,
        server_host: &str,
        hosts: &HashMap<String, IpAddr>,
    ) -> Result<String, BackendError> {
        let gateway = self.gateway;
        // The relay: the agent's server URL points at it. A host name stays a
        // name (TLS validates it) and is mapped to the gateway.
        let mut agent_url = server.clone();
        let name_is_ip = server_host.parse::<IpAddr>().is_ok();
        let url_host = if name_is_ip {
            gateway.to_string()
        } else {
            self.extra_hosts.push(format!("{server_host}:{gateway}"));
            server_host.to_owned()
        };
        agent_url
            .set_host(Some(&url_host))
            .and_then(|()| {
                agent_url
                    .set_port(Some(self.relay_port))
                    .map_err(|()| url::ParseError::InvalidPort)
            })
            .map_err(|e| err(format!("cannot build the agent's server URL: {e}")))?;
        self.agent_server_url = agent_url.as_str().trim_end_matches('/').to_owned();
        // The task's own names resolve to the proxy's view too (direct use still fails).
        for (name, ip) in hosts {
            self.extra_hosts.push(format!("{name}:{ip}"));
        }

        let proxy_url = format!("http://{gateway}:{}", self.proxy_port);
        let no_proxy = format!("localhost,127.0.0.1,{gateway},{url_host}");
        for (k, v) in [
            ("HTTP_PROXY", &proxy_url),
            ("HTTPS_PROXY", &proxy_url),
            ("http_proxy", &proxy_url),
            ("https_proxy", &proxy_url),
            ("NO_PROXY", &no_proxy),
            ("no_proxy", &no_proxy),
        ] {
            self.env.push((k.to_owned(), v.clone()));
        }

        Ok(proxy_url)
    }

    async fn install_firewall(&mut self, bridge: &str) -> Result<(), String> {
        let gw = self.gateway.to_string();
        let base = |extra: &[&str]| -> Vec<String> {
            let mut r: Vec<String> = ["INPUT", "-i", bridge]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            r.extend(extra.iter().map(|s| (*s).to_owned()));
            r.extend(
                ["-m", "comment", "--comment", RULE_COMMENT]
                    .iter()
                    .map(|s| (*s).to_owned()),
            );
            r
        };
        let proxy = self.proxy_port.to_string();
        let relay = self.relay_port.to_string();
        // Inserted at the top in this order: the accepts end up above the reject.
        let rules = [
            base(&["-j", "REJECT"]),
            base(&["-p", "tcp", "-d", &gw, "--dport", &proxy, "-j", "ACCEPT"]),
            base(&["-p", "tcp", "-d", &gw, "--dport", &relay, "-j", "ACCEPT"]),
        ];
        for rule in rules {
            let mut args = vec!["-w".to_owned(), "-I".to_owned()];
            args.extend(rule.iter().cloned());
            run_iptables(&args).await?;
            self.firewall.push(rule);
        }
        Ok(())
    }

    /// Stops the listeners, removes the firewall rules and the network.
    /// Call after the container is gone (a network with endpoints stays).
    pub async fn stop(&mut self, client: &bollard::Docker) {
        self.stop.cancel();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for rule in self.firewall.drain(..).rev() {
            let mut args = vec!["-w".to_owned(), "-D".to_owned()];
            args.extend(rule);
            if let Err(e) = run_iptables(&args).await {
                tracing::warn!(network = %self.network, error = %e, "cannot remove an egress firewall rule");
            }
        }
        match client.remove_network(&self.network).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                tracing::warn!(network = %self.network, error = %e, "cannot remove the egress network");
            }
        }
    }
}

/// Removes what a crashed worker left of an execution's egress: firewall
/// rules on its bridge (found by comment) and the network (after its container).
pub async fn remove_leftover(
    client: &bollard::Docker,
    worker_id: &str,
    execution_id: &str,
    network: &str,
) {
    let bridge = bridge_name(worker_id, execution_id);
    if let Ok(rules) = run_iptables(&["-w".to_owned(), "-S".to_owned(), "INPUT".to_owned()]).await {
        for line in rules.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ours = words.windows(2).any(|w| w == ["-i", bridge.as_str()])
                && line.contains(RULE_COMMENT);
            if let (true, Some(("-A", rest))) = (ours, words.split_first().map(|(a, r)| (*a, r))) {
                let mut args = vec!["-w".to_owned(), "-D".to_owned()];
                args.extend(rest.iter().map(|w| w.trim_matches('"').to_owned()));
                if let Err(e) = run_iptables(&args).await {
                    tracing::warn!(network, error = %e, "cannot remove a leftover egress rule");
                }
            }
        }
    }
    match client.remove_network(network).await {
        Ok(()) => tracing::info!(network, "removed a leftover egress network"),
        Err(e) => tracing::debug!(network, error = %e, "no leftover egress network removed"),
    }
}

async fn run_iptables(args: &[String]) -> Result<String, String> {
    let out = tokio::process::Command::new("iptables")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run iptables: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "iptables {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_an_interface_name() {
        let b = bridge_name("worker", "exec-1");
        assert!(b.len() <= 15 && b.starts_with("hg"), "{b}");
    }
}
