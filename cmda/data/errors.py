"""One exception for bad data, whose message survives a DataLoader worker.

A loader worker that raises sends its exception to the main process as text: PyTorch re-creates the
exception there with a message made of "Caught X in DataLoader worker process N. Original Traceback ..."
followed by the worker's whole traceback. For a corrupt file that buries the one line a user needs (which
file, what is wrong with it) at the end of a dump. `DataError` recognises that wrapped form when PyTorch
re-creates it and keeps only the original message, so the error the trainer, the CLI and Ray's error.txt
show is the same as with `num_workers=0`.

`reports_data_errors` wraps a dataset's `__getitem__`: a ValueError / OSError / KeyError raised while a
sample is loaded (a bad PNG, a truncated HDF5 file, an index out of range) becomes a DataError with the
same message, chained to the original for in-process debugging.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TypeVar

from cmda.errors import CMDAError

_WORKER_WRAPPER = re.compile(r"\ACaught \w+ in .*?\.\nOriginal Traceback", re.S)
_CONVERTED = (ValueError, OSError, KeyError, EOFError)

T = TypeVar("T")


class DataError(CMDAError, ValueError):
    """A dataset file that is missing, unreadable or inconsistent; the message names the file."""

    def __init__(self, message: str = "") -> None:
        super().__init__(original_message(str(message), type(self).__name__))


def original_message(message: str, exception_name: str) -> str:
    """The worker's own message when `message` is PyTorch's "Caught ... Original Traceback" wrapper.

    The wrapper ends with the formatted exception line `<module>.<exception_name>: <message>`; everything
    after its last occurrence is the original (possibly multi-line) message.
    """
    if not _WORKER_WRAPPER.match(message):
        return message
    marker = f"{exception_name}: "
    position = message.rfind(marker)
    if position < 0:
        return message
    return message[position + len(marker) :].rstrip("\n")


def reports_data_errors(getitem: Callable[..., T]) -> Callable[..., T]:
    """Decorate `__getitem__` so data problems leave it as `DataError` with their original message."""

    @functools.wraps(getitem)
    def wrapper(self, index):
        try:
            return getitem(self, index)
        except DataError:
            raise
        except _CONVERTED as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
            raise DataError(str(message)) from error

    return wrapper
