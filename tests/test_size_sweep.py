"""scripts/size_sweep.py end to end on the CPU: tiny shape, naive and graphs (static runtime, with and
without queue_ahead), flash2
recorded as an error, JSON and Markdown written; the bandwidth floor and kernel counts are None off CUDA."""

import json

from helpers import load_script


def test_size_sweep_cpu(tmp_path):
    out = tmp_path / "sweep.json"
    load_script("size_sweep").main(["--out", str(out), "--device", "cpu", "--shapes", "tiny", "--techniques",
                        "naive,graphs,flash2", "--new-tokens", "8", "--prompt-len", "16", "--runs", "1",
                        "--copy-mib", "16", "--queue-ahead", "both"])
    report = json.loads(out.read_text())
    assert report["header"]["bandwidth_bytes_per_s"] is None  # no copy bandwidth (nor floor) on a CPU
    rows = {r["technique"] + (" ahead" if r["queue_ahead"] else ""): r for r in report["rows"]}
    assert list(rows) == ["naive", "graphs", "graphs ahead", "flash2"]
    for name in ("naive", "graphs", "graphs ahead"):
        row = rows[name]
        assert row["shape"] == "tiny" and row["tokens_per_s"] > 0 and row["new_tokens"] == 8
        assert row["match"] is True and row["first_mismatch"] is None
        assert row["weight_bytes"] > 0 and row["floor_fraction"] is None and row["kernels_per_token"] is None
    assert rows["graphs"]["config"]["runtime"] == "static" == rows["graphs"]["runtime"]
    assert rows["naive"]["runtime"] is None and rows["naive"]["queue_ahead"] is None
    assert [rows[n]["config"]["queue_ahead"] for n in ("graphs", "graphs ahead")] == [False, True]
    assert "flash2 needs a CUDA GPU" in rows["flash2"]["error"]
    table = out.with_suffix(".md").read_text()
    assert "| tiny | graphs | static |" in table and "| tiny | graphs | static ahead |" in table and "failed" in table


def test_size_sweep_takes_a_decode_kernel_for_the_captured_flash2_rows(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    sweep = load_script("size_sweep")
    sweep.main(["--out", str(out), "--device", "cpu", "--shapes", "tiny", "--techniques", "graphs,flash2+graphs",
                "--new-tokens", "4", "--prompt-len", "8", "--runs", "1", "--copy-mib", "16", "--decode-kernel", "sdpa_cudnn"])
    rows = {r["technique"]: r for r in json.loads(out.read_text())["rows"]}
    assert "decode_kernel" not in rows["graphs"]["config"] and rows["graphs"]["match"] is True  # not flash2: untouched
    assert "flash2 needs a CUDA GPU" in rows["flash2+graphs"]["error"]  # the option itself was accepted
    args = sweep.argparse.Namespace(prompt_len=8, new_tokens=4, decode_kernel="sdpa_cudnn")
    assert sweep.options_of("flash2+graphs", "cuda_graph", args)["decode_kernel"] == "sdpa_cudnn"
    assert "decode_kernel" not in sweep.options_of("half+graphs", "cuda_graph", args)
