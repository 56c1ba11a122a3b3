"""Tests of hjbsolve.store: layout, round trip, xarray compatibility, atomic writes."""

import os

import h5py
import numpy as np
import pytest

from hjbsolve import store
from hjbsolve.errors import HJBError
from hjbsolve.store import Group, StoreError, Variable

CASE_TEXT = "[problem]\nname = 'entropy-sgd'\n[grid]\nnx = 41\n"


def make_tree() -> Group:
    x = np.linspace(-1.0, 1.0, 5)
    y = np.linspace(0.0, 1.0, 4)
    p = np.array([-2.0, 0.0, 2.0])
    rng = np.random.default_rng(0)
    root = Group(
        coords={
            "x": Variable(x, ("x",), {"long_name": "slow variable", "units": "1"}),
            "y": Variable(y, ("y",), {"long_name": "fast variable"}),
            "p": Variable(p, ("p",), {"long_name": "momentum"}),
        },
        variables={
            "mu": Variable(rng.random((5, 4)), ("x", "y"),
                           {"long_name": "invariant measure", "units": "1", "convention": "sums to 1"}),
            "hbar": Variable(rng.random((5, 3)), ("x", "p"), {"long_name": "effective Hamiltonian"}),
        },
        attrs={
            "case": CASE_TEXT,
            "gamma": 0.5,
            "n_iter": 12,
            "converged": True,
            "stalled": False,
            "eps_list": np.array([0.1, 0.0]),
            "methods": ["sl", "cell"],
            "np_float": np.float32(1.5),
            "np_int": np.int32(-3),
            "skipped": None,
        },
    )
    root.groups["eps_0.1"] = Group(
        coords={"t": Variable(np.array([0.0, 0.5, 1.0]), ("t",), {"units": "s"})},
        variables={"u": Variable(rng.random((3, 5)), ("t", "x"), {"long_name": "value function"})},
        attrs={"eps": 0.1},
    )
    root.groups["eps_0"] = Group(
        coords={"x": Variable(np.linspace(-2, 2, 7), ("x",), {"long_name": "finer grid"})},
        variables={"u": Variable(rng.random(7), ("x",))},
        attrs={"eps": 0.0, "note": "limit problem"},
        groups={"deep": Group(variables={"v": Variable(np.arange(6, dtype=np.int32), ("x2",))})},
    )
    return root


def assert_attrs(actual: dict, expected: dict) -> None:
    expected = {k: v for k, v in expected.items() if v is not None}
    assert list(actual) == list(expected)
    for key, value in expected.items():
        if isinstance(value, (np.ndarray, list)):
            np.testing.assert_array_equal(np.asarray(actual[key]), np.asarray(value))
        else:
            assert actual[key] == value, key
            assert type(actual[key]) is not np.ndarray


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------------------
# round trip and layout


def test_round_trip(tmp_path):
    tree = make_tree()
    path = tmp_path / "result.h5"
    store.write(path, tree)
    back = store.read(path)
    assert back == store.complete(tree)
    assert list(back.coords) == ["x", "y", "p"]
    assert list(back.variables) == ["mu", "hbar"]
    assert list(back.groups) == ["eps_0.1", "eps_0"]
    np.testing.assert_array_equal(back.variables["mu"].data, tree.variables["mu"].data)
    assert back.variables["hbar"].dims == ("x", "p")
    assert back.variables["mu"].attrs == tree.variables["mu"].attrs
    assert_attrs(back.attrs, tree.attrs)
    assert back.attrs["converged"] is True and back.attrs["stalled"] is False
    assert isinstance(back.attrs["n_iter"], int) and isinstance(back.attrs["case"], str)
    assert back.attrs["methods"] == ["sl", "cell"]
    # child groups carry their own coordinates: own ones, copied ones, index ones
    g = back.groups["eps_0.1"]
    assert list(g.coords) == ["t", "x"]
    np.testing.assert_array_equal(g.coords["x"].data, tree.coords["x"].data)
    assert g.coords["x"].attrs == tree.coords["x"].attrs
    e0 = back.groups["eps_0"]
    np.testing.assert_array_equal(e0.coords["x"].data, np.linspace(-2, 2, 7))
    deep = e0.groups["deep"]
    np.testing.assert_array_equal(deep.coords["x2"].data, np.arange(6))
    assert deep.variables["v"].data.dtype == np.int32


