"""Where results live: local folders and object-store URIs, and the multi-host storage rule."""

import pytest

from hier_tl.storage import Storage
from hier_tl.sweep import SweepConfig


def test_local_storage_round_trip(tmp_path):
    st = Storage(str(tmp_path / "res"), "exp")
    assert st.is_local and st.exp == str(tmp_path / "res" / "exp")
    st.write_table([{"a": 1}], "t.parquet")
    st.write_text("s.yaml", "x: 1\n")
    assert st.exists("t.parquet") and st.read_table("t.parquet").a.tolist() == [1]
    assert st.read_text("s.yaml") == "x: 1\n" and not any(p.name.endswith(".tmp") for p in (tmp_path / "res" / "exp").iterdir())
    assert Storage(f"file://{tmp_path}/res", "exp").is_local


def test_object_store_uri_goes_through_pyarrow():
    st = Storage("s3://bucket/prefix?region=us-east-1&endpoint_override=127.0.0.1:9&scheme=http", "exp")
    assert not st.is_local and st.exp == "bucket/prefix/exp" and type(st.fs).__name__ == "S3FileSystem"


def _fake_ray(monkeypatch, hosts, resources):
    import ray
    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeManagerAddress": h, "Alive": True} for h in hosts])


def test_node_local_storage_is_refused_on_a_multi_host_cluster(monkeypatch, tmp_path):
    from hier_tl.tune import SweepError, check_cluster
    _fake_ray(monkeypatch, ["10.0.0.1", "10.0.0.2"], {"CPU": 8})
    with pytest.raises(SweepError, match="node-local path"):
        check_cluster(SweepConfig(), Storage(str(tmp_path), "x"))
    check_cluster(SweepConfig(), Storage("s3://b/p?region=us-east-1", "x"))  # object storage is fine
    _fake_ray(monkeypatch, ["127.0.0.1", "127.0.0.1"], {"CPU": 8})
    check_cluster(SweepConfig(), Storage(str(tmp_path), "x"))  # nodes on one host share its disk
