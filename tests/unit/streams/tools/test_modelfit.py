"""`engagement model fit` end to end through main(), its refusals of bad input, and the
parameters file as the worker loads it (ENGAGEMENT_MODEL_PARAMS)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from scoring.fit import fit_bgnbd, fit_gamma_gamma, summarise
from scoring.model import BgNbdParams, ModelParams
from streams.cli import main
from streams.settings import SettingsError, load_settings
from streams.tools.modelfit import load_params, read_transactions

CDNOW_FILE = Path(__file__).resolve().parents[4] / ".engagement" / "data" / "CDNOW_sample.txt"
START = date(2026, 1, 1)


def write_shop(path: Path, customers: int = 400, seed: int = 5) -> Path:
    """A shop's year of orders, drawn from the BG/NBD and Gamma-Gamma stories (in days)."""
    rng = np.random.default_rng(seed)
    lines = ["customer_id,date,amount,channel"]
    for n in range(customers):
        first = START + timedelta(days=int(rng.integers(0, 120)))
        rate, dropout, nu = rng.gamma(0.8, 1 / 20.0), rng.beta(1.0, 3.0), rng.gamma(4.0, 1 / 60.0)
        day, t = first, 0.0
        while day <= date(2026, 12, 31):
            lines.append(f"c{n:04d},{day.isoformat()},{rng.gamma(5.0, 1 / nu):.2f},web")
            t += rng.exponential(1 / rate)
            day = first + timedelta(days=int(t))
            if len(lines) > 2 and rng.random() < dropout:
                break
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def fit_cli(*args: str) -> int:
    return main(["model", "fit", *args])


def test_fit_prints_and_writes_the_parameters_the_worker_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop = write_shop(tmp_path / "orders.csv")
    out = tmp_path / "params.json"
    assert (
        fit_cli("--transactions", str(shop), "--calibration-end", "2026-09-30", "--out", str(out))
        == 0
    )
    printed = capsys.readouterr().out
    params = load_params(out)
    summaries = summarise(read_transactions(shop), date(2026, 9, 30))
    assert params == ModelParams(
        bgnbd=fit_bgnbd(summaries.values()), gamma_gamma=fit_gamma_gamma(summaries.values())
    )
    assert params.bgnbd is not None
    assert f"r     = {params.bgnbd.r:.4f}" in printed
    assert "in time units (7 days)" in printed and "in the amounts' currency" in printed
    document = json.loads(out.read_text())
    assert document["fit"]["calibration_end"] == "2026-09-30"
    assert document["fit"]["customers"] == len(summaries)


def test_fit_in_days_writes_the_time_unit(tmp_path: Path) -> None:
    shop = write_shop(tmp_path / "orders.csv")
    out = tmp_path / "daily.json"
    args = ["--calibration-end", "2026-09-30", "--out", str(out), "--time-unit-days", "1"]
    assert fit_cli("--transactions", str(shop), *args) == 0
    daily = load_params(out).bgnbd
    assert daily is not None and daily.time_unit_days == 1.0
    weekly_out = tmp_path / "weekly.json"
    assert (
        fit_cli(
            "--transactions", str(shop), "--calibration-end", "2026-09-30", "--out", str(weekly_out)
        )
        == 0
    )
    weekly = load_params(weekly_out).bgnbd
    assert weekly is not None
    # The same population in other units: the rate's scale alpha scales with the unit.
    assert daily.alpha == pytest.approx(weekly.alpha * 7, rel=1e-3)


def test_fit_of_the_cdnow_file_reproduces_the_paper(tmp_path: Path) -> None:
    if not CDNOW_FILE.is_file():
        pytest.fail(f"{CDNOW_FILE} is missing: run `make cdnow` (make unit/test do it)")
    out = tmp_path / "cdnow.json"
    args = ["--format", "cdnow", "--calibration-end", "1997-09-30", "--out", str(out)]
    assert fit_cli("--transactions", str(CDNOW_FILE), *args) == 0
    params = load_params(out)
    assert params.bgnbd is not None and params.gamma_gamma is not None
    paper = BgNbdParams(0.243, 4.414, 0.793, 2.426)
    assert asdict(params.bgnbd) == pytest.approx(asdict(paper), rel=0.01)
    assert asdict(params.gamma_gamma) == pytest.approx(
        {"p": 6.25, "q": 3.74, "gamma": 15.44}, rel=0.02
    )


