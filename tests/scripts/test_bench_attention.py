"""The attention benchmark runs end to end on tiny sizes and reports every kernel and target it can."""

from __future__ import annotations

import json

from tests.conftest import run_script


def test_bench_attention_tiny_run_writes_every_variant(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--lengths", "64", "128", "--repeats", "3", "--budget-s", "0", "--overhead-rounds", "1",
            "--window", "16", "--rank", "32", "--max-quadratic-len", "64", "--no-wait-quiet", "--json", str(out)]
    run = run_script("scripts/bench_attention.py", *args, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = {(row["variant"], row["n"]): row for row in report["results"]}
    assert report["environment"]["matmul_peak_gflops"] > 0
    for variant in ("reference", "sdpa[auto]", "sliding_window[w=16]", "linear", "linear[causal]", "low_rank[k=32]"):
        row = rows[(variant, 64)]
        assert row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0 and row["fwd_bwd_peak_mb"] > 0
        assert row["speedup_fwd_bwd"] > 0  # measured against the reference of the same run
    assert rows[("sdpa[auto]", 64)]["gflops_fwd_bwd"] > 0 and "gflops_fwd_bwd" not in rows[("linear", 64)]
    assert "skipped" in rows[("reference", 128)]  # above --max-quadratic-len
    assert "| sdpa[auto] | 64 |" in run.stdout
    assert {item["n"] for item in report["module_overhead"]} == {128, 1024}
