"""Run the study's notebooks with papermill under a profile.

    python -m eas.study.notebooks --profile cpu                 # every notebook
    python -m eas.study.notebooks --profile smoke 01_base_model # one

Executed copies go to book/notebooks/ (where the book's table of contents finds them); the
sources in notebooks/ stay without outputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat

from eas import versions
from eas.core.io import REPO_ROOT
from eas.study.profiles import PROFILES, SOURCE_DIR, ParameterError, notebook_names, profile_chapters, profile_values

OUTPUT_DIR = REPO_ROOT / "book" / "notebooks"
KERNEL = "eas"


def run_notebook(name: str, profile: str, output_dir: Path = OUTPUT_DIR, kernel: str | None = KERNEL,
                 parameters: dict | None = None) -> Path:
    """Execute one chapter under `profile`; `parameters` override single values, as papermill's -p does."""
    import papermill as pm

    if name not in notebook_names():
        raise ParameterError(f"no notebook {name!r} in {SOURCE_DIR}; expected one of {', '.join(notebook_names())}.")
    # a bad profile file (or an unset variable it needs) fails here, before a kernel starts
    profile_values(profile, name, provided=set(parameters or {}))
    # the notebook reads the rest itself (eas.study.profiles.resolve_params)
    params = {**(parameters or {}), "profile": profile}
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / f"{name}.ipynb"
    tmp = output_dir / f".{name}.running.ipynb"
    pm.execute_notebook(str(SOURCE_DIR / f"{name}.ipynb"), str(tmp), parameters=params, kernel_name=kernel,
                        cwd=str(SOURCE_DIR), progress_bar=False, log_output=True)
    record_environment(tmp, profile)
    tmp.replace(out)  # only a notebook that ran to the end replaces the previous copy
    return out


# How the rendered page shows a cell (jupyter-book 1.x tags): code folded away, the papermill parameter cells
# removed (the notebook displays its parameters as a table instead).
HIDDEN_CODE, REMOVED = "hide-input", "remove-cell"
PARAMETER_TAGS = ("parameters", "injected-parameters")


def tag_for_reading(nb) -> None:
    """Tag an executed notebook's cells for the book: every code cell's input folded (`hide-input`), the
    parameters cell and papermill's injected one removed. Cells that already carry a display tag keep it."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = list(cell.metadata.get("tags", []))
        if any(t in tags for t in PARAMETER_TAGS):
            tags.append(REMOVED)
        elif not any(t.startswith(("hide-", "remove-")) for t in tags):
            tags.append(HIDDEN_CODE)
        cell.metadata["tags"] = list(dict.fromkeys(tags))


def record_environment(path: Path, profile: str) -> None:
    """Keep the profile and the library versions in the executed notebook's metadata, and tag its cells for
    the book (`tag_for_reading`)."""
    nb = nbformat.read(str(path), as_version=4)
    nb.metadata["eas"] = {"profile": profile, "versions": versions()}
    tag_for_reading(nb)
    nbformat.write(nb, str(path))


def write_toc(profile: str, path: Path) -> Path:
    """A jupyter-book table of contents of the chapters `profile` runs (`make book` builds with it, so a profile
    that runs some chapters renders those, not stale copies of the others)."""
    import yaml

    chapters = [{"file": f"notebooks/{name}"} for name in profile_chapters(profile)]
    toc = {"format": "jb-book", "root": "intro", "chapters": chapters + [{"file": "architecture"}]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by eas.study.notebooks.write_toc: the chapters of profile " + profile + "\n"
                    + yaml.safe_dump(toc, sort_keys=False))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument("--profile", default="cpu", choices=PROFILES)
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR)
    parser.add_argument("--kernel", default=KERNEL)
    parser.add_argument("--toc", type=Path, help="only write the profile's table of contents to this file")
    args = parser.parse_args(argv)
    if args.toc is not None:
        print(f"table of contents of profile {args.profile}: {write_toc(args.profile, args.toc)}")
        return 0
    names = args.names or profile_chapters(args.profile)
    for name in names:
        start = time.time()
        print(f"[{args.profile}] {name} ...", flush=True)
        out = run_notebook(name, args.profile, args.output_dir, args.kernel)
        print(f"[{args.profile}] {name} done in {time.time() - start:.0f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
