"""What streams/kafka/ relies on inside faust-streaming, mode and aiokafka, checked at start.

The worker replaces or calls private methods of these frameworks (through Faust's own
extension point for a transport's consumer where there is one: streams/kafka/transport.py).
Each such method is listed here with the sha256 of its source in the release it was
written against, and the worker checks every one before it starts: a source that differs
means the code here may no longer do what it says, so the worker refuses to start, naming
the releases it needs. Nothing falls back silently.

The methods come in two parts:

- ``required``: resuming each partition where Redis says and never committing past what
  Redis holds (exactness), the producer's paced metadata updates, the bookkeeping fields
  the rest reads. Without them the worker does not start.
- ``batches``: the batch path and the fetch tuning (throughput). With another release the
  worker starts only if told to read through Faust's per-message agent
  (``ENGAGEMENT_INGEST=agent``), which needs none of them and is several times slower.

A new release is adopted by porting what changed and updating the digests here, the
pins in pyproject.toml and ``WRITTEN_FOR``; tests/unit/streams/kafka/test_seam.py fails
until all three agree with what is installed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Literal

Part = Literal["required", "batches"]

# The releases the digests below were taken from (and pyproject.toml pins).
WRITTEN_FOR = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "mode-streaming": "0.7.1"}


@dataclass(frozen=True)
class Relied:
    """A method of a framework class that streams/kafka/ replaces, wraps or calls."""

    module: str
    qualname: str  # "Class.method"
    sha256: str
    part: Part
    why: str

    @property
    def name(self) -> str:
        return f"{self.module}.{self.qualname}"

    def installed_sha256(self) -> str | None:
        """The digest of the installed source; None when it is missing."""
        try:
            owner: object = importlib.import_module(self.module)
            for attr in self.qualname.split("."):
                owner = getattr(owner, attr)
            source = inspect.getsource(owner)  # type: ignore[arg-type]  # a function here
        except (ImportError, AttributeError, OSError, TypeError):
            return None
        return hashlib.sha256(source.encode()).hexdigest()


_CONSUMER = "faust.transport.consumer"
_DRIVER = "faust.transport.drivers.aiokafka"

RELIED: tuple[Relied, ...] = (
    # Faust's consumer: its bookkeeping fields (_committed_offset, _acked, _acked_index,
    # _gap, _read_offset, _n_acked, _waiting_for_ack, _unacked_messages) are made here.
    Relied(_CONSUMER, "Consumer.__init__",
           "302410d59e6972d144e35ce91483b28783e01fd039f02a51f0b06c6d3953a001",
           "required", "the bookkeeping fields read by continuity, acks and repositioning"),
    Relied(_CONSUMER, "ThreadDelegateConsumer.__init__",
           "7072ae80eac1ff62b52ce9503a8fe7b6ff44fbb390b8f6beba7161b31b8bb483",
           "required", "the consumer thread (_thread) whose aiokafka consumer is asked for"),
    Relied(_CONSUMER, "Consumer.perform_seek",
           "0e8c130ff4b0afd82c0be9c5fd831316e10febc62c94032833911096e156d7c6",
           "required", "extended: every partition resumes at what Redis applied"),
    Relied(_CONSUMER, "Consumer.seek",
           "b86a9fe05f956b30cf299c787b6787c6e0349cbf1ae556f2456a1e97b15dbb22",
           "required", "extended: every seek is noted by the read continuity"),
    Relied(_CONSUMER, "Consumer._commit_tps",
           "a20e230b05ae8b151ac9f78fa77a102003a948c66c24c9d3588e39cb12859b7e",
           "required", "guarded: no commit before Redis is checked to hold what it should"),
    Relied(_DRIVER, "AIOKafkaConsumerThread._create_worker_consumer",
           "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7",
           "required", "extended: the fetch bounds it hard-codes are set from the settings"),
    Relied("aiokafka.consumer.consumer", "AIOKafkaConsumer.__init__",
           "01506f316191f7c99c785bec915756d1560029a6fad75cba6f4da71e343a8163",
           "required", "its _client and fetch bounds (_fetch_max_wait_ms, _fetch_min_bytes)"),
    Relied("aiokafka.consumer.consumer", "AIOKafkaConsumer.start",
           "2f1ba70443327538800d348e61042cdedd5a5e6306f40ebe1a06dddba7494c45",
           "required", "hands the fetch bounds to its fetcher"),
    Relied("aiokafka.client", "AIOKafkaClient.__init__",
           "edf3d022956032ba271940a7e00e9bf93d1a71b2cfe1a5d4f773415592e8fad6",
           "required", "its _retry_backoff paces the producer's metadata updates"),
    Relied("aiokafka.producer.producer", "AIOKafkaProducer.__init__",
           "fd6f2966fb3dc883ffcd325fe27b2580f005c3246bec5f20fc8412b2134f6180",
           "required", "its _sender, whose client is replaced by the paced one"),
    Relied("aiokafka.producer.sender", "Sender.__init__",
           "dae60514401a381721728bd19ce8d0f53433f39d8aba155ac0aee004a0f608c4",
           "required", "the sender's client attribute, replaced by the paced one"),
    # The batch path (streams/kafka/batches.py) and the read continuity it enforces.
    Relied(_CONSUMER, "Consumer._drain_messages",
           "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
           "batches", "replaced: the fetch loop hands whole batches to the scorer"),
    Relied(_CONSUMER, "Consumer.getmany",
           "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
           "batches", "re-done for a whole fetch at once"),
    Relied(_CONSUMER, "Consumer.ack",
           "5fcf41cf45153475de3790dc56fec1b83335956dc8b3bf7ff6bbb2b57627f03f",
           "batches", "re-done for a whole batch at once"),
    Relied(_CONSUMER, "Consumer._new_offset",
           "1d2c7ea89a7ad4f1a216c1d51936e569162cd66bd56f889e13fd29c910b58eb0",
           "batches", "replaced: a commit's run starts at the committed offset"),
    Relied(_CONSUMER, "Consumer._wait_next_records",
           "6218e1969a636b3ff504ad1b8e7ad58a113572e43d746cc96d684ed5153032c6",
           "batches", "called by the batch fetch"),
    Relied(_CONSUMER, "Consumer._add_gap",
           "4df2573ded7c1c2cde04dc6bde6d4480cb5875ef565256e56966b585ae39b1c1",
           "batches", "called by the batch fetch loop for other topics' gaps"),
    Relied(_DRIVER, "Consumer._to_message",
           "7c24f6511b2fcef7cbfe73526e78de033bfe0df211f1fd30509d699c9deb6ce4",
           "batches", "called by the batch fetch"),
    Relied("aiokafka.consumer.fetcher", "Fetcher._get_actions_per_node",
           "1dab2cf937d165d0eeacc8da8ed2b0ebd80b321bb6583757e01cdc1013d31635",
           "batches", "wrapped: fetches in incremental sessions, gathering"),
    Relied("aiokafka.consumer.fetcher", "Fetcher._proc_fetch_request",
           "59bf948fff47eed580671971252454daa614df479733f3bedfefe95bc4d8ad30",
           "batches", "wrapped: a session's replies and its partitions' poll times"),
    Relied("aiokafka.protocol.fetch", "FetchRequest.__init__",
           "f31b6b74cc94dae4a4b6a83f202518b80ae24ef00393885d92f85a56451fbf3f",
           "batches", "its fields (_max_wait_ms, _min_bytes, ...), read by a session's request"),
    Relied("aiokafka.protocol.fetch", "FetchRequest.build",
           "952ef0f41192efc3b4b72468fa86ef1ff5c7a148e7ed775cadeb1afdf199b040",
           "batches", "overridden by a session's request to add the session's fields"),
    Relied("aiokafka.consumer.subscription_state", "Assignment.state_value",
           "183fea82ef48f3e6136739948785fbf07feec2d7119b60e5e9378264ba6780de",
           "batches", "called for a partition's state after a session's reply"),
    Relied("aiokafka.consumer.subscription_state", "TopicPartitionState.__init__",
           "f0b391da1b87af045ac4125de2c2ae928bb351157c2859d9e3586562e0edf7f7",
           "batches", "its timestamp and highwater, set and read after a session's reply"),
    Relied("mode.services", "Service.__init__",
           "ab4d12a25b93044a2bd0314bc2ed748774bc6266a61f5473755248deb1675a49",
           "batches", "the _stopped events the batch fetch loop watches"),
)  # fmt: skip


class SeamMismatch(RuntimeError):
    """The installed frameworks are not the releases streams/kafka/ was written for."""


@dataclass(frozen=True)
class Seam:
    """What the worker uses, given the installed frameworks and its settings (the required
    part always holds once :func:`check` has returned): ``batches``, the batch path;
    ``tuned_fetching``, incremental fetch sessions and gathering."""

    batches: bool
    tuned_fetching: bool


def installed_versions() -> dict[str, str]:
    versions = {}
    for dist in WRITTEN_FOR:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def differing(part: Part | None = None) -> list[Relied]:
    """The relied-on methods whose installed source is not the one written for."""
    return [
        r for r in RELIED if (part is None or r.part == part) and r.installed_sha256() != r.sha256
    ]


def check(ingest: Literal["batches", "agent"]) -> Seam:
    """What the worker may use with the installed frameworks; raises :class:`SeamMismatch`
    when it must not start: a required method differs, or a batch-path method differs
    and ``ingest`` is not ``"agent"``."""
    required, batches = differing("required"), differing("batches")
    if required or (batches and ingest != "agent"):
        raise SeamMismatch(_explain(required + batches, agent_would_do=not required))
    return Seam(batches=not batches and ingest == "batches", tuned_fetching=not batches)


def _explain(changed: list[Relied], *, agent_would_do: bool) -> str:
    wanted = ", ".join(f"{d}=={v}" for d, v in WRITTEN_FOR.items())
    have = ", ".join(f"{d} {v}" for d, v in installed_versions().items())
    lines = [
        f"streams/kafka/ was written for {wanted}; installed: {have}.",
        "These methods differ from the sources it was written against:",
        *(f"  {r.name} ({r.why})" for r in changed),
        f"Install those releases (pip install {wanted.replace(', ', ' ')})",
    ]
    if agent_would_do:
        lines.append(
            "or set ENGAGEMENT_INGEST=agent to read through Faust's per-message agent, which "
            "needs none of them (several times slower)."
        )
    return "\n".join(lines)
