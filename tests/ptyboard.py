"""The unix port on a PTY, as mpremote sees a board (TOOLCHAIN §5): socat
runs `micropython` on a pseudo-terminal; `mpremote connect <link> resume`
then talks to it over the raw REPL like to a USB board. Its filesystem is
the host's, so files mpremote writes land where the test looks."""
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import MICROPYTHON


@pytest.fixture
def unix_board(tmp_path):
    socat = shutil.which("socat")
    if not socat:
        pytest.skip("socat is not installed (apt-get install socat)")
    link = tmp_path / "tty"
    p = subprocess.Popen([socat, "PTY,link=%s,raw,echo=0" % link,
                          "EXEC:%s,pty,raw,echo=0,stderr,setsid,ctty" % MICROPYTHON],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    for _ in range(200):
        if link.exists():
            break
        time.sleep(0.01)
    yield str(link)
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    p.wait(5)
