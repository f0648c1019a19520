"""The sandbox against a hostile model: each attempt that escaped before is refused or harmless.

Every test runs real commands under real bubblewrap (skipped, naming why, where bubblewrap
cannot run) and asserts both the refusal and that nothing outside the workspace changed. The
worker's own identity is whatever runs the suite (root in CI); `test_sandbox_launched_by_an_
unprivileged_user` covers an ordinary user's worker when the suite runs as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from reverie.activities.tools import (
    ToolOutcome,
    Workspace,
    run_builtin_tool,
)
from reverie.activities.tools.sandbox import bwrap_args, sandbox_files
from reverie.egress import EgressPolicy
from tests.sandbox_support import needs_bwrap

pytestmark = needs_bwrap
NO_NETWORK = EgressPolicy.for_networking("limited", [])
UNRESTRICTED = EgressPolicy.for_networking("unrestricted", [])
SOCAT = shutil.which("socat")
needs_socat = pytest.mark.skipif(SOCAT is None, reason="socat is not installed")
PYTHON = "/usr/bin/python3"
needs_system_python = pytest.mark.skipif(
    not os.access(PYTHON, os.X_OK), reason=f"{PYTHON} (used to make raw system calls) is missing"
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """Stands for REVERIE_HOME: a stack file and another session's workspace beside ours."""
    root = tmp_path / "reverie-home"
    (root / "workspaces").mkdir(parents=True)
    (root / "stack.json").write_text('{"database_url": "postgresql://secret"}')
    other = Workspace.for_session(root / "workspaces", "sesn_other")
    (other.work_dir / "private.txt").write_text("other session's data")
    return root


@pytest.fixture
def workspace(home: Path) -> Workspace:
    return Workspace.for_session(home / "workspaces", "sesn_attacker", hidden=[home])


async def bash(workspace: Workspace, command: str, policy: EgressPolicy = NO_NETWORK) -> str:
    outcome = await run_builtin_tool(
        "bash", {"command": command, "timeout_ms": 30_000}, workspace, policy, sandbox="bwrap"
    )
    return text(outcome)


def text(outcome: ToolOutcome) -> str:
    return outcome.content[0]["text"]


def snapshot(root: Path, skip: Path) -> dict[str, bytes]:
    """Every file under `root` but the attacker's own workspace, with its content."""
    found: dict[str, bytes] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_relative_to(skip):
            found[str(path)] = path.read_bytes()
    return found


# --- identity --------------------------------------------------------------------------------


async def test_no_capabilities_no_root_no_new_privileges(workspace: Workspace) -> None:
    out = await bash(
        workspace, "id -u; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status"
    )
    lines = out.splitlines()
    assert lines[0] != "0"
    fields = dict(line.split(":\t") for line in lines[1:])
    assert fields["CapEff"] == fields["CapPrm"] == fields["CapBnd"] == "0000000000000000"
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"  # a filter is installed


async def test_a_command_inherits_no_descriptor_of_another_running_at_once(
    workspace: Workspace, home: Path
) -> None:
    """Two sessions' commands started together, on the loop workers run on (uvloop, whose
    children keep every inheritable descriptor of the worker): neither sees a descriptor beyond
    its own standard ones, in particular not the other's sandbox files (its bwrap arguments,
    seccomp filter, passwd), which stay open in the worker while it runs."""
    other = Workspace.for_session(home / "workspaces", "sesn_neighbour", hidden=[home])
    listing = "sleep 0.5; ls -l /proc/self/fd/ | tail -n +2"
    mine, theirs = await asyncio.gather(bash(workspace, listing), bash(other, listing))
    for out in (mine, theirs):
        assert "memfd" not in out, out
        numbers = sorted(int(line.split()[8]) for line in out.splitlines() if "->" in line)
        # 0-2, and the descriptor `ls` reads /proc/self/fd through.
        assert numbers[:3] == [0, 1, 2] and len(numbers) <= 4, out


async def test_cannot_mount_unmount_or_nest_namespaces(workspace: Workspace, home: Path) -> None:
    before = snapshot(home, workspace.session_dir)
    out = await bash(
        workspace,
        "umount /usr 2>/dev/null; echo umount=$?; mount -t tmpfs x /tmp 2>/dev/null; "
        "echo mount=$?; mount -o remount,rw /usr 2>/dev/null; echo remount=$?; "
        "unshare -U -r true 2>/dev/null; echo userns=$?; unshare -m true 2>/dev/null; echo mntns=$?; "
        "touch /usr/reverie-test 2>/dev/null; echo write_usr=$?",
    )
    for name in ("umount", "mount", "remount", "userns", "mntns", "write_usr"):
        assert f"{name}=0" not in out, out
    assert snapshot(home, workspace.session_dir) == before
    assert not Path("/usr/reverie-test").exists()


