"""atheris target: HTTP/1.1 heads and chunked bodies into the proxy front.

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_http1.py -max_total_time=300 fuzz/corpus/http1/

See docs/security.md (Fuzzing) and tests/fuzz/targets.py::http1 for the property checked.
"""

from _run import fuzz

if __name__ == "__main__":
    fuzz("http1")
