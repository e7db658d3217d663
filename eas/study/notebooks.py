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

from eas import versions
from eas.core.io import REPO_ROOT
from eas.study.profiles import PROFILES, SOURCE_DIR, ParameterError, notebook_names, profile_values

OUTPUT_DIR = REPO_ROOT / "book" / "notebooks"
KERNEL = "eas"


def run_notebook(name: str, profile: str, output_dir: Path = OUTPUT_DIR, kernel: str | None = KERNEL) -> Path:
    import papermill as pm

    if name not in notebook_names():
        raise ParameterError(f"no notebook {name!r} in {SOURCE_DIR}; expected one of {', '.join(notebook_names())}.")
    params = profile_values(profile, name)
    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / f"{name}.ipynb"
    tmp = output_dir / f".{name}.running.ipynb"
    pm.execute_notebook(str(SOURCE_DIR / f"{name}.ipynb"), str(tmp), parameters=params, kernel_name=kernel,
                        cwd=str(SOURCE_DIR), progress_bar=False, log_output=True)
    record_environment(tmp, profile)
    tmp.replace(out)  # only a notebook that ran to the end replaces the previous copy
    return out


def record_environment(path: Path, profile: str) -> None:
    """Keep the profile and the library versions in the executed notebook's metadata."""
    import nbformat


    nb = nbformat.read(str(path), as_version=4)
    nb.metadata["eas"] = {"profile": profile, "versions": versions()}
    nbformat.write(nb, str(path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument("--profile", default="cpu", choices=PROFILES)
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR)
    parser.add_argument("--kernel", default=KERNEL)
    args = parser.parse_args(argv)
    names = args.names or notebook_names()
    for name in names:
        start = time.time()
        print(f"[{args.profile}] {name} ...", flush=True)
        out = run_notebook(name, args.profile, args.output_dir, args.kernel)
        print(f"[{args.profile}] {name} done in {time.time() - start:.0f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
