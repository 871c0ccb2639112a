"""The Open OnDemand app (packaging/ondemand/jupyter_app) as OOD itself would run it.

No OOD here, so the test plays the dashboard's parts with the real pieces underneath:
  * Ruby's ERB renders every .erb with the bindings the dashboard uses (form values as names for
    submit.yml.erb; `session`/`context` for template/; the session for info/completed; the
    connection.yml keys, read with YAML.safe_load into an OpenStruct, for view.html.erb);
  * the job is the script OOD's `basic` batch-connect template makes of submit.yml's
    batch_connect options, submitted with the sbatch options OOD's Slurm adapter uses, as the
    user, from a staged session directory, on the real Slurm cluster;
  * a loopback "mini OOD" serves the card and proxies /node/HOST/PORT/ like OOD's node proxy,
    and headless Chromium clicks "Connect to JupyterLab".
A missing tool (ruby, node, chromium, playwright-core) fails the test: nothing here is skipped.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import threading
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import lab
from sh_jupyter import config as config_mod
from sh_jupyter.session import connection_yaml

import bed

U1 = bed.USERS[0]
REPO = Path(__file__).resolve().parents[2]
APP = REPO / "packaging" / "ondemand" / "jupyter_app"
DRIVER = REPO / "tests" / "e2e" / "browser" / "connect.js"
BROWSER_MODULES = "/opt/sh-jupyter/browser/node_modules"
ARTIFACTS = REPO / "test-artifacts"
BATCH_SCRIPT = "/usr/libexec/sh-jupyter/jupyter_app.sbatch"
OOD_OUTPUT = "ondemand/data/sys/dashboard/batch_connect/sys/jupyter_app/output"
SITE = ('[network]\nport_min = 33000\nport_max = 33999\n'
        '[image]\nbase_url = "/node/{host}/{port}/"\n')

# The dashboard's renderings, each with the binding OOD gives that file (BatchConnect::App and
# BatchConnect::Session; ERB trim mode "-"). Reads a JSON job on stdin, prints JSON.
RENDER_RB = r"""
job = JSON.parse($stdin.read)
app = Pathname.new(job["app"])
form = job["form"]
staged_root = Pathname.new(job["staged_root"])

def render(path, bind)
  erb = ERB.new(path.read, trim_mode: "-")
  erb.filename = path.to_s
  erb.result(bind)
end

# What info/completed views and the job templates see of the session.
Session = Struct.new(:id, :job_id, :staged_root, :user_context, :running, :completed) do
  def running?; running; end
  def completed?; completed; end
  def view_binding; binding; end
end
TemplateBinding = Struct.new(:session, :context) do
  def get_binding; binding; end
end

out = {}
out["manifest"] = YAML.safe_load(app.join("manifest.yml").read)
out["form"] = YAML.safe_load(render(app.join("form.yml.erb"), binding))
# submit.yml.erb: the form's values (and staged_root) as names, then YAML.safe_load.
ctx = OpenStruct.new(form.merge("staged_root" => staged_root))
out["submit"] = render(app.join("submit.yml.erb"), ctx.instance_eval { binding })
out["submit_yaml"] = YAML.safe_load(out["submit"])
session = Session.new(job["session_id"], job["job_id"], staged_root, form, job["running"],
                      job["completed"])
tb = TemplateBinding.new(session, OpenStruct.new(form)).get_binding
root = app.join("template")
out["templates"] = root.glob("**/*.erb").to_h do |f|
  [f.relative_path_from(root).sub_ext("").to_s, render(f, tb)]
end
out["info"] = render(app.join("info.html.erb"), session.view_binding)
out["completed"] = render(app.join("completed.html.erb"), session.view_binding)
if job["connection"]
  connect = OpenStruct.new(YAML.safe_load(File.read(job["connection"])))
  out["connect"] = connect.to_h
  out["view"] = render(app.join("view.html.erb"), connect.instance_eval { binding })
