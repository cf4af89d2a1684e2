"""The keys the store keeps beside a video's path and name, for searches and sorts.

SQLite's own ``lower`` and ``NOCASE`` fold ASCII letters only, and compare
code points: ``Été`` would sort after ``zeta``, and ``clip10`` before
``clip9``. The store keeps a key of each path (``search_path``, by
:func:`search_key`) and of each file name (``filename_order``, by
:func:`filename_key`), computed by Python as each row is written (and by the
migrations that add them, which call them as SQL functions of the same names,
registered on the writer), each read from an index of its own.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Final


def _text(value: str | bytes) -> str:
    # Python's sqlite3 cannot hand a Python function a text that is not
    # UTF-8 (a damaged or hand-edited file): a migration hands its bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def search_key(text: str | bytes) -> str:
    """``text`` as the search compares it: NFC-normalised, case-folded, and
    normalised again (Unicode's canonical caseless match: folding can undo
    a composition: ``ΐ``, U+0390, folds to an iota and two combining marks).

    Both the stored ``search_path`` and ``q`` go through it, so a path whose
    accents are decomposed (NFD, as macOS writes file names) is found by an
    ``été`` typed precomposed, ``É`` by ``é``, and ``ΐ`` by ``Ϊ́``. The
    migrations hand it each path's bytes (``CAST(path AS BLOB)``): a text that
    is not UTF-8, which only a damaged or hand-edited file holds, gets the key
    of its readable rest rather than failing the migration.
    """
    text = _text(text)
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


_DIGITS: Final = re.compile(r"[0-9]+")

NUMBER_WIDTH: Final = 4
"""The digits of the length that :func:`filename_key` writes before each
number: a file name holds at most 255 bytes on most of Linux's file
systems and 1,024 on FUSE's, so a number at most 1,024 digits (compatibility
characters such as ``⑩`` spell fewer digits than their bytes)."""


KEY_CHARS: Final = 128
"""The most characters of a :func:`filename_key`: names whose keys begin
alike for longer sort by id. Bounded so that no name makes a key, and the
migration that writes them, far larger than the name: a compatibility
character can decompose to 18 (``ﷺ``, U+FDFA), a one-digit number grows to
five."""


def _number(match: re.Match[str]) -> str:
    digits = match[0].lstrip("0") or "0"
    return f"{len(digits):0{NUMBER_WIDTH}d}{digits}"


def filename_key(name: str | bytes) -> str:
    """``name`` as a sort by file name compares it, as a file manager orders
    names: letters in any case and with any accent together (``Été`` beside
    ``ete``, before ``zeta``; case-folded, compatibility-decomposed (NFKD),
    combining marks left out), numbers by their value (``clip9`` before
    ``clip10``; each run of ASCII digits, after the decomposition, written
    as its length in :data:`NUMBER_WIDTH` digits then its digits without
    leading zeros, so ``clip01`` and ``clip1`` are equal), and the name
    before its ending (``clip.mp4`` before ``clip 2.mp4`` and ``clip-2.mp4``:
    the two parts' keys are joined by a NUL, which sorts first and no file
    name holds; the ending's digits stay as they are). Names equal in their
    keys sort by id, as every tie does. Other characters compare by code
    point: ``clip-1`` before ``clip_1``, a digit before a letter, Greek after
    Latin. At most :data:`KEY_CHARS` characters.
    """
    stem, ending = os.path.splitext(_text(name))
    return f"{_DIGITS.sub(_number, _folded(stem))}\0{_folded(ending)}"[:KEY_CHARS]


def _folded(text: str) -> str:
    if text.isascii():  # most names: nothing to decompose
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    # Composed again, without its marks: a Hangul syllable is one character
    # again, not two or three letters (a key two to three times the name),
    # and sorts where they would.
    return unicodedata.normalize("NFC", plain)
