from django.contrib import admin

from captures.models import ApiToken, Capture, Note, ShareLink


@admin.register(Capture)
class CaptureAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "target_kind", "status", "packets", "bytes", "created")
    list_filter = ("status", "target_kind")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created", "started", "finished", "heartbeat", "worker_id")


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    list_display = ("capture", "created_by", "created", "expires", "revoked", "redacted")
    list_filter = ("revoked", "redacted")
    exclude = ("token_hash",)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "prefix", "created", "last_used")
    exclude = ("token_hash",)


@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ("capture", "target", "author", "created")
    search_fields = ("text",)