async def test_sysctls_are_read_only_and_kernel_internals_masked(workspace: Workspace) -> None:
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    out = await bash(
        workspace,
        "cat /proc/sys/kernel/core_pattern > /tmp/p; "
        "echo '|/workspace/evil' > /proc/sys/kernel/core_pattern 2>/dev/null; echo sysctl=$?; "
        "for f in keys kallsyms slabinfo vmallocinfo timer_list sysrq-trigger kcore; do "
        "  head -c 64 /proc/$f 2>/dev/null | grep -q . && echo readable=$f; done; echo done",
    )
    assert "sysctl=0" not in out
    assert "readable=" not in out, out
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before


@needs_system_python
async def test_dangerous_system_calls_are_refused(workspace: Workspace) -> None:
    # keyctl (the worker's keyrings), open_by_handle_at (reading files by handle, past every
    # mount), userfaultfd, bpf, io_uring_setup: each fails with EPERM.
    calls = {
        "keyctl": 250,
        "open_by_handle_at": 304,
        "userfaultfd": 323,
        "bpf": 321,
        "io_uring_setup": 425,
    }
    if os.uname().machine != "x86_64":
        pytest.skip("syscall numbers in this test are x86_64's")
    script = (
        "import ctypes, json; libc = ctypes.CDLL(None, use_errno=True); out = {}\n"
        f"for name, nr in {calls!r}.items():\n"
        "    r = libc.syscall(nr, 0, 0, 0, 0); out[name] = (r, ctypes.get_errno())\n"
        "print(json.dumps(out))"
    )
    out = await bash(workspace, f"cat > /tmp/calls.py <<'PY'\n{script}\nPY\n{PYTHON} /tmp/calls.py")
    import json

    results = json.loads(out.splitlines()[-1])
    for name, (value, error) in results.items():
        assert value == -1 and error == 1, (name, value, error)  # EPERM


# --- filesystem ------------------------------------------------------------------------------


async def test_only_the_allow_list_is_visible(workspace: Workspace, home: Path) -> None:
    venv = Path(sys.prefix)
    out = await bash(
        workspace,
        "ls -A / | tr '\\n' ' '; echo; "
        f"for p in /etc/shadow /etc/gshadow /etc/ssl/private /root /home /run /var /srv /opt "
        f"{home} {home}/stack.json {Path.home()} {Path.cwd()} {venv} "
        "/var/run/postgresql /run/user /tmp/.s.PGSQL.5432; do "
        '  [ -e "$p" ] && echo "visible: $p"; done; '
        "find / -xdev -type s 2>/dev/null | head -5; echo end",
    )
    top = set(out.splitlines()[0].split())
    assert top <= {
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "usr",
        "etc",
        "dev",
        "proc",
        "tmp",
        "mnt",
        "workspace",
        "run",
        ".reverie-shell",
    }, top
    assert "visible:" not in out, out
    assert out.splitlines()[-1] == "end" and len(out.splitlines()) == 2, out  # no unix sockets


async def test_other_sessions_and_reverie_home_unreachable(
    workspace: Workspace, home: Path
) -> None:
    before = snapshot(home, workspace.session_dir)
    out = await bash(
        workspace,
        f"cat {home}/workspaces/sesn_other/work/private.txt 2>/dev/null; "
        "cat ../../sesn_other/work/private.txt 2>/dev/null; "
        "cat /proc/1/root/etc/hostname 2>/dev/null; ls /proc/1/root/ 2>/dev/null | head -3; "
        f"echo x > {home}/stack.json 2>/dev/null; echo done",
    )
    assert "other session's data" not in out and out.endswith("done")
    assert snapshot(home, workspace.session_dir) == before


async def test_passwd_is_made_up(workspace: Workspace) -> None:
    out = await bash(workspace, "cat /etc/passwd; whoami")
    lines = out.splitlines()
    assert lines[-1] == "agent" and "/root:" not in out
    assert all(line.split(":")[0] in {"root", "agent", "nobody"} for line in lines[:-1])


