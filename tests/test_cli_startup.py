"""`weightspace --help` starts fast: building the command tree imports no torch, numpy or mesh library.

Each command imports what it needs inside its function; a module-level import of a heavy library in
src/weightspace/cli/ (or in a light module they import) made every invocation pay ~1.5 s for it.
"""

import subprocess
import sys

HEAVY = ("torch", "numpy", "scipy", "trimesh", "skimage", "safetensors", "peft", "matplotlib")

PROBE = f"""
import sys
import weightspace.cli as c
c._register()
heavy = [m for m in {HEAVY!r} if m in sys.modules]
assert not heavy, f"building the CLI imported {{heavy}}"
"""


def test_building_the_command_tree_imports_no_heavy_library():
    """In a fresh interpreter: this test process has imported torch long ago."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_help_of_every_group_runs_without_them():
    probe = PROBE + """
from typer.testing import CliRunner
for group in ([], ["data"], ["analyze"], ["train"], ["train", "latent-diffusion"], ["train", "neural-field"], ["generate"],
              ["evaluate"], ["population"], ["subspace"], ["experiment"], ["experiment", "fit"], ["demo"]):
    result = CliRunner().invoke(c.app, [*group, "--help"])
    assert result.exit_code == 0, (group, result.output)
heavy = [m for m in {heavy!r} if m in sys.modules]
assert not heavy, f"--help imported {{heavy}}"
""".format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_runtime_names_still_import_from_the_package():
    from weightspace.runtime import InputError, pick_device, read_json, seed_everything  # noqa: F401
    from weightspace.runtime.errors import InputError as defined

    assert InputError is defined
