"""atheris target: the admin listener's HTTP/1.1 channel.

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_admin_channel.py -max_total_time=300 fuzz/corpus/admin_channel/

See docs/security.md (Fuzzing) and tests/fuzz/targets.py::admin_channel for the property checked.
"""

from _run import fuzz

if __name__ == "__main__":
    fuzz("admin_channel")
