"""Attacks scripted through the fake model in real sessions on the real worker: the model asks,
the tools refuse or do no harm, and nothing outside the session's workspace changes."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from reverie.models.events import Event
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_each_once
from tests.sandbox_support import needs_bwrap

TOOLSET = {"type": "agent_toolset_20260401", "configs": [{"name": "web_search", "enabled": False}]}


async def run_session(
    client: ReverieClient,
    fake_model: FakeModelServer,
    model: str,
    replies: list[Reply],
    networking: dict | None = None,
) -> tuple[str, list[Event]]:
    fake_model.script(model, [*replies, Reply.text("done")])
    agent = await client.create_agent({"name": "attacker", "model": model, "tools": [TOOLSET]})
    request: dict = {"agent": agent.id}
    if networking is not None:
        env = await client.create_environment(
            {"name": "net", "config": {"type": "cloud", "networking": networking}}
        )
        request["environment_id"] = env.id
    session = await client.create_session(request)
    await client.send_message(session.id, "go")
    settled = await client.wait_until_settled(session.id, timeout=60)
    assert settled.status == "idle"
    events = await all_events(client, session.id)
    assert_each_once(events)
    return session.id, events


def _via_proxy(url: str) -> str:
    return (
        "( exec 3<>/dev/tcp/127.0.0.1/3128 || exit 0; "
        f"printf 'GET {url} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3; timeout 10 head -c 300 <&3 ) "
        "2>/dev/null; echo"
    )


def results(events: list[Event]) -> list[tuple[bool, str]]:
    return [
        (
            bool(e.payload["is_error"]),
            "".join(b.get("text", "") for b in e.payload["content"]),
        )
        for e in events
        if e.type == "agent.tool_result"
    ]


def files_outside(root: Path, own: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_relative_to(own) and p.suffix not in {".log"}
    }


@needs_bwrap
async def test_bash_in_a_session_is_unprivileged_and_sees_no_host(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    home = reverie.settings.home
    command = (
        "id -u; grep CapEff /proc/self/status; "
        f"cat {home}/stack.json 2>/dev/null || echo no-stack; "
        f"ls {reverie.settings.workspaces} 2>/dev/null || echo no-workspaces; "
        "ls /run 2>/dev/null || echo no-run"
    )
    _, events = await run_session(
        reverie, fake_model, model_name, [Reply.tool_use("bash", {"command": command})]
    )
    [(is_error, out)] = results(events)
    assert not is_error
    lines = out.splitlines()
    assert lines[0] != "0" and lines[1] == "CapEff:\t0000000000000000"
    assert lines[2:] == ["no-stack", "no-workspaces", "no-run"]


@needs_bwrap
async def test_unrestricted_session_cannot_reach_the_stack(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """Temporal's frontend and the model endpoint listen on the worker's loopback: neither
    web_fetch nor bash (through the proxy) reaches them, however they are addressed."""
    temporal = reverie.settings.temporal_address or ""
    model_port = urlsplit(reverie.settings.anthropic_base_url or "").port
    port = temporal.rsplit(":", 1)[1]
    before = files_outside(reverie.settings.home, reverie.settings.workspaces)
    fetches = [
        f"http://127.0.0.1:{port}/",
        f"http://localhost:{model_port}/v1/messages",
        f"http://[::ffff:127.0.0.1]:{model_port}/",
        f"http://0x7f000001:{model_port}/",
        "http://169.254.169.254/latest/meta-data/",
    ]
    # Through the sandbox's proxy (what curl or pip would do), with bash's own /dev/tcp so the
    # test needs no client program; and straight at the port, which has no route at all.
    curl = " ; ".join(
        [_via_proxy(f"http://127.0.0.1:{p}/") for p in (port, model_port)]
        + [f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null || echo direct-refused"]
    )
    _, events = await run_session(
        reverie,
        fake_model,
        model_name,
        [
            Reply.tool_uses([("web_fetch", {"url": url}) for url in fetches]),
            Reply.tool_use("bash", {"command": curl}),
        ],
        networking={"type": "unrestricted"},
    )
    outcomes = results(events)
    assert len(outcomes) == len(fetches) + 1
    for (is_error, out), url in zip(outcomes, fetches, strict=False):
        assert is_error and "Status: HTTP" not in out, (url, out)
    _, bash_out = outcomes[-1]
    assert "403" in bash_out and "never reachable from a session" in bash_out, bash_out
    assert bash_out.count("403 Forbidden") == 2 and "direct-refused" in bash_out
    assert files_outside(reverie.settings.home, reverie.settings.workspaces) == before


async def test_a_fifo_stalls_nothing(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """`mkfifo` then `write`/`read` on it: before, the worker's event loop blocked until
    something read the FIFO, stopping every session on the worker."""
    _, events = await run_session(
        reverie,
        fake_model,
        model_name,
        [
            Reply.tool_use("bash", {"command": "mkfifo pipe && echo made"}),
            Reply.tool_uses(
                [("write", {"file_path": "pipe", "content": "x"}), ("read", {"file_path": "pipe"})]
            ),
        ],
    )
    made, wrote, read = results(events)
    assert made == (False, "made")
    assert wrote[0] and "not a regular file" in wrote[1]
    assert read[0] and "not a regular file" in read[1]
