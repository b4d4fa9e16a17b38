"""atheris target: admin JSON bodies through the real Klein app.

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_admin_json.py -max_total_time=300 fuzz/corpus/admin_json/

See docs/security.md (Fuzzing) and tests/fuzz/targets.py::admin_json for the property checked.
"""

from _run import fuzz

if __name__ == "__main__":
    fuzz("admin_json")
