"""Write a notebook from a compact cell list (a tool for authors; notebooks are committed without outputs).

    cells = [("md", "# Title"), ("code", "x = 1", ["parameters"]), ...]
    write("notebooks/01_data.ipynb", cells)
"""
from __future__ import annotations

import nbformat

KERNEL = {"name": "mmlib", "display_name": "Python (mmlib)", "language": "python"}


def write(path: str, cells: list[tuple]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, src, *tags) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        if tags:
            cell.metadata["tags"] = tags[0]
        cell.id = f"c{i:02d}"  # stable ids keep diffs small
        nb.cells.append(cell)
    nbformat.write(nb, path)
