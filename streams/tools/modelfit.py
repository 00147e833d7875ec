"""`engagement model fit`: transactions file in, BG/NBD and Gamma-Gamma parameters out.

The file is a CSV with a ``customer_id,date,amount`` header (other columns are ignored), or
the whitespace-separated CDNOW format of the BG/NBD paper's data (customer id, sample
customer id, date as YYYYMMDD, quantity, amount). The parameters are written as JSON, the
file the worker reads from ENGAGEMENT_MODEL_PARAMS.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from scoring.config import ScoringConfig, load_config
from scoring.fit import FitError, Transaction, fit_bgnbd, fit_gamma_gamma, summarise
from scoring.model import METADATA_KEY, ModelParams
from streams.settings import ENV_PREFIX, Settings, SettingsError

FORMATS = ("csv", "cdnow")
CSV_COLUMNS = ("customer_id", "date", "amount")
# Enough bad rows to see the pattern; the count of all of them is reported too.
MAX_REPORTED_ERRORS = 10


class TransactionFileError(ValueError):
    """A transactions file with bad rows; the message names each line and column."""


class _MalformedLine(Exception):
    """A line whose fields cannot be told apart: reading stops there."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"{line}: {problem}")
        self.line, self.problem = line, problem


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        # A full timestamp: the purchase day is the date as written, in its own offset.
        return datetime.fromisoformat(text).date()


