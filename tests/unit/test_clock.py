"""The shim's clock before EAL is up: the exporter and tools use it alone."""
import subprocess
import sys

# A fresh interpreter: in the test process another test may have started EAL.
PROBE = """
import time
from dataplane import native
a = native.clock_ns()
time.sleep(0.05)
b = native.clock_ns()
print(a, b)
"""


def test_the_clock_runs_without_eal():
    # It divided by the TSC rate, which is 0 until EAL measures it: SIGFPE.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    a, b = map(int, out.stdout.split())
    assert a > 0
    assert 40_000_000 <= b - a < 5_000_000_000  # it advances with real time
