"""kombu's filesystem transport, made safe for a publisher and a consumer in two processes.

The embedded mode (no Redis) queues tasks as files with kombu's ``filesystem://``
transport. Stock kombu writes a message file in place (``open`` then ``write``), so
a consumer polling the folder can pick up a file that is still empty, and it claims
messages by moving them into the system temp dir, which may be another filesystem.
This subclass changes only those two steps:

- ``_put`` writes the message under a hidden temporary name (which no queue's
  pattern matches), fsyncs it and renames it into place: a consumer sees the
  whole message or nothing.
- ``_get`` claims a message with ``os.rename`` into ``processed_folder`` (inside the
  queue directory, so the same filesystem): exactly one consumer wins the rename.

Everything else (exchange tables, fanout, polling) is kombu's.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    """Filesystem channel with atomic publish and same-filesystem claim."""

    def _put(self, queue, payload, **kwargs):
        # Zero-padded milliseconds keep lexical order == time order.
        name = f"{round(monotonic() * 1000):015d}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        fd, tmp = tempfile.mkstemp(prefix=".put-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(folder, name))
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise ChannelError(f"Cannot add message to {folder!r}") from exc

    def _get(self, queue):
        wanted = f"{queue}.msg"
        claim_dir = self.processed_folder
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.startswith(".") or filename.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(claim_dir, f"{filename}.{os.getpid()}")
            try:
                os.rename(os.path.join(self.data_folder_in, filename), claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
            finally:
                try:
                    os.unlink(claimed)
                except OSError:
                    pass
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    """Transport class named by ``workers.celery_app`` for the embedded mode."""

    Channel = Channel
    driver_name = "filesystem"
