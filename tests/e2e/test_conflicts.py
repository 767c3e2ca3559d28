"""Conflicting edits on two devices (issue 3), run against leitner and
against the official server: the devices must end up the same way."""

import shutil
import time

import pytest

from harness import Device, OfficialServer, Server, make_rich_collection, open_db


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One starting collection, so both runs share every id."""
    folder = tmp_path_factory.mktemp("template")
    dev = Device(folder)
    make_rich_collection(dev.col, notes=20, reviews=0)
    dev.close()
    return dev.path


def projection(dev: Device) -> dict:
    """What a user sees, without what differs between runs by nature
    (timestamps, due times, new revlog ids)."""
    dev.close()
    db = open_db(dev.path)
    q = lambda sql: sorted(db.execute(sql).fetchall())
    out = {
        "notes": q("SELECT id, flds, tags FROM notes"),
        "cards": q("SELECT id, nid, did, type, queue, reps, lapses, left FROM cards"),
        "revlog": q("SELECT cid, ease, type FROM revlog"),
        "decks": q("SELECT id, name FROM decks"),
        "graves": q("SELECT oid, type FROM graves"),
    }
    db.close()
    return out


def run_conflicts(server: Server, template, tmp_path) -> tuple[dict, dict]:
    (tmp_path / "a").mkdir(parents=True)
    shutil.copy(template, tmp_path / "a" / "collection.anki2")
    a = Device(tmp_path / "a")
    auth_a = a.login(server)
    a.full_sync(auth_a, upload=True)
    b = Device(tmp_path / "b")
    auth_b = b.login(server)
    b.full_sync(auth_b, upload=False)

    nids = sorted(a.col.find_notes(""))
    cid = sorted(a.col.find_cards("is:new"))[0]
    did = a.col.decks.id("Science")

    # A first ...
    note = a.col.get_note(nids[0])
    note["Front"] = "edited on A"
    a.col.update_note(note)
    note = a.col.get_note(nids[1])
    note["Front"] = "edited on A, deleted on B"
    a.col.update_note(note)
    card = a.col.get_card(cid)
    card.start_timer()
    a.col.sched.answerCard(card, 3)
    deck = a.col.decks.get(did)
    deck["name"] = "Science renamed on A"
    a.col.decks.save(deck)

    time.sleep(1.1)  # ... then B, a second later: B's edits are newer.
    note = b.col.get_note(nids[0])
    note["Front"] = "edited on B"
    b.col.update_note(note)
    b.col.remove_notes([nids[1]])
    card = b.col.get_card(cid)
    card.start_timer()
    b.col.sched.answerCard(card, 1)
    deck = b.col.decks.get(did)
    deck["name"] = "Science renamed on B"
    b.col.decks.save(deck)

    for dev, auth in ((a, auth_a), (b, auth_b), (a, auth_a), (b, auth_b)):
        dev.sync(auth)
    return projection(a), projection(b)


def test_conflicts_resolve_as_with_the_official_server(server_factory, template, tmp_path):
    ours = server_factory(data=tmp_path / "leitner").start()
    ours_a, ours_b = run_conflicts(ours, template, tmp_path / "with-leitner")
    ours.stop()
    official = OfficialServer(tmp_path / "official")
    official.start()
    try:
        theirs_a, theirs_b = run_conflicts(official, template, tmp_path / "with-official")
    finally:
        official.stop()
    assert ours_a == ours_b, "the devices did not converge with leitner"
    assert theirs_a == theirs_b, "the devices did not converge with the official server"
    for table in ours_a:
        assert ours_a[table] == theirs_a[table], table
    # And what that outcome is: the later edits (B's) win whole, the delete
    # wins over an older edit, both reviews stay in the history.
    fronts = [flds.split("\x1f")[0] for _, flds, _ in ours_a["notes"]]
    assert "edited on B" in fronts and "edited on A" not in fronts
    assert not any("deleted on B" in f for f in fronts)
    assert len(ours_a["notes"]) == 19
    names = [name for _, name in ours_a["decks"]]
    assert "Science renamed on B" in names
    assert len(ours_a["revlog"]) == 2
