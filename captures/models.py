"""Captures as job records, share links, API tokens.

Theory of operation: the capture status machine
-----------------------------------------------
A Capture row is the whole truth about one job; the web process, the Celery worker and the
reaper only ever move it along these edges, each as a conditional UPDATE
(`filter(id=..., status=old).update(status=new)`) whose row count says who won a race:

    queued ──claim (runner)────────────► running ──source ends, limit hit──► (analysis) completed
    queued ──stop (user)───────────────► failed      "stopped before it started"
    running ──stop (user)──────────────► stopping ──runner drains, analyses──► completed
    running | stopping ──error─────────► failed
    running | stopping ──no heartbeat, or its worker restarted──► interrupted

- An upload is a capture whose source is a stored file: queued → running (analysis) → completed.
- completed, failed and interrupted are terminal: nothing leaves them. A redelivered Celery task
  finds its capture no longer queued, loses the claim and does nothing.
- The runner writes the heartbeat every second while it owns the row (status running or
  stopping and worker_id its own). The reaper (captures.jobs.actions.reap_stale) marks a capture
  interrupted when the heartbeat is older than KVIZ_HEARTBEAT_TIMEOUT, or at once when its
  worker starts again (it cannot be running anything then). The pcap written so far stays, and
  the reaper queues its analysis: pcapng is written block by block, and the engine reads a
  cut-off last block as "partial".
"""

from __future__ import annotations

import uuid
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone

LOG_LINES = 50  # a capture's log is a short story, not a log file


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


TERMINAL = (Status.COMPLETED, Status.FAILED, Status.INTERRUPTED)
ACTIVE = (Status.RUNNING, Status.STOPPING)  # a runner owns the row, and heartbeats


class TargetKind(models.TextChoices):
    UPLOAD = "upload"
    LOCAL = "local"
    LAB = "lab"
    POD = "pod"
    NODE = "node"
    SERVICE = "service"
    PATH = "path"


class Capture(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=63)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="captures")
    target_kind = models.CharField(max_length=16, choices=TargetKind.choices)
    # The kind's fields as given and validated: {"interface": "eth0"}, {"target": "pod/x/y"},
    # {"file_name": "upload.pcap"}.
    target_spec = models.JSONField(default=dict)
    bpf_filter = models.TextField(blank=True, default="")
    limit_seconds = models.PositiveIntegerField()
    limit_packets = models.PositiveBigIntegerField()
    limit_bytes = models.PositiveBigIntegerField()

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED,
                              db_index=True)
    packets = models.PositiveBigIntegerField(default=0)
    bytes = models.PositiveBigIntegerField(default=0)  # of all its stored files together
    elapsed = models.FloatField(default=0.0)

    # Relative to settings.DATA_DIR, so a moved data volume keeps working.
    analysis_path = models.CharField(max_length=255, blank=True, default="")
    inventory = models.JSONField(null=True, blank=True)
    summary = models.JSONField(null=True, blank=True)  # small facts from the analysis

    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=200, blank=True, default="")
    error = models.TextField(blank=True, default="")
    log = models.JSONField(default=list, blank=True)

    # Retention (captures/jobs/retention.py): a pinned capture never expires.
    pinned = models.BooleanField(default=False)
    # The kinds of the analysis' findings (annotations), as ",lost,retransmission," so that
    # "every capture with a lost packet" is one `contains` on any database; "" when the
    # analysis found nothing, NULL while not known (no analysis yet, or analysed before this
    # field existed: `manage.py kviz_cleanup` fills those in).
    finding_kinds = models.TextField(null=True, blank=True)

    class Meta:
        ordering = ("-created",)

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def directory(self) -> Path:
        return Path(settings.DATA_DIR) / "captures" / str(self.id)

    def data_file(self, relative: str) -> Path | None:
        return Path(settings.DATA_DIR) / relative if relative else None

    def stored_files(self) -> list[StoredFile]:
        """The files that hold packets, in order: index i here is file index i of the
        analysis (`frame: [i, n]`). Parts that never started hold none and are left out."""
        return [part for part in self.files.all() if part.path]

    @property
    def analysis_file(self) -> Path | None:
        """The analysis as a readable local file (the stored one, or with a remote storage a
        cached copy, captures.adapters.storage); None when there is none."""
        if not self.analysis_path:
            return None
        from captures.adapters import storage  # models stay importable before the apps

        return storage.cached(self.analysis_path) or self.data_file(self.analysis_path)

    def visible_to(self, user) -> bool:
        return bool(user and user.is_authenticated and (user.is_staff or user.pk == self.owner_id))

    def lock(self) -> None:
        """Hold this capture's row until the transaction ends (inside `atomic()`): parallel
        requests that count the capture's links or notes before adding one then count one after
        another, so a cap holds."""
        list(Capture.objects.select_for_update().filter(id=self.id).values_list("id", flat=True))


