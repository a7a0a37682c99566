//! The process group of one spawned process (the agent or a hook), and
//! how it is stopped: SIGTERM to the whole group, SIGKILL after the grace.

use super::containment::Scope;
use super::sandbox;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::time::Duration;
use tokio::process::Child;

/// A process group; dropping it SIGKILLs whatever is left in it, so even an
/// aborted task leaves nothing running.
#[derive(Debug)]
pub(super) struct ProcessGroup {
    /// The spawned process's own group (bubblewrap's, when sandboxed).
    pub(super) pgid: Pid,
    /// The sandbox's session group: its init and every task process.
    pub(super) sandbox: Option<Pid>,
    pub(super) armed: bool,
    /// The execution's containment: its cgroup is killed with the group.
    pub(super) scope: Option<Scope>,
}

impl ProcessGroup {
    /// Sends `sig` to every process of the group (of a sandbox: to the task
    /// processes; its init ignores polite signals, bubblewrap outside gets
    /// only SIGKILL); false when none is left.
    pub(super) fn signal(&self, sig: Signal) -> bool {
        let Some(sandbox) = self.sandbox else {
            return Self::signal_group(self.pgid, sig);
        };
        let inside = Self::signal_group(sandbox, sig);
        if sig == Signal::SIGKILL {
            return Self::signal_group(self.pgid, sig) || inside;
        }
        inside
    }

    fn signal_group(pgid: Pid, sig: Signal) -> bool {
        match killpg(pgid, sig) {
            Ok(()) => true,
            Err(Errno::ESRCH) => false,
            Err(e) => {
                tracing::warn!(pgid = pgid.as_raw(), signal = %sig, error = %e, "cannot signal process group");
                false
            }
        }
    }

    /// SIGKILLs stragglers (the group, and the execution's cgroup: nothing
    /// else of the execution runs while no leader does) and stops guarding.
    pub(super) fn kill_and_disarm(&mut self) {
        if self.signal(Signal::SIGKILL) {
            tracing::debug!(
                pgid = self.pgid.as_raw(),
                "killed processes left in the task's group"
            );
        }
        if let Some(scope) = &self.scope {
            scope.kill();
        }
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::SIGKILL);
            if let Some(scope) = &self.scope {
                scope.kill();
            }
        }
    }
}

/// A spawned child leading its own process group.
pub(super) struct Spawned {
    pub(super) child: Child,
    pub(super) group: ProcessGroup,
    /// The sandbox's network listeners, as long as the process lives.
    pub(super) _listeners: Option<sandbox::Listeners>,
}

impl Spawned {
    /// SIGTERM to the group, SIGKILL after `grace`; returns how the leader ended.
    pub(super) async fn terminate(
        &mut self,
        grace: Duration,
    ) -> std::io::Result<std::process::ExitStatus> {
        self.group.signal(Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_elapsed) => {
                tracing::info!(
                    pgid = self.group.pgid.as_raw(),
                    ?grace,
                    "process group ignored SIGTERM; sending SIGKILL"
                );
                self.group.signal(Signal::SIGKILL);
                self.child.wait().await
            }
        };
        self.group.kill_and_disarm();
        status
    }
}
