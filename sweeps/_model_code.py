"""What a logged model carries so that it loads where lrsweep is not installed.

A pickled model names the classes of its layers; a model of lrsweep's ``trainers`` needs that
package where it loads. :func:`model_environment` gives ``mlflow.pytorch.log_model`` the
``code_paths`` (``trainers`` as one zip plus a package stub that prefers an installed
``trainers``) and the pinned ``pip_requirements``; :meth:`sweeps.tracking.Tracker.log_pytorch_model`
passes them on. No MLflow import here: only the standard library (and ``trainers``, when asked).
"""

from __future__ import annotations

import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["model_environment"]

# What ``import trainers`` loads beyond the standard library and torch (matplotlib for the
# plots, rich for progress, pillow for image folders); torchvision holds the resnets' layers.
_TRAINERS_REQUIREMENTS = ("torch", "torchvision", "numpy", "matplotlib", "rich", "pillow")


def model_environment(model: Any) -> dict[str, list[str]]:
    """``code_paths`` and ``pip_requirements`` for ``mlflow.pytorch.log_model(model)``.

    A pickled model names the classes of its layers. When any comes from lrsweep's
    ``trainers``, the package's source goes with the model (MLflow puts it on ``sys.path`` when
    the model loads) and the requirements are those ``trainers`` imports, pinned to the versions
    installed here; otherwise torch alone (and torchvision for its layers).
    """
    modules = {type(layer).__module__.partition(".")[0] for layer in model.modules()}
    names: tuple[str, ...]
    if "trainers" in modules:
        names = _TRAINERS_REQUIREMENTS
        code_paths = _trainers_code()
    else:
        names = ("torch", "torchvision") if "torchvision" in modules else ("torch",)
        code_paths = []
    return {"code_paths": code_paths, "pip_requirements": list(_pinned(names))}


@cache  # importlib.metadata reads the installed packages: ~5 ms a model, per trial
def _pinned(names: tuple[str, ...]) -> tuple[str, ...]:
    """``name==version`` of each installed package (a local ``+cpu`` tag dropped)."""
    from importlib.metadata import version

    return tuple(f"{name}=={version(name).split('+')[0]}" for name in names)


_TRAINERS_STUB = '''"""lrsweep's ``trainers`` for this model: the installed package where
lrsweep is installed, else the copy the model was logged with, run from ``../trainers.zip``.

MLflow puts the model's ``code/`` folder first on ``sys.path`` when it loads the model. Where
lrsweep is installed, its own ``trainers`` is imported, so the rest of lrsweep runs with the
version it belongs to. One archive uploads to a tracking server in one request, where the
package's ~50 files took one each.
"""

import importlib.machinery as _machinery
import importlib.util as _util
import os as _os
import sys as _sys
import zipimport as _zipimport


def _installed():
    """The spec of a ``trainers`` found outside every model's ``code/`` folder, or None."""
    elsewhere = [
        entry
        for entry in _sys.path
        if not _os.path.isfile(_os.path.join(entry or _os.curdir, "trainers.zip"))
    ]
    for finder in _sys.meta_path:
        if finder is _machinery.PathFinder:
            spec = finder.find_spec("trainers", elsewhere)
        elif hasattr(finder, "find_spec"):
            spec = finder.find_spec("trainers", None)
        else:
            continue
        if spec is not None:
            return spec
    return None


_spec = _installed()
if _spec is None:  # lrsweep is not installed here: the copy logged with the model
    _archive = _os.path.join(
        _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "trainers.zip"
    )
    _spec = _zipimport.zipimporter(_archive).find_spec("trainers")
_module = _util.module_from_spec(_spec)
_sys.modules[__name__] = _module  # the import returns what sys.modules holds at its end
_spec.loader.exec_module(_module)
'''

_trainers_code_paths: list[str] = []


def _trainers_code() -> list[str]:
    """``code_paths`` holding the ``trainers`` source: its modules in one zip and the package
    stub above, in a folder of the temporary directory named by their digest (made once per
    version and shared by every process; a trial worker logs many models).

    Raises:
        RuntimeError: when ``trainers`` has no source to ship (not a package of .py files).
    """
    if _trainers_code_paths:
        return list(_trainers_code_paths)
    import hashlib
    import zipfile
    import zipimport

    import trainers

    loader = getattr(trainers.__spec__, "loader", None)
    if isinstance(loader, zipimport.zipimporter):  # from a logged model's code: that code again
        archive = Path(loader.archive)
        _trainers_code_paths[:] = [str(archive.parent / "trainers"), str(archive)]
        return list(_trainers_code_paths)
    package = Path(trainers.__file__).parent
    sources = sorted(package.rglob("*.py"))
    if package / "__init__.py" not in sources:
        raise RuntimeError(f"trainers at {package} has no source files to log with its model.")
    digest = hashlib.blake2b(digest_size=8)
    for source in sources:
        digest.update(f"{source.relative_to(package).as_posix()}\0".encode())
        digest.update(source.read_bytes())
    digest.update(_TRAINERS_STUB.encode())
    folder = Path(tempfile.gettempdir()) / f"lrsweep-model-code-{digest.hexdigest()}"
    if not (folder / "trainers" / "__init__.py").is_file():
        staging = Path(tempfile.mkdtemp(prefix=".lrsweep-model-code-", dir=folder.parent))
        with zipfile.ZipFile(staging / "trainers.zip", "w", zipfile.ZIP_DEFLATED) as zipped:
            for source in sources:
                zipped.write(source, f"trainers/{source.relative_to(package).as_posix()}")
        (staging / "trainers").mkdir()
        (staging / "trainers" / "__init__.py").write_text(_TRAINERS_STUB, encoding="utf-8")
        try:
            staging.rename(folder)  # whole, or not at all
        except OSError:  # another process made it first, or something else is in the way
            if (folder / "trainers" / "__init__.py").is_file():
                shutil.rmtree(staging, ignore_errors=True)
            else:
                folder = staging
    _trainers_code_paths[:] = [str(folder / "trainers"), str(folder / "trainers.zip")]
    return list(_trainers_code_paths)
