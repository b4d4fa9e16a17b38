"""atheris target: ClientHello handling (SNI callback, selection).

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_clienthello.py -max_total_time=300 fuzz/corpus/clienthello/

See docs/security.md (Fuzzing) and tests/fuzz/targets.py::tls for the property checked.
"""

from _run import fuzz

if __name__ == "__main__":
    fuzz("tls")
