"""The links the scan roots are spelt through: an absolute link target written with them.

The operator may name a root through links (``STOAT_SCAN_ROOTS=/home/me/videos``,
where ``/home`` is a link to ``var/home``, as on Fedora Atomic); links in the
root are then often written with that spelling (``ln -s /home/me/videos/a.mp4``).
The walk judges a link's absolute target as text against the scanned
directory's resolved path, so such a target would lead "outside". The
settings keep the links the roots' spellings went through at the start, each
with where it led (``Settings.scan_root_links``), and :func:`unalias` reads a
target through them: text only, nothing looked at, so what the walk then
reads is still below the scanned directory, by its own descriptors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_REWRITES: Final = 40
"""Links of the roots' applied to one target, at most: as many links as the
kernel follows in one path (each rewrite uses a part of the text up, so a
target of real links ends well before)."""


def unalias(target: str, root_links: Sequence[tuple[str, str]]) -> str:
    """``target`` with a leading link of ``root_links`` (``(link, resolved)``
    pairs) replaced by its resolved path, again while one leads it (up to
    :data:`MAX_REWRITES` times): an absolute target written with a root's
    spelling (``/home/me/videos/a.mp4``, where ``/home`` is a link to
    ``var/home``) read as the root's resolved path
    (``/var/home/me/videos/a.mp4``), nothing looked at. The link is matched
    part by part, as the kernel reads it (``//home/./me`` too), up to a
    ``..``, which is left to the walk, as written. Any other target is
    returned as it is."""
    for _ in range(MAX_REWRITES):
        for link, resolved in root_links:
            rest = _after(target, link)
            if rest is not None:
                target = resolved + rest
                break
        else:
            break
    return target


def _after(target: str, link: str) -> str | None:
    """What follows the absolute, normalised ``link`` in absolute ``target``
    (empty, or from a ``/``), its parts matched skipping empty ones and
    ``.``; None if ``target`` does not start with it."""
    if not target.startswith("/"):
        return None
    parts = target.split("/")
    index = 0
    for name in link.split("/")[1:]:
        while index < len(parts) and parts[index] in ("", "."):
            index += 1
        if index == len(parts) or parts[index] != name:
            return None
        index += 1
    rest = "/".join(parts[index:])
    return "/" + rest if rest else ""
