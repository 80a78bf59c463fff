"""``rpaccel bench claims``: with ``--write`` its plot of quality against cost goes beside the results file, in
``img/``, and the section links it; a plot file type matplotlib cannot write is refused before anything runs."""

import os
import subprocess
import sys


def run_cli(*argv, cwd=None):
    # The models a run trains go to a cache of the test's own.
    env = {**os.environ, "RPACCEL_CACHE_DIR": str(cwd / "cache")} if cwd else None
    return subprocess.run([sys.executable, "-m", "rpaccel", *argv], capture_output=True, text=True, cwd=cwd, env=env)


def test_the_written_section_links_its_plot(tmp_path):
    results = tmp_path / "docs" / "results.md"
    done = run_cli("bench", "claims", "--preset", "small", "--candidates", "512", "--queries", "1",
                   "--quality-queries", "2", "--pipeline", "rm-small:512:64,rm-large:64:8", "--splits", "1", "--k", "8",
                   "--train-samples", "800", "--write", "--results", str(results), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    plot = tmp_path / "docs" / "img" / "claims-small.png"
    assert plot.read_bytes().startswith(b"\x89PNG")
    section = results.read_text().split("<!-- BEGIN claims-small -->")[1]
    assert "| configuration | stages | split |" in section and "| iso-quality |" in section
    assert "--quality-queries 2 --pipeline rm-small:512:64,rm-large:64:8" in section
    assert "![NDCG@8 against p95 latency and throughput](img/claims-small.png)" in section


def test_a_plot_of_an_unknown_file_type_is_refused(tmp_path):
    done = run_cli("bench", "claims", "--preset", "small", "--plot", str(tmp_path / "claims.txt"))
    assert done.returncode == 2 and "unsupported plot file type .txt" in done.stderr
    assert not (tmp_path / "claims.txt").exists()
