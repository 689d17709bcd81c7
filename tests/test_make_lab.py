"""`make lab` starts JupyterLab wherever the kit runs (as root in a container too), prints the URL
with its token and opens no browser: started headless here, asked over HTTP, stopped."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kdlab.paths import PROJECT_ROOT

VENV = Path(sys.executable).parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (VENV / "bin" / "jupyter").exists(), reason="jupyter is not in this Python's environment")
def test_make_lab_serves_on_localhost_and_prints_its_url_with_the_token(tmp_path):
    port = free_port()
    log = tmp_path / "lab.log"
    # -o: the venv is already set up (the stamp is not remade here); the server logs to `log`.
    command = [
        "make",
        "-s",
        "-C",
        str(PROJECT_ROOT),
        "-o",
        str(VENV / ".kdlab-installed"),
        "lab",
        f"VENV={VENV}",
        f"LAB_ARGS=--port={port} --ServerApp.port_retries=0 --ip=127.0.0.1",
        "KDLAB_HOME=" + str(tmp_path),
    ]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "BROWSER": "false"}
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            assert server.poll() is None, f"make lab exited with {server.returncode}:\n{log.read_text()}"
            match = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", log.read_text())
            url = match and match.group(0)
            time.sleep(0.5)
        assert url, f"no URL with a token printed within 120 s:\n{log.read_text()}"
        token = url.rsplit("=", 1)[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=10) as reply:
            assert reply.status == 200 and "started" in json.loads(reply.read())
        with pytest.raises(urllib.error.HTTPError) as refused:  # the token is what lets one in
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=10)
        assert refused.value.code == 403
        assert "Running as root is not recommended" not in log.read_text()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
