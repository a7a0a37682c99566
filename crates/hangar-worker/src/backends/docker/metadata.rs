//! `full` network policy: task containers may reach anything except the
//! cloud metadata service (169.254.169.254, AWS's fd00:ec2::254), whose
//! instance credentials would let a task act as the host (issue 11, item 6).
//!
//! On start the backend inserts, once per host bridge of the task network,
//! `REJECT` rules for those addresses in `DOCKER-USER` (routed traffic) and
//! `INPUT` (a metadata proxy on this host), each tagged with the comment
//! [`RULE_COMMENT`]. They are checked with `-C` before they are inserted, so
//! several workers on one host share them, and stay after the worker stops
//! (removing them would unprotect other workers' containers). Without
//! `iptables` or `CAP_NET_ADMIN` the worker does not start unless
//! `block_metadata_address: false` is configured. `network: host` (an
//! explicit relaxation) cannot be filtered; the worker warns.

use crate::backends::BackendError;
use hangar_protocol::repository::{METADATA_V4, METADATA_V6};
use hangar_protocol::worker::FailureReason;

/// Comment on every metadata rule.
pub const RULE_COMMENT: &str = "hangar-metadata";

/// The host interface of Docker network `network` (`None`: the default bridge).
async fn bridge_of(client: &bollard::Docker, network: &str) -> Result<String, String> {
    let info = client
        .inspect_network(
            network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .map_err(|e| format!("cannot inspect Docker network {network}: {e}"))?;
    if info.driver.as_deref() != Some("bridge") {
        return Err(format!(
            "Docker network {network} uses the {} driver; only bridge networks can be filtered",
            info.driver.as_deref().unwrap_or("unknown")
        ));
    }
    if let Some(name) = info
        .options
        .as_ref()
        .and_then(|o| o.get("com.docker.network.bridge.name"))
    {
        return Ok(name.clone());
    }
    let id = info.id.unwrap_or_default();
    Ok(format!("br-{}", id.get(..12).unwrap_or(&id)))
}

/// The rules for `bridge`: (program, chain, rule without `-I`/`-C`).
pub fn rules(bridge: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    for (program, dest) in [
        ("iptables", format!("{METADATA_V4}/32")),
        ("ip6tables", format!("{METADATA_V6}/128")),
    ] {
        for chain in ["DOCKER-USER", "INPUT"] {
            out.push((
                program,
                [
                    chain,
                    "-i",
                    bridge,
                    "-d",
                    &dest,
                    "-m",
                    "comment",
                    "--comment",
                    RULE_COMMENT,
                    "-j",
                    "REJECT",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            ));
        }
    }
    out
}

async fn run(program: &str, args: &[String]) -> Result<(), String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Installs the rules for the task network (`None` = Docker's default bridge).
pub(super) async fn block(
    client: &bollard::Docker,
    worker_id: &str,
    network: Option<&str>,
) -> Result<(), BackendError> {
    let network = network.unwrap_or("bridge");
    if matches!(network, "none") {
        return Ok(());
    }
    let fail = |why: String| {
        BackendError::new(
            FailureReason::ContainerCreate,
            format!(
                "the full network policy blocks the cloud metadata address, and the worker cannot \
                 ({why}); run the worker with iptables and CAP_NET_ADMIN, or set \
                 `block_metadata_address: false` in backend.docker (then tasks can read this \
                 host's instance credentials, if it has any)"
            ),
        )
    };
    if network == "host" {
        // Already an explicit relaxation of the sandbox; say what it costs.
        tracing::warn!(
            worker_id,
            "network: host: task containers can reach the cloud metadata address (no bridge to filter)"
        );
        return Ok(());
    }
    let bridge = bridge_of(client, network).await.map_err(fail)?;
    for (program, rule) in rules(&bridge) {
        let mut check = vec!["-w".to_owned(), "-C".to_owned()];
        check.extend(rule.iter().cloned());
        if run(program, &check).await.is_ok() {
            continue;
        }
        let mut insert = vec!["-w".to_owned(), "-I".to_owned()];
        insert.extend(rule.iter().cloned());
        match run(program, &insert).await {
            Ok(()) => {}
            // IPv6 may be off on this host (no ip6tables, no such chain):
            // then there is no IPv6 route to the metadata address either.
            Err(e) if program == "ip6tables" => {
                tracing::warn!(worker_id, bridge = %bridge, error = %e, "cannot block the IPv6 metadata address");
            }
            Err(e) => return Err(fail(e)),
        }
    }
    tracing::info!(worker_id, network, bridge = %bridge, "cloud metadata address blocked for task containers");
    Ok(())
}
