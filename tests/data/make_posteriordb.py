"""Rebuild ``tests/data/posteriordb`` from ``../shared/posteriordb``: the 11 posteriors in posteriordb's own layout
(a ``posterior_database`` folder as in github.com/stan-dev/posteriordb), zipped as posteriordb zips them.

Every JSON file is copied byte for byte (the data and the reference draws inside their zips); vbayes's own
``reference_summary.json`` and ``noise_floors.json`` are left out (the loader computes the summary from the draws).
The zips have fixed timestamps, so a rebuild from the same files gives the same bytes.

    python tests/data/make_posteriordb.py [SOURCE [DEST]]
"""

import json
import shutil
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / "shared" / "posteriordb"
DEST = HERE / "posteriordb"
STAMP = (2025, 4, 29, 0, 0, 0)  # posteriordb v1.0, the commit the shared files come from


def _put(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path``, or check that the file already written there holds the same bytes."""
    if path.exists():
        if path.read_bytes() != content:
            raise SystemExit(f"two different files for {path}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def _zip(path: Path, member: str, content: bytes) -> None:
    """``path``: a zip holding ``member`` with ``content`` (deflated, fixed timestamp)."""
    if path.exists():
        with zipfile.ZipFile(path) as z:
            if z.read(member) != content:
                raise SystemExit(f"two different files for {path}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    info = zipfile.ZipInfo(member, STAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(info, content, compresslevel=9)


def build(source: Path, dest: Path) -> None:
    """Write the copy of ``source`` (vbayes's layout) to ``dest`` (posteriordb's layout), replacing it."""
    if dest.exists():
        shutil.rmtree(dest)
    for folder in sorted(p for p in source.iterdir() if (p / "posterior.json").is_file()):
        raw = (folder / "posterior.json").read_bytes()
        posterior = json.loads(raw)
        data, model, reference = posterior["data_name"], posterior["model_name"], posterior["reference_posterior_name"]
        _put(dest / "posteriors" / f"{folder.name}.json", raw)
        _zip(dest / "data" / "data" / f"{data}.json.zip", f"{data}.json", (folder / "data.json").read_bytes())
        _put(dest / "data" / "info" / f"{data}.info.json", (folder / "data_info.json").read_bytes())
        _put(dest / "models" / "info" / f"{model}.info.json", (folder / "model_info.json").read_bytes())
        draws = dest / "reference_posteriors" / "draws"
        _zip(
            draws / "draws" / f"{reference}.json.zip",
            f"{reference}.json",
            (folder / "reference_draws.json").read_bytes(),
        )
        _put(draws / "info" / f"{reference}.info.json", (folder / "info.json").read_bytes())
    shutil.copyfile(source / "LICENSE", dest / "LICENSE")


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE, Path(sys.argv[2]) if len(sys.argv) > 2 else DEST)