end
puts JSON.generate(out)
"""


def render(form: dict, session_id: str, staged_root: str, connection: str | None = None,
           running: bool = False, completed: bool = False, site_config: str | None = None
           ) -> dict:
    """The app's files as the dashboard renders them; the dashboard's environment names the
    sh-jupyter config (form.yml.erb reads limits.max_gpus from it)."""
    job = {"app": str(APP), "form": form, "session_id": session_id, "staged_root": staged_root,
           "job_id": "", "connection": connection, "running": running, "completed": completed}
    env = {"PATH": os.environ["PATH"],
           "SH_JUPYTER_CONFIG": site_config or str(REPO / "packaging" / "config" / "config.toml")}
    out = subprocess.run(["ruby", "-rerb", "-ryaml", "-rjson", "-rostruct", "-rpathname",
                          "-e", RENDER_RB], input=json.dumps(job), capture_output=True,
                         text=True, check=False, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def ood_job_script(staged_root: str, batch_connect: dict) -> str:
    """The job script OOD's `basic` template makes (ood_core BatchConnect::Template), step by
    step in its order: cd to the session directory, set `host`, run before_script (default:
    source before.sh), fork script.sh, run after_script (default: source after.sh), write
    connection.yml from the shell's $host/$port/$password, wait for script.sh, clean up.
    The Slurm adapter puts `#!/bin/bash` (shell_path) in front."""
    before = batch_connect.get("before_script", '[[ -e "before.sh" ]] && source "before.sh"')
    after = batch_connect.get("after_script", '[[ -e "after.sh" ]] && source "after.sh"')
    return "\n".join([
        "#!/bin/bash",
        f"cd {staged_root}",
        "export host",
        "export port",
        "create_yml () {",
        '  echo "Generating connection YAML file..."',
        '  ( umask 077; echo -e "host: $host\\nport: $port\\npassword: $password"'
        f' > "{staged_root}/connection.yml" )',
        "}",
        "clean_up () {",
        '  echo "Cleaning up..."',
        f'  [[ -e "{staged_root}/clean.sh" ]] && source "{staged_root}/clean.sh"',
        "  [[ ${SCRIPT_PID} ]] && pkill -P ${SCRIPT_PID} || :",
        "  pkill -P $$",
        "  exit ${1:-0}",
        "}",
        "host=$(hostname)",
        before,
        'echo "Script starting..."',
        f'"{staged_root}/script.sh" &',
        "SCRIPT_PID=$!",
        after,
        "create_yml",
        "wait ${SCRIPT_PID} || clean_up 1",
        "clean_up",
        "",
    ])


def sbatch_args(staged_root: str, script: dict) -> list[str]:
    """The sbatch options OOD's Slurm adapter builds from submit.yml's `script` section (plus
    the dashboard's workdir and output_path)."""
    secs = int(script["wall_time"])
    env = script.get("job_environment") or {}
    export = ",".join(env) if env else "NONE"
    return ["-D", staged_root, "-J", script["job_name"],
            "-o", os.path.join(staged_root, "output.log"),
            "-t", f"{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}",
            "--export", export, *script.get("native", []), "--parsable"]


def _need(*tools: str) -> None:
    """A missing tool fails the test, naming the provisioning step that installs it."""
    missing = [t for t in tools if not (shutil.which(t) or os.path.exists(t))]
    if missing:
        pytest.fail(f"missing {missing}: run testbed/provision (steps 10 and 70)")


@pytest.fixture(scope="module")
def ruby() -> None:
    _need("ruby", "bash")


@pytest.fixture(scope="module")
def browser() -> None:
    _need("ruby", "node", "/usr/bin/chromium", f"{BROWSER_MODULES}/playwright-core")


FORM = {"cluster": "backend", "cpus": "2", "memory_gib": "3", "gpus": "0"}
FORM_E2E = {"cluster": "local", "cpus": "2", "memory_gib": "2", "gpus": "0"}


def test_app_files_render_as_the_dashboard_renders_them(ruby, tmp_path):
    site = config_mod.load(str(REPO / "packaging" / "config" / "config.toml"))
    session_id = str(uuid.uuid4())
    staged = str(tmp_path / session_id)
    os.mkdir(staged)
    conn = str(tmp_path / "connection.yml")
    password = "Zq-3_tok" * 5
    with open(conn, "w", encoding="utf-8") as fh:  # the supervisor's own writer
        fh.write(connection_yaml("node7.tre", 24680, password))
    with open(os.path.join(staged, "status.json"), "w", encoding="utf-8") as fh:
        json.dump({"connection_timeout": 240, "failed": True,
                   "reason": "JupyterLab exited with status 1: <oops>",
                   "message": ""}, fh)
    out = render(FORM, session_id, staged, connection=conn, running=True, completed=True)

    assert out["manifest"]["role"] == "batch_connect"
    assert out["manifest"]["name"] == "Run JupyterLab Container"
    form = out["form"]
    # One back-end: OOD hides its own cluster field only if the app defines none itself.
    assert form["cluster"] and "cluster" not in form["attributes"]
    assert form["form"] == ["image", "cpus", "memory_gib", "gpus", "notify"]
    assert form["attributes"]["notify"]["widget"] == "check_box"
    # The shipped config lists no [[images]]: nothing to choose, the site's one image runs.
    assert form["attributes"]["image"] == {"widget": "hidden_field", "value": ""}
    # The shipped config allows no GPUs: the field is a hidden 0.
    assert form["attributes"]["gpus"] == {"widget": "hidden_field", "value": 0}
    cpus, mem = form["attributes"]["cpus"], form["attributes"]["memory_gib"]
    assert (cpus["label"], mem["label"]) == ("CPUs/cores", "Memory (GiB)")
    assert (cpus["value"], cpus["max"]) == (site["limits.default_cpus"], site["limits.max_cpus"])
    assert (mem["value"], mem["max"]) == (site["limits.default_memory_gib"],
                                          site["limits.max_memory_gib"])

    sub = out["submit_yaml"]
    assert sub["batch_connect"]["template"] == "basic"
    assert sub["script"]["job_name"] == "jupyter_app"
    assert sub["script"]["wall_time"] == site["session.max_walltime"] == 6 * 3600
    assert sub["script"]["native"] == ["--nodes=1", "--ntasks=1", "--cpus-per-task=2",
                                       "--mem=3G"]
    args = sbatch_args(staged, sub["script"])
    assert args[args.index("-t") + 1] == "06:00:00"

    script = out["templates"]["script.sh"]
    assert set(out["templates"]) == {"script.sh"}
    assert script.startswith("#!/bin/bash\n")
    assert script.rstrip().endswith(f"exec {BATCH_SCRIPT}")
    assert f'!= "{session_id}"' in script and "2 CPUs, 3 GiB" in script
    wrapper = ood_job_script(staged, sub["batch_connect"])
    for text in (script, wrapper):
        check = subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True,
                               check=False)
        assert check.returncode == 0, check.stderr
    # The wrapper turns into script.sh before it could fork it or write connection.yml.
    lines = wrapper.splitlines()
    assert lines.index(sub["batch_connect"]["before_script"]) < lines.index("create_yml")
    assert sub["batch_connect"]["before_script"] == "exec /bin/bash ./script.sh"

    # view.html.erb: from connection.yml as OOD's YAML.safe_load reads it.
    assert out["connect"] == {"host": "node7.tre", "port": 24680, "password": password}
    view = out["view"]
    # Connect posts the password to JupyterLab's login page: it is in the form's body only,
    # never in a URL (proxy access logs, browser history, Referer).
    assert ('<form action="/node/node7.tre/24680/login" method="post" target="_blank"' in view
            and "Connect to JupyterLab</button>" in view)
    assert f'<input type="hidden" name="password" value="{password}">' in view
    assert f'<input type="hidden" name="token" value="{password}">' in view
    assert '<input type="hidden" name="next" value="/node/node7.tre/24680/lab">' in view
    assert "token=" not in view and "href=" not in view and "<a " not in view
    # A hostile connection.yml cannot break out of the attribute or the form.
    with open(conn, "w", encoding="utf-8") as fh:
        fh.write(connection_yaml("node7.tre", 24680, '"><script>x</script>'))
    view = render(FORM, session_id, staged, connection=conn, running=True)["view"]
    assert "<script>" not in view and 'value="&quot;&gt;&lt;script&gt;' in view

    info = out["info"]
    assert "<strong>Connection timeout (s):</strong> 240" in info
    assert "<strong>CPUs/cores:</strong> 2" in info
    assert "<strong>Memory (GiB):</strong> 3" in info
    assert "GPUs" not in info
    assert f"JupyterLab is running in Podman container epcc-ces-jupyter-{session_id}" in info
    assert "JupyterLab session failed: JupyterLab exited with status 1: &lt;oops&gt;" \
        in out["completed"]

    os.unlink(os.path.join(staged, "status.json"))  # queued: no status.json yet
    out = render(FORM, session_id, staged)
    assert "<strong>Connection timeout (s):</strong> 180" in out["info"]
    assert "running in Podman" not in out["info"] and not out["completed"].strip()


