"""The `reverie` command is safe to point at hostile text and forgiving of a user's mistakes.

Model text, tool output, titles, names and metadata can hold terminal escape sequences (OSC 0
sets the window title, OSC 52 writes the clipboard, CSI moves the cursor): the CLI must show
them, never send them. A mistake on the command line is one line on stderr and exit code 1,
never a traceback.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from reverie.settings import Settings
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import new_agent
from tests.test_cli import Result, cli_env, run_cli

HOSTILE = (
    "title\x1b]0;pwned\x07 clip\x1b]52;c;ZXZpbA==\x07 csi\x9b31m red\x1b[2J bell\x07"
    " back\x08 del\x7f cr\r end"
)
# As one event line shows it: visible controls; CR is whitespace, folded like newlines.
SHOWN = "title␛]0;pwned␇ clip␛]52;c;ZXZpbA==␇ csi\\x9b31m red␛[2J bell␇ back␈ del␡ cr end"


def raw_controls(text: str) -> list[str]:
    """Characters that would reach a terminal as controls: C0 but newline and tab, DEL, C1."""
    return [repr(c) for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0]


def assert_safe(result: Result) -> None:
    assert result.code == 0, result.err
    assert raw_controls(result.out) == [], result.out
    assert raw_controls(result.err) == [], result.err


async def test_model_and_user_text_cannot_drive_the_terminal(
    settings: Settings, reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text(HOSTILE)])
    agent_id = await new_agent(reverie, model_name)
    await reverie.update_agent(agent_id, {"name": "agent\x1b]0;name\x07"})
    session = await reverie.create_session(
        {
            "agent": agent_id,
            "title": "t\x1b]0;title\x07",
            "metadata": {"k\x1b[31m": "v\x1b]52;c;eA==\x07"},
            "initial_events": [{"type": "user.message", "content": "say it\x1b]0;user\x07"}],
        }
    )
    await reverie.wait_until_settled(session.id, timeout=30)
    env = cli_env(settings)
    results = await asyncio.gather(
        run_cli(env, "session", "events", session.id),
        run_cli(env, "session", "events", session.id, "--json"),
        run_cli(env, "session", "get", session.id),
        run_cli(env, "session", "list", "--agent", agent_id),
        run_cli(env, "agent", "get", agent_id),
        run_cli(env, "agent", "list", "--limit", "100"),
        run_cli(env, "session", "events", session.id, "--follow"),
        run_cli(env, "agent", "versions", agent_id, "--json"),
    )
    for result in results:
        assert_safe(result)
    events, as_json, got, listed, agent, agents, followed, versions = results
    assert SHOWN in events.out and SHOWN in followed.out
    assert "say it␛]0;user␇" in events.out
    assert "t␛]0;title␇" in got.out and "v␛]52;c;eA==␇" in got.out
    assert "t␛]0;title␇" in listed.out
    assert "agent␛]0;name␇" in agent.out and "agent␛]0;name␇" in agents.out
    # JSON is escaped by json.dumps (\u001b, \u009b): nothing raw, and the text reads back whole.
    assert as_json.out.isascii()
    recorded = [json.loads(line) for line in as_json.out.splitlines()]
    message = next(event for event in recorded if event["type"] == "agent.message")
    assert message["content"][0]["text"] == HOSTILE
    assert json.loads(versions.out)["data"][0]["name"] == "agent\x1b]0;name\x07"


async def test_bash_output_cannot_drive_the_terminal(
    settings: Settings, reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    command = r"printf 'out\033]0;pwned\007 \033]52;c;ZXZpbA==\007 done'"
    fake_model.script(model_name, [Reply.tool_use("bash", {"command": command}), Reply.text("ok")])
    toolset = {
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_search", "enabled": False}],
    }
    agent_id = await new_agent(reverie, model_name, tools=[toolset])
    session = await reverie.create_session(
        {"agent": agent_id, "initial_events": [{"type": "user.message", "content": "run"}]}
    )
    await reverie.wait_until_settled(session.id, timeout=60)
    shown = await run_cli(cli_env(settings), "session", "events", session.id)
    assert_safe(shown)
    result_line = next(line for line in shown.out.splitlines() if "agent.tool_result" in line)
    assert "out␛]0;pwned␇ ␛]52;c;ZXZpbA==␇ done" in result_line


async def test_a_users_mistake_is_one_line_and_exit_1(
    settings: Settings, reverie: ReverieClient, model_name: str, tmp_path: Path
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    files = {
        "bad": "{nope",
        "deep": "[" * 100_000 + "]" * 100_000,
        "deep_schema": json.dumps(
            {"name": "d", "model": "m", "tools": [{"type": "custom", "name": "t"}]}
        ).replace(
            '"name": "t"', '"name": "t", "input_schema": ' + '{"a": ' * 100 + "{}" + "}" * 100
        ),
        "nul": '{"name": "a\\u0000b", "model": "m"}',
        "list": "[1, 2]",
        "meta": '{"name": "x", "model": "m", "metadata": "oops"}',
    }
    for name, text in files.items():
        (tmp_path / f"{name}.json").write_text(text)
    (tmp_path / "latin1.json").write_bytes(b'{"name": "\xff", "model": "m"}')

    def file(name: str) -> str:
        return str(tmp_path / f"{name}.json")

    too_many = json.dumps([{"type": "user.message", "content": "x"}] * 51)
    mistakes: list[tuple[str, ...]] = [
        ("agent", "create", "--file", file("bad")),
        ("agent", "create", "--file", file("deep")),
        ("agent", "create", "--file", file("deep_schema")),
        ("agent", "create", "--file", file("nul")),
        ("agent", "create", "--file", file("list")),
        ("agent", "create", "--file", file("latin1")),
        ("agent", "create", "--file", file("missing")),
        ("agent", "create", "--file", file("meta"), "--metadata", "a=b"),
        ("env", "create", "--file", file("list")),
        ("env", "create", "--name", "e", "--metadata", "a=b", "--file", file("meta")),
        ("agent", "create", "--name", "x", "--model", "m", "--metadata", "novalue"),
        ("agent", "get", "agent_nope"),
        ("agent", "get", agent_id, "--version", "many"),
        ("agent", "get", agent_id, "--version", "99999999999"),
        ("session", "events", session.id, "--after", "99999999999"),
        ("session", "create", "--agent", agent_id, "--agent-version", "99999999999"),
        ("agent", "list", "--limit", "0"),
        ("agent", "list", "--limit", "-3"),
        ("agent", "list", "--page", "garbage!"),
        ("agent", "frobnicate"),
        (),
        ("--no-such-flag",),
        ("session", "events", "sesn_nope"),
        ("session", "events", session.id, "--since", "yesterday"),
        ("session", "events", session.id, "--limit", "-1"),
        ("session", "send", session.id),
        ("session", "send", session.id, "--event-json", "{bad"),
        ("session", "send", session.id, "--event-json", too_many),
        (
            "session",
            "send",
            session.id,
            "--event-json",
            '{"type": "user.message", "content": "\\u0000"}',
        ),
        ("session", "create", "--agent", agent_id, "--metadata", "k"),
        ("session", "create", "--agent", "agent_nope"),
        ("session", "create", "--agent", agent_id, "--title", "x" * 600),
    ]
    env = cli_env(settings)
    limit = asyncio.Semaphore(4)

    async def run(args: tuple[str, ...]) -> Result:
        async with limit:
            return await run_cli(env, *args)

    results = await asyncio.gather(*(run(args) for args in mistakes))
    bad_setting = await run_cli(
        cli_env(settings, REVERIE_MODEL_MAX_ATTEMPTS="many"), "agent", "list"
    )
    mistakes.append(("REVERIE_MODEL_MAX_ATTEMPTS=many", "agent", "list"))
    results.append(bad_setting)
    for args, result in zip(mistakes, results, strict=True):
        lines = result.err.splitlines()
        assert (result.code, len(lines)) == (1, 1), f"{args}: {result.code} {result.err}"
        assert lines[0].startswith("error: ") and "Traceback" not in result.err, (args, result.err)
    said = dict(zip(mistakes, (result.err for result in results), strict=True))
    assert "deeper than 64" in said[("agent", "create", "--file", file("deep_schema"))]
    assert "NUL" in said[("agent", "create", "--file", file("nul"))]
    nul_event = '{"type": "user.message", "content": "\\u0000"}'
    assert "NUL" in said[("session", "send", session.id, "--event-json", nul_event)]
    assert "at most 50 events" in said[("session", "send", session.id, "--event-json", too_many)]
    assert await reverie.list_events(session.id) == []
