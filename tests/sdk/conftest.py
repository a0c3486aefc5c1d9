"""Every test gets a hard time limit: a hang fails that test (with every
thread's stack printed) instead of stalling the run."""
import faulthandler
import signal
import sys

import pytest

LIMIT_S = 150


@pytest.fixture(autouse=True)
def _time_limit(request):
    def expired(signo, frame):
        raise TimeoutError(f"{request.node.name} ran over {LIMIT_S} s")

    faulthandler.dump_traceback_later(LIMIT_S - 10, exit=False, file=sys.stderr)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        faulthandler.cancel_dump_traceback_later()


# Where it was when the wrapper's timeout ends the run.
faulthandler.register(signal.SIGTERM, file=sys.stderr, all_threads=True, chain=True)