def _parse_amount(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a finite number >= 0 (net refunds into their order first)")
    return value


def _csv_rows(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, str, str, str]]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise TransactionFileError(f"{path}: empty file, expected a header {','.join(CSV_COLUMNS)}")
    names = [name.strip().lower() for name in header]
    missing = [name for name in CSV_COLUMNS if name not in names]
    if missing:
        raise TransactionFileError(
            f"{path}:1: header lacks column(s) {', '.join(missing)} (expected "
            f"{','.join(CSV_COLUMNS)}, got {','.join(header)})"
        )
    where = [names.index(name) for name in CSV_COLUMNS]
    for fields in reader:
        if not fields or all(not field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            problem = f"expected {len(header)} columns, got {len(fields)}"
            raise _MalformedLine(reader.line_num, problem)
        customer_id, day, amount = (fields[i].strip() for i in where)
        yield reader.line_num, customer_id, day, amount


def _cdnow_rows(lines: Iterable[str]) -> Iterator[tuple[int, str, str, str]]:
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise _MalformedLine(
                number,
                "expected 5 fields (customer id, sample id, YYYYMMDD, quantity, amount), "
                f"got {len(fields)}",
            )
        day = fields[2]
        iso = f"{day[:4]}-{day[4:6]}-{day[6:]}" if len(day) == 8 and day.isdigit() else day
        yield number, fields[0], iso, fields[4]


def read_transactions(path: Path, file_format: str = "csv") -> list[Transaction]:
    """Every row of the file as a ``scoring.fit.Transaction``; on bad rows, a
    TransactionFileError naming each (line and column), none skipped silently."""
    if file_format not in FORMATS:
        raise TransactionFileError(
            f"--format: must be one of {', '.join(FORMATS)}, got {file_format!r}"
        )
    rows: list[Transaction] = []
    errors: list[str] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as lines:
            source = _csv_rows(path, lines) if file_format == "csv" else _cdnow_rows(lines)
            try:
                for line, customer_id, day, amount in source:
                    try:
                        rows.append(_transaction(customer_id, day, amount))
                    except ValueError as exc:
                        errors.append(f"{path}:{line}: {exc}")
            except csv.Error as exc:
                raise TransactionFileError(f"{path}: not a readable CSV: {exc}") from None
            except _MalformedLine as exc:
                # The columns cannot be trusted after it; the bad rows before it are reported.
                errors.append(f"{path}:{exc.line}: {exc.problem}")
    except OSError as exc:
        raise TransactionFileError(f"--transactions: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise TransactionFileError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if errors:
        shown = "\n  ".join(errors[:MAX_REPORTED_ERRORS])
        more = len(errors) - MAX_REPORTED_ERRORS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise TransactionFileError(f"{len(errors)} bad row(s), nothing fitted:\n  {shown}{tail}")
    if not rows:
        raise TransactionFileError(f"{path}: no transactions")
    return rows


def _transaction(customer_id: str, day: str, amount: str) -> Transaction:
    if not customer_id:
        raise ValueError("column customer_id: empty")
    try:
        parsed_day = _parse_date(day)
    except ValueError:
        raise ValueError(f"column date: expected YYYY-MM-DD, got {day!r}") from None
    try:
        parsed_amount = _parse_amount(amount)
    except ValueError as exc:
        detail = str(exc) if "must be" in str(exc) else "not a number"
        raise ValueError(f"column amount: {detail}, got {amount!r}") from None
    return Transaction(customer_id=customer_id, day=parsed_day, amount=parsed_amount)


def load_params(path: Path) -> ModelParams:
    """The parameters file written by `engagement model fit`; a SettingsError names
    ENGAGEMENT_MODEL_PARAMS and the problem."""
    variable = f"{ENV_PREFIX}MODEL_PARAMS"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{variable}: {path} is not JSON: {exc}") from None
    try:
        return ModelParams.from_dict(document)
    except ValueError as exc:
        raise SettingsError(f"{variable}: {path}: {exc}") from None


def scoring_config(settings: Settings) -> ScoringConfig:
    """What a worker scores with: ENGAGEMENT_SCORING_CONFIG (or the shipped default) with the
    fitted parameters of ENGAGEMENT_MODEL_PARAMS, when set."""
    config = load_config(settings.scoring_config)
    if settings.model_params is None:
        return config
    return config.with_model(load_params(settings.model_params))


def _write_json(path: Path, document: dict[str, Any]) -> None:
    # Written beside the target and renamed over it: a worker starting meanwhile reads the
    # old file or the new one, never half of one.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_fit(args: argparse.Namespace) -> int:
    """Fit both models, print the parameters with their units and write ``args.out``."""
    try:
        calibration_end = date.fromisoformat(args.calibration_end)
    except ValueError:
        print(
            f"--calibration-end: expected YYYY-MM-DD, got {args.calibration_end!r}", file=sys.stderr
        )
        return 2
    unit: float = args.time_unit_days
    if not (math.isfinite(unit) and unit > 0):
        print(f"--time-unit-days: must be a positive number, got {unit!r}", file=sys.stderr)
        return 2
    try:
        rows = read_transactions(args.transactions, args.format)
    except TransactionFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    summaries = summarise(rows, calibration_end, time_unit_days=unit)
    if not summaries:
        print(f"--calibration-end: no transaction on or before {calibration_end}", file=sys.stderr)
        return 2
    try:
        bgnbd = fit_bgnbd(summaries.values(), time_unit_days=unit)
    except FitError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        gamma_gamma = fit_gamma_gamma(summaries.values())
    except FitError as exc:
        # p_alive and expected purchases stand without it; CLV falls back to the simple form.
        print(f"warning: {exc}; writing the BG/NBD parameters only", file=sys.stderr)
        gamma_gamma = None
    params = ModelParams(bgnbd=bgnbd, gamma_gamma=gamma_gamma)
    repeat_buyers = sum(1 for s in summaries.values() if s.x > 0)
    fit_info = {
        "transactions": str(args.transactions),
        "calibration_end": calibration_end.isoformat(),
        "customers": len(summaries),
        "repeat_buyers": repeat_buyers,
    }
    print(_describe(params, fit_info))
    _write_json(args.out, {**params.to_dict(), METADATA_KEY: fit_info})
    print(f"wrote {args.out} (load it with {ENV_PREFIX}MODEL_PARAMS={args.out})")
    return 0


def _describe(params: ModelParams, fit_info: dict[str, Any]) -> str:
    bg = params.bgnbd
    assert bg is not None  # run_fit always fits BG/NBD
    unit = f"{bg.time_unit_days:g} days"
    lines = [
        f"BG/NBD: {fit_info['customers']} customers, {fit_info['repeat_buyers']} repeat buyers, "
        f"calibration to {fit_info['calibration_end']}, time unit {unit}",
        f"  r     = {bg.r:.4f}   purchase rate ~ Gamma(r, alpha): shape",
        f"  alpha = {bg.alpha:.4f}   its scale, in time units ({unit})",
        f"  a     = {bg.a:.4f}   dropout probability ~ Beta(a, b)",
        f"  b     = {bg.b:.4f}",
    ]
    gg = params.gamma_gamma
    if gg is not None:
        lines += [
            "Gamma-Gamma: average spend of the repeat buyers",
            f"  p     = {gg.p:.4f}   transaction value ~ Gamma(p, nu): shape",
            f"  q     = {gg.q:.4f}   nu ~ Gamma(q, gamma): shape",
            f"  gamma = {gg.gamma:.4f}   its scale, in the amounts' currency",
            f"  population mean order value p*gamma/(q-1) = {gg.p * gg.gamma / (gg.q - 1):.2f}",
        ]
    return "\n".join(lines)
