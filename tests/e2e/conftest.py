import shutil
import tempfile
from pathlib import Path

import pytest
from daemon_harness import VenueProcess


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def short_dir(request):
    """A short path under /tmp (Unix socket paths are limited to 107 bytes).

    When the test fails, the tails of the daemon and venue logs are printed.
    """
    path = Path(tempfile.mkdtemp(prefix="stk-", dir="/tmp"))
    yield path
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        keep = Path("/tmp/stockade-e2e-failures") / request.node.name
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
        for log in sorted(path.glob("*.log")):
            shutil.copy(log, keep / log.name)
            print(
                f"\n===== {log.name}, kept in {keep} (last 20000 chars) =====\n{log.read_text(errors='replace')[-20000:]}"
            )
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def venue(short_dir):
    v = VenueProcess(short_dir / "venue")
    yield v
    v.stop()
