"""RecentScans: the bounded map from a scan request's spelling to the job it got."""

from __future__ import annotations

from stoat_ferret.api._recent import RecentScans


def test_a_spelling_maps_to_its_latest_job_per_depth() -> None:
    """The same path maps separately for recursive and flat requests; the latest job wins."""
    recent = RecentScans()
    recent.remember("/videos", "job-1", recursive=True)
    recent.remember("/videos", "job-2", recursive=False)
    recent.remember("/videos", "job-3", recursive=True)

    assert recent.get("/videos", recursive=True) == "job-3"
    assert recent.get("/videos", recursive=False) == "job-2"
    assert recent.get("/videos/", recursive=True) is None
    assert len(recent) == 2


def test_the_oldest_spelling_is_forgotten_beyond_the_limit() -> None:
    """Remembering again makes a spelling the newest, so it outlives older ones."""
    recent = RecentScans(limit=2)
    recent.remember("/a", "job-a", recursive=True)
    recent.remember("/b", "job-b", recursive=True)
    recent.remember("/a", "job-a2", recursive=True)  # /a is now the newest
    recent.remember("/c", "job-c", recursive=True)

    assert len(recent) == 2
    assert recent.get("/b", recursive=True) is None
    assert recent.get("/a", recursive=True) == "job-a2"
    assert recent.get("/c", recursive=True) == "job-c"