BAD_FILES = [
    (
        "customer_id,date,amount\nc1,2026-01-01,10\nc1,2026-01-09,ten\nc2,2026-01-02,5\n"
        "c2,2026-13-01,5\n",
        [
            r"2 bad row\(s\), nothing fitted",
            r"orders.csv:3: column amount: not a number, got 'ten'",
            r"orders.csv:5: column date: expected YYYY-MM-DD, got '2026-13-01'",
        ],
    ),
    ("customer_id,date,amount\nc1,2026-01-01,-3\n", [r":2: column amount: must be a finite"]),
    ("customer_id,date,amount\n,2026-01-01,3\n", [r":2: column customer_id: empty"]),
    (
        "customer_id,date,amount\nc1,2026-01-01,3\nc1,2026-01-02\n",
        [r":3: expected 3 columns, got 2"],
    ),
    (
        "customer,date,amount\nc1,2026-01-01,3\n",
        [r"orders.csv:1: header lacks column\(s\) customer_id"],
    ),
    ("", [r"orders.csv: empty file, expected a header customer_id,date,amount"]),
    ("customer_id,date,amount\n", [r"orders.csv: no transactions"]),
]


@pytest.mark.parametrize(("content", "messages"), BAD_FILES)
def test_bad_rows_are_named_by_line_and_column_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, messages: list[str]
) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text(content, encoding="utf-8")
    out = tmp_path / "params.json"
    assert (
        fit_cli("--transactions", str(orders), "--calibration-end", "2026-09-30", "--out", str(out))
        == 2
    )
    errors = capsys.readouterr().err
    for message in messages:
        assert re.search(message, errors), (message, errors)
    assert not out.exists()


def test_a_bad_cdnow_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orders = tmp_path / "cdnow.txt"
    orders.write_text(" 00001 0001 19970101  1  10.0\n 00001 0001 1997-01-x  1  10.0\n")
    assert (
        fit_cli(
            "--transactions", str(orders), "--format", "cdnow", "--calibration-end", "1997-09-30"
        )
        == 2
    )
    assert (
        "cdnow.txt:2: column date: expected YYYY-MM-DD, got '1997-01-x'" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--calibration-end", "30/09/2026"],
            "--calibration-end: expected YYYY-MM-DD, got '30/09/2026'",
        ),
        (
            ["--calibration-end", "2025-01-01"],
            "--calibration-end: no transaction on or before 2025-01-01",
        ),
        (["--calibration-end", "2026-09-30", "--time-unit-days", "0"], "--time-unit-days: must be"),
    ],
)
def test_bad_options_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    shop = write_shop(tmp_path / "orders.csv", customers=20)
    assert fit_cli("--transactions", str(shop), "--out", str(tmp_path / "p.json"), *args) == 2
    assert message in capsys.readouterr().err


def test_a_missing_transactions_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"
    assert fit_cli("--transactions", str(missing), "--calibration-end", "2026-09-30") == 2
    assert f"--transactions: cannot read {missing}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        ('{"bgnbd": {"r": 0, "alpha": 1, "a": 1, "b": 1}}', "bgnbd.r must be a positive"),
        ('{"gamma_gamma": {"p": 1, "q": 1, "gamma": 1}}', "gamma_gamma.q must be > 1"),
        ("[1, 2]", "model parameters must be an object"),
    ],
)
def test_a_bad_parameters_file_is_refused_naming_the_variable(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "params.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(SettingsError, match=f"^ENGAGEMENT_MODEL_PARAMS: .*{problem}"):
        load_params(path)


def test_settings_require_the_parameters_file_to_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGAGEMENT_MODEL_PARAMS", str(tmp_path / "missing.json"))
    with pytest.raises(SettingsError, match=r"ENGAGEMENT_MODEL_PARAMS: .*no such file"):
        load_settings()
    present = tmp_path / "params.json"
    present.write_text("{}", encoding="utf-8")
    monkeypatch.setenv("ENGAGEMENT_MODEL_PARAMS", str(present))
    assert load_settings().model_params == present


def test_a_file_that_is_not_utf8_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_bytes(b"customer_id,date,amount\nc1,2026-01-01,3\n\xff\xfe,2026-01-02,4\n")
    assert fit_cli("--transactions", str(orders), "--calibration-end", "2026-09-30") == 2
    assert "orders.csv: not UTF-8 text" in capsys.readouterr().err
