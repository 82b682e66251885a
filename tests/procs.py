"""Process checks the tests share: whether a pid is a live (non-zombie) process, and a process's llama-server
children, read from /proc (Linux)."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its parent counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def llama_children(pid: int) -> set[int]:
    """Process ids of the llama-server processes whose parent is ``pid``."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if comm.startswith("llama-server") and int(rest[1]) == pid:
            out.add(int(stat.parent.name))
    return out
