//! Images before a container starts: invalid references, pull policies,
//! failed pulls with their back-off, and the `Pulled` Events.

use super::spec::full_reference;
use super::{CState, FOREVER, PodRun};
use crate::fake_kube::docker;
use crate::fake_kube::store;
use std::time::Duration;

impl PodRun {
    /// Marks container `i` as having an invalid image reference and waits
    /// until the pod is deleted; answers its grace period.
    pub(super) async fn invalid_image(&mut self, i: usize, image: &str) -> i64 {
        let message = format!(
            "Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": invalid reference format"
        );
        self.set_state(
            i,
            CState::Waiting("InvalidImageName".into(), Some(message.clone())),
        );
        self.event(Some(i), true, "InspectFailed", &message);
        self.event(Some(i), true, "Failed", "Error: InvalidImageName");
        self.sleep(FOREVER).await.unwrap_or(0)
    }

    /// Waits until container `i`'s image is present (always when
    /// `scripted`, never when `fail_pull`), going through the failed pulls
    /// and back-offs; `Some(grace)` when the pod is deleted first.
    pub(super) async fn ensure_image(
        &mut self,
        i: usize,
        image: &str,
        policy: &str,
        scripted: bool,
        fail_pull: bool,
    ) -> Option<i64> {
        loop {
            let present = if fail_pull {
                false
            } else if scripted {
                true
            } else {
                docker::image_present(image).await
            };
            if present {
                return None;
            }
            if policy == "Never" {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.set_state(
                    i,
                    CState::Waiting("ErrImageNeverPull".into(), Some(message.clone())),
                );
                self.event(Some(i), true, "ErrImageNeverPull", &message);
                return Some(self.sleep(FOREVER).await.unwrap_or(0));
            }
            if let Some(grace) = self.failed_pull(i, image).await {
                return Some(grace);
            }
        }
    }

    /// One failed pull of container `i`'s image and its back-off;
    /// `Some(grace)` when the pod is deleted meanwhile.
    async fn failed_pull(&mut self, i: usize, image: &str) -> Option<i64> {
        let full = full_reference(image);
        let error = format!(
            "rpc error: code = NotFound desc = failed to pull and unpack image \"{full}\": failed to resolve reference \"{full}\": {full}: not found"
        );
        self.event(
            Some(i),
            false,
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        self.set_state(
            i,
            CState::Waiting("ErrImagePull".into(), Some(error.clone())),
        );
        self.event(
            Some(i),
            true,
            "Failed",
            &format!("Failed to pull image \"{image}\": {error}"),
        );
        self.event(Some(i), true, "Failed", "Error: ErrImagePull");
        if let Some(grace) = self.sleep(Duration::from_millis(300)).await {
            return Some(grace);
        }
        let backoff = format!("Back-off pulling image \"{image}\"");
        self.set_state(
            i,
            CState::Waiting("ImagePullBackOff".into(), Some(backoff.clone())),
        );
        self.event(Some(i), false, "BackOff", &backoff);
        self.event(Some(i), true, "Failed", "Error: ImagePullBackOff");
        self.sleep(Duration::from_secs(1)).await
    }

    /// Records container `i`'s image ID (random when `scripted`) and the
    /// Events of its pull under `policy`.
    pub(super) async fn image_pulled(
        &mut self,
        i: usize,
        image: &str,
        policy: &str,
        scripted: bool,
    ) {
        self.ctrs[i].image_id = if scripted {
            format!("sha256:{}", store::random_hex64())
        } else {
            docker::image_id(image).await.unwrap_or_default()
        };
        if policy == "Always" {
            self.event(
                Some(i),
                false,
                "Pulling",
                &format!("Pulling image \"{image}\""),
            );
            self.event(
                Some(i),
                false,
                "Pulled",
                &format!("Successfully pulled image \"{image}\" in 12ms (12ms including waiting). Image size: 0 bytes."),
            );
        } else {
            self.event(
                Some(i),
                false,
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
        }
    }
}
