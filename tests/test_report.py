"""`llmopt report`: Markdown tables per GPU and across GPUs, and the two PNG figures."""

import json
import sys

import pytest
from test_compare import cell, matrix, saved_run

from llmopt import cli, plots, report
from llmopt.compare import load_run

PNG = b"\x89PNG\r\n\x1a\n"


def two_gpus(tmp_path):
    h200 = matrix()
    h200[4].update(peak_memory_bytes=464 * 2**20, quality=24.6,  # dialogsum/naive
                   bandwidth_floor_fraction=0.071, kernels_per_token=219.6, device_busy_fraction=0.153)
    ss = [cell(d, "ss", 600.0, mean_accepted_tokens=2.5, acceptance_ratio=0.62, acceptance_per_depth=[0.8, 0.5],
               step_prepare_s=0.0004, step_verify_s=0.0003) for d in ("spider", "dialogsum", "e2e_nlg")]
    sweep = [cell("e2e_nlg", "ss", 300.0 + 500 * a, simulated=True, acceptance_ratio=a) for a in (0.2, 0.5, 0.8)]
    a = saved_run(tmp_path / "h200/0001_foundation.json", h200 + ss + sweep)
    b = saved_run(tmp_path / "h100/0001_foundation.json", matrix({"hf": 120.0, "naive": 240.0}),
                  gpu="NVIDIA H100 80GB HBM3", when="2026-11-27T10:00:00+00:00")
    return a, b


def test_markdown_per_gpu_and_across_gpus(tmp_path):
    a, b = two_gpus(tmp_path)
    text = report.markdown([load_run(a), load_run(b)])
    assert text == report.markdown([load_run(a), load_run(b)])  # deterministic
    assert "## Across GPUs" in text and "| technique | dataset | NVIDIA H200 | NVIDIA H100 80GB HBM3 |" in text
    assert "| hf | Spider | 140.0 (0.50×) | 120.0 (0.50×) |" in text
    assert "| half | Spider | 220.0 (0.79×) | – |" in text
    assert "## NVIDIA H200" in text and "## NVIDIA H100 80GB HBM3" in text
    assert "- date: 2026-11-27 10:00 UTC" in text
    assert "- software: driver 580.159.04, CUDA 13.0, torch 2.11.0+cu130, transformers 5.17.0, Python 3.12.3" in text
    assert "- workload: model 125m; 32 prompts, up to 128 new tokens, 2 rounds" in text
    assert "| technique | Spider | DialogSum | E2E-NLG |" in text
    assert "| hf (fp32) | 140.0 (133–146) | 140.0 (133–146) | 140.0 (133–146) |" in text
    assert "| half (fp16) | 0.79× | 0.79× | 0.79× |" in text
    assert "| ss (fp32) | 2.14× | 2.14× | 2.14× |" in text
    assert "| naive | DialogSum | 1.00 | – | 464 | ROUGE-L 24.6 | 1.00 | 0.07 | 220 | 0.15 |" in text
    assert "| ss | DialogSum | 2.50 | 0.62 | 400 | ROUGE-L 50.0 | 1.00 | – | – | – |" in text  # not profiled: no figures
    assert "| ss | Spider | 2.50 | 0.62 | 400 | EM 50.0 | 1.00 |" in text
    assert "300.0" not in text.split("## NVIDIA H200")[1]  # simulated points are not measurements


def test_cli_report_writes_markdown_and_pngs(tmp_path, capsys):
    a, b = two_gpus(tmp_path)
    out = tmp_path / "results"
    assert cli.main(["report", str(a), str(b), "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["NVIDIA-H100-80GB-HBM3-0001-foundation-acceptance.png",
                     "NVIDIA-H100-80GB-HBM3-0001-foundation-step-time.png",
                     "NVIDIA-H200-0001-foundation-acceptance.png", "NVIDIA-H200-0001-foundation-step-time.png",
                     "benchmarks.md"]
    for png in out.glob("*.png"):
        data = png.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    text = (out / "benchmarks.md").read_text()
    assert "![time per decoding step](NVIDIA-H200-0001-foundation-step-time.png)" in text
    assert "wrote" in capsys.readouterr().out


def test_plots_draw_runs_without_speculative_cells(tmp_path):
    run = load_run(saved_run(tmp_path / "run.json", matrix()))
    assert plots.acceptance_plot(run, tmp_path / "a.png").read_bytes().startswith(PNG)
    assert plots.step_time_plot(run, tmp_path / "s.png").read_bytes().startswith(PNG)


def test_report_without_matplotlib_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "llmopt.plots", None)  # import fails as if matplotlib were missing
    monkeypatch.delattr("llmopt.plots")
    a, _ = two_gpus(tmp_path)
    assert [p.name for p in report.write([a], tmp_path / "out")] == ["benchmarks.md"]
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_a_simulated_sweep_file_joins_the_plot_not_the_tables(tmp_path):
    run = saved_run(tmp_path / "h200/0002_ss.json", matrix())
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps([cell("e2e_nlg", "ss", 300.0 + 500 * a, simulated=True, acceptance_ratio=a)
                                 for a in (0.2, 0.6, 1.0)] + [cell("e2e_nlg", "naive", 1.0)]))
    written = report.write([run], tmp_path / "out", simulated=[sweep])
    text = written[0].read_text()
    assert "| ss" not in text  # simulated records never become table rows
    assert "| naive (fp32) | 280.0" in text  # the sweep's own (unsimulated) naive record is ignored
    assert all(p.read_bytes().startswith(PNG) for p in written[1:])
    with pytest.raises(ValueError, match="matches no saved run"):
        report.write([run, run], tmp_path / "out", simulated=[sweep])