@pytest.mark.parametrize(("site", "max_gpus"), [
    ("[limits]\nmax_gpus = 3  # three per session\n", 3),
    ("[limits]\nmax_cpus = 8\n[gpu]\nmax_gpus = 5\n", 0),  # not [limits]: not the limit
    ("[limits]\nmax_gpus = 0\n", 0),
    (None, 0),  # no config where the dashboard looks
])
def test_the_gpu_field_appears_only_where_the_site_allows_gpus(ruby, tmp_path, site, max_gpus):
    path = tmp_path / "config.toml"
    if site is not None:
        path.write_text(site, encoding="utf-8")
    session_id = str(uuid.uuid4())
    staged = tmp_path / session_id
    staged.mkdir()
    form = {**FORM, "gpus": "2" if max_gpus else "0"}
    out = render(form, session_id, str(staged), running=True, site_config=str(path))
    gpus = out["form"]["attributes"]["gpus"]
    native = out["submit_yaml"]["script"]["native"]
    if max_gpus:
        assert (gpus["widget"], gpus["label"], gpus["min"], gpus["max"], gpus["value"]) == \
            ("number_field", "GPUs", 0, max_gpus, 0)
        assert native[-1] == "--gres=gpu:2"
        assert "<strong>GPUs:</strong> 2" in out["info"]
        assert "2 CPUs, 3 GiB, 2 GPUs)" in out["templates"]["script.sh"]
    else:
        assert gpus == {"widget": "hidden_field", "value": 0}
        assert not [o for o in native if "gres" in o] and "GPUs" not in out["info"]


