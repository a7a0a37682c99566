#!/usr/bin/env python3
"""An example dispatcher for Hangar's command backend (standard library only).

The worker runs it as its three commands:

    backend:
      command:
        dispatch_command: python3 /opt/hangar/hangar-dispatch.py dispatch
        cancel_command:   python3 /opt/hangar/hangar-dispatch.py cancel
        status_command:   python3 /opt/hangar/hangar-dispatch.py status
        environment:
          - {name: HANGAR_DISPATCH_MODE, value: docker}    # or local
          - {name: HANGAR_BIN, value: /usr/local/bin/hangar}

dispatch  reads the payload (JSON, version 1) on stdin, starts
          `hangar <base_args>` with the payload's env, detached, and prints
          the task's external id: a container id (docker) or a process id
          (local).
cancel    stops the task named by $HANGAR_EXTERNAL_ID.
status    exits 0 while that task runs, 1 once it has ended.

Modes ($HANGAR_DISPATCH_MODE):
- local:  a process on this host, in its own session, working in
          $HANGAR_DISPATCH_ROOT/<execution_id> (default /tmp/hangar-dispatch).
          For trying the backend out; it is no sandbox.
- docker: `docker run -d` of the payload's docker_image (else
          $HANGAR_DISPATCH_IMAGE) with $HANGAR_BIN mounted read-only at
          /agent/hangar, working in /workspace, on $HANGAR_DISPATCH_NETWORK
          (default host). The env goes through a 0600 --env-file that is
          removed once the container started, so no secret is ever on a
          command line or in `docker inspect`'s Cmd.

Replace the body of these functions with a call to your own scheduler; keep
the contract: secrets (payload["secret_env"]) never on a command line.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile


def fail(message, code=2):
    sys.stderr.write(f"hangar-dispatch: {message}\n")
    sys.exit(code)


def read_payload():
    try:
        payload = json.load(sys.stdin)
    except ValueError as e:
        fail(f"the payload on stdin is not JSON: {e}")
    if payload.get("version") != 1:
        fail(f"payload version {payload.get('version')!r} is not supported (this script reads 1)")
    return payload


def hangar_bin():
    path = os.environ.get("HANGAR_BIN", "hangar")
    if os.sep in path and not os.access(path, os.X_OK):
        fail(f"HANGAR_BIN={path} is not an executable file")
    return path


def dispatch_local(payload):
    root = os.environ.get("HANGAR_DISPATCH_ROOT", "/tmp/hangar-dispatch")
    workdir = os.path.join(root, payload["execution_id"])
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    env["HOME"] = workdir
    env["TMPDIR"] = os.environ.get("TMPDIR", "/tmp")
    env.update(payload["env"])
    log = open(os.path.join(workdir, ".agent.log"), "ab")
    proc = subprocess.Popen(
        [hangar_bin(), *payload["base_args"]],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    return str(proc.pid)


def dispatch_docker(payload):
    image = payload.get("docker_image") or os.environ.get("HANGAR_DISPATCH_IMAGE")
    if not image:
        fail("the environment names no image: set HANGAR_DISPATCH_IMAGE")
    network = os.environ.get("HANGAR_DISPATCH_NETWORK", "host")
    name = "hangar-cmd-" + payload["execution_id"]
    fd, env_file = tempfile.mkstemp(prefix="hangar-env-")
    try:
        with os.fdopen(fd, "w") as f:
            for key, value in payload["env"].items():
                if "\n" in value:
                    fail(f"variable {key} holds a newline, which --env-file cannot carry")
                f.write(f"{key}={value}\n")
        cmd = ["docker", "run", "-d", "--name", name, "--network", network,
               "--label", "dev.hangar.dispatch=" + payload["run_id"],
               "-v", hangar_bin() + ":/agent/hangar:ro", "-w", "/workspace",
               "--env-file", env_file]
        shape = payload.get("instance_shape") or {}
        if shape.get("vcpus"):
            cmd += ["--cpus", str(shape["vcpus"])]
        if shape.get("memory_gb"):
            cmd += ["--memory", f"{shape['memory_gb']}g"]
        cmd += ["--", image, "/agent/hangar", *payload["base_args"]]
        out = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        os.unlink(env_file)
    if out.returncode != 0:
        fail(f"docker run failed: {out.stderr.strip()}", out.returncode)
    return out.stdout.strip()[:64]


def external_id():
    value = os.environ.get("HANGAR_EXTERNAL_ID", "")
    if not value:
        fail("HANGAR_EXTERNAL_ID is not set")
    return value


def cancel(mode):
    task = external_id()
    if mode == "docker":
        out = subprocess.run(["docker", "rm", "-f", "--", task], capture_output=True, text=True)
        if out.returncode != 0 and "No such container" not in out.stderr:
            fail(f"docker rm failed: {out.stderr.strip()}", out.returncode)
        return
    try:
        os.killpg(int(task), signal.SIGTERM)
    except ProcessLookupError:
        pass


def running(mode):
    task = external_id()
    if mode == "docker":
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", "--", task],
                             capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == "true"
    try:
        with open(f"/proc/{int(task)}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ValueError, IndexError):
        return False


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ("dispatch", "cancel", "status"):
        fail("usage: hangar-dispatch.py dispatch|cancel|status")
    mode = os.environ.get("HANGAR_DISPATCH_MODE", "local")
    if mode not in ("local", "docker"):
        fail(f"HANGAR_DISPATCH_MODE={mode!r}: use local or docker")
    what = sys.argv[1]
    if what == "dispatch":
        payload = read_payload()
        print(dispatch_docker(payload) if mode == "docker" else dispatch_local(payload))
    elif what == "cancel":
        cancel(mode)
    else:
        sys.exit(0 if running(mode) else 1)


if __name__ == "__main__":
    main()
