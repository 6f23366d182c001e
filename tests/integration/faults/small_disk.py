# -*- coding: utf-8 -*-
"""A small filesystem that a test can fill: a tmpfs of a few megabytes mounted in a temporary directory.

``mount -t tmpfs -o size=16m`` needs root (or CAP_SYS_ADMIN); :func:`mount_small_disk` raises
:class:`CannotMount` when the system refuses, and the ``small_disk`` fixture turns that into a skip, or a failure
under ``PGOPS_REQUIRE_TOOLS=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

FILLER = '.filler'  # the file :meth:`SmallDisk.fill` grows; leave it out of snapshots


class CannotMount(Exception):
    """The tmpfs could not be mounted (not root, no mount program, a container without CAP_SYS_ADMIN)."""


class SmallDisk:
    """A mounted tmpfs.

    :ivar path: str, the mount point (0755, owned by the caller).
    :ivar size: int, the filesystem's size in bytes.
    """

    def __init__(self, path, size):
        self.path = path
        self.size = size

    def free_bytes(self):
        """Bytes an unprivileged writer can still write (``f_bavail * f_frsize``)."""
        info = os.statvfs(self.path)
        return info.f_bavail * info.f_frsize

    def fill(self, leave_free):
        """Grow :data:`FILLER` so that about ``leave_free`` bytes stay free (to one page); returns the free bytes.

        :raises ValueError: when less than ``leave_free`` is free already.
        """
        filler = os.path.join(self.path, FILLER)
        current = os.path.getsize(filler) if os.path.exists(filler) else 0
        extra = self.free_bytes() - leave_free
        if extra < 0:
            raise ValueError('only %d bytes are free on %s, fewer than the %d asked for'
                             % (self.free_bytes(), self.path, leave_free))
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, current + extra)
        finally:
            os.close(fd)
        return self.free_bytes()

    def empty_filler(self):
        """Remove the filler file (the space it took is free again)."""
        if os.path.exists(os.path.join(self.path, FILLER)):
            os.unlink(os.path.join(self.path, FILLER))


def mount_small_disk(size_bytes, parent=None):
    """Mount a tmpfs of ``size_bytes`` (rounded up to whole pages) on a new directory under ``parent``.

    :returns: :class:`SmallDisk`.
    :raises CannotMount: with the reason.
    """
    if shutil.which('mount') is None:
        raise CannotMount('no mount program')
    path = tempfile.mkdtemp(prefix='pgops-small-disk-', dir=parent)
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%d,mode=0755' % size_bytes, 'pgops-small-disk', path],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        os.rmdir(path)
        raise CannotMount('mount -t tmpfs failed: %s' % (done.stderr.strip() or done.returncode))
    info = os.statvfs(path)
    return SmallDisk(path, info.f_blocks * info.f_frsize)


def unmount_small_disk(disk):
    """Unmount the tmpfs (lazily when something still holds it open) and remove the mount point."""
    done = subprocess.run(['umount', disk.path], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        subprocess.run(['umount', '-l', disk.path], capture_output=True, text=True, check=True)
    os.rmdir(disk.path)
