import pytest

from billing.models import IllegalTransition, Order
from billing.models.orders import is_valid_reference, new_reference, normalize_reference
from tests.factories import OrderFactory

pytestmark = pytest.mark.django_db


def test_it_makes_references_safe_to_read_over_the_phone():
    refs = {new_reference() for _ in range(200)}
    assert len(refs) == 200
    for ref in refs:
        assert is_valid_reference(ref)
        assert not set(ref[3:]) & set("01ILOU")


def test_it_normalizes_what_a_customer_types():
    assert normalize_reference(" pu-7k3f9q ") == "PU-7K3F9Q"
    assert normalize_reference("7k3f9q") == "PU-7K3F9Q"
    assert not is_valid_reference("PU-7K3F9")
    assert not is_valid_reference("PU-0OOOOO")


def test_it_moves_pending_to_paid_and_writes_the_timeline():
    order = OrderFactory()
    order.transition(Order.State.PAID, actor="stripe:webhook", message="paid")
    order.refresh_from_db()
    assert order.state == "paid" and order.paid_at is not None
    event = order.events.get(kind="state:paid")
    assert event.actor == "stripe:webhook"
    assert event.data["from"] == "pending" and event.data["to"] == "paid"


@pytest.mark.parametrize(
    ("start", "target"),
    [
        ("paid", "pending"),
        ("fulfilled", "paid"),
        ("fulfilled", "failed"),
        ("failed", "paid"),
        ("refunded", "fulfilled"),
        ("pending", "fulfilled"),
    ],
)
def test_it_refuses_illegal_moves(start, target):
    order = OrderFactory(state=start)
    with pytest.raises(IllegalTransition):
        order.transition(target, actor="test")
    order.refresh_from_db()
    assert order.state == start
    assert not order.events.exists()
