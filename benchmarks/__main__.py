"""``python -m benchmarks``: pin thread counts before numpy loads, then run the benchmark."""

from __future__ import annotations

import sys

from benchmarks import pin_thread_env


def _threads(argv: list[str]) -> int:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv) and argv[i + 1].isdigit():
            return int(argv[i + 1])
        if a.startswith("--threads=") and a.split("=", 1)[1].isdigit():
            return int(a.split("=", 1)[1])
    return 1


pin_thread_env(_threads(sys.argv[1:]))

from benchmarks.run import main  # noqa: E402  (numpy must load after the thread variables are set)

sys.exit(main())
