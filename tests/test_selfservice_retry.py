"""The self-service page's promise ("within a few minutes we'll email you") survives a lost q
task: the request is kept until answered and queued again by the sweep (support/selfservice_retry.py).

Found by the chaos run (bench/chaos.py): with the Redis broker, a check that failed while
PostgreSQL restarted was never run again, and a Redis restart dropped queued checks.
"""

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone
from django_q.models import Schedule

from billing.models import OutboundEmail
from support import selfservice, selfservice_retry
from support.models import SelfServiceRequest, SupportCase

pytestmark = pytest.mark.django_db

URL = "/help/charged/"


@pytest.fixture
def lost(monkeypatch):
    """A broker that accepts tasks and loses them (Redis restarted): the queued calls, never run."""
    calls = []
    monkeypatch.setattr(selfservice, "async_task", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr(selfservice_retry, "async_task", lambda *args, **kwargs: calls.append(args))
    return calls


def ask(client, email="ada@example.com"):
    return client.post(URL, {"email": email}, REMOTE_ADDR="203.0.113.7")


def later(seconds: int):
    return timezone.now() + timedelta(seconds=seconds)


def test_a_request_is_kept_until_its_check_answers(client, lost, django_capture_on_commit_callbacks, fake_stripe):
    assert ask(client).status_code == 200
    kept = SelfServiceRequest.objects.get()
    assert lost == [(selfservice.REQUEST_TASK, kept.pk)]

    with django_capture_on_commit_callbacks(execute=True):
        assert selfservice_retry.check_request(kept.pk) == "case_opened"

    assert not SelfServiceRequest.objects.exists()  # answered: the typed email is not kept
    assert OutboundEmail.objects.filter(to="ada@example.com", kind="case_opened").exists()


def test_the_sweep_queues_again_a_check_the_broker_lost(client, lost, settings):
    settings.SELF_SERVICE_RETRY_SECONDS = 120
    ask(client)
    kept = SelfServiceRequest.objects.get()

    assert selfservice_retry.sweep(later(60)) == 0  # not yet: the check may still be running
    assert selfservice_retry.sweep(later(121)) == 1
    assert lost == [(selfservice.REQUEST_TASK, kept.pk)] * 2
    kept.refresh_from_db()
    assert kept.attempts == 2
    assert selfservice_retry.sweep(later(122)) == 0  # claimed: a second sweep does not queue it again


def test_a_check_that_fails_on_the_database_leaves_the_request_for_the_sweep(client, lost, monkeypatch):
    ask(client)
    kept = SelfServiceRequest.objects.get()

    def down(*args, **kwargs):
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(selfservice_retry, "check", down)
    with pytest.raises(OperationalError):
        selfservice_retry.check_request(kept.pk)

    assert SelfServiceRequest.objects.filter(pk=kept.pk).exists()


def test_a_duplicate_task_after_the_answer_does_nothing(client, lost, django_capture_on_commit_callbacks, fake_stripe):
    ask(client)
    pk = SelfServiceRequest.objects.get().pk
    with django_capture_on_commit_callbacks(execute=True):
        selfservice_retry.check_request(pk)

    assert selfservice_retry.check_request(pk) == "answered already"
    assert selfservice_retry.check_request(10**9) == "answered already"  # no such request
    assert SupportCase.objects.count() == 1


def test_after_every_attempt_a_person_gets_it(client, lost, django_capture_on_commit_callbacks, settings):
    settings.SELF_SERVICE_RETRY_SECONDS = 120
    ask(client)
    SelfServiceRequest.objects.update(attempts=selfservice_retry.RETRY_ATTEMPTS)

    with django_capture_on_commit_callbacks(execute=True):
        assert selfservice_retry.sweep(later(121)) == 1

    case = SupportCase.objects.get(email="ada@example.com")
    assert "did not finish" in case.diagnosis
    assert not SelfServiceRequest.objects.exists()
    assert len(lost) == 1  # not queued again


def test_the_page_fails_honestly_when_it_cannot_keep_the_request(client, lost, monkeypatch):
    def down(**fields):
        raise OperationalError("the database system is starting up")

    monkeypatch.setattr(SelfServiceRequest.objects, "create", down)
    client.raise_request_exception = False
    response = ask(client)

    assert response.status_code == 500  # no "we'll email you" that nothing would keep
    assert not lost


def test_migrate_schedules_the_sweep_every_minute():
    row = Schedule.objects.get(name="self-service retries")
    assert (row.func, row.schedule_type, row.minutes, row.repeats) == ("support.selfservice_retry.sweep", "I", 1, -1)