def test_complete_is_what_is_stored_and_idempotent(tmp_path):
    tree = make_tree()
    done = store.complete(tree)
    assert store.complete(done) == done
    assert "x" in done.groups["eps_0.1"].coords and "x" not in tree.groups["eps_0.1"].coords
    assert "skipped" not in done.attrs
    path = tmp_path / "r.h5"
    store.write(path, done)
    assert store.read(path) == done


def test_plain_h5py_layout(tmp_path):
    path = tmp_path / "r.h5"
    store.write(path, make_tree())
    with h5py.File(path, "r") as f:
        for name in ("x", "y", "p"):
            assert h5py.h5ds.is_scale(f[name].id)
            assert h5py.h5ds.get_scale_name(f[name].id) == name.encode()
        assert not h5py.h5ds.is_scale(f["mu"].id)
        assert [d[0].name for d in f["mu"].dims] == ["/x", "/y"]
        assert [d[0].name for d in f["hbar"].dims] == ["/x", "/p"]
        assert [d[0].name for d in f["eps_0.1/u"].dims] == ["/eps_0.1/t", "/eps_0.1/x"]
        assert h5py.h5ds.is_scale(f["eps_0/deep/x2"].id)
        assert [d[0].name for d in f["eps_0/deep/v"].dims] == ["/eps_0/deep/x2"]
        assert f.attrs["hjbsolve_store"] == store.FORMAT_VERSION
        # attribute encodings
        assert isinstance(f.attrs["case"], str)
        assert h5py.check_string_dtype(f.attrs.get_id("case").dtype).encoding == "utf-8"
        assert f.attrs["converged"].dtype == np.int8
        assert "skipped" not in f.attrs


def test_index_coordinate_for_dimension_without_coordinate(tmp_path):
    tree = Group(variables={"a": Variable(np.ones((2, 3)), ("k", "j"))})
    path = tmp_path / "r.h5"
    store.write(path, tree)
    back = store.read(path)
    assert list(back.coords) == ["k", "j"]
    np.testing.assert_array_equal(back.coords["j"].data, [0, 1, 2])
    assert back.coords["j"].data.dtype == np.int64
    with h5py.File(path, "r") as f:
        assert h5py.h5ds.is_scale(f["k"].id) and h5py.h5ds.is_scale(f["j"].id)


def test_bool_and_string_data(tmp_path):
    tree = Group(
        coords={"label": Variable(np.array(["a", "bb", "ccc"]), ("label",))},
        variables={"ok": Variable(np.array([True, False, True]), ("label",), {"long_name": "mask"}),
                   "scalar": Variable(np.float64(2.5), ())},
    )
    path = tmp_path / "r.h5"
    store.write(path, tree)
    back = store.read(path)
    assert back == tree
    assert back.variables["ok"].data.dtype == bool
    assert back.variables["ok"].attrs == {"long_name": "mask"}
    assert back.variables["scalar"].data.shape == ()


def test_compression_only_for_large_variables(tmp_path):
    big = np.random.default_rng(1).random((200, 100))  # 160 KB
    tree = Group(variables={"big": Variable(big, ("a", "b")), "small": Variable(np.ones(10), ("a2",))})
    path = tmp_path / "r.h5"
    store.write(path, tree)
    with h5py.File(path, "r") as f:
        assert f["big"].compression == store.FILTER["compression"] and f["big"].shuffle
        assert f["big"].chunks is not None
        assert f["small"].compression is None and f["small"].chunks is None
    np.testing.assert_array_equal(store.read(path).variables["big"].data, big)


# ---------------------------------------------------------------------------
# xarray / h5netcdf