def test_the_image_choice_offers_exactly_the_sites_images(ruby, tmp_path):
    """[[images]] in the site config: the form offers those names (GPU images only where
    GPUs are allowed), and the chosen name reaches the job's script, nothing else."""
    path = tmp_path / "config.toml"
    path.write_text('[[images]]\nname = "python"\ndescription = "Base Python # 3.11"\n'
                    'reference = "localhost/a:1"\n[[images]]\nname = "minimal"\n'
                    'reference = "localhost/b:1"  # thin\n[[images]]\nname = "cuda"\n'
                    'reference = "localhost/c:1"\ngpu = true\n', encoding="utf-8")
    session_id = str(uuid.uuid4())
    staged = tmp_path / session_id
    staged.mkdir()
    out = render({**FORM, "image": "minimal"}, session_id, str(staged), site_config=str(path))
    image = out["form"]["attributes"]["image"]
    assert image["widget"] == "select" and image["label"] == "Environment"
    assert image["options"] == [["python - Base Python # 3.11", "python"],
                                ["minimal", "minimal"]]  # no GPUs here: no cuda
    script = out["templates"]["script.sh"]
    assert "export SH_JUPYTER_SESSION_IMAGE=minimal\n" in script
    assert "SH_JUPYTER_SESSION_NOTIFY" not in script
    notify = render({**FORM, "notify": "1"}, session_id, str(staged), site_config=str(path))
    assert "export SH_JUPYTER_SESSION_NOTIFY=1\n" in notify["templates"]["script.sh"]
    out = render({**FORM, "image": "$(touch /tmp/x); evil"}, session_id, str(staged),
                 site_config=str(path))
    assert "export SH_JUPYTER_SESSION_IMAGE=touchtmpxevil\n" in out["templates"]["script.sh"]


