"""RecentScans: the bounded map from a scan request's spelling to the job it got."""

from __future__ import annotations

import sys

from stoat_ferret.api._recent import RecentScans, ScanJob


def test_a_spelling_maps_to_its_latest_job_per_depth() -> None:
    """The same path maps separately for recursive and flat requests; the latest job wins."""
    recent = RecentScans()
    recent.remember("/videos", ScanJob("job-1", "/videos"), recursive=True)
    recent.remember("/videos", ScanJob("job-2", "/videos"), recursive=False)
    recent.remember("/videos/.", ScanJob("job-3", "/videos"), recursive=True)

    assert recent.get("/videos", recursive=True) == ScanJob("job-1", "/videos")
    assert recent.get("/videos", recursive=False) == ScanJob("job-2", "/videos")
    assert recent.get("/videos/.", recursive=True) == ScanJob("job-3", "/videos")
    assert recent.get("/videos/", recursive=True) is None
    assert len(recent) == 3


def test_the_oldest_spelling_is_forgotten_beyond_the_limit() -> None:
    """Remembering again makes a spelling the newest, so it outlives older ones."""
    recent = RecentScans(limit=2)
    recent.remember("/a", ScanJob("job-a", "/a"), recursive=True)
    recent.remember("/b", ScanJob("job-b", "/b"), recursive=True)
    recent.remember("/a", ScanJob("job-a2", "/a"), recursive=True)  # /a is now the newest
    recent.remember("/c", ScanJob("job-c", "/c"), recursive=True)

    assert len(recent) == 2
    assert recent.get("/b", recursive=True) is None
    assert recent.get("/a", recursive=True) == ScanJob("job-a2", "/a")
    assert recent.get("/c", recursive=True) == ScanJob("job-c", "/c")


def test_long_spellings_are_not_kept() -> None:
    """A 16,000-character spelling (lone surrogates too) costs a fixed-size key, not itself."""
    recent = RecentScans()
    filler = "\U0001f600" * 16_000 + "\ud800"
    spellings = [f"/videos/{index}{filler}/.." for index in range(64)]
    for index, spelling in enumerate(spellings):
        recent.remember(spelling, ScanJob(f"job-{index}", "/videos"), recursive=True)

    kept = sum(sys.getsizeof(key[0]) for key in recent._jobs)
    assert kept < 64 * 100  # a 16-byte digest each, not 64 KB of text
    assert recent.get(spellings[7], recursive=True) == ScanJob("job-7", "/videos")