def test_xarray_root_and_groups(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    tree = make_tree()
    path = tmp_path / "r.h5"
    store.write(path, tree)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert dict(ds.sizes) == {"x": 5, "y": 4, "p": 3}
        assert set(ds.coords) == {"x", "y", "p"}
        assert set(ds.data_vars) == {"mu", "hbar"}
        assert ds["mu"].dims == ("x", "y") and ds["hbar"].dims == ("x", "p")
        np.testing.assert_array_equal(ds["x"].values, tree.coords["x"].data)
        np.testing.assert_array_equal(ds["mu"].values, tree.variables["mu"].data)
        assert ds["mu"].attrs == tree.variables["mu"].attrs
        assert ds["x"].attrs == {"long_name": "slow variable", "units": "1"}
        assert ds.attrs["case"] == CASE_TEXT
        assert ds.attrs["gamma"] == 0.5 and ds.attrs["n_iter"] == 12
        assert ds.attrs["converged"] == 1 and ds.attrs["stalled"] == 0  # bools are int8 0/1
        assert list(ds.attrs["methods"]) == ["sl", "cell"]
        np.testing.assert_array_equal(ds.attrs["eps_list"], [0.1, 0.0])
        assert "hjbsolve_store" in ds.attrs
    with xr.open_dataset(path, engine="h5netcdf", group="eps_0.1") as ds:
        assert dict(ds.sizes) == {"t": 3, "x": 5}
        assert ds["u"].dims == ("t", "x")
        np.testing.assert_array_equal(ds["x"].values, tree.coords["x"].data)
        np.testing.assert_array_equal(ds["t"].values, [0.0, 0.5, 1.0])
        np.testing.assert_array_equal(ds["u"].values, tree.groups["eps_0.1"].variables["u"].data)
        assert ds["t"].attrs == {"units": "s"}
        assert ds.attrs == {"eps": 0.1}
    with xr.open_dataset(path, engine="h5netcdf", group="eps_0") as ds:
        assert dict(ds.sizes) == {"x": 7}
        np.testing.assert_array_equal(ds["x"].values, np.linspace(-2, 2, 7))
        assert ds.attrs["note"] == "limit problem"
    with xr.open_dataset(path, engine="h5netcdf", group="eps_0/deep") as ds:
        assert ds["v"].dims == ("x2",)
        np.testing.assert_array_equal(ds["x2"].values, np.arange(6))


def test_xarray_bool_and_strings(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    tree = Group(
        coords={"label": Variable(np.array(["a", "bb"]), ("label",))},
        variables={"ok": Variable(np.array([True, False]), ("label",))},
    )
    path = tmp_path / "r.h5"
    store.write(path, tree)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds["ok"].dtype == bool
        assert list(ds["label"].values) == ["a", "bb"]


# ---------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "tree",
    [
        Group(attrs={"nested": {"a": 1}}),
        Group(attrs={"obj": object()}),
        Group(attrs={"mixed": ["a", 1]}),
        Group(attrs={"matrix": np.ones((2, 2))}),
        Group(attrs={"CLASS": "x"}),
        Group(attrs={"hjbsolve_store": 2}),
        Group(variables={"v": Variable(np.ones(3), ("x", "y"))}),
        Group(variables={"v": Variable(np.ones(3) + 1j, ("x",))}),
        Group(coords={"x": Variable(np.ones(3), ("t",))}),
        Group(coords={"x": Variable(np.ones(3), ("x",))}, variables={"v": Variable(np.ones(4), ("x",))}),
        Group(variables={"a/b": Variable(np.ones(3), ("x",))}),
        Group(variables={"x": Variable(np.ones(3), ("t",)), "v": Variable(np.ones(3), ("x",))}),
        Group(coords={"x": Variable(np.ones(3), ("x",))},
              groups={"g": Group(variables={"v": Variable(np.ones(4), ("x",))})}),
    ],
    ids=["nested-dict", "object", "mixed-list", "2d-attr", "reserved-attr", "format-attr",
         "ndim-mismatch", "complex", "coord-dims", "size-mismatch", "slash", "var-named-like-dim",
         "inherited-size-mismatch"],
)
def test_invalid_trees_are_refused_before_writing(tmp_path, tree):
    path = tmp_path / "r.h5"
    with pytest.raises(StoreError):
        store.write(path, tree)
    assert listing(tmp_path) == []


def test_store_error_is_hjb_error():
    assert issubclass(StoreError, HJBError)


# ---------------------------------------------------------------------------
# atomicity and writability


@pytest.fixture
def existing(tmp_path):
    path = tmp_path / "out.h5"
    store.write(path, Group(attrs={"version": "old"}, variables={"a": Variable(np.arange(3.0), ("i",))}))
    return path, path.read_bytes()


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_write_keeps_existing_file_and_cleans_up(monkeypatch, existing, exc):
    path, before = existing
    original = store._create_dataset
    calls = []

    def flaky(h5, name, data):
        calls.append(name)
        if len(calls) > 1:
            raise exc
        return original(h5, name, data)

    monkeypatch.setattr(store, "_create_dataset", flaky)
    with pytest.raises(type(exc)):
        store.write(path, make_tree())
    assert len(calls) == 2
    assert path.read_bytes() == before
    assert listing(path.parent) == ["out.h5"]


@pytest.mark.parametrize("exc", [ValueError("boom"), KeyboardInterrupt()])
def test_atomic_output_removes_temp_on_exception(existing, exc):
    path, before = existing
    seen = []
    with pytest.raises(type(exc)):
        with store.atomic_output(path) as tmp:
            seen.append(tmp)
            assert os.path.dirname(tmp) == str(path.parent)
            assert os.path.basename(tmp).startswith(f".out.h5.tmp-{os.getpid()}-")
            with open(tmp, "wb") as fh:
                fh.write(b"partial")
            raise exc
    assert seen and not os.path.exists(seen[0])
    assert path.read_bytes() == before
    assert listing(path.parent) == ["out.h5"]


def test_atomic_output_replaces_on_success(existing):
    path, _ = existing
    with store.atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"new")
    assert path.read_bytes() == b"new"
    assert listing(path.parent) == ["out.h5"]