class MiniOOD(ThreadingHTTPServer):
    """OOD's two parts a browser meets, on loopback: the job card at / and the node proxy,
    which passes /node/HOST/PORT/... unchanged to HOST:PORT (here only the session's own)."""

    daemon_threads = True

    def __init__(self, card: str, host: str, port: int) -> None:
        self.card = card.encode()
        self.prefix = f"/node/{host}/{port}/"
        self.upstream = ("127.0.0.1", port)
        self.forwarded: list[str] = []
        # An access log as a portal's front proxy keeps one: every request line and header.
        self.access_log: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
        "trailer", "content-length"}


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MiniOOD

    def log_message(self, *_args) -> None:
        pass

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        self.server.access_log.append(
            "\n".join([self.requestline, *[f"{k}: {v}" for k, v in self.headers.items()]]))
        if self.path == "/":
            page = (b"<!doctype html><html><head><title>My Interactive Sessions</title></head>"
                    b"<body><div class=\"card-body\">" + self.server.card + b"</div></body></html>")
            return self._reply(200, page, [("Content-Type", "text/html; charset=utf-8")])
        if not self.path.startswith(self.server.prefix):
            return self._reply(404, b"not proxied", [("Content-Type", "text/plain")])
        self.server.forwarded.append(self.path)
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self._tunnel()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
            for name, value in self.headers.items():  # Host too: OOD's proxy keeps it
                if name.lower() not in _HOP:
                    upstream.putheader(name, value)
            if body is not None:
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            resp = upstream.getresponse()
            data = resp.read()
        finally:
            upstream.close()
        self._reply(resp.status, data, [(k, v) for k, v in resp.getheaders()
                                        if k.lower() not in _HOP])
        return None

    def _tunnel(self) -> None:
        """A WebSocket upgrade: replay the request upstream, then relay bytes both ways."""
        self.close_connection = True
        upstream = socket.create_connection(self.server.upstream, timeout=10)
        upstream.settimeout(None)
        head = "".join([f"{self.requestline}\r\n",
                        *[f"{k}: {v}\r\n" for k, v in self.headers.items()], "\r\n"])
        upstream.sendall(head.encode("latin-1"))

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        back = threading.Thread(target=pipe, args=(upstream, self.connection), daemon=True)
        back.start()
        pipe(self.connection, upstream)
        back.join(timeout=5)
        upstream.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


