"""Setup files agree, profiles are checked, notebooks are stored clean and parameterised."""
import json
import re
from pathlib import Path

import pytest

from mmlib import profiles
from mmlib.paths import ROOT


def pins(lines):
    return sorted(l.strip() for l in lines if l.strip() and not l.strip().startswith("#"))


def test_environment_yml_pins_equal_requirements():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in env
    pip = [l.split("- ", 1)[1] for l in env.splitlines() if re.match(r"^\s{6}- ", l)]
    assert pins(pip) == req


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown profile 'laptop'.*smoke, cpu, paper"):
        profiles.get("laptop")


def test_every_profile_has_every_section():
    for name in profiles.PROFILES:
        view = profiles.get(name)
        assert set(view) == set(profiles.SECTIONS)


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs_and_parameterised(nb):
    doc = json.loads(nb.read_text())
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{nb.name} has outputs: strip them (nbstripout) before committing"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{nb.name}: exactly one cell tagged 'parameters'"
    assert "profile: str" in "".join(tagged[0]["source"])
    assert doc["metadata"]["kernelspec"]["name"] == "mmlib"


def test_papermill_lists_typed_parameters():
    import papermill as pm
    for nb in NOTEBOOKS:
        params = pm.inspect_notebook(str(nb))
        assert params["profile"]["inferred_type_name"] == "str", nb.name