def test_write_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "r.h5"
    store.check_writable(path)
    assert path.parent.is_dir() and listing(path.parent) == []
    store.write(path, make_tree())
    assert listing(path.parent) == ["r.h5"]


def test_unwritable_locations(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    for path in (blocker / "r.h5", blocker / "sub" / "r.h5"):
        with pytest.raises(StoreError, match="cannot write"):
            store.check_writable(path)
        with pytest.raises(StoreError, match=f"cannot write {path}"):
            store.write(path, make_tree())
    folder = tmp_path / "folder.h5"
    folder.mkdir()
    with pytest.raises(StoreError, match="folder"):
        store.write(folder, Group())
    assert blocker.read_text() == "not a folder"
    assert listing(tmp_path) == ["file.txt", "folder.h5"]


def test_read_errors(tmp_path):
    missing = tmp_path / "missing.h5"
    with pytest.raises(StoreError, match=str(missing)):
        store.read(missing)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(StoreError, match=f"{text}.*not an HDF5"):
        store.read(text)
    with pytest.raises(StoreError, match=str(tmp_path)):
        store.read(tmp_path)
    with pytest.raises(StoreError):
        store.describe(missing)


# ---------------------------------------------------------------------------
# update and describe


def test_update_creates_adds_and_replaces(tmp_path):
    path = tmp_path / "runs" / "r.h5"
    run = lambda v: Group(variables={"u": Variable(np.full(3, v), ("x",))}, attrs={"value": v})  # noqa: E731
    store.update(path, "eps_0.1", run(1.0))
    store.update(path, "eps_0.01", run(2.0))
    back = store.read(path)
    assert list(back.groups) == ["eps_0.1", "eps_0.01"]
    assert back.groups["eps_0.1"].attrs["value"] == 1.0
    store.update(path, "eps_0.1", run(3.0))
    back = store.read(path)
    assert list(back.groups) == ["eps_0.1", "eps_0.01"]
    np.testing.assert_array_equal(back.groups["eps_0.1"].variables["u"].data, [3.0] * 3)
    assert back.groups["eps_0.01"].attrs["value"] == 2.0
    assert listing(path.parent) == ["r.h5"]


def test_update_keeps_existing_tree(tmp_path):
    path = tmp_path / "r.h5"
    tree = make_tree()
    store.write(path, tree)
    new = Group(variables={"w": Variable(np.ones(5), ("x",))})
    store.update(path, "extra", new)
    back = store.read(path)
    expected = store.complete(tree)
    expected.groups["extra"] = new
    assert back == store.complete(expected)
    assert back.groups["extra"].coords["x"] == tree.coords["x"]  # copied from the root
    with pytest.raises(StoreError):
        store.update(path, "mu", new)
    with pytest.raises(StoreError):
        store.update(path, "a/b", new)


def test_describe(tmp_path):
    path = tmp_path / "r.h5"
    tree = make_tree()
    store.write(path, tree)
    text = store.describe(path)
    assert text == store.describe(path)
    for name in ("mu", "hbar", "u", "v", "x", "y", "p", "t", "x2"):
        assert f"\n    {name} " in text, name
    for group in ("/eps_0.1", "/eps_0", "/eps_0/deep"):
        assert f"\n{group}\n" in text
    assert "'[problem]' (4 lines)" in text
    assert "name = 'entropy-sgd'" not in text
    assert "invariant measure" in text and "[1]" in text
    assert "(x, y)" in text and "5 x 4" in text and "float64" in text
    mu = tree.variables["mu"].data
    assert f"min {mu.min():.6g}, max {mu.max():.6g}" in text
    assert "converged" in text and "true" in text
    assert "size 5" in text and "[-1.0, 1.0]" in text
    assert "eps  = 0.0" in text and "n_iter    = 12" in text
