"""The `srpose` command as a shell sees it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_reader_that_leaves_early_stops_the_command_quietly() -> None:
    """`srpose list | head -1`: the pipe's reader is gone before the listing is written; the command ends with
    128 + SIGPIPE and no traceback (Python ignores SIGPIPE, so the write raises BrokenPipeError)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "srpose.cli", "list"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == "", (proc.returncode, proc.stderr[-2000:])