class StoredFile(models.Model):
    """One file of a capture, taken at one vantage point.

    An upload or a one-place capture has one; a path capture has one per place it recorded
    (client pod, its node, each backend and its node). A part that could not start keeps its
    row with `error` and no file, so the page can say what is missing from the path.
    """

    capture = models.ForeignKey(Capture, on_delete=models.CASCADE, related_name="files")
    position = models.PositiveSmallIntegerField()
    role = models.CharField(max_length=40, blank=True, default="")  # "client pod", "backend node"
    vantage = models.CharField(max_length=300, blank=True, default="")  # pod/ns/name, node/name
    # Interface index → name, for cooked captures that carry only the index (pcapng has names).
    interfaces = models.JSONField(default=dict, blank=True)
    path = models.CharField(max_length=255, blank=True, default="")  # relative to DATA_DIR
    file_name = models.CharField(max_length=200, blank=True, default="")  # as uploaded
    packets = models.PositiveBigIntegerField(default=0)
    bytes = models.PositiveBigIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ("position",)
        constraints = (models.UniqueConstraint(fields=("capture", "position"),
                                               name="one_file_per_position"),)

    @property
    def file(self) -> Path | None:
        """Where this process writes (and, with the local storage, keeps) the file; with a
        remote storage read it through captures.adapters.storage."""
        return Path(settings.DATA_DIR) / self.path if self.path else None

    @staticmethod
    def stem(position: int) -> str:
        """The stored file's name without its suffix; the first keeps the name a one-file
        capture always had."""
        return "capture" if position == 0 else f"capture-{position + 1}"

    @property
    def label(self) -> str:
        """How the page and the downloads name this file: its vantage, else its upload name."""
        return self.vantage or self.file_name or f"file {self.position + 1}"


def append_log(lines: list, line: str) -> list:
    """The log with `line` added, oldest lines dropped beyond LOG_LINES."""
    stamped = f"{timezone.now():%H:%M:%S} {line}"
    return [*list(lines or [])[-(LOG_LINES - 1):], stamped]


class ShareLink(models.Model):
    """Read-only access to one capture for whoever holds the token.

    Only a hash of the token is stored: the link is shown once, at creation.
    """

    capture = models.ForeignKey(Capture, on_delete=models.CASCADE, related_name="share_links")
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField()
    revoked = models.BooleanField(default=False)
    # A redacted link shows the analysis but not the packets (no pcap download) nor the
    # capture's target, filter and log.
    redacted = models.BooleanField(default=False)
    # The token's last characters, so that its owner can tell links apart ("…x7Qa") where
    # the token itself is no longer shown; too few to guess the rest from.
    hint = models.CharField(max_length=8, blank=True, default="")

    def is_valid(self) -> bool:
        return not self.revoked and self.expires > timezone.now()


class ApiToken(models.Model):
    """A script's credential (`Authorization: Bearer <token>`); only its hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8)  # to tell tokens apart in the admin
    created = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True)


NOTE_MAX_LENGTH = 2000


class Note(models.Model):
    """A reader's remark pinned to one arrow (`message:<id>`) or one phase (`phase:<group id>`)
    of a capture's diagram; shown in the diagram, the share view and the Markdown export.

    The text is stored as typed and escaped wherever it is written out (HTML, SVG, Markdown)."""

    capture = models.ForeignKey(Capture, on_delete=models.CASCADE, related_name="notes")
    target = models.CharField(max_length=40)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                               related_name="capture_notes")
    text = models.TextField(max_length=NOTE_MAX_LENGTH)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("created", "id")
