"""One live driver per sweep: a fresh lease refuses a second driver, a stale one is taken over."""

import json
import time

import pytest

from hier_tl.core.errors import SweepError
from hier_tl.results import lease as L
from hier_tl.results.storage import Storage


def test_a_second_live_driver_is_refused_and_a_stale_lease_taken_over(tmp_path, capsys):
    st = Storage(str(tmp_path), "s")
    first = L.Lease(st)
    first.acquire()
    with pytest.raises(SweepError, match="is already running .* --name NEW"):
        L.Lease(st).acquire()
    held = json.loads(st.read_text(L.NAME))
    st.write_text(L.NAME, json.dumps({**held, "host": "elsewhere", "renewed": time.time() - L.TTL - 1}))
    second = L.Lease(st)
    second.acquire()  # the first driver stopped renewing: taken over
    assert "taking over the lease" in capsys.readouterr().out
    first.release()  # no longer its lease: left alone
    assert st.exists(L.NAME)
    second.release()
    assert not st.exists(L.NAME)


def test_a_lease_of_a_dead_process_on_this_host_is_stale(tmp_path):
    st = Storage(str(tmp_path), "s")
    me = L.Lease(st)
    st.write_text(L.NAME, json.dumps({**me.me, "token": "other", "pid": 2**22 + 12345, "renewed": time.time()}))
    me.acquire()
    assert json.loads(st.read_text(L.NAME))["token"] == me.me["token"]


# What a lease file may hold that no hier-tl driver wrote: each names no live driver, so it is taken over
DAMAGED = {
    "not_json": b"{not json",
    "empty": b"",
    "binary": b"\xff\xfe\x00\x01",
    "a_list": b"[1, 2]",
    "null": b"null",
    "empty_mapping": b"{}",
    "text_values": json.dumps({"host": "h", "pid": "abc", "token": "t", "renewed": "soon"}).encode(),
    "nan_time": b'{"host": "h", "pid": 1, "token": "t", "renewed": NaN}',
    "huge_pid": json.dumps({"host": "h", "pid": 10**30, "token": "t", "renewed": 1.0}).encode(),
    "negative_pid": json.dumps({"host": "h", "pid": -1, "token": "t", "renewed": 1.0e12}).encode(),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_lease_is_taken_over_with_a_note_naming_it(tmp_path, capsys, case):
    st = Storage(str(tmp_path), "s")
    st.write_bytes(L.NAME, DAMAGED[case])
    me = L.Lease(st)
    me.acquire()
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"note: taking over a damaged lease file (not one hier-tl wrote): {st.path(L.NAME)}"]
    assert json.loads(st.read_text(L.NAME))["token"] == me.me["token"]
    me.release()
    assert not st.exists(L.NAME)