# --- network ---------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def host_service() -> AsyncIterator[int]:
    """Stands for Temporal, the Web UI, PostgreSQL or the model endpoint on the worker's host."""

    async def secret(_: web.Request) -> web.Response:
        return web.Response(text="host secret")

    app = web.Application()
    app.router.add_get("/", secret)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await runner.cleanup()


def _raw_get(port: int, target: str) -> str:
    """An HTTP request through bash's /dev/tcp, so no client program is needed."""
    return (
        f"( exec 3<>/dev/tcp/127.0.0.1/{port} || {{ echo no-connection; exit 0; }}; "
        f"printf 'GET {target} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3; "
        "timeout 10 cat <&3 ) 2>/dev/null"
    )


async def test_no_network_environment_reaches_nothing(
    workspace: Workspace, host_service: int
) -> None:
    out = await bash(workspace, _raw_get(host_service, "/") + "; " + _raw_get(3128, "/"))
    assert "host secret" not in out and out.count("no-connection") == 2, out


@needs_socat
async def test_unrestricted_never_reaches_the_host(workspace: Workspace, host_service: int) -> None:
    out = await bash(
        workspace,
        f"{_raw_get(host_service, '/')}; "
        f"{_raw_get(3128, f'http://127.0.0.1:{host_service}/')}; "
        f"{_raw_get(3128, f'http://localhost:{host_service}/')}; "
        f"{_raw_get(3128, f'http://[::ffff:127.0.0.1]:{host_service}/')}; "
        f"{_raw_get(3128, 'http://169.254.169.254/latest/meta-data/')}",
        UNRESTRICTED,
    )
    assert "host secret" not in out
    assert out.count("403 Forbidden") == 4, out
    assert "never reachable from a session" in out


@needs_socat
async def test_proxy_passes_what_the_policy_allows(workspace: Workspace, host_service: int) -> None:
    # The operator opted loopback in (as a company proxy would be): the same request now passes,
    # so the refusals above come from the policy, not from a broken bridge.
    opted_in = EgressPolicy.for_networking("unrestricted", [], ("127.0.0.1/32",))
    out = await bash(workspace, _raw_get(3128, f"http://127.0.0.1:{host_service}/"), opted_in)
    assert "host secret" in out, out


@needs_socat
async def test_limited_bash_reaches_only_allowed_hosts(
    workspace: Workspace, host_service: int
) -> None:
    limited = EgressPolicy.for_networking("limited", ["localhost"], ("127.0.0.1/32",))
    allowed = await bash(workspace, _raw_get(3128, f"http://localhost:{host_service}/"), limited)
    assert "host secret" in allowed, allowed
    refused = await bash(workspace, _raw_get(3128, f"http://127.0.0.1:{host_service}/"), limited)
    assert "host secret" not in refused and "403 Forbidden" in refused
    assert "does not allow network access to 127.0.0.1" in refused