def test_a_simulated_sweep_joins_the_run_that_measured_its_checkpoint(tmp_path):
    ours = [cell("e2e_nlg", t, r, checkpoint="e2e-ss-b") for t, r in (("naive", 280.0), ("ss", 500.0))]
    other = saved_run(tmp_path / "h100/0001_a.json", [cell("e2e_nlg", "naive", 280.0, checkpoint="e2e-ss-a")])
    mine = saved_run(tmp_path / "h100/0002_b.json", ours)
    points = [cell("e2e_nlg", "ss", 300.0 + 500 * a, simulated=True, acceptance_ratio=a, checkpoint="e2e-ss-b")
              for a in (0.2, 1.0)]
    runs = [load_run(other), load_run(mine)]
    report.join_simulated(runs, points)
    assert [len(run.records) for run in runs] == [1, 4]
    with pytest.raises(ValueError, match="checkpoint e2e-ss-c matches no saved run"):
        report.join_simulated(runs, [dict(points[0], checkpoint="e2e-ss-c")])


def test_random_weight_sweeps_get_their_own_section_and_figure(tmp_path):
    """Sweeps at sizes with no trained checkpoint join no run (any number of runs given): one table
    of every sweep given (one file per size here), per size and accuracy, naming its files, and the
    speed-up figure."""
    run = saved_run(tmp_path / "h100/0008_large.json", matrix())
    sweeps = []
    for size in ("1.3b", "2.7b"):
        points = [cell("e2e_nlg", "ss+half+graphs", 400.0 * m, simulated=True, random_weights=True, draft_accuracy=a,
                       simulated_model=f"{size} (random weights)", mean_accepted_tokens=1 + 3 * a, speedup_over_naive=m,
                       tokens_per_s_min=390.0 * m, tokens_per_s_max=410.0 * m, checkpoint=f"e2e_nlg-{size}-random")
                  for a, m in ((0.0, 0.84), (1.0, 3.2))]
        sweeps.append(tmp_path / f"simulated_{size}.json")
        sweeps[-1].write_text(json.dumps(points + [cell("e2e_nlg", "half+graphs", 400.0, random_weights=True)]))
    written = report.write([run, run], tmp_path / "out", simulated=sweeps)
    text = written[0].read_text()
    assert "## SIMULATED drafts at model sizes" in text and "![simulated speed-up by model size]" in text
    assert "from `simulated_1.3b.json`, `simulated_2.7b.json`:" in text
    assert "| 1.3b (random weights) | ss+half+graphs | 0.00 | 1.00 | 336.0 (328–344) | 0.84× |" in text
    assert "| 2.7b (random weights) | ss+half+graphs | 1.00 | 4.00 | 1280.0 (1248–1312) | 3.20× |" in text
    assert (tmp_path / "out" / report.SIZES_PLOT).read_bytes().startswith(PNG)
    assert report.simulated_sizes_section([], []) == ""


def test_readme_block_is_filled_between_its_markers(tmp_path):
    run = saved_run(tmp_path / "h200/0001_foundation.json", matrix())
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{report.README_START}\nold table\n{report.README_END}\nafter\n")
    report.write([run], tmp_path / "docs", readme=readme)
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n" + report.README_START) and text.endswith(report.README_END + "\nafter\n")
    assert "old table" not in text
    assert "**NVIDIA H200**, 2026-11-26; driver 580.159.04" in text
    assert "| naive (fp32) | 280.0 (1.00×)" in text
    assert "[docs/benchmarks.md](docs/benchmarks.md)" in text
    report.write([run], tmp_path / "docs", readme=readme)
    assert readme.read_text() == text  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no '<!-- llmopt report: start -->'"):
        report.write([run], tmp_path / "docs", readme=readme)


