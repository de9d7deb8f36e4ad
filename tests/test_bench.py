"""Every bench runs at smoke size and ends with its machine-readable line, so a bench that breaks fails the
tests; the summary of a full run and the README table made from it keep every figure."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedscore.proctable import descendants

from conftest import SHARED_DATA

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH_DIR))

from figures import Figure, bench_scripts, figure_names, parse_last_line  # noqa: E402
from summary import README_BEGIN, README_END, read_summary, readme_table, replace_readme_table, rows_of, write_summary  # noqa: E402

FIGURES = {   # what each bench's last line must name
    "audience": ["audience_answer_ms", "audience_users_per_second", "audience_read_ms"],
    "dispute": ["dispute_consent_bundle_bytes", "dispute_consent_check_ms", "dispute_fee_bundle_bytes",
                "dispute_fee_check_ms", "dispute_fee_partner_check_ms"],
    "epoch": ["epoch_seconds", "epoch_inline_seconds", "epoch_obfuscation_seconds", "epoch_binned_seconds"],
    "ledger": ["ledger_verify_blocks_per_second", "ledger_append_blocks_per_second"],
    "monitor": ["monitor_seconds", "monitor_review_seconds", "monitor_log_record_us"],
    "observer": ["observer_catchup_blocks_per_second"],
    "paillier": ["paillier_encrypt_per_second", "paillier_inner_rows_per_second", "paillier_decrypt_per_second"],
    "psi": ["psi_ids_per_second", "psi_peak_mib"],
    "psi_oprf": ["psi_oprf_ours_ids_per_second", "psi_oprf_best_ids_per_second", "psi_oprf_best_peak_mib"],
    "ray_engine": ["ray_epoch_seconds", "ray_epoch_one_worker_seconds", "ray_speedup_two_workers"],
    "scale": ["scale_epoch_seconds", "scale_peak_mib"],
    "scorecard": ["scorecard_test_auc", "scorecard_auc_gap", "scorecard_brier", "scorecard_brier_gap",
                  "scorecard_mean_pd_gap", "scorecard_raw_test_auc", "scorecard_raw_brier"],
    "scoring": ["scoring_p99_ms", "scoring_p50_ms", "scoring_per_second"],
    "tls": ["tls_call_us", "tls_caller_check_us"],
    "verification": ["verification_check_ms", "verification_part_bytes"],
}
GOALS = {"ledger_verify_blocks_per_second", "psi_ids_per_second", "scoring_p99_ms", "scoring_per_second",
         "scorecard_auc_gap", "scorecard_brier_gap", "scorecard_mean_pd_gap", "psi_oprf_ours_ids_per_second"}
BASELINES = {"audience_answer_ms", "epoch_seconds", "epoch_inline_seconds", "epoch_binned_seconds", "ledger_verify_blocks_per_second",
             "paillier_encrypt_per_second", "paillier_inner_rows_per_second", "paillier_decrypt_per_second", "tls_call_us",
             "scorecard_test_auc", "scorecard_brier", "psi_oprf_best_ids_per_second", "psi_oprf_best_peak_mib",
             "ray_epoch_seconds", "ray_epoch_one_worker_seconds", "ray_speedup_two_workers"}
NEEDS_SHARED_DATA = {"epoch"}
SMOKE_SECONDS = 600   # a bound for a very busy machine, not an expectation


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """{bench: (exit code, output)}, every bench started at once with --smoke: most of their time is spent
    waiting on daemons, so together they take little longer than the slowest alone."""
    folder = tmp_path_factory.mktemp("smoke")
    runs = {}
    for script in bench_scripts():
        if script.stem in NEEDS_SHARED_DATA and not SHARED_DATA.is_dir():
            continue
        log = (folder / f"{script.stem}.log").open("w")
        runs[script.stem] = (subprocess.Popen([sys.executable, str(script), "--smoke"], stdout=log,
                                              stderr=subprocess.STDOUT, cwd=script.parent), log)
    results = {}
    for name, (process, log) in runs.items():
        try:
            process.wait(timeout=SMOKE_SECONDS)
        except subprocess.TimeoutExpired:
            for left in [*descendants(process.pid), process]:   # its daemons run in sessions of their own
                os.kill(left.pid, signal.SIGKILL)
            process.wait()
        log.close()
        results[name] = (process.returncode, Path(log.name).read_text())
    return results


def test_every_bench_is_listed_here():
    assert sorted(s.stem for s in bench_scripts()) == sorted(FIGURES)


@pytest.mark.slow
@pytest.mark.parametrize("bench", sorted(FIGURES))
def test_each_bench_runs_at_smoke_size_and_ends_with_its_figures(bench, smoke_runs):
    if bench not in smoke_runs:
        pytest.skip("the shared data folder is not beside the repository")
    returncode, output = smoke_runs[bench]
    assert returncode == 0, output[-3000:]
    pairs = parse_last_line(output.strip().splitlines()[-1])
    assert figure_names(pairs) == FIGURES[bench]
    for name in FIGURES[bench]:
        float(pairs[name])
        assert (f"{name}_baseline" in pairs) == (name in BASELINES), name
        has_goal = f"{name}_goal_min" in pairs or f"{name}_goal_max" in pairs
        assert has_goal == (name in GOALS) and (f"{name}_met" in pairs) == has_goal, name
        if has_goal:
            assert pairs[f"{name}_met"] in ("yes", "no")
            assert ("goal ≥" in output or "goal ≤" in output) and "met" in output   # beside the figure, for a reader


def test_a_figure_says_whether_its_goal_is_met():
    assert Figure("x_per_second", 12000, at_least=10000).pairs() == ["x_per_second=12000", "x_per_second_goal_min=10000",
                                                                     "x_per_second_met=yes"]
    assert Figure("x_ms", 25, at_most=20).line() == "x_ms = 25; goal ≤ 20: not met"
    assert "×0.5" in Figure("y", 1.0, 2.0, "plain").line()
    with pytest.raises(ValueError):
        parse_last_line("figures: 3 blocks")


def test_the_summary_and_the_readme_table_keep_every_figure(tmp_path):
    pairs = parse_last_line("a_per_second=300 a_per_second_baseline=100 a_per_second_goal_min=200 a_per_second_met=yes "
                            "b_ms=4.5")
    rows = rows_of("ledger", pairs, 0.25, 1.5, "python bench/ledger.py")
    summary = tmp_path / "2026-01-02.md"
    write_summary(summary, rows, "Benchmarks")
    assert read_summary(summary) == rows
    assert [r.cells()[1:] for r in rows] == [
        ("a_per_second", "300", "100", "3", "≥ 200", "met", "0.25", "1.50", "`python bench/ledger.py`"),
        ("b_ms", "4.5", "", "", "", "", "0.25", "1.50", "`python bench/ledger.py`")]
    readme = f"intro\n{README_BEGIN}\nold table\n{README_END}\nafter\n"
    written = replace_readme_table(readme, readme_table(read_summary(summary), "bench/results/2026-01-02.md"))
    assert written.startswith("intro\n") and written.endswith(f"{README_END}\nafter\n") and "old table" not in written
    assert "| a_per_second | 300 | 100 | 3 | ≥ 200 (met) | `python bench/ledger.py` |" in written
    assert "bench/results/2026-01-02.md" in written