def _stage(user: str, staged: str, rendered: dict, script: str, options: list[str]) -> None:
    """The dashboard's staging: the session directory (0700) with the rendered template files
    (keeping the template's modes) and its debugging records, all the user's."""
    made = bed.as_user(user, ["mkdir", "-p", "-m", "0700", staged])
    assert made.returncode == 0, made.stderr
    pw = pwd.getpwnam(user)
    files = {name: (text, (APP / "template" / f"{name}.erb").stat().st_mode & 0o777)
             for name, text in rendered["templates"].items()}
    files["user_defined_context.json"] = (json.dumps(FORM_E2E, indent=2), 0o644)
    files["job_script_content.sh"] = (script, 0o644)
    files["job_script_options.json"] = (json.dumps(options, indent=2), 0o644)
    for name, (text, mode) in files.items():
        path = os.path.join(staged, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(path, mode)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _output(staged: str) -> str:
    try:
        with open(os.path.join(staged, "output.log"), encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return "(no output.log)"


def _api_answers(port: int, base: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{base}api", timeout=5) as resp:
            return resp.status == 200 and b"version" in resp.read()
    except OSError:
        return False


HISTORY_NOTEBOOK = "history.ipynb"


def _history(conn: dict, base_url: str) -> None:
    """Give the user history: a notebook and the default workspace with it open, through
    JupyterLab's own REST API (as JupyterLab saves them when a user works)."""
    path = f"mnt/jupyter_host/{HISTORY_NOTEBOOK}"
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                           "outputs": [], "source": "print('from an earlier session')"}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    lab.api(conn["port"], conn["password"], "PUT", f"api/contents/{path}",
            {"type": "notebook", "format": "json", "content": notebook}, base_url)
    widget = f"notebook:{path}"
    workspace = {"data": {
        "layout-restorer:data": {"main": {"dock": {"type": "tab-area", "currentIndex": 0,
                                                   "widgets": [widget]}, "current": widget}},
        widget: {"data": {"path": path, "factory": "Notebook"}},
    }, "metadata": {"id": "default"}}
    lab.api(conn["port"], conn["password"], "PUT", "lab/api/workspaces/default", workspace,
            base_url)


def _history_urls(profile: str) -> list[str]:
    """The URLs in Chromium's own history database of that profile (written at its close)."""
    path = os.path.join(profile, "Default", "History")
    assert os.path.exists(path), f"Chromium kept no history at {path}"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT url FROM urls")]
    finally:
        db.close()


def test_ood_session_connects_in_a_browser_and_cancels_cleanly(browser, testbed):
    """Connect from the card in a real browser, as a user would; the password only ever
    travels in a POST body (as shjuser2 reading the portal proxy's access log or the user's
    browser history, one would find no secret)."""
    cfg = bed.write_config(SITE)
    pw = pwd.getpwnam(U1)
    session_id = str(uuid.uuid4())
    staged = os.path.join(pw.pw_dir, OOD_OUTPUT, session_id)
    rendered = render(FORM_E2E, session_id, staged)
    sub = rendered["submit_yaml"]
    # A site whose config is not /etc/sh-jupyter/config.toml passes it as OOD does any job
    # variable: submit.yml's script.job_environment (the Slurm adapter: --export NAME).
    script_opts = {**sub["script"], "job_environment": {"SH_JUPYTER_CONFIG": cfg}}
    options = sbatch_args(staged, script_opts)
    job_script = ood_job_script(staged, sub["batch_connect"])
    _stage(U1, staged, rendered, job_script, options)
    conn_file = os.path.join(staged, "connection.yml")
    name = f"epcc-ces-jupyter-{session_id}"

    out = bed.as_user(U1, ["sbatch", *options], env={"SH_JUPYTER_CONFIG": cfg},
                      input=job_script)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    assert job.isdigit(), out.stdout
    try:
        seen: dict[str, bool] = {}

        def published() -> bool:
            if os.path.exists(conn_file):
                # The moment the card could show Connect, JupyterLab already answers.
                with open(conn_file, encoding="utf-8") as fh:
                    port = int(next(line for line in fh if line.startswith("port: "))[6:])
                seen["answered"] = _api_answers(port, f"/node/{socket.gethostname()}/{port}/")
                return True
            state = bed.job_state(job)
            if state not in ("PENDING", "CONFIGURING", "RUNNING"):
                raise AssertionError(f"job {job} {state} before connection.yml:\n"
                                     f"{_output(staged)}")
            return False
        bed.wait_for(published, 120, "connection.yml from the supervisor", interval=0.1)
        assert seen["answered"], "connection.yml was there before JupyterLab answered"
        assert bed.mode_of(conn_file) == 0o600
        assert subprocess.run(["squeue", "-h", "-j", job, "-o", "%j %C %m %l"],
                              capture_output=True, text=True, check=False
                              ).stdout.split() == ["jupyter_app", "2", "2G", "6:00:00"]

        # The card, rendered from the real connection.yml as the dashboard reads it.
        card = render(FORM_E2E, session_id, staged, connection=conn_file, running=True)
        conn = card["connect"]
        assert set(conn) == {"host", "port", "password"} and isinstance(conn["port"], int)
        assert conn["host"] == socket.gethostname() and len(conn["password"]) >= 32
        assert f"JupyterLab is running in Podman container {name}" in card["info"]
        assert "<strong>Connection timeout (s):</strong> 180" in card["info"]

        # Without the secret JupyterLab asks for a login: the button's POST is what logs in.
        with urllib.request.urlopen(f"http://127.0.0.1:{conn['port']}/node/{conn['host']}/"
                                    f"{conn['port']}/lab", timeout=10) as resp:
            assert "/login" in resp.url and b'type="password"' in resp.read()

        # The user has used JupyterLab before: a saved workspace with a notebook open (kept
        # in /mnt/jupyter_host, so it is there in every later session too, as for real users).
        _history(conn, f"/node/{conn['host']}/{conn['port']}/")

        proxy = MiniOOD(card["info"] + card["view"], conn["host"], conn["port"])
        serving = threading.Thread(target=proxy.serve_forever, daemon=True)
        serving.start()
        try:
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "ondemand-connect.png"
            if shot.exists():
                shot.unlink()
            profile = os.path.join(bed.shared_tempdir(), "chromium-profile")
            browser = subprocess.run(
                ["node", str(DRIVER), proxy.url, str(shot), profile], capture_output=True,
                text=True, check=False, timeout=180,
                env={**os.environ, "NODE_PATH": BROWSER_MODULES})
        finally:
            proxy.shutdown()
            proxy.server_close()
        assert browser.returncode == 0, browser.stderr
        result = json.loads(browser.stdout.strip().splitlines()[-1])
        # Connect logged in by a POST of the password: no request line the portal's proxy
        # logged, no Referer or other header an access log records, no URL the browser asked
        # for and none in its history carries it. (JupyterLab's own API calls authenticate
        # with an Authorization header, a credential header no access log records.)
        secret = conn["password"]
        prefix = f"/node/{conn['host']}/{conn['port']}/"
        lines = [e.split("\n")[0] for e in proxy.access_log]
        assert f"POST {prefix}login HTTP/1.1" in lines
        assert not [line for line in lines if secret in line], "the secret reached a URL"
        headers = {h.split(": ", 1)[0] for e in proxy.access_log for h in e.split("\n")[1:]
                   if secret in h}
        assert headers <= {"Authorization"}, f"the secret is in headers {headers}"
        assert not [r for r in result["requested"] if secret in r], result["requested"]
        history = _history_urls(profile)
        assert any(f"{prefix}lab" in u for u in history), history
        assert not [u for u in history if secret in u], history
        assert result["landed"].startswith(f"{proxy.url.rstrip('/')}{prefix}lab"), result
        assert result["shell"] and result["started"], result
        assert HISTORY_NOTEBOOK in result["tabs"], result  # the workspace was restored
        assert result["loginForm"] == 0 and "/login" not in result["url"], result
        assert "JupyterLab" in result["title"], result
        assert shot.stat().st_size > 10_000
        assert any(p.startswith(f"{prefix}api/") for p in proxy.forwarded)
        # JupyterLab's WebSocket came through the node proxy too.
        assert f"{prefix}api/events/subscribe" in result["sockets"], result
        assert not result["socketErrors"], result
    finally:
        # My Interactive Sessions > Delete: the dashboard runs scancel as the user.
        bed.as_user(U1, ["scancel", job])
        bed.wait_for(lambda: bed.job_state(job) not in ("PENDING", "RUNNING", "COMPLETING"),
                     60, f"job {job} to end", interval=0.2)
    bed.wait_for(lambda: name not in bed.containers_of(U1), 30, f"{name} removal",
                 interval=0.2)
    assert bed.job_state(job) == "CANCELLED"
    log = _output(staged)
    # The supervisor itself (the job's main process) got SIGTERM and removed the container;
    # OOD's wrapper never forked script.sh nor wrote connection.yml.
    assert f"container {name} removed" in log, log
    assert "Script starting..." not in log and "Generating connection YAML" not in log, log
