"""Interrupted normal syncs (issue 3): whatever step breaks, and however, the
next sync succeeds with nothing lost or duplicated."""

import signal

import pytest
from anki.sync_pb2 import SyncCollectionResponse

from harness import Device, assert_same, make_rich_collection, next_second
from proxy import Breaker

Changes = SyncCollectionResponse.ChangesRequired
STEPS = ["start", "applyGraves", "applyChanges", "chunk", "applyChunk", "sanityCheck2", "finish"]


@pytest.mark.parametrize("mode", ["cut", "lose_response", "kill"])
@pytest.mark.parametrize("step", STEPS)
def test_a_broken_step_is_followed_by_a_clean_sync(server, tmp_path, step, mode):
    a = Device(tmp_path / "a")
    make_rich_collection(a.col, notes=30, reviews=10)
    auth = a.login(server)
    a.full_sync(auth, upload=True)
    b = Device(tmp_path / "b")
    auth_b = b.login(server)
    b.full_sync(auth_b, upload=False)

    # Changes on both sides, so every step carries something.
    basic = a.col.models.by_name("Basic")
    for dev in (a, b):
        next_second()
        note = dev.col.new_note(basic)
        note["Front"] = f"new on {dev.path.parent.name}"
        dev.col.add_note(note, 1)
        card = dev.col.sched.getCard()
        dev.col.sched.answerCard(card, 3)
    a.col.remove_notes([a.col.find_notes("")[0]])
    assert b.sync(auth_b) == Changes.NO_CHANGES

    def kill():
        server.stop(signal.SIGKILL)

    breaker = Breaker(server.port, step, mode, on_kill=kill)
    broken = server.auth(auth.hkey, breaker.endpoint)
    with pytest.raises(Exception):
        a.sync(broken)
    assert breaker.fired.is_set()
    breaker.close()
    if mode == "kill":
        server.start()

    # The next syncs are normal ones, and both devices end up equal.
    assert a.sync(auth) == Changes.NO_CHANGES
    assert b.sync(auth_b) == Changes.NO_CHANGES
    assert a.sync(auth) == Changes.NO_CHANGES
    assert a.col.find_notes("new on a") and a.col.find_notes("new on b")
    assert a.col.note_count() == 31
    assert_same(a, b)
    a.close()
    b.close()
