"""01_data as a user runs it in JupyterLab: a Jupyter server from the project's venv, the notebook opened
through the server's REST API, every cell executed on the project's ``mmlib`` kernel over the kernel's
websocket channel, in the smoke profile (the parameters cell reads ``MMLIB_PROFILE``)."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

from mmlib import profiles
from mmlib.paths import ROOT

NOTEBOOK = ROOT / "notebooks" / "01_data.ipynb"
KERNEL = "mmlib"                 # scripts/setup.sh: ipykernel install --sys-prefix --name mmlib
CELL_TIMEOUT = 300


def jupyter() -> Path:
    """The venv's ``jupyter`` (the one ``.venv/bin/jupyter lab`` is), or skip if jupyter_server is missing."""
    exe = Path(sys.executable).with_name("jupyter")
    try:
        subprocess.run([str(exe), "server", "--version"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"jupyter_server is not installed beside {sys.executable} ({e}); scripts/setup.sh installs it")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``jupyter server`` on a free local port with a token, serving ``root``."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.port, self.token = free_port(), uuid.uuid4().hex
        self.log = open(root.parent / "server.log", "w+")
        self.proc = subprocess.Popen(
            [str(jupyter()), "server", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.open_browser=False", *(["--allow-root"] if os.geteuid() == 0 else [])],   # containers run as root
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            try:
                self.api("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.output()
                    self.stop()
                    pytest.fail(f"jupyter server did not start:\n{log}")
                time.sleep(0.3)

    def api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read()
        return json.loads(text) if text else None

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self) -> None:
        self.proc.terminate()           # the server shuts its kernels down
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def execute(ws, session: str, code: str) -> tuple[dict, list[dict]]:
    """Run ``code`` on the kernel behind ``ws``: its execute_reply content and its iopub outputs."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session, "username": "test",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    reply, outputs, idle = None, [], False
    deadline = time.monotonic() + CELL_TIMEOUT
    while reply is None or not idle:
        ws.settimeout(max(1.0, deadline - time.monotonic()))
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if msg["channel"] == "shell" and kind == "execute_reply":
            reply = msg["content"]
        elif kind == "status":
            idle = msg["content"]["execution_state"] == "idle"
        elif kind in ("stream", "execute_result", "display_data", "error"):
            outputs.append({"type": kind, **msg["content"]})
    return reply, outputs


def text_of(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)


def test_01_data_runs_cell_by_cell_on_the_mmlib_kernel_of_a_jupyter_server(tmp_path):
    websocket = pytest.importorskip("websocket", reason="websocket-client (a jupyter_server dependency) is missing")
    root, runs = tmp_path / "root", tmp_path / "runs"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    env = {k: v for k, v in os.environ.items() if k not in ("MMLIB_NOTEBOOK", "MMLIB_RUN_ID", "JPY_SESSION_NAME")}
    env.update(MMLIB_PROFILE="smoke", MMLIB_RUNS=str(runs), MMLIB_THREADS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), IPYTHONDIR=str(tmp_path / "ipython"))
    server = Server(root, env)
    try:
        assert KERNEL in server.api("GET", "/api/kernelspecs")["kernelspecs"], "the mmlib kernel is not installed"
        model = server.api("GET", f"/api/contents/{NOTEBOOK.name}?content=1")      # what JupyterLab opens
        cells = nbformat.from_dict(model["content"]).cells
        session = server.api("POST", "/api/sessions", {"path": NOTEBOOK.name, "name": NOTEBOOK.name,
                                                       "type": "notebook", "kernel": {"name": KERNEL}})
        assert session["kernel"]["name"] == KERNEL
        client = uuid.uuid4().hex
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/api/kernels/{session['kernel']['id']}/channels?session_id={client}",
            header=[f"Authorization: token {server.token}"], timeout=60)
        try:
            ran = []
            for i, cell in enumerate(cells):
                if cell.cell_type != "code":
                    continue
                reply, outputs = execute(ws, client, cell.source)
                errors = [o for o in outputs if o["type"] == "error"]
                assert reply["status"] == "ok" and not errors, \
                    f"cell {i} failed: {reply.get('ename')}: {reply.get('evalue')}\n" + "\n".join(
                        "\n".join(e["traceback"]) for e in errors)
                ran.append((i, text_of(outputs)))
        finally:
            ws.close()
        server.api("DELETE", f"/api/sessions/{session['id']}")
    finally:
        server.stop()

    assert len(ran) == sum(c.cell_type == "code" for c in cells) >= 8
    loaded = next(out for _, out in ran if " train / " in out)           # cell "data.load(profile)" printed its split
    n_train, n_val = map(int, re.search(r"^world8k: .*\n(\d+) train / (\d+) val images", loaded, re.M).groups())
    assert n_train + n_val == profiles.get("smoke").data.n_images
    summary = json.loads((runs / "smoke" / "results" / "data_summary.json").read_text())
    assert (summary["n_train"], summary["n_val"], summary["source"]) == (n_train, n_val, "world8k")
    meta = json.loads((runs / "smoke" / "results" / "data_summary.meta.json").read_text())
    assert meta["notebook"] == "01_data" and meta["profile"] == "smoke"   # JupyterLab's session names the notebook
