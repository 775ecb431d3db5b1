"""The unix port with a MICROPYPATH of the caller's choosing and nothing else.

conftest.run_mp always puts lib/ on the path, which would hide a broken
install; the packaging tests (mip, .mpy, deploy, board profiles) run what
they installed or built from where they put it, plus .frozen. HOME points at
`cwd`, so ~/.micropython/lib cannot leak in either.
"""
import os
import subprocess

import pytest

from conftest import MICROPYTHON


def run_isolated(code, path, cwd, *, heapsize=None, args=(), timeout=60, check=False):
    """Run `code` (or, with code None, the script in `args`) and return the
    CompletedProcess; check=True fails the test on a non-zero exit."""
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([str(p) for p in path] + [".frozen"])
    env["HOME"] = str(cwd)
    cmd = [MICROPYTHON] + (["-X", "heapsize=" + heapsize] if heapsize else [])
    cmd += (["-c", code] if code is not None else []) + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if check and r.returncode != 0:
        pytest.fail("micropython exited %d\n--- stdout\n%s\n--- stderr\n%s"
                    % (r.returncode, r.stdout[-6000:], r.stderr[-3000:]))
    return r
