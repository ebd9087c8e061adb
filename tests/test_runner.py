"""The runner reruns a notebook exactly when something it executes changed."""
import nbformat

from mmlib import runner


def make_tree(root):
    pkg = root / "mmlib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")    # a function-level import counts
    (pkg / "c.py").write_text("import importlib\nm = importlib.import_module('mmlib.d')\n")
    (pkg / "d.py").write_text("x = 1\n")
    (pkg / "unrelated.py").write_text("y = 2\n")
    (root / "requirements.txt").write_text("torch\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%matplotlib inline\nfrom mmlib import a\nimport os")]
    path = root / "01_x.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_dependencies_follow_relative_nested_and_importlib_imports(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    nb = make_tree(tmp_path)
    names = {p.relative_to(tmp_path / "mmlib").as_posix() for p in runner.dependencies(nb)}
    assert names == {"__init__.py", "a.py", "sub/__init__.py", "sub/b.py", "c.py", "d.py"}
    stamp = runner.inputs_stamp(nb, "cpu")
    (tmp_path / "mmlib" / "unrelated.py").write_text("y = 3\n")
    assert runner.inputs_stamp(nb, "cpu") == stamp            # an edit elsewhere does not rerun it
    (tmp_path / "mmlib" / "d.py").write_text("x = 2\n")
    assert runner.inputs_stamp(nb, "cpu") != stamp            # an edit to what it runs does
    assert runner.inputs_stamp(nb, "smoke") != runner.inputs_stamp(nb, "cpu")


def test_real_notebooks_depend_on_their_own_models_only():
    deps = {nb.name[:2]: {p.relative_to(runner.ROOT).as_posix() for p in runner.dependencies(nb)}
            for nb in runner.notebooks()}
    assert "mmlib/data/world.py" in deps["01"] and not any("t2i" in p or "captioning" in p for p in deps["01"])
    assert "mmlib/captioning/qformer_llm.py" in deps["05"] and "mmlib/captioning/qformer_llm.py" not in deps["04"]
    # 09 times 06 and 07 through importlib.import_module: their code is part of its inputs
    assert {"mmlib/t2i/pixel_diffusion.py", "mmlib/t2i/latent_diffusion.py"} <= deps["09"]
