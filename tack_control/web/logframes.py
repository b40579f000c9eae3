"""The /logs wire bytes of provider Logs messages, encoded once for every viewer of the same lines."""

from __future__ import annotations

from collections import OrderedDict

from tack_common.pb import provider_pb2 as pb
from tack_control import metrics
from tack_control.web.sender import Framed, frame_texts
from tack_control.web.tangled_json import tangled_frames


# Enough for the recent messages of the logs being followed live (a message is at most 1 MiB,
# usually far less), small next to the memory of the sockets it serves.
BUDGET_BYTES = 4 << 20


class LogFrames:
    """Framed Tangled LogLine frames of serialized ``LogsResponse`` messages, kept while recently used.

    Everyone following one run receives the same provider messages (a provider
    batches a run's lines the same way for every reader), so N viewers of a log
    cost one encoding, not N. Keyed by the message bytes, so a hit is exact;
    bounded by the bytes held (key and frames), least recently used dropped
    first. A malformed message raises ``google.protobuf.message.DecodeError``.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.held = 0
        self._entries: OrderedDict[bytes, Framed] = OrderedDict()
        self._shared = metrics.LOGS_MESSAGES.labels("shared")
        self._encoded = metrics.LOGS_MESSAGES.labels("encoded")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, message: bytes) -> Framed:
        """The frames of ``message``, from memory when it was seen recently."""
        framed = self._entries.get(message)
        if framed is not None:
            self._entries.move_to_end(message)
            self._shared.inc()
            return framed
        framed = frame_texts(tangled_frames(pb.LogsResponse.FromString(message).lines))
        self._encoded.inc()
        cost = len(message) + framed.size
        if cost <= self.budget // 4:
            self._entries[message] = framed
            self.held += cost
            while self.held > self.budget:
                key, old = self._entries.popitem(last=False)
                self.held -= len(key) + old.size
        return framed
