"""Writing files and folders so that a reader, or a crash, never sees a half-written one."""
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Union

__all__ = ['atomic_write_bytes', 'write_folder_atomically']


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.parent / f'.{path.name}.{uuid.uuid4().hex}.tmp'
    # os.open with 0o666 honours the umask, as a plain open() would (mkstemp's 0600 would stay with the file)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_folder_atomically(target: Union[str, Path], write: Callable[[Path], Any]) -> None:
    """Build a folder with ``write(tmp)`` beside ``target``, then swap it in: readers see the old folder or the
    whole new one. A previous ``target`` is moved aside as ``.NAME.old-*`` and removed after the swap, so a crash
    between the two renames leaves it complete under that name; a failed ``write`` leaves no trace."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f'.{target.name}.new-{uuid.uuid4().hex}'
    tmp.mkdir()  # not mkdtemp: its 0700 mode would stay with the folder
    old = None
    try:
        write(tmp)
        if target.exists():
            old = target.parent / f'.{target.name}.old-{uuid.uuid4().hex}'
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old)
