"""Scenarios: the fold's rules hold whatever order the events come in (I1).

The original example updated the view from each event as it came: an older login arriving after a
newer one moved lastLogin back, and a user whose orders came without a user-created event had no row
to update.
"""

from __future__ import annotations

from esjoin.testing.checks import assert_converged
from esjoin.testing.events import logged_in, now_ms, order_submitted, user_created
from tests.integration.support.scenario import shard_of, user_on_shard, wait_for_snapshot_count, wait_for_stored_count


def test_an_older_login_arriving_after_a_newer_one_does_not_move_last_login_back(pipeline, new_user):
    user = new_user("login")
    now = now_ms()
    newer, older, oldest = now - 10_000, now - 50_000, now - 90_000
    # Given a user who logged in recently
    pipeline.put_events([user_created(user, "Logins", now - 100_000), logged_in(user, newer)])
    assert_converged(pipeline, [user])
    # When a login from before that arrives afterwards
    pipeline.put_events([logged_in(user, older)])
    # Then lastLogin stays the newest login
    assert_converged(pipeline, [user])
    assert pipeline.views([user])[user]["lastLogin"] == newer
    # And the same once the newest login is only in a snapshot (its event trimmed)
    pipeline.request_snapshot(user, horizon_seconds=0)
    wait_for_snapshot_count(pipeline, user, 3)
    wait_for_stored_count(pipeline, user, 0)
    pipeline.put_events([logged_in(user, oldest)])
    assert_converged(pipeline, [user])
    assert pipeline.views([user])[user]["lastLogin"] == newer


def test_an_order_only_user_gets_a_view_row_and_blocks_nothing(pipeline, new_user):
    # Given a user who places orders but whose user-created event never arrives
    buyer = new_user("buyer")
    now = now_ms()
    pipeline.put_events(
        [order_submitted(buyer, now - 3_000), order_submitted(buyer, now - 2_000), order_submitted(buyer, now - 1_000)]
    )
    # and, behind those on the same shard, another user's events
    neighbour = user_on_shard(pipeline, new_user, "neighbour", shard_of(pipeline, buyer))
    pipeline.put_events([user_created(neighbour, "Neighbour", now), logged_in(neighbour, now)])
    # Then the buyer's row counts the orders with no name and no login, and the neighbour's row is there
    assert_converged(pipeline, [buyer, neighbour])
    row = pipeline.views([buyer])[buyer]
    assert (row["name"], row["lastLogin"], row["recentOrderCount"]) == (None, None, 3)
    # And when the user-created event finally arrives, the name appears and the count stays
    pipeline.put_events([user_created(buyer, "Buyer", now - 10_000)])
    assert_converged(pipeline, [buyer])
    row = pipeline.views([buyer])[buyer]
    assert (row["name"], row["recentOrderCount"]) == ("Buyer", 3)
