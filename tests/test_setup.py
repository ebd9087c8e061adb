"""Setup files agree, profiles are checked, notebooks are stored clean and parameterised."""
import dataclasses
import json
import re

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


def test_every_profile_builds_every_section_into_its_typed_settings():
    for name in profiles.PROFILES:
        p = profiles.get(name)
        for section in profiles.SECTIONS:
            value = getattr(p, section)
            assert dataclasses.is_dataclass(value) and type(value).__dataclass_params__.frozen, (name, section)
    with pytest.raises(AttributeError, match="no section 'pixel_difusion'"):
        profiles.get("cpu").pixel_difusion


def test_code_branches_on_profile_settings_never_on_the_profile_name():
    assert {n: profiles.get(n).weights for n in profiles.PROFILES} == {"smoke": "offline", "cpu": "offline",
                                                                       "paper": "hub"}
    assert {n: profiles.get(n).data.source for n in profiles.PROFILES} == {"smoke": "world8k", "cpu": "world8k",
                                                                           "paper": "flickr8k"}
    by_name = re.compile(r"""profile\s*[!=]=\s*["'](smoke|cpu|paper)["']""")
    found = [f"{f.relative_to(ROOT)}:{i}" for f in sorted((ROOT / "mmlib").rglob("*.py")) if f.name != "profiles.py"
             for i, line in enumerate(f.read_text().splitlines(), 1) if by_name.search(line)]
    assert found == []


def test_a_misspelt_setting_is_an_error_naming_it(monkeypatch):
    from mmlib.settings import SettingsError
    bad = {**profiles.SECTIONS["pixel_diffusion"]["smoke"], "stpes": 10}
    monkeypatch.setitem(profiles.SECTIONS["pixel_diffusion"], "smoke", bad)
    profiles._build.cache_clear()
    try:
        with pytest.raises(SettingsError, match=r"profiles.pixel_diffusion\['smoke'\]: unknown setting 'stpes'"):
            profiles.get("smoke")
        nested = {**profiles.SECTIONS["pixel_diffusion"]["smoke"]}
        nested = {k: v for k, v in bad.items() if k != "stpes"}
        nested["model"] = {**nested["model"], "blok_out_channels": (8,)}
        monkeypatch.setitem(profiles.SECTIONS["pixel_diffusion"], "smoke", nested)
        profiles._build.cache_clear()
        with pytest.raises(SettingsError, match=r"\.model: unknown setting 'blok_out_channels'"):
            profiles.get("smoke")
    finally:
        monkeypatch.undo()
        profiles._build.cache_clear()


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
