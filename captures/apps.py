from django.apps import AppConfig


class CapturesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "captures"

    def ready(self) -> None:
        # Every process (web, worker, manage.py) loads the tasks: importing them gives actions
        # their queue (captures.jobs.actions.queue), which actions cannot import themselves.
        from captures.jobs import tasks  # noqa: F401
