import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kviz.settings")

app = Celery("kviz")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["captures.jobs"])
