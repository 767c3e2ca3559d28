"""Incremental sync with real clients (issue 3): devices converge."""

import time

from anki.sync_pb2 import SyncCollectionResponse

from harness import Device, assert_same, make_rich_collection, next_second

Changes = SyncCollectionResponse.ChangesRequired

def sync_both(a, auth_a, b, auth_b):
    for dev, auth in ((a, auth_a), (b, auth_b), (a, auth_a)):
        assert dev.sync(auth) == Changes.NO_CHANGES
    # A sync right after moves nothing.
    assert a.sync(auth_a) == Changes.NO_CHANGES
    assert b.sync(auth_b) == Changes.NO_CHANGES


def test_two_devices_converge_over_rounds(server, tmp_path):
    a = Device(tmp_path / "a")
    make_rich_collection(a.col, notes=200, reviews=50)
    auth_a = a.login(server)
    a.full_sync(auth_a, upload=True)
    b = Device(tmp_path / "b")
    auth_b = b.login(server)
    b.full_sync(auth_b, upload=False)

    basic = a.col.models.by_name("Basic")
    # Round 1, on A: add, edit, delete notes; review; suspend; move; new deck; tags; config.
    for i in range(5):
        note = a.col.new_note(basic)
        note["Front"], note["Back"] = f"round1 {i}", "x"
        note.tags = ["fresh"]
        a.col.add_note(note, a.col.decks.id("Round1::Nested"))
    nids = a.col.find_notes("")
    edited = a.col.get_note(nids[0])
    edited["Front"] = edited["Front"] + " (edited on A)"
    a.col.update_note(edited)
    a.col.remove_notes([nids[1]])
    for _ in range(10):
        card = a.col.sched.getCard()
        if card:
            a.col.sched.answerCard(card, 3)
    cids = a.col.find_cards("")
    a.col.sched.suspend_cards([cids[2]])
    a.col.set_deck([cids[3]], a.col.decks.id("Science"))
    a.col.sched.bury_cards([cids[4]])
    a.col.set_config("roundOne", True)
    assert a.sync(auth_a) in (Changes.NO_CHANGES, Changes.NORMAL_SYNC)
    sync_both(a, auth_a, b, auth_b)
    assert_same(a, b)

    # Round 2, on B: rename and delete decks, change a preset, edit a template, tags.
    time.sleep(1)
    did = b.col.decks.id("Round1")
    deck = b.col.decks.get(did)
    deck["name"] = "Renamed on B"
    b.col.decks.save(deck)
    b.col.decks.remove([b.col.decks.id("Ωmega")])
    conf = b.col.decks.get_config(1)
    conf["new"]["perDay"] = 33
    b.col.decks.update_config(conf)
    model = b.col.models.by_name("Basic")
    model["tmpls"][0]["qfmt"] = "{{Front}} (B)"
    model["css"] += "\n.card { color: navy; }"
    b.col.models.update_dict(model)
    b.col.tags.rename("fresh", "renamed::tag")
    b.col.tags.remove("tag3")
    b.col.set_config("roundTwo", {"x": 1})
    sync_both(b, auth_b, a, auth_a)
    a.col.models._clear_cache()
    assert_same(a, b)
    assert a.col.decks.by_name("Renamed on B::Nested")
    assert a.col.models.by_name("Basic")["tmpls"][0]["qfmt"] == "{{Front}} (B)"

    # Round 3, both: each reviews and edits different notes.
    time.sleep(1)
    for dev in (a, b):
        next_second()  # both review in one deck: see next_second
        for _ in range(5):
            card = dev.col.sched.getCard()
            if card:
                dev.col.sched.answerCard(card, 2)
    na = a.col.get_note(a.col.find_notes("")[5])
    na["Back"] = "edited on A in round 3"
    a.col.update_note(na)
    nb = b.col.get_note(b.col.find_notes("")[6])
    nb["Back"] = "edited on B in round 3"
    b.col.update_note(nb)
    sync_both(a, auth_a, b, auth_b)
    assert_same(a, b)
    a.close()
    b.close()


def test_another_users_sync_finishes_during_a_large_upload(server_factory, tmp_path):
    import os
    import socket

    import zstandard

    server = server_factory(users=("alice:secret", "bob:hunter2")).start()
    bob = Device(tmp_path / "bob")
    make_rich_collection(bob.col, notes=20, reviews=5)
    auth_b = bob.login(server, "bob", "hunter2")
    bob.full_sync(auth_b, upload=True)

    # Alice's device starts a ~20 MB upload and stalls halfway.
    alice = Device(tmp_path / "alice")
    basic = alice.col.models.by_name("Basic")
    for i in range(200):
        note = alice.col.new_note(basic)
        note["Front"] = f"{i} " + os.urandom(50_000).hex()
        alice.col.add_note(note, 1)
    alice.close()
    body = zstandard.ZstdCompressor().compress(alice.path.read_bytes())
    conn = socket.create_connection(("127.0.0.1", server.port))
    conn.sendall((
        "POST /sync/upload HTTP/1.1\r\nhost: x\r\n"
        'anki-sync: {"v":11,"k":"6985e52cea44a28695d5c440bd42f57e9f50b7b1","c":"t","s":"s"}\r\n'
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body[: len(body) // 2])

    # Bob syncs normally, start to finish, meanwhile.
    note = bob.col.new_note(bob.col.models.by_name("Basic"))
    note["Front"] = "bob while alice uploads"
    bob.col.add_note(note, 1)
    assert bob.sync(auth_b) == Changes.NO_CHANGES
    other = Device(tmp_path / "bob2")
    auth_b2 = other.login(server, "bob", "hunter2")
    other.full_sync(auth_b2, upload=False)
    assert other.col.find_notes("bob while alice uploads")

    # Alice's upload was in flight all along and still completes.
    conn.sendall(body[len(body) // 2 :])
    reply = conn.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:100]
    conn.close()
    bob.close()
    other.close()


def test_a_schema_change_leads_to_a_full_sync(server, tmp_path):
    a = Device(tmp_path / "a")
    make_rich_collection(a.col, notes=10, reviews=0)
    auth_a = a.login(server)
    a.full_sync(auth_a, upload=True)
    b = Device(tmp_path / "b")
    auth_b = b.login(server)
    b.full_sync(auth_b, upload=False)

    model = a.col.models.by_name("Basic")
    a.col.models.add_field(model, a.col.models.new_field("Extra"))
    a.col.models.update_dict(model)
    # Both sides have cards: the user chooses; here A's version goes up.
    assert a.sync(auth_a) == Changes.FULL_SYNC
    a.full_sync(auth_a, upload=True)
    # B has cards too, so it is offered the same choice; it takes the server's.
    assert b.sync(auth_b) == Changes.FULL_SYNC
    b.full_sync(auth_b, upload=False)
    b.col.models._clear_cache()
    assert [f["name"] for f in b.col.models.by_name("Basic")["flds"]] == ["Front", "Back", "Extra"]
    # And normal syncs carry on from there.
    note = b.col.new_note(b.col.models.by_name("Basic"))
    note["Front"], note["Extra"] = "after the schema change", "x"
    b.col.add_note(note, 1)
    assert b.sync(auth_b) == Changes.NO_CHANGES
    assert a.sync(auth_a) == Changes.NO_CHANGES
    assert a.col.find_notes("after the schema change")
    a.close()
    b.close()
