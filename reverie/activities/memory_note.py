"""What the system prompt says about a session's memory mounts, so the agent knows where they
are, what it may do with them and what a conflict looks like."""

from __future__ import annotations

from typing import Any

from reverie.models.memory import memory_resources


def mount_note(resources: list[dict[str, Any]]) -> str | None:
    """The system prompt's section on the session's memory mounts (None without any)."""
    mounted = memory_resources(resources)
    if not mounted:
        return None
    lines = [
        "# Memory",
        "Long-term memory stores are mounted as folders. Read and change them with your file "
        "tools and bash like any other files; they hold text files of at most 100 kB. After "
        "each tool call your changes are saved as new versions. If a memory was changed "
        "elsewhere meanwhile, your change is not saved and the tool result says so: read the "
        "file again, then redo the change.",
    ]
    for resource in mounted:
        access = "read-only" if resource.read_only else "read-write"
        line = f"- {resource.mount_path}/ ({access}): {resource.name}"
        if resource.description:
            line += f" — {resource.description}"
        lines.append(line)
        if resource.instructions:
            lines.append(f"  Instructions: {resource.instructions}")
    return "\n".join(lines)
