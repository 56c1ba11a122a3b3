"""HDF5 store for solver results: self-describing files, dimension scales, atomic writes.

A result is a tree of :class:`Group` objects holding named arrays
(:class:`Variable`) with named dimensions, 1-D coordinates and attributes.
:func:`write` stores such a tree in one HDF5 file, :func:`read` gives it back,
:func:`update` adds/replaces one top-level sub-group, :func:`describe` renders
a summary for ``hjbsolve info FILE``.

File layout (format ``hjbsolve_store = 1``)
-------------------------------------------
* The root :class:`Group` is the HDF5 file itself; every sub-group is an HDF5
  group of the same name.  Names must be non-empty and must not contain ``/``;
  within one group, coordinate, variable and sub-group names are disjoint.
* Every coordinate is a 1-D dataset named after its dimension and turned into
  an HDF5 *dimension scale* (``make_scale(name)``).  Every axis of every
  variable has the scale of its dimension attached
  (``dims[i].attach_scale``), so all dimensions are named in the file.
* Each group is self-contained: it carries a coordinate for every dimension
  used in it.  A dimension without a coordinate in the group is taken from the
  nearest ancestor that has one (the coordinate is *copied* into the group,
  data and attributes); if no ancestor has one, an integer index coordinate
  ``0..N-1`` (int64, no attributes) is created in the group.  Hence
  ``xarray.open_dataset(path, engine="h5netcdf", group="eps_0.1")`` works for
  every group.  :func:`complete` returns a tree completed the same way, and
  ``read(write(tree))`` equals ``complete(tree)``.
* Only plain h5py is used to write.  netCDF-4 bookkeeping attributes
  (``_NCProperties``, ``_Netcdf4Dimid``, ``_Netcdf4Coordinates``) are *not*
  written: netCDF readers (h5netcdf, hence xarray; netCDF-C) accept pure HDF5
  files whose dimensions are all dimension scales, and claiming netCDF-4
  provenance without following all of its internal rules would be worse than
  not claiming it.  Creation order of groups, datasets and attributes is
  tracked (``track_order=True``), as netCDF-4 does, so order round-trips.
* The root carries the attribute ``hjbsolve_store = 1`` (format version); it
  is consumed by :func:`read` and is not part of the returned attributes.
* Data: numeric (bool, signed/unsigned integers, floats) or text arrays.
  Text is stored as variable-length UTF-8 strings.  Boolean arrays are stored
  as int8 0/1 with the attribute ``dtype = "bool"`` (the xarray convention;
  xarray and :func:`read` decode them back to bool).  Arrays larger than
  64 KiB are chunked and compressed (gzip level 4 with the shuffle filter);
  smaller ones are contiguous and uncompressed.  No ``_FillValue`` is written.
* Attributes: ``str`` -> variable-length UTF-8 string; ``int`` -> int64;
  ``float`` -> float64; numpy scalars keep their dtype; 1-D numeric arrays
  and lists/tuples of numbers -> 1-D arrays; lists/tuples of ``str`` -> 1-D
  variable-length string arrays (read back as ``list[str]``).  ``None``
  values are skipped.  netCDF has no boolean type, so ``bool`` is stored as an
  int8 scalar 0/1; :func:`read` turns int8 scalar attributes of files carrying
  ``hjbsolve_store`` back into ``bool`` (an ``np.int8`` scalar given by the
  caller is widened to int16 to keep this unambiguous; boolean *arrays* in
  attributes become int8 arrays).  xarray shows boolean attributes as 0/1.
  Nested dicts, multi-dimensional arrays, complex numbers, bytes and other
  objects are refused with :class:`StoreError`, as are the names reserved by
  HDF5 dimension scales and netCDF-4 (``CLASS``, ``NAME``, ``DIMENSION_LIST``,
  ``REFERENCE_LIST``, ``_Netcdf4*``, ``_NCProperties``) and ``hjbsolve_store``.

Writes are atomic and safe.  HDF5 builds every file in memory (:class:`FileImage`,
the h5py core driver without a backing store); the finished bytes are written
with plain ``os.write`` to ``.<basename>.tmp-<pid>-<hex>`` in the destination
folder, synced, and renamed onto the final name with ``os.replace``.  So a full
disk, a quota, a permission or an I/O error is an ordinary ``OSError``, raised
as one :class:`StoreError`; h5py never fails halfway through a file on disk.
On any exception (including ``KeyboardInterrupt``) the temporary file is
removed and an existing file at the destination is left untouched.  Only
regular files are replaced (:func:`output_target`): a folder, FIFO, device or
socket is refused, and a symbolic link is followed (its target is replaced,
the link stays).  Call :func:`check_writable` before a long computation to
fail early on an unwritable destination.

:func:`update` loads the file into memory, adds the group and writes the
whole file again.  It is serialised within one process; across processes,
hold :func:`output_lock` (an ``fcntl.flock`` lock file beside the output), as
the ``hjbsolve`` commands do.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import h5py
import numpy as np

from hjbsolve.errors import HJBError

__all__ = [
    "Variable",
    "Group",
    "StoreError",
    "write",
    "read",
    "update",
    "describe",
    "complete",
    "atomic_output",
    "check_writable",
    "output_target",
    "output_lock",
    "write_bytes",
    "root_attrs",
    "FileImage",
    "FORMAT_VERSION",
    "COMPRESS_THRESHOLD",
]

FORMAT_VERSION = 1
FORMAT_ATTR = "hjbsolve_store"
#: Arrays with more bytes than this are chunked and compressed with FILTER.
COMPRESS_THRESHOLD = 64 * 1024
#: Byte shuffle + LZF (built into h5py; read by h5py and xarray's h5netcdf engine). Measured by
#: scripts/bench_store.py on a smooth float64 V and a clipped float32 feedback (192 MB raw, shared machine
#: under load 11-13, two runs): lzf writes 44-67 MB/s at ratio 1.78; gzip at levels 1/4/6 20-33 MB/s at
#: 1.88-1.91 (level 1 no faster here); Blosc/LZ4 through hdf5plugin 267-1117 MB/s at 1.77, Blosc/Zstd
#: 86-273 MB/s at 1.79. Blosc is much faster, but every reader of the files (plain h5py, xarray) would then
#: have to import hdf5plugin first; LZF keeps them readable as they are.
FILTER = {"compression": "lzf", "shuffle": True}
#: Attribute names used by HDF5 dimension scales / netCDF-4 internals.
_RESERVED_ATTRS = frozenset(
    {"CLASS", "NAME", "DIMENSION_LIST", "REFERENCE_LIST", "_NCProperties", "_Netcdf4Dimid",
     "_Netcdf4Coordinates", "_nc3_strict", "_SuperblockVersion", "_IsNetcdf4"}
)
_NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable."
_BOOL_MARK = ("dtype", "bool")


class StoreError(HJBError):
    """A result file cannot be written or read, or a tree cannot be stored."""


# ---------------------------------------------------------------------------
# data model


@dataclass(eq=False)
class Variable:
    """An array with one dimension name per axis and attributes."""

    data: np.ndarray
    dims: tuple[str, ...]
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        if isinstance(self.dims, str):
            self.dims = (self.dims,)
        self.dims = tuple(self.dims)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Variable):
            return NotImplemented
        return (
            self.dims == other.dims
            and _arrays_equal(self.data, other.data, check_dtype=True)
            and _attrs_equal(self.attrs, other.attrs)
        )


@dataclass(eq=False)
class Group:
    """A node of the result tree: coordinates, variables, attributes, sub-groups."""

    coords: dict[str, Variable] = field(default_factory=dict)
    variables: dict[str, Variable] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    groups: dict[str, "Group"] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Group):
            return NotImplemented
        return (
            _dicts_equal(self.coords, other.coords)
            and _dicts_equal(self.variables, other.variables)
            and _attrs_equal(self.attrs, other.attrs)
            and _dicts_equal(self.groups, other.groups)
        )


def _arrays_equal(a: Any, b: Any, check_dtype: bool = False) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if check_dtype and a.dtype != b.dtype and not (a.dtype.kind == b.dtype.kind == "U"):
        return False
    nan_ok = a.dtype.kind in "fc" and b.dtype.kind in "fc"
    try:
        return bool(np.array_equal(a, b, equal_nan=nan_ok))
    except TypeError:
        return False


def _dicts_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def _attrs_equal(a: dict, b: dict) -> bool:
    a = {k: v for k, v in a.items() if v is not None}
    b = {k: v for k, v in b.items() if v is not None}
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, (np.ndarray, list, tuple)) or isinstance(y, (np.ndarray, list, tuple)):
            if not _arrays_equal(x, y):
                return False
        elif isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        elif not x == y:
            return False
    return True


# ---------------------------------------------------------------------------
# validation and completion of a tree


def _check_name(name: Any, what: str, where: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise StoreError(f"invalid {what} name {name!r} in group {where}: "
                         "names must be non-empty strings without '/'")


def _check_data(var: Variable, what: str) -> np.ndarray:
    data = np.asarray(var.data)
    kind = data.dtype.kind
    if kind == "O":
        if not all(isinstance(v, str) for v in data.flat):
            raise StoreError(f"{what}: object arrays must contain only str")
        data = data.astype(str) if data.size else np.asarray(data, dtype=str)
    elif kind not in "biufU":
        raise StoreError(f"{what}: unsupported dtype {data.dtype} "
                         "(use bool, integer, float or str arrays)")
    if data.ndim != len(var.dims):
        raise StoreError(f"{what}: {data.ndim}-D data but {len(var.dims)} dims {var.dims}")
    return data


def _group_path(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


def complete(root: Group) -> Group:
    """Return a validated copy of *root* as it will be stored.

    Every dimension used in a group gets a coordinate in that group (copied
    from the nearest ancestor, else an int64 index ``0..N-1``), ``None``
    attributes are dropped and data are converted to arrays.  Arrays are
    shared with *root*, not copied.  Raises :class:`StoreError` on an invalid
    tree.  ``read(write(root))`` equals ``complete(root)``.
    """
    return _complete(root, "/", {})


def _complete(group: Group, where: str, inherited: dict[str, Variable]) -> Group:
    if not isinstance(group, Group):
        raise StoreError(f"group {where} is a {type(group).__name__}, not a Group")
    sizes: dict[str, int] = {}
    coords: dict[str, Variable] = {}
    for name, var in group.coords.items():
        _check_name(name, "coordinate", where)
        if not isinstance(var, Variable):
            raise StoreError(f"coordinate {name!r} in group {where} is not a Variable")
        data = _check_data(var, f"coordinate {name!r} in group {where}")
        if var.dims != (name,):
            raise StoreError(f"coordinate {name!r} in group {where} must have dims ({name!r},), "
                             f"not {var.dims}")
        sizes[name] = data.shape[0]
        coords[name] = Variable(data, (name,), _clean_attrs(var.attrs, f"coordinate {name!r} in group {where}"))
    variables: dict[str, Variable] = {}
    used: list[str] = []
    for name, var in group.variables.items():
        _check_name(name, "variable", where)
        what = f"variable {name!r} in group {where}"
        if not isinstance(var, Variable):
            raise StoreError(f"{what} is not a Variable")
        if name in group.coords:
            raise StoreError(f"{what}: the name is also a coordinate")
        data = _check_data(var, what)
        for dim in var.dims:
            _check_name(dim, "dimension", where)
        if len(set(var.dims)) != len(var.dims):
            raise StoreError(f"{what}: repeated dimension in {var.dims}")
        for dim, n in zip(var.dims, data.shape):
            if dim in sizes and sizes[dim] != n:
                src = "coordinate" if dim in coords else "another variable"
                raise StoreError(f"{what}: dimension {dim!r} has length {n} but "
                                 f"{sizes[dim]} in {src} of the group")
            sizes[dim] = n
            if dim not in used:
                used.append(dim)
        variables[name] = Variable(data, var.dims, _clean_attrs(var.attrs, what))
    for dim in used:
        if dim in variables:
            raise StoreError(f"variable {dim!r} in group {where} has the name of a dimension; "
                             "make it a coordinate (dims == (name,)) or rename it")
        if dim in coords:
            continue
        parent = inherited.get(dim)
        if parent is not None:
            if parent.data.shape[0] != sizes[dim]:
                raise StoreError(
                    f"group {where}: dimension {dim!r} has length {sizes[dim]} but the "
                    f"coordinate {dim!r} of an enclosing group has length {parent.data.shape[0]}; "
                    "give the group its own coordinate")
            coords[dim] = Variable(parent.data, (dim,), dict(parent.attrs))
        else:
            coords[dim] = Variable(np.arange(sizes[dim], dtype=np.int64), (dim,), {})
    attrs = _clean_attrs(group.attrs, f"group {where}")
    if where == "/" and FORMAT_ATTR in attrs:
        raise StoreError(f"attribute name {FORMAT_ATTR!r} is reserved (group /)")
    scope = dict(inherited)  # only explicit coordinates are inherited, not index ones
    scope.update({k: coords[k] for k in group.coords})
    groups: dict[str, Group] = {}
    for name, sub in group.groups.items():
        _check_name(name, "group", where)
        if name in coords or name in variables:
            raise StoreError(f"group {where}: sub-group {name!r} has the name of a "
                             "coordinate or variable")
        groups[name] = _complete(sub, _group_path(where, name), scope)
    return Group(coords=coords, variables=variables, attrs=attrs, groups=groups)


def _clean_attrs(attrs: dict, where: str) -> dict:
    if not isinstance(attrs, dict):
        raise StoreError(f"attributes of {where} must be a dict, not {type(attrs).__name__}")
    out = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if not isinstance(key, str) or not key:
            raise StoreError(f"invalid attribute name {key!r} of {where}")
        if key in _RESERVED_ATTRS:
            raise StoreError(f"attribute name {key!r} of {where} is reserved")
        _encode_attr(value, f"attribute {key!r} of {where}")  # validate only
        out[key] = value
    return out


def _encode_attr(value: Any, what: str) -> Any:
    """Python/numpy attribute value -> value for h5py (see module docstring)."""
    if isinstance(value, dict):
        raise StoreError(f"{what}: nested dicts are not supported; flatten the keys")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)):
        return np.int8(1 if value else 0)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise StoreError(f"{what}: integer {value} does not fit in int64")
        return np.int64(value)
    if isinstance(value, float):
        return np.float64(value)
    if isinstance(value, np.generic):
        kind = value.dtype.kind
        if kind == "U":
            return str(value)
        if kind == "i" and value.dtype.itemsize == 1:
            return np.int16(value)  # int8 scalars mean bool in this format
        if kind in "iuf":
            return value
        raise StoreError(f"{what}: unsupported numpy type {value.dtype}")
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return ("str-list", list(value))
        if all(isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)) for v in value):
            value = np.asarray(value)
        else:
            raise StoreError(f"{what}: a list must hold only str or only numbers")
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise StoreError(f"{what}: only 1-D arrays are supported, not {value.ndim}-D")
        kind = value.dtype.kind
        if kind == "b":
            return value.astype(np.int8)
        if kind in "iuf":
            return value
        if kind in "UO" and all(isinstance(v, str) for v in value):
            return ("str-list", [str(v) for v in value])
        raise StoreError(f"{what}: unsupported array dtype {value.dtype}")
    raise StoreError(f"{what}: unsupported type {type(value).__name__}")


def _set_attrs(obj: h5py.HLObject, attrs: dict, what: str) -> None:
    for key, value in attrs.items():
        enc = _encode_attr(value, f"attribute {key!r} of {what}")
        if isinstance(enc, tuple):
            obj.attrs.create(key, data=np.array(enc[1], dtype=object), dtype=h5py.string_dtype())
        elif isinstance(enc, str):
            obj.attrs.create(key, data=enc, dtype=h5py.string_dtype())
        else:
            obj.attrs[key] = enc


# ---------------------------------------------------------------------------
# writing


def _create_dataset(h5: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    kwargs: dict[str, Any] = {"track_order": True}
    summary = _fmt_range(data)             # what `hjbsolve info` prints, without reading the data back
    if data.dtype.kind == "U":
        kwargs["dtype"] = h5py.string_dtype()
        data = data.astype(object)
    else:
        if data.dtype.kind == "b":
            data = data.astype(np.int8)
        if data.nbytes > COMPRESS_THRESHOLD and data.ndim > 0:
            kwargs.update(chunks=True, **FILTER)
    ds = h5.create_dataset(name, data=data, **kwargs)
    # the summary is the dataset's HDF5 comment, not an attribute: readers (xarray) see the attributes unchanged
    h5.id.set_comment(name.encode(), summary.encode())
    return ds


def _write_group(h5: h5py.Group, group: Group, where: str, existing: dict | None = None) -> None:
    """Write a *completed* group (see :func:`complete`) into h5 (``existing``: dimension scales already in
    h5 that the new variables attach to)."""
    _set_attrs(h5, group.attrs, f"group {where}")
    scales: dict[str, h5py.Dataset] = dict(existing or {})
    for name, var in group.coords.items():
        ds = _create_dataset(h5, name, var.data)
        ds.make_scale(name)
        if var.data.dtype.kind == "b":
            ds.attrs[_BOOL_MARK[0]] = _BOOL_MARK[1]
        _set_attrs(ds, var.attrs, f"coordinate {name!r} in group {where}")
        scales[name] = ds
    for name, var in group.variables.items():
        ds = _create_dataset(h5, name, var.data)
        for axis, dim in enumerate(var.dims):
            ds.dims[axis].attach_scale(scales[dim])
        if var.data.dtype.kind == "b":
            ds.attrs[_BOOL_MARK[0]] = _BOOL_MARK[1]
        _set_attrs(ds, var.attrs, f"variable {name!r} in group {where}")
    for name, sub in group.groups.items():
        _write_group(h5.create_group(name, track_order=True), sub, _group_path(where, name))


def write(path: str | os.PathLike, root: Group) -> None:
    """Write the tree *root* to the HDF5 file *path*, atomically.

    The tree is validated before anything is created; the parent folder is
    created if needed.  An existing file at *path* is replaced only once the
    new file is complete.  The file is built in memory and copied to disk with
    plain ``os.write`` (see :class:`FileImage`).
    """
    tree = complete(root)
    with FileImage() as image:
        image.merge_completed(tree)
        image.save(path)


_image_count = itertools.count()


class FileImage:
    """An HDF5 file built in memory (h5py core driver, no backing store), saved atomically as a whole.

    HDF5 itself never writes to the disk: :meth:`save` copies the finished image to a temporary file
    with ``os.write`` and renames it, so a full disk, a quota or a permission error is an ordinary
    ``OSError`` (h5py can crash on ENOSPC in the middle of a write) turned into one :class:`StoreError`,
    the temporary file is removed and the previous file is intact.  Each array is encoded (and
    compressed) once however many times the image is saved: a run adds one group per stage and saves
    its partial file after each.  ``FileImage(path)`` starts from the bytes of an existing file.
    """

    def __init__(self, source: str | os.PathLike | None = None):
        name = f"hjbsolve-image-{os.getpid()}-{next(_image_count)}"
        kw = dict(driver="core", backing_store=False, block_size=1 << 20)
        if source is None:
            self._f = h5py.File(name, "w", track_order=True, **kw)
            self._f.attrs[FORMAT_ATTR] = np.int64(FORMAT_VERSION)
            self._scope: dict[str, Variable] = {}
            return
        text = os.fspath(source)
        with _open_for_reading(text):
            pass                                   # the same checks and messages as read()
        try:
            self._f = h5py.File(text, "r+", locking=False, **kw)     # the file itself is never written
            self._scope = {k: v for k, v in _read_group(self._f, True, shallow=True).coords.items()}
        except (OSError, KeyError, ValueError) as exc:
            raise StoreError(f"cannot read {text}: {exc}") from exc

    def __enter__(self) -> "FileImage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    @property
    def groups(self) -> list[str]:
        return [k for k, v in self._f.items() if isinstance(v, h5py.Group)]

    @property
    def attrs(self) -> dict:
        return _read_attrs(self._f, True, skip=(FORMAT_ATTR,))

    def merge(self, root: Group) -> None:
        """Add what the image lacks of *root*: its attributes (set or replaced), the coordinates,
        variables and sub-groups whose names are not in the image yet."""
        part = Group(coords=root.coords, variables=root.variables, attrs=root.attrs,
                     groups={k: g for k, g in root.groups.items() if k not in self._f})
        self.merge_completed(complete(part))

    def merge_completed(self, tree: Group) -> None:
        f = self._f
        _set_attrs(f, tree.attrs, "group /")
        new = Group(coords={k: v for k, v in tree.coords.items() if k not in f},
                    variables={k: v for k, v in tree.variables.items() if k not in f})
        _write_group(f, new, "/", existing={k: f[k] for k in tree.coords if k in f})
        self._scope.update({k: v for k, v in tree.coords.items()})
        for name, sub in tree.groups.items():
            self._replace_group(name, sub)

    def add_group(self, name: str, group: Group) -> None:
        """Add or replace the top-level sub-group *name* (dimensions without a coordinate in it take the
        root's, as in :func:`complete`)."""
        _check_name(name, "group", "/")
        if name in self._f and not isinstance(self._f[name], h5py.Group):
            raise StoreError(f"cannot add group {name!r}: the root has a coordinate or variable of that name")
        sub = _complete(group, _group_path("/", name), dict(self._scope))
        self._replace_group(name, sub)

    def _replace_group(self, name: str, tree: Group) -> None:
        """Write the completed *tree* as the sub-group *name*, in the place of an existing one."""
        f = self._f
        later = []
        if name in f:
            names = list(f)
            later = names[names.index(name) + 1:]
            del f[name]
        _write_group(f.create_group(name, track_order=True), tree, _group_path("/", name))
        for other in later:                # re-link the later ones so that the file order is kept
            f.move(other, other + ".~move")
            f.move(other + ".~move", other)

    def set_attrs(self, attrs: dict) -> None:
        """Set (or replace) root attributes."""
        _set_attrs(self._f, _clean_attrs(attrs, "group /"), "group /")

    def to_bytes(self) -> bytes:
        self._f.flush()
        return self._f.id.get_file_image()

    def save(self, path: str | os.PathLike) -> None:
        """Write the image to *path* atomically (see :func:`write_bytes`)."""
        write_bytes(path, self.to_bytes())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write *data* to *path* atomically with ``os.write`` (temporary file, fsync, rename).  OS errors
    (a full disk, a quota, no permission, a read-only file system) become one :class:`StoreError`; the
    temporary file is removed and an existing file at *path* is left as it was."""
    text = os.fspath(path)
    with atomic_output(path) as tmp:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view[: 1 << 24])
                    view = view[n:]
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"cannot write {text}: {exc.strerror or exc}") from exc


# ---------------------------------------------------------------------------
# atomic output


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def output_target(path: str | os.PathLike) -> str:
    """The absolute path of the file that a write to *path* replaces: *path* itself, or for a symbolic
    link the file it points to (links are followed, so the link stays and its target is replaced).
    Raises :class:`StoreError` when that path exists and is not a regular file (a folder, a FIFO, a
    device, a socket): only regular files are ever replaced."""
    text = os.fspath(path)
    if not os.path.basename(text) or text.endswith(("/", os.sep)):
        raise StoreError(f"cannot write {text}: not a file name")
    final = os.path.realpath(text)
    try:
        mode = os.stat(final).st_mode
    except FileNotFoundError:
        return final
    except OSError as exc:
        raise StoreError(f"cannot write {text}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        link = f" (the symbolic link leads to {final})" if final != os.path.abspath(text) else ""
        if what == "a folder":
            raise StoreError(f"cannot write {text}: it is a folder{link}")
        raise StoreError(f"cannot write {text}: it is {what}{link}; only regular files are replaced")
    return final


def _folder_and_name(path: str | os.PathLike) -> tuple[str, str, str]:
    text = os.fspath(path)
    folder, base = os.path.split(output_target(text))
    return text, folder, base


def _prepare_folder(text: str, folder: str, final: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot write {text}: cannot create folder {folder}: "
                         f"{exc.strerror or exc}") from exc
    if not os.path.isdir(folder):
        raise StoreError(f"cannot write {text}: {folder} is not a folder")
    output_target(final)


def _reserve_temp(text: str, folder: str, base: str) -> str:
    for _ in range(100):
        tmp = os.path.join(folder, f".{base}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot write {text}: {exc.strerror or exc}") from exc
        os.close(fd)
        return tmp
    raise StoreError(f"cannot write {text}: no free temporary name in {folder}")


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync(path: str, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to *path*; rename it onto *path* on success.

    *path* goes through :func:`output_target`: a symbolic link is followed (its target is replaced),
    anything but a regular file is refused.  The folder is created if needed.  The temporary file
    ``.<basename>.tmp-<pid>-<hex>`` exists (empty) when the body starts; the body writes (or
    truncates and rewrites) it.  When the body finishes normally the file is synced and
    ``os.replace``-d onto the target; on any exception, ``KeyboardInterrupt`` included, it is removed
    and the exception propagates.  OS errors of the sync and rename and unwritable destinations raise
    :class:`StoreError`.
    """
    text, folder, base = _folder_and_name(path)
    final = os.path.join(folder, base)
    _prepare_folder(text, folder, final)
    tmp = _reserve_temp(text, folder, base)
    try:
        yield tmp
        _fsync(tmp)
        output_target(final)                 # nothing else has taken the name meanwhile
        os.replace(tmp, final)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write {text}: {exc.strerror or exc}") from exc
        raise
    _fsync(folder, directory=True)


def check_writable(path: str | os.PathLike) -> str:
    """Fail early with :class:`StoreError` if :func:`write` to *path* cannot succeed; return the path
    that will be replaced (:func:`output_target`).

    Creates the folder if needed, then creates and removes a temporary file
    in it.  Call before a long computation whose result goes to *path*.
    """
    text, folder, base = _folder_and_name(path)
    _prepare_folder(text, folder, os.path.join(folder, base))
    _remove_quietly(_reserve_temp(text, folder, base))
    return os.path.join(folder, base)


@contextmanager
def output_lock(path: str | os.PathLike, what: str = "hjbsolve") -> Iterator[None]:
    """Hold an exclusive lock on the output *path* (``fcntl.flock`` on ``<target>.lock`` beside it) for
    the duration of the block; a second holder gets a :class:`StoreError` at once, naming the process
    that has it.  The lock file is removed on exit; the lock dies with its process."""
    import fcntl
    text = os.fspath(path)
    lock = output_target(text) + ".lock"
    try:
        os.makedirs(os.path.dirname(lock), exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot write {text}: {exc.strerror or exc}") from exc
    for _ in range(100):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            raise StoreError(f"cannot lock {text}: {lock}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            except OSError:
                holder = "another process"
            os.close(fd)
            raise StoreError(f"{text} is being written by {holder} (lock {lock}); wait for it to finish or "
                             "choose another output") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino      # not a lock file removed meanwhile
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:  # pragma: no cover
        raise StoreError(f"cannot lock {text}: {lock} keeps changing")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (pid {os.getpid()})\n".encode(), 0)
    except OSError:
        pass
    try:
        yield
    finally:
        _remove_quietly(lock)
        os.close(fd)


# ---------------------------------------------------------------------------
# reading


def _decode_attr(value: Any, ours: bool) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _decode_attr(value[()], ours)
        if value.dtype.kind in "OSU":
            return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                    for v in value.ravel()]
        return value
    if isinstance(value, np.generic):
        if ours and value.dtype == np.int8 and value in (0, 1):
            return bool(value)
        return value.item()
    return value


def _read_attrs(obj: h5py.HLObject, ours: bool, skip: tuple[str, ...] = ()) -> dict:
    out = {}
    for key in obj.attrs:
        if key in _RESERVED_ATTRS or key in skip:
            continue
        try:
            value = obj.attrs[key]
        except (OSError, TypeError):  # unreadable foreign attribute type
            continue
        out[key] = _decode_attr(value, ours)
    return out


def _read_data(ds: h5py.Dataset) -> tuple[np.ndarray, bool]:
    """Return the data and whether the bool marker was consumed."""
    if h5py.check_string_dtype(ds.dtype) is not None:
        raw = ds.asstr()[()]
        return np.asarray(raw, dtype=object).astype(str), False
    data = np.asarray(ds[()])
    mark = ds.attrs.get(_BOOL_MARK[0])
    if isinstance(mark, bytes):
        mark = mark.decode()
    if mark == _BOOL_MARK[1] and data.dtype.kind in "iu":
        return data.astype(bool), True
    return data, False


def _is_dimension_only(ds: h5py.Dataset) -> bool:
    name = ds.attrs.get("NAME")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return isinstance(name, str) and name.startswith(_NOT_A_VARIABLE)


def _read_group(h5: h5py.Group, ours: bool, shallow: bool = False) -> Group:
    """The group *h5* as a :class:`Group` (``shallow``: its coordinates and attributes only)."""
    group = Group(attrs=_read_attrs(h5, ours, skip=(FORMAT_ATTR,) if h5.name == "/" else ()))
    for name, obj in h5.items():
        if isinstance(obj, h5py.Group):
            if not shallow:
                group.groups[name] = _read_group(obj, ours)
        elif not isinstance(obj, h5py.Dataset) or (shallow and not h5py.h5ds.is_scale(obj.id)):
            continue
        elif h5py.h5ds.is_scale(obj.id):
            if _is_dimension_only(obj) or obj.ndim != 1:
                continue
            data, marked = _read_data(obj)
            attrs = _read_attrs(obj, ours, skip=("dtype",) if marked else ())
            group.coords[name] = Variable(data, (name,), attrs)
        else:
            dims = []
            for axis in range(obj.ndim):
                scales = obj.dims[axis].values()
                dims.append(scales[-1].name.rsplit("/", 1)[-1] if scales else f"{name}_dim_{axis}")
            data, marked = _read_data(obj)
            attrs = _read_attrs(obj, ours, skip=("dtype",) if marked else ())
            group.variables[name] = Variable(data, tuple(dims), attrs)
    return group


def _open_for_reading(path: str | os.PathLike) -> h5py.File:
    text = os.fspath(path)
    if not os.path.exists(text):
        raise StoreError(f"cannot read {text}: no such file")
    if os.path.isdir(text):
        raise StoreError(f"cannot read {text}: it is a folder")
    try:
        if not h5py.is_hdf5(text):
            raise StoreError(f"cannot read {text}: not an HDF5 file")
        return h5py.File(text, "r")
    except OSError as exc:
        raise StoreError(f"cannot read {text}: {exc}") from exc


def root_attrs(path: str | os.PathLike) -> dict:
    """The root attributes of a file (without reading its data)."""
    with _open_for_reading(path) as f:
        try:
            return _read_attrs(f, FORMAT_ATTR in f.attrs, skip=(FORMAT_ATTR,))
        except OSError as exc:
            raise StoreError(f"cannot read {os.fspath(path)}: {exc}") from exc


def read(path: str | os.PathLike) -> Group:
    """Read a file written by :func:`write` (or any HDF5 file using dimension scales).

    Dimension scales become coordinates (auto-created index coordinates
    included), other datasets variables.  Axes without an attached scale get
    the dimension name ``<variable>_dim_<axis>``.
    """
    with _open_for_reading(path) as f:
        ours = FORMAT_ATTR in f.attrs
        try:
            return _read_group(f, ours)
        except OSError as exc:
            raise StoreError(f"cannot read {os.fspath(path)}: {exc}") from exc


# ---------------------------------------------------------------------------
# update


_update_lock = threading.Lock()


def update(path: str | os.PathLike, name: str, group: Group) -> None:
    """Add or replace the top-level sub-group *name* of the file *path*, atomically.

    Creates the file (with an empty root) if it does not exist.  The file is
    loaded into memory (:class:`FileImage`; the other groups are not decoded),
    the group added, and the whole file written to a temporary file and
    renamed, so a reader never sees a half-written file.  Serialised within the
    process; across processes, hold :func:`output_lock`.
    """
    _check_name(name, "group", "/")
    with _update_lock:
        text = os.fspath(path)
        with FileImage(text) if os.path.exists(text) else FileImage() as image:
            try:
                image.add_group(name, group)
            except StoreError as exc:
                raise StoreError(f"cannot add group {name!r} to {text}: {exc}") from None
            image.save(text)


# ---------------------------------------------------------------------------
# describe


def _fmt_num(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        text = f"{float(x):.6g}"
        return text if any(c in text for c in ".eni") else text + ".0"  # keep floats visibly floats
    return str(x)


def _abbrev(text: str, width: int = 72) -> str:
    lines = text.splitlines()
    first = lines[0] if lines else ""
    suffix = f" ({len(lines)} lines)" if len(lines) > 1 else ""
    if len(first) > width:
        first = first[: width - 3] + "..."
    return repr(first) + suffix


def _fmt_attr(value: Any) -> str:
    if isinstance(value, str):
        return _abbrev(value)
    if isinstance(value, list):
        shown = [_abbrev(v, 30) for v in value[:4]]
        more = f", ... ({len(value)} items)" if len(value) > 4 else ""
        return "[" + ", ".join(shown) + more + "]"
    if isinstance(value, np.ndarray):
        vals = [_fmt_num(v) for v in value[:6]]
        more = f", ... ({value.size} values)" if value.size > 6 else ""
        return "[" + ", ".join(vals) + more + "]"
    return _fmt_num(value)


def _fmt_range(data: np.ndarray) -> str:
    if data.size == 0:
        return "empty"
    kind = data.dtype.kind
    if kind == "U":
        return f"{data.flat[0]!r} .. {data.flat[-1]!r}" if data.ndim == 1 else ""
    if kind == "b":
        return f"{int(np.count_nonzero(data))} true"
    if kind == "f":
        finite = data[np.isfinite(data)]
        bad = data.size - finite.size
        note = f", {bad} non-finite" if bad else ""
        if finite.size == 0:
            return f"no finite values{note}"
        return f"min {_fmt_num(finite.min())}, max {_fmt_num(finite.max())}{note}"
    return f"min {_fmt_num(data.min())}, max {_fmt_num(data.max())}"


def _fmt_labels(attrs: dict) -> str:
    parts = []
    if isinstance(attrs.get("long_name"), str):
        parts.append(_abbrev(attrs["long_name"], 50))
    if isinstance(attrs.get("units"), str):
        parts.append(f"[{attrs['units']}]")
    return "  ".join(parts)


def _table(rows: list[list[str]], indent: str) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths)]
        out.append((indent + "  ".join(cells)).rstrip())
    return out


#: datasets up to this size are summarised from their data when the file has no stored summary
_SUMMARY_READ_LIMIT = 16 * 1024 * 1024


def _summary(ds: h5py.Dataset) -> str:
    """The range summary stored as the dataset's HDF5 comment at write time; for files without one, computed from data up to
    ``_SUMMARY_READ_LIMIT`` bytes (larger arrays are not decompressed)."""
    stored = ds.parent.id.get_comment(ds.name.rsplit("/", 1)[-1].encode())
    if stored:
        return stored.decode("utf-8", "replace")
    if ds.size * ds.dtype.itemsize > _SUMMARY_READ_LIMIT:
        return "range not stored"
    return _fmt_range(_read_data(ds)[0])


def _dims(ds: h5py.Dataset, name: str) -> tuple[str, ...]:
    dims = []
    for axis in range(ds.ndim):
        scales = ds.dims[axis].values()
        dims.append(scales[-1].name.rsplit("/", 1)[-1] if scales else f"{name}_dim_{axis}")
    return tuple(dims)


def _describe_group(h5: h5py.Group, where: str, lines: list[str], ours: bool) -> None:
    """Metadata-only summary of an open HDF5 group (no array is read but the 1-D coordinates)."""
    lines.append(where)
    ind = "    "
    attrs = _read_attrs(h5, ours, skip=(FORMAT_ATTR,) if h5.name == "/" else ())
    if attrs:
        lines.append("  attributes:")
        width = max(len(k) for k in attrs)
        for key, value in attrs.items():
            lines.append(f"{ind}{key.ljust(width)} = {_fmt_attr(value)}")
    coords, variables, groups = [], [], []
    for name, obj in h5.items():
        if isinstance(obj, h5py.Group):
            groups.append(name)
        elif isinstance(obj, h5py.Dataset):
            if h5py.h5ds.is_scale(obj.id):
                if not _is_dimension_only(obj) and obj.ndim == 1:
                    coords.append((name, obj))
            else:
                variables.append((name, obj))
    if coords:
        lines.append("  coordinates:")
        rows = []
        for name, ds in coords:
            data = _read_data(ds)[0]
            rng = _fmt_range(data)
            if data.dtype.kind in "iuf" and data.size:
                rng = f"[{_fmt_num(data.min())}, {_fmt_num(data.max())}]"
            rows.append([name, f"size {data.shape[0]}", str(data.dtype), rng,
                         _fmt_labels(_read_attrs(ds, ours))])
        lines.extend(_table(rows, ind))
    if variables:
        lines.append("  variables:")
        rows = []
        for name, ds in variables:
            mark = ds.attrs.get(_BOOL_MARK[0])
            mark = mark.decode() if isinstance(mark, bytes) else mark
            strings = h5py.check_string_dtype(ds.dtype) is not None
            dtype = ("bool" if mark == _BOOL_MARK[1] else str(_read_data(ds)[0].dtype) if strings else str(ds.dtype))
            shape = " x ".join(str(n) for n in ds.shape) or "scalar"
            rows.append([name, "(" + ", ".join(_dims(ds, name)) + ")", shape, dtype, _summary(ds),
                         _fmt_labels(_read_attrs(ds, ours))])
        lines.extend(_table(rows, ind))
    if groups:
        lines.append("  groups: " + ", ".join(groups))
    for name in groups:
        _describe_group(h5[name], _group_path(where, name), lines, ours)


def describe(path: str | os.PathLike) -> str:
    """Human-readable summary of a result file (for ``hjbsolve info FILE``).

    Per group (depth first, in file order): attributes (multi-line strings
    shortened to their first line and a line count), coordinates with size,
    dtype and range, variables with dims, shape, dtype, min/max and their
    ``long_name``/``units``. Reads metadata only: the min/max of a variable is
    the summary stored when it was written (files without it: computed for
    arrays up to 16 MiB, else "range not stored"), so it answers at once on
    any file size.
    """
    text = os.fspath(path)
    size = os.path.getsize(text) if os.path.exists(text) else 0
    lines = [f"{text}  ({_fmt_size(size)})"]
    with _open_for_reading(text) as f:
        try:
            _describe_group(f, "/", lines, FORMAT_ATTR in f.attrs)
        except OSError as exc:
            raise StoreError(f"cannot read {text}: {exc}") from exc
    return "\n".join(lines) + "\n"


def _fmt_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