# --- the worker as an ordinary user ----------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="the suite already runs as an ordinary user")
def test_sandbox_launched_by_an_unprivileged_user() -> None:
    """bwrap started by uid 65534 (as a worker running as a dedicated user would) builds the
    same sandbox: no capabilities, its own identity, nothing of the host writable."""
    # pytest's tmp folders are private to root; this one must be reachable by the user.
    root = Path(tempfile.mkdtemp(prefix="reverie-unprivileged-"))
    try:
        _run_as_nobody(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_as_nobody(root: Path) -> None:
    os.chmod(root, 0o755)
    workspace = Workspace.for_session(root, "sesn_user")
    for path in [root, *root.rglob("*")]:
        os.chown(path, 65534, 65534)
    marker = f"/usr/reverie-{uuid.uuid4().hex}"
    with sandbox_files() as files:
        argv = [
            "bwrap",
            *bwrap_args(
                workspace, files, state_dir=workspace.state_dir, proxy_socket=None, uid=None
            ),
            "/bin/sh",
            "-c",
            f"grep CapEff /proc/self/status; touch {marker} 2>&1; "
            "echo w > /workspace/w && echo wrote",
        ]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            pass_fds=files.fds,
            user=65534,
            group=65534,
            extra_groups=[],
            cwd="/",
        )
    if "Operation not permitted" in result.stderr and "namespace" in result.stderr:
        pytest.skip(f"unprivileged user namespaces are disabled here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert "CapEff:\t0000000000000000" in result.stdout
    # Outside, what it writes belongs to the unprivileged user that started it.
    assert (workspace.work_dir / "w").stat().st_uid == 65534
    assert "wrote" in result.stdout and not Path(marker).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root worker hands the sandbox another user")
async def test_a_root_workers_sandbox_is_an_unprivileged_host_user(workspace: Workspace) -> None:
    """Root without capabilities is still root to files and sysctls that judge by uid: a root
    worker's sandbox runs as an ordinary host user (REVERIE_SANDBOX_UID, default 65534)."""
    out = await bash(workspace, "grep -E '^(Uid|Gid):' /proc/self/status; echo x > made-by-bash")
    uids = out.splitlines()[0].split()[1:]
    assert uids == ["65534"] * 4, out
    assert (workspace.work_dir / "made-by-bash").stat().st_uid == 65534
    # What the file tools write, bash can change: they hand new files to the sandbox's user.
    written = await run_builtin_tool(
        "write",
        {"file_path": "notes/by-tool.txt", "content": "one\n"},
        workspace,
        NO_NETWORK,
        sandbox="bwrap",
    )
    assert not written.is_error, text(written)
    out = await bash(workspace, "echo two >> notes/by-tool.txt && echo appended")
    assert out == "appended"
    assert (workspace.work_dir / "notes" / "by-tool.txt").read_text() == "one\ntwo\n"
    assert (workspace.work_dir / "notes").stat().st_uid == 65534


@needs_system_python
async def test_only_ordinary_socket_families(workspace: Workspace) -> None:
    """AF_VSOCK crosses every network namespace (on a VM it reaches the hypervisor's side);
    raw packet sockets would sniff. Only unix, IPv4, IPv6 and netlink sockets can be made."""
    script = (
        "import socket\n"
        "for name in ('AF_UNIX', 'AF_INET', 'AF_INET6', 'AF_VSOCK', 'AF_PACKET'):\n"
        "    try:\n"
        "        socket.socket(getattr(socket, name), socket.SOCK_DGRAM).close(); print(name, 0)\n"
        "    except OSError as error:\n"
        "        print(name, error.errno)\n"
        "for name, proto in (('ROUTE', 0), ('UEVENT', 15)):\n"
        "    try:\n"
        "        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto).close(); print(name, 0)\n"
        "    except OSError as error:\n"
        "        print(name, error.errno)\n"
    )
    out = await bash(workspace, f"cat > /tmp/s.py <<'PY'\n{script}PY\n{PYTHON} /tmp/s.py")
    results = dict(line.split() for line in out.splitlines())
    assert results == {
        "AF_UNIX": "0",
        "AF_INET": "0",
        "AF_INET6": "0",
        "AF_VSOCK": "97",
        "AF_PACKET": "97",
        "ROUTE": "0",
        "UEVENT": "93",  # the host's device events: EPROTONOSUPPORT
    }, out


@needs_socat
async def test_proxy_sends_one_request_with_the_checked_host(
    workspace: Workspace, echo_service: tuple[int, list[bytes]]
) -> None:
    """Domain fronting and request smuggling through `limited`: the Host header the upstream
    gets is the URL's (the one the policy checked) and a second, pipelined request never
    reaches it."""
    port, received = echo_service
    limited = EgressPolicy.for_networking("limited", ["localhost"], ("127.0.0.1/32",))
    smuggled = (
        f"GET http://localhost:{port}/a HTTP/1.1\\r\\nHost: forbidden.example\\r\\n\\r\\n"
        "GET /second HTTP/1.1\\r\\nHost: internal-admin\\r\\n\\r\\n"
    )
    out = await bash(
        workspace,
        f"( exec 3<>/dev/tcp/127.0.0.1/3128; printf '{smuggled}' >&3; timeout 5 cat <&3 )",
        limited,
    )
    assert "echoed" in out, out
    heads = b"".join(received).decode("latin-1")
    assert heads.count("GET ") == 1 and "/second" not in heads, heads
    assert f"Host: localhost:{port}" in heads and "forbidden.example" not in heads, heads


@pytest_asyncio.fixture(loop_scope="session")
async def echo_service() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A raw TCP service that records every byte it is sent and answers once."""
    import asyncio

    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        received.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nechoed")
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            received.append(await asyncio.wait_for(reader.read(65536), 1.0))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], received
    server.close()


async def test_one_session_cannot_exhaust_the_host(workspace: Workspace) -> None:
    """Processes, the size of a file and the in-memory /tmp are bounded, with hard limits the
    sandbox cannot raise (memory, CPU and disk quotas need cgroups: not built yet)."""
    if not os.access("/usr/bin/prlimit", os.X_OK):
        pytest.skip("prlimit (util-linux) is missing, so no limits are set")
    out = await bash(
        workspace,
        "ulimit -Hu; ulimit -Hf; ulimit -Hc; ulimit -u 100000 2>/dev/null; echo raise=$?; "
        "head -c 600M /dev/zero > /tmp/fill 2>/dev/null; echo fill=$?",
    )
    lines = out.splitlines()
    assert lines[:3] == ["4096", str(8 * 1024**3 // 1024), "0"], out
    assert lines[3] != "raise=0" and lines[4] == "fill=1", out


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root worker hands folders over")
async def test_handing_a_workspace_over_follows_no_link(workspace: Workspace, home: Path) -> None:
    """A workspace from before (root-owned, holding links the agent made) is handed to the
    sandbox's user on its first call: everything inside changes owner, nothing outside does."""
    outside = home / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    nested = workspace.work_dir / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "f").write_text("x\n")
    (workspace.work_dir / "a" / "out").symlink_to(outside)
    os.chown(workspace.work_dir, 0, 0)
    out = await bash(workspace, "echo y >> a/b/f && cat a/b/f")
    assert out == "x\ny"
    for path in (workspace.work_dir, nested, nested / "f"):
        assert path.stat().st_uid == 65534, path
    assert (workspace.work_dir / "a" / "out").lstat().st_uid == 65534
    assert outside.stat().st_uid == 0 and (outside / "secret").stat().st_uid == 0


