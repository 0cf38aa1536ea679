"""django-q2's `qcluster`, refusing to start on unsafe settings and syncing PaidUp's schedules.

billing is listed before django_q in INSTALLED_APPS, so this command replaces django-q2's.
Before the cluster starts it runs every system check, deployment checks included (the web
server does the same at WSGI/ASGI import; see billing.checks.refuse_unsafe_start), then makes
the schedule rows follow the settings (billing.schedules.sync).
"""

from django_q.management.commands.qcluster import Command as QClusterCommand

from billing import schedules
from billing.checks import refuse_unsafe_start


class Command(QClusterCommand):
    help = "Start the django-q2 cluster (emails, reconciliation) after checking settings and schedules."

    def handle(self, *args, **options) -> None:
        refuse_unsafe_start("qcluster")
        for line in schedules.sync():
            self.stdout.write(line)
        super().handle(*args, **options)
