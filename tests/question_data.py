"""Test access to scripts/make_question_pairs.py (scripts/ is not a package)."""
import importlib.util
import os

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                     "make_question_pairs.py")
_spec = importlib.util.spec_from_file_location("make_question_pairs", _PATH)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

make_pairs = _module.make_pairs
write_pairs = _module.write_pairs
