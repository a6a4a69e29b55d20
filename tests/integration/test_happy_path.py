"""Scenario: the join as the original example meant it, through the whole pipeline."""

from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, order_submitted, user_created
from tests.integration.support.scenario import wait_for_view_count


def test_users_logins_and_orders_fold_into_view_rows(pipeline, new_user):
    # Given two users with logins and orders
    alice, bob = new_user("alice"), new_user("bob")
    events = [
        user_created(alice, "Alice", 1_000),
        user_created(bob, "Bob", 1_001),
        logged_in(alice, 2_000),
        order_submitted(alice, 3_000),
        logged_in(bob, 4_000),
        order_submitted(alice, 5_000),
        order_submitted(bob, 6_000),
        logged_in(alice, 7_000),
    ]
    # When they go through the stream
    pipeline.put_events(events)
    # Then each view row is the fold of that user's events
    assert_converged(pipeline)
    views = pipeline.views([alice, bob])
    assert (views[alice]["name"], views[alice]["lastLogin"], views[alice]["recentOrderCount"]) == ("Alice", 7_000, 2)
    assert (views[bob]["name"], views[bob]["lastLogin"], views[bob]["recentOrderCount"]) == ("Bob", 4_000, 1)


def test_command_function_produces_events_that_reach_the_view(pipeline, new_user):
    # Given the command function, the pipeline's own producer
    carol = new_user("carol")
    # When it is given small commands
    for command in (
        {"type": "user-created", "userId": carol, "name": "Carol"},
        {"type": "user-loggedIn", "userId": carol},
        {"type": "order-submitted", "userId": carol},
    ):
        result = pipeline.command(command)
        assert result["sent"] == 1 and len(result["eventIds"]) == 1
    # Then the view counts one login and one order (the function made up the events: the log has none)
    row = wait_for_view_count(pipeline, carol, 3)
    assert row["name"] == "Carol" and row["recentOrderCount"] == 1 and row["lastLogin"] is not None
