"""The wire bytes of provider Logs messages, encoded once per encoding for every viewer of the same lines."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

from tack_common.pb import provider_pb2 as pb
from tack_control import metrics
from tack_control.web.sender import Framed, frame_texts
from tack_control.web.tangled_json import tangled_frames


# Enough for the recent messages of the logs being followed live (a message is at most 1 MiB,
# usually far less), small next to the memory of the sockets it serves.
BUDGET_BYTES = 4 << 20

Encoding = Callable[[Sequence[pb.LogLine]], Framed]
"""Log lines → framed frames, one frame per line. Must be hashable: equal encodings make equal bytes."""


def tangled_json(lines: Sequence[pb.LogLine]) -> Framed:
    """The legacy ``/logs`` encoding: Tangled LogLine JSON in text frames."""
    return frame_texts(tangled_frames(lines))


class LogFrames:
    """Framed frames of serialized ``LogsResponse`` messages, per encoding, kept while recently used.

    Everyone following one run receives the same provider messages (a provider
    batches a run's lines the same way for every reader), so N viewers of a log
    cost one encoding, not N. Keyed by the message bytes and the encoding, so
    a hit is exact; bounded by the bytes held (key and frames), least recently
    used dropped first. A malformed message raises
    ``google.protobuf.message.DecodeError``.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.held = 0
        self._entries: OrderedDict[tuple[bytes, Hashable], Framed] = OrderedDict()
        self._shared = metrics.LOGS_MESSAGES.labels("shared")
        self._encoded = metrics.LOGS_MESSAGES.labels("encoded")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, message: bytes, encoding: Encoding = tangled_json) -> Framed:
        """The frames of ``message`` in ``encoding``, from memory when it was seen recently."""
        key = (message, encoding)
        framed = self._entries.get(key)
        if framed is not None:
            self._entries.move_to_end(key)
            self._shared.inc()
            return framed
        framed = encoding(pb.LogsResponse.FromString(message).lines)
        self._encoded.inc()
        cost = len(message) + framed.size
        if cost <= self.budget // 4:
            self._entries[key] = framed
            self.held += cost
            while self.held > self.budget:
                (old_message, _), old = self._entries.popitem(last=False)
                self.held -= len(old_message) + old.size
        return framed
