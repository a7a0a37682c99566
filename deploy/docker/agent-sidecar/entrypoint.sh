#!/bin/sh
# /agent/entrypoint.sh of the Hangar agent sidecar.
#
# A stock oz-agent-worker mounts this image's file system at /agent (Docker:
# exported into a volume; Kubernetes: copied into an emptyDir by an init
# container) and starts every task as
#   /agent/entrypoint.sh agent run --task-id … --sandboxed --server-root-url …
# so this runs the hangar binary next to it with those arguments.
exec "$(dirname "$0")/hangar" "$@"
