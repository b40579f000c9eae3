"""How current an input stream is (tack_control.ingest.lag)."""

from __future__ import annotations

from tack_control.ingest.lag import StreamLag, worst


def test_a_stream_reports_seconds_since_its_last_frame_and_without_a_connection() -> None:
    """Never connected: both clocks run from when following began; connected: disconnected is 0; after a
    drop it counts from the drop; each frame resets the event age."""
    now = [100.0]
    lag = StreamLag(clock=lambda: now[0])
    now[0] = 103.0
    assert (lag.event_age(), lag.disconnected_for()) == (3.0, 3.0)
    lag.on_connect()
    now[0] = 105.0
    lag.on_event()
    now[0] = 106.0
    assert (lag.event_age(), lag.disconnected_for()) == (1.0, 0.0)
    lag.on_disconnect()
    now[0] = 110.0
    assert lag.disconnected_for() == 4.0
    assert lag.as_json() == {
        "connected": False,
        "seconds_since_event": 5.0,
        "seconds_disconnected": 4.0,
        "seconds_since_connect": 7.0,
    }
    other = StreamLag(clock=lambda: now[0])
    assert worst([lag, other], StreamLag.event_age) == 5.0
    assert worst([], StreamLag.event_age) == 0.0
