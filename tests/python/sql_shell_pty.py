"""Drives `allegro sql` as a person at a terminal would, in a pseudo-terminal: each argument
after `--` is typed as one line (`<UP>` stands for the up-arrow key), waiting for the shell's
prompt (first-line or continuation) before each. Prints what the terminal showed, as JSON {"screen": "..."}.

Usage: sql_shell_pty.py ALLEGRO_ARGS... -- LINE [LINE ...]
"""

import json
import os
import pty
import select
import sys
import time

# The first-line and continuation prompts.
PROMPTS = (b"allegro> ", b"..> ")


def main():
    split = sys.argv.index("--")
    argv, lines = sys.argv[1:split], sys.argv[split + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    screen = b""

    def read_until(markers, after, timeout=120):
        nonlocal screen
        deadline = time.time() + timeout
        while not any(screen.count(m, after) for m in markers):
            if time.time() > deadline:
                raise SystemExit(f"no {markers!r} after {timeout}s; screen: {screen!r}")
            ready, _, _ = select.select([fd], [], [], 1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise SystemExit(f"the shell ended before {markers!r}; screen: {screen!r}")
                screen += chunk

    read_until(PROMPTS[:1], 0)
    for line in lines:
        mark = len(screen)
        os.write(fd, line.replace("<UP>", "\x1b[A").encode() + b"\r")
        if line in ("\\q", "quit", "exit"):
            break
        # The prompt that follows the Enter (a redrawn line after the up arrow shows one too).
        read_until((b"\n",), mark)
        read_until(PROMPTS, screen.index(b"\n", mark))
    _, status = os.waitpid(pid, 0)
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            screen += chunk
    except OSError:
        pass
    print(json.dumps({"screen": screen.decode(errors="replace"), "status": status}))


if __name__ == "__main__":
    main()
