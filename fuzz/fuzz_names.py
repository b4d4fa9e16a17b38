"""atheris target: hostname normalisation and wildcard matching.

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_names.py -max_total_time=300 fuzz/corpus/names/

See docs/security.md (Fuzzing) and tests/fuzz/targets.py::names for the property checked.
"""

from _run import fuzz

if __name__ == "__main__":
    fuzz("names")
