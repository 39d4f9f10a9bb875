"""Which live processes mention a text (a server's work directory): proof that teardown left nothing behind."""

from __future__ import annotations

from pathlib import Path


def live_processes_mentioning(text: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose command line mentions ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue  # gone meanwhile
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