def test_the_peers_table_weighs_each_drafting_method_against_naive_and_its_plain_captured_twin(tmp_path):
    records = [cell("e2e_nlg", "naive", 280.0), cell("e2e_nlg", "graphs", 1000.0),
               cell("e2e_nlg", "half+graphs", 1100.0, dtype="float16"),
               cell("e2e_nlg", "ss", 560.0, mean_accepted_tokens=2.6, extra_parameters=3072, extra_parameter_bytes=12288,
                    checkpoint_train_time_s=115.0),
               cell("e2e_nlg", "ss+half+graphs", 2200.0, dtype="float16", mean_accepted_tokens=2.6,
                    extra_parameters=3072, extra_parameter_bytes=6144, checkpoint_train_time_s=115.0),
               cell("e2e_nlg", "medusa", 420.0, mean_accepted_tokens=2.1, extra_parameters=7_100_000,
                    extra_parameter_bytes=28_400_000, checkpoint_train_time_s=90.0, drafter_train_time_s=40.0),
               cell("e2e_nlg", "pld", 300.0, mean_accepted_tokens=1.4, extra_parameters=0, extra_parameter_bytes=0),
               cell("e2e_nlg", "hf", 140.0), cell("e2e_nlg", "hf+pld", 210.0, mean_accepted_tokens=1.6,
                                                  extra_parameters=0, extra_parameter_bytes=0)]
    run = load_run(saved_run(tmp_path / "run.json", records))
    assert report.plain_twin(run, ("e2e_nlg", "ss")) == "graphs"
    assert report.plain_twin(run, ("e2e_nlg", "hf+pld")) == "hf"  # stock generate has no captured step
    assert report.plain_twin(run, ("e2e_nlg", "ss+half+graphs")) == "half+graphs"
    # a preset is a drafting cell too: `best` (ss+flash2+graphs) against flash2+graphs
    with_best = load_run(saved_run(tmp_path / "best.json", records + [
        cell("e2e_nlg", "flash2+graphs", 1000.0, dtype="float16"),
        cell("e2e_nlg", "best", 2000.0, dtype="float16", mean_accepted_tokens=2.6, extra_parameters=3072,
             extra_parameter_bytes=6144)]))
    assert report.plain_twin(with_best, ("e2e_nlg", "best")) == "flash2+graphs"
    assert "| E2E-NLG | best (fp16) | 2000.0 | 7.14× | 2.00× (`flash2+graphs`, ratio of medians) | 2.60 |" in report.markdown([with_best])
    text = report.markdown([run])
    assert "| E2E-NLG | ss (fp32) | 560.0 | 2.00× | 0.56× (`graphs`, ratio of medians) | 2.60 | 3.1 k (12.0 KiB) | 115 s | – |" in text
    assert "| E2E-NLG | ss+half+graphs (fp16) | 2200.0 | 7.86× | 2.00× (`half+graphs`, ratio of medians) | 2.60 | 3.1 k (6.0 KiB) |" in text
    assert "| E2E-NLG | medusa (fp32) | 420.0 | 1.50× | 0.42× (`graphs`, ratio of medians) | 2.10 | 7.1 M (27.1 MiB) | 90 s | 40 s |" in text
    assert "| E2E-NLG | pld (fp32) | 300.0 | 1.07× | 0.30× (`graphs`, ratio of medians) | 1.40 | 0 (0.0 KiB) | – | – |" in text
    assert "| E2E-NLG | hf+pld (fp32) | 210.0 | 0.75× | 1.50× (`hf`, ratio of medians) | 1.60 |" in text
    # a record that paired its rounds with its twin's (timed in the same cycles) gives that statistic
    paired = load_run(saved_run(tmp_path / "paired.json", records[:3] + [
        cell("e2e_nlg", "ss+half+graphs", 2200.0, dtype="float16", mean_accepted_tokens=2.6, twin="half+graphs",
             speedup_over_twin=1.93, speedup_over_twin_ci=[1.81, 2.07])]))
    assert "| 1.93× [1.81–2.07] (`half+graphs`) | 2.60 |" in report.markdown([paired])
    # a run without drafting cells has no peers table
    assert "its peers" not in report.markdown([load_run(saved_run(tmp_path / "plain.json", records[:3] + records[7:8]))])


def test_a_dataset_at_another_shape_is_a_column_titled_with_it(tmp_path):
    records = [cell("e2e_nlg", "naive", 200.0), cell("spider", "naive", 250.0),
               cell("e2e_nlg", "naive", 120.0, shape="1.3b"), cell("e2e_nlg", "half+graphs", 360.0, shape="1.3b")]
    text = report.markdown([load_run(saved_run(tmp_path / "run.json", records))])
    assert "| technique | Spider | E2E-NLG | E2E-NLG, 1.3b |" in text
    assert "| half+graphs (fp32) | – | – | 360.0 (342–374) |" in text and "| half+graphs (fp32) | – | – | 3.00× |" in text


def test_the_speed_up_is_the_recorded_paired_one_where_a_run_has_it(tmp_path):
    """The gate's statistic (the median of same-cycle ratios) where the record holds it, as the
    terminal summary prints it; the ratio of the medians only for runs that predate it."""
    records = [cell("e2e_nlg", "naive", 200.0), cell("e2e_nlg", "ss", 360.0, speedup_over_naive=1.74),
               cell("e2e_nlg", "graphs", 1000.0)]
    text = report.markdown([load_run(saved_run(tmp_path / "run.json", records))])
    assert "| ss (fp32) | 1.74× |" in text and "| graphs (fp32) | 5.00× |" in text and "| naive (fp32) | 1.00× |" in text
