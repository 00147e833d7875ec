"""The seam with Faust, mode and aiokafka (streams/kafka/seam.py): every private method the
worker relies on is the source it was written against, the pins say the same releases,
and a worker on other sources refuses to start, naming what it needs."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import tomllib
from pathlib import Path

import faust
import pytest

from streams.kafka import seam, transport

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[4]


@pytest.mark.parametrize("relied", seam.RELIED, ids=lambda r: r.name)
def test_every_relied_on_method_is_the_source_it_was_written_against(
    relied: seam.Relied,
) -> None:
    # A failure here means the installed release changed this method: port the code that
    # relies on it (streams/kafka/), then update its digest, WRITTEN_FOR and the pins.
    assert relied.installed_sha256() == relied.sha256


def test_the_pins_the_seam_and_the_installed_releases_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        re.fullmatch(r"([\w-]+)==([\w.]+)", dep).groups()  # type: ignore[union-attr]
        for dep in project["dependencies"]
        if "==" in dep
    )
    assert pins == seam.WRITTEN_FOR
    assert seam.installed_versions() == seam.WRITTEN_FOR
    assert {d: importlib.metadata.version(d) for d in pins} == pins


def test_the_installed_releases_allow_everything() -> None:
    assert seam.check("batches") == seam.Seam(batches=True, tuned_fetching=True)
    assert seam.check("agent") == seam.Seam(batches=False, tuned_fetching=True)


def _changed(monkeypatch: pytest.MonkeyPatch, part: seam.Part) -> seam.Relied:
    """Pretend the first relied-on method of ``part`` was written against other source."""
    relied = next(r for r in seam.RELIED if r.part == part)
    other = dataclasses.replace(relied, sha256="0" * 64)
    monkeypatch.setattr(seam, "RELIED", tuple(other if r is relied else r for r in seam.RELIED))
    return relied


def test_another_batch_path_source_refuses_to_start_unless_the_agent_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relied = _changed(monkeypatch, "batches")
    with pytest.raises(seam.SeamMismatch) as refused:
        seam.check("batches")
    message = str(refused.value)
    assert "faust-streaming==0.15.3" in message and "aiokafka==0.14.0" in message
    assert relied.name in message
    assert "ENGAGEMENT_INGEST=agent" in message
    # Accepted: Faust's own agent, aiokafka's own fetching.
    assert seam.check("agent") == seam.Seam(batches=False, tuned_fetching=False)


def test_another_required_source_refuses_to_start_even_on_the_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relied = _changed(monkeypatch, "required")
    for ingest in ("batches", "agent"):
        with pytest.raises(seam.SeamMismatch) as refused:
            seam.check(ingest)  # type: ignore[arg-type]
        assert relied.name in str(refused.value)
        assert "ENGAGEMENT_INGEST=agent" not in str(refused.value)


def test_faust_finds_the_workers_consumer_through_its_entry_point() -> None:
    assert faust.transport.by_url(f"{transport.SCHEME}://127.0.0.1:9092") is transport.Transport
    assert transport.Transport.Consumer is transport.Consumer


def test_every_method_the_consumer_overrides_is_checked() -> None:
    overridden = {
        name
        for cls in (transport.Consumer, transport.ConsumerThread)
        for name, value in vars(cls).items()
        if callable(value) and name.startswith("_") and not name.startswith("__")
    }
    checked = {r.qualname.rpartition(".")[2] for r in seam.RELIED}
    # _new_consumer_thread only returns the subclass of Faust's thread it made.
    assert overridden - {"_new_consumer_thread"} <= checked


PRIVATE_NAMES = sorted(
    {
        "_committed_offset", "_acked", "_acked_index", "_gap", "_read_offset", "_n_acked",
        "_drain_messages", "_new_offset", "_commit_tps", "_wait_next_records", "_to_message",
        "_add_gap", "_create_worker_consumer", "_thread", "_sender", "_fetch_max_wait_ms",
        "_fetch_min_bytes", "_get_actions_per_node", "_proc_fetch_request", "_retry_backoff",
        "_unacked_messages", "_waiting_for_ack", "_buffered_partitions", "_commit_every",
    }
)  # fmt: skip


def test_no_private_framework_name_is_used_outside_the_seam() -> None:
    outside = [
        p
        for p in (ROOT / "streams").rglob("*.py")
        if "kafka" not in p.relative_to(ROOT / "streams").parts
    ]
    pattern = re.compile(r"\.(" + "|".join(PRIVATE_NAMES) + r")\b")
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in outside
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def test_a_worker_on_other_sources_refuses_to_start_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.cli import main

    relied = _changed(monkeypatch, "required")
    # Nothing listens there: the refusal comes before any connection is tried.
    monkeypatch.setenv("ENGAGEMENT_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("ENGAGEMENT_REDIS_URL", "redis://127.0.0.1:9/0")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "faust-streaming==0.15.3" in err and relied.name in err
