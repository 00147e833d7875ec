"""The benchmark's command-line options and the latency profile's summary (no services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import latency, run


def test_latency_rates_replace_the_plans_phases() -> None:
    assert run._rates("1000:40") == ((1000, 40.0),)
    assert run._rates("1000:40, 5000:7.5") == ((1000, 40.0), (5000, 7.5))


@pytest.mark.parametrize("text", ["1000", "1000:x", "a:3", "1000:40,", "0:10", "1000:-1"])
def test_malformed_latency_rates_are_refused_naming_the_option(text: str) -> None:
    with pytest.raises(SystemExit, match="--latency-rates"):
        run._rates(text)


def test_latency_profile_summary_gives_each_threads_share(tmp_path: Path) -> None:
    # py-spy's raw format: one collapsed stack per line, its sample count last.
    (tmp_path / "default-r0-1000.txt").write_text(
        "thread (0x1): MainThread;main (streams/cli.py:110);score (streams/worker/app.py:118) 30\n"
        "thread (0x1): MainThread;main (streams/cli.py:110) 10\n"
        "thread (0x2): Thread-1;_fetcher (faust/transport/consumer.py:177) 60\n"
    )
    text = latency.profile_summary(tmp_path)
    assert "## default-r0-1000" in text
    assert "### Thread-1: 60 samples (60 %)" in text
    assert "### MainThread: 40 samples (40 %)" in text
    main = text.split("### MainThread")[1]
    assert "100.0 main (streams/cli.py)" in main
    assert " 75.0 score (streams/worker/app.py)" in main
