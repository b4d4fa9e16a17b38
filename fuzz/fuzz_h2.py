"""atheris target: HTTP/2 frames into the proxy front.

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_h2.py -max_total_time=300 fuzz/corpus/h2/

See docs/security.md (Fuzzing) and tests/fuzz/targets.py::h2_frames for the property checked.
"""

from _run import fuzz

if __name__ == "__main__":
    fuzz("h2_frames")
