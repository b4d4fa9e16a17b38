"""atheris target: PEM splitting (certificates and keys).

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_pem.py -max_total_time=300 fuzz/corpus/pem/

See docs/security.md (Fuzzing) and tests/fuzz/targets.py::pem for the property checked.
"""

from _run import fuzz

if __name__ == "__main__":
    fuzz("pem")