@needs_socat
async def test_proxy_refuses_hidden_host_names_and_bare_line_breaks(
    workspace: Workspace, echo_service: tuple[int, list[bytes]]
) -> None:
    """`localhost\\0.example.com` passes a `*.example.com` check but resolves as `localhost`;
    a bare LF hides a Transfer-Encoding header from the proxy but not from lenient upstreams."""
    port, received = echo_service
    limited = EgressPolicy.for_networking("limited", ["*.example.com"], ("127.0.0.1/32",))
    requests = [
        f"CONNECT localhost\\0.example.com:{port} HTTP/1.1\\r\\n\\r\\n",
        f"GET http://localhost\\0.example.com:{port}/ HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n",
    ]
    allowed = EgressPolicy.for_networking("limited", ["localhost"], ("127.0.0.1/32",))
    smuggling = (
        f"POST http://localhost:{port}/ HTTP/1.1\\r\\nX-A: 1\\nTransfer-Encoding: chunked\\r\\n"
        "Content-Length: 5\\r\\n\\r\\n0\\r\\n\\r\\n"
    )
    outs = [await bash(workspace, _raw_request(request), limited) for request in requests] + [
        await bash(workspace, _raw_request(smuggling), allowed)
    ]
    # Refused either way: by the request head's check (400) or the host name's (403).
    for out in outs[:2]:
        assert ("400 Bad Request" in out and "control characters" in out) or (
            "403 Forbidden" in out and "not a valid host name" in out
        ), out
    assert "400 Bad Request" in outs[2] and "bare line breaks" in outs[2], outs[2]
    # SOCKS5 carries the name as counted bytes, so only the host name check can refuse it.
    name = b"localhost\x00.example.com"
    socks = b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(name)]) + name
    socks += port.to_bytes(2, "big")
    octal = "".join(f"\\{byte:03o}" for byte in socks)
    reply = await bash(
        workspace,
        "( exec 3<>/dev/tcp/127.0.0.1/3128 || exit 0; "
        f"printf '{octal}' >&3; timeout 5 head -c 4 <&3 | od -An -tx1 ) 2>/dev/null",
        limited,
    )
    assert reply.split() == ["05", "00", "05", "02"], reply  # 02: not allowed by ruleset
    assert received == []


async def test_pid_1_names_no_host_path(workspace: Workspace, home: Path) -> None:
    out = await bash(workspace, "tr '\\0' ' ' < /proc/1/cmdline; echo; ls /proc/self/fd | wc -l")
    assert str(home) not in out and "workspaces" not in out, out


def _raw_request(request: str) -> str:
    return (
        "( exec 3<>/dev/tcp/127.0.0.1/3128 || exit 0; "
        f"printf '{request}' >&3; timeout 5 cat <&3 ) 2>/dev/null"
    )
