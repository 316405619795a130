"""cnnjax's one logger: `cnnjax: ` lines on stderr (`cnnjax: warning: ` for warnings), its own level, and on several processes
only process 0 speaks, except errors."""

import os
import socket
import subprocess
import sys

from conftest import REPO
from cnnjax.logs import logger, set_log_level

SPEAK = """
import sys
from cnnjax.parallel import initialize_distributed
initialize_distributed(sys.argv[1], 2, int(sys.argv[2]))
from cnnjax.logs import logger
logger.info("info from process %s", sys.argv[2])
logger.warning("warning from process %s", sys.argv[2])
logger.error("error from process %s", sys.argv[2])
"""


def test_messages_are_cnnjax_lines_and_the_level_quiets_info(capsys):
    try:
        logger.info("one")
        set_log_level("warning")
        logger.info("two")
        logger.warning("three")
        set_log_level("debug")
        logger.debug("four")
    finally:
        set_log_level("info")
    assert capsys.readouterr().err.splitlines() == ["cnnjax: one", "cnnjax: warning: three",
                                                    "cnnjax: four"]


def test_on_two_processes_only_process_0_speaks_except_errors(tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    workers = [subprocess.Popen([sys.executable, "-c", SPEAK, f"localhost:{port}", str(index)],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for index in range(2)]
    (_, chief), (_, other) = [worker.communicate(timeout=300) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], chief + other
    lines = lambda err: [line for line in err.splitlines() if line.startswith("cnnjax: ")]
    assert lines(chief) == ["cnnjax: info from process 0",
                            "cnnjax: warning: warning from process 0",
                            "cnnjax: error: error from process 0"]
    assert lines(other) == ["cnnjax: error: error from process 1"]
