"""The jobs: actions on capture rows (each one transaction), the Celery tasks and the runner
that records and analyses, the live event store, and the diagram cache."""
