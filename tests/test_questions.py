"""The question examples (``examples/qNN_*.py``): each runs in ``--quick`` mode and shows the truth it claims;
the registry, the doc pages and ``vbayes examples --questions`` agree with each other."""

import jax

jax.config.update("jax_enable_x64", True)

import importlib.util  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from vbayes.cli import app  # noqa: E402
from vbayes.questions import QUESTIONS, REPO, get, list_questions  # noqa: E402

READY = list_questions(ready_only=True)


def example(number: int) -> ModuleType:
    """Import ``examples/qNN_*.py`` as a module (its ``main(argv)`` returns the numbers it prints)."""
    path = REPO / get(number).script
    spec = importlib.util.spec_from_file_location(f"question_{number:02d}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_quick(number: int, tmp_path: Path) -> dict:
    result = example(number).main(["--quick", "--out", str(tmp_path)])
    pngs = list(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 5_000 for p in pngs), pngs
    return result


# ----------------------------------------------------------------------------------------------
# registry, pages, README, command line


def test_registry_numbers_paths_and_pages():
    assert [q.number for q in QUESTIONS] == list(range(1, 15))
    assert {q.number for q in QUESTIONS if q.status == "planned"} == set()
    index = (REPO / "docs" / "questions.md").read_text(encoding="utf-8")
    for q in READY:
        script, page = REPO / q.script, REPO / q.doc
        assert script.is_file() and page.is_file(), q
        text = page.read_text(encoding="utf-8")
        assert q.command in text, f"{q.doc} does not give the command {q.command}"
        for figure in re.findall(r"\]\((figures/[^)]+\.png)\)", text):
            assert (REPO / "docs" / figure).is_file(), figure
            assert (REPO / "docs" / figure).stat().st_size < 200_000, figure
        assert re.search(r"\]\(figures/[^)]+\.png\)", text), f"{q.doc} shows no figure"
        assert Path(q.doc).name in index, f"docs/questions.md does not link {q.doc}"
        assert "def main(argv" in script.read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/questions.md" in readme and all(q.doc in readme for q in READY)


def test_cli_lists_the_questions():
    result = CliRunner().invoke(app, ["examples", "--questions"])
    assert result.exit_code == 0, result.output
    for q in READY:
        assert Path(q.script).name in result.output
    assert ("planned" in result.output) == any(q.status == "planned" for q in QUESTIONS)


@pytest.mark.slow
def test_script_runs_from_the_command_line(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / get(11).script), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "KL by Monte Carlo" in out and (tmp_path / "q11_gaussian_kl.png").is_file()


# ----------------------------------------------------------------------------------------------
# each example's truths


@pytest.mark.slow
def test_q01_mean_field_underestimates_and_its_diagnostics_say_so(tmp_path):
    r = run_quick(1, tmp_path)
    (only,) = r.values()
    table = only["table"]
    assert only["recommended"] == "advi-fullrank"
    assert not table.loc["advi-meanfield", "trusted"] and table.loc["advi-meanfield", "sd_ratio_min"] < 0.5
    assert table.loc["advi-fullrank", "accurate"]


@pytest.mark.slow
def test_q02_em_map_and_cavi_share_code_and_vb_collapses_to_map(tmp_path):
    r = run_quick(2, tmp_path)
    assert r["same_code"]
    rows = r["rows"]
    for key in ("vb_vs_map_means", "posterior_sd_of_means", "gap_per_point", "map_vs_em_means"):
        values = [row[key] for row in rows]
        assert all(b < a for a, b in zip(values, values[1:], strict=False)), (key, values)
    assert r["slope"] < -0.7 and -0.6 < r["sd_slope"] < -0.4


def test_q03_pixel_mean_loss_is_beta_d_and_decoder_sd_is_a_hidden_beta():
    from vbayes.vae import load_digits

    r = example(3).identities(load_digits().train)
    assert r["d"] == 64
    assert r["pixel_mean_times_d"] == pytest.approx(r["beta_d_loss"], rel=1e-9)
    assert r["sigma_lhs"] == pytest.approx(r["sigma_rhs"], rel=1e-9)  # a fixed decoder sd is a hidden beta


@pytest.mark.slow
def test_q03_heavier_kl_weights_collapse_the_latent_units(tmp_path):
    r = run_quick(3, tmp_path)
    assert r["pixel_mean_times_d"] == pytest.approx(r["beta_d_loss"], rel=1e-9)
    rows = list(r["rows"].values())
    elbo_1, beta_4, beta_d = rows[0], rows[1], rows[2]
    assert elbo_1["active"] > beta_d["active"] and elbo_1["kl"] > beta_d["kl"] + 1
    assert beta_d["kl"] < 0.1 and beta_4["kl"] <= elbo_1["kl"]
    assert elbo_1["elbo"] > beta_d["elbo"] + 1  # the ELBO-trained model has the better ELBO
    sd_01, sd_03, sd_mse = rows[3], rows[4], rows[5]
    assert sd_01["kl"] > sd_03["kl"] > sd_mse["kl"] and sd_mse["active"] == 0


@pytest.mark.slow
def test_q04_vae_is_a_density_generator_and_encoder(tmp_path):
    r = run_quick(4, tmp_path)
    assert r["elbo"] <= r["iwae"] + 0.05  # the ELBO is the looser bound
    assert r["iwae"] > r["independent_pixels"] + 1  # the latent variables explain dependence between pixels
    assert r["active_units"] >= 2 and r["kl"] > 1
    assert r["accuracy"]["latent_all"] > 0.7  # the 16 codes keep the digit's identity


@pytest.mark.slow
def test_q05_vae_samples_from_the_prior_and_scores_anomalies(tmp_path):
    r = run_quick(5, tmp_path)
    assert r["vae_sample_nn"] < 0.5 * r["ae_sample_nn"]  # decoded N(0, I) draws: digits for the VAE only
    assert r["vae_code_log_prior"] > r["ae_code_log_prior"]
    assert r["iwae_anomaly"] < r["iwae_normal"] - 2  # unseen 7s are less probable under the VAE
    assert all(auc > 0.7 for auc in r["aucs"].values())


@pytest.mark.slow
def test_q06_wider_decoders_fit_the_training_digits_better(tmp_path):
    rows = run_quick(6, tmp_path)["rows"]
    assert rows[-1]["train_elbo"] > max(rows[0]["train_elbo"], rows[1]["train_elbo"]) + 1
    for row in rows:
        assert row["test_elbo"] <= row["test_iwae"] + 0.05
        assert 0 <= row["active"] <= 16


@pytest.mark.slow
def test_q07_enumeration_grid_and_elbo(tmp_path):
    r = run_quick(7, tmp_path)
    assert r["grid"] == pytest.approx(r["exact"], abs=1e-6)
    assert r["elbo"] <= r["exact"]
    assert r["elbo"] + math.log(2) == pytest.approx(r["exact"], abs=0.05)  # two symmetric, separated modes


@pytest.mark.slow
def test_q08_grid_cost_grows_with_dimension_and_the_others_do_not(tmp_path):
    r = run_quick(8, tmp_path)
    rows = r["rows"]
    needed = [row["quad_evals_needed"] for row in rows]
    assert all(b > a for a, b in zip(needed, needed[1:], strict=False)), needed
    for row in rows:
        assert abs(row["is_error"]) < 0.02
        assert row["elbo_gap"] > -0.01
        assert abs(row["laplace_error"]) > abs(row["is_error"])


@pytest.mark.slow
def test_q09_evidence_gap_equals_kl(tmp_path):
    r = run_quick(9, tmp_path)
    assert r["worst_z"] < 5
    for row in r["rows"].values():
        assert row["gap"] == pytest.approx(row["kl"], abs=5 * row["se"] + 1e-6)
    assert r["shifted_change"] == pytest.approx(-1000.0, abs=1e-6)


@pytest.mark.slow
def test_q10_score_function_variance_exceeds_reparameterised(tmp_path):
    r = run_quick(10, tmp_path)
    assert all(ratio > 1 for ratio in r["ratios"].values())
    assert r["ratios"]["away", 1] > 100
    stl = [v for (name, s), v in r["at_exact"].items() if name.startswith("sticking")]
    rep = [v for (name, s), v in r["at_exact"].items() if name.startswith("reparameterised")]
    assert max(stl) < 1e-12 < min(rep)
    assert r["bias_z"] < 5


def test_q11_both_kl_formulas_agree_with_monte_carlo(tmp_path):
    r = run_quick(11, tmp_path)
    assert r["with_log_var"] == pytest.approx(r["with_log_scale"], rel=1e-12)
    assert r["general"] == pytest.approx(r["with_log_var"], rel=1e-10)
    assert abs(r["monte_carlo"] - r["with_log_var"]) < 4 * r["monte_carlo_se"]
    assert abs(r["monte_carlo"] - r["mixed_up"]) > 10 * r["monte_carlo_se"]
    for (_, mc, se), right in zip(r["curve_mc"], r["curve_right"], strict=True):
        assert abs(mc - right) < 4 * se + 1e-3


@pytest.mark.slow
def test_q12_monte_carlo_vb_reaches_the_exact_optimum(tmp_path):
    r = run_quick(12, tmp_path)
    assert r["elbo_star"] <= r["log_z"]
    assert -0.6 < r["slope"] < -0.4
    for fit in r["fits"].values():
        assert fit["kl_to_qstar"] < 0.02
        assert r["elbo_star"] - fit["elbo"] > -1e-6  # q* is the optimum


@pytest.mark.slow
def test_q13_laplace_curvatures_agree_with_dense_and_truncation_does_not(tmp_path):
    r = run_quick(13, tmp_path)["results"]
    for name in ("lowrank (adaptive)", "ggn (adaptive)"):
        assert r[name]["error_mean"] < 0.05, (name, r[name])
    assert r["lowrank rank 25"]["error_mean"] > 1.0  # truncation leaves data-informed directions at the prior
    assert r["lowrank (adaptive)"]["log_evidence"] == pytest.approx(r["ggn (adaptive)"]["log_evidence"], abs=2.0)


@pytest.mark.slow
def test_q14_svi_reaches_cavis_answer(tmp_path):
    r = run_quick(14, tmp_path)
    assert abs(r["gap"]) < 0.01
    assert r["distance"] < 0.1
    assert np.sum(r["svi"].weights_ > 0.01) == np.sum(r["cavi"].weights_ > 0.01) == 6
