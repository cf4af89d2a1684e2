"""The suite's own guards: the backend a test runs on, pytest-trio's mode, hypothesis."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import anyio
import pytest
import trio
from hypothesis import settings
from trio.testing import MockClock

from tests.conftest import check_backend, note_backends, one_backend_tests, running_library

pytest_plugins = ["pytester"]


def test_trio_mode_is_off(pytestconfig: pytest.Config) -> None:
    """pytest-trio's trio_mode would run the asyncio cases on trio, without their clock."""
    assert pytestconfig.getini("trio_mode") is False
    assert pytestconfig.pluginmanager.has_plugin("trio")  # so the option above is its own


@pytest.mark.anyio
async def test_every_async_test_runs_on_its_parameter(anyio_backend: Any) -> None:
    """The backend parameter names the loop the test body really runs in."""
    name = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]

    assert running_library() == name
    if name == "trio":
        assert isinstance(trio.lowlevel.current_clock(), MockClock)
        before = anyio.current_time()
        await anyio.sleep(3600)  # virtual time: the clock jumps, the test does not wait
        assert anyio.current_time() - before >= 3600


def test_the_guard_fails_a_test_on_the_wrong_backend() -> None:
    """check_backend fails when the loop is not the parametrised one."""

    async def on_asyncio() -> None:
        check_backend(("trio", {}))

    with pytest.raises(pytest.fail.Exception, match="parametrised with trio, running on asyncio"):
        asyncio.run(on_asyncio())


def test_the_guard_fails_a_test_without_its_clock() -> None:
    """check_backend fails when trio runs with another clock than the test was given."""

    async def real_clock() -> None:
        check_backend(("trio", {"clock": MockClock(autojump_threshold=0)}))

    with pytest.raises(pytest.fail.Exception, match=r"given <MockClock.*running with SystemClock"):
        trio.run(real_clock)


def test_running_library_outside_a_loop_raises() -> None:
    """Outside any event loop there is no running library to report."""
    with pytest.raises(RuntimeError):
        running_library()


@pytest.mark.skipif(
    os.environ.get("STOATTEST_RELIABILITY_PROFILE", "quick") != "quick",
    reason="make test's profile",
)
def test_make_tests_hypothesis_profiles_are_derandomized() -> None:
    """Every property test of make test tries the same examples each run: a failure repeats."""
    from tests.reliability import test_api_fuzz, test_supervisor_properties

    profiles = [module.PROFILE for module in (test_api_fuzz, test_supervisor_properties)]

    assert settings.get_current_profile_name() == "quick"
    assert settings.get_profile("quick").derandomize is True
    assert [profile.derandomize for profile in profiles] == [True, True]


MISRUN_CONFTEST = """
import pytest
import trio

from tests.conftest import _backend_guard, _running_backend, anyio_backend


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    # Stands for a plugin that claims the async fixtures and runs them on trio
    # with its own clock, whatever the test was parametrised with.
    if fixturedef.argname == "_running_backend":
        fixture = _running_backend.__wrapped__(request.getfixturevalue("anyio_backend"))
        trio.run(fixture.__anext__)
    return None
"""


@pytest.mark.parametrize(
    ("backend", "failure"),
    [
        ("asyncio", "*Failed: parametrised with asyncio, running on trio*"),
        ("trio", "*Failed: given <MockClock*running with SystemClock*"),
    ],
)
def test_the_autouse_guard_fails_a_test_run_elsewhere(
    pytester: pytest.Pytester, backend: str, failure: str
) -> None:
    """Every test with ``anyio_backend`` is guarded: run on another loop, or clock, it errors."""
    pytester.makeconftest(MISRUN_CONFTEST)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.anyio
        async def test_anything(anyio_backend):
            pass

        def test_without_a_backend():
            pass
        """
    )

    # One backend per session: a trio.run that failed inside the hook above
    # upsets the next one in the same session (not what this test is about).
    result = pytester.runpytest(
        "-p", "no:randomly", "-p", "no:cacheprovider", "-k", f"{backend} or without"
    )

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([failure])


def test_every_anyio_test_runs_on_both_backends_or_names_its_own(
    pytestconfig: pytest.Config,
) -> None:
    """No anyio test was collected for one backend only, unless the test
    parametrises ``anyio_backend`` itself (a test about one backend, or one
    that needs a real clock on trio: plain ``"trio"``)."""
    if any("::" in str(arg) for arg in pytestconfig.args):
        pytest.skip("tests named by node id: some of their backends were not collected")
    found = one_backend_tests()
    assert found == [], "one backend only: " + ", ".join(found)


def test_a_fixture_override_that_drops_trio_is_found(pytester: pytest.Pytester) -> None:
    """The trap :func:`one_backend_tests` is for: a module (or sub-conftest)
    that overrides ``anyio_backend`` with asyncio alone silently drops trio.
    A test naming its one backend in a ``parametrize`` mark is not reported."""
    pytester.makeconftest("from tests.conftest import anyio_backend")
    items = pytester.getitems(
        """
        import pytest

        @pytest.fixture(params=["asyncio"])
        def anyio_backend(request):
            return request.param

        @pytest.mark.anyio
        async def test_dropped():
            pass

        @pytest.mark.anyio
        @pytest.mark.parametrize("anyio_backend", ["asyncio"])
        async def test_about_asyncio():
            pass
        """
    )
    collected: dict[str, tuple[set[str], bool]] = {}
    for item in items:
        assert isinstance(item, pytest.Function)
        note_backends(item, collected)

    assert [test.rpartition("::")[2] for test in one_backend_tests(collected)] == ["test_dropped"]
    assert {test.rpartition("::")[2]: seen for test, (seen, _) in collected.items()} == {
        "test_dropped": {"asyncio"},
        "test_about_asyncio": {"asyncio"},
    }
