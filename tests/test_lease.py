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
