"""posteriordb's two folder layouts: vbayes's (``<name>/data.json`` …, as in ../shared/posteriordb) and a clone of
stan-dev/posteriordb (``posterior_database/``: ``posteriors/<name>.json``, zipped data and draws), told apart from the
folder's contents and read into the same arrays; and the copy shipped in tests/data/posteriordb against ../shared."""

import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vbayes.errors import VBayesError  # noqa: E402
from vbayes.examples import load  # noqa: E402
from vbayes.examples.posteriordb import (  # noqa: E402
    ENV_VAR,
    POSTERIORS,
    list_posteriors,
    load_data,
    load_reference,
    posteriordb_layout,
    posteriordb_target,
    to_unconstrained,
)

SHIPPED = Path(__file__).resolve().parent / "data" / "posteriordb"

from posteriordb_files import ROOT  # noqa: E402
from posteriordb_files import needs_posteriordb as needs_files  # noqa: E402

NONCENTERED, CENTERED, KIDIQ = POSTERIORS[0], POSTERIORS[1], "kidiq-kidscore_momiq"


def _zip(path: Path, member: str, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, json.dumps(obj))


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _as_json(data: dict) -> dict:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in data.items()}


def _chains(draws: np.ndarray, columns) -> list[dict]:
    return [{c: chain[:, j].tolist() for j, c in enumerate(columns)} for chain in draws]


def _posterior(db: Path, name: str, data_name: str, reference: str | None) -> None:
    """``posteriors/<name>.json`` with posteriordb's fields (and a few of its others)."""
    fields = {"name": name, "keywords": [], "model_name": name.split("-")[-1], "data_name": data_name}
    _json(db / "posteriors" / f"{name}.json", fields | {"reference_posterior_name": reference, "dimensions": {}})


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A stan-dev/posteriordb clone in miniature, built from the reference posteriors the tests use: the eight
    schools (both posteriors point at the non-centred draws, stored once) and kidiq, a posterior without reference
    draws, one with draws but no model in vbayes, and a README and R folder at the clone's root."""
    root = tmp_path_factory.mktemp("posteriordb-clone")
    db = root / "posterior_database"
    (root / "R").mkdir()
    (root / "README.md").write_text("posteriordb\n")
    (db / "posteriors" / ".Rhistory").parent.mkdir(parents=True)
    (db / "posteriors" / ".Rhistory").write_text("")
    for name, data_name in ((NONCENTERED, "eight_schools"), (CENTERED, "eight_schools"), (KIDIQ, "kidiq")):
        ref = load_reference(name, ROOT)
        reference = NONCENTERED if name == CENTERED else name
        _posterior(db, name, data_name, reference)
        _zip(db / "data" / "data" / f"{data_name}.json.zip", f"{data_name}.json", _as_json(ref.data))
        draws = _chains(ref.draws, ref.columns)
        _zip(db / "reference_posteriors" / "draws" / "draws" / f"{reference}.json.zip", f"{reference}.json", draws)
        _json(db / "reference_posteriors" / "draws" / "info" / f"{reference}.info.json", {"name": reference})
    _posterior(db, "kidiq-no_reference", "kidiq", None)
    _posterior(db, "toy-unmodelled", "toy", "toy-unmodelled")
    _zip(db / "data" / "data" / "toy.json.zip", "toy.json", {"N": 2, "y": [1, 2]})
    toy = [{"a[1]": [1.0, 2.0], "b": [3.0, 4.0]}, {"a[1]": [5.0, 6.0], "b": [7.0, 8.0]}]
    _zip(db / "reference_posteriors" / "draws" / "draws" / "toy-unmodelled.json.zip", "toy-unmodelled.json", toy)
    return root


@needs_files
def test_a_clone_is_read_from_its_root_or_its_database_folder(clone):
    names = sorted([CENTERED, NONCENTERED, KIDIQ, "kidiq-no_reference", "toy-unmodelled"])
    for root in (clone, clone / "posterior_database"):
        assert posteriordb_layout(root) == "posteriordb"
        assert list_posteriors(root) == names  # every posterior in the folder, modelled here or not
    assert posteriordb_layout(ROOT) in ("vbayes", "posteriordb")


@needs_files
@pytest.mark.parametrize("name", [NONCENTERED, CENTERED, KIDIQ])
def test_a_clone_gives_the_same_arrays_as_the_reference_folder(clone, name):
    ours, theirs = load_reference(name, ROOT), load_reference(name, clone)
    assert theirs.name == name and theirs.columns == ours.columns  # posteriordb's names, e.g. theta[1], in order
    np.testing.assert_array_equal(theirs.draws, ours.draws)
    np.testing.assert_array_equal(theirs.pooled, ours.pooled)
    assert theirs.data.keys() == ours.data.keys()
    for key, value in ours.data.items():
        np.testing.assert_array_equal(theirs.data[key], value)
        assert type(theirs.data[key]) is type(value), key
    # posteriordb stores no summary: computed from the draws, the same fields and numbers as reference_summary.json
    assert set(theirs.summary) == set(ours.summary) and theirs.summary["params"] == list(ours.columns)
    for key in ("mean", "sd", "q05", "q25", "q50", "q75", "q95"):
        np.testing.assert_allclose(theirs.summary[key], ours.summary[key], rtol=1e-12, atol=1e-12)
    assert (theirs.summary["n_chains"], theirs.summary["n_draws_per_chain"]) == ours.draws.shape[:2]
    assert theirs.summary["reference_posterior_name"] == (NONCENTERED if name == CENTERED else name)


