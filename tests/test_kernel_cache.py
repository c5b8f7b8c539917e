"""The drafting kernels' numba cache is dropped when any kernel source changes (kernel_cache)."""

from pathlib import Path

import client_sdk.drafting as drafting
from client_sdk.drafting.kernel_cache import STAMP, drop_stale


def _cached(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "__pycache__").glob("*.nb[ic]"))


def _compile(folder: Path) -> None:  # what numba leaves behind
    for name in ("a.f-10.py311.nbi", "a.f-10.py311.1.nbc", "b.g-3.py311.nbi"):
        (folder / "__pycache__" / name).write_bytes(b"x")


def test_cached_compilations_go_when_any_kernel_source_changes(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "b.py").write_text("B = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"kept")
    _compile(tmp_path)
    assert drop_stale(tmp_path, ("a.py", "b.py"))  # no stamp yet: whatever is there may be stale
    assert _cached(tmp_path) == [] and (tmp_path / "__pycache__" / STAMP).exists()
    assert (tmp_path / "__pycache__" / "a.cpython-311.pyc").exists()  # only numba's files
    _compile(tmp_path)
    assert not drop_stale(tmp_path, ("a.py", "b.py"))  # built from these sources: kept
    assert len(_cached(tmp_path)) == 3
    (tmp_path / "b.py").write_text("B = 2\n")  # the callee's file alone changed
    assert drop_stale(tmp_path, ("a.py", "b.py"))
    assert _cached(tmp_path) == []


def test_a_cache_elsewhere_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "elsewhere"))
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "__pycache__").mkdir()
    _compile(tmp_path)
    assert not drop_stale(tmp_path, ("a.py",))
    assert len(_cached(tmp_path)) == 3


def test_every_module_with_compiled_kernels_is_watched():
    folder = Path(drafting.__file__).parent
    compiled = sorted(p.name for p in folder.glob("*.py") if "numba.njit" in p.read_text())
    assert compiled == sorted(drafting.KERNEL_SOURCES)
