"""An old Anki client (2.1.54, the legacy sync protocol) as a subprocess.

Run with the legacy venv's Python: `python legacy_client.py COLLECTION USER
PASSWORD STEP...`, the server in SYNC_ENDPOINT / SYNC_ENDPOINT_MEDIA (these
clients take their server from the environment, not from the login).
Prints one JSON object: what each step saw, or the error it raised.

Steps: `login`; `add:N` (N notes); `remove:N` (the N oldest notes);
`media-add:N` (N small files, then a
second's wait: these clients notice new files by the folder's mtime in whole
seconds); `sync` (a normal sync; what it says is needed); `upload`,
`download` (full syncs); `media` (a media sync); `state` (note count and
media files)."""

import json
import os
import sys
import time

from anki.collection import Collection


def main() -> None:
    path, user, password, *steps = sys.argv[1:]
    col = Collection(path)
    out: dict = {}
    auth = None
    try:
        for step in steps:
            name, _, arg = step.partition(":")
            if name == "login":
                auth = col.sync_login(username=user, password=password)
                out["login"] = bool(auth.hkey)
            elif name == "add":
                model = col.models.by_name("Basic")
                for i in range(int(arg)):
                    note = col.new_note(model)
                    note["Front"] = f"old client {i} {time.time_ns()}"
                    col.add_note(note, 1)
            elif name == "remove":
                col.remove_notes(sorted(col.find_notes(""))[: int(arg)])
            elif name == "media-add":
                for i in range(int(arg)):
                    with open(os.path.join(col.media.dir(), f"old {i}.txt"), "w") as f:
                        f.write(f"written by the old client: {i}")
                time.sleep(1.1)
            elif name == "sync":
                # As this version's GUI does before a sync: commit the
                # transaction the collection keeps open, and leave none open.
                col.save(trx=False)
                out["sync"] = str(col.sync_collection(auth).required)
                col.db.begin()
            elif name in ("upload", "download"):
                col.close_for_full_sync()
                try:
                    (col.full_upload if name == "upload" else col.full_download)(auth)
                finally:
                    col.reopen(after_full_sync=True)
                out[name] = True
            elif name == "media":
                col.sync_media(auth)  # returns when done in this version
            elif name == "state":
                out["notes"] = col.note_count()
                out["media"] = sorted(os.listdir(col.media.dir()))
    except Exception as e:  # reported, not raised: the test compares them
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        col.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
