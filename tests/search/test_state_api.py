"""Before a DDP search, phasetune asks whether Ray's state API answers: Ray Train frees
a stopped DDP trial's placement group only through it."""

from __future__ import annotations

import pytest

from search.ray_runtime import STATE_API_WARNING, state_api_answers


@pytest.mark.slow
def test_the_state_api_of_a_ray_with_its_dashboard_answers(ray_session, monkeypatch):
    import ray

    # Addressed, as any Ray of a machine that runs more than one must be: without an
    # address the state API refuses to choose among them.
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    assert state_api_answers()


def test_a_state_api_that_does_not_answer_is_said_in_one_line(monkeypatch):
    import ray.util.state

    def unreachable(**kwargs):
        raise ray.util.state.exception.RayStateApiException("no dashboard")

    monkeypatch.setattr(ray.util.state, "list_actors", unreachable)
    assert not state_api_answers()
    assert "\n" not in STATE_API_WARNING and "state API does not answer" in STATE_API_WARNING
