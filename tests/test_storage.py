"""Where results live: local folders and object-store URIs, and the multi-host storage rule."""

import pytest

from hier_tl.storage import Storage
from hier_tl.sweep import SweepConfig


def test_local_storage_round_trip(tmp_path):
    st = Storage(str(tmp_path / "res"), "exp")
    assert st.is_local and st.exp == str(tmp_path / "res" / "exp") and st.uri == st.exp
    st.write_trials([{"trial_id": "a", "x": 1}])
    st.write_text("s.yaml", "x: 1\n")
    with st.table("epochs") as t:
        t.append([{"trial_id": "a", "epoch": 1, "m": 0.5}])
    assert st.exists("trials.parquet") and st.read("trials").x.tolist() == [1]
    assert st.read("epochs").m.tolist() == [0.5] and st.read("thresholds").empty
    assert st.read_text("s.yaml") == "x: 1\n" and not any(p.name.endswith(".tmp") for p in (tmp_path / "res" / "exp").iterdir())
    assert Storage(f"file://{tmp_path}/res", "exp").is_local
    assert Storage.open(st.uri).exp == st.exp  # what a sweep prints opens the same folder


def test_object_store_uri_goes_through_pyarrow():
    root = "s3://bucket/prefix?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"
    st = Storage(root, "exp")
    assert not st.is_local and st.exp == "bucket/prefix/exp" and type(st.fs).__name__ == "S3FileSystem"
    # the printed URI keeps scheme and query, and opens the same sweep folder again
    assert st.uri == "s3://bucket/prefix/exp?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http"
    again = Storage.open(st.uri)
    assert again.exp == st.exp and again.name == "exp" and again.uri == st.uri


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", "", ".hidden", "x y"])
def test_names_are_single_path_segments(tmp_path, name):
    from hier_tl.errors import ConfigError
    with pytest.raises(ConfigError, match="not a valid sweep name"):
        Storage(str(tmp_path), name)
    assert list(tmp_path.iterdir()) == []  # nothing written outside (or inside) the storage


def _fake_ray(monkeypatch, hosts, resources):
    import ray
    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeManagerAddress": h, "Alive": True} for h in hosts])


def test_node_local_storage_is_refused_on_a_multi_host_cluster(monkeypatch, tmp_path):
    from hier_tl.errors import SweepError
    from hier_tl.runner import check_cluster
    _fake_ray(monkeypatch, ["10.0.0.1", "10.0.0.2"], {"CPU": 8})
    with pytest.raises(SweepError, match="node-local path"):
        check_cluster(SweepConfig(), Storage(str(tmp_path), "x"))
    check_cluster(SweepConfig(), Storage("s3://b/p?region=us-east-1", "x"))  # object storage is fine
    _fake_ray(monkeypatch, ["127.0.0.1", "127.0.0.1"], {"CPU": 8})
    check_cluster(SweepConfig(), Storage(str(tmp_path), "x"))  # nodes on one host share its disk
