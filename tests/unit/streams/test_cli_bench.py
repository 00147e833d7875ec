"""`engagement bench` hands every option to the benchmark harness."""

from __future__ import annotations

import pytest

from streams.cli import main


def test_bench_passes_its_options_to_the_harness() -> None:
    # The harness rejects the section name: proof the option reached it, not argparse here.
    with pytest.raises(SystemExit, match="unknown sections: nonexistent"):
        main(["bench", "--only", "nonexistent"])


def test_bench_help_is_the_harness_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    assert "python -m benchmarks.run" in capsys.readouterr().out