@needs_files
def test_a_clone_gives_the_same_target(clone, monkeypatch):
    z = jnp.asarray(to_unconstrained(KIDIQ, load_reference(KIDIQ, ROOT).pooled[:20]))
    ours = jax.vmap(posteriordb_target(KIDIQ, ROOT).log_density)(z)
    np.testing.assert_array_equal(jax.vmap(posteriordb_target(KIDIQ, clone).log_density)(z), ours)
    monkeypatch.setenv(ENV_VAR, str(clone))  # the CLI's posteriordb:NAME reads $VBAYES_POSTERIORDB
    np.testing.assert_array_equal(jax.vmap(load(f"posteriordb:{KIDIQ}").log_density)(z), ours)


@needs_files
def test_a_clone_says_what_it_lacks(clone, tmp_path):
    with pytest.raises(VBayesError, match="no reference draws for 'kidiq-no_reference'.*null"):
        load_reference("kidiq-no_reference", clone)
    assert load_data("kidiq-no_reference", clone)["N"] == 434  # its data still loads
    ref = load_reference("toy-unmodelled", clone)  # data and draws load for any posterior ...
    assert ref.columns == ("a[1]", "b") and ref.draws.shape == (2, 2, 2) and ref.summary["mean"] == [3.5, 5.5]
    with pytest.raises(VBayesError, match=r"no vbayes model.*'toy-unmodelled'.*11 implemented.*kidiq-kidscore_momiq"):
        posteriordb_target("toy-unmodelled", clone)  # ... but only the 11 have a model
    with pytest.raises(VBayesError, match="did you mean 'kidiq-kidscore_momiq'") as info:
        load_reference("kidiq-kidscore_momiqq", clone)
    assert "posteriors/kidiq-kidscore_momiqq.json" in str(info.value)
    db = tmp_path / "posterior_database"
    _posterior(db, KIDIQ, "kidiq", KIDIQ)
    with pytest.raises(VBayesError, match="kidiq.json.zip' is missing") as info:
        load_data(KIDIQ, tmp_path)
    assert str(db / "data" / "data" / "kidiq.json.zip") in str(info.value)
    _zip(db / "data" / "data" / "kidiq.json.zip", "kidiq.json", {"N": 1})
    with pytest.raises(VBayesError, match=r"reference_posteriors/draws/draws/kidiq-kidscore_momiq.json.zip"):
        load_reference(KIDIQ, tmp_path)


def test_zips_and_unzipped_files(tmp_path):
    db = tmp_path
    _posterior(db, "toy-toy", "toy", "toy-toy")
    (db / "data" / "data").mkdir(parents=True)
    (db / "data" / "data" / "toy.json").write_text('{"y": [1, 2]}')  # an unzipped file is read as well
    assert load_data("toy-toy", db)["y"].tolist() == [1.0, 2.0]
    path = db / "reference_posteriors" / "draws" / "draws" / "toy-toy.json.zip"
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("other.json", "[]")
        z.writestr("more.json", "[]")
    with pytest.raises(VBayesError, match=r"should hold one JSON file \('toy-toy.json'\)"):
        load_reference("toy-toy", db)
    path.write_bytes(b"not a zip")
    with pytest.raises(VBayesError, match="cannot read.*BadZipFile"):
        load_reference("toy-toy", db)


def test_a_folder_in_neither_layout_says_what_was_looked_for(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("")
    for call in (list_posteriors, posteriordb_layout):
        with pytest.raises(VBayesError, match="not a posteriordb folder") as info:
            call(tmp_path)
        message = str(info.value)
        assert str(tmp_path) in message and "stan-dev/posteriordb" in message
        assert "posteriors/" in message and "posterior_database/posteriors/" in message and "data.json" in message
    monkeypatch.setenv(ENV_VAR, str(tmp_path))  # through the variable and the CLI's posteriordb:NAME too
    with pytest.raises(VBayesError, match="not a posteriordb folder"):
        load(f"posteriordb:{KIDIQ}")


@pytest.mark.skipif(
    ROOT is None or ROOT.resolve() == SHIPPED.resolve() or not SHIPPED.is_dir(),
    reason="compares tests/data/posteriordb with the reference posteriors it was copied from: needs both "
    f"(../shared/posteriordb in this project's checkout, or {ENV_VAR} naming another copy)",
)
def test_the_shipped_copy_holds_the_same_files():
    """tests/data/posteriordb (what a fresh clone's tests read) holds the same data and draws as the reference
    folder, and its computed summaries are those of reference_summary.json."""
    assert posteriordb_layout(SHIPPED) == "posteriordb" and list_posteriors(SHIPPED) == sorted(POSTERIORS)
    for name in set(POSTERIORS) & set(list_posteriors(ROOT)):
        ours, shipped = load_reference(name, ROOT), load_reference(name, SHIPPED)
        assert shipped.columns == ours.columns, name
        np.testing.assert_array_equal(shipped.draws, ours.draws)
        assert shipped.data.keys() == ours.data.keys(), name
        for key, value in ours.data.items():
            np.testing.assert_array_equal(shipped.data[key], value)
        for key in ("mean", "sd", "q05", "q50", "q95"):
            np.testing.assert_allclose(shipped.summary[key], ours.summary[key], rtol=1e-12, atol=1e-12)
