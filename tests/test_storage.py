"""Where results live: local folders and object-store URIs, and the multi-host storage rule."""

import pytest

from hier_tl.results.storage import Storage


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
    from hier_tl.core.errors import ConfigError
    with pytest.raises(ConfigError, match="not a valid sweep name"):
        Storage(str(tmp_path), name)
    assert list(tmp_path.iterdir()) == []  # nothing written outside (or inside) the storage






def test_a_file_uri_names_the_same_local_folder_as_its_path(tmp_path):
    for uri in (f"file://{tmp_path}/sweep", str(tmp_path / "sweep")):
        st = Storage.open(uri)
        assert (st.uri, st.name, st.is_local) == (str(tmp_path / "sweep"), "sweep", True)
