"""Where a sweep's Ray storage lives: a local folder (a ``Path``) or a URI (a ``str``).

Ray Tune reads and writes a URI storage (``s3://``, ``gs://``, ``file://`` ...) through
``pyarrow.fs``; the sweep's own ``sweep.json`` goes the same way, so ``lrsweep resume`` finds
it there. A ``Path`` would fold ``s3://bucket/x`` into the local relative folder ``s3:/bucket/x``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from sweeps.spec._task import is_uri

HOME = ".lrsweep"
"""The folder of lrsweep's defaults (store, Ray storage) in the working directory."""


def default_storage(cwd: str | Path | None = None) -> Path:
    """``<cwd>/.lrsweep/ray_results``: Ray's storage when the spec names none."""
    return Path(cwd or Path.cwd()).resolve() / HOME / "ray_results"


__all__ = [
    "Location", "child", "filesystem", "local_path", "parent", "read_text", "remove_empty_folder",
    "remove_file", "remove_folder", "shown", "storage_root", "subfolders", "write_text",
]  # fmt: skip

Location = Path | str
"""A local folder, or the URI of a remote one (only a URI is a ``str``)."""


def storage_root(value: str | os.PathLike[str]) -> Location:
    """``value`` as a location: the URI as given (without a trailing ``/``), else an absolute
    ``Path`` (``~`` expanded): Ray Tune's ``pyarrow.fs`` refuses a relative one, which made
    ``lrsweep resume .lrsweep/ray_results/NAME/ID`` fail and close the sweep's run FAILED."""
    text = os.fspath(value)
    if not is_uri(text):
        return Path(text).expanduser().absolute()
    path, query = _split_query(text)
    return path.rstrip("/") + query


def _split_query(uri: str) -> tuple[str, str]:
    """``("s3://b/x", "?endpoint_override=h:9000")``: the options ``pyarrow.fs`` (so Ray Tune)
    reads from a URI's query (a MinIO endpoint, ``scheme=http``) stay at its end, whatever is
    joined to its path."""
    path, mark, query = uri.partition("?")
    return path, mark + query


def shown(location: Location) -> str:
    """``location`` as messages and logs show it: a URI's credentials masked
    (``s3://KEY:SECRET@bucket`` is ``s3://bucket``; ``?secret_key=`` values ``***``)."""
    if isinstance(location, Path):
        return str(location)
    from sweeps._uri import redact_uri

    return redact_uri(location)


def child(location: Location, *parts: str) -> Location:
    """``location / part / ...`` (a URI's query, if any, stays at its end)."""
    if isinstance(location, Path):
        return location.joinpath(*parts)
    path, query = _split_query(location)
    return "/".join([path.rstrip("/"), *parts]) + query


def parent(location: Location, levels: int = 1) -> Location:
    """The folder ``levels`` above ``location``."""
    if isinstance(location, Path):
        for _ in range(levels):
            location = location.parent
        return location
    path, query = _split_query(location)
    return path.rstrip("/").rsplit("/", levels)[0] + query


def write_text(folder: Location, name: str, text: str) -> None:
    """Write ``folder/name`` whole: a local file is replaced atomically, an object at once."""
    if isinstance(folder, Path):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, folder / name)
        return
    fs, path = filesystem(folder)
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/{name}") as out:
        out.write(text.encode("utf-8"))


def read_text(folder: Location, name: str) -> str | None:
    """The text of ``folder/name``; None when there is no such file."""
    if isinstance(folder, Path):
        file = folder / name
        return file.read_text(encoding="utf-8") if file.is_file() else None
    import pyarrow.fs

    fs, path = filesystem(folder)
    if fs.get_file_info(f"{path}/{name}").type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(f"{path}/{name}") as source:
        return bytes(source.read()).decode("utf-8")


def subfolders(folder: Location) -> list[str]:
    """The names of the folders directly in ``folder``, sorted; none when it does not exist."""
    if isinstance(folder, Path):
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    import pyarrow.fs

    fs, path = filesystem(folder)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    found = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in found if info.type == pyarrow.fs.FileType.Directory)


def remove_file(folder: Location, name: str) -> None:
    """Delete ``folder/name``; nothing happens when it does not exist."""
    if isinstance(folder, Path):
        (folder / name).unlink(missing_ok=True)
        return
    import pyarrow.fs

    fs, path = filesystem(folder)
    if fs.get_file_info(f"{path}/{name}").type == pyarrow.fs.FileType.File:
        fs.delete_file(f"{path}/{name}")


def remove_folder(folder: Location) -> None:
    """Delete ``folder`` and everything in it; nothing happens when it does not exist."""
    if isinstance(folder, Path):
        if folder.exists():
            shutil.rmtree(folder)
        return
    import pyarrow.fs

    fs, path = filesystem(folder)
    if fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
        fs.delete_dir(path)


def remove_empty_folder(folder: Location) -> bool:
    """Delete ``folder`` when it holds nothing (and is a folder, not a link to one): whether it
    did. On a remote store (``s3://``) a folder is a name prefix, or the empty marker object
    ``pyarrow.fs`` keeps for it once the last thing in it went; there the check and the deletion
    are two requests, so a file written between them would go too."""
    local = local_path(folder)
    if local is not None:
        # a link stays: rmdir() refuses one (a name's folder moved to a bigger disk)
        if local.is_symlink() or not local.is_dir() or any(local.iterdir()):
            return False
        local.rmdir()
        return True
    import pyarrow.fs

    fs, path = filesystem(str(folder))
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return False
    if fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True)):
        return False
    fs.delete_dir(path)
    return True


def local_path(location: Location) -> Path | None:
    """The local folder ``location`` names: a ``Path`` as it is, a URI that ``pyarrow.fs``
    reads from this machine's disk (``file:///x``) as ``Path("/x")``; None for a remote one.
    Through the ``Path``, a ``file://`` storage is cleaned as the same folder given as a path
    is (links included)."""
    if isinstance(location, Path):
        return location
    import pyarrow.fs

    fs, path = filesystem(location)
    return Path(path) if isinstance(fs, pyarrow.fs.LocalFileSystem) else None


def filesystem(uri: str) -> tuple[Any, str]:
    """``pyarrow.fs.FileSystem.from_uri``, as Ray Tune resolves its ``storage_path``."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)
