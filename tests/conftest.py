"""Test-wide setup: the helpers in tests/ (sandbox, victims, fakeproc) are
importable by name. The package under test is the installed one."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
