"""The short real-client check every build must pass, whatever it runs on:
cross/test runs it against the ARM binaries under qemu (issue 5), and the
normal suite against the native one. Login, full upload, full download, an
incremental sync each way, and a media sync."""

from anki.sync_pb2 import SyncCollectionResponse

from harness import Device, assert_same, make_rich_collection

Changes = SyncCollectionResponse.ChangesRequired


def test_a_client_round_trip(server, tmp_path):
    a = Device(tmp_path / "a")
    make_rich_collection(a.col, notes=100, reviews=30)
    auth_a = a.login(server)
    a.full_sync(auth_a, upload=True)

    b = Device(tmp_path / "b")
    auth_b = b.login(server)
    b.full_sync(auth_b, upload=False)
    assert_same(a, b)

    note = a.col.new_note(a.col.models.by_name("Basic"))
    note["Front"] = "incremental"
    a.col.add_note(note, 1)
    card = b.col.sched.getCard()
    b.col.sched.answerCard(card, 3)
    assert a.sync(auth_a) == Changes.NO_CHANGES
    assert b.sync(auth_b) == Changes.NO_CHANGES
    assert a.sync(auth_a) == Changes.NO_CHANGES
    assert_same(a, b)

    a.col.media.write_data("smoke.png", b"\x89PNG not really")
    a.sync_media(auth_a)
    b.sync_media(auth_b)
    assert b.media_files() == a.media_files()
    a.close()
    b.close()
